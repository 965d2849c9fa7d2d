"""Long-stream keyword-spotting evaluation: recall per keyword and false accepts per hour.

    result = evaluate("kws.esnn", keywords_dir, background_dir, streams=12, stream_s=600)
    print(result.table())                      # per keyword recall, false accepts per hour, latency
    result.curve                               # one point per threshold: (threshold, false reject rate, FA/h)
    evaluate(..., backend=RayBackend())        # the same numbers, computed on a Ray cluster

Test streams are built from held-out clips: ``keywords_dir/<label>/*.wav`` (labels the model knows
are keywords; any other folder, like ``_unknown_``, holds non-keyword speech) placed at known times
over ``background_dir/*.wav`` (noise, babble), a random gap between events, each event a keyword or
a non-keyword word at a random SNR. Stream ``i`` depends only on (seed, i), so any backend builds
the same streams.

Each stream is scored once (the model over every window at the hop, exactly the windows
``Pipeline.stream`` sees), then ``edgesnn.detector.Detector`` runs over the scores once per
threshold. A detection is a hit when a not-yet-hit keyword of the same label ended within
``[-before_s, +after_s]`` of the detection's time; every other detection is a false accept.
Streams are evaluated independently (local processes, or Ray tasks) and their counts summed in
stream order, so the totals do not depend on who computed them.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .detector import Detector, DetectorSettings

DEFAULT_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.30, 0.99, 0.05)) + (0.97, 0.99)
PCM_CHUNK_BYTES = 640 * 2   # 40 ms of 16-bit mono at 16 kHz per read from stdin


# -- audio sources for `edgesnn stream` -------------------------------------------------------------
def pcm_chunks(binary, chunk_bytes: int = PCM_CHUNK_BYTES):
    """Raw 16-bit little-endian mono PCM from a binary file object -> int16 chunks (an odd last byte is dropped)."""
    carry = b""
    while True:
        data = binary.read(chunk_bytes)
        if not data:
            break
        data = carry + data
        usable = len(data) - len(data) % 2
        carry = data[usable:]
        if usable:
            yield np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)


def microphone_chunks(sample_rate: int, seconds: float | None = None, block_s: float = 0.04):
    """The default input device as float32 mono chunks (sounddevice; pip install 'edgesnn[mic]')."""
    try:
        import sounddevice
    except ImportError as exc:  # an optional extra
        raise ValueError("--mic needs sounddevice: pip install 'edgesnn[mic]' (and PortAudio)") from exc
    block = max(1, round(block_s * sample_rate))
    total = None if seconds is None else round(seconds * sample_rate)
    read = 0
    with sounddevice.InputStream(samplerate=sample_rate, channels=1, dtype="float32", blocksize=block) as mic:
        while total is None or read < total:
            data, _overflowed = mic.read(block)
            read += len(data)
            yield data[:, 0].copy()


# -- scoring a recording offline, window for window as Pipeline.stream ------------------------------
def window_scores(pipe, waveform: np.ndarray, hop_s: float, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(end times (N,), class scores (N, C)) of every window ``Pipeline.stream`` would classify.

    The frames are computed in one go (each frame depends only on its own samples, so they equal
    the streaming frontend's), the windows taken every ``hop_s`` and classified in batches."""
    fe = pipe.frontend
    window_frames = fe.output_shape[0]
    hop_frames = max(1, round(hop_s / fe.hop_s))
    frames = fe.quantize(fe.features(waveform))                                  # (F, n_mfcc) uint8
    if frames.shape[0] < window_frames:
        return np.zeros(0), np.zeros((0, len(pipe.labels)))
    starts = np.arange(0, frames.shape[0] - window_frames + 1, hop_frames)      # first frame of each window
    times = ((starts + window_frames - 1) * fe.hop_samples + fe.frame_samples) / fe.sample_rate
    windows = np.lib.stride_tricks.sliding_window_view(frames, window_frames, axis=0)  # (F-w+1, n_mfcc, w)
    scores = []
    for i in range(0, len(starts), batch):
        x = np.ascontiguousarray(windows[starts[i:i + batch]].transpose(0, 2, 1))[..., None]  # (B, w, n_mfcc, 1)
        potentials = pipe.model.forward(x, timesteps=pipe.timesteps, device=pipe.device)
        scores.append(pipe.classifier.scores(potentials, pipe.timesteps or 1))
    return times, np.concatenate(scores)


