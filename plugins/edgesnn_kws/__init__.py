"""Keyword-spotting frontend: 16 kHz mono audio -> an MFCC spectrogram as uint8 (frames, coefficients, 1).

    fe = es.frontend("kws")                  # 1 s clip, 30 ms frames, 20 ms hop, 40 mel bands, 10 MFCC
    fe.calibrate(training_waveforms)         # sets the uint8 range per coefficient (stored in .config)
    x = fe("yes.wav")                        # (49, 10, 1) uint8
    stream = fe.stream()
    for chunk in microphone: frames = stream.push(chunk)   # (k, 10) float32 MFCC frames, as offline

The defaults are the MLPerf Tiny / Akida DS-CNN setting. Each frame is the MFCC of one window of
``frame_s`` seconds (periodic Hann, no centring padding), taken every ``hop_s`` seconds:
mel power spectrogram (librosa's Slaney mel filters, ``n_mels`` bands in [fmin, fmax]) -> dB
(10*log10, floor 1e-10, no top_db clipping, so a frame depends only on its own samples) ->
orthonormal DCT-II, first ``n_mfcc``: librosa.feature.mfcc of that spectrogram, computed in float64.

uint8: ``round((mfcc - low) / (high - low) * 255)`` clipped to [0, 255], with ``low``/``high`` per
coefficient. Until ``calibrate`` is called they are a wide default range that covers speech at any
level but wastes resolution.

Audio input: a WAV/FLAC/OGG path (soundfile; other sample rates are resampled, several channels are
mixed down with a warning), a 1-D float array in [-1, 1] at ``sample_rate`` (int16 arrays are
scaled by 1/32768), or a ``(waveform, sample_rate)`` tuple. Clips shorter than ``clip_s`` are
zero-padded at the end; longer ones are cut (``crop="center"`` or ``"start"``) or refused (``"error"``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

import edgesnn as es

CROPS = ("center", "start", "error")
DB_FLOOR_POWER = 1e-10  # power_to_db's amin: silence is -100 dB
# Wide default uint8 range (before calibrate): c0 spans silence (-100 dB in every band) to loud speech,
# the other coefficients a symmetric range that speech at any level stays inside.
DEFAULT_LOW_C0, DEFAULT_HIGH_C0 = -700.0, 200.0
DEFAULT_ABS_OTHER = 150.0
FEATURE_BLOCK_FRAMES = 512   # features() of a long recording works on this many frames at a time
AUDIO_PEAK_WARN = 2.0   # float audio is in [-1, 1]; a peak above this gets a warning (clipped audio stays quiet)


class KwsFrontend:
    """MFCC keyword-spotting frontend; see the module docstring."""

    name = "kws"
    time_axis = False  # the output is one dense (frames, coefficients, 1) tensor

    def __init__(self, sample_rate: int = 16000, clip_s: float = 1.0, frame_s: float = 0.030,
                 hop_s: float = 0.020, n_mels: int = 40, n_mfcc: int = 10, fmin: float = 20.0,
                 fmax: float = 4000.0, low=None, high=None, crop: str = "center"):
        self.sample_rate = int(sample_rate)
        self.clip_s = float(clip_s)
        self.frame_s = float(frame_s)
        self.hop_s = float(hop_s)
        self.n_mels = int(n_mels)
        self.n_mfcc = int(n_mfcc)
        self.fmin = float(fmin)
        self.fmax = float(fmax)
        self.crop = crop
        self._check_timing()
        self.low, self.high = self._range(low, high)
        self._tables_key = None          # the key the tables of frames_mfcc were built for

    # -- derived sizes ---------------------------------------------------------------------------
    @property
    def frame_samples(self) -> int:
        return round(self.frame_s * self.sample_rate)

    @property
    def hop_samples(self) -> int:
        return round(self.hop_s * self.sample_rate)

    @property
    def clip_samples(self) -> int:
        return round(self.clip_s * self.sample_rate)

    @property
    def n_frames(self) -> int:
        return 1 + (self.clip_samples - self.frame_samples) // self.hop_samples

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (self.n_frames, self.n_mfcc, 1)

    @property
    def config(self) -> dict:
        return {"sample_rate": self.sample_rate, "clip_s": self.clip_s, "frame_s": self.frame_s,
                "hop_s": self.hop_s, "n_mels": self.n_mels, "n_mfcc": self.n_mfcc, "fmin": self.fmin,
                "fmax": self.fmax, "low": [float(v) for v in self.low], "high": [float(v) for v in self.high],
                "crop": self.crop}

    def __repr__(self) -> str:
        return (f"KwsFrontend(sample_rate={self.sample_rate}, clip_s={self.clip_s}, frame_s={self.frame_s}, "
                f"hop_s={self.hop_s}, n_mels={self.n_mels}, n_mfcc={self.n_mfcc}, output_shape={self.output_shape})")

    def _check_timing(self) -> None:
        if self.sample_rate < 1000:
            raise ValueError(f"kws frontend: sample_rate must be >= 1000 Hz, got {self.sample_rate}")
        if not 1 <= self.hop_samples <= self.frame_samples <= self.clip_samples:
            raise ValueError(f"kws frontend: need 1 <= hop ({self.hop_samples} samples) <= frame "
                             f"({self.frame_samples}) <= clip ({self.clip_samples}); got hop_s={self.hop_s}, "
                             f"frame_s={self.frame_s}, clip_s={self.clip_s}")
        if not 1 <= self.n_mfcc <= self.n_mels:
            raise ValueError(f"kws frontend: need 1 <= n_mfcc <= n_mels, got n_mfcc={self.n_mfcc}, n_mels={self.n_mels}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"kws frontend: need 0 <= fmin < fmax <= sample_rate/2 = {self.sample_rate / 2}, "
                             f"got fmin={self.fmin}, fmax={self.fmax}")
        if self.crop not in CROPS:
            raise ValueError(f"kws frontend: crop must be one of {CROPS}, got {self.crop!r}")

    def _range(self, low, high) -> tuple[np.ndarray, np.ndarray]:
        if low is None and high is None:
            low = [DEFAULT_LOW_C0] + [-DEFAULT_ABS_OTHER] * (self.n_mfcc - 1)
            high = [DEFAULT_HIGH_C0] + [DEFAULT_ABS_OTHER] * (self.n_mfcc - 1)
        low = np.broadcast_to(np.asarray(low, dtype=np.float64), (self.n_mfcc,)).copy()
        high = np.broadcast_to(np.asarray(high, dtype=np.float64), (self.n_mfcc,)).copy()
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(high > low)):
            raise ValueError(f"kws frontend: need finite low < high for every coefficient, got low={low.tolist()}, "
                             f"high={high.tolist()}")
        return low, high

    # -- public API ------------------------------------------------------------------------------
    def __call__(self, raw) -> np.ndarray:
        """One clip -> uint8 (n_frames, n_mfcc, 1); a list of clips -> uint8 (N, n_frames, n_mfcc, 1)."""
        if isinstance(raw, list):
            if not raw:
                raise ValueError("kws frontend: got an empty list; give at least one clip")
            return np.stack([self(item) for item in raw])
        clip = self.clip(self.load(raw))
        return self.quantize(self.features(clip))[:, :, None]

    def load(self, raw) -> np.ndarray:
        """Any accepted audio input -> float32 mono waveform at ``sample_rate``."""
        if isinstance(raw, (str, os.PathLike)):
            waveform, rate = _read_audio_file(Path(raw))
            where = str(raw)
        elif isinstance(raw, tuple) and len(raw) == 2 and np.isscalar(raw[1]):
            rate = raw[1]
            if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)) \
                    or not np.isfinite(rate) or rate < 1 or int(rate) != rate:
                raise ValueError(f"kws frontend: a (waveform, sample_rate) tuple needs a positive whole sample "
                                 f"rate in Hz, got {rate!r}")
            waveform, rate, where = _as_float(np.asarray(raw[0]), "waveform"), int(rate), "waveform"
        else:
            waveform, rate, where = _as_float(np.asarray(raw), "waveform"), self.sample_rate, "waveform"
        waveform = _mix_down(waveform, where)
        if waveform.size == 0:
            raise ValueError(f"kws frontend: {where} holds no samples (empty audio)")
        if not np.all(np.isfinite(waveform)):
            raise ValueError(f"kws frontend: {where} has NaN or infinite samples "
                             f"(first at sample {int(np.argmin(np.isfinite(waveform)))})")
        _warn_out_of_range(waveform, where)
        if rate != self.sample_rate:
            import librosa

            waveform = librosa.resample(waveform, orig_sr=rate, target_sr=self.sample_rate)
        return np.ascontiguousarray(waveform, dtype=np.float32)

    def clip(self, waveform: np.ndarray) -> np.ndarray:
        """A mono waveform -> exactly ``clip_samples`` samples (zero-padded at the end, or cut)."""
        n = waveform.shape[0]
        if n < self.frame_samples:
            raise ValueError(f"kws frontend: audio too short: {n} samples ({n / self.sample_rate * 1000:.1f} ms) "
                             f"at {self.sample_rate} Hz, need at least one frame of {self.frame_samples} samples")
        if n < self.clip_samples:
            return np.concatenate([waveform, np.zeros(self.clip_samples - n, dtype=np.float32)])
        if n > self.clip_samples:
            if self.crop == "error":
                raise ValueError(f"kws frontend: audio of {n} samples is longer than the {self.clip_samples}-sample "
                                 f"clip; use crop='center' or 'start', or stream it")
            start = (n - self.clip_samples) // 2 if self.crop == "center" else 0
            return waveform[start:start + self.clip_samples]
        return waveform

    def features(self, waveform: np.ndarray) -> np.ndarray:
        """Float MFCC frames (frames, n_mfcc) of a mono waveform of any length >= one frame.

        Every step works on one frame at a time (elementwise operations and reductions along each
        frame's own row, no matrix products across frames), so a frame's value does not depend on how
        many frames are computed together: streaming equals offline.
        """
        waveform = np.asarray(waveform, dtype=np.float64)
        if waveform.ndim != 1 or waveform.shape[0] < self.frame_samples:
            raise ValueError(f"kws frontend: features need a 1-D waveform of at least {self.frame_samples} samples, "
                             f"got shape {waveform.shape}")
        frames = np.lib.stride_tricks.sliding_window_view(waveform, self.frame_samples)[::self.hop_samples]
        out = np.empty((frames.shape[0], self.n_mfcc), dtype=np.float32)
        block = FEATURE_BLOCK_FRAMES            # bounds the temporaries of a long recording
        for start in range(0, frames.shape[0], block):
            out[start:start + block] = self.frames_mfcc(frames[start:start + block])
        return out

    def frames_mfcc(self, frames: np.ndarray) -> np.ndarray:
        """MFCC (k, n_mfcc) float64 of k frames (k, frame_samples) float64, row by row (see ``features``).

        Periodic Hann window -> power spectrum (pocketfft, per row) -> mel band energies: each band's
        bins times its weights, added term by term -> 10*log10 (floor 1e-10) -> orthonormal DCT-II as
        its basis times the bands, added term by term. The sums run over the outer axis of a
        (terms, k, bands) array, so numpy adds the terms in order, one frame's the same whatever k is
        (a sum along each row's own axis does not: numpy changes its order with the shape)."""
        window, bins, weights, dct = self._tables_value if self._tables_key == self._key() else self._tables()
        spectrum = self._rfft(frames * window)                               # (k, frame//2+1) complex
        squares = spectrum.view(np.float64)                                  # (k, 2 (frame//2+1)): re, im, ...
        np.multiply(squares, squares, out=squares)
        power = squares[:, 0::2] + squares[:, 1::2]                          # re^2 + im^2
        terms = power.take(bins, axis=1)                                     # (k, K, n_mels): power[:, bins]
        np.multiply(terms, weights, out=terms)
        mel_db = np.add.reduce(terms.transpose(1, 0, 2), axis=0)             # (k, n_mels) power (.sum's own call)
        np.maximum(mel_db, DB_FLOOR_POWER, out=mel_db)
        np.log10(mel_db, out=mel_db)
        np.multiply(mel_db, 10.0, out=mel_db)                                # dB
        return np.add.reduce((mel_db[:, :, None] * dct).transpose(1, 0, 2), axis=0)   # (k, n_mfcc)

    def _tables(self):
        """(window (frame,), bins (K, n_mels) int, weights (K, n_mels), dct (n_mels, n_mfcc)), built once.

        ``bins``/``weights``: the FFT bins each mel filter covers (librosa's Slaney filters), padded
        with weight 0 to the widest filter's K bins; ``dct``: the orthonormal DCT-II basis."""
        key = self._key()
        if self._tables_key != key:
            import scipy.fft

            window, mel_basis = self._window_and_mel_basis()
            covered = [np.flatnonzero(row) for row in mel_basis]
            width = max(1, max(len(c) for c in covered))
            bins = np.zeros((width, self.n_mels), dtype=np.intp)
            weights = np.zeros((width, self.n_mels), dtype=np.float64)
            for m, c in enumerate(covered):
                if len(c):
                    span = np.arange(c[0], c[0] + width).clip(max=mel_basis.shape[1] - 1)
                    bins[:, m] = span
                    weights[:, m] = np.where(span <= c[-1], mel_basis[m, span], 0.0)
            dct = scipy.fft.dct(np.eye(self.n_mels), type=2, norm="ortho", axis=0)[:self.n_mfcc].T   # (n_mels, n_mfcc)
            self._tables_value = (window, bins, weights, np.ascontiguousarray(dct))
            self._rfft = _rows_rfft(scipy.fft)
            self._tables_key = key
        return self._tables_value

    def _key(self) -> tuple:
        return (self.sample_rate, self.frame_samples, self.n_mels, self.n_mfcc, self.fmin, self.fmax)

    def _window_and_mel_basis(self) -> tuple[np.ndarray, np.ndarray]:
        """(periodic Hann window (frame,), Slaney mel basis (n_mels, frame//2+1)): the values of
        scipy.signal.get_window("hann", frame, fftbins=True) and librosa.filters.mel(..., dtype=float64),
        computed here by the same numpy operations (importing scipy.signal and librosa.filters costs
        ~1.5 s of CPU, the whole start-up of a stream; tests/test_frontend_kws.py compares the bits)."""
        key = (self.sample_rate, self.frame_samples, self.n_mels, self.fmin, self.fmax)
        if getattr(self, "_basis_key", None) != key:
            self._window = _periodic_hann(self.frame_samples)
            self._mel_basis = _slaney_mel_basis(self.sample_rate, self.frame_samples, self.n_mels, self.fmin, self.fmax)
            self._basis_key = key
        return self._window, self._mel_basis

    def quantize(self, mfcc: np.ndarray) -> np.ndarray:
        """Float MFCC (..., n_mfcc) -> uint8 with the calibrated per-coefficient range."""
        scaled = np.subtract(mfcc, self.low, dtype=np.float64)              # float32 input widened first
        np.divide(scaled, self.high - self.low, out=scaled)
        np.multiply(scaled, 255.0, out=scaled)
        np.add(scaled, 0.5, out=scaled)
        np.maximum(scaled, 0.0, out=scaled)
        # floor(x + 0.5) clipped to [0, 255] (round half up): the cast to uint8 truncates, which is the
        # floor on the clipped, non-negative values
        return np.minimum(scaled, 255.0, out=scaled).astype(np.uint8)

    def calibrate(self, waveforms, percentile: float = 0.5) -> "KwsFrontend":
        """Set the uint8 range per coefficient from example clips: [p, 100 - p] percentiles of their MFCC."""
        if not 0.0 <= percentile < 50.0:
            raise ValueError(f"kws frontend: percentile must be in [0, 50), got {percentile}")
        clips = list(waveforms) if not isinstance(waveforms, np.ndarray) or waveforms.ndim > 1 else [waveforms]
        if not clips:
            raise ValueError("kws frontend: calibrate needs at least one clip")
        mfcc = np.concatenate([self.features(self.clip(self.load(c))) for c in clips])
        low = np.percentile(mfcc, percentile, axis=0)
        high = np.percentile(mfcc, 100.0 - percentile, axis=0)
        self.low, self.high = low, np.maximum(high, low + 1e-3)
        return self

    def stream(self) -> "KwsStream":
        """A streaming feature extractor: push chunks of any size, get the new frames."""
        return KwsStream(self)


class KwsStream:
    """Incremental MFCC: ``push(chunk)`` returns the frames completed by that chunk.

    Frame k covers samples ``[k * hop, k * hop + frame)`` of everything pushed so far, so the
    frames equal ``frontend.features`` of the same samples. Only the new frames are computed: the
    samples not yet consumed by a hop wait in a buffer allocated once (grown only for a chunk
    longer than any before), moved to its front only when its end is reached. Chunks are mono, at the frontend's ``sample_rate`` (resample a whole
    recording with ``frontend.load`` first).
    """

    def __init__(self, frontend: KwsFrontend):
        self.frontend = frontend
        frontend._tables()                                   # build the tables now, not on the first hop
        self._frame, self._hop = frontend.frame_samples, frontend.hop_samples
        self._buffer = np.zeros(self._frame + 64 * self._hop, dtype=np.float64)   # (capacity,) samples
        self._start = 0                                       # samples waiting in _buffer[_start:_start + _pending]
        self._pending = 0
        self._empty = np.zeros((0, frontend.n_mfcc), dtype=np.float32)
        self.frames_emitted = 0
        self.samples_pushed = 0

    def push(self, chunk) -> np.ndarray:
        """Append samples; return the float32 MFCC frames (k, n_mfcc) they complete (k may be 0)."""
        samples = chunk if type(chunk) is np.ndarray and chunk.dtype == np.float32 else \
            _as_float(np.asarray(chunk), "chunk")
        if samples.ndim != 1:
            raise ValueError(f"kws stream: chunks must be 1-D mono samples, got shape {samples.shape}")
        if not np.isfinite(samples).all():
            raise ValueError(f"kws stream: chunk has NaN or infinite samples (after {self.samples_pushed} samples)")
        n = samples.shape[0]
        self.samples_pushed += n
        total = self._pending + n
        start = self._start
        if start + total > self._buffer.shape[0]:   # the end reached: the waiting samples move to the front
            if total > self._buffer.shape[0]:
                grown = np.zeros(total + 64 * self._hop, dtype=np.float64)
                grown[:self._pending] = self._buffer[start:start + self._pending]
                self._buffer = grown
            else:
                self._buffer[:self._pending] = self._buffer[start:start + self._pending]
            start = self._start = 0
        buffer = self._buffer
        buffer[start + self._pending:start + total] = samples
        if total < self._frame:
            self._pending = total
            return self._empty
        count = 1 + (total - self._frame) // self._hop
        # (count, frame) overlapping rows of the buffer, a view (sliding_window_view costs ~20x more)
        frames = buffer[None, start:start + self._frame] if count == 1 else \
            np.ndarray((count, self._frame), np.float64, buffer, start * 8, (self._hop * 8, 8))
        mfcc = self.frontend.frames_mfcc(frames).astype(np.float32)
        consumed = count * self._hop
        self._start = start + consumed
        self._pending = total - consumed
        self.frames_emitted += count
        return mfcc

    @property
    def time_s(self) -> float:
        """End time (seconds since the stream began) of the last emitted frame."""
        fe = self.frontend
        if self.frames_emitted == 0:
            return 0.0
        return ((self.frames_emitted - 1) * fe.hop_samples + fe.frame_samples) / fe.sample_rate


def _rows_rfft(fft_module):
    """rfft along the last axis of float64 rows: scipy.fft.rfft's own pocketfft call (the same
    function, the same bits) without scipy.fft's backend dispatch, which costs about three times
    the transform of a 480-sample frame; scipy.fft.rfft itself where that call is not found."""
    try:
        from scipy.fft._pocketfft import pypocketfft
        r2c = pypocketfft.r2c
    except (ImportError, AttributeError):
        return lambda x: fft_module.rfft(x, axis=-1)
    probe = np.arange(16, dtype=np.float64).reshape(2, 8)
    try:
        same = np.array_equal(r2c(probe, (1,), True, 0, None, 1), fft_module.rfft(probe, axis=-1))
    except TypeError:        # another signature in another scipy
        same = False
    if not same:
        return lambda x: fft_module.rfft(x, axis=-1)
    return lambda x: r2c(x, (x.ndim - 1,), True, 0, None, 1)


def _periodic_hann(n: int) -> np.ndarray:
    """scipy.signal.get_window("hann", n, fftbins=True), by scipy's own steps (general_cosine with
    a = [0.5, 0.5] over n + 1 points, the last dropped)."""
    if n <= 1:
        return np.ones(n, dtype=np.float64)
    fac = np.linspace(-np.pi, np.pi, n + 1, dtype=np.float64)
    w = np.zeros(n + 1, dtype=np.float64)
    for k, a in enumerate((0.5, 0.5)):
        w += a * np.cos(k * fac)
    return w[:-1]


def _hz_to_mel(frequencies):
    """librosa.hz_to_mel (Slaney's scale, htk=False), by librosa's steps."""
    frequencies = np.asanyarray(frequencies)
    f_min, f_sp = 0.0, 200.0 / 3
    mels = (frequencies - f_min) / f_sp
    min_log_hz = 1000.0
    min_log_mel = (min_log_hz - f_min) / f_sp
    logstep = np.log(6.4) / 27.0
    if frequencies.ndim:
        log_t = frequencies >= min_log_hz
        mels[log_t] = min_log_mel + np.log(frequencies[log_t] / min_log_hz) / logstep
    elif frequencies >= min_log_hz:
        mels = min_log_mel + np.log(frequencies / min_log_hz) / logstep
    return mels


def _mel_to_hz(mels):
    """librosa.mel_to_hz (Slaney's scale, htk=False), by librosa's steps."""
    mels = np.asanyarray(mels)
    f_min, f_sp = 0.0, 200.0 / 3
    freqs = f_min + f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = (min_log_hz - f_min) / f_sp
    logstep = np.log(6.4) / 27.0
    if mels.ndim:
        log_t = mels >= min_log_mel
        freqs[log_t] = min_log_hz * np.exp(logstep * (mels[log_t] - min_log_mel))
    elif mels >= min_log_mel:
        freqs = min_log_hz * np.exp(logstep * (mels - min_log_mel))
    return freqs


def _slaney_mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa.filters.mel(sr=, n_fft=, n_mels=, fmin=, fmax=, htk=False, norm="slaney",
    dtype=np.float64), by librosa's steps: (n_mels, 1 + n_fft // 2)."""
    weights = np.zeros((n_mels, int(1 + n_fft // 2)), dtype=np.float64)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    if not np.all((mel_f[:-2] == 0) | (weights.max(axis=1) > 0)):
        warnings.warn(f"kws frontend: {n_mels} mel bands over {fmin:g}-{fmax:g} Hz with {n_fft}-sample frames leave "
                      f"some bands without an FFT bin (they stay 0); use fewer bands or longer frames", stacklevel=4)
    return weights


def _read_audio_file(path: Path) -> tuple[np.ndarray, int]:
    import soundfile

    if not path.is_file():
        raise FileNotFoundError(f"kws frontend: no such audio file: {path}")
    try:
        waveform, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as exc:
        raise ValueError(f"kws frontend: {path} is not an audio file soundfile can read "
                         f"(WAV, FLAC, OGG...): {exc}") from exc
    return waveform, int(rate)


def _warn_out_of_range(waveform: np.ndarray, where: str) -> None:
    """Float audio is in [-1, 1]; samples far outside (int16 values given as floats, say) are warned about."""
    peak = float(np.max(np.abs(waveform))) if waveform.size else 0.0
    if peak > AUDIO_PEAK_WARN:
        hint = " (int16 values as floats? divide by 32768, or give the int16 array)" if peak <= 32768.0 else ""
        warnings.warn(f"kws frontend: {where} peaks at {peak:g}, far outside float audio's [-1, 1]{hint}; "
                      f"the features will be those of a very loud clip", stacklevel=4)


def _as_float(arr: np.ndarray, where: str) -> np.ndarray:
    """Float arrays pass through (as float32); int16 is scaled by 1/32768; other dtypes are refused."""
    if arr.dtype.kind == "f":
        return arr.astype(np.float32)
    if arr.dtype == np.int16:
        return arr.astype(np.float32) / 32768.0
    raise ValueError(f"kws frontend: {where} must be float samples in [-1, 1] or int16, got dtype {arr.dtype}")


def _mix_down(waveform: np.ndarray, where: str) -> np.ndarray:
    """(samples,) stays; (samples, channels) is averaged over channels with a warning."""
    if waveform.ndim == 1:
        return waveform
    if waveform.ndim == 2:
        channels = waveform.shape[1]
        if channels == 1:
            return waveform[:, 0]
        if channels > 8:
            raise ValueError(f"kws frontend: {where} of shape {waveform.shape} looks like (channels, samples); "
                             f"give (samples,) or (samples, channels)")
        warnings.warn(f"kws frontend: {where} has {channels} channels; mixed down to mono by averaging",
                      stacklevel=4)
        return waveform.mean(axis=1, dtype=np.float32)
    raise ValueError(f"kws frontend: {where} must be (samples,) or (samples, channels), got shape {waveform.shape}")


@es.hookimpl
def edgesnn_register_frontends(register):
    register("kws", KwsFrontend)
