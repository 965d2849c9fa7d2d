"""Layer objects of the integer Model: their integer parameters, shapes and static checks.

What the integers *mean* (rounding, saturation, reset, leak, pooling, timestep order) is written in
docs/semantics.md and executed by edgesnn/reference.py; this module only holds and checks them.

Every synaptic layer is three stages (see docs/semantics.md):

    synaptic stage (conv2d / depthwise2d / separable2d / dense / add) -> int32 potentials
    optional pooling on the potentials (max, avg = window sum, global_avg = spatial sum)
    neuron stage: relu (requantize to `activation_bits`), if / lif (1-bit spikes), none (int32 out)

Shapes are HWC without the batch axis.  Per-channel vectors (bias, multipliers, shifts,
thresholds) have one entry per output channel; a scalar given by hand is broadcast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .errors import ModelError

# Named limits of the integer contract.  The native engine names the same numbers in native/src/limits.zig.
WEIGHT_BITS = (2, 4, 8)
ACTIVATION_BITS = (1, 2, 4, 8)
NEURONS = ("relu", "if", "lif", "none")
PADDINGS = ("same", "valid")
POOLS = (None, "max", "avg", "global_avg")
SHIFT_MAX = 62            # requantization right shift, 0..SHIFT_MAX
MULTIPLIER_MAX = 2**31 - 1  # requantization multiplier, 0..MULTIPLIER_MAX
LEAK_SHIFT_MAX = 31       # lif leak v -= v >> leak_shift, 1..LEAK_SHIFT_MAX
KERNEL_MAX = 15           # kernel height/width, 1..KERNEL_MAX
STRIDE_MAX = 4
POOL_MAX = 8
ADD_INPUTS_MAX = 4
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

KINDS = ("input_conv2d", "conv2d", "depthwise2d", "separable2d", "dense", "add")


def _int_array(value, dtype, shape, what: str, layer: str) -> np.ndarray:
    """Turn a scalar or array into an integer array of `shape`, refusing floats with fractions."""
    arr = np.asarray(value)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ModelError(f"layer {layer!r}: {what} must be integers, got non-integer floats")
    elif arr.dtype.kind not in "iub":
        raise ModelError(f"layer {layer!r}: {what} must be an integer array, got dtype {arr.dtype}")
    if arr.ndim == 0:
        arr = np.full(shape, arr)
    if tuple(arr.shape) != tuple(shape):
        raise ModelError(f"layer {layer!r}: {what} must have shape {tuple(shape)}, got {tuple(arr.shape)}")
    info = np.iinfo(dtype)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise ModelError(f"layer {layer!r}: {what} out of {np.dtype(dtype).name} range "
                         f"[{info.min}, {info.max}]: min {arr.min()}, max {arr.max()}")
    return np.ascontiguousarray(arr.astype(dtype))


def signed_range(bits: int) -> tuple[int, int]:
    """Inclusive range of a signed two's-complement integer of `bits` bits."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def unsigned_max(bits: int) -> int:
    """Largest unsigned integer of `bits` bits."""
    return (1 << bits) - 1


