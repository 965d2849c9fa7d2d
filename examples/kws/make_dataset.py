"""Make a keyword-spotting data set with espeak-ng: 12 classes, voices held out for test, deterministic.

    python examples/kws/make_dataset.py --out /tmp/kws_data            # a few minutes on 2 cores
    python examples/kws/make_dataset.py --out /tmp/kws_data --small    # a quick set for trying things

Classes (Speech Commands v2's 12-class task): ``_silence_``, ``_unknown_`` and the ten keywords
yes no up down left right on off stop go. Words are spoken by espeak-ng over many voices (English
varieties x voice variants), speeds and pitches; each 1 s, 16 kHz clip puts a word at a random
time shift and gain over background noise at a random SNR (clean, 20, 10, 5 or 0 dB): white, pink
and brown noise, and babble mixed from other espeak speech of the same split's voices. The
``_unknown_`` words include near misses of each keyword (CONFUSABLE_WORDS: rhymes and shared
sounds, such as ride, brown, letter, nose, start), spoken more often than the others in every split
(``--confusable-repeats``), so the held-out test clips and long streams hold them too.

Splits hold voices out: the voice *variants* (the timbre: m1, f3, klatt2 ...) are divided between
train, validation and test, so no test voice is ever heard in training in any accent.

Writes into OUT:
  train.npz, val.npz, test.npz     x: int16 (N, 16000) clips; y: class index; voice: voice name
  labels.json                      the 12 class names in index order
  stream/keywords/<label>/*.wav    raw held-out test-voice utterances (keywords and _unknown_ words)
  stream/background/*.wav          held-out noise and babble, 60 s each, for long-stream evaluation
  stream/demo.wav, demo.json       a shipped-demo recording: keywords by test voices over noise
  stream_val/keywords, background  the same from the validation voices: streams to choose the detector's
                                   defaults on (the test streams only measure them)

It installs espeak-ng with apt-get where it is missing (Debian/Ubuntu, as root). The same
``--seed`` gives the same files byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

RATE = 16000
CLIP = RATE  # 1 s
KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
LABELS = ["_silence_", "_unknown_"] + KEYWORDS
# Other English words: Speech Commands' auxiliary words first, then common words of many shapes.
UNKNOWN_WORDS = """
bed bird cat dog eight five four happy house marvin nine one seven sheila six three tree two wow zero
backward forward follow learn visual
apple table water window paper music orange garden yellow purple river mountain people morning evening
number letter simple little middle bottle button kitchen chicken pocket rocket jacket ticket basket market
open close light night right-ish bright sight kite white bite quite
yet yell yesterday yam yarn yoga youth young
note nose now nut nap new news nine-ish
upper cup pup supper puppy hop hope top tap cap
town gown brown crown clown dove dust dawn done
lift leaf lent lead loft lost last list lamp lemon
ride rice ripe rope road rain rate wrong rug
own odd ox art arm egg ink is it in an and any
of if oft often coffee toffee offer office awful
stock step stamp store start star still stick stuck stone
goat gold good goose gone got gum game gate
hello thanks please sorry maybe later never always sometimes often
computer keyboard monitor speaker phone camera picture picnic pillow blanket
banana potato tomato carrot pepper butter cheese bread sugar salt
happy sad angry tired hungry thirsty sleepy funny lucky busy
doctor teacher farmer driver singer painter player writer reader
monday tuesday friday sunday winter summer autumn spring season
seventy eighty ninety hundred thousand million first second third
red blue green black pink gray silver golden violet
horse mouse goose sheep snake tiger lion zebra monkey rabbit
car bus train plane boat bike truck wagon ship jet
play pay pray plan plant plenty plus plot
sing song sun sand seed sell send sent set
take talk tell ten test text thing think
walk wall want warm wash watch wave way
jump just jelly joke jog join
quick quiet queen question quite
very voice visit value van vote
fish fire five-ish fine find fill film
""".split()
# Near misses: words that rhyme with a keyword or share its onset or vowel. On the long streams nearly
# every false accept was such a word (examples/kws/confusable_words.py: ride -> right, yesterday -> yes,
# brown/crown/gown -> down, list/letter -> left, note/rope/nose -> no, start -> stop), so each is spoken
# more often than the other unknown words (``--confusable-repeats``), in every split: training learns
# them from the training voices, and the test clips and long streams hold them from the held-out voices.
CONFUSABLE_WORDS = {
    "yes": "yet yell yesterday yellow yeah yam yarn guess mess less dress chess bless press address",
    "no": "note nose now nut nap new news snow slow low toe though nod gnome nope notice noble",
    "up": "upper cup pup supper puppy hop hope top tap cap us bus but cut hut rub pub club",
    "down": "town gown brown crown clown dove dust dawn done sound round found count noun drown doubt",
    "left": "lift leaf lent lead loft lost last list lamp lemon letter theft lend laughed length less",
    "right": "ride rice ripe rope road rain rate wrong rug light night bright sight kite white bite quite fight "
             "tight might writer rider wide",
    "on": "own odd ox art arm an in and any honest john gone con don",
    "off": "oft often coffee toffee offer office awful cough soft golf moth cloth laugh",
    "stop": "stock step stamp store start star still stick stuck stone shop top drop stomp spot swap crop",
    "go": "goat gold good goose gone got gum game gate grow glow ago bow show dough goal ghost",
}
# Homophones of a keyword are left out: "know" is "no", "write" is "right" (a label a listener cannot tell).
HOMOPHONES = {"know", "write", "rite", "wright", "of"}
CONFUSABLE = sorted({w for words in CONFUSABLE_WORDS.values() for w in words.split()} - set(KEYWORDS) - HOMOPHONES)
UNKNOWN_WORDS = sorted({w for w in UNKNOWN_WORDS + CONFUSABLE if w.isalpha() and w not in KEYWORDS
                        and w not in HOMOPHONES})
LANGS = ["en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
VARIANTS_DIR = Path("/usr/lib/x86_64-linux-gnu/espeak-ng-data/voices/!v")
# flite's voices (CMU: kal and kal16 diphone, rms and slt and awb clustergen), closer to a human voice
# than espeak's formant synthesis; awb (Scottish male) is held out for test.
FLITE_VOICES = {"train": ["kal", "kal16", "rms", "slt"], "val": [], "test": ["awb"]}
FLITE_F0_HZ = {"slt": (140, 230)}   # the female voice's mean pitch range; the others (male): DEFAULT_F0_HZ
DEFAULT_F0_HZ = (80, 150)
SNRS_DB = [None, 20.0, 10.0, 5.0, 0.0]
NOISES = ["white", "pink", "brown", "babble"]
SPLITS = ("train", "val", "test")


# -- espeak-ng ------------------------------------------------------------------------------------
def ensure_tool(name: str, package: str) -> str:
    """The executable `name`; its Debian package installed with apt-get (as root) when missing."""
    path = shutil.which(name)
    if path:
        return path
    if shutil.which("apt-get") and os.geteuid() == 0:
        print(f"{name} is missing: installing {package} with apt-get", file=sys.stderr)
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", package], check=True)
        path = shutil.which(name)
    if not path:
        raise SystemExit(f"make_dataset: {name} is not installed; run `sudo apt-get install {package}` "
                         "(or scripts/install-system-deps.sh) and try again")
    return path


def ensure_espeak() -> str:
    return ensure_tool("espeak-ng", "espeak-ng")


def variants() -> list[str]:
    """espeak-ng voice variants that sound like a voice (sorted, so splits are reproducible)."""
    names = sorted(p.name for p in VARIANTS_DIR.iterdir()) if VARIANTS_DIR.is_dir() else []
    skip = {"Demonic", "croak", "whisper", "whisperf", "UniRobot", "anikaRobot", "Storm", "Tweaky", "fast",
            "klatt5", "klatt6"}
    names = [n for n in names if n not in skip and " " not in n]
    return names or ["m1", "m2", "m3", "f1", "f2", "f3"]


def speak(espeak: str, text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng (or flite, for a voice "flite+NAME": speed is its duration stretch in %, pitch its
    mean F0 in Hz) -> float32 mono at 16 kHz, leading and trailing silence trimmed."""
    import tempfile

    import soundfile
    from scipy.signal import resample_poly

    if voice.startswith("flite+"):
        with tempfile.TemporaryDirectory() as tmp:   # flite writes a file, not stdout
            wav = Path(tmp) / "out.wav"
            subprocess.run([shutil.which("flite") or "flite", "-voice", voice.split("+", 1)[1], "--setf",
                            f"duration_stretch={speed / 100:.2f}", "--setf", f"int_f0_target_mean={pitch}",
                            "-t", text, "-o", str(wav)], check=True, capture_output=True)
            pcm, rate = soundfile.read(str(wav), dtype="float32")
    else:   # espeak-ng's stdout WAV has no sizes in its header: the samples follow its 44 bytes
        out = subprocess.run([espeak, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                             check=True, capture_output=True).stdout
        pcm, rate = np.frombuffer(out[44:], dtype="<i2").astype(np.float32) / 32768.0, 22050
    if rate != RATE:   # espeak-ng: 22,050 Hz; flite's kal: 8,000 Hz
        g = np.gcd(RATE, rate)
        pcm = resample_poly(pcm, RATE // g, rate // g).astype(np.float32)
    return trim(pcm)


def trim(y: np.ndarray, floor_db: float = -40.0) -> np.ndarray:
    frame = 160
    n = len(y) // frame
    if n == 0:
        return y
    energy = (y[:n * frame].reshape(n, frame) ** 2).mean(axis=1)
    loud = np.flatnonzero(10 * np.log10(energy + 1e-12) > 10 * np.log10(energy.max() + 1e-12) + floor_db)
    if loud.size == 0:
        return y
    return y[max(0, loud[0] - 1) * frame:min(n, loud[-1] + 2) * frame]


# -- noise ----------------------------------------------------------------------------------------
def colored_noise(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """Unit-RMS white, pink (1/f), brown (1/f^2) noise, or mains hum (50/60 Hz and harmonics, in a little noise)."""
    if kind == "hum":
        t = np.arange(n) / RATE
        base = 50.0 if rng.random() < 0.5 else 60.0
        y = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.3)) for k in range(1, 8))
        y = y + 0.05 * rng.standard_normal(n)
    else:
        y = rng.standard_normal(n)
        if kind != "white":
            spectrum = np.fft.rfft(y)
            f = np.maximum(np.fft.rfftfreq(n, 1 / RATE), 20.0)
            spectrum /= np.sqrt(f) if kind == "pink" else f
            y = np.fft.irfft(spectrum, n)
    return (y / (np.sqrt(np.mean(y ** 2)) + 1e-12)).astype(np.float32)


