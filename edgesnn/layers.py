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
PADDINGS = ("same", "valid")       # or explicit (top, bottom, left, right)
POOLS = (None, "max", "avg", "global_avg")
SHIFT_MAX = 62            # requantization right shift, 0..SHIFT_MAX
MULTIPLIER_MAX = 2**31 - 1  # requantization multiplier, 0..MULTIPLIER_MAX
LEAK_SHIFT_MAX = 31       # lif leak v -= v >> leak_shift, 1..LEAK_SHIFT_MAX
DECAY_SHIFT_MAX = 30      # lif decay v = (v * decay_multiplier + 2^(s-1)) >> s, s in 1..DECAY_SHIFT_MAX
RESETS = ("subtract", "zero", "none")   # what a spike does to the membrane of if/lif
KERNEL_MAX = 15           # kernel height/width, 1..KERNEL_MAX
STRIDE_MAX = 4            # convolution strides, per axis
POOL_MAX = 8              # pooling window and stride, per axis
ADD_INPUTS_MAX = 4
CONCAT_INPUTS_MAX = 4
DEPTH_MULTIPLIER_MAX = 8
TIMESTEPS_MAX = 2**20     # longest run (timesteps) the engines accept
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

KINDS = ("input_conv2d", "conv2d", "depthwise2d", "separable2d", "dense", "add", "concat")


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


def conv_output_size(size: int, kernel: int, stride: int, padding) -> int:
    """Output length of a window along one axis: 'same'/'valid' (TensorFlow's rules) or (before, after)."""
    if padding == "same":
        return -(-size // stride)
    before, after = (0, 0) if padding == "valid" else padding
    span = size + before + after
    return (span - kernel) // stride + 1 if span >= kernel else 0


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) zero padding of TensorFlow's 'same' mode: the extra pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def resolve_pads(padding, in_hw, kernel_hw, strides) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a padding: 'valid', 'same' or explicit (top, bottom, left, right)."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        return (*same_padding(in_hw[0], kernel_hw[0], strides[0]), *same_padding(in_hw[1], kernel_hw[1], strides[1]))
    return tuple(int(v) for v in padding)


def _pair(value, what: str, layer: str) -> tuple[int, int]:
    """(h, w) of an int or a pair of ints."""
    try:
        pair = (value, value) if np.ndim(value) == 0 else tuple(value)
        if len(pair) != 2 or any(isinstance(v, bool) or int(v) != v for v in pair):
            raise ValueError
    except (TypeError, ValueError):
        raise ModelError(f"layer {layer!r}: {what} must be an int or a pair (h, w) of ints, got {value!r}") from None
    return int(pair[0]), int(pair[1])


def _padding(value, what: str, layer: str):
    """'same', 'valid' or a tuple (top, bottom, left, right) of non-negative ints."""
    if isinstance(value, str):
        if value not in PADDINGS:
            raise ModelError(f"layer {layer!r}: {what} must be 'same', 'valid' or (top, bottom, left, right), "
                             f"got {value!r}")
        return value
    try:
        pads = tuple(value)
        if len(pads) != 4 or any(isinstance(v, bool) or int(v) != v or int(v) < 0 for v in pads):
            raise ValueError
    except (TypeError, ValueError):
        raise ModelError(f"layer {layer!r}: {what} must be 'same', 'valid' or four non-negative ints "
                         f"(top, bottom, left, right), got {value!r}") from None
    return tuple(int(v) for v in pads)