def conv_output_size(size: int, kernel: int, stride: int, padding: str) -> int:
    """Output length of a convolution along one axis (TensorFlow's 'same'/'valid' rules)."""
    if padding == "same":
        return -(-size // stride)
    return (size - kernel) // stride + 1 if size >= kernel else 0


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) zero padding of TensorFlow's 'same' mode: the extra pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@dataclass(kw_only=True, eq=False)
class Layer:
    """Fields every layer has: name, inputs, pooling and the neuron stage."""

    name: str
    inputs: tuple[str, ...] | None = None  # names of producing layers; None: the previous layer (or the model input)
    neuron: str = "relu"                   # relu | if | lif | none
    activation_bits: int = 8               # output bits for relu; if/lif produce 1-bit spikes
    out_multiplier: object = 1             # relu: per-channel int32 multiplier, >= 0
    out_shift: object = 0                  # relu: per-channel right shift, 0..SHIFT_MAX
    threshold: object = 1                  # if/lif: per-channel int32 threshold, >= 1
    leak_shift: int = 0                    # lif: v -= v >> leak_shift each timestep, 1..LEAK_SHIFT_MAX
    pool: str | None = None                # None | max | avg | global_avg (on potentials, before the neuron)
    pool_size: int = 2
    pool_stride: int | None = None         # None: equal to pool_size

    kind = "layer"

    # -- filled in by Model when the graph is checked --------------------------------------------
    input_shapes: list = field(default_factory=list, init=False, repr=False)
    output_shape: tuple = field(default=(), init=False, repr=False)

    # -- helpers shared by all kinds -------------------------------------------------------------
    @property
    def output_bits(self) -> int:
        """Bits of the unsigned activations this layer emits (32 for the int32 output layer)."""
        if self.neuron in ("if", "lif"):
            return 1
        if self.neuron == "none":
            return 32
        return self.activation_bits

    @property
    def output_max(self) -> int:
        return unsigned_max(self.output_bits) if self.neuron != "none" else INT32_MAX

    def _check_common(self, channels: int) -> None:
        n = self.name
        if not isinstance(self.name, str) or not self.name:
            raise ModelError(f"every layer needs a non-empty string name, got {self.name!r}")
        if self.neuron not in NEURONS:
            raise ModelError(f"layer {n!r}: neuron must be one of {NEURONS}, got {self.neuron!r}")
        if self.neuron == "relu" and self.activation_bits not in ACTIVATION_BITS:
            raise ModelError(f"layer {n!r}: activation_bits must be one of {ACTIVATION_BITS}, "
                             f"got {self.activation_bits!r}")
        if self.neuron in ("if", "lif"):
            self.activation_bits = 1
        self.out_multiplier = _int_array(self.out_multiplier, np.int32, (channels,), "out_multiplier", n)
        self.out_shift = _int_array(self.out_shift, np.int32, (channels,), "out_shift", n)
        self.threshold = _int_array(self.threshold, np.int32, (channels,), "threshold", n)
        if self.neuron == "relu":
            if self.out_multiplier.min() < 0:
                raise ModelError(f"layer {n!r}: out_multiplier must be >= 0, got min {self.out_multiplier.min()}")
            if self.out_shift.min() < 0 or self.out_shift.max() > SHIFT_MAX:
                raise ModelError(f"layer {n!r}: out_shift must be in [0, {SHIFT_MAX}], "
                                 f"got [{self.out_shift.min()}, {self.out_shift.max()}]")
        if self.neuron in ("if", "lif") and self.threshold.min() < 1:
            raise ModelError(f"layer {n!r}: threshold must be >= 1, got min {self.threshold.min()}")
        if self.neuron == "lif" and not 1 <= int(self.leak_shift) <= LEAK_SHIFT_MAX:
            raise ModelError(f"layer {n!r}: lif leak_shift must be in [1, {LEAK_SHIFT_MAX}], got {self.leak_shift!r}")
        if self.neuron != "lif":
            self.leak_shift = 0
        if self.pool not in POOLS:
            raise ModelError(f"layer {n!r}: pool must be one of {POOLS}, got {self.pool!r}")
        if self.pool_stride is None:
            self.pool_stride = self.pool_size
        if self.pool in ("max", "avg"):
            if not (1 <= self.pool_size <= POOL_MAX and 1 <= self.pool_stride <= POOL_MAX):
                raise ModelError(f"layer {n!r}: pool_size and pool_stride must be in [1, {POOL_MAX}], "
                                 f"got {self.pool_size}, {self.pool_stride}")

    def _pooled_shape(self, h: int, w: int, c: int) -> tuple[int, int, int]:
        if self.pool in ("max", "avg"):
            if h < self.pool_size or w < self.pool_size:
                raise ModelError(f"layer {self.name!r}: {self.pool} pool {self.pool_size}x{self.pool_size} "
                                 f"does not fit the {h}x{w} potentials")
            return ((h - self.pool_size) // self.pool_stride + 1, (w - self.pool_size) // self.pool_stride + 1, c)
        if self.pool == "global_avg":
            return (1, 1, c)
        return (h, w, c)

    def _pool_factor(self, h: int, w: int) -> int:
        """How many potentials one pooled potential sums (1 for max and no pooling)."""
        if self.pool == "avg":
            return self.pool_size * self.pool_size
        if self.pool == "global_avg":
            return h * w
        return 1

    # -- per-kind --------------------------------------------------------------------------------
    def infer(self, input_shapes: list[tuple], input_max: list[int]) -> tuple:
        """Check parameters against the input shapes; set and return the output shape (H, W, C)."""
        raise NotImplementedError

    def accumulator_bound(self, input_max: list[int]) -> int:
        """Largest |potential| one timestep can produce (after pooling), for the int32 overflow check."""
        raise NotImplementedError

    def param_arrays(self) -> dict[str, np.ndarray]:
        """The integer tensors of this layer by name (for the file format and summaries)."""
        raise NotImplementedError

    @property
    def params(self) -> int:
        """Number of trainable integers (weights and biases)."""
        return int(sum(a.size for k, a in self.param_arrays().items() if k in ("weights", "bias", "pointwise")))

    @property
    def packed_bytes(self) -> int:
        """Bytes this layer's tensors take in a .esnn file (weights packed to weight_bits)."""
        total = 0
        for key, arr in self.param_arrays().items():
            bits = getattr(self, "weight_bits", 8) if key in ("weights", "pointwise") else 32
            total += (arr.size * bits + 7) // 8
        return total

    @property
    def kernel(self) -> str:
        return ""

    def replace(self, **changes) -> "Layer":
        """A copy with some fields changed (the checked shapes are recomputed by the next Model)."""
        return dataclasses.replace(self, **changes)


@dataclass(kw_only=True, eq=False)
class _Spatial(Layer):
    """Shared by the convolution kinds: kernel, stride, padding, weight bits."""

    weights: object = None
    bias: object = 0
    weight_bits: int = 8
    stride: int = 1
    padding: str = "same"

    def _check_spatial(self, kh: int, kw: int, h: int, w: int) -> tuple[int, int]:
        n = self.name
        if self.weight_bits not in WEIGHT_BITS:
            raise ModelError(f"layer {n!r}: weight_bits must be one of {WEIGHT_BITS}, got {self.weight_bits!r}")
        if not (1 <= kh <= KERNEL_MAX and 1 <= kw <= KERNEL_MAX):
            raise ModelError(f"layer {n!r}: kernel {kh}x{kw} outside 1..{KERNEL_MAX}")
        if not 1 <= self.stride <= STRIDE_MAX:
            raise ModelError(f"layer {n!r}: stride must be in [1, {STRIDE_MAX}], got {self.stride!r}")
        if self.padding not in PADDINGS:
            raise ModelError(f"layer {n!r}: padding must be 'same' or 'valid', got {self.padding!r}")
        oh = conv_output_size(h, kh, self.stride, self.padding)
        ow = conv_output_size(w, kw, self.stride, self.padding)
        if oh < 1 or ow < 1:
            raise ModelError(f"layer {n!r}: kernel {kh}x{kw} with padding {self.padding!r} "
                             f"does not fit the {h}x{w} input")
        return oh, ow

    def _check_weights(self, arr: np.ndarray, what: str) -> None:
        lo, hi = signed_range(self.weight_bits)
        if arr.size and (arr.min() < lo or arr.max() > hi):
            raise ModelError(f"layer {self.name!r}: {what} out of range for weight_bits={self.weight_bits} "
                             f"([{lo}, {hi}]): min {arr.min()}, max {arr.max()}")

    @property
    def kernel(self) -> str:
        kh, kw = self.weights.shape[:2]
        return f"{kh}x{kw}/{self.stride}"


@dataclass(kw_only=True, eq=False)
class Conv2D(_Spatial):
    """Standard convolution. weights: int (KH, KW, Cin, Cout); bias: int32 (Cout,)."""

    kind = "conv2d"

    def infer(self, input_shapes, input_max):
        if len(input_shapes) != 1:
            raise ModelError(f"layer {self.name!r}: {self.kind} takes one input, got {len(input_shapes)}")
        h, w, c = input_shapes[0]
        wt = np.asarray(self.weights) if self.weights is not None else None
        if wt is None or wt.ndim != 4:
            raise ModelError(f"layer {self.name!r}: weights must have shape (KH, KW, Cin, Cout), "
                             f"got {None if wt is None else wt.shape}")
        kh, kw, cin, cout = wt.shape
        if cin != c:
            raise ModelError(f"layer {self.name!r}: weights expect {cin} input channels, the input has {c}")
        self.weights = _int_array(wt, np.int8, wt.shape, "weights", self.name)
        self._check_weights(self.weights, "weights")
        self.bias = _int_array(self.bias, np.int32, (cout,), "bias", self.name)
        self._check_common(cout)
        oh, ow = self._check_spatial(kh, kw, h, w)
        self._pre_pool = (oh, ow)
        return self._pooled_shape(oh, ow, cout)

    def accumulator_bound(self, input_max):
        return _weighted_sum_bound(self.weights, self.bias, input_max[0]) * self._pool_factor(*self._pre_pool)

    def param_arrays(self):
        return {"weights": self.weights, "bias": self.bias, **_neuron_arrays(self)}


@dataclass(kw_only=True, eq=False)
class InputConv2D(Conv2D):
    """A conv2d that reads the model's dense uint8 input; the native engine may use a dense kernel."""

    kind = "input_conv2d"


@dataclass(kw_only=True, eq=False)
class Depthwise2D(_Spatial):
    """Depthwise convolution (channel multiplier 1). weights: int (KH, KW, C); bias: int32 (C,)."""

    kind = "depthwise2d"

    def infer(self, input_shapes, input_max):
        if len(input_shapes) != 1:
            raise ModelError(f"layer {self.name!r}: {self.kind} takes one input, got {len(input_shapes)}")
        h, w, c = input_shapes[0]
        wt = np.asarray(self.weights) if self.weights is not None else None
        if wt is None or wt.ndim != 3:
            raise ModelError(f"layer {self.name!r}: weights must have shape (KH, KW, C), "
                             f"got {None if wt is None else wt.shape}")
        kh, kw, cw = wt.shape
        if cw != c:
            raise ModelError(f"layer {self.name!r}: weights expect {cw} channels, the input has {c}")
        self.weights = _int_array(wt, np.int8, wt.shape, "weights", self.name)
        self._check_weights(self.weights, "weights")
        self.bias = _int_array(self.bias, np.int32, (c,), "bias", self.name)
        self._check_common(c)
        oh, ow = self._check_spatial(kh, kw, h, w)
        self._pre_pool = (oh, ow)
        return self._pooled_shape(oh, ow, c)

    def accumulator_bound(self, input_max):
        return _weighted_sum_bound(self.weights, self.bias, input_max[0]) * self._pool_factor(*self._pre_pool)

    def param_arrays(self):
        return {"weights": self.weights, "bias": self.bias, **_neuron_arrays(self)}


@dataclass(kw_only=True, eq=False)
class Separable2D(_Spatial):
    """Depthwise then pointwise inside one layer (Keras SeparableConv2D).

    weights: int (KH, KW, Cin) depthwise; pointwise: int (Cin, Cout); bias: int32 (Cout,).
    The depthwise potentials are requantized to signed `mid_bits` integers with
    mid_multiplier / mid_shift (per input channel) and never leave the layer (docs/semantics.md).
    """

    pointwise: object = None
    mid_multiplier: object = 1
    mid_shift: object = 0
    mid_bits: int = 8

    kind = "separable2d"

    def infer(self, input_shapes, input_max):
        n = self.name
        if len(input_shapes) != 1:
            raise ModelError(f"layer {n!r}: {self.kind} takes one input, got {len(input_shapes)}")
        h, w, c = input_shapes[0]
        wt = np.asarray(self.weights) if self.weights is not None else None
        pw = np.asarray(self.pointwise) if self.pointwise is not None else None
        if wt is None or wt.ndim != 3 or wt.shape[2] != c:
            raise ModelError(f"layer {n!r}: depthwise weights must have shape (KH, KW, {c}), "
                             f"got {None if wt is None else wt.shape}")
        if pw is None or pw.ndim != 2 or pw.shape[0] != c:
            raise ModelError(f"layer {n!r}: pointwise weights must have shape ({c}, Cout), "
                             f"got {None if pw is None else pw.shape}")
        kh, kw, _ = wt.shape
        cout = pw.shape[1]
        self.weights = _int_array(wt, np.int8, wt.shape, "weights", n)
        self.pointwise = _int_array(pw, np.int8, pw.shape, "pointwise", n)
        self._check_weights(self.weights, "weights")
        self._check_weights(self.pointwise, "pointwise")
        self.bias = _int_array(self.bias, np.int32, (cout,), "bias", n)
        if self.mid_bits not in (2, 4, 8):
            raise ModelError(f"layer {n!r}: mid_bits must be one of (2, 4, 8), got {self.mid_bits!r}")
        self.mid_multiplier = _int_array(self.mid_multiplier, np.int32, (c,), "mid_multiplier", n)
        self.mid_shift = _int_array(self.mid_shift, np.int32, (c,), "mid_shift", n)
        if self.mid_multiplier.min() < 0 or self.mid_shift.min() < 0 or self.mid_shift.max() > SHIFT_MAX:
            raise ModelError(f"layer {n!r}: mid_multiplier must be >= 0 and mid_shift in [0, {SHIFT_MAX}]")
        self._check_common(cout)
        oh, ow = self._check_spatial(kh, kw, h, w)
        self._pre_pool = (oh, ow)
        return self._pooled_shape(oh, ow, cout)

    def accumulator_bound(self, input_max):
        # the depthwise stage (no bias) must fit too: it is requantized from int32
        dw_bound = _weighted_sum_bound(self.weights, np.zeros(self.weights.shape[-1], np.int64), input_max[0])
        pw_bound = _weighted_sum_bound(self.pointwise, self.bias, 1 << (self.mid_bits - 1))
        return max(dw_bound, pw_bound * self._pool_factor(*self._pre_pool))

    def param_arrays(self):
        return {"weights": self.weights, "pointwise": self.pointwise, "bias": self.bias,
                "mid_multiplier": self.mid_multiplier, "mid_shift": self.mid_shift, **_neuron_arrays(self)}

    @property
    def kernel(self) -> str:
        kh, kw = self.weights.shape[:2]
        return f"{kh}x{kw}/{self.stride}+1x1"


@dataclass(kw_only=True, eq=False)
class Dense(Layer):
    """Fully connected. weights: int (fan_in, Cout) with fan_in = H*W*C of the input in HWC order."""

    weights: object = None
    bias: object = 0
    weight_bits: int = 8

    kind = "dense"

    def infer(self, input_shapes, input_max):
        n = self.name
        if len(input_shapes) != 1:
            raise ModelError(f"layer {n!r}: dense takes one input, got {len(input_shapes)}")
        fan_in = int(np.prod(input_shapes[0]))
        wt = np.asarray(self.weights) if self.weights is not None else None
        if wt is None or wt.ndim != 2:
            raise ModelError(f"layer {n!r}: weights must have shape (fan_in, Cout), got {None if wt is None else wt.shape}")
        if wt.shape[0] != fan_in:
            raise ModelError(f"layer {n!r}: weights expect fan_in {wt.shape[0]}, the input "
                             f"{tuple(input_shapes[0])} flattens to {fan_in}")
        if self.weight_bits not in WEIGHT_BITS:
            raise ModelError(f"layer {n!r}: weight_bits must be one of {WEIGHT_BITS}, got {self.weight_bits!r}")
        if self.pool is not None:
            raise ModelError(f"layer {n!r}: dense layers take no pooling, got pool={self.pool!r}")
        cout = wt.shape[1]
        self.weights = _int_array(wt, np.int8, wt.shape, "weights", n)
        _Spatial._check_weights(self, self.weights, "weights")
        self.bias = _int_array(self.bias, np.int32, (cout,), "bias", n)
        self._check_common(cout)
        return (1, 1, cout)

    def accumulator_bound(self, input_max):
        return _weighted_sum_bound(self.weights, self.bias, input_max[0])

    def param_arrays(self):
        return {"weights": self.weights, "bias": self.bias, **_neuron_arrays(self)}

    @property
    def kernel(self) -> str:
        return f"{self.weights.shape[0]}->{self.weights.shape[1]}"


@dataclass(kw_only=True, eq=False)
class Add(Layer):
    """Merges branches of equal shape: potential = sum_i input_i * input_multipliers[i] (per channel).

    input_multipliers: int32 (n_inputs, C), any sign (a negative one subtracts a branch).
    The neuron stage (usually relu) then requantizes.
    """

    input_multipliers: object = 1

    kind = "add"

    def infer(self, input_shapes, input_max):
        n = self.name
        if not 2 <= len(input_shapes) <= ADD_INPUTS_MAX:
            raise ModelError(f"layer {n!r}: add takes 2..{ADD_INPUTS_MAX} inputs, got {len(input_shapes)}")
        if any(tuple(s) != tuple(input_shapes[0]) for s in input_shapes):
            raise ModelError(f"layer {n!r}: add inputs must have equal shapes, got {[tuple(s) for s in input_shapes]}")
        if self.pool is not None:
            raise ModelError(f"layer {n!r}: add layers take no pooling, got pool={self.pool!r}")
        c = input_shapes[0][2]
        self.input_multipliers = _int_array(self.input_multipliers, np.int32, (len(input_shapes), c),
                                            "input_multipliers", n)
        self._check_common(c)
        return tuple(input_shapes[0])

    def accumulator_bound(self, input_max):
        m = np.abs(self.input_multipliers.astype(np.int64))
        return int(sum(m[i] * input_max[i] for i in range(len(input_max))).max())

    def param_arrays(self):
        return {"input_multipliers": self.input_multipliers, **_neuron_arrays(self)}

    @property
    def kernel(self) -> str:
        return f"{self.input_multipliers.shape[0]} inputs"


def _weighted_sum_bound(weights: np.ndarray, bias: np.ndarray, input_max: int) -> int:
    """max over output channels (last axis) of sum |w| * input_max + |bias|: the largest |potential|."""
    absw = np.abs(weights.astype(np.int64)).reshape(-1, weights.shape[-1]).sum(axis=0)
    return int((absw * input_max + np.abs(bias.astype(np.int64))).max())


def _neuron_arrays(layer: Layer) -> dict[str, np.ndarray]:
    if layer.neuron == "relu":
        return {"out_multiplier": layer.out_multiplier, "out_shift": layer.out_shift}
    if layer.neuron in ("if", "lif"):
        return {"threshold": layer.threshold}
    return {}


LAYER_CLASSES = {cls.kind: cls for cls in (InputConv2D, Conv2D, Depthwise2D, Separable2D, Dense, Add)}

__all__ = ["Layer", "InputConv2D", "Conv2D", "Depthwise2D", "Separable2D", "Dense", "Add", "LAYER_CLASSES",
           "KINDS", "WEIGHT_BITS", "ACTIVATION_BITS", "NEURONS"]
