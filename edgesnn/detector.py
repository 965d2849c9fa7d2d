"""Streaming keyword detector: per-window class scores in, ``Detection(label, time_s, score)`` out.

    det = Detector(labels, window_s=1.0, threshold=0.8, min_count=3, suppression_s=1.5)
    for time_s, scores in windows:                 # scores: (C,) probabilities of one window
        detection = det.update(time_s, scores)     # a Detection or None
    det.run(times_s, scores)                       # the same over whole arrays -> [Detection, ...]

The semantics are TensorFlow Lite Micro's ``RecognizeCommands`` (micro_speech, before 2023):

1. Each window's scores are kept with its time; results older than ``window_s`` before the newest
   are dropped (a result exactly ``window_s`` old stays).
2. With fewer than ``min_count`` results kept, nothing is decided.
3. The kept scores are averaged per class; the best class (first on ties) is the candidate.
4. The candidate is a new command when its average score is above ``threshold`` *and* either it
   differs from the previous command or more than ``suppression_s`` passed since that command.
   The previous command starts as "none, infinitely long ago".

Every new command updates the previous command and its time, background labels included (as in
TFLM: a "_silence_" command between two "yes" lets the second one through). Only commands whose
label is not in ``ignore`` (the background classes) are yielded. ``time_s`` of a Detection is the
time of the window that decided it: the end of the audio heard so far, the time by which the
keyword has ended. ``score`` is the averaged score.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

from .classifier import Detection

# Labels a keyword stream never reports (background classes of the usual keyword-spotting sets).
BACKGROUND_LABELS = ("unknown", "_unknown_", "silence", "_silence_", "background", "_background_noise_", "noise")
TIME_EPSILON_S = 1e-9    # times are floats of sample counts / rate: compare with this slack
METADATA_KEY = "detector"  # a model's metadata key holding DetectorSettings.as_dict()
_add_reduce = np.add.reduce   # ndarray.sum(axis=0) without its Python wrappers (the same sums)


@dataclass(frozen=True)
class DetectorSettings:
    """The detector's knobs and the inference hop, as stored in a pipeline file (metadata "detector")."""

    hop_s: float = 0.02          # inference every hop_s seconds over the last window
    window_s: float = 1.0        # posterior averaging window
    threshold: float = 0.8       # average score a command must exceed
    min_count: int = 3           # results needed in the window before deciding
    suppression_s: float = 1.5   # the same label is not reported again within this time
    ignore: tuple = BACKGROUND_LABELS

    def __post_init__(self):
        if not self.hop_s > 0:
            raise ValueError(f"detector: hop_s must be > 0 seconds, got {self.hop_s!r}")
        if not self.window_s >= 0:
            raise ValueError(f"detector: window_s must be >= 0 seconds, got {self.window_s!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"detector: threshold must be a score in [0, 1], got {self.threshold!r}")
        if int(self.min_count) < 1:
            raise ValueError(f"detector: min_count must be >= 1, got {self.min_count!r}")
        if not self.suppression_s >= 0:
            raise ValueError(f"detector: suppression_s must be >= 0 seconds, got {self.suppression_s!r}")
        object.__setattr__(self, "min_count", int(self.min_count))
        object.__setattr__(self, "ignore", tuple(str(v) for v in self.ignore))

    def as_dict(self) -> dict:
        out = asdict(self)
        out["ignore"] = list(self.ignore)
        return out

    @classmethod
    def from_dict(cls, values: dict | None) -> "DetectorSettings":
        values = dict(values or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"detector settings: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        if "ignore" in values:
            values["ignore"] = tuple(values["ignore"])
        return cls(**values)

    def replace(self, **changes) -> "DetectorSettings":
        """A copy with the given settings changed (None values leave a setting as it is)."""
        values = self.as_dict()
        values.update({k: v for k, v in changes.items() if v is not None})
        return DetectorSettings.from_dict(values)


class Detector:
    """RecognizeCommands over a stream of (time_s, scores); see the module docstring."""

    def __init__(self, labels, window_s: float = 1.0, threshold: float = 0.8, min_count: int = 3,
                 suppression_s: float = 1.5, ignore=BACKGROUND_LABELS):
        self.labels = [str(label) for label in labels]
        if not self.labels:
            raise ValueError("detector: needs at least one label")
        self.settings = DetectorSettings(window_s=window_s, threshold=threshold, min_count=min_count,
                                         suppression_s=suppression_s, ignore=tuple(ignore))
        self._reported = np.array([label not in self.settings.ignore for label in self.labels])
        self.reset()

    @classmethod
    def from_settings(cls, labels, settings: DetectorSettings) -> "Detector":
        return cls(labels, window_s=settings.window_s, threshold=settings.threshold, min_count=settings.min_count,
                   suppression_s=settings.suppression_s, ignore=settings.ignore)

    def reset(self) -> None:
        """Forget every result and the previous command (a new stream)."""
        self._times: deque[float] = deque()        # times of the kept results, oldest first
        # (capacity, C) float64: the kept results' scores are rows [_first, _first + len(_times))
        self._scores = np.zeros((64, len(self.labels)))
        self._first = 0
        self._previous_index = -1                  # previous command's class, -1: none yet
        self._previous_time_s = -np.inf

    def update(self, time_s: float, scores) -> Detection | None:
        """Add one window's scores (C,) at time_s (non-decreasing); return a Detection or None."""
        if type(scores) is not np.ndarray or scores.dtype != np.float64 or scores.ndim != 1:
            scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if scores.shape[0] != len(self.labels):
            raise ValueError(f"detector: got {scores.shape[0]} scores for {len(self.labels)} labels")
        time_s = float(time_s)
        if self._times and time_s < self._times[-1] - TIME_EPSILON_S:
            raise ValueError(f"detector: results must come in time order; got {time_s} s after {self._times[-1]} s")
        settings = self.settings
        self._append(time_s, scores)
        limit_s = time_s - settings.window_s - TIME_EPSILON_S
        while self._times[0] < limit_s:
            self._times.popleft()
            self._first += 1
        count = len(self._times)
        if count < settings.min_count:
            return None
        average = _add_reduce(self._scores[self._first:self._first + count], 0)   # (C,) sums
        average /= count
        index = int(average.argmax())
        score = float(average[index])
        since_s = time_s - self._previous_time_s
        if score > settings.threshold and (index != self._previous_index
                                           or since_s > settings.suppression_s + TIME_EPSILON_S):
            self._previous_index = index
            self._previous_time_s = time_s
            if self._reported[index]:
                return Detection(self.labels[index], round(time_s, 6), score)
        return None

    def _append(self, time_s: float, scores: np.ndarray) -> None:
        """Keep one result; the rows move to the front (or the buffer doubles) when the end is reached."""
        count = len(self._times)
        if self._first + count == self._scores.shape[0]:
            if count * 2 > self._scores.shape[0]:
                grown = np.zeros((self._scores.shape[0] * 2, self._scores.shape[1]))
                grown[:count] = self._scores[self._first:self._first + count]
                self._scores = grown
            else:
                self._scores[:count] = self._scores[self._first:self._first + count]
            self._first = 0
        self._scores[self._first + count] = scores
        self._times.append(time_s)

    def run(self, times_s, scores) -> list[Detection]:
        """All Detections of a whole sequence: times (N,), scores (N, C). Starts from a reset state."""
        times_s = np.asarray(times_s, dtype=np.float64).reshape(-1)
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 2 or scores.shape[0] != times_s.shape[0]:
            raise ValueError(f"detector.run: need times (N,) and scores (N, C), got {times_s.shape} and {scores.shape}")
        self.reset()
        found = [self.update(t, s) for t, s in zip(times_s, scores)]
        return [d for d in found if d is not None]


__all__ = ["BACKGROUND_LABELS", "Detection", "Detector", "DetectorSettings", "METADATA_KEY"]