def babble(rng: np.random.Generator, n: int, utterances: list[np.ndarray], talkers: int = 4) -> np.ndarray:
    """Several talkers of random words, each a random sequence of utterances, summed; unit RMS."""
    out = np.zeros(n, dtype=np.float32)
    for _ in range(talkers):
        at = int(rng.integers(0, RATE // 2))
        while at < n:
            u = utterances[int(rng.integers(len(utterances)))]
            end = min(n, at + len(u))
            out[at:end] += u[:end - at] * float(rng.uniform(0.5, 1.0))
            at = end + int(rng.integers(0, RATE // 5))
    return out / (np.sqrt(np.mean(out ** 2)) + 1e-12)


def noise_source(rng, n, kind, babble_pool) -> np.ndarray:
    if kind == "babble":
        start = int(rng.integers(0, len(babble_pool) - n))
        return babble_pool[start:start + n]
    return colored_noise(rng, n, kind)


def mix(rng, word, babble_pool) -> np.ndarray:
    """A 1 s clip: `word` (or nothing) at a random shift and gain, over noise at a random SNR."""
    clip = np.zeros(CLIP, dtype=np.float32)
    if word is not None:
        word = word[:CLIP]
        shift = int(rng.integers(0, CLIP - len(word) + 1))
        clip[shift:shift + len(word)] = word
        peak = np.abs(clip).max() + 1e-9
        clip *= 10 ** (float(rng.uniform(-20, -1)) / 20) / peak
    snr = SNRS_DB[int(rng.integers(len(SNRS_DB)))]
    kind = NOISES[int(rng.integers(len(NOISES)))]
    noise = noise_source(rng, CLIP, kind, babble_pool)
    if word is None:   # silence: noise alone at a random level, sometimes almost none
        level = 10 ** (float(rng.uniform(-70, -15)) / 20)
        clip = noise * level
    elif snr is not None:
        speech_rms = np.sqrt(np.mean(word ** 2)) * (np.abs(clip).max() / (np.abs(word).max() + 1e-9))
        clip = clip + noise * speech_rms / 10 ** (snr / 20)
    else:
        clip = clip + noise * 10 ** (float(rng.uniform(-80, -60)) / 20)
    return np.clip(clip, -1, 1)


# -- the set --------------------------------------------------------------------------------------
def split_voices(all_variants: list[str], seed: int) -> dict[str, list[str]]:
    """Variants divided 70/15/15 between train/val/test by a seeded hash (stable as variants are added)."""
    def bucket(name):
        h = int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest(), 16) % 100
        return "train" if h < 70 else ("val" if h < 85 else "test")
    out = {s: [] for s in SPLITS}
    for v in all_variants:
        out[bucket(v)].append(v)
    return out


def plan(split: str, variants_of_split: list[str], rng, per_keyword: int, unknown_repeats: int,
         flite_voices=(), flite_per_keyword: int = 0, flite_unknown_share: float = 0.0,
         confusable_repeats: int | None = None) -> list[tuple]:
    """(word, voice, speed, pitch) jobs for one split: espeak-ng voices ("lang+variant"), then flite's
    ("flite+name", speed a duration stretch in %, pitch a mean F0 in Hz). A near-miss word (CONFUSABLE)
    is spoken ``confusable_repeats`` times by espeak-ng voices (default: ``unknown_repeats``)."""
    jobs = []
    confusable = set(CONFUSABLE)

    def voice():
        return f"{LANGS[int(rng.integers(len(LANGS)))]}+{variants_of_split[int(rng.integers(len(variants_of_split)))]}"

    for word in KEYWORDS:
        for _ in range(per_keyword):
            jobs.append((word, voice(), int(rng.integers(110, 260)), int(rng.integers(20, 90))))
    for word in UNKNOWN_WORDS:
        repeats = unknown_repeats if confusable_repeats is None or word not in confusable else confusable_repeats
        for _ in range(repeats):
            jobs.append((word, voice(), int(rng.integers(110, 260)), int(rng.integers(20, 90))))

    def flite_job(word):
        name = flite_voices[int(rng.integers(len(flite_voices)))]
        low, high = FLITE_F0_HZ.get(name, DEFAULT_F0_HZ)
        return (word, f"flite+{name}", int(rng.integers(75, 140)), int(rng.integers(low, high + 1)))

    if flite_voices:
        for word in KEYWORDS:
            jobs.extend(flite_job(word) for _ in range(flite_per_keyword))
        jobs.extend(flite_job(word) for word in UNKNOWN_WORDS if rng.random() < flite_unknown_share)
    return jobs


def synthesize(espeak, jobs, workers: int) -> list[np.ndarray]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda j: speak(espeak, j[0], j[1], j[2], j[3]), jobs))


def write_wav(path: Path, y: np.ndarray) -> None:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.clip(y, -1, 1), RATE, subtype="PCM_16")


