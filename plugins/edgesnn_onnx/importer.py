"""ONNX ModelProto -> edgesnn float Graph, node by node (see the package docstring)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgesnn.graph import GraphBuilder, GraphError, block_diagonal_conv_weight, pads_of

MIN_OPSET = 13
SUPPORTED_OPS = ("Add", "AveragePool", "BatchNormalization", "Clip", "Constant", "Conv", "Div", "Dropout",
                 "Flatten", "Gemm", "GlobalAveragePool", "Identity", "MatMul", "MaxPool", "Mul", "ReduceMean",
                 "Relu", "Reshape", "Shape", "Softmax", "Squeeze", "Sub")


def is_onnx_source(source) -> bool:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).suffix.lower() == ".onnx"
    return type(source).__name__ == "ModelProto" and type(source).__module__.startswith("onnx")


@dataclass(frozen=True)
class Tensor:
    """An ONNX tensor computed by the Graph: the node that holds it, its ONNX layout and, for a flat
    tensor made by flattening an NCHW tensor, the (C, H, W) whose CHW order its values follow."""

    node: str
    layout: str                      # "nchw" (4-D), "flat" (N, K) or "nc1" ((N, C, 1): half-squeezed 1x1)
    chw: tuple | None = None         # flat only: values in C, H, W order of this shape (None: HWC order)


# -- loading and checking ------------------------------------------------------------------------


def load_model(source):
    import onnx

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model {str(path)!r} does not exist")
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # protobuf raises its own DecodeError, among others
            raise GraphError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
        where = str(path)
    elif is_onnx_source(source):
        model, where = source, "<onnx.ModelProto>"
    else:
        raise TypeError(f"the onnx importer reads a .onnx path or an onnx.ModelProto, got {type(source).__name__}")
    if not model.graph.node:
        raise GraphError(f"{where}: the ONNX model has no nodes (empty or not an ONNX file)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise GraphError(f"{where}: the ONNX model is malformed: {exc}") from exc
    return _at_least_opset(model, where), where


def _opset(model) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def _at_least_opset(model, where: str):
    import onnx.version_converter

    opset = _opset(model)
    if opset >= MIN_OPSET:
        return model
    try:
        return onnx.version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:
        raise GraphError(f"{where}: opset {opset} is older than {MIN_OPSET} and could not be converted "
                         f"({exc}); export the model with opset_version >= {MIN_OPSET}") from exc


def _graph_input(model, where: str):
    """(name, onnx shape) of the one non-initializer input, with static C, H, W."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise GraphError(f"{where}: the model must have exactly one input, got {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if len(shape) not in (2, 4) or any(v is None or v < 1 for v in shape[1:]):
        raise GraphError(f"{where}: input {inputs[0].name!r} must be (N, C, H, W) or (N, K) with static sizes "
                         f"after N, got {shape}")
    return inputs[0].name, shape


# -- the import loop ------------------------------------------------------------------------------


def import_onnx(source):
    """Read `source` (path or ModelProto) into a float Graph."""
    model, where = load_model(source)
    input_name, input_shape = _graph_input(model, where)
    if len(input_shape) == 4:
        _, c, h, w = input_shape
        builder = GraphBuilder((h, w, c))
        tensors = {input_name: Tensor(builder.input_name, "nchw")}
    else:
        builder = GraphBuilder((1, 1, input_shape[1]))
        tensors = {input_name: Tensor(builder.input_name, "flat")}
    context = _Context(builder, tensors, _initial_constants(model), batch=input_shape[0] or 1, where=where)
    for node in model.graph.node:
        context.convert(node)
    outputs = [o.name for o in model.graph.output]
    if len(outputs) != 1 or outputs[0] not in tensors:
        raise GraphError(f"{where}: the model must have one output computed from its input, got {outputs}")
    out = tensors[outputs[0]]
    metadata = {"source_format": "onnx", "source": where, "opset": _opset(model),
                "producer": f"{model.producer_name} {model.producer_version}".strip(),
                "input_name": input_name, "input_layout": "NCHW" if len(input_shape) == 4 else "NC",
                "output_name": outputs[0]}
    return builder.build(output=out.node, metadata=metadata)


def _initial_constants(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


class _Context:
    """State of one import: the builder, ONNX tensor name -> Tensor, constant name -> array."""

    def __init__(self, builder: GraphBuilder, tensors: dict, constants: dict, batch: int, where: str):
        self.builder = builder
        self.tensors = tensors
        self.constants = constants
        self.batch = batch
        self.where = where

    # -- helpers used by the op handlers -----------------------------------------------------------
    def fail(self, node, message: str) -> GraphError:
        return GraphError(f"{self.where}: ONNX node {self.label(node)!r} ({node.op_type}): {message}")

    @staticmethod
    def label(node) -> str:
        return node.name or node.output[0]

    def source(self, node) -> str:
        return f"onnx {node.op_type} {self.label(node)!r}"

    def tensor(self, node, index: int = 0) -> Tensor:
        name = node.input[index]
        if name not in self.tensors:
            raise self.fail(node, f"input {name!r} is not computed from the model input "
                                  f"(constant or unknown tensor where data was expected)")
        return self.tensors[name]

    def constant(self, node, index: int, required: bool = True):
        name = node.input[index] if index < len(node.input) else ""
        if not name:
            if required:
                raise self.fail(node, f"input {index} is required")
            return None
        if name not in self.constants:
            raise self.fail(node, f"input {index} ({name!r}) must be a constant (initializer or Constant), "
                                  f"not computed at run time")
        return np.asarray(self.constants[name])

    def onnx_shape(self, tensor: Tensor) -> tuple:
        h, w, c = self.builder.shape(tensor.node)
        if tensor.layout == "nc1":
            return (self.batch, c, 1)
        return (self.batch, c, h, w) if tensor.layout == "nchw" else (self.batch, h * w * c)

    def add(self, node, op: str, inputs, layout: str, chw=None, *, attrs=None, params=None, suffix=""):
        name = self.builder.add(op, self.label(node) + suffix, [t.node for t in inputs],
                                attrs=attrs, params=params, source=self.source(node))
        self.tensors[node.output[0]] = Tensor(name, layout, chw)
        return name

    def alias(self, node, tensor: Tensor) -> None:
        self.tensors[node.output[0]] = tensor

    # -- dispatch -----------------------------------------------------------------------------------
    def convert(self, node) -> None:
        if node.op_type == "Constant":
            self.constants[node.output[0]] = _constant_value(node, self)
            return
        if node.op_type == "Shape" and node.input[0] in self.tensors:
            attrs = _attrs(node)
            shape = self.onnx_shape(self.tensors[node.input[0]])[attrs.get("start", 0):attrs.get("end")]
            self.constants[node.output[0]] = np.asarray(shape, np.int64)
            return
        if node.input and all(not name or name in self.constants for name in node.input):
            self._fold_constant(node)
            return
        handler = _HANDLERS.get(node.op_type)
        if handler is None or node.domain not in ("", "ai.onnx"):
            raise self.fail(node, f"op {node.op_type!r} is not supported; supported ops: {', '.join(SUPPORTED_OPS)}")
        handler(self, node)

    def _fold_constant(self, node) -> None:
        """Evaluate a node whose inputs are all constants (shape arithmetic) with onnx.reference."""
        from onnx import helper
        from onnx.reference import ReferenceEvaluator

        inputs = [name for name in node.input if name]
        feeds = {name: self.constants[name] for name in inputs}
        graph = helper.make_graph([node], "fold", [helper.make_tensor_value_info(n, 0, None) for n in inputs],
                                  [helper.make_tensor_value_info(n, 0, None) for n in node.output if n])
        try:
            results = ReferenceEvaluator(helper.make_model(graph)).run(None, feeds)
        except Exception as exc:
            raise self.fail(node, f"could not evaluate this constant expression ({exc})") from exc
        for name, value in zip([n for n in node.output if n], results):
            self.constants[name] = np.asarray(value)


def _constant_value(node, context: _Context) -> np.ndarray:
    from onnx import helper, numpy_helper

    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
            return np.asarray(helper.get_attribute_value(attr))
    raise context.fail(node, "only Constant nodes with value, value_float(s) or value_int(s) are supported")


def _attrs(node) -> dict:
    from onnx import helper

    return {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}


def _require_nchw(context: _Context, node, tensor: Tensor) -> None:
    if tensor.layout != "nchw":
        raise context.fail(node, f"expects a 4-D (N, C, H, W) input, got shape {context.onnx_shape(tensor)}")


def _only_first_output_used(context: _Context, node) -> None:
    if len([name for name in node.output if name]) > 1:
        raise context.fail(node, f"only the first output is supported, the node has outputs {list(node.output)}")


# -- spatial ops ---------------------------------------------------------------------------------


def _padding(context: _Context, node, attrs: dict, in_hw, kernel_hw, strides):
    """The Graph padding attr for ONNX auto_pad / pads."""
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad == "VALID":
        return "valid"
    if auto_pad == "SAME_UPPER":
        return "same"
    if auto_pad == "SAME_LOWER":  # the odd pixel goes before: TensorFlow's same mirrored
        top, bottom, left, right = pads_of("same", in_hw, kernel_hw, strides)
        return (bottom, top, right, left)
    if auto_pad != "NOTSET":
        raise context.fail(node, f"auto_pad {auto_pad!r} is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER")
    pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
    if len(pads) != 4:
        raise context.fail(node, f"pads must have 4 values for a 2-D op, got {pads}")
    top, left, bottom, right = pads  # ONNX: x1_begin, x2_begin, x1_end, x2_end
    return "valid" if not any(pads) else (top, bottom, left, right)


def _strides_and_dilations(context: _Context, node, attrs: dict) -> tuple[int, int]:
    if any(int(d) != 1 for d in attrs.get("dilations", [1, 1])):
        raise context.fail(node, f"dilations {list(attrs['dilations'])} are not supported (only 1)")
    strides = tuple(int(s) for s in attrs.get("strides", [1, 1]))
    if len(strides) != 2:
        raise context.fail(node, f"only 2-D ops are supported, got strides {strides}")
    return strides


def _conv(context: _Context, node) -> None:
    x = context.tensor(node)
    _require_nchw(context, node, x)
    attrs = _attrs(node)
    weight = context.constant(node, 1).astype(np.float32)          # (M, C/group, KH, KW)
    if weight.ndim != 4:
        raise context.fail(node, f"only 2-D convolutions are supported, weight shape {weight.shape}")
    bias = context.constant(node, 2, required=False)
    cout, cin_group, kh, kw = weight.shape
    bias = np.zeros(cout, np.float32) if bias is None else bias.astype(np.float32)
    h, w, cin = context.builder.shape(x.node)
    group = int(attrs.get("group", 1))
    strides = _strides_and_dilations(context, node, attrs)
    geometry = {"strides": strides, "padding": _padding(context, node, attrs, (h, w), (kh, kw), strides)}
    if cin_group * group != cin or cout % group:
        raise context.fail(node, f"weight {weight.shape} with group {group} does not fit {cin} input channels")
    if group == 1:
        params = {"weight": weight.transpose(2, 3, 1, 0), "bias": bias}
        context.add(node, "conv2d", [x], "nchw", attrs=geometry, params=params)
    elif group == cin and cout == cin:
        params = {"weight": weight[:, 0].transpose(1, 2, 0), "bias": bias}
        context.add(node, "depthwise_conv2d", [x], "nchw", attrs=geometry, params=params)
    else:
        per_group = np.split(weight.transpose(2, 3, 1, 0), group, axis=3)
        params = {"weight": block_diagonal_conv_weight(per_group), "bias": bias}
        context.add(node, "conv2d", [x], "nchw", attrs={**geometry, "groups": group}, params=params)


def _pool(context: _Context, node) -> None:
    x = context.tensor(node)
    _require_nchw(context, node, x)
    _only_first_output_used(context, node)
    attrs = _attrs(node)
    kernel = tuple(int(k) for k in attrs.get("kernel_shape", []))
    if len(kernel) != 2:
        raise context.fail(node, f"kernel_shape must have 2 values, got {kernel}")
    strides = _strides_and_dilations(context, node, attrs)
    h, w, _ = context.builder.shape(x.node)
    padding = _padding(context, node, attrs, (h, w), kernel, strides)
    if int(attrs.get("ceil_mode", 0)):
        _check_ceil_mode_is_floor(context, node, (h, w), kernel, strides, padding)
    op = "max_pool" if node.op_type == "MaxPool" else "avg_pool"
    pool_attrs = {"pool_size": kernel, "strides": strides, "padding": padding}
    if op == "avg_pool":
        pool_attrs["count_include_pad"] = bool(attrs.get("count_include_pad", 0))
    context.add(node, op, [x], "nchw", attrs=pool_attrs)


def _check_ceil_mode_is_floor(context, node, in_hw, kernel, strides, padding) -> None:
    pads = pads_of(padding, in_hw, kernel, strides)
    for size, k, s, before, after in ((in_hw[0], kernel[0], strides[0], pads[0], pads[1]),
                                      (in_hw[1], kernel[1], strides[1], pads[2], pads[3])):
        span = size + before + after - k
        if span % s:
            raise context.fail(node, f"ceil_mode=1 adds a partial window on a {in_hw[0]}x{in_hw[1]} input "
                                     f"(kernel {kernel}, strides {strides}); only ceil_mode=0 is supported")


def _global_average_pool(context: _Context, node) -> None:
    x = context.tensor(node)
    _require_nchw(context, node, x)
    context.add(node, "global_avg_pool", [x], "nchw")


def _reduce_mean(context: _Context, node) -> None:
    """ReduceMean over H and W (torch's x.mean((2, 3))): global average pooling."""
    x = context.tensor(node)
    _require_nchw(context, node, x)
    attrs = _attrs(node)
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:  # opset 18: axes is an input
        axes = context.constant(node, 1).reshape(-1).tolist()
    if sorted(int(a) % 4 for a in (axes or [])) != [2, 3]:
        raise context.fail(node, f"only the mean over height and width (axes 2, 3) is supported, got axes {axes}")
    keepdims = bool(attrs.get("keepdims", 1))
    context.add(node, "global_avg_pool", [x], "nchw" if keepdims else "flat")


def _squeeze(context: _Context, node) -> None:
    """Squeezing the unit spatial axes of an (N, C, 1, 1) tensor, at once or one by one: the same
    values, as (N, C) ("flat") or, half way, (N, C, 1) ("nc1")."""
    x = context.tensor(node)
    axes = _attrs(node).get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:  # opset 13: axes is an input
        axes = context.constant(node, 1).reshape(-1).tolist()
    shape = context.onnx_shape(x)
    rank = len(shape)
    axes = sorted(int(a) % rank for a in axes) if axes is not None else [i for i in range(2, rank)]
    unit_spatial = x.layout in ("nchw", "nc1") and all(v == 1 for v in shape[2:])
    if not unit_spatial or not axes or any(a < 2 for a in axes):
        raise context.fail(node, f"only squeezing the 1x1 spatial axes of (N, C, 1, 1) is supported, "
                                 f"got axes {axes} on {shape}")
    remaining = rank - len(axes)
    context.alias(node, Tensor(x.node, "flat" if remaining == 2 else "nc1"))


# -- dense ops -------------------------------------------------------------------------------------


def _hwc_rows(weight: np.ndarray, chw) -> np.ndarray:
    """Permute the rows of a dense weight (K, M) from CHW flatten order to the Graph's HWC order."""
    if chw is None:
        return weight
    c, h, w = chw
    return weight.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(h * w * c, -1)


def _flat_input(context: _Context, node) -> Tensor:
    x = context.tensor(node)
    if x.layout != "flat":
        raise context.fail(node, "expects a flattened (N, K) input; add Flatten before it")
    return x


def _gemm(context: _Context, node) -> None:
    x = _flat_input(context, node)
    attrs = _attrs(node)
    if int(attrs.get("transA", 0)):
        raise context.fail(node, "transA=1 is not supported")
    weight = context.constant(node, 1).astype(np.float64)
    if int(attrs.get("transB", 0)):
        weight = weight.T
    weight = weight * float(attrs.get("alpha", 1.0))               # (K, M)
    bias = context.constant(node, 2, required=False)
    bias = np.zeros(weight.shape[1]) if bias is None else np.broadcast_to(bias, (1, weight.shape[1]))[0]
    bias = bias * float(attrs.get("beta", 1.0))
    params = {"weight": _hwc_rows(weight, x.chw), "bias": bias}
    context.add(node, "dense", [x], "flat", params=params)


def _matmul(context: _Context, node) -> None:
    x = _flat_input(context, node)
    weight = context.constant(node, 1)
    if weight.ndim != 2:
        raise context.fail(node, f"the constant right operand must be 2-D (K, M), got shape {weight.shape}")
    params = {"weight": _hwc_rows(weight, x.chw), "bias": np.zeros(weight.shape[1])}
    context.add(node, "dense", [x], "flat", params=params)


# -- elementwise ------------------------------------------------------------------------------------


def _per_channel(context: _Context, node, x: Tensor, value: np.ndarray) -> np.ndarray:
    """A constant operand broadcast against `x`, as one value per Graph channel (HWC order)."""
    shape = context.onnx_shape(x)
    try:
        full = np.broadcast_to(value, shape)[0]                      # (C, H, W) or (K,)
    except ValueError as exc:
        raise context.fail(node, f"constant of shape {value.shape} does not broadcast to {shape}") from exc
    if x.layout in ("nchw", "nc1"):
        per_channel = full.reshape(full.shape[0], -1)
        if not np.all(per_channel == per_channel[:, :1]):
            raise context.fail(node, "a constant that varies over height/width is not supported "
                                     "(only per-channel or scalar constants)")
        return per_channel[:, 0]
    if x.chw is not None:
        c, h, w = x.chw
        return full.reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
    return full


def _arithmetic(context: _Context, node) -> None:
    """Add / Sub / Mul / Div: two data tensors (Add only) or a data tensor and a constant (affine)."""
    data = [i for i, name in enumerate(node.input) if name in context.tensors]
    if node.op_type == "Add" and len(data) == 2:
        a, b = context.tensor(node, 0), context.tensor(node, 1)
        if a.layout != b.layout or a.chw != b.chw or context.onnx_shape(a) != context.onnx_shape(b):
            raise context.fail(node, f"adds tensors of different shapes {context.onnx_shape(a)} and "
                                     f"{context.onnx_shape(b)}; broadcasting adds are not supported")
        context.add(node, "add", [a, b], a.layout, a.chw)
        return
    if len(data) != 1 or (node.op_type in ("Sub", "Div") and data != [0]):
        raise context.fail(node, f"{node.op_type} is supported between a tensor and a constant "
                                 f"(tensor first for Sub/Div), or between two tensors for Add")
    x = context.tensor(node, data[0])
    value = _per_channel(context, node, x, context.constant(node, 1 - data[0]).astype(np.float64))
    ones, zeros = np.ones_like(value), np.zeros_like(value)
    scale, offset = {"Add": (ones, value), "Sub": (ones, -value),
                     "Mul": (value, zeros), "Div": (1.0 / value, zeros)}[node.op_type]
    context.add(node, "affine", [x], x.layout, x.chw, params={"scale": scale, "offset": offset})


def _batch_norm(context: _Context, node) -> None:
    x = context.tensor(node)
    attrs = _attrs(node)
    _only_first_output_used(context, node)
    if int(attrs.get("training_mode", 0)):
        raise context.fail(node, "training_mode=1 is not supported; export the model in eval mode")
    gamma, beta, mean, var = (context.constant(node, i).astype(np.float64) for i in range(1, 5))
    scale = gamma / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
    offset = beta - mean * scale
    if x.layout == "flat" and x.chw is not None:  # BatchNorm1d after a flatten: per-feature vectors
        scale, offset = (_per_channel(context, node, x, v[None]) for v in (scale, offset))
    context.add(node, "affine", [x], x.layout, x.chw, params={"scale": scale, "offset": offset})


def _relu(context: _Context, node) -> None:
    x = context.tensor(node)
    context.add(node, "relu", [x], x.layout, x.chw, attrs={"max_value": None})


def _clip(context: _Context, node) -> None:
    x = context.tensor(node)
    low = context.constant(node, 1, required=False)
    high = context.constant(node, 2, required=False)
    if low is None or float(low) != 0.0:
        raise context.fail(node, f"Clip is supported as a clipped relu (min 0, optional max), got min "
                                 f"{None if low is None else float(low)}")
    max_value = None if high is None or not np.isfinite(float(high)) else float(high)
    context.add(node, "relu", [x], x.layout, x.chw, attrs={"max_value": max_value})


def _identity(context: _Context, node) -> None:
    if node.op_type == "Dropout":
        _only_first_output_used(context, node)
    x = context.tensor(node)
    context.add(node, "identity", [x], x.layout, x.chw, attrs={"was": node.op_type})


def _softmax(context: _Context, node) -> None:
    x = context.tensor(node)
    axis = int(_attrs(node).get("axis", -1))
    channel_axis = (1,) if x.layout == "nchw" else (1, -1)
    if axis not in channel_axis:
        raise context.fail(node, f"softmax over axis {axis} is not supported; only over channels (axis 1)")
    context.add(node, "softmax", [x], x.layout, x.chw)


# -- shape ops --------------------------------------------------------------------------------------


def _flatten_tensor(context: _Context, node, x: Tensor) -> None:
    if x.layout == "flat":
        context.alias(node, x)
        return
    h, w, c = context.builder.shape(x.node)
    chw = (c, h, w) if (h * w > 1 and c > 1) else None  # CHW and HWC orders agree when H*W or C is 1
    context.add(node, "flatten", [x], "flat", chw)


def _flatten(context: _Context, node) -> None:
    x = context.tensor(node)
    axis = int(_attrs(node).get("axis", 1))
    if axis != 1:
        raise context.fail(node, f"only Flatten(axis=1) (keep the batch axis) is supported, got axis={axis}")
    _flatten_tensor(context, node, x)


def _reshape(context: _Context, node) -> None:
    x = context.tensor(node)
    in_shape = context.onnx_shape(x)
    target = [int(v) for v in context.constant(node, 1).reshape(-1)]
    target = [in_shape[i] if v == 0 and i < len(in_shape) else v for i, v in enumerate(target)]
    if -1 in target:
        known = int(np.prod([v for v in target if v != -1]))
        target[target.index(-1)] = int(np.prod(in_shape)) // max(known, 1)
    if tuple(target) == tuple(in_shape):
        context.alias(node, x)
        return
    if len(target) == 2 and target[0] == in_shape[0]:
        _flatten_tensor(context, node, x)
        return
    raise context.fail(node, f"only flattening reshapes (N, C, H, W) -> (N, C*H*W) are supported, "
                             f"got {tuple(in_shape)} -> {tuple(target)}")


_HANDLERS = {
    "Conv": _conv, "MaxPool": _pool, "AveragePool": _pool, "GlobalAveragePool": _global_average_pool,
    "ReduceMean": _reduce_mean, "Squeeze": _squeeze, "Gemm": _gemm, "MatMul": _matmul,
    "Add": _arithmetic, "Sub": _arithmetic, "Mul": _arithmetic, "Div": _arithmetic,
    "BatchNormalization": _batch_norm, "Relu": _relu, "Clip": _clip, "Dropout": _identity,
    "Identity": _identity, "Softmax": _softmax, "Flatten": _flatten, "Reshape": _reshape,
}
