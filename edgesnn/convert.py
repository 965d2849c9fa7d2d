"""Conversion: a float network (any importer's Graph) -> an integer Model, and the fidelity report.

    model = es.convert("net.onnx", samples=x_uint8, weight_bits=4, activation_bits=4)
    report = es.compare("net.onnx", model, x_uint8, y)

How (docs/semantics.md has the integer side):

1. The source is imported by the importer plugin that accepts it, then simplified (batch norm
   folded, identity and a final softmax dropped, padding resolved: edgesnn.graph).
2. The float graph runs on the calibration `samples` (seen as ``(x - offset) / scale``) and every
   activation's range is measured ("minmax", "percentile" = 99.99th percentile, or "mse" = the
   clipping that minimizes the quantization error).
3. Nodes are grouped into integer layers: a synaptic node (conv, depthwise, separable, dense)
   takes the pooling and ReLU that follow it (a max pool after the ReLU commutes and is taken
   too); add takes its ReLU; a pooling left on its own (e.g. global average pooling after a ReLU)
   becomes an identity depthwise layer with that pooling; flatten/reshape before dense is free.
4. Weights are quantized symmetrically per output channel to `weight_bits`; the activation
   scale of each layer is range / (2^bits - 1); biases, multipliers and shifts follow, so that
   ``q_out ~ float_out / scale_out``. An average pool's divisor is folded into the multiplier.
5. ``neuron="if"`` makes the spiking model (the NengoDL recipe): each ReLU becomes an
   integrate-and-fire neuron whose threshold is the activation range in potential units, so its
   spike rate over `timesteps` approximates ReLU / range; a spike carries the range to the next
   layer. The output layer sums its potentials over the timesteps.
"""

from __future__ import annotations

import inspect
import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import layers as L
from .errors import ModelError
from .graph import Graph, GraphError, Node
from .model import Model
from .statistics import format_table

CALIBRATIONS = ("minmax", "percentile", "mse")
PERCENTILE = 99.99
ADD_MULTIPLIER_BITS = 10      # add inputs are rescaled to a common scale with multipliers up to 2**10
CALIBRATION_VALUES_MAX = 2_000_000   # values per activation kept for percentile / mse search
SNR_WARN_DB = 10.0            # compare() warns below this per-layer SNR


# -- entry points ------------------------------------------------------------------------------------