def window_geometry(layer: str, what: str, in_hw, kernel_hw, strides, padding) -> tuple[tuple, tuple]:
    """Check a window (docs/semantics.md "Geometry") and return (pads (t, b, l, r), output (oh, ow))."""
    pads = resolve_pads(padding, in_hw, kernel_hw, strides)
    top, bottom, left, right = pads
    oh = conv_output_size(in_hw[0], kernel_hw[0], strides[0], (top, bottom))
    ow = conv_output_size(in_hw[1], kernel_hw[1], strides[1], (left, right))
    if oh < 1 or ow < 1:
        raise ModelError(f"layer {layer!r}: {what} {kernel_hw[0]}x{kernel_hw[1]} with padding {padding!r} "
                         f"does not fit the {in_hw[0]}x{in_hw[1]} input")
    if (top >= kernel_hw[0] or left >= kernel_hw[1] or (oh - 1) * strides[0] - top >= in_hw[0]
            or (ow - 1) * strides[1] - left >= in_hw[1]):
        raise ModelError(f"layer {layer!r}: {what} padding {pads} (top, bottom, left, right) leaves a "
                         f"{kernel_hw[0]}x{kernel_hw[1]} window with no tap inside the {in_hw[0]}x{in_hw[1]} input; "
                         f"each pad must be smaller than the window")
    return pads, (oh, ow)


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
    decay_multiplier: object = None        # lif instead of leak_shift: per-channel v *= m / 2^decay_shift,
    decay_shift: int = 0                   #   rounded half up; m in [0, 2^decay_shift], shift 1..DECAY_SHIFT_MAX
    reset: str = "subtract"                # if/lif: a spike subtracts the threshold | sets v to zero | none
    membrane_floor: int | None = None      # if/lif: v = max(v, floor) after integrating (SNU's ReLU: 0); <= 0
    out_zero_point: object = 0             # relu: per-channel output zero point, 0..2^activation_bits - 1
    pool: str | None = None                # None | max | avg | global_avg (on potentials, before the neuron)
    pool_size: object = 2                  # window (h, w) or one int for both, 1..POOL_MAX
    pool_stride: object = None             # (h, w) or one int; None: equal to pool_size
    pool_padding: object = "valid"         # 'valid', 'same' or (top, bottom, left, right); padded taps unread
    pool_count_include_pad: bool = False   # avg: a partial window's sum stays a sum (True) or is scaled to
                                           # the full window (False), see docs/semantics.md
    pool_sign: object = 1                  # max: per-channel +1 (max) or -1 (min)

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

    @property
    def zero_point(self) -> np.ndarray:
        """Per output channel, the integer that stands for float 0 (0 but for relu with a zero point)."""
        return self.out_zero_point if self.neuron == "relu" else np.zeros(self.output_shape[-1], np.int32)

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
        self._check_dynamics(channels)
        self.out_zero_point = _int_array(self.out_zero_point, np.int32, (channels,), "out_zero_point", n)
        if self.neuron != "relu" and self.out_zero_point.any():
            raise ModelError(f"layer {n!r}: out_zero_point is for relu neurons only (neuron {self.neuron!r})")
        if self.neuron == "relu" and (self.out_zero_point.min() < 0
                                      or self.out_zero_point.max() > unsigned_max(self.activation_bits)):
            raise ModelError(f"layer {n!r}: out_zero_point must be in [0, {unsigned_max(self.activation_bits)}] "
                             f"for {self.activation_bits}-bit activations, got [{self.out_zero_point.min()}, "
                             f"{self.out_zero_point.max()}]")
        if self.pool not in POOLS:
            raise ModelError(f"layer {n!r}: pool must be one of {POOLS}, got {self.pool!r}")
        self.pool_size = _pair(self.pool_size, "pool_size", n)
        self.pool_stride = self.pool_size if self.pool_stride is None else _pair(self.pool_stride, "pool_stride", n)
        self.pool_padding = _padding(self.pool_padding, "pool_padding", n)
        self.pool_count_include_pad = bool(self.pool_count_include_pad)
        self.pool_sign = _int_array(self.pool_sign, np.int32, (channels,), "pool_sign", n)
        if self.pool in ("max", "avg"):
            if not (all(1 <= v <= POOL_MAX for v in self.pool_size)
                    and all(1 <= v <= POOL_MAX for v in self.pool_stride)):
                raise ModelError(f"layer {n!r}: pool_size and pool_stride must be in [1, {POOL_MAX}], "
                                 f"got {self.pool_size}, {self.pool_stride}")
        if not np.isin(self.pool_sign, (-1, 1)).all() or (self.pool != "max" and (self.pool_sign != 1).any()):
            raise ModelError(f"layer {n!r}: pool_sign must be +1 or -1 per channel, and -1 only with a max pool")

    def _check_dynamics(self, channels: int) -> None:
        """The membrane dynamics of if/lif: leak or decay, reset, floor (docs/semantics.md, Neuron stages)."""
        n = self.name
        spiking, decays = self.neuron in ("if", "lif"), self.decay_multiplier is not None
        if decays and self.neuron != "lif":
            raise ModelError(f"layer {n!r}: decay_multiplier is for lif neurons only (neuron {self.neuron!r})")
        if self.neuron == "lif" and decays:
            if int(self.leak_shift) != 0:
                raise ModelError(f"layer {n!r}: a lif layer leaks by leak_shift or decays by decay_multiplier, "
                                 f"not both (leak_shift {self.leak_shift!r})")
            if not 1 <= int(self.decay_shift) <= DECAY_SHIFT_MAX:
                raise ModelError(f"layer {n!r}: decay_shift must be in [1, {DECAY_SHIFT_MAX}] with a "
                                 f"decay_multiplier, got {self.decay_shift!r}")
            self.decay_shift = int(self.decay_shift)
            self.decay_multiplier = _int_array(self.decay_multiplier, np.int32, (channels,), "decay_multiplier", n)
            one = 1 << self.decay_shift
            if self.decay_multiplier.min() < 0 or self.decay_multiplier.max() > one:
                raise ModelError(f"layer {n!r}: decay_multiplier must be in [0, 2^decay_shift = {one}] (a decay, "
                                 f"not a growth), got [{self.decay_multiplier.min()}, {self.decay_multiplier.max()}]")
        elif self.neuron == "lif" and not 1 <= int(self.leak_shift) <= LEAK_SHIFT_MAX:
            raise ModelError(f"layer {n!r}: lif leak_shift must be in [1, {LEAK_SHIFT_MAX}] (or give a "
                             f"decay_multiplier and decay_shift), got {self.leak_shift!r}")
        if self.neuron != "lif" or decays:
            self.leak_shift = 0
        if not decays:
            if int(self.decay_shift) != 0:
                raise ModelError(f"layer {n!r}: decay_shift {self.decay_shift!r} without a decay_multiplier")
            self.decay_shift = 0
        if self.reset not in RESETS:
            raise ModelError(f"layer {n!r}: reset must be one of {RESETS}, got {self.reset!r}")
        if not spiking and (self.reset != "subtract" or self.membrane_floor is not None):
            raise ModelError(f"layer {n!r}: reset and membrane_floor are for if/lif neurons only "
                             f"(neuron {self.neuron!r})")
        if self.membrane_floor is not None:
            floor = self.membrane_floor
            if isinstance(floor, (bool, float)) or not isinstance(floor, (int, np.integer)) \
                    or not INT32_MIN <= floor <= 0:
                raise ModelError(f"layer {n!r}: membrane_floor must be None or an integer in [{INT32_MIN}, 0], "
                                 f"got {floor!r}")
            self.membrane_floor = int(floor)

    @property
    def has_dynamics(self) -> bool:
        """Whether the neuron uses the dynamics beyond shift-leak and subtractive reset (decay, reset, floor)."""
        return self.decay_multiplier is not None or self.reset != "subtract" or self.membrane_floor is not None

    def _pooled_shape(self, h: int, w: int, c: int) -> tuple[int, int, int]:
        self._pre_pool = (h, w)
        if self.pool in ("max", "avg"):
            self.pool_pads, out = window_geometry(self.name, f"{self.pool} pool", (h, w), self.pool_size,
                                                  self.pool_stride, self.pool_padding)
            self.pool_padding = self.pool_pads if any(self.pool_pads) else "valid"   # as the file stores it
            return (*out, c)
        self.pool_pads = (0, 0, 0, 0)
        if self.pool == "global_avg":
            return (1, 1, c)
        return (h, w, c)

    def _pool_factor(self, h: int, w: int) -> int:
        """How many potentials one pooled potential sums at most (1 for max and no pooling)."""
        if self.pool == "avg":
            return self.pool_size[0] * self.pool_size[1]
        if self.pool == "global_avg":
            return h * w
        return 1

    def _pool_arrays(self) -> dict[str, np.ndarray]:
        return {"pool_sign": self.pool_sign} if self.pool == "max" and (self.pool_sign != 1).any() else {}

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
    """Shared by the convolution kinds: kernel, strides, padding, pad values, weight bits."""

    weights: object = None
    bias: object = 0
    weight_bits: int = 8
    stride: object = 1          # (h, w) or one int for both, 1..STRIDE_MAX
    padding: object = "same"    # 'same', 'valid' or explicit (top, bottom, left, right)
    pad_value: object = 0       # per input channel: what an out-of-bounds tap reads (the input's zero point)

    def _check_spatial(self, kh: int, kw: int, h: int, w: int, c: int, input_max: int) -> tuple[int, int]:
        n = self.name
        if self.weight_bits not in WEIGHT_BITS:
            raise ModelError(f"layer {n!r}: weight_bits must be one of {WEIGHT_BITS}, got {self.weight_bits!r}")
        if not (1 <= kh <= KERNEL_MAX and 1 <= kw <= KERNEL_MAX):
            raise ModelError(f"layer {n!r}: kernel {kh}x{kw} outside 1..{KERNEL_MAX}")
        self.stride = _pair(self.stride, "stride", n)
        if not all(1 <= v <= STRIDE_MAX for v in self.stride):
            raise ModelError(f"layer {n!r}: stride must be in [1, {STRIDE_MAX}] per axis, got {self.stride!r}")
        self.padding = _padding(self.padding, "padding", n)
        self.pad_value = _int_array(self.pad_value, np.int32, (c,), "pad_value", n)
        if self.pad_value.min() < 0 or self.pad_value.max() > input_max:
            raise ModelError(f"layer {n!r}: pad_value must lie in [0, {input_max}] (the input's range), "
                             f"got [{self.pad_value.min()}, {self.pad_value.max()}]")
        self.pads, out = window_geometry(n, "kernel", (h, w), (kh, kw), self.stride, self.padding)
        return out

    def _check_weights(self, arr: np.ndarray, what: str) -> None:
        lo, hi = signed_range(self.weight_bits)
        if arr.size and (arr.min() < lo or arr.max() > hi):
            raise ModelError(f"layer {self.name!r}: {what} out of range for weight_bits={self.weight_bits} "
                             f"([{lo}, {hi}]): min {arr.min()}, max {arr.max()}")

    def _spatial_arrays(self) -> dict[str, np.ndarray]:
        return {"pad_value": self.pad_value} if self.pad_value.any() else {}

    @property
    def kernel(self) -> str:
        kh, kw = self.weights.shape[:2]
        sh, sw = self.stride
        stride = f"{sh}" if sh == sw else f"{sh}x{sw}"
        pads = "" if self.padding in PADDINGS else f" pad {','.join(map(str, self.pads))}"
        return f"{kh}x{kw}/{stride}{pads}"


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
        oh, ow = self._check_spatial(kh, kw, h, w, c, input_max[0])
        return self._pooled_shape(oh, ow, cout)

    def accumulator_bound(self, input_max):
        return _weighted_sum_bound(self.weights, self.bias, input_max[0]) * self._pool_factor(*self._pre_pool)

    def param_arrays(self):
        return {"weights": self.weights, "bias": self.bias, **_neuron_arrays(self), **self._spatial_arrays(),
                **self._pool_arrays()}


