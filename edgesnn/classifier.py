"""From the output layer's int32 potentials to labels and scores.

    clf = Classifier(labels=["yes", "no"], output_scale=0.01, threshold=0.6)
    clf.classify(potentials)          # [Prediction(label, index, score, potentials), ...] one per sample
    clf.top_k(potentials, k=3)        # [[(label, score), ...], ...]

The score of a class is the softmax over the *dequantized* potentials
``potentials * output_scale / timesteps`` (``output_scale`` from the model's metadata when the
converter stored one: ``potential * output_scale`` approximates the source network's output for one
timestep; a run over T timesteps sums T of them). Without an ``output_scale`` the potentials are
used as they are (spike counts, for a spiking output layer). With a ``threshold``, a best score
below it answers ``unknown_label`` with index -1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Prediction:
    """One sample's answer: the label (``unknown_label`` if rejected), its class index (-1 if rejected),
    the softmax score of the best class, the raw int32 potentials (C,) of the output layer, and the
    best classes as (label, score) pairs, best first (up to ``Classifier.top_count``)."""

    label: str
    index: int
    score: float
    potentials: np.ndarray = field(repr=False, compare=False)
    top: tuple = field(default=(), repr=False, compare=False)


@dataclass(frozen=True)
class Detection:
    """A keyword heard in a stream: the label, the end time of the window in seconds, its score."""

    label: str
    time_s: float
    score: float


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (classes), in place in float64 ``logits``: (C,) one sample, (N, C) rows.
    One sample reduces to scalars (numpy's quickest in-place path: the stream scores every hop)."""
    keep = logits.ndim > 1
    logits -= logits.max(axis=-1, keepdims=keep)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=-1, keepdims=keep)
    return logits


class Classifier:
    """Argmax, top-k and scores over int32 potentials; see the module docstring."""

    top_count = 5  # (label, score) pairs kept in each Prediction.top

    def __init__(self, labels=None, output_scale=None, threshold: float | None = None,
                 unknown_label: str = UNKNOWN):
        self.labels = None if labels is None else [str(label) for label in labels]
        self.output_scale = None if output_scale is None else np.asarray(output_scale, dtype=np.float64)
        if self.output_scale is not None and (self.output_scale.ndim > 1 or not np.all(np.isfinite(self.output_scale))):
            raise ValueError(f"output_scale must be a finite float or a list of floats (one per class), "
                             f"got {output_scale!r}")
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be a score in [0, 1] (or None for no rejection), got {threshold!r}")
        self.threshold = None if threshold is None else float(threshold)
        self.unknown_label = str(unknown_label)

    def __repr__(self) -> str:
        classes = len(self.labels) if self.labels is not None else "?"
        return f"Classifier({classes} classes, threshold={self.threshold}, unknown_label={self.unknown_label!r})"

    # -- scores ----------------------------------------------------------------------------------
    def flatten(self, potentials) -> np.ndarray:
        """Potentials (N, ...) -> int (N, C), checking C against the labels."""
        pot = np.asarray(potentials)
        if pot.ndim == 0 or pot.dtype.kind not in "iu":
            raise ValueError(f"potentials must be an integer array (N, ...) batch first, got "
                             f"dtype {pot.dtype}, shape {pot.shape}")
        pot = pot.reshape(pot.shape[0], -1) if pot.ndim > 1 else pot.reshape(1, -1)
        if self.labels is not None and pot.shape[1] != len(self.labels):
            raise ValueError(f"the model outputs {pot.shape[1]} classes but {len(self.labels)} labels were given "
                             f"({self.labels[:5]}{'...' if len(self.labels) > 5 else ''})")
        if self.output_scale is not None and self.output_scale.ndim == 1 and self.output_scale.size != pot.shape[1]:
            raise ValueError(f"output_scale has {self.output_scale.size} entries, the model outputs {pot.shape[1]} classes")
        return pot

    def dequantize(self, potentials, timesteps: int = 1) -> np.ndarray:
        """float64 (N, C): potentials * output_scale / timesteps; without an output_scale, the potentials as is."""
        return self._logits(self.flatten(potentials), timesteps)

    def scores(self, potentials, timesteps: int = 1) -> np.ndarray:
        """Softmax over classes of the dequantized potentials: float64 (N, C), rows sum to 1."""
        return _softmax(self.dequantize(potentials, timesteps))

    def scores_one(self, potentials, timesteps: int = 1) -> np.ndarray:
        """``scores`` of one sample's potentials (any shape) -> float64 (C,): the same values without the
        batch checks of ``flatten`` (a stream scores a window every hop)."""
        return _softmax(self._logits(np.asarray(potentials).reshape(-1), timesteps))

    def _logits(self, pot: np.ndarray, timesteps: int) -> np.ndarray:
        """A new float64 array of pot's shape (classes last): pot * output_scale / timesteps."""
        if self.output_scale is None:
            return pot.astype(np.float64)                                    # no scaling: the potentials as is
        logits = np.multiply(pot, self.output_scale, dtype=np.float64)      # = pot.astype(float64) * scale
        if timesteps > 1:
            logits /= int(timesteps)
        return logits

    # -- answers ---------------------------------------------------------------------------------
    def label_of(self, index: int) -> str:
        if index < 0:
            return self.unknown_label
        return self.labels[index] if self.labels is not None else str(index)

    def classify(self, potentials, timesteps: int = 1) -> list[Prediction]:
        """One Prediction per sample: the best dequantized class (first on ties), its score, rejection."""
        pot = self.flatten(potentials)
        scores = self.scores(pot, timesteps)
        predictions = []
        for row, score_row, top in zip(pot, scores, self._top(scores, self.top_count)):
            index = int(np.argmax(score_row))  # with one scale for all classes: Model.predict's argmax
            score = float(score_row[index])
            if self.threshold is not None and score < self.threshold:
                index = -1
            predictions.append(Prediction(self.label_of(index), index, score, row.copy(), tuple(top)))
        return predictions

    def top_k(self, potentials, k: int = 5, timesteps: int = 1) -> list[list[tuple[str, float]]]:
        """Per sample, the k best (label, score) pairs, best first (ties: lower index first)."""
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k!r}")
        return self._top(self.scores(potentials, timesteps), int(k))

    def _top(self, scores: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [[(self.label_of(int(i)), float(row[i])) for i in idx] for row, idx in zip(scores, order)]