def build_split(split, jobs, audio, rng, augment: int, silence_share: float, unknown_share: float):
    """Clips of one split: each keyword utterance `augment` times, unknown words and silence in proportion."""
    babble_pool = babble(rng, 60 * RATE, [a for (w, *_), a in zip(jobs, audio) if w not in KEYWORDS])
    xs, ys, voices = [], [], []
    keyword_jobs = [(j, a) for j, a in zip(jobs, audio) if j[0] in KEYWORDS]
    unknown_jobs = [(j, a) for j, a in zip(jobs, audio) if j[0] not in KEYWORDS]
    n_keyword = len(keyword_jobs) * augment
    n_unknown = int(round(n_keyword * unknown_share / len(KEYWORDS)))
    n_silence = int(round(n_keyword * silence_share / len(KEYWORDS)))
    for (word, voice, *_), a in keyword_jobs:
        for _ in range(augment):
            xs.append(mix(rng, a, babble_pool)); ys.append(LABELS.index(word)); voices.append(voice)
    unknown_order = rng.permutation(len(unknown_jobs))   # all the words (the plan lists them in order)
    for i in range(n_unknown):
        (word, voice, *_), a = unknown_jobs[unknown_order[i % len(unknown_jobs)]]
        xs.append(mix(rng, a, babble_pool)); ys.append(1); voices.append(voice)
    for _ in range(n_silence):
        xs.append(mix(rng, None, babble_pool)); ys.append(0); voices.append("")
    order = rng.permutation(len(xs))
    x = (np.stack(xs)[order] * 32767).round().astype(np.int16)
    return x, np.asarray(ys, dtype=np.int64)[order], np.asarray(voices)[order], babble_pool


