"""The integer Model: a checked graph of layers, run on a device, saved as one .esnn file."""

from __future__ import annotations

import os

import numpy as np

from .devices import default_device_name, resolve_device  # noqa: F401 (edgesnn.model.resolve_device too)
from .errors import DeviceError, ModelError
from .layers import INT32_MAX, TIMESTEPS_MAX, Layer
from .statistics import Statistics, format_table

INPUT = "input"          # the name by which layers refer to the model input


class Model:
    """An integer, event-driven network.

    Build one by hand::

        model = es.Model(layers=[es.layers.InputConv2D(name="conv", weights=w, bias=b, ...), ...],
                         input_shape=(28, 28, 1), input_bits=8)

    Layers run in list order; a layer reads the layers named in its `inputs` (default: the layer
    before it, or the model input for the first). The last layer is the output. The constructor
    checks every shape, bit width, range and the int32 overflow bound (docs/semantics.md) and
    raises ModelError naming the layer.
    """

    def __init__(self, layers: list[Layer], input_shape: tuple[int, int, int], input_bits: int = 8,
                 metadata: dict | None = None):
        self.input_shape = _check_input_shape(input_shape)
        if not isinstance(input_bits, (int, np.integer)) or not 1 <= int(input_bits) <= 8:
            raise ModelError(f"input_bits must be an integer in [1, 8], got {input_bits!r}")
        self.input_bits = int(input_bits)
        self.metadata = dict(metadata or {})
        if not layers:
            raise ModelError("a Model needs at least one layer")
        self.layers: list[Layer] = [_copy_layer(layer) for layer in layers]
        self._check_graph()
        # the last run's Statistics, or a device's raw counts (counts, samples, timesteps, device name)
        # until `statistics` is first read
        self._last_statistics: Statistics | tuple | None = None
        # each device's loaded form of this model, under a key the device chooses (the cpu device:
        # its NativeModel per library build); dropped by copy and pickle
        self.device_cache: dict = {}
        # the .esnn bytes this model was read from (from_bytes), which devices load as they are
        # rather than re-writing the model; None for a model built or converted here
        self.source_bytes: bytes | None = None

    # -- construction checks ---------------------------------------------------------------------
    def _check_graph(self) -> None:
        shapes = {INPUT: self.input_shape}
        maxima = {INPUT: (1 << self.input_bits) - 1}
        previous = INPUT
        for index, layer in enumerate(self.layers):
            if layer.name in shapes:
                raise ModelError(f"layer {index} is named {layer.name!r}, a name already used "
                                 f"({'the model input' if layer.name == INPUT else 'by an earlier layer'})")
            inputs = (previous,) if layer.inputs is None else tuple(
                [layer.inputs] if isinstance(layer.inputs, str) else layer.inputs)
            for name in inputs:
                if name not in shapes:
                    raise ModelError(f"layer {layer.name!r} reads {name!r}, which is not the model input "
                                     f"nor an earlier layer (earlier: {list(shapes)})")
                if name != INPUT and self.layer(name).neuron == "none":
                    raise ModelError(f"layer {layer.name!r} reads {name!r}, whose neuron is 'none': "
                                     f"only the last layer may output raw potentials")
            if layer.neuron == "none" and index != len(self.layers) - 1:
                raise ModelError(f"layer {layer.name!r}: neuron 'none' (raw int32 potentials) is only "
                                 f"allowed on the last layer")
            layer.inputs = inputs
            layer.input_shapes = [shapes[name] for name in inputs]
            input_max = [maxima[name] for name in inputs]
            layer.output_shape = tuple(int(v) for v in layer.infer(layer.input_shapes, input_max))
            bound = layer.accumulator_bound(input_max)
            if bound > INT32_MAX:
                raise ModelError(f"layer {layer.name!r}: potentials could reach {bound:,}, beyond int32 "
                                 f"({INT32_MAX:,}); use fewer weight bits, smaller weights or a smaller "
                                 f"pooling window")
            shapes[layer.name] = layer.output_shape
            maxima[layer.name] = layer.output_max
            previous = layer.name

    # -- properties ------------------------------------------------------------------------------
    @property
    def output_shape(self) -> tuple[int, int, int]:
        return self.layers[-1].output_shape

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def packed_bytes(self) -> int:
        """Bytes of all packed integer tensors (what the weights cost in a file or on a device)."""
        return sum(layer.packed_bytes for layer in self.layers)

    @property
    def labels(self) -> list[str] | None:
        return self.metadata.get("labels")

    @property
    def statistics(self) -> Statistics | None:
        """Per-layer events, sparsity and synaptic ops of the last forward (None before the first)."""
        last = self._last_statistics
        if type(last) is not tuple:
            return last
        built = Statistics.from_counts(self.layers, *last)
        if self._last_statistics is last:  # not replaced by another thread's run meanwhile
            self._last_statistics = built
        return built

    @statistics.setter
    def statistics(self, value: Statistics | None) -> None:
        self._last_statistics = value

    def __getstate__(self) -> dict:
        return {**self.__dict__, "device_cache": {}}

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}; layers: {[l.name for l in self.layers]}")

    def __repr__(self) -> str:
        return (f"<edgesnn.Model {len(self.layers)} layers, input {self.input_shape} uint{self.input_bits}, "
                f"output {self.output_shape}, {self.packed_bytes:,} packed bytes>")

    # -- running ---------------------------------------------------------------------------------
    def forward(self, x, timesteps: int | None = None, device=None, *, per_timestep: bool = False,
                early_exit: int | None = None) -> np.ndarray:
        """int32 potentials of the last layer, batch first: (N, OH, OW, OC).

        `x` is uint8 (N, H, W, C), presented at each of `timesteps` (default 1) timesteps, or a spike
        train / input sequence (N, T, H, W, C). `device` is a name ("cpu", "reference", ...) or a
        Device; default: "cpu" when the native engine is available, else "reference".

        Over time (docs/semantics.md, "Over time and early exit"): with `per_timestep=True` the
        result is (N, T, OH, OW, OC), row t the output after timesteps 0..t (spike counts so far for a
        spiking output layer). `early_exit=margin` (an int >= 1) stops a sample after the first
        timestep at which its largest output value leads the second largest by at least `margin`;
        its output is the one of that timestep (later rows repeat it), and
        `model.statistics.timesteps_used` says how many timesteps each sample ran.
        """
        engine = resolve_device(device)
        x5 = self._checked_input(x, timesteps, engine.checks_input_range)
        program = engine.program_of(self)
        if per_timestep or early_exit is not None:
            return self._forward_over_time(engine, x5, per_timestep, early_exit)
        if engine.returns_counts:  # e.g. the cpu device: Statistics are built only if model.statistics is read
            potentials, counts = engine.run_counts(program, x5, x5.shape[1])
            self._last_statistics = (counts, x5.shape[0], x5.shape[1], engine.name)
        else:
            potentials, self._last_statistics = engine.run(program, x5, x5.shape[1])
        return potentials

    def _forward_over_time(self, engine, x5: np.ndarray, per_timestep: bool, early_exit) -> np.ndarray:
        if not engine.runs_over_time:
            raise DeviceError(f"device {engine.name!r} cannot run per timestep or exit early (it declares no "
                              f"runs_over_time capability); use device='cpu' or device='reference'")
        if early_exit is not None:
            if isinstance(early_exit, bool) or not isinstance(early_exit, (int, np.integer)) \
                    or not 1 <= early_exit <= INT32_MAX:
                raise ValueError(f"early_exit must be an integer margin in [1, {INT32_MAX}] (how far the leading "
                                 f"output value must lead the second), got {early_exit!r}")
            if int(np.prod(self.output_shape)) < 2:
                raise ValueError(f"early_exit needs at least two output values to compare; this model outputs "
                                 f"{self.output_shape}")
            early_exit = int(early_exit)
        outputs, used, stats = engine.run_over_time(self, x5, x5.shape[1], early_exit)
        stats.timesteps_used = None if early_exit is None else np.asarray(used, np.int64)
        self._last_statistics = stats
        return outputs if per_timestep else np.ascontiguousarray(outputs[:, -1])

    def predict(self, x, timesteps: int | None = None, device=None, *, early_exit: int | None = None) -> np.ndarray:
        """Class indices (N,): the argmax over the flattened output potentials (first index on ties).
        `early_exit`: as in `forward`."""
        potentials = self.forward(x, timesteps=timesteps, device=device, early_exit=early_exit)
        return potentials.reshape(potentials.shape[0], -1).argmax(axis=1)

    def check_input(self, x, timesteps: int | None = None) -> np.ndarray:
        """Validate model input and return it as uint8 (N, T, H, W, C); ValueError otherwise.

        A dense input runs `timesteps` steps, by default the model's own (metadata "timesteps",
        set by the converter for spiking models) or 1. With T > 1 it comes back as a read-only view
        of its contiguous frames (N, 1, H, W, C) with stride 0 on the T axis: the frame is not copied
        T times, and devices pass it on as one frame with a timestep count. Any other input comes
        back C-contiguous.
        """
        return self._checked_input(x, timesteps, device_checks_range=False)

    def _checked_input(self, x, timesteps, device_checks_range: bool) -> np.ndarray:
        """check_input; `device_checks_range`: the device refuses values above 2^input_bits - 1 itself,
        so uint8 input needs no scan here."""
        dense_timesteps = self.metadata.get("timesteps") if timesteps is None else timesteps
        if (type(x) is np.ndarray and x.dtype is _UINT8 and x.shape[1:] == self.input_shape and x.shape[0] > 0
                and (dense_timesteps is None or (type(dense_timesteps) is int and dense_timesteps == 1))
                and (self.input_bits == 8 or device_checks_range) and x.flags.c_contiguous):
            return x[:, None]  # the common case, one dense uint8 frame per sample: nothing to convert
        if timesteps is None and np.ndim(x) == 4:
            timesteps = dense_timesteps
        return _check_input(x, self.input_shape, self.input_bits, timesteps, device_checks_range)

    def check(self, device=None):
        """The device's mapping report for this model (fits, arena and program bytes, unsupported layers)."""
        return resolve_device(device).check(self)

    # -- reporting -------------------------------------------------------------------------------
    def summary(self, print_fn=print, device=None) -> str:
        """Print (and return) a table: layer, kind, shapes, kernel, bits, whether each layer fits `device`
        (default: the default device; as Akida's summary shows its hardware mapping), params, packed
        bytes; with totals, the memory the device needs and every reason a layer does not fit."""
        report = self.check(device)
        verdicts = {placement.name: placement for placement in report.layers}
        header = ("layer", "kind", "input", "output", "kernel", "w bits", "neuron", "out bits",
                  f"fit {report.device}", "params", "bytes")
        rows = [("input", "input", "", _shape(self.input_shape), "", "", "", str(self.input_bits), "", "", "")]
        for layer in self.layers:
            verdict = verdicts.get(layer.name)
            fit = "?" if verdict is None else ("yes" if verdict.supported else "NO")
            rows.append((layer.name, layer.kind, ", ".join(_shape(s) for s in layer.input_shapes),
                         _shape(layer.output_shape), layer.kernel, str(getattr(layer, "weight_bits", "")),
                         _neuron_label(layer),
                         str(layer.output_bits), fit, f"{layer.params:,}", f"{layer.packed_bytes:,}"))
        rows.append(("total", f"{len(self.layers)} layers", "", "", "", "", "", "", "yes" if report.fits else "NO",
                     f"{self.params:,}", f"{self.packed_bytes:,}"))
        text = format_table(header, rows)
        labels = self.labels
        if labels:
            text += f"\nlabels: {', '.join(map(str, labels))}"
        text += "\n" + report.headline()
        text += "".join(f"\n  - {problem}" for problem in report.unsupported)
        if print_fn is not None:
            print_fn(text)
        return text

    # -- files -----------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        from . import format

        return format.write_model(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Model":
        from . import format

        model = format.read_model(data)
        model.source_bytes = bytes(data)
        return model

    def to_nir(self, path: str | os.PathLike | None = None, **options):
        """This model as a ``nir.NIRGraph`` (written to `path` when given), by the built-in NIR plugin."""
        from . import plugins

        return plugins.get_importer("nir").to_nir(self, path, **options)

    def save(self, path: str | os.PathLike) -> None:
        """Write the model as one .esnn file (docs/format.md)."""
        from . import format

        format.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Model":
        """Read an .esnn file; FormatError naming the file, section and byte offset if it is malformed."""
        from . import format

        return format.load(path)


# -- helpers ---------------------------------------------------------------------------------------

def _copy_layer(layer) -> Layer:
    if not isinstance(layer, Layer):
        raise ModelError(f"Model layers must be edgesnn.layers objects, got {type(layer).__name__}: {layer!r}")
    return layer.replace()


def _shape(shape) -> str:
    return "x".join(str(v) for v in shape)


def _check_input_shape(shape) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in shape)
    except TypeError:
        raise ModelError(f"input_shape must be (H, W, C), got {shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ModelError(f"input_shape must be three positive sizes (H, W, C), got {shape!r}")
    return shape


def _check_input(x, input_shape, input_bits: int, timesteps, device_checks_range: bool = False) -> np.ndarray:
    expected = f"uint8 (N, {', '.join(map(str, input_shape))}) or a spike train (N, T, {', '.join(map(str, input_shape))})"
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"model input must be an array {expected}; could not convert it: {exc}") from None
    if x.dtype.kind == "f":
        nan = " and contains NaN" if np.isnan(x).any() else ""
        raise ValueError(f"model input must be {expected} with integer values in [0, {(1 << input_bits) - 1}]; "
                         f"got dtype {x.dtype}{nan}. Turn raw data into model input with a frontend "
                         f"(es.frontend('image'), 'kws', 'rate') or quantize it yourself")
    if x.dtype.kind not in "uib":
        raise ValueError(f"model input must be {expected}; got dtype {x.dtype}")
    if x.ndim == 4:
        if x.shape[1:] != tuple(input_shape):
            raise ValueError(f"model input must be {expected}; got shape {x.shape}")
        t = 1 if timesteps is None else timesteps
        x5 = x[:, None]
    elif x.ndim == 5:
        if x.shape[2:] != tuple(input_shape):
            raise ValueError(f"model input must be {expected}; got shape {x.shape}")
        t = x.shape[1]
        x5 = x
        if timesteps is not None and timesteps != t:
            raise ValueError(f"timesteps={timesteps} disagrees with the spike train's T={t} (shape {x.shape})")
    else:
        hint = " (add a batch axis: x[None])" if x.shape == tuple(input_shape) else ""
        raise ValueError(f"model input must be {expected}; got rank {x.ndim}, shape {x.shape}{hint}")
    if not isinstance(t, (int, np.integer)) or isinstance(t, bool) or not 1 <= t <= TIMESTEPS_MAX:
        raise ValueError(f"timesteps must be an integer in [1, {TIMESTEPS_MAX}], got {t!r}")
    if x.shape[0] == 0:
        raise ValueError(f"model input is an empty batch (shape {x.shape}); give at least one sample")
    in_range = x.dtype == np.uint8 and (input_bits == 8 or device_checks_range)  # every uint8 is valid 8-bit input
    if x.size and not in_range and (x.min() < 0 or x.max() > (1 << input_bits) - 1):
        raise ValueError(f"model input values must lie in [0, {(1 << input_bits) - 1}] (input_bits={input_bits}); "
                         f"got min {x.min()}, max {x.max()}")
    x5 = x5.astype(np.uint8, copy=False)
    if t > 1 and (x5.shape[1] == 1 or x5.strides[1] == 0):
        # a dense input (or a view repeating one frame): one contiguous frame per sample, presented
        # at every timestep through a read-only view; the T copies are never made
        frames = np.ascontiguousarray(x5[:, :1])
        return np.broadcast_to(frames, (frames.shape[0], t, *frames.shape[2:]))
    return np.ascontiguousarray(x5)


_UINT8 = np.dtype(np.uint8)


def _neuron_label(layer) -> str:
    """The neuron column of the summary: lif/leak_shift, lif/decay beta, and a reset or floor that is not the default."""
    label = layer.neuron
    if layer.neuron == "lif" and layer.decay_multiplier is not None:
        beta = layer.decay_multiplier.astype(float) / 2**layer.decay_shift
        label += f"/b{beta.min():.3g}" + (f"..{beta.max():.3g}" if beta.max() > beta.min() else "")
    elif layer.neuron == "lif":
        label += f"/{layer.leak_shift}"
    if layer.neuron in ("if", "lif") and layer.reset != "subtract":
        label += f" reset={layer.reset}"
    if layer.neuron in ("if", "lif") and layer.membrane_floor is not None:
        label += f" floor={layer.membrane_floor}"
    return label
