"""Train the DS-CNN keyword spotter (MLPerf Tiny / BrainChip shape) on the espeak-ng/flite set, on the CPU.

    python examples/kws/make_dataset.py --out /tmp/kws_data      # first, once
    python examples/kws/train.py --data /tmp/kws_data --out /tmp/kws_run   # about 14 CPU minutes (trainer + batch maker)

Input: the project's own ``kws`` frontend (49 x 10 MFCC as uint8), given to the network as x / 255.
Network: conv 10x4 stride 2 (64 channels), four depthwise-separable blocks (3x3 depthwise + 1x1
pointwise, each with batch norm and ReLU), global average pooling and a dense layer to the 12
classes (the last block pools before its ReLU, so the pooling folds into its layer). The time axis
is unpadded, so a streaming executor can reuse the rows of earlier windows exactly; against the
same network padded in time ("same", 25 rows at the end instead of 12), same seed, data and budget,
it cost accuracy: validation 0.823 -> 0.774, held-out test 0.762 -> 0.719.

Every training clip is made afresh each epoch from the raw utterances (``train_utterances.npz``),
with the augmentation keyword spotters are trained with, so the model learns the word, not the
synthesizer's rendition of it:

- speed perturbation 0.85-1.15 (resampling: tempo, pitch and formants together, as Kaldi's);
- a random time shift (the word anywhere in the 1 s clip) and a random level (peak -35 to -1 dBFS);
- reverberation (a synthetic room: exponentially decaying noise, RT60 0.1-0.7 s) and a random
  microphone response (high-pass 60-400 Hz, low-pass 2.5-7 kHz), each on part of the clips;
- background noise on most clips at 0-30 dB SNR: white, pink, brown, mains hum, babble of other
  training words (4-6 talkers, from 4 minutes of it: with one 30 s pool, babble of other voices
  took the held-out keyword accuracy from 0.914 clean to 0.686 at 20 dB SNR; now 0.946 -> 0.831,
  examples/kws/snr_breakdown.py), and a competing talker or two; a zero tail on some clips (short recordings padded with digital silence);
- vocal tract length perturbation (VTLP): the power spectrum's frequency axis warped by 0.88-1.12,
  so formants move as between speakers (the held-out voices are other timbres, not other words);
- SpecAugment: up to two masks of 1-5 mel bands (before the DCT) and two of 1-6 frames;
- with ``--context`` (a share of the clips), a neighbouring non-keyword word 50-400 ms before or after
  the word, cut by the clip's edge, as a stream's windows hold them (the label stays the word's);
- with ``--negatives`` (mine_negatives.py's negatives.npz), hard negatives: windows of training-voice
  non-keyword streams an earlier model took for keywords (words cut by the window's edge, near misses
  over noise), ``--negative-share`` x a keyword's clip count of them each epoch, augmented as the others.

``_silence_`` clips are background alone at -80 to -20 dBFS: the noises, mains hum and babble
(distant talk with no foreground word, as the test set's silence and the long streams' backgrounds
have it), some digital silence; ``_unknown_`` draws from a few hundred other words, three times a
keyword's share. The frontend's uint8 range is calibrated
on augmented training clips. Learning rate: one-cycle (warm-up, cosine decay) over the planned steps,
or over the ``--cpu-minutes`` budget if that comes first: CPU seconds of the training process and
its batch maker together (so a loaded machine trains the same model as an idle one, only slower). The model kept is the one with the best
validation accuracy (validation voices are not the test voices).

Reads DATA (make_dataset.py's folder); writes into OUT (``--out``, default DATA): ``features.npz`` (uint8 features of the fixed train/val/test clips through the
real frontend, and ``x_aug``/``y_aug``: augmented training clips for calibration and fine-tuning,
used by convert_kws.py), ``frontend.json`` (the calibrated frontend config), ``dscnn_kws.onnx``
(the float model, NCHW input (N, 1, 49, 10)), ``dscnn_kws.pt`` (its state dict) and ``train.json``
(the seed and augmentation convert_kws.py repeats for more fine-tuning clips); prints the
float clip accuracy on the held-out voices, per class.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")   # numpy's BLAS: one thread (the machine is shared)

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

import edgesnn as es

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_dataset import babble, colored_noise  # noqa: E402  (the dataset's own noise makers)

CHANNELS = 64
RATE = 16000
CLIP = RATE
SILENCE, UNKNOWN = 0, 1
BATCH = 64   # more updates per CPU second than 128 (the model is small and the budget is CPU time)


def build_model(classes: int = 12, channels: int = CHANNELS, time_padding: bool = False):
    import torch.nn as nn

    # The time axis is unpadded ("valid"): every row of every layer depends only on the input frames
    # under it, so a row computed for one window equals the corresponding row of a later window and
    # a streaming executor can reuse it (49 frames -> 20 -> 18 -> 16 -> 14 -> 12 rows). The frequency
    # axis keeps its padding (10 coefficients -> 5 columns). With ``time_padding`` the time axis is
    # padded too ("same": 49 frames -> 25 rows in every layer); the streaming executor then
    # recomputes, per window, only the rows the padding reaches (native/src/stream.zig).
    pad_t = 1 if time_padding else 0
    layers = [nn.Conv2d(1, channels, (10, 4), stride=(2, 2), padding=(5 * pad_t, 1), bias=False),
              nn.BatchNorm2d(channels), nn.ReLU()]
    for block in range(4):
        layers += [nn.Conv2d(channels, channels, 3, padding=(pad_t, 1), groups=channels, bias=False),
                   nn.BatchNorm2d(channels), nn.ReLU(),
                   nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels)]
        # The last block pools before its ReLU (as Akida's DS-CNN): the pooling then folds into
        # that layer (synaptic stage -> pooling -> neuron) instead of being a layer of its own.
        layers += [nn.ReLU()] if block < 3 else [nn.AdaptiveAvgPool2d(1), nn.ReLU()]
    layers += [nn.Flatten(), nn.Dropout(0.1), nn.Linear(channels, classes)]
    return nn.Sequential(*layers)


# -- material -------------------------------------------------------------------------------------
def load_utterances(path: Path, labels: list[str]):
    """Raw utterances (float32 arrays), their class index and voice, from make_dataset.py's file."""
    stored = np.load(path)
    audio, offsets = stored["audio"].astype(np.float32) / 32767.0, stored["offsets"]
    words = stored["word"]
    clips = [audio[offsets[i]:offsets[i + 1]] for i in range(len(words))]
    y = np.array([labels.index(w) if w in labels else UNKNOWN for w in words])
    return clips, y, stored["voice"]