def save_utterances(path: Path, jobs, audio) -> None:
    """The raw (trimmed, unmixed) utterances of a split, for training-time augmentation:
    audio int16 (total,) concatenated, offsets (N + 1,), word (N,), voice (N,)."""
    lengths = np.array([len(a) for a in audio])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    pcm = np.concatenate([np.clip(a / (np.abs(a).max() + 1e-9) * 0.9, -1, 1) for a in audio])
    np.savez(path, audio=(pcm * 32767).round().astype(np.int16), offsets=offsets,
             word=np.array([j[0] for j in jobs]), voice=np.array([j[1] for j in jobs]))


def write_stream_material(out: Path, jobs, audio, babble_pool, rng) -> None:
    """Held-out utterances as WAVs by label, and 60 s backgrounds (noise kinds and babble)."""
    counts: dict[str, int] = {}
    for (word, voice, speed, pitch), a in zip(jobs, audio):
        label = word if word in KEYWORDS else "_unknown_"
        counts[label] = counts.get(label, 0) + 1
        name = f"{word}_{voice.replace('+', '_')}_{speed}_{pitch}_{counts[label]:04d}.wav"
        write_wav(out / "keywords" / label / name, a * (0.5 / (np.abs(a).max() + 1e-9)))
    for kind in ("white", "pink", "brown"):
        write_wav(out / "background" / f"{kind}.wav", 0.05 * colored_noise(rng, 60 * RATE, kind))
    write_wav(out / "background" / "babble.wav", 0.1 * babble_pool)