def load_graph(source, importer: str | None = None, input_shape_hint=None, **importer_options) -> Graph:
    """The float Graph of `source` (a path, a framework object, or a Graph), through the importer plugins.

    `input_shape_hint` (H, W, C) is passed as `input_shape` to importers that take one (torch traces
    a module with it) when the caller gave neither `input_shape` nor `example_input`.
    """
    if isinstance(source, Graph):
        return source
    from . import plugins

    def load_with(candidate):
        options = dict(importer_options)
        takes_shape = "input_shape" in inspect.signature(candidate.load).parameters
        if takes_shape and input_shape_hint is not None and not {"input_shape", "example_input"} & set(options):
            options["input_shape"] = tuple(input_shape_hint)
        return candidate.load(source, **options)

    if importer is not None:
        return load_with(plugins.get_importer(importer))
    for name in plugins.importers():
        candidate = plugins.get_importer(name)
        try:
            accepts = candidate.can_import(source)
        except Exception:  # a plugin that cannot tell must not stop the search
            accepts = False
        if accepts:
            return load_with(candidate)
    what = os.fspath(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__
    raise GraphError(f"no importer accepts {what!r}; importers loaded: {plugins.importers()} "
                     f"(a .keras/.h5 file, an .onnx file or onnx.ModelProto, or a torch nn.Module with "
                     f"example_input=...)")


def convert(source, samples, *, weight_bits: int = 8, activation_bits: int = 8, input_bits: int = 8,
            input_scaling: tuple[float, float] = (1.0, 0.0), per_channel: bool = True,
            calibration: str = "minmax", neuron: str = "relu", timesteps: int | None = None,
            labels: list[str] | None = None, importer: str | None = None, progress: bool = True,
            **importer_options) -> Model:
    """Convert a float network into an integer Model calibrated on uint8 HWC `samples`.

    input_scaling=(scale, offset): the source model sees ``(x - offset) / scale`` (cnn2snn's
    convention); NCHW sources are transposed by their importer, so samples are always HWC.
    neuron: "relu" (quantized, stateless) or "if" (spiking, rate-coded over `timesteps`,
    default 16). Extra keyword arguments go to the importer (e.g. example_input for torch).
    """
    options = dict(weight_bits=weight_bits, activation_bits=activation_bits, input_bits=input_bits,
                   input_scaling=[float(v) for v in input_scaling], per_channel=per_channel,
                   calibration=calibration, neuron=neuron)
    _check_options(weight_bits, activation_bits, input_bits, input_scaling, calibration, neuron)
    if neuron == "if":
        timesteps = 16 if timesteps is None else timesteps
        options["timesteps"] = timesteps
    elif timesteps not in (None, 1):
        raise ValueError(f"timesteps={timesteps} only applies to neuron='if' (spiking); relu models run 1 step")
    hint = np.shape(samples)[1:] if np.ndim(samples) == 4 else None
    graph = load_graph(source, importer=importer, input_shape_hint=hint, **importer_options).simplify()
    x = _check_samples(samples, graph.input_shape, input_bits)
    activations = _calibration_activations(graph, x, input_scaling, progress)
    builder = _Builder(graph, activations, options)
    model_layers = builder.build()
    metadata = {
        "labels": list(labels) if labels is not None else graph.metadata.get("labels"),
        "output_scale": builder.output_scale,
        "input_scaling": options["input_scaling"],
        "activation_scales": builder.activation_scales,
        "float_nodes": builder.float_nodes,
        "provenance": {"source": _describe(source), "importer": graph.metadata.get("importer"),
                       "converter": options, "edgesnn_version": _version(),
                       "calibration_samples": int(len(x))},
    }
    if neuron == "if":
        metadata["timesteps"] = timesteps
    if metadata["labels"] is None:
        del metadata["labels"]
    try:
        return Model(model_layers, input_shape=graph.input_shape, input_bits=input_bits, metadata=metadata)
    except ModelError as exc:
        raise ModelError(f"the converted model is not valid: {exc}. Fewer weight or activation bits "
                         f"shrink the integer ranges") from exc


# -- checks ------------------------------------------------------------------------------------------

def _check_options(weight_bits, activation_bits, input_bits, input_scaling, calibration, neuron):
    if weight_bits not in L.WEIGHT_BITS:
        raise ValueError(f"weight_bits must be one of {L.WEIGHT_BITS}, got {weight_bits!r}")
    if activation_bits not in L.ACTIVATION_BITS:
        raise ValueError(f"activation_bits must be one of {L.ACTIVATION_BITS}, got {activation_bits!r}")
    if input_bits not in range(1, 9):
        raise ValueError(f"input_bits must be in 1..8, got {input_bits!r}")
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")
    if neuron not in ("relu", "if"):
        raise ValueError(f"neuron must be 'relu' or 'if', got {neuron!r}")
    scale, _offset = input_scaling
    if not scale > 0:
        raise ValueError(f"input_scaling=(scale, offset) needs scale > 0, got {input_scaling!r}")


def _check_samples(samples, input_shape, input_bits) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim == 3 and x.shape == tuple(input_shape):
        x = x[None]
    if x.ndim != 4 or x.shape[1:] != tuple(input_shape):
        raise ValueError(f"samples must be uint8 (N, {', '.join(map(str, input_shape))}) in HWC order "
                         f"(the source's input shape), got shape {x.shape}")
    if x.dtype.kind not in "ui":
        raise ValueError(f"samples must be uint8 model input (the raw integers), got dtype {x.dtype}; "
                         f"give input_scaling=(scale, offset) for what the float model sees")
    if len(x) == 0:
        raise ValueError("samples is empty: calibration needs at least one sample (a few hundred is better)")
    if x.min() < 0 or x.max() > (1 << input_bits) - 1:
        raise ValueError(f"samples must lie in [0, {(1 << input_bits) - 1}] for input_bits={input_bits}, "
                         f"got [{x.min()}, {x.max()}]")
    return x


def _float_input(x: np.ndarray, input_scaling) -> np.ndarray:
    scale, offset = input_scaling
    return (x.astype(np.float32) - np.float32(offset)) / np.float32(scale)


def _calibration_activations(graph: Graph, x, input_scaling, progress: bool) -> dict[str, np.ndarray]:
    from tqdm.auto import tqdm

    batch = 128
    parts: dict[str, list] = {}
    for start in tqdm(range(0, len(x), batch), desc="calibrating", unit="batch", disable=not progress,
                      leave=False):
        _, acts = graph.run(_float_input(x[start:start + batch], input_scaling), capture=True)
        for name, value in acts.items():
            parts.setdefault(name, []).append(value)
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


# -- quantization arithmetic -------------------------------------------------------------------------

def activation_range(values: np.ndarray, method: str, bits: int) -> float:
    """The float value the largest activation integer stands for (values are >= 0)."""
    flat = np.asarray(values, np.float64).ravel()
    if flat.size > CALIBRATION_VALUES_MAX:
        flat = np.random.default_rng(0).choice(flat, CALIBRATION_VALUES_MAX, replace=False)
    top = float(flat.max()) if flat.size else 0.0
    if top <= 0:
        return 1.0  # a dead activation: any positive range represents it
    if method == "minmax":
        return top
    if method == "percentile":
        return max(float(np.percentile(flat, PERCENTILE)), top * 1e-3)
    levels = (1 << bits) - 1
    best, best_err = top, math.inf
    for clip in top * np.linspace(0.2, 1.0, 41):
        step = clip / levels
        err = float(np.mean((np.clip(np.round(flat / step), 0, levels) * step - flat) ** 2))
        if err < best_err:
            best, best_err = clip, err
    return best


def multiplier_shift(ratio) -> tuple[np.ndarray, np.ndarray]:
    """Integers (m, s) with m / 2**s ~ ratio, m < 2**31, 0 <= s <= 62 (per channel)."""
    ratio = np.atleast_1d(np.asarray(ratio, np.float64))
    shift = np.zeros(ratio.shape, np.int64)
    mult = np.zeros(ratio.shape, np.int64)
    positive = ratio > 0
    exponent = np.floor(np.log2(ratio[positive]))
    shift[positive] = np.clip(30 - exponent, 0, L.SHIFT_MAX)
    mult[positive] = np.minimum(np.round(ratio[positive] * np.exp2(shift[positive])), L.MULTIPLIER_MAX)
    return mult.astype(np.int32), shift.astype(np.int32)


def quantize_weights(weight: np.ndarray, bits: int, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric quantization over the last axis: (integer weights, scale per output channel)."""
    qmax = (1 << (bits - 1)) - 1
    w = np.asarray(weight, np.float64)
    flat = np.abs(w).reshape(-1, w.shape[-1])
    top = flat.max(axis=0) if per_channel else np.full(w.shape[-1], flat.max())
    scale = np.where(top > 0, top / qmax, 1.0)
    q = np.clip(np.round(w / scale), -qmax - 1, qmax).astype(np.int8)
    return q, scale


def _quantize_bias(bias, scale, layer: str) -> np.ndarray:
    q = np.round(np.asarray(bias, np.float64) / scale)
    limit = 2**30
    if np.abs(q).max(initial=0) > limit:
        warnings.warn(f"layer {layer!r}: bias clipped to +-2**30 potential units (bias far larger than the "
                      f"weights' contribution)", stacklevel=3)
    return np.clip(q, -limit, limit).astype(np.int32)


# -- grouping float nodes into integer layers --------------------------------------------------------

@dataclass
class _Tensor:
    """An integer tensor standing for a float node: who produces it and what one unit is worth."""

    producer: str      # integer layer name, or "input"
    scale: float       # float value of one integer unit (a spike's value for spiking layers)
    offset: float = 0.0  # float value of integer 0 (only the model input may have one)
    negative: tuple | None = None  # (producer, scale) of the negative part of a signed tensor: value = pos - neg


@dataclass
class _Builder:
    graph: Graph
    activations: dict
    options: dict
    layers: list = field(default_factory=list)
    tensors: dict = field(default_factory=dict)
    activation_scales: dict = field(default_factory=dict)
    float_nodes: dict = field(default_factory=dict)
    output_scale: object = None

    def build(self) -> list:
        g = self.graph
        scale, offset = self.options["input_scaling"]
        self.tensors[g.input_name] = _Tensor("input", 1.0 / scale, -offset / scale)
        done: set[str] = set()
        for node in g.nodes:
            if node.name in done:
                continue
            if node.op in ("conv2d", "depthwise_conv2d", "separable_conv2d", "dense"):
                done.update(self._synaptic(node))
            elif node.op == "add":
                done.update(self._add(node))
            elif node.op in ("max_pool", "avg_pool", "global_avg_pool"):
                done.update(self._pool_only(node))
            elif node.op == "affine" and node.inputs[0] == g.input_name:
                self._input_affine(node)
            elif node.op in ("flatten", "reshape"):
                self._alias(node, node.inputs[0])
            elif node.op == "relu":
                self._relu_only(node)
            else:
                raise GraphError(f"{node.where()}: op {node.op!r} cannot be converted to integer layers here; "
                                 f"convertible: conv2d, depthwise_conv2d, separable_conv2d, dense, relu, "
                                 f"max/avg/global_avg pooling, add, flatten/reshape before dense")
        return self.layers

    # -- helpers --
    def _next(self, node: Node) -> Node | None:
        if node.name == self.graph.output:
            return None
        readers = self.graph.consumers(node.name)
        return readers[0] if len(readers) == 1 else None

    def _input(self, node: Node, index: int = 0, signed_ok: bool = False) -> _Tensor:
        name = node.inputs[index]
        tensor = self.tensors.get(name)
        if tensor is None or (tensor.negative is not None and not signed_ok):
            raise GraphError(f"{node.where()}: its input {name!r} has no integer form (it is signed or was "
                             f"not converted); edgesnn activations are unsigned, so a ReLU must come first")
        return tensor

    def _alias(self, node: Node, source: str) -> None:
        readers = self.graph.consumers(node.name)
        if node.op == "reshape" and any(r.op != "dense" for r in readers):
            raise GraphError(f"{node.where()}: a reshape is only convertible in front of dense layers")
        self.tensors[node.name] = self.tensors[source]

    def _input_affine(self, node: Node) -> None:
        """A Rescaling (x * scale + offset, the same for every channel) on the model input folds into it."""
        scale = np.asarray(node.params["scale"], np.float64)
        offset = np.asarray(node.params["offset"], np.float64)
        if np.ptp(scale) > 1e-12 * np.abs(scale).max() or np.ptp(offset) > 1e-12 * max(np.abs(offset).max(), 1):
            raise GraphError(f"{node.where()}: a per-channel affine on the model input does not convert; "
                             f"fold it into input_scaling or the first layer")
        if scale[0] <= 0:
            raise GraphError(f"{node.where()}: an input rescaling by {scale[0]} <= 0 does not convert")
        src = self.tensors[node.inputs[0]]
        self.tensors[node.name] = _Tensor("input", src.scale * scale[0], src.offset * scale[0] + offset[0])

    def _relu_only(self, node: Node) -> None:
        # a ReLU on an already unsigned tensor changes nothing (ReLU6 clipping is ignored here)
        self.tensors[node.name] = self._input(node)

    def _take_chain(self, node: Node, allow_pool_first: bool) -> tuple[Node | None, Node | None, Node]:
        """(pool, relu, last) absorbed after `node`: [pool] [relu] [max pool after relu]."""
        pool = relu = None
        last = node
        nxt = self._next(last)
        if allow_pool_first and nxt is not None and nxt.op in ("max_pool", "avg_pool", "global_avg_pool"):
            pool, last = nxt, nxt
            nxt = self._next(last)
        if nxt is not None and nxt.op == "relu":
            relu, last = nxt, nxt
            nxt = self._next(last)
            if pool is None and nxt is not None and nxt.op == "max_pool":
                pool, last = nxt, nxt
        return pool, relu, last

    def _pool_fields(self, pool: Node | None, pre_shape) -> tuple[dict, float]:
        """Layer pooling fields and the divisor an average needs folded into the scale."""
        if pool is None:
            return {}, 1.0
        if pool.op == "global_avg_pool":
            return {"pool": "global_avg"}, float(pre_shape[0] * pre_shape[1])
        size = _square(pool, "pool_size")
        stride = _square(pool, "strides", default=size)
        if pool.attrs.get("padding", "valid") != "valid":
            raise GraphError(f"{pool.where()}: only 'valid' pooling converts (integer pools have no padding)")
        kind = "max" if pool.op == "max_pool" else "avg"
        return {"pool": kind, "pool_size": size, "pool_stride": stride}, (size * size if kind == "avg" else 1.0)

    def _neuron_fields(self, name: str, last: Node, relu: Node | None, acc_scale: np.ndarray) -> dict:
        """Neuron stage from the float node `last`; registers the output tensor's scale."""
        if relu is None:
            self.output_scale = [float(v) / self._timesteps() for v in acc_scale]
            self.float_nodes[name] = last.name
            self.activation_scales[name] = self.output_scale
            return {"neuron": "none"}
        fields, scale = self._activation_fields(self.activations[last.name], relu.attrs.get("max_value"), acc_scale)
        self.tensors[last.name] = _Tensor(name, scale)
        self.float_nodes[name] = last.name
        self._record_scale(name, scale)
        return fields

    def _activation_fields(self, values: np.ndarray, max_value, acc_scale: np.ndarray) -> tuple[dict, float]:
        """relu (requantize) or if (threshold) fields for activations `values` >= 0; and one unit's value."""
        bits = self.options["activation_bits"]
        top = activation_range(values, self.options["calibration"], bits)
        if max_value is not None:
            top = min(top, float(max_value))
        if self.options["neuron"] == "if":
            threshold = np.clip(np.round(top / acc_scale), 1, L.INT32_MAX).astype(np.int64)
            return {"neuron": "if", "threshold": threshold}, top    # a spike stands for `top`
        out_scale = top / ((1 << bits) - 1)
        mult, shift = multiplier_shift(acc_scale / out_scale)
        return {"neuron": "relu", "activation_bits": bits, "out_multiplier": mult, "out_shift": shift}, out_scale

    def _signed_feeds_adds(self, last: Node) -> bool:
        readers = self.graph.consumers(last.name)
        return last.name != self.graph.output and bool(readers) and all(r.op == "add" for r in readers)

    def _record_scale(self, name: str, scale: float) -> None:
        """The float value of one unit of the layer's summed output (a spike count is over T steps)."""
        self.activation_scales[name] = scale / self._timesteps() if self.options["neuron"] == "if" else scale

    def _timesteps(self) -> int:
        return int(self.options.get("timesteps", 1))

    # -- layer builders --
    def _synaptic(self, node: Node) -> list[str]:
        src = self._input(node)
        in_shape = self.graph.shapes[node.inputs[0]]
        pool, relu, last = self._take_chain(node, allow_pool_first=node.op != "dense")
        # The output layer's potentials are compared across channels (argmax), so they share one scale.
        per_channel = self.options["per_channel"] and relu is not None
        wbits = self.options["weight_bits"]
        pool_fields, divisor = self._pool_fields(pool, self.graph.shapes[node.name])
        name = node.name
        common = dict(name=name, inputs=(src.producer,), weight_bits=wbits)
        if node.op == "separable_conv2d":
            fields, acc_scale = self._separable(node, src, in_shape, per_channel)
        else:
            weight = np.asarray(node.params["weight"], np.float64)
            bias = np.asarray(node.params["bias"], np.float64)
            if src.offset:  # the model input's zero point, folded into the bias
                taps = weight.reshape(-1, weight.shape[-1]).sum(axis=0)
                bias = bias + src.offset * taps
            q, w_scale = quantize_weights(weight, wbits, per_channel)
            acc_scale = src.scale * w_scale
            fields = {"weights": q, "bias": _quantize_bias(bias, acc_scale, name)}
            if node.op != "dense":
                fields.update(stride=_square(node, "strides", default=1), padding=node.attrs.get("padding", "valid"))
        acc_scale = acc_scale / divisor
        fields.update(pool_fields)
        cls = {"conv2d": L.Conv2D, "depthwise_conv2d": L.Depthwise2D, "separable_conv2d": L.Separable2D,
               "dense": L.Dense}[node.op]
        if cls is L.Conv2D and src.producer == "input":
            cls = L.InputConv2D
        if relu is None and last.name != self.graph.output:
            return self._signed_pair(cls, common, fields, node, pool, last, acc_scale)
        fields.update(self._neuron_fields(name, last, relu, acc_scale))
        self.layers.append(cls(**common, **fields))
        return [node.name] + [n.name for n in (pool, relu) if n is not None] + [last.name]

    def _signed_pair(self, cls, common: dict, fields: dict, node: Node, pool, last: Node, acc_scale) -> list[str]:
        """A signed output read only by add layers: two layers, relu(P) and relu(-P), that the add subtracts."""
        if not self._signed_feeds_adds(last):
            raise GraphError(f"{last.where()}: its output is signed (no ReLU follows) and feeds "
                             f"{[r.name for r in self.graph.consumers(last.name)]}; edgesnn activations are "
                             f"unsigned, so only add layers can take a signed branch: add a ReLU after it")
        if pool is not None and pool.op == "max_pool":
            raise GraphError(f"{pool.where()}: max pooling of a signed branch (no ReLU) does not convert")
        values = self.activations[last.name]
        parts = []
        for suffix, sign in (("pos", 1), ("neg", -1)):
            part = dict(fields)
            part["bias"] = sign * fields["bias"]
            weight_key = "pointwise" if cls is L.Separable2D else "weights"
            part[weight_key] = sign * fields[weight_key]          # symmetric weights: -q stays in range
            neuron, scale = self._activation_fields(np.maximum(sign * values, 0), None, acc_scale)
            part.update(neuron)
            name = f"{common['name']}/{suffix}"
            self.layers.append(cls(**{**common, "name": name}, **part))
            self._record_scale(name, scale)
            parts.append((name, scale))
        self.tensors[last.name] = _Tensor(parts[0][0], parts[0][1], negative=parts[1])
        return [node.name] + ([pool.name] if pool is not None else []) + [last.name]

    def _separable(self, node: Node, src: _Tensor, in_shape, per_channel: bool) -> tuple[dict, np.ndarray]:
        wbits = self.options["weight_bits"]
        depthwise = np.asarray(node.params["depthwise"], np.float64)
        pointwise = np.asarray(node.params["pointwise"], np.float64)
        bias = np.asarray(node.params["bias"], np.float64)
        if src.offset:
            raise GraphError(f"{node.where()}: a separable first layer needs input_scaling offset 0")
        dq, d_scale = quantize_weights(depthwise, wbits, per_channel)
        # the signed depthwise intermediate, measured on the calibration data
        probe = Graph([Node("dw", "depthwise_conv2d", ("input",), attrs=dict(node.attrs),
                            params={"weight": depthwise.astype(np.float32),
                                    "bias": np.zeros(depthwise.shape[-1], np.float32)})], input_shape=in_shape)
        mid = probe.run(self.activations[node.inputs[0]])
        mid_bits = 8
        mid_scale = activation_range(np.abs(mid), self.options["calibration"], mid_bits - 1) / ((1 << (mid_bits - 1)) - 1)
        mid_mult, mid_shift = multiplier_shift(src.scale * d_scale / mid_scale)
        pq, p_scale = quantize_weights(pointwise, wbits, per_channel)
        acc_scale = mid_scale * p_scale
        return ({"weights": dq, "pointwise": pq, "bias": _quantize_bias(bias, acc_scale, node.name),
                 "mid_multiplier": mid_mult, "mid_shift": mid_shift, "mid_bits": mid_bits,
                 "stride": _square(node, "strides", default=1), "padding": node.attrs.get("padding", "valid")},
                acc_scale)

    def _add(self, node: Node) -> list[str]:
        tensors = [self._input(node, i, signed_ok=True) for i in range(len(node.inputs))]
        if any(t.offset for t in tensors):
            raise GraphError(f"{node.where()}: adding the model input needs input_scaling offset 0")
        terms = []   # (producer, signed scale)
        for t in tensors:
            terms.append((t.producer, t.scale))
            if t.negative is not None:
                terms.append((t.negative[0], -t.negative[1]))
        if len(terms) > L.ADD_INPUTS_MAX:
            raise GraphError(f"{node.where()}: {len(terms)} integer inputs (signed branches count twice) exceed "
                             f"the add layer's {L.ADD_INPUTS_MAX}")
        common_scale = max(abs(scale) for _, scale in terms) / (1 << ADD_MULTIPLIER_BITS)
        channels = self.graph.shapes[node.name][2]
        multipliers = np.array([[round(scale / common_scale)] * channels for _, scale in terms], np.int64)
        _pool, relu, last = self._take_chain(node, allow_pool_first=False)
        if relu is None:
            if any(t.negative is not None for t in tensors) and last.name != self.graph.output:
                raise GraphError(f"{node.where()}: an add with a signed branch must be followed by a ReLU")
            if last.name != self.graph.output:
                relu = Node(name=node.name, op="relu", inputs=())   # unsigned + unsigned: non-negative
        acc_scale = np.full(channels, common_scale)
        fields = self._neuron_fields(node.name, last, relu, acc_scale)
        self.layers.append(L.Add(name=node.name, inputs=tuple(p for p, _ in terms),
                                 input_multipliers=multipliers, **fields))
        return [node.name, last.name]

    def _pool_only(self, node: Node) -> list[str]:
        src = self._input(node)
        channels = self.graph.shapes[node.inputs[0]][2]
        pool_fields, divisor = self._pool_fields(node, self.graph.shapes[node.inputs[0]])
        _p, relu, last = self._take_chain(node, allow_pool_first=False)
        relu = relu or Node(name=node.name, op="relu", inputs=())   # pooling unsigned values stays unsigned
        acc_scale = np.full(channels, src.scale / divisor)
        fields = self._neuron_fields(node.name, last, relu, acc_scale)
        identity = np.ones((1, 1, channels), np.int8)
        self.layers.append(L.Depthwise2D(name=node.name, inputs=(src.producer,), weights=identity,
                                         weight_bits=self.options["weight_bits"], padding="valid",
                                         **pool_fields, **fields))
        return [node.name, last.name]


def _square(node: Node, key: str, default=None) -> int:
    value = node.attrs.get(key, default)
    pair = (value, value) if np.ndim(value) == 0 else tuple(value)
    if pair[0] != pair[1]:
        raise GraphError(f"{node.where()}: {key} {pair} is not square; integer layers take one value for both axes")
    return int(pair[0])


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return f"<{type(source).__module__}.{type(source).__name__}>"


def _version() -> str:
    from . import __version__

    return __version__


# -- fidelity ----------------------------------------------------------------------------------------

@dataclass
class LayerFidelity:
    name: str
    float_node: str
    snr_db: float
    cosine: float


@dataclass
class ComparisonReport:
    """What es.compare finds: accuracies, agreement and per-layer fidelity."""

    samples: int
    float_accuracy: float | None
    integer_accuracy: float | None
    agreement: float
    layers: list[LayerFidelity]
    warnings: list[str]

    def table(self) -> str:
        lines = [f"Fidelity on {self.samples} samples"]
        if self.float_accuracy is not None:
            lines.append(f"  float accuracy    {self.float_accuracy:.4f}")
            lines.append(f"  integer accuracy  {self.integer_accuracy:.4f}")
        lines.append(f"  top-1 agreement   {self.agreement:.4f}")
        rows = [(l.name, l.float_node, f"{l.snr_db:.1f}", f"{l.cosine:.4f}") for l in self.layers]
        lines.append(format_table(("layer", "float node", "SNR dB", "cosine"), rows))
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def compare(source, model: Model, x, y=None, *, device: str = "reference", importer: str | None = None,
            **importer_options) -> ComparisonReport:
    """Float vs integer: accuracies (when labels `y` are given), top-1 agreement, per-layer SNR and cosine."""
    from . import reference

    graph = load_graph(source, importer=importer, input_shape_hint=model.input_shape, **importer_options).simplify()
    x = _check_samples(x, graph.input_shape, model.input_bits)
    scaling = model.metadata.get("input_scaling", (1.0, 0.0))
    float_out, float_acts = graph.run(_float_input(x, scaling), capture=True)
    timesteps = int(model.metadata.get("timesteps", 1))
    x5 = model.check_input(x, timesteps)
    captured: dict[str, np.ndarray] = {}
    if device == "reference":
        potentials, _ = reference.run(model, x5, capture=captured)
    else:
        potentials = model.forward(x5, device=device)
    float_pred = float_out.reshape(len(x), -1).argmax(1)
    int_pred = potentials.reshape(len(x), -1).argmax(1)
    fidelity, notes = [], []
    scales = model.metadata.get("activation_scales", {})
    for name, node in model.metadata.get("float_nodes", {}).items():
        if name not in captured or node not in float_acts:
            continue
        ref = float_acts[node].astype(np.float64)
        approx = captured[name].astype(np.float64) * np.asarray(scales[name], np.float64)
        if approx.shape != ref.shape:
            continue
        noise = np.sum((ref - approx) ** 2)
        signal = np.sum(ref ** 2)
        snr = float("inf") if noise == 0 else 10 * math.log10(max(signal, 1e-30) / noise)
        denom = np.linalg.norm(ref) * np.linalg.norm(approx)
        cosine = float(np.sum(ref * approx) / denom) if denom > 0 else 1.0
        fidelity.append(LayerFidelity(name, node, snr, cosine))
        if snr < SNR_WARN_DB:
            notes.append(f"layer {name!r} keeps only {snr:.1f} dB SNR of {node!r}: more activation/weight bits, "
                         f"or calibration='percentile'/'mse', would help")
    y = None if y is None else np.asarray(y).reshape(-1)
    return ComparisonReport(
        samples=len(x),
        float_accuracy=None if y is None else float(np.mean(float_pred == y)),
        integer_accuracy=None if y is None else float(np.mean(int_pred == y)),
        agreement=float(np.mean(float_pred == int_pred)),
        layers=fidelity, warnings=notes)