@dataclass(kw_only=True, eq=False)
class InputConv2D(Conv2D):
    """A conv2d that reads the model's dense uint8 input; the native engine may use a dense kernel."""

    kind = "input_conv2d"


@dataclass(kw_only=True, eq=False)
class Depthwise2D(_Spatial):
    """Depthwise convolution. weights: int (KH, KW, C * M); bias: int32 (C * M,).

    With depth_multiplier M, output channel o reads input channel o // M (Keras' depth_multiplier,
    PyTorch's groups=C).
    """

    depth_multiplier: int = 1

    kind = "depthwise2d"

    def infer(self, input_shapes, input_max):
        if len(input_shapes) != 1:
            raise ModelError(f"layer {self.name!r}: {self.kind} takes one input, got {len(input_shapes)}")
        h, w, c = input_shapes[0]
        m = _depth_multiplier(self)
        wt = np.asarray(self.weights) if self.weights is not None else None
        if wt is None or wt.ndim != 3:
            raise ModelError(f"layer {self.name!r}: weights must have shape (KH, KW, C * depth_multiplier), "
                             f"got {None if wt is None else wt.shape}")
        kh, kw, cw = wt.shape
        if cw != c * m:
            raise ModelError(f"layer {self.name!r}: weights have {cw} channels; the {c}-channel input with "
                             f"depth_multiplier {m} needs {c * m}")
        self.weights = _int_array(wt, np.int8, wt.shape, "weights", self.name)
        self._check_weights(self.weights, "weights")
        self.bias = _int_array(self.bias, np.int32, (c * m,), "bias", self.name)
        self._check_common(c * m)
        oh, ow = self._check_spatial(kh, kw, h, w, c, input_max[0])
        return self._pooled_shape(oh, ow, c * m)

    def accumulator_bound(self, input_max):
        return _weighted_sum_bound(self.weights, self.bias, input_max[0]) * self._pool_factor(*self._pre_pool)

    def param_arrays(self):
        return {"weights": self.weights, "bias": self.bias, **_neuron_arrays(self), **self._spatial_arrays(),
                **self._pool_arrays()}

    @property
    def kernel(self) -> str:
        return super().kernel + (f" x{self.depth_multiplier}" if self.depth_multiplier != 1 else "")