def write_demo(out: Path, jobs, audio, rng) -> None:
    """~12 s: six keywords by test voices, an unknown word, over pink noise at about 20 dB SNR."""
    seconds = 12
    y = 0.01 * colored_noise(rng, seconds * RATE, "pink")
    said = []
    keyword_items = [(j, a) for j, a in zip(jobs, audio) if j[0] in KEYWORDS]
    unknown_items = [(j, a) for j, a in zip(jobs, audio) if j[0] not in KEYWORDS]
    picks = ["yes", "stop", "go", "left", "down", "off"]
    at = int(0.8 * RATE)
    for i, word in enumerate(picks):
        candidates = [(j, a) for j, a in keyword_items if j[0] == word]
        (w, voice, *_), a = candidates[int(rng.integers(len(candidates)))]
        if i == 3:  # a non-keyword between them
            (uw, uvoice, *_), ua = unknown_items[int(rng.integers(len(unknown_items)))]
            y[at:at + len(ua)] += 0.3 * ua / (np.abs(ua).max() + 1e-9)
            said.append({"word": uw, "voice": uvoice, "start_s": at / RATE, "end_s": (at + len(ua)) / RATE})
            at += len(ua) + int(0.9 * RATE)
        y[at:at + len(a)] += 0.3 * a / (np.abs(a).max() + 1e-9)
        said.append({"word": w, "voice": voice, "start_s": at / RATE, "end_s": (at + len(a)) / RATE})
        at += len(a) + int(rng.uniform(0.9, 1.2) * RATE)
        if at > (seconds - 1) * RATE:
            break
    write_wav(out / "demo.wav", y)
    (out / "demo.json").write_text(json.dumps(said, indent=1) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-keyword", type=int, default=400, help="train espeak-ng utterances per keyword")
    parser.add_argument("--flite-per-keyword", type=int, default=120, help="train flite utterances per keyword")
    parser.add_argument("--augment", type=int, default=1, help="noisy clips made from each train keyword utterance")
    parser.add_argument("--confusable-repeats", type=int, default=8, help="train espeak-ng utterances per "
                        "near-miss word (CONFUSABLE; other unknown words: 3); validation and test: a quarter, at least 2")
    parser.add_argument("--workers", type=int, default=2, help="espeak-ng processes at once")
    parser.add_argument("--small", action="store_true", help="a tiny set (for trying things)")
    args = parser.parse_args(argv)
    espeak = ensure_espeak()
    ensure_tool("flite", "flite")
    per = {"train": args.per_keyword, "val": max(args.per_keyword // 6, 10), "test": max(args.per_keyword // 5, 10)}
    flite_per = {"train": args.flite_per_keyword, "val": 0, "test": max(args.flite_per_keyword // 6, 4)}
    flite_unknown_share = {"train": 1.0, "val": 0.0, "test": 0.3}
    unknown_repeats = {"train": 3, "val": 1, "test": 1}
    confusable_repeats = {"train": args.confusable_repeats, "val": max(2, args.confusable_repeats // 4),
                          "test": max(2, args.confusable_repeats // 4)}
    if args.small:
        per = {"train": 12, "val": 4, "test": 4}
        flite_per = {"train": 4, "val": 0, "test": 2}
        unknown_repeats = confusable_repeats = {"train": 1, "val": 1, "test": 1}
    voices = split_voices(variants(), args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "labels.json").write_text(json.dumps(LABELS) + "\n")
    for index, split in enumerate(SPLITS):
        rng = np.random.default_rng([args.seed, index])
        jobs = plan(split, voices[split], rng, per[split], unknown_repeats[split], FLITE_VOICES[split],
                    flite_per[split], flite_unknown_share[split], confusable_repeats[split])
        print(f"{split}: {len(voices[split])} espeak-ng voice variants, flite {FLITE_VOICES[split]}, "
              f"{len(jobs)} utterances ...", flush=True)
        audio = synthesize(espeak, jobs, args.workers)
        save_utterances(args.out / f"{split}_utterances.npz", jobs, audio)
        x, y, v, babble_pool = build_split(split, jobs, audio, rng, augment=args.augment if split == "train" else 1,
                                           silence_share=1.0, unknown_share=2.0)
        np.savez(args.out / f"{split}.npz", x=x, y=y, voice=v)
        print(f"  {split}.npz: {len(x)} clips, per class {np.bincount(y, minlength=len(LABELS)).tolist()}",
              flush=True)
        if split == "val":   # after the split's files, from its own rng: they stay as they were
            write_stream_material(args.out / "stream_val", jobs, audio, babble_pool, rng)
        if split == "test":
            write_stream_material(args.out / "stream", jobs, audio, babble_pool, rng)
            write_demo(args.out / "stream", jobs, audio, rng)
    (args.out / "voices.json").write_text(json.dumps({**voices, "flite": FLITE_VOICES}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
