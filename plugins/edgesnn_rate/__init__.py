"""Rate coding: intensities in [0, 1] (or uint8 0..255) -> a spike train (T, ...) of 0/1.

    fe = es.frontend("rate", timesteps=20, max_spikes=6)          # neuroaikit's transform_rate(x, 20, 6)
    spikes = fe(image)                                             # (20, 28, 28, 1) uint8 of 0/1

An input of intensity ``x`` fires ``n = round(x * max_spikes)`` spikes over ``timesteps`` steps:

- ``mode="deterministic"``: the n spikes are evenly spaced; step t fires when
  ``floor((t + 1) * n / T) > floor(t * n / T)`` (so the last step of each of n equal parts fires);
- ``mode="poisson"``: each step fires independently with probability ``x * max_spikes / T``
  (expected count n), drawn from a generator seeded with ``seed`` when the frontend is made.

``shape`` (H, W, C), when given, is the shape of one sample: the input is reshaped to it (its size
must match), and ``output_shape`` is ``(timesteps, H, W, C)``. A 2-D input (H, W) gets a channel axis.
"""

from __future__ import annotations

import numpy as np

import edgesnn as es

MODES = ("deterministic", "poisson")
TIMESTEPS_MAX = es.layers.TIMESTEPS_MAX   # the longest run the engines accept (native/src/limits.zig)
SPIKE_VALUES_MAX = 1 << 26        # int64 values one encode may hold in its intermediate (512 MiB)


class RateFrontend:
    """Rate coding of intensities into spike trains; see the module docstring."""

    name = "rate"
    time_axis = True  # the output is a spike train (T, H, W, C) per sample

    def __init__(self, timesteps: int = 20, max_spikes: int | None = None, mode: str = "deterministic",
                 seed: int = 0, shape=None):
        timesteps = int(timesteps)
        if not 1 <= timesteps <= TIMESTEPS_MAX:
            raise ValueError(f"rate frontend: timesteps must be in [1, {TIMESTEPS_MAX}] (the engines' limit), "
                             f"got {timesteps}")
        max_spikes = timesteps if max_spikes is None else int(max_spikes)
        if not 0 <= max_spikes <= timesteps:
            raise ValueError(f"rate frontend: max_spikes must be in [0, timesteps={timesteps}], got {max_spikes}")
        if mode not in MODES:
            raise ValueError(f"rate frontend: mode must be one of {MODES}, got {mode!r}")
        if shape is not None:
            shape = tuple(int(s) for s in shape)
            if len(shape) != 3 or min(shape) < 1:
                raise ValueError(f"rate frontend: shape must be (H, W, C) of positive integers, got {shape!r}")
        self.timesteps = timesteps
        self.max_spikes = max_spikes
        self.mode = mode
        self.seed = int(seed)
        self.shape = shape
        self._rng = np.random.default_rng(self.seed)

    @property
    def config(self) -> dict:
        return {"timesteps": self.timesteps, "max_spikes": self.max_spikes, "mode": self.mode,
                "seed": self.seed, "shape": None if self.shape is None else list(self.shape)}

    @property
    def output_shape(self) -> tuple | None:
        """(T, H, W, C) when ``shape`` is configured; None when it follows the input."""
        return None if self.shape is None else (self.timesteps, *self.shape)

    def __repr__(self) -> str:
        return f"RateFrontend({', '.join(f'{k}={v!r}' for k, v in self.config.items())})"

    def __call__(self, raw) -> np.ndarray:
        """One sample -> uint8 spike train (T, ...) of 0/1."""
        intensity = self._intensity(raw)
        return self.encode(intensity)

    def encode(self, intensity: np.ndarray) -> np.ndarray:
        """Float intensities in [0, 1] of any shape (...) -> uint8 spikes (T, ...)."""
        values = (self.timesteps + 1) * int(np.prod(np.shape(intensity)))
        if values > SPIKE_VALUES_MAX:
            raise ValueError(f"rate frontend: {self.timesteps} timesteps of a {np.shape(intensity)} input need "
                             f"{values:,} intermediate values, above the limit of {SPIKE_VALUES_MAX:,} "
                             f"(about {SPIKE_VALUES_MAX * 8 >> 20} MiB); use fewer timesteps or a smaller input")
        if self.mode == "deterministic":
            return _evenly_spaced(intensity, self.timesteps, self.max_spikes)
        probability = intensity * (self.max_spikes / self.timesteps)
        draws = self._rng.random((self.timesteps, *intensity.shape))
        return (draws < probability).astype(np.uint8)

    def _intensity(self, raw) -> np.ndarray:
        arr = np.asarray(raw)
        if arr.size == 0:
            raise ValueError(f"rate frontend: the input is empty, shape {arr.shape}")
        if arr.dtype == np.uint8:
            intensity = arr.astype(np.float64) / 255.0
        elif arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)):
                raise ValueError("rate frontend: the input has NaN or infinite values")
            if arr.min() < 0.0 or arr.max() > 1.0:
                raise ValueError(f"rate frontend: float inputs must lie in [0, 1], got [{arr.min():g}, {arr.max():g}]; "
                                 f"give uint8 for 0..255 values")
            intensity = arr.astype(np.float64)
        else:
            raise ValueError(f"rate frontend: the input must be uint8 (0..255) or float in [0, 1], got dtype {arr.dtype}")
        return self._reshape(intensity)

    def _reshape(self, intensity: np.ndarray) -> np.ndarray:
        if self.shape is not None:
            if intensity.size != int(np.prod(self.shape)):
                raise ValueError(f"rate frontend: the input of shape {intensity.shape} ({intensity.size} values) "
                                 f"does not fit the configured sample shape {self.shape}")
            return intensity.reshape(self.shape)
        if intensity.ndim == 2:
            return intensity[:, :, None]
        return intensity


def _evenly_spaced(intensity: np.ndarray, timesteps: int, max_spikes: int) -> np.ndarray:
    """n = round(x * max_spikes) spikes per element, at the last step of each of n equal parts of T."""
    count = np.floor(intensity * max_spikes + 0.5).astype(np.int64)  # round half up
    steps = np.arange(timesteps + 1, dtype=np.int64).reshape((timesteps + 1,) + (1,) * intensity.ndim)
    cumulative = (steps * count) // timesteps  # spikes fired by the end of each step
    return np.diff(cumulative, axis=0).astype(np.uint8)


@es.hookimpl
def edgesnn_register_frontends(register):
    register("rate", RateFrontend)