# -- test streams -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamRecipe:
    """How to build test streams: length, event gaps, SNRs, how often an event is a keyword."""

    stream_s: float = 600.0
    gap_s: tuple = (1.5, 4.0)          # silence (background only) between events
    snr_db: tuple = (5.0, 20.0)        # speech over the background
    keyword_share: float = 0.5         # the other events are non-keyword words
    background_rms: tuple = (0.003, 0.03)


def _read(path: Path, rate: int) -> np.ndarray:
    import soundfile

    y, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    if file_rate != rate:
        import librosa

        y = librosa.resample(y, orig_sr=file_rate, target_sr=rate)
    return y.astype(np.float32)


def load_material(keywords_dir, background_dir, keyword_labels, rate: int = 16000) -> dict:
    """{"keywords": {label: [waveform, ...]}, "other": [waveform, ...], "background": [waveform, ...]}."""
    keywords_dir, background_dir = Path(keywords_dir), Path(background_dir)
    if not keywords_dir.is_dir():
        raise ValueError(f"eval-stream: --keywords {keywords_dir} is not a folder of <label>/*.wav")
    keywords, other = {}, []
    for folder in sorted(p for p in keywords_dir.iterdir() if p.is_dir()):
        clips = [_read(f, rate) for f in sorted(folder.glob("*.wav"))]
        if folder.name in keyword_labels:
            keywords[folder.name] = clips
        else:
            other.extend(clips)
    background = [_read(f, rate) for f in sorted(Path(background_dir).glob("*.wav"))]
    if not keywords:
        raise ValueError(f"eval-stream: no folder of {keywords_dir} is named after a keyword of the model "
                         f"({sorted(keyword_labels)})")
    if not background:
        raise ValueError(f"eval-stream: no .wav files in --background {background_dir}")
    return {"keywords": keywords, "other": other, "background": background}