@dataclass(kw_only=True, eq=False)
class Separable2D(_Spatial):
    """Depthwise then pointwise inside one layer (Keras SeparableConv2D).

    weights: int (KH, KW, C * M) depthwise; pointwise: int (C * M, Cout); bias: int32 (Cout,).
    The depthwise potentials are requantized to signed `mid_bits` integers with
    mid_multiplier / mid_shift (per depthwise channel) and never leave the layer (docs/semantics.md).
    """

    pointwise: object = None
    mid_multiplier: object = 1
    mid_shift: object = 0
    mid_bits: int = 8
    depth_multiplier: int = 1

    kind = "separable2d"

    def infer(self, input_shapes, input_max):
        n = self.name
        if len(input_shapes) != 1:
            raise ModelError(f"layer {n!r}: {self.kind} takes one input, got {len(input_shapes)}")
        h, w, c = input_shapes[0]
        m = _depth_multiplier(self)
        wt = np.asarray(self.weights) if self.weights is not None else None
        pw = np.asarray(self.pointwise) if self.pointwise is not None else None
        if wt is None or wt.ndim != 3 or wt.shape[2] != c * m:
            raise ModelError(f"layer {n!r}: depthwise weights must have shape (KH, KW, {c * m}), "
                             f"got {None if wt is None else wt.shape}")
        if pw is None or pw.ndim != 2 or pw.shape[0] != c * m:
            raise ModelError(f"layer {n!r}: pointwise weights must have shape ({c * m}, Cout), "
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
        self.mid_multiplier = _int_array(self.mid_multiplier, np.int32, (c * m,), "mid_multiplier", n)
        self.mid_shift = _int_array(self.mid_shift, np.int32, (c * m,), "mid_shift", n)
        if self.mid_multiplier.min() < 0 or self.mid_shift.min() < 0 or self.mid_shift.max() > SHIFT_MAX:
            raise ModelError(f"layer {n!r}: mid_multiplier must be >= 0 and mid_shift in [0, {SHIFT_MAX}]")
        self._check_common(cout)
        oh, ow = self._check_spatial(kh, kw, h, w, c, input_max[0])
        return self._pooled_shape(oh, ow, cout)

    def accumulator_bound(self, input_max):
        # the depthwise stage (no bias) must fit too: it is requantized from int32
        dw_bound = _weighted_sum_bound(self.weights, np.zeros(self.weights.shape[-1], np.int64), input_max[0])
        pw_bound = _weighted_sum_bound(self.pointwise, self.bias, 1 << (self.mid_bits - 1))
        return max(dw_bound, pw_bound * self._pool_factor(*self._pre_pool))

    def param_arrays(self):
        return {"weights": self.weights, "pointwise": self.pointwise, "bias": self.bias,
                "mid_multiplier": self.mid_multiplier, "mid_shift": self.mid_shift, **_neuron_arrays(self),
                **self._spatial_arrays(), **self._pool_arrays()}

    @property
    def kernel(self) -> str:
        return super().kernel + (f" x{self.depth_multiplier}" if self.depth_multiplier != 1 else "") + "+1x1"


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
        self._pre_pool = (1, 1)
        self.pool_pads = (0, 0, 0, 0)
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
    """Merges branches of equal shape: potential = bias + sum_i input_i * input_multipliers[i] (per channel).

    input_multipliers: int32 (n_inputs, C), any sign (a negative one subtracts a branch); bias: int32 (C,).
    Pooling and the neuron stage (usually relu) follow.
    """

    input_multipliers: object = 1
    bias: object = 0

    kind = "add"

    def infer(self, input_shapes, input_max):
        n = self.name
        if not 2 <= len(input_shapes) <= ADD_INPUTS_MAX:
            raise ModelError(f"layer {n!r}: add takes 2..{ADD_INPUTS_MAX} inputs, got {len(input_shapes)}")
        if any(tuple(s) != tuple(input_shapes[0]) for s in input_shapes):
            raise ModelError(f"layer {n!r}: add inputs must have equal shapes, got {[tuple(s) for s in input_shapes]}")
        h, w, c = input_shapes[0]
        self.input_multipliers = _int_array(self.input_multipliers, np.int32, (len(input_shapes), c),
                                            "input_multipliers", n)
        self.bias = _int_array(self.bias, np.int32, (c,), "bias", n)
        self._check_common(c)
        return self._pooled_shape(h, w, c)

    def accumulator_bound(self, input_max):
        m = np.abs(self.input_multipliers.astype(np.int64))
        terms = sum(m[i] * input_max[i] for i in range(len(input_max))) + np.abs(self.bias.astype(np.int64))
        return int(terms.max()) * self._pool_factor(*self._pre_pool)

    def param_arrays(self):
        bias = {"bias": self.bias} if self.bias.any() else {}
        return {"input_multipliers": self.input_multipliers, **bias, **_neuron_arrays(self), **self._pool_arrays()}

    @property
    def kernel(self) -> str:
        return f"{self.input_multipliers.shape[0]} inputs"


@dataclass(kw_only=True, eq=False)
class Concat(Layer):
    """Channels gathered from 1..4 inputs of equal height and width: P[y, x, j] = bias[j] + m[j] * a_i[y, x, c].

    sources: int (Cout, 2), per output channel (input index i, channel c); None: the inputs' channels in
    input order (a channel concatenation). With sources it is also a split, a shuffle or a permutation,
    and with one input a layer that only pools or rescales. input_multipliers: int32 (Cout,), any sign;
    bias: int32 (Cout,).
    """

    sources: object = None
    input_multipliers: object = 1
    bias: object = 0

    kind = "concat"

    def infer(self, input_shapes, input_max):
        n = self.name
        if not 1 <= len(input_shapes) <= CONCAT_INPUTS_MAX:
            raise ModelError(f"layer {n!r}: concat takes 1..{CONCAT_INPUTS_MAX} inputs, got {len(input_shapes)}")
        h, w = input_shapes[0][:2]
        if any(tuple(s[:2]) != (h, w) for s in input_shapes):
            raise ModelError(f"layer {n!r}: concat inputs must have equal height and width, "
                             f"got {[tuple(s) for s in input_shapes]}")
        plain = np.array([(i, c) for i, s in enumerate(input_shapes) for c in range(s[2])], np.int64)
        src = plain if self.sources is None else np.asarray(self.sources)
        if src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 1:
            raise ModelError(f"layer {n!r}: sources must have shape (Cout, 2): (input index, channel) per output "
                             f"channel, got shape {src.shape}")
        src = _int_array(src, np.int32, src.shape, "sources", n)
        counts = np.array([s[2] for s in input_shapes])
        bad = (src[:, 0] < 0) | (src[:, 0] >= len(input_shapes))
        if not bad.any():
            bad = (src[:, 1] < 0) | (src[:, 1] >= counts[src[:, 0]])
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise ModelError(f"layer {n!r}: sources[{j}] = {tuple(src[j])} names no channel of the inputs "
                             f"(shapes {[tuple(s) for s in input_shapes]})")
        self.sources = None if (src.shape == plain.shape and (src == plain).all()) else src
        cout = src.shape[0]
        self.input_multipliers = _int_array(self.input_multipliers, np.int32, (cout,), "input_multipliers", n)
        self.bias = _int_array(self.bias, np.int32, (cout,), "bias", n)
        self._check_common(cout)
        return self._pooled_shape(h, w, cout)

    @property
    def source_map(self) -> np.ndarray:
        """(Cout, 2) int32: (input index, channel) of every output channel, plain order made explicit."""
        if self.sources is not None:
            return self.sources
        return np.array([(i, c) for i, s in enumerate(self.input_shapes) for c in range(s[2])], np.int32)

    def accumulator_bound(self, input_max):
        amax = np.asarray(input_max, np.int64)[self.source_map[:, 0]]
        terms = np.abs(self.input_multipliers.astype(np.int64)) * amax + np.abs(self.bias.astype(np.int64))
        return int(terms.max()) * self._pool_factor(*self._pre_pool)

    def param_arrays(self):
        arrays = {"input_multipliers": self.input_multipliers}
        if self.bias.any():
            arrays["bias"] = self.bias
        if self.sources is not None:
            arrays["sources"] = self.sources
        return {**arrays, **_neuron_arrays(self), **self._pool_arrays()}

    @property
    def kernel(self) -> str:
        return f"{len(self.input_shapes)} inputs" if self.sources is None else f"{len(self.input_shapes)} inputs, mapped"


def _depth_multiplier(layer) -> int:
    m = layer.depth_multiplier
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= DEPTH_MULTIPLIER_MAX:
        raise ModelError(f"layer {layer.name!r}: depth_multiplier must be an int in [1, {DEPTH_MULTIPLIER_MAX}], got {m!r}")
    layer.depth_multiplier = int(m)
    return layer.depth_multiplier


def _weighted_sum_bound(weights: np.ndarray, bias: np.ndarray, input_max: int) -> int:
    """max over output channels (last axis) of sum |w| * input_max + |bias|: the largest |potential|."""
    absw = np.abs(weights.astype(np.int64)).reshape(-1, weights.shape[-1]).sum(axis=0)
    return int((absw * input_max + np.abs(bias.astype(np.int64))).max())


def _neuron_arrays(layer: Layer) -> dict[str, np.ndarray]:
    if layer.neuron == "relu":
        zero_point = {"out_zero_point": layer.out_zero_point} if layer.out_zero_point.any() else {}
        return {"out_multiplier": layer.out_multiplier, "out_shift": layer.out_shift, **zero_point}
    if layer.neuron in ("if", "lif"):
        decay = {} if layer.decay_multiplier is None else {"decay_multiplier": layer.decay_multiplier}
        return {"threshold": layer.threshold, **decay}
    return {}


LAYER_CLASSES = {cls.kind: cls for cls in (InputConv2D, Conv2D, Depthwise2D, Separable2D, Dense, Add, Concat)}

__all__ = ["Layer", "InputConv2D", "Conv2D", "Depthwise2D", "Separable2D", "Dense", "Add", "Concat", "LAYER_CLASSES",
           "KINDS", "WEIGHT_BITS", "ACTIVATION_BITS", "NEURONS", "RESETS"]