class Augmenter:
    """Makes augmented 1 s training clips from raw utterances (see the module docstring)."""

    NOISES = ("white", "pink", "brown", "hum", "babble", "babble", "talker")
    SILENCE_NOISES = ("white", "pink", "brown", "hum", "babble")   # no lone talker: that is a word

    def __init__(self, clips, y, seed: int, pool_s: int = 30, babble_s: int = 240, context: float = 0.0):
        from scipy.signal import butter

        self.clips, self.y, self.context = clips, y, context
        self.negative, self.negative_share = np.zeros(0, np.int64), 0.0   # hard negatives: add_negatives
        rng = np.random.default_rng([seed, 99])
        unknown = [c for c, label in zip(clips, y) if label == UNKNOWN]
        self.unknown = unknown
        self.pools = {kind: colored_noise(rng, pool_s * RATE, kind) for kind in ("white", "pink", "brown", "hum")}
        self.pools["babble"] = np.concatenate([babble(rng, babble_s * RATE // 3, unknown, talkers)
                                               for talkers in (4, 5, 6)])
        self.pools["talker"] = np.concatenate([babble(rng, babble_s * RATE // 6, unknown, talkers)
                                               for talkers in (1, 2)])
        # a bank of microphone responses: (high-pass, low-pass) second-order sections
        self.filters = []
        for _ in range(32):
            hp = butter(2, rng.uniform(60, 400), "highpass", fs=RATE, output="sos")
            lp = butter(2, rng.uniform(2500, 7000), "lowpass", fs=RATE, output="sos")
            self.filters.append(np.concatenate([hp, lp]))

    def noise(self, rng, kind: str, n: int = CLIP) -> np.ndarray:
        pool = self.pools[kind]
        start = int(rng.integers(0, len(pool) - n))
        return pool[start:start + n]

    def clip(self, rng, index: int) -> np.ndarray:
        """One augmented clip: utterance `index`, or silence for index -1."""
        from scipy.signal import fftconvolve, sosfilt

        if index < 0:
            if rng.random() < 0.1:
                return np.zeros(CLIP, np.float32)
            kind = self.SILENCE_NOISES[int(rng.integers(len(self.SILENCE_NOISES)))]
            return self.noise(rng, kind) * np.float32(10 ** (rng.uniform(-80, -20) / 20))
        word = self.clips[index]
        factor = rng.uniform(0.85, 1.15)                                       # speed perturbation
        n = max(16, int(len(word) / factor))
        word = np.interp(np.arange(n) * factor, np.arange(len(word)), word).astype(np.float32)
        if rng.random() < 0.3:                                                 # a room
            rt60 = rng.uniform(0.1, 0.7)
            length = int(rt60 * RATE)
            h = self.noise(rng, "white", length) * np.exp(-6.9 * np.arange(length) / length)
            h[0] = 1.0 / rng.uniform(0.3, 1.0)
            word = fftconvolve(word, h)[:len(word) + length // 2].astype(np.float32)
        if rng.random() < 0.4:                                                 # a microphone
            word = sosfilt(self.filters[int(rng.integers(len(self.filters)))], word).astype(np.float32)
        word = word[:CLIP]
        out = np.zeros(CLIP, np.float32)
        shift = int(rng.integers(0, CLIP - len(word) + 1))
        out[shift:shift + len(word)] = word
        peak = np.abs(out).max() + 1e-9
        out *= np.float32(10 ** (rng.uniform(-35, -1) / 20) / peak)
        if self.context and rng.random() < self.context:                      # a neighbouring word
            self._neighbour(rng, out, shift, len(word))
        if rng.random() < 0.85:
            kind = self.NOISES[int(rng.integers(len(self.NOISES)))]
            speech_rms = np.sqrt(np.mean(out[shift:shift + len(word)] ** 2)) + 1e-9
            out += self.noise(rng, kind) * np.float32(speech_rms / 10 ** (rng.uniform(0, 30) / 20))
        out += self.noise(rng, "white") * np.float32(10 ** (rng.uniform(-90, -65) / 20))   # the microphone's own
        if rng.random() < 0.1:                                                 # padded with digital silence
            out[min(CLIP, shift + len(word) + int(rng.integers(0, RATE // 10))):] = 0.0
        return np.clip(out, -1, 1)

    def _neighbour(self, rng, out: np.ndarray, shift: int, length: int) -> None:
        """Add another (unknown) word just before or after the word at out[shift:shift + length], cut
        by the clip's edge, at -9 to +3 dB of its peak: the windows of a stream hold a word's
        neighbours too, and the label stays the word's."""
        other = self.unknown[int(rng.integers(len(self.unknown)))]
        gap = int(rng.uniform(0.05, 0.4) * RATE)
        level = np.float32(np.abs(out).max() * 10 ** (rng.uniform(-9, 3) / 20) / (np.abs(other).max() + 1e-9))
        if rng.random() < 0.5:   # before: its tail ends `gap` before the word
            end = shift - gap
            if end > 0:
                part = other[max(0, len(other) - end):]
                out[end - len(part):end] += part * level
        else:
            start = shift + length + gap
            if start < CLIP:
                part = other[:CLIP - start]
                out[start:start + len(part)] += part * level

    def add_negatives(self, audio: np.ndarray, labels: np.ndarray, share: float) -> None:
        """Hard negatives (mine_negatives.py's windows: audio (N, samples), labels _unknown_ or _silence_):
        each epoch draws ``share`` x a keyword's clip count of them, augmented as the other clips."""
        self.clips = list(self.clips) + [np.asarray(a, np.float32) for a in audio]
        self.negative = np.arange(len(self.y), len(self.y) + len(audio))
        self.y = np.concatenate([self.y, np.asarray(labels, self.y.dtype)])
        self.negative_share = float(share)

    def epoch(self, rng, unknown_share: float = 3.0, silence_share: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(utterance indices, -1 for silence; their labels) of one epoch, shuffled and class-balanced."""
        negative = self.negative
        is_word = np.ones(len(self.y), bool)
        is_word[negative] = False
        keyword = np.flatnonzero((self.y > UNKNOWN) & is_word)
        per_class = len(keyword) / max(1, len(np.unique(self.y[keyword])))
        unknown = rng.choice(np.flatnonzero((self.y == UNKNOWN) & is_word), int(per_class * unknown_share))
        silence = np.full(int(per_class * silence_share), -1)
        parts = [keyword, unknown, silence]
        if len(negative):
            parts.append(rng.choice(negative, int(per_class * self.negative_share)))
        index = rng.permutation(np.concatenate(parts))
        return index, np.where(index < 0, SILENCE, self.y[np.maximum(index, 0)])


class Features:
    """The kws frontend's MFCC, batched (the same window, mel filters, dB and DCT), with SpecAugment."""

    def __init__(self, fe):
        import scipy.fft

        self.fe = fe
        self.window, mel = fe._window_and_mel_basis()
        self.mel_t = np.ascontiguousarray(mel.T)                           # (frame//2+1, n_mels)
        self.dct = scipy.fft.dct(np.eye(fe.n_mels), type=2, norm="ortho", axis=-1)[:, :fe.n_mfcc]   # (n_mels, n_mfcc)

    def mfcc(self, clips: np.ndarray, rng=None) -> np.ndarray:
        """(B, samples) float -> float MFCC (B, frames, n_mfcc); VTLP and SpecAugment when rng is given."""
        fe = self.fe
        frames = np.lib.stride_tricks.sliding_window_view(clips.astype(np.float64), fe.frame_samples, axis=-1)
        frames = frames[:, ::fe.hop_samples][:, :fe.n_frames]
        power = np.abs(np.fft.rfft(frames * self.window, axis=-1)) ** 2
        if rng is not None:   # VTLP: new[f] = old[f / alpha] (linear between bins), one alpha per clip
            bins = power.shape[-1]
            alpha = rng.uniform(0.88, 1.12, size=(len(clips), 1))
            source = np.minimum(np.arange(bins)[None, :] / alpha, bins - 1.0)
            low = np.minimum(source.astype(np.int64), bins - 2)
            weight = (source - low)[:, None, :]
            at = lambda i: np.take_along_axis(power, np.broadcast_to(i[:, None, :], power.shape), axis=-1)
            power = at(low) * (1.0 - weight) + at(low + 1) * weight
        mel_db = 10.0 * np.log10(np.maximum(power @ self.mel_t, 1e-10))   # (B, frames, n_mels)
        if rng is not None:
            for b in range(len(clips)):
                for _ in range(int(rng.integers(0, 3))):
                    width = int(rng.integers(1, 6))
                    low = int(rng.integers(0, fe.n_mels - width))
                    mel_db[b, :, low:low + width] = mel_db[b].mean()
        return mel_db @ self.dct

    def uint8(self, clips: np.ndarray, rng=None) -> np.ndarray:
        q = self.fe.quantize(self.mfcc(clips, rng))                       # (B, frames, n_mfcc)
        if rng is not None:
            for b in range(len(q)):
                fill = q[b].mean(axis=0).astype(np.uint8)
                for _ in range(int(rng.integers(0, 3))):
                    width = int(rng.integers(1, 7))
                    start = int(rng.integers(0, q.shape[1] - width))
                    q[b, start:start + width] = fill
        return q[..., None]


def make_batches(augmenter: Augmenter, features: Features, seed: int, epoch: int, batch: int = BATCH):
    """Yield (uint8 (B, 49, 10, 1), labels) of one augmented epoch; deterministic for (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch])
    index, y = augmenter.epoch(rng)
    for i in range(0, len(index), batch):
        clips = np.stack([augmenter.clip(rng, int(j)) for j in index[i:i + batch]])
        yield features.uint8(clips, rng), y[i:i + batch]


def _batches_worker(args):
    """A child process making the epochs' batches (so the training process only trains)."""
    queue, data, labels, config, seed, epochs, context, negatives, negative_share = args
    clips, y, _ = load_utterances(data / "train_utterances.npz", labels)
    augmenter = Augmenter(clips, y, seed, context=context)
    add_negatives(augmenter, negatives, negative_share)
    features = Features(es.frontend("kws", **config))
    for epoch in range(epochs):
        for item in make_batches(augmenter, features, seed, epoch):
            queue.put(item)
        queue.put(None)


def add_negatives(augmenter: Augmenter, path, share: float) -> None:
    """Add mine_negatives.py's windows (PATH's ``audio`` and ``y``) to the augmenter's clips (no path: none)."""
    if path:
        stored = np.load(path)
        if "audio" not in stored.files:
            raise SystemExit(f"train.py: {path} has no 'audio' (made by an older mine_negatives.py); mine again")
        augmenter.add_negatives(stored["audio"].astype(np.float32) / 32767.0, stored["y"], share)


def calibrated_frontend(data: Path, labels, seed: int, clips_n: int = 1500, context: float = 0.0):
    """The kws frontend with its uint8 range set on augmented training clips."""
    clips, y, _ = load_utterances(data / "train_utterances.npz", labels)
    augmenter = Augmenter(clips, y, seed, context=context)
    rng = np.random.default_rng([seed, 10_000])
    index, _ = augmenter.epoch(rng)
    sample = np.stack([augmenter.clip(rng, int(j)) for j in index[:clips_n]])
    fe = es.frontend("kws")
    mfcc = Features(fe).mfcc(sample).reshape(-1, fe.n_mfcc)
    fe.low = np.percentile(mfcc, 0.5, axis=0)
    fe.high = np.maximum(np.percentile(mfcc, 99.5, axis=0), fe.low + 1e-3)
    return fe, augmenter


def fixed_features(data: Path, fe, augmenter: Augmenter, seed: int, augmented_passes: int = 2) -> dict:
    """uint8 features of the fixed splits through the real frontend, and augmented training clips."""
    out = {}
    for name in ("train", "val", "test"):
        start = time.perf_counter()
        split = np.load(data / f"{name}.npz")
        out[f"x_{name}"] = np.stack([fe(clip) for clip in split["x"]])
        out[f"y_{name}"] = split["y"]
        print(f"features {name}: {out[f'x_{name}'].shape} in {time.perf_counter() - start:.1f} s", flush=True)
    features = Features(fe)
    xs, ys = [], []
    for p in range(augmented_passes):
        for xb, yb in make_batches(augmenter, features, seed + 1000, p):
            xs.append(xb), ys.append(yb)
    out["x_aug"], out["y_aug"] = np.concatenate(xs), np.concatenate(ys)
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def predict(model, x_uint8: np.ndarray) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return torch.cat([model(_as_input(x_uint8[i:i + 512])) for i in range(0, len(x_uint8), 512)]).argmax(1).numpy()


def _as_input(x_uint8: np.ndarray):
    """uint8 (N, 49, 10, 1) HWC -> float (N, 1, 49, 10) in [0, 1]."""
    import torch

    return torch.from_numpy(x_uint8.transpose(0, 3, 1, 2).astype(np.float32) / 255.0).contiguous(
        memory_format=torch.channels_last)


def per_class_table(labels, y, predicted) -> str:
    rows = [f"{label:<10} {np.mean(predicted[y == c] == c):.3f}  ({np.sum(y == c)} clips)"
            for c, label in enumerate(labels) if np.any(y == c)]
    return "\n".join(rows)


def _pretrained_run(args, labels, run: Path) -> int:
    """--pretrained PIPELINE: the float model beside it (``--pretrained-onnx``) and its pipeline's calibrated
    frontend, with this data set's features (fixed splits and augmented clips) in RUN, so that
    convert_kws.py --run RUN converts and fine-tunes that model on this data set's training voices."""
    import shutil

    started = time.perf_counter()
    pipe = es.Pipeline.load(args.pretrained)
    if list(pipe.labels) != list(labels):
        raise SystemExit(f"train.py: {args.pretrained} has labels {pipe.labels}, the data set {labels}")
    fe = es.frontend("kws", **pipe.frontend.config)
    clips, y, _ = load_utterances(args.data / "train_utterances.npz", labels)
    augmenter = Augmenter(clips, y, args.seed, context=args.context)
    (run / "frontend.json").write_text(json.dumps(fe.config) + "\n")
    (run / "train.json").write_text(json.dumps({"data": str(args.data), "seed": args.seed, "context": args.context,
                                                "pretrained": str(args.pretrained)}) + "\n")
    np.savez(run / "features.npz", **fixed_features(args.data, fe, augmenter, args.seed))
    shutil.copyfile(args.pretrained_onnx, run / "dscnn_kws.onnx")
    print(f"{run}: features of {args.data} for {args.pretrained_onnx} ({(time.perf_counter() - started) / 60:.1f} min)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the folder make_dataset.py wrote (only read)")
    parser.add_argument("--out", type=Path, default=None, help="where this run's files go (default: DATA)")
    parser.add_argument("--pretrained", type=Path, default=None, help="do not train: a pipeline file whose "
                        "frontend and float model (--pretrained-onnx) get this data set's features in OUT")
    parser.add_argument("--pretrained-onnx", type=Path, default=Path(es.__file__).resolve().parent / "data" / "kws_dscnn.onnx")
    parser.add_argument("--context", type=float, default=0.0, help="share of training clips with a neighbouring "
                        "word cut by the clip's edge (as the windows of a stream hold)")
    parser.add_argument("--negatives", type=Path, default=None, help="hard negatives (mine_negatives.py's "
                        "negatives.npz, its audio) among the training clips")
    parser.add_argument("--negative-share", type=float, default=1.0, help="hard negatives per epoch, in a "
                        "keyword's clip counts")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--cpu-minutes", type=float, default=13.0, help="stop training after this much CPU time "
                        "of the trainer and its batch maker together (the learning-rate schedule follows it)")
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--reuse-features", action="store_true", help="keep DATA/features.npz when it was made "
                                                                       "with the same frontend calibration")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-padding", choices=("valid", "same"), default="valid",
                        help="the time axis unpadded (valid: 12 rows at the end) or padded (same: 25 rows)")
    args = parser.parse_args(argv)
    import multiprocessing

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    labels = json.loads((args.data / "labels.json").read_text())
    run = args.out or args.data
    run.mkdir(parents=True, exist_ok=True)
    if args.pretrained:   # no training: this data set's features for a float model trained before
        return _pretrained_run(args, labels, run)
    fe, augmenter = calibrated_frontend(args.data, labels, args.seed, context=args.context)
    add_negatives(augmenter, args.negatives, args.negative_share)   # after calibration: the frontend as without
    config = fe.config
    cached = run / "features.npz"
    reuse = (args.reuse_features and cached.exists() and (run / "frontend.json").exists()
             and json.loads((run / "frontend.json").read_text()) == json.loads(json.dumps(config)))
    (run / "frontend.json").write_text(json.dumps(config) + "\n")
    # what convert_kws.py needs to make more clips as this run made them
    (run / "train.json").write_text(json.dumps({"data": str(args.data), "seed": args.seed, "context": args.context,
                                                "time_padding": args.time_padding,
                                                "negatives": str(args.negatives) if args.negatives else None,
                                                "negative_share": args.negative_share}) + "\n")
    queue = multiprocessing.get_context("spawn").Queue(maxsize=16)
    worker = multiprocessing.get_context("spawn").Process(
        target=_batches_worker, args=((queue, args.data, labels, config, args.seed, args.epochs, args.context,
                                args.negatives, args.negative_share),), daemon=True)
    worker.start()
    if reuse:   # the same calibrated frontend (it is seeded) made them
        stored = np.load(cached)
        f = {k: stored[k] for k in stored.files}
    else:
        f = fixed_features(args.data, fe, augmenter, args.seed)
        np.savez(cached, **f)
    print(f"frontend calibrated, features {'reused' if reuse else 'written'} "
          f"({(time.perf_counter() - started) / 60:.1f} min)", flush=True)

    model = build_model(len(labels), time_padding=args.time_padding == "same").to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-3)
    steps_per_epoch = math.ceil(len(augmenter.epoch(np.random.default_rng(0))[0]) / BATCH)
    total_steps = args.epochs * steps_per_epoch
    budget_s = args.cpu_minutes * 60
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.05)
    best, best_state, step = -1.0, None, 0
    cpu_started = time.process_time() + _cpu_seconds(worker.pid)

    def cpu_used_s() -> float:
        return time.process_time() + _cpu_seconds(worker.pid) - cpu_started
    for epoch in range(args.epochs):
        model.train()
        total, seen = 0.0, 0
        while (item := queue.get()) is not None:
            xb, yb = item
            # one cycle: 5 % linear warm-up, then cosine to 1 % (over the steps, or the time budget if shorter)
            if step % 10 == 0:
                used_s = cpu_used_s()
            progress = max(step / total_steps, used_s / budget_s)
            lr = args.lr * (progress / 0.05 if progress < 0.05 else
                            0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - 0.05) / 0.95))))
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = loss_fn(model(_as_input(xb)), torch.from_numpy(yb))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            total += float(loss.detach()) * len(yb)
            seen += len(yb)
        val = float(np.mean(predict(model, f["x_val"]) == f["y_val"]))
        if val >= best:
            best, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
        elapsed = time.perf_counter() - started
        print(f"epoch {epoch + 1:>2}: loss {total / max(seen, 1):.3f}  val {val:.4f}  lr {lr:.5f}  "
              f"({elapsed / 60:.1f} min wall, {cpu_used_s() / 60:.1f} min CPU training)", flush=True)
        if cpu_used_s() > budget_s:
            print(f"stopping: {args.cpu_minutes} CPU-minute budget reached")
            break
    worker_cpu_s = _cpu_seconds(worker.pid)
    training_cpu_s = cpu_used_s()
    worker.kill()
    model.load_state_dict(best_state)
    predicted = predict(model, f["x_test"])
    test = float(np.mean(predicted == f["y_test"]))
    cpu_s = time.process_time() + worker_cpu_s
    print(f"float DS-CNN: best val {best:.4f}, test (held-out voices) {test:.4f}; "
          f"{sum(p.numel() for p in model.parameters()):,} parameters; {step} steps; "
          f"{(time.perf_counter() - started) / 60:.1f} min wall, {cpu_s / 60:.1f} min CPU in all (this process and "
          f"the batch maker; {training_cpu_s / 60:.1f} of them in the training loop, both processes, what --cpu-minutes "
          f"counts; {worker_cpu_s / 60:.1f} in the batch maker from its start)")
    print(per_class_table(labels, f["y_test"], predicted))
    model.eval()
    model = model.to(memory_format=torch.contiguous_format)
    torch.save(model.state_dict(), run / "dscnn_kws.pt")
    out = run / "dscnn_kws.onnx"
    example = torch.from_numpy(f["x_test"][:1].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    torch.onnx.export(model, example, str(out), input_names=["mfcc"], output_names=["logits"],
                      dynamic_axes={"mfcc": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