def build_stream(material: dict, index: int, seed: int, recipe: StreamRecipe, rate: int = 16000):
    """Stream ``index``: (waveform float32, truth [(label, start_s, end_s)], non-keyword events count)."""
    rng = np.random.default_rng([seed, index])
    n = round(recipe.stream_s * rate)
    bg = material["background"][int(rng.integers(len(material["background"])))]
    offset = int(rng.integers(len(bg)))
    reps = -(-(n + offset) // len(bg))
    y = np.tile(bg, reps)[offset:offset + n].astype(np.float32)
    y *= float(rng.uniform(*recipe.background_rms)) / (np.sqrt(np.mean(y ** 2)) + 1e-12)
    bg_rms = float(np.sqrt(np.mean(y ** 2)))
    labels = sorted(material["keywords"])
    truth, others = [], 0
    at = round(float(rng.uniform(*recipe.gap_s)) * rate)
    while True:
        keyword = not material["other"] or rng.random() < recipe.keyword_share
        if keyword:
            label = labels[int(rng.integers(len(labels)))]
            pool = material["keywords"][label]
        else:
            label, pool = None, material["other"]
        clip = pool[int(rng.integers(len(pool)))]
        if at + len(clip) > n - rate:   # keep a second of background at the end
            break
        gain = bg_rms * 10 ** (float(rng.uniform(*recipe.snr_db)) / 20) / (np.sqrt(np.mean(clip ** 2)) + 1e-12)
        y[at:at + len(clip)] += clip * gain
        if keyword:
            truth.append((label, at / rate, (at + len(clip)) / rate))
        else:
            others += 1
        at += len(clip) + round(float(rng.uniform(*recipe.gap_s)) * rate)
    return np.clip(y, -1, 1), truth, others


# -- matching ---------------------------------------------------------------------------------------
def match(detections, truth, before_s: float, after_s: float):
    """(hit truth indices, latencies s, false accepts) of detections against [(label, start_s, end_s)]."""
    hit = set()
    latencies = []
    false_accepts = 0
    for d in detections:
        found = None
        for i, (label, _start, end) in enumerate(truth):
            if i not in hit and label == d.label and end - before_s <= d.time_s <= end + after_s:
                found = i
                break
        if found is None:
            false_accepts += 1
        else:
            hit.add(found)
            latencies.append(d.time_s - truth[found][2])
    return hit, latencies, false_accepts


@dataclass(frozen=True)
class StreamJob:
    """Everything one worker needs to evaluate stream ``index`` (picklable; no model object inside)."""

    model_path: str
    keywords_dir: str
    background_dir: str
    index: int
    seed: int
    recipe: StreamRecipe
    settings: dict
    thresholds: tuple
    before_s: float = 0.5
    after_s: float = 1.0
    device: str | None = None
    windows_s: tuple = ()      # averaging windows to sweep (empty: the settings' window_s only)


_CACHE: dict = {}   # per process: the loaded pipeline and material of the last job's files


def _pipeline_and_material(job: StreamJob):
    from .pipeline import Pipeline

    key = (job.model_path, job.keywords_dir, job.background_dir, job.device)
    if _CACHE.get("key") != key:
        pipe = Pipeline.load(job.model_path, device=job.device)
        keywords = [label for label in pipe.labels if label not in DetectorSettings().ignore]
        _CACHE.update(key=key, pipe=pipe, material=load_material(job.keywords_dir, job.background_dir, keywords,
                                                                 pipe.frontend.sample_rate))
    return _CACHE["pipe"], _CACHE["material"]


def evaluate_stream(job: StreamJob) -> dict:
    """Counts of one stream at every threshold (a plain dict: JSON- and pickle-friendly)."""
    pipe, material = _pipeline_and_material(job)
    rate = pipe.frontend.sample_rate
    waveform, truth, others = build_stream(material, job.index, job.seed, job.recipe, rate)
    settings = DetectorSettings.from_dict(job.settings)
    times, scores = window_scores(pipe, waveform, settings.hop_s)
    labels = sorted(material["keywords"])
    per_threshold = []
    for window_s, threshold in [(w, t) for w in (job.windows_s or (settings.window_s,)) for t in job.thresholds]:
        detector = Detector.from_settings(pipe.labels, settings.replace(threshold=threshold, window_s=window_s))
        detections = detector.run(times, scores)
        hit, latencies, false_accepts = match(detections, truth, job.before_s, job.after_s)
        per_threshold.append({
            "threshold": threshold, "window_s": window_s,
            "hits": {label: sum(1 for i in hit if truth[i][0] == label) for label in labels},
            "false_accepts": false_accepts,
            "latencies_s": [round(v, 6) for v in latencies]})
    return {"index": job.index, "seconds": len(waveform) / rate, "others": others,
            "truth": {label: sum(1 for t in truth if t[0] == label) for label in labels},
            "per_threshold": per_threshold}


# -- backends: who runs evaluate_stream -----------------------------------------------------------
class LocalBackend:
    """Local processes (``workers`` of them; 1: in this process)."""

    name = "local"

    def __init__(self, workers: int | None = None):
        self.workers = max(1, int(workers or min(4, os.cpu_count() or 1)))

    def map(self, function, jobs: list) -> list:
        if self.workers == 1 or len(jobs) <= 1:
            return [function(job) for job in jobs]
        with ProcessPoolExecutor(self.workers) as pool:
            return list(pool.map(function, jobs))


class RayBackend:
    """Ray tasks: ``address`` of a running cluster ("auto", "ray://host:10001"), or None for a local Ray.

    Ray is an optional extra (pip install 'edgesnn[ray]'); the files the jobs name must be readable
    at the same paths on every node."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, **init_options):
        try:
            import ray
        except ImportError as exc:
            raise ValueError("--ray needs Ray: pip install 'edgesnn[ray]'") from exc
        self.ray = ray
        self._started = False
        if not ray.is_initialized():
            options = dict(init_options)
            options.setdefault("include_dashboard", False)
            options.setdefault("log_to_driver", False)
            if address is None and num_cpus is not None:
                options["num_cpus"] = num_cpus
            ray.init(address=address, **options)
            self._started = True

    def map(self, function, jobs: list) -> list:
        remote = self.ray.remote(function)
        return self.ray.get([remote.remote(job) for job in jobs])

    def shutdown(self) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False


# -- the evaluation ---------------------------------------------------------------------------------
@dataclass
class StreamEvaluation:
    """Totals over all streams; ``curve`` has one (threshold, false reject rate, false accepts/hour) per threshold."""

    hours: float
    streams: int
    keywords: list
    truth: dict
    other_words: int
    points: list = field(default_factory=list)   # per threshold: {"threshold", "hits", "false_accepts", ...}
    settings: dict = field(default_factory=dict)

    @property
    def windows_s(self) -> list[float]:
        return sorted({p["window_s"] for p in self.points})

    @property
    def curve(self) -> list[tuple[float, float, float]]:
        """The curve at the settings' averaging window (or the first swept one)."""
        window = self.settings.get("window_s")
        return self.curve_at(window if window in self.windows_s else self.windows_s[0])

    def curve_at(self, window_s: float) -> list[tuple[float, float, float]]:
        total = sum(self.truth.values())
        return [(p["threshold"], 1 - sum(p["hits"].values()) / max(total, 1), p["false_accepts"] / self.hours)
                for p in self.points if p["window_s"] == window_s]

    def point(self, threshold: float, window_s: float | None = None) -> dict:
        window_s = self.curve_window() if window_s is None else window_s
        for p in self.points:
            if abs(p["threshold"] - threshold) < 1e-9 and p["window_s"] == window_s:
                return p
        raise ValueError(f"no point at threshold {threshold}, window {window_s} s; thresholds: "
                         f"{sorted({p['threshold'] for p in self.points})}, windows: {self.windows_s}")

    def curve_window(self) -> float:
        window = self.settings.get("window_s")
        return window if window in self.windows_s else self.windows_s[0]

    def operating_point(self, max_false_accepts_per_hour: float = 1.0, window_s: float | None = None) -> dict:
        """The point with the best recall among those with at most the limit of false accepts per hour
        (ties: the higher threshold), over every swept window unless ``window_s`` is given; when none
        is under the limit, the one with the fewest false accepts."""
        points = [p for p in self.points if window_s is None or p["window_s"] == window_s]
        under = [p for p in points if p["false_accepts"] / self.hours <= max_false_accepts_per_hour]
        if not under:
            return min(points, key=lambda p: (p["false_accepts"], -sum(p["hits"].values())))
        return max(under, key=lambda p: (sum(p["hits"].values()), p["threshold"]))

    def summary(self, threshold: float, window_s: float | None = None) -> dict:
        p = self.point(threshold, window_s)
        total = sum(self.truth.values())
        latencies = p["latencies_s"]
        return {"threshold": threshold, "window_s": p["window_s"], "recall": sum(p["hits"].values()) / max(total, 1),
                "false_accepts": p["false_accepts"], "false_accepts_per_hour": p["false_accepts"] / self.hours,
                "median_latency_s": float(np.median(latencies)) if latencies else None,
                "per_keyword_recall": {k: p["hits"][k] / max(self.truth[k], 1) for k in self.keywords}}

    def table(self, threshold: float | None = None, window_s: float | None = None) -> str:
        if threshold is None:
            chosen = self.operating_point()
            threshold, window_s = chosen["threshold"], chosen["window_s"]
        s = self.summary(threshold, window_s)
        lines = [f"{self.streams} streams, {self.hours:.2f} h, {sum(self.truth.values())} keywords, "
                 f"{self.other_words} non-keyword words; threshold {threshold:g}, averaging window {s['window_s']:g} s",
                 f"{'keyword':<10} {'recall':>7} {'of':>5}"]
        for k in self.keywords:
            lines.append(f"{k:<10} {s['per_keyword_recall'][k]:>7.3f} {self.truth[k]:>5}")
        latency = "-" if s["median_latency_s"] is None else f"{s['median_latency_s'] * 1000:.0f} ms"
        lines.append(f"{'all':<10} {s['recall']:>7.3f} {sum(self.truth.values()):>5}   false accepts "
                     f"{s['false_accepts']} = {s['false_accepts_per_hour']:.2f}/h; median latency {latency}")
        for window in self.windows_s:
            lines.append(f"averaging window {window:g} s:  threshold  false-reject  FA/h")
            for t, frr, fah in self.curve_at(window):
                lines.append(f"{'':<20}{t:>9.2f}  {frr:>12.3f}  {fah:>5.2f}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"hours": self.hours, "streams": self.streams, "keywords": self.keywords, "truth": self.truth,
                "other_words": self.other_words, "points": self.points, "settings": self.settings}


def combine(results: list[dict], settings: dict) -> StreamEvaluation:
    """Sum per-stream counts in stream order."""
    results = sorted(results, key=lambda r: r["index"])
    keywords = sorted(results[0]["truth"])
    points = []
    for k, first in enumerate(results[0]["per_threshold"]):
        rows = [r["per_threshold"][k] for r in results]
        points.append({"threshold": first["threshold"], "window_s": first["window_s"],
                       "hits": {label: sum(row["hits"][label] for row in rows) for label in keywords},
                       "false_accepts": sum(row["false_accepts"] for row in rows),
                       "latencies_s": [v for row in rows for v in row["latencies_s"]]})
    return StreamEvaluation(hours=sum(r["seconds"] for r in results) / 3600, streams=len(results), keywords=keywords,
                            truth={label: sum(r["truth"][label] for r in results) for label in keywords},
                            other_words=sum(r["others"] for r in results), points=points, settings=settings)


def evaluate(model_path, keywords_dir, background_dir, streams: int = 6, stream_s: float = 600.0, seed: int = 0,
             thresholds=DEFAULT_THRESHOLDS, settings: DetectorSettings | dict | None = None, backend=None,
             recipe: StreamRecipe | None = None, before_s: float = 0.5, after_s: float = 1.0,
             device: str | None = None, windows_s=()) -> StreamEvaluation:
    """Build ``streams`` test streams of ``stream_s`` seconds, detect at every threshold, count; see the module doc."""
    from .pipeline import Pipeline

    if settings is None:
        settings = Pipeline.load(model_path).detector_settings()
    settings = settings if isinstance(settings, DetectorSettings) else DetectorSettings.from_dict(settings)
    recipe = recipe or StreamRecipe(stream_s=stream_s)
    jobs = [StreamJob(str(Path(model_path).resolve()), str(Path(keywords_dir).resolve()),
                      str(Path(background_dir).resolve()), i, seed, recipe, settings.as_dict(),
                      tuple(float(t) for t in thresholds), before_s, after_s, device,
                      tuple(float(w) for w in windows_s)) for i in range(streams)]
    results = (backend or LocalBackend()).map(evaluate_stream, jobs)
    return combine(results, settings.as_dict())


def plot_curve(result: StreamEvaluation, path, operating_threshold: float | None = None, title: str | None = None,
               operating_window_s: float | None = None):
    """False reject rate against false accepts per hour, one point per threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for window in result.windows_s:
        curve = result.curve_at(window)
        line, = ax.plot([c[2] for c in curve], [100 * c[1] for c in curve], "o-", ms=3,
                        label=f"averaging window {window:g} s")
        for t, frr, fah in curve[::3]:
            ax.annotate(f"{t:.2f}", (fah, 100 * frr), textcoords="offset points", xytext=(4, 4), fontsize=6,
                        color=line.get_color())
    if operating_threshold is not None:
        s = result.summary(operating_threshold, operating_window_s)
        ax.plot([s["false_accepts_per_hour"]], [100 * (1 - s["recall"])], "*", color="tab:red", ms=14,
                label=f"operating point: {s['window_s']:g} s, threshold {operating_threshold:g}")
    ax.legend(fontsize=7)
    ax.set_xlabel("false accepts per hour")
    ax.set_ylabel("false reject rate (%)")
    ax.set_title(title or f"Keyword spotting, {result.hours:.1f} h of held-out streams")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(result: StreamEvaluation, path) -> None:
    Path(path).write_text(json.dumps(result.as_dict(), indent=1) + "\n")


__all__ = ["LocalBackend", "RayBackend", "StreamEvaluation", "StreamRecipe", "build_stream", "evaluate",
           "evaluate_stream", "match", "pcm_chunks", "plot_curve", "window_scores"]
