"""Pipeline: raw input -> frontend -> Model -> classifier, as one object that saves to one .esnn file.

    pipe = es.Pipeline(es.frontend("image", size=(28, 28), invert=True), model, labels=[str(d) for d in range(10)])
    pipe("seven.png")                  # Prediction(label='7', index=7, score=0.98, potentials=array([...]))
    pipe.batch(["a.png", "b.png"])     # [Prediction, Prediction]
    pipe.save("digits.esnn")           # model + frontend config + labels in the file's metadata
    pipe = es.Pipeline.load("digits.esnn")
    for d in kws_pipe.stream(chunks):  # Detection(label, time_s, score), for frontends with a streaming mode
        print(d.label, d.time_s)
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from .classifier import UNKNOWN, Classifier, Detection, Prediction
from .detector import BACKGROUND_LABELS as NON_KEYWORDS
from .detector import METADATA_KEY as DETECTOR_KEY
from .detector import Detector, DetectorSettings
from .errors import ModelError
from .model import Model

PIPELINE_KEY = "pipeline"    # metadata key of the pipeline's own options (threshold, unknown label, timesteps)
FRONTEND_KEY = "frontend"    # metadata key of {"name": ..., "config": {...}} (docs/format.md)
STREAM_CHUNK_S = 0.1         # a whole recording given to stream() is fed in pieces of this length


class Pipeline:
    """A frontend, a Model and a classifier chained; see the module docstring.

    ``frontend``: a frontend object, a registered frontend name, or None (inputs are already model
    inputs: uint8 (H, W, C) or spike trains (T, H, W, C)). ``model``: a Model or a .esnn path.
    ``labels``: class names (default: the model's metadata ``labels``). ``device``: where the model
    runs (name or Device; None: the default device). ``timesteps``: timesteps for dense frontends
    (default 1; spike-train frontends bring their own T). ``threshold``: reject answers whose score
    is below it as ``unknown_label``.
    """

    def __init__(self, frontend, model, labels=None, device=None, timesteps: int | None = None,
                 threshold: float | None = None, unknown_label: str = UNKNOWN):
        if isinstance(frontend, str):
            from . import plugins

            frontend = plugins.frontend(frontend)
        if isinstance(model, (str, os.PathLike)):
            model = Model.load(model)
        if not isinstance(model, Model):
            raise TypeError(f"Pipeline model must be an edgesnn Model or a .esnn path, got {type(model).__name__}")
        self.frontend = frontend
        self.model = model
        self.device = device
        self.timesteps = model.metadata.get("timesteps") if timesteps is None else timesteps  # spiking models store T
        labels = model.metadata.get("labels") if labels is None else labels
        self.classifier = Classifier(labels, output_scale=model.metadata.get("output_scale"),
                                     threshold=threshold, unknown_label=unknown_label)
        self._check_labels()
        self._check_shapes(getattr(frontend, "output_shape", None))

    @property
    def labels(self) -> list[str] | None:
        return self.classifier.labels

    def __repr__(self) -> str:
        name = None if self.frontend is None else getattr(self.frontend, "name", type(self.frontend).__name__)
        return (f"<edgesnn.Pipeline frontend={name!r} "
                f"input {self.model.input_shape} -> {self.model.output_shape}, "
                f"{len(self.labels) if self.labels else '?'} labels>")

    # -- checks ----------------------------------------------------------------------------------
    def _check_labels(self) -> None:
        classes = int(np.prod(self.model.output_shape))
        if self.labels is not None and len(self.labels) != classes:
            raise ModelError(f"Pipeline: {len(self.labels)} labels given but the model outputs {classes} classes "
                             f"(output shape {self.model.output_shape})")

    def _expected_shape(self, frontend_shape) -> tuple:
        """What one frontend sample must look like for this model (T kept from the frontend's own shape)."""
        if getattr(self.frontend, "time_axis", False):
            return (frontend_shape[0], *self.model.input_shape)
        return tuple(self.model.input_shape)

    def _check_shapes(self, frontend_shape) -> None:
        if frontend_shape is None:
            return  # the frontend's shape follows its input: checked on each sample
        frontend_shape = tuple(int(v) for v in frontend_shape)
        expected = self._expected_shape(frontend_shape)
        if frontend_shape != expected:
            what = "a spike train (T, H, W, C)" if getattr(self.frontend, "time_axis", False) else "(H, W, C)"
            raise ModelError(f"Pipeline: frontend {getattr(self.frontend, 'name', '?')!r} produces {frontend_shape} "
                             f"per sample, but the model expects input {expected} as {what}; configure the "
                             f"frontend to output {expected} (its config: {getattr(self.frontend, 'config', {})})")

    # -- running ---------------------------------------------------------------------------------
    def encode(self, raw) -> np.ndarray:
        """One raw input -> the model's input for one sample (the frontend's output, shape-checked)."""
        if self.frontend is None:
            return self.as_model_input(np.asarray(raw))
        sample = np.asarray(self.frontend(raw))
        self._check_shapes(sample.shape)
        return sample

    def as_model_input(self, sample: np.ndarray) -> np.ndarray:
        """A ready model input (H, W, C) or spike train (T, H, W, C), bypassing the frontend; shape-checked."""
        sample = np.asarray(sample)
        shape = tuple(self.model.input_shape)
        if sample.shape != shape and not (sample.ndim == 4 and sample.shape[1:] == shape):
            raise ModelError(f"Pipeline without a frontend: each input must be a model input {shape} or a spike "
                             f"train (T, {', '.join(map(str, shape))}), got shape {sample.shape}; give the "
                             f"pipeline a frontend (es.frontend('image' | 'kws' | 'rate', ...)) for raw data")
        return sample

    def __call__(self, raw):
        """One raw input -> Prediction. A list of inputs -> a list of Predictions (as ``batch``)."""
        if isinstance(raw, list):
            return self.batch(raw)
        return self.batch([raw])[0]

    def batch(self, raws) -> list[Prediction]:
        """Raw inputs -> one Prediction each; the model runs once on the whole batch."""
        raws = list(raws)
        if not raws:
            raise ValueError("Pipeline.batch: got no inputs")
        samples = np.stack([self._encode_item(raw, i) for i, raw in enumerate(raws)])
        return self.classify_samples(samples)

    def classify_samples(self, samples: np.ndarray) -> list[Prediction]:
        """Model inputs (N, ...) already through the frontend -> one Prediction each."""
        time_axis = samples.ndim == 5   # spike trains (N, T, H, W, C) bring their own T
        potentials = self.model.forward(samples, timesteps=None if time_axis else self.timesteps, device=self.device)
        timesteps = samples.shape[1] if time_axis else (self.timesteps or 1)
        return self.classifier.classify(potentials, timesteps=timesteps)

    def _encode_item(self, raw, index: int) -> np.ndarray:
        try:
            return self.encode(raw)
        except (ValueError, TypeError, OSError) as exc:
            where = f" ({raw})" if isinstance(raw, (str, os.PathLike)) else ""
            exc.add_note(f"while encoding Pipeline input {index}{where}")
            raise

    # -- streaming -------------------------------------------------------------------------------
    def detector_settings(self, **changes) -> DetectorSettings:
        """The stream detector's settings: the file's (metadata "detector") or the defaults, with changes."""
        stored = self.model.metadata.get(DETECTOR_KEY)
        settings = DetectorSettings.from_dict(stored) if stored else DetectorSettings()
        return settings.replace(**changes)

    def stream(self, chunks, hop_s: float | None = None, threshold: float | None = None,
               window_s: float | None = None, min_count: int | None = None, suppression_s: float | None = None,
               ignore=None, on_pad=None, on_note=None):
        """Spot keywords in a stream of audio chunks; yield ``Detection(label, time_s, score)``.

        ``chunks``: an iterable of mono sample arrays at the frontend's sample rate (float in [-1, 1]
        or int16), or a whole recording (a path or an array, fed in 0.1 s pieces). The frontend runs
        incrementally; every ``hop_s`` seconds (rounded to frames) the model classifies the last window
        (1 s for kws: on the ``cpu`` device a model valid along time runs on the engine's streaming
        executor, which computes only what the new frames add, bit-exact; see StreamSession) and
        edgesnn.detector's ``Detector`` (TFLite Micro's RecognizeCommands) smooths
        the scores over ``window_s``, and reports a keyword whose average beats ``threshold`` after at
        least ``min_count`` results, not repeating a label within ``suppression_s``; labels in
        ``ignore`` (background classes) are never reported. Settings left None come from the file
        (``detector_settings()``). ``time_s`` is the end of the audio heard when the keyword was
        decided. A stream too short for ``min_count`` windows is padded with silence at the end and
        ``on_pad`` (default: ``warnings.warn``) is told. When the model cannot run on the streaming
        executor (it pads along time, runs several timesteps, another device...), the stream runs whole
        windows and ``on_note`` (default: nobody) is told why once, before the first window
        (``StreamSession.note``).
        """
        fe = self.frontend
        if fe is None:
            raise TypeError("stream() slides an audio frontend's window over a recording, and this pipeline has "
                            "no frontend (its model file stores none); give it a streaming frontend such as "
                            "'kws' (es.Pipeline(es.frontend('kws', ...), model), or `edgesnn pipeline MODEL "
                            "--frontend kws -o OUT.esnn`)")
        if not callable(getattr(fe, "stream", None)):
            which = "this pipeline has no frontend" if fe is None else \
                f"frontend {getattr(fe, 'name', type(fe).__name__)!r} has no streaming mode"
            raise TypeError(f"{which}; stream() needs a frontend with one, like 'kws'")
        settings = self.detector_settings(hop_s=hop_s, threshold=threshold, window_s=window_s, min_count=min_count,
                                          suppression_s=suppression_s, ignore=ignore)
        session = StreamSession(self, settings)
        if session.note is not None and on_note is not None:
            on_note(f"Pipeline.stream: whole windows every hop, not the streaming executor: {session.note}")
        for chunk in self._chunks(chunks):
            yield from session.push(chunk)
        yield from session.finish(on_pad)

    def _chunks(self, chunks):
        recording = isinstance(chunks, (str, os.PathLike, np.ndarray)) or (
            isinstance(chunks, tuple) and len(chunks) == 2 and np.isscalar(chunks[1]))  # (waveform, sample_rate)
        if recording:
            waveform = self.frontend.load(chunks)
            piece = max(1, round(STREAM_CHUNK_S * self.frontend.sample_rate))
            return (waveform[i:i + piece] for i in range(0, waveform.shape[0], piece))
        return iter(chunks)

    # -- files -----------------------------------------------------------------------------------
    def metadata(self) -> dict:
        """The model's metadata plus what rebuilds this pipeline: labels, frontend, pipeline options."""
        metadata = dict(self.model.metadata)
        if self.labels is not None:
            metadata["labels"] = list(self.labels)
        metadata[PIPELINE_KEY] = {"threshold": self.classifier.threshold,
                                  "unknown_label": self.classifier.unknown_label, "timesteps": self.timesteps}
        fe = self.frontend
        if fe is None:
            metadata.pop(FRONTEND_KEY, None)   # a model read from a pipeline file still holds the old one
            return metadata
        name = getattr(fe, "name", None)
        config = getattr(fe, "config", None)
        if not isinstance(name, str) or not isinstance(config, dict):
            raise TypeError(f"Pipeline.save: the frontend {fe!r} needs a string .name and a dict .config "
                            f"to be stored in the file")
        try:
            json.dumps(config)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"Pipeline.save: frontend {name!r} config is not JSON-serializable: {exc}") from exc
        metadata[FRONTEND_KEY] = {"name": name, "config": config}
        return metadata

    def save(self, path: str | os.PathLike) -> None:
        """Write one .esnn file holding the model, the frontend's name and config, and the labels."""
        metadata = self.metadata()
        saved = self.model.metadata
        self.model.metadata = metadata
        try:
            self.model.save(path)
        finally:
            self.model.metadata = saved

    @classmethod
    def load(cls, path: str | os.PathLike, device=None) -> "Pipeline":
        """Rebuild a pipeline from a .esnn file written by ``save`` (the frontend by its registered name).

        A file that stores no frontend gives a pipeline without one: its inputs must be model inputs.
        """
        from . import plugins

        model = Model.load(path)
        _check_stored_metadata(model.metadata, Path(path))
        stored = model.metadata.get(FRONTEND_KEY)
        frontend = None
        if stored is not None:
            try:
                frontend = plugins.frontend(stored["name"], **(stored.get("config") or {}))
            except (ValueError, TypeError) as exc:
                raise ModelError(f"{Path(path)}: metadata {FRONTEND_KEY!r}: the stored {stored['name']!r} frontend "
                                 f"does not build from its config {stored.get('config')!r}: {exc}") from exc
        options = model.metadata.get(PIPELINE_KEY) or {}
        return cls(frontend, model, labels=model.metadata.get("labels"), device=device,
                   timesteps=options.get("timesteps"), threshold=options.get("threshold"),
                   unknown_label=options.get("unknown_label", UNKNOWN))


class StreamSession:
    """One stream through a keyword pipeline: ``push(chunk)`` -> the Detections it completes.

    What ``Pipeline.stream`` runs, in parts a benchmark can time one by one:

    - ``frames(chunk)``: the frontend's incremental MFCC of the new samples only, as uint8 (k, n_mfcc);
    - ``outputs(frames)``: the model's output potentials (OH, OW, C) and end time of every window the
      frames complete. Two modes (``mode``):

      * ``"stream"``: the frames go to the native engine's stream (edgesnn.native.NativeStream,
        docs/c-api.md "Streaming"), which computes only the rows of each layer the new frames
        complete; bit-exact with the whole-window run. Used when the model streams (valid along
        time: no padding on the rows) on the ``cpu`` device with one timestep.
      * ``"window"``: each frame goes into a ring (stored twice, at i and i + window_frames, so the
        last window is one contiguous slice); every ``hop_frames`` frames the window is copied into
        the one model-input array the session owns and the model runs on it (``forward``).
        ``note`` says why the session is not streaming.

    - ``scores(output)``: the classifier's softmax, -> scores (C,);
    - ``detector.update(time_s, scores)``: TFLite Micro's RecognizeCommands smoothing.

    Nothing is allocated per frame beyond what numpy's operations return. ``finish(on_pad)`` pads a
    stream that gave fewer than ``min_count`` windows with silence (and tells ``on_pad``).
    """

    def __init__(self, pipe: Pipeline, settings: DetectorSettings, mode: str | None = None):
        fe = pipe.frontend
        if pipe.labels is None:
            raise ModelError("Pipeline.stream: the pipeline has no labels; give labels=[...] to name the keywords")
        if mode not in (None, "stream", "window"):
            raise ValueError(f"StreamSession mode {mode!r}, expected None (stream when the model can), 'stream' "
                             f"or 'window'")
        self.pipe, self.settings, self.frontend = pipe, settings, fe
        self.detector = Detector.from_settings(pipe.labels, settings)
        self.window_frames = fe.output_shape[0]
        self.hop_frames = max(1, round(settings.hop_s / fe.hop_s))
        self.stream = fe.stream()
        self.ring = np.zeros((2 * self.window_frames, fe.output_shape[1]), dtype=np.uint8)  # (2 W, n_mfcc)
        self.input = np.zeros((1, *fe.output_shape), dtype=np.uint8)                        # (1, W, n_mfcc, 1)
        pipe._check_shapes(self.input.shape[1:])
        self._input_frames = self.input[0, :, :, 0]                                         # (W, n_mfcc) view
        self.windows_seen = 0
        model, device, timesteps = pipe.model, pipe.device, pipe.timesteps
        classifier = pipe.classifier
        self.forward = lambda x: model.forward(x, timesteps=timesteps, device=device)
        self.scores = lambda output: classifier.scores_one(output, timesteps or 1)
        self.native, self.note = (None, "whole-window runs asked for") if mode == "window" else \
            _native_stream(pipe, self.hop_frames)
        if mode == "stream" and self.native is None:
            raise ModelError(f"Pipeline.stream: the model cannot stream: {self.note}")
        self.mode = "window" if self.native is None else "stream"

    def frames(self, chunk) -> np.ndarray:
        """uint8 (k, n_mfcc): the frames the chunk completes."""
        return self.frontend.quantize(self.stream.push(chunk))

    def window_time_s(self, index: int) -> float:
        """End time of window ``index`` (counted from 0): the end of its last frame."""
        fe = self.frontend
        last_frame = self.window_frames - 1 + index * self.hop_frames
        return (last_frame * fe.hop_samples + fe.frame_samples) / fe.sample_rate

    def outputs(self, frames: np.ndarray) -> list:
        """[(output potentials (OH, OW, C) int32, end time s)] of each window the frames complete."""
        if self.native is None:
            return [(self.forward(x)[0], time_s) for x, time_s in self.windows(frames)]
        outputs = self.native.push(frames)
        first = self.windows_seen
        self.windows_seen += outputs.shape[0]
        return [(outputs[k], self.window_time_s(first + k)) for k in range(outputs.shape[0])]

    def windows(self, frames: np.ndarray):
        """Yield (model input uint8 (1, W, n_mfcc, 1), end time s) for each window the frames complete
        (the "window" mode). The input array is the session's own, overwritten by the next window."""
        ring, w = self.ring, self.window_frames
        first = self.stream.frames_emitted - frames.shape[0]
        for offset in range(frames.shape[0]):
            index = first + offset            # index of this frame since the stream began
            slot = index % w
            ring[slot] = ring[slot + w] = frames[offset]
            if index + 1 >= w and (index + 1 - w) % self.hop_frames == 0:
                self._input_frames[...] = ring[slot + 1:slot + 1 + w]
                self.windows_seen += 1
                yield self.input, self.window_time_s(self.windows_seen - 1)

    def push(self, chunk) -> list[Detection]:
        found = []
        for output, time_s in self.outputs(self.frames(chunk)):
            detection = self.detector.update(time_s, self.scores(output))
            if detection is not None:
                found.append(detection)
        return found

    def finish(self, on_pad=None) -> list[Detection]:
        """At the end of the stream: silence appended until it gave ``min_count`` windows (on_pad told)."""
        fe, min_windows = self.frontend, self.settings.min_count
        if self.windows_seen >= min_windows:
            return []
        frames_needed = self.window_frames + (min_windows - 1) * self.hop_frames
        samples_needed = fe.frame_samples + (frames_needed - 1) * fe.hop_samples
        missing = max(0, samples_needed - self.stream.samples_pushed)
        heard_s = self.stream.samples_pushed / fe.sample_rate
        message = (f"Pipeline.stream: the audio ({heard_s:.3f} s) is shorter than {min_windows} window(s) of "
                   f"{fe.clip_s:g} s at a {self.hop_frames * fe.hop_s:g} s hop; padded with "
                   f"{missing / fe.sample_rate:.3f} s of silence at the end")
        (on_pad or (lambda text: warnings.warn(text, stacklevel=4)))(message)
        return self.push(np.zeros(missing, dtype=np.float32))


def _native_stream(pipe: Pipeline, hop_frames: int):
    """(edgesnn.native.NativeStream, None) when the pipeline's model streams on its device, else
    (None, why not): the session then runs whole windows."""
    from .devices import resolve_device

    device = resolve_device(pipe.device)
    if pipe.timesteps not in (None, 1):
        return None, f"the model runs {pipe.timesteps} timesteps per window; streaming runs one"
    try:
        from .native import CpuDevice, NativeStream
    except (ImportError, OSError) as exc:
        return None, f"the native engine is not available ({exc})"
    if not isinstance(device, CpuDevice):
        return None, f"device {device.name!r} runs whole windows (streaming runs on the 'cpu' device)"
    try:
        return NativeStream(device.program_of(pipe.model), hop_frames), None
    except ModelError as exc:
        return None, str(exc)


def _check_stored_metadata(metadata: dict, path: Path) -> None:
    """ModelError naming the file and key when what rebuilds a pipeline has the wrong type."""
    def fail(key: str, want: str, got) -> None:
        raise ModelError(f"{path}: metadata {key} must be {want}, got {got!r}")

    labels = metadata.get("labels")
    if labels is not None and (not isinstance(labels, list) or not all(isinstance(v, str) for v in labels)):
        fail("'labels'", "a list of class names (strings)", labels)
    if metadata.get("output_scale") is not None and not _is_number(metadata["output_scale"]) and not (
            isinstance(metadata["output_scale"], list) and all(_is_number(v) for v in metadata["output_scale"])):
        fail("'output_scale'", "a number or a list of numbers", metadata["output_scale"])
    stored = metadata.get(FRONTEND_KEY)
    if stored is not None and (not isinstance(stored, dict) or not isinstance(stored.get("name"), str)
                               or not isinstance(stored.get("config") or {}, dict)):
        fail(repr(FRONTEND_KEY), "{'name': str, 'config': {...}}", stored)
    options = metadata.get(PIPELINE_KEY) or {}
    if not isinstance(options, dict):
        fail(repr(PIPELINE_KEY), "an object of pipeline options", options)
    if options.get("threshold") is not None and not _is_number(options["threshold"]):
        fail(f"{PIPELINE_KEY!r}.'threshold'", "a number or null", options["threshold"])
    if options.get("unknown_label") is not None and not isinstance(options["unknown_label"], str):
        fail(f"{PIPELINE_KEY!r}.'unknown_label'", "a string", options["unknown_label"])
    for key, where in ((options.get("timesteps"), f"{PIPELINE_KEY!r}.'timesteps'"),
                       (metadata.get("timesteps"), "'timesteps'")):
        if key is not None and (type(key) is not int or key < 1):
            fail(where, "a positive integer or null", key)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


__all__ = ["Pipeline", "Prediction", "Detection", "StreamSession"]
