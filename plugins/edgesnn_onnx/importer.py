"""ONNX ModelProto -> edgesnn float Graph, node by node (see the package docstring).

Each ONNX tensor the Graph computes is a ``Tensor``: the Graph node holding its values and the ONNX
layout of those values.  Layouts: ``nchw`` (4-D, torch.onnx), ``nhwc`` (4-D channels-last, tf2onnx's
input before its leading Transpose), ``ncl`` ((N, C, L): Conv1d and friends, the Graph's (1, L, C)),
``flat`` ((N, K); ``chw`` says when its values follow an NCHW tensor's C, H, W order) and ``grouped``
((N, G, C/G, H, W), half way through ShuffleNet's channel shuffle).  Layout-only ONNX ops (Transpose
between NCHW and NHWC, Squeeze/Unsqueeze of unit axes, Cast to float, Identity) only relabel a Tensor.

An op that cannot be converted becomes an ``unsupported`` node whose shape comes from ONNX shape
inference, and the import goes on, so every problem is listed at once (``Graph.problems()``); only
where a shape is unknown does the import stop (``metadata["import_stopped"]``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgesnn.graph import GraphBuilder, GraphError, block_diagonal_conv_weight, ceil_mode_pads, pads_of

MIN_OPSET = 13
SUPPORTED_OPS = ("Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "Conv", "Div",
                 "Dropout", "Flatten", "Gemm", "GlobalAveragePool", "Identity", "MatMul", "Max", "MaxPool", "Min", "Mul", "Pad",
                 "ReduceMean", "Relu", "Reshape", "Shape", "Slice", "Softmax", "Split", "Squeeze", "Sub",
                 "Transpose", "Unsqueeze")
# what to change, for ops that have no exact integer form
HINTS = {
    "HardSwish": "replace Hardswish with ReLU6 (or ReLU), then fine-tune",
    "HardSigmoid": "replace the hard sigmoid (or the squeeze-excite block using it) with ReLU6, then fine-tune",
    "Sigmoid": "sigmoid has no integer form here; replace it (or remove the squeeze-excite / gating block "
               "using it) and fine-tune",
    "Tanh": "replace tanh with a (bounded) ReLU, then fine-tune",
    "Swish": "replace SiLU/Swish with ReLU, then fine-tune", "Silu": "replace SiLU/Swish with ReLU, then fine-tune",
    "Gelu": "replace GELU with ReLU, then fine-tune", "Erf": "replace GELU with ReLU, then fine-tune",
    "LeakyRelu": "replace LeakyReLU with ReLU, then fine-tune", "PRelu": "replace PReLU with ReLU, then fine-tune",
    "Elu": "replace ELU with ReLU, then fine-tune", "Selu": "replace SELU with ReLU, then fine-tune",
    "LayerNormalization": "LayerNorm normalizes by run-time statistics; use BatchNorm instead, then fine-tune",
    "InstanceNormalization": "use BatchNorm instead of InstanceNorm, then fine-tune",
    "Resize": "upsampling is not supported; use a strided transposed design without resizing",
    "Upsample": "upsampling is not supported",
    "ConvTranspose": "transposed convolutions are not supported",
    "LSTM": "recurrent layers are not supported", "GRU": "recurrent layers are not supported",
    "ReduceMax": "use global average pooling instead of a global max", "GlobalMaxPool":
        "use global average pooling (AdaptiveAvgPool2d(1)) instead of a global max",
}
TWO_TENSOR_HINT = {"Mul": "multiplies two tensors (squeeze-excite / gating): remove the block, then fine-tune",
                   "MatMul": "multiplies two tensors (attention): not expressible as integer layers",
                   "Div": "divides two tensors: not expressible as integer layers",
                   "Sub": "subtracts two tensors: write it as an Add of a negated branch"}


def is_onnx_source(source) -> bool:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).suffix.lower() == ".onnx"
    return type(source).__name__ == "ModelProto" and type(source).__module__.startswith("onnx")


@dataclass(frozen=True)
class Tensor:
    """An ONNX tensor computed by the Graph: the node that holds it, its ONNX layout (module doc) and,
    for a flat tensor made by flattening an NCHW tensor, the (C, H, W) whose CHW order its values
    follow; for a grouped tensor, (G, C/G) and whether the two group axes are transposed."""

    node: str
    layout: str                      # "nchw", "nhwc", "ncl", "flat" or "grouped"
    chw: tuple | None = None         # flat only: values in C, H, W order of this shape (None: HWC order)
    groups: tuple | None = None      # grouped only: (G, C/G, transposed)


class _Stop(Exception):
    """The import cannot go on: a node's output shape is unknown."""

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
    if len(shape) not in (2, 3, 4) or any(v is None or v < 1 for v in shape[1:]):
        raise GraphError(f"{where}: input {inputs[0].name!r} must be (N, C, H, W), (N, H, W, C), (N, C, L) or "
                         f"(N, K) with static sizes after N, got {shape}")
    return inputs[0].name, shape


# -- the import loop ------------------------------------------------------------------------------

ELEMENTWISE = ("Cast", "Mul", "Add", "Sub", "Div", "Identity")


def _input_is_nhwc(model, input_name: str) -> bool:
    """tf2onnx keeps a Keras model's NHWC input and transposes it to NCHW (perm 0, 3, 1, 2; a Reshape
    when C is 1) before the first conv, possibly after a Cast and elementwise scaling.  Follow the input
    through those to the first Transpose; without one, a tf2onnx file is NHWC and any other NCHW."""
    frontier, seen = {input_name}, set()
    while frontier:
        name = frontier.pop()
        seen.add(name)
        for node in model.graph.node:
            if name not in node.input:
                continue
            if node.op_type == "Transpose":
                perm = [list(a.ints) for a in node.attribute if a.name == "perm"]
                if perm and perm[0] in ([0, 3, 1, 2], [0, 2, 3, 1]):
                    return perm[0] == [0, 3, 1, 2]
            if node.op_type in ELEMENTWISE:
                frontier.update(o for o in node.output if o not in seen)
    return model.producer_name == "tf2onnx"


def _value_shapes(model) -> dict[str, tuple]:
    """ONNX tensor name -> its inferred shape (None for an unknown dim) from onnx.shape_inference."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - without inference only the unsupported nodes' shapes are missing
        inferred = model
    shapes = {}
    for info in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
        if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
            shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                      for d in info.type.tensor_type.shape.dim)
    return shapes


def import_onnx(source):
    """Read `source` (path or ModelProto) into a float Graph."""
    model, where = load_model(source)
    input_name, input_shape = _graph_input(model, where)
    layout = {2: "flat", 3: "ncl", 4: "nchw"}[len(input_shape)]
    if layout == "nchw" and _input_is_nhwc(model, input_name):
        layout = "nhwc"
    hwc = {"flat": lambda s: (1, 1, s[1]), "ncl": lambda s: (1, s[2], s[1]),
           "nchw": lambda s: (s[2], s[3], s[1]), "nhwc": lambda s: (s[1], s[2], s[3])}[layout](input_shape)
    builder = GraphBuilder(hwc)
    tensors = {input_name: Tensor(builder.input_name, layout)}
    context = _Context(builder, tensors, _initial_constants(model), batch=input_shape[0] or 1, where=where,
                       value_shapes=_value_shapes(model))
    stopped = None
    for node in model.graph.node:
        try:
            context.convert(node)
        except _Stop as stop:
            stopped = str(stop)
            break
    outputs = [o.name for o in model.graph.output]
    metadata = {"source_format": "onnx", "source": where, "opset": _opset(model),
                "producer": f"{model.producer_name} {model.producer_version}".strip(),
                "input_name": input_name, "input_layout": {"flat": "NC", "ncl": "NCL", "nchw": "NCHW",
                                                           "nhwc": "NHWC"}[layout],
                "input_dtype": _input_dtype(model, input_name), "output_name": outputs[0] if outputs else None}
    if stopped is not None:
        if not builder.nodes:
            raise GraphError(f"{where}: {stopped}")
        metadata["import_stopped"] = stopped
        return builder.build(output=builder.nodes[-1].name, metadata=metadata)
    if len(outputs) != 1 or outputs[0] not in tensors:
        raise GraphError(f"{where}: the model must have one output computed from its input, got {outputs}")
    out = tensors[outputs[0]]
    if out.node == builder.input_name:
        raise GraphError(f"{where}: the model's output is its input (no op left after removing layout ops)")
    return builder.build(output=out.node, metadata=metadata)


def _input_dtype(model, input_name: str) -> str:
    from onnx import helper

    for value in model.graph.input:
        if value.name == input_name:
            return str(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
    return "float32"


def _initial_constants(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


class _Context:
    """State of one import: the builder, ONNX tensor name -> Tensor, constant name -> array."""

    def __init__(self, builder: GraphBuilder, tensors: dict, constants: dict, batch: int, where: str,
                 value_shapes: dict | None = None):
        self.builder = builder
        self.tensors = tensors
        self.constants = constants
        self.batch = batch
        self.where = where
        self.value_shapes = value_shapes or {}
        self.producers: dict[str, object] = {}    # ONNX tensor name -> the node that computed it

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
        if tensor.layout == "ncl":
            return (self.batch, c, w)
        if tensor.layout == "nhwc":
            return (self.batch, h, w, c)
        if tensor.layout == "grouped":
            g, cg, transposed = tensor.groups
            return (self.batch, cg, g, h, w) if transposed else (self.batch, g, cg, h, w)
        return (self.batch, c, h, w) if tensor.layout == "nchw" else (self.batch, h * w * c)

    def add(self, node, op: str, inputs, layout: str, chw=None, *, attrs=None, params=None, suffix="",
            output_index: int = 0):
        name = self.builder.add(op, self.label(node) + suffix, [t.node for t in inputs],
                                attrs=attrs, params=params, source=self.source(node))
        self.tensors[node.output[output_index]] = Tensor(name, layout, chw)
        return name

    def alias(self, node, tensor: Tensor) -> None:
        self.tensors[node.output[0]] = tensor

    # -- dispatch -----------------------------------------------------------------------------------
    def convert(self, node) -> None:
        for output in node.output:
            self.producers[output] = node
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
        if not any(name in self.tensors for name in node.input):
            raise _Stop(f"ONNX node {self.label(node)!r} ({node.op_type}) reads none of the tensors computed "
                        f"so far (inputs {list(node.input)}); the import stopped here")
        handler = _HANDLERS.get(node.op_type)
        if handler is None or node.domain not in ("", "ai.onnx"):
            hint = HINTS.get(node.op_type, f"op {node.op_type!r} is not supported; supported ops: "
                                           f"{', '.join(SUPPORTED_OPS)}")
            self.unsupported(node, hint)
            return
        try:
            handler(self, node)
        except GraphError as exc:
            message = str(exc)
            prefix = f"{self.where}: ONNX node {self.label(node)!r} ({node.op_type}): "
            self.unsupported(node, message[len(prefix):] if message.startswith(prefix) else message)

    def unsupported(self, node, hint: str) -> None:
        """An ``unsupported`` node per output of `node`, shaped by ONNX shape inference."""
        data = [self.tensors[name] for name in node.input if name in self.tensors]
        for index, output in enumerate(node.output):
            if not output:
                continue
            shape = self.value_shapes.get(output)
            hwc, layout = _hwc_of_onnx_shape(shape, data[0].layout if data else "nchw")
            if hwc is None:
                raise _Stop(f"ONNX node {self.label(node)!r} ({node.op_type}) is not supported ({hint}) and "
                            f"its output shape {shape} is unknown, so the import stopped here")
            name = self.builder.add("unsupported", self.label(node) + (f":{index}" if index else ""),
                                    [t.node for t in data],
                                    attrs={"op": node.op_type, "layer": _source_layer(node), "hint": hint,
                                           "shape": hwc}, source=self.source(node))
            self.tensors[output] = Tensor(name, layout)

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


def _source_layer(node) -> str:
    """The source framework's own name of the layer `node` comes from: the torch module path the
    dynamo exporter records (``pkg.torch.onnx.name_scopes``, e.g. 'features.1.block.0'), else the
    ONNX node name (the TorchScript exporter's '/features/features.1/...', tf2onnx's 'model/layer/op')."""
    import ast

    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = [str(v) for v in ast.literal_eval(prop.value) if v]
            except (ValueError, SyntaxError):
                break
            if len(scopes) >= 2:
                return scopes[-2]
    return node.name or node.output[0]


def _hwc_of_onnx_shape(shape, layout_hint: str):
    """(Graph HWC shape, layout) of an ONNX shape (batch first), or (None, None) when not static."""
    if shape is None or len(shape) < 2 or any(v is None or v < 1 for v in shape[1:]):
        return None, None
    if len(shape) == 2:
        return (1, 1, shape[1]), "flat"
    if len(shape) == 3:
        return (1, shape[2], shape[1]), "ncl"
    if len(shape) == 4:
        if layout_hint == "nhwc":
            return (shape[1], shape[2], shape[3]), "nhwc"
        return (shape[2], shape[3], shape[1]), "nchw"
    return None, None


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


def _require_spatial(context: _Context, node, tensor: Tensor) -> None:
    if tensor.layout not in ("nchw", "ncl"):
        raise context.fail(node, f"expects a (N, C, H, W) or (N, C, L) input, got shape "
                                 f"{context.onnx_shape(tensor)} ({tensor.layout})")


def _only_first_output_used(context: _Context, node) -> None:
    if len([name for name in node.output if name]) > 1:
        raise context.fail(node, f"only the first output is supported, the node has outputs {list(node.output)}")


# -- layout: which ONNX values a Tensor's Graph node holds -----------------------------------------


def _to_onnx(values: np.ndarray, tensor: Tensor) -> np.ndarray:
    """The ONNX view (batch axis dropped) of `values`, an array shaped like the Tensor's Graph node (H, W, C)."""
    h, w, c = values.shape
    if tensor.layout == "nhwc":
        return values
    if tensor.layout == "ncl":
        return values[0].T                                            # (C, L)
    if tensor.layout == "flat":
        if tensor.chw is None:
            return values.reshape(-1)
        cc, ch, cw = tensor.chw
        return values.reshape(ch, cw, cc).transpose(2, 0, 1).reshape(-1)
    chw = values.transpose(2, 0, 1)                                   # nchw, grouped
    if tensor.layout == "grouped":
        g, cg, transposed = tensor.groups
        grouped = chw.reshape(g, cg, h, w)
        return grouped.transpose(1, 0, 2, 3) if transposed else grouped
    return chw


def _from_onnx(values: np.ndarray, prefer: str):
    """(layout, Graph-shaped array, groups) that holds the ONNX view `values` (batch axis dropped)."""
    if values.ndim == 1:
        return "flat", values.reshape(1, 1, -1), None
    if values.ndim == 2:
        return "ncl", values.T[None], None
    if values.ndim == 3:
        return ("nhwc", values, None) if prefer == "nhwc" else ("nchw", values.transpose(1, 2, 0), None)
    if values.ndim == 4 and prefer != "nhwc":
        g, cg, h, w = values.shape
        return "grouped", values.reshape(g * cg, h, w).transpose(1, 2, 0), (g, cg, False)
    return None, None, None


def _relayout(context: _Context, node, x: Tensor, new_shape) -> None:
    """Reshape / Squeeze / Unsqueeze / Flatten of `x` to the ONNX shape `new_shape` (batch first): an
    alias where the Graph values stay, a reshape node where only the Graph shape changes, a flatten
    (CHW order, for the dense weights) or a permute_channels node (the end of a channel shuffle)."""
    shape = context.builder.shape(x.node)
    size = int(np.prod(shape))
    if int(np.prod(new_shape[1:])) != size or int(new_shape[0]) not in (context.batch, 1, -1):
        raise context.fail(node, f"reshapes {context.onnx_shape(x)} to {tuple(new_shape)}; only reshapes that "
                                 f"keep the batch axis are supported")
    index = np.arange(size).reshape(shape)
    view = _to_onnx(index, x).reshape(tuple(new_shape[1:]))
    candidates = [c for c in (_from_onnx(view, x.layout), _from_onnx(view, "nchw" if x.layout == "nhwc" else "nhwc"))
                  if c[0] is not None]
    if not candidates:
        raise context.fail(node, f"reshape {context.onnx_shape(x)} -> {tuple(new_shape)} is not supported")
    in_order = [c for c in candidates if np.array_equal(c[1].reshape(-1), np.arange(size))]
    for layout, target, groups in in_order:
        if tuple(target.shape) == tuple(shape):
            context.tensors[node.output[0]] = Tensor(x.node, layout, None, groups)
            return
    for layout, target, groups in in_order:
        name = context.builder.add("reshape", context.label(node), [x.node], attrs={"shape": target.shape},
                                   source=context.source(node))
        context.tensors[node.output[0]] = Tensor(name, layout, None, groups)
        return
    layout, target, groups = candidates[0]
    channels = shape[2]
    order = target[0, 0] % channels if target.shape == tuple(shape) else None
    if order is not None and np.array_equal(target, index[..., order]):
        name = context.builder.add("permute_channels", context.label(node), [x.node],
                                   attrs={"order": [int(v) for v in order]}, source=context.source(node))
        context.tensors[node.output[0]] = Tensor(name, layout, None, groups)
        return
    if layout == "flat" and x.layout == "nchw":
        _flatten_tensor(context, node, x)
        return
    raise context.fail(node, f"reshape {context.onnx_shape(x)} -> {tuple(new_shape)} reorders values across "
                             f"positions; only flattening, unit-axis and channel-shuffle reshapes are supported")


def _flatten_tensor(context: _Context, node, x: Tensor) -> None:
    if x.layout == "flat":
        context.alias(node, x)
        return
    h, w, c = context.builder.shape(x.node)
    if x.layout == "nhwc":
        chw = None                                      # NHWC flattens in the Graph's HWC order
    elif x.layout in ("nchw", "ncl"):
        chw = (c, h, w) if (h * w > 1 and c > 1) else None  # CHW and HWC orders agree when H*W or C is 1
    else:
        raise context.fail(node, f"flattening a {x.layout} tensor is not supported")
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
    if len(target) == 2 and target[0] == in_shape[0] and x.layout != "grouped":
        _flatten_tensor(context, node, x)
        return
    _relayout(context, node, x, target)


def _axes(context: _Context, node, rank: int):
    axes = _attrs(node).get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:  # opset 13: axes is an input
        axes = context.constant(node, 1).reshape(-1).tolist()
    return None if axes is None else sorted(int(a) % rank for a in axes)


def _squeeze(context: _Context, node) -> None:
    x = context.tensor(node)
    shape = list(context.onnx_shape(x))
    axes = _axes(context, node, len(shape))
    axes = [i for i in range(1, len(shape)) if shape[i] == 1] if axes is None else axes
    if 0 in axes or any(shape[a] != 1 for a in axes):
        raise context.fail(node, f"squeezes axes {axes} of {tuple(shape)}; only unit axes after the batch")
    _relayout(context, node, x, [v for i, v in enumerate(shape) if i not in axes])


def _unsqueeze(context: _Context, node) -> None:
    x = context.tensor(node)
    shape = list(context.onnx_shape(x))
    raw = _attrs(node).get("axes")
    raw = context.constant(node, 1).reshape(-1).tolist() if raw is None else raw
    axes = sorted(int(a) % (len(shape) + len(raw)) for a in raw)
    if not axes or 0 in axes:
        raise context.fail(node, f"unsqueezes axes {axes}; only axes after the batch are supported")
    for axis in axes:
        shape.insert(axis, 1)
    _relayout(context, node, x, shape)


def _transpose(context: _Context, node) -> None:
    x = context.tensor(node)
    rank = len(context.onnx_shape(x))
    perm = [int(p) for p in _attrs(node).get("perm", list(range(rank))[::-1])]
    if perm == list(range(rank)):
        context.alias(node, x)
    elif x.layout == "nhwc" and perm == [0, 3, 1, 2]:
        context.alias(node, Tensor(x.node, "nchw"))
    elif x.layout == "nchw" and perm == [0, 2, 3, 1]:
        context.alias(node, Tensor(x.node, "nhwc"))
    elif x.layout == "grouped" and perm == [0, 2, 1, 3, 4]:
        g, cg, transposed = x.groups
        context.alias(node, Tensor(x.node, "grouped", None, (g, cg, not transposed)))
    else:
        raise context.fail(node, f"transpose {perm} of a {x.layout} tensor {context.onnx_shape(x)} is not "
                                 f"supported (only NCHW <-> NHWC and the channel shuffle's group swap)")


def _cast(context: _Context, node) -> None:
    from onnx import helper

    to = int(_attrs(node).get("to", 1))
    dtype = helper.tensor_dtype_to_np_dtype(to)
    if not np.issubdtype(dtype, np.floating):
        raise context.fail(node, f"casts data to {dtype}; only casts to float are supported (an input Cast)")
    context.alias(node, context.tensor(node))


# -- spatial ops ---------------------------------------------------------------------------------


def _spatial_attrs(x: Tensor, attrs: dict) -> dict:
    """A 1-D op's attrs (over (N, C, L)) as those of the 2-D op of height 1 the Graph runs."""
    if x.layout != "ncl":
        return attrs
    out = dict(attrs)
    for key in ("kernel_shape", "strides", "dilations"):
        if key in attrs:
            out[key] = [1, *attrs[key]]
    if "pads" in attrs:
        begin, end = attrs["pads"]
        out["pads"] = [0, begin, 0, end]
    return out


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
        raise context.fail(node, f"dilations {list(attrs['dilations'])} are not supported (only 1): dilated "
                                 f"convolutions have no integer layer; use a larger kernel or strides")
    strides = tuple(int(s) for s in attrs.get("strides", [1, 1]))
    if len(strides) != 2:
        raise context.fail(node, f"only 1-D and 2-D ops are supported, got strides {strides}")
    return strides


def _conv(context: _Context, node) -> None:
    x = context.tensor(node)
    _require_spatial(context, node, x)
    attrs = _spatial_attrs(x, _attrs(node))
    weight = context.constant(node, 1).astype(np.float32)          # (M, C/group, KH, KW) or (M, C/group, K)
    if weight.ndim == 3 and x.layout == "ncl":
        weight = weight[:, :, None, :]
    if weight.ndim != 4:
        raise context.fail(node, f"only 1-D and 2-D convolutions are supported, weight shape {weight.shape}")
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
        context.add(node, "conv2d", [x], x.layout, attrs=geometry, params=params)
    elif group == cin:  # output channel o reads input channel o // M
        params = {"weight": weight[:, 0].transpose(1, 2, 0), "bias": bias}
        context.add(node, "depthwise_conv2d", [x], x.layout, params=params,
                    attrs={**geometry, "depth_multiplier": cout // cin})
    else:
        per_group = np.split(weight.transpose(2, 3, 1, 0), group, axis=3)
        params = {"weight": block_diagonal_conv_weight(per_group), "bias": bias}
        context.add(node, "conv2d", [x], x.layout, attrs={**geometry, "groups": group}, params=params)


def _pool(context: _Context, node) -> None:
    x = context.tensor(node)
    _require_spatial(context, node, x)
    _only_first_output_used(context, node)
    attrs = _spatial_attrs(x, _attrs(node))
    kernel = tuple(int(k) for k in attrs.get("kernel_shape", []))
    if len(kernel) != 2:
        raise context.fail(node, f"kernel_shape must have 1 or 2 values, got {kernel}")
    strides = _strides_and_dilations(context, node, attrs)
    h, w, _ = context.builder.shape(x.node)
    padding = _padding(context, node, attrs, (h, w), kernel, strides)
    op = "max_pool" if node.op_type == "MaxPool" else "avg_pool"
    include = bool(attrs.get("count_include_pad", 0))
    if int(attrs.get("ceil_mode", 0)):
        padding, overhang = ceil_mode_pads((h, w), kernel, strides, pads_of(padding, (h, w), kernel, strides))
        if overhang and op == "avg_pool" and include:
            raise context.fail(node, f"ceil_mode=1 with count_include_pad=1 divides the windows that reach past "
                                     f"the padding of the {h}x{w} input by fewer than {kernel[0] * kernel[1]} "
                                     f"taps; export with ceil_mode=False or count_include_pad=False")
    pool_attrs = {"pool_size": kernel, "strides": strides, "padding": padding}
    if op == "avg_pool":
        pool_attrs["count_include_pad"] = include
    context.add(node, op, [x], x.layout, attrs=pool_attrs)


def _global_average_pool(context: _Context, node) -> None:
    x = context.tensor(node)
    _require_spatial(context, node, x)
    context.add(node, "global_avg_pool", [x], x.layout)


def _reduce_mean(context: _Context, node) -> None:
    """ReduceMean over the spatial axes (torch's x.mean((2, 3)), Keras' GlobalAveragePooling2D via
    tf2onnx): global average pooling."""
    x = context.tensor(node)
    attrs = _attrs(node)
    rank = len(context.onnx_shape(x))
    axes = _axes(context, node, rank)
    spatial = {"nchw": [2, 3], "ncl": [2], "nhwc": [1, 2]}.get(x.layout)
    if spatial is None or axes != spatial:
        raise context.fail(node, f"only the mean over the spatial axes is supported, got axes {axes} of a "
                                 f"{x.layout} tensor {context.onnx_shape(x)}")
    keepdims = bool(attrs.get("keepdims", 1))
    context.add(node, "global_avg_pool", [x], x.layout if keepdims else "flat")


def _pad(context: _Context, node) -> None:
    x = context.tensor(node)
    attrs = _attrs(node)
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = attrs.get("pads")
    pads = context.constant(node, 1).reshape(-1).tolist() if pads is None else pads
    value = context.constant(node, 2, required=False) if len(node.input) > 2 else None
    if mode != "constant" or (value is not None and float(np.asarray(value).reshape(-1)[0]) != 0.0):
        raise context.fail(node, f"only zero padding is supported, got mode {mode!r}"
                                 f"{'' if value is None else f' value {float(np.asarray(value).reshape(-1)[0])}'}")
    rank = len(context.onnx_shape(x))
    if len(node.input) > 3 and node.input[3]:  # opset 18: the axes the pads refer to
        full = [0] * (2 * rank)
        axes = [int(a) % rank for a in context.constant(node, 3).reshape(-1)]
        for i, axis in enumerate(axes):
            full[axis], full[rank + axis] = int(pads[i]), int(pads[len(axes) + i])
        pads = full
    pads = [int(p) for p in pads]
    begin, end = pads[:rank], pads[rank:]
    spatial = {"nchw": (2, 3), "nhwc": (1, 2), "ncl": (None, 2)}.get(x.layout)
    others = [i for i in range(rank) if spatial is None or i not in spatial]
    if spatial is None or any(begin[i] or end[i] for i in others) or min(pads) < 0:
        raise context.fail(node, f"pads {pads} of a {x.layout} tensor: only non-negative padding of height "
                                 f"and width is supported")
    hy, wx = spatial
    graph_pads = (begin[hy] if hy is not None else 0, end[hy] if hy is not None else 0, begin[wx], end[wx])
    context.add(node, "pad", [x], x.layout, attrs={"pads": graph_pads})


def _channel_axis(context: _Context, node, x: Tensor, axis: int) -> None:
    rank = len(context.onnx_shape(x))
    channel = {"nchw": 1, "ncl": 1, "nhwc": 3, "flat": 1}.get(x.layout)
    if channel is None or axis % rank != channel or (x.layout == "flat" and x.chw is not None):
        raise context.fail(node, f"axis {axis} of a {x.layout} tensor {context.onnx_shape(x)}: only the "
                                 f"channel axis is supported")


def _concat(context: _Context, node) -> None:
    xs = [context.tensor(node, i) for i in range(len(node.input))]
    axis = int(_attrs(node).get("axis", 1))
    for x in xs:
        _channel_axis(context, node, x, axis)
    if len({x.layout for x in xs}) != 1:
        raise context.fail(node, f"concatenates tensors of layouts {[x.layout for x in xs]}")
    if len(xs) == 1:
        context.alias(node, xs[0])
        return
    context.add(node, "concat", xs, xs[0].layout)


def _split(context: _Context, node) -> None:
    """Split (torch chunk/split, tf.split) along channels: one slice_channels node per output."""
    x = context.tensor(node)
    attrs = _attrs(node)
    axis = int(attrs.get("axis", 0))
    _channel_axis(context, node, x, axis)
    channels = context.builder.shape(x.node)[2]
    outputs = [name for name in node.output]
    sizes = attrs.get("split")
    if sizes is None and len(node.input) > 1 and node.input[1]:
        sizes = context.constant(node, 1).reshape(-1).tolist()
    if sizes is None:
        count = int(attrs.get("num_outputs", len(outputs)))
        step = -(-channels // count)
        sizes = [min(step, channels - i * step) for i in range(count)]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    if starts[-1] != channels or len(sizes) != len(outputs):
        raise context.fail(node, f"split sizes {list(sizes)} do not cover the {channels} channels")
    for index, name in enumerate(outputs):
        if name:
            context.add(node, "slice_channels", [x], x.layout, suffix=f":{index}", output_index=index,
                        attrs={"start": int(starts[index]), "stop": int(starts[index + 1])})


def _slice(context: _Context, node) -> None:
    x = context.tensor(node)
    shape = context.onnx_shape(x)
    rank = len(shape)
    starts, ends = (context.constant(node, i).reshape(-1).tolist() for i in (1, 2))
    axes = context.constant(node, 3, required=False)
    axes = list(range(len(starts))) if axes is None else axes.reshape(-1).tolist()
    steps = context.constant(node, 4, required=False)
    steps = [1] * len(starts) if steps is None else steps.reshape(-1).tolist()
    channel_slice = None
    for start, end, axis, step in zip(starts, ends, axes, steps):
        size = shape[int(axis) % rank]
        start, end = (max(0, min(size, int(v) + size if int(v) < 0 else int(v))) for v in (start, end))
        if (start, end, int(step)) == (0, size, 1):
            continue
        _channel_axis(context, node, x, int(axis))
        if int(step) != 1:
            raise context.fail(node, f"slices with step {step}; only step 1 is supported")
        channel_slice = (start, end)
    if channel_slice is None:
        context.alias(node, x)
        return
    context.add(node, "slice_channels", [x], x.layout, attrs={"start": channel_slice[0], "stop": channel_slice[1]})


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
        raise context.fail(node, f"expects a flattened (N, K) input, got {context.onnx_shape(x)}; add Flatten "
                                 f"before it")
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
    if all(name in context.tensors for name in node.input):
        raise context.fail(node, TWO_TENSOR_HINT["MatMul"])
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
        full = np.broadcast_to(value, shape)[0]                      # the ONNX view without the batch
    except ValueError as exc:
        raise context.fail(node, f"constant of shape {value.shape} does not broadcast to {shape}") from exc
    if x.layout in ("nchw", "ncl", "nhwc"):
        per_channel = full.reshape(-1, full.shape[-1]).T if x.layout == "nhwc" else full.reshape(full.shape[0], -1)
        if not np.all(per_channel == per_channel[:, :1]):
            raise context.fail(node, "a constant that varies over height/width is not supported "
                                     "(only per-channel or scalar constants)")
        return per_channel[:, 0]
    if x.layout == "grouped":
        raise context.fail(node, "arithmetic on a grouped (5-D) tensor is not supported")
    if x.chw is not None:
        c, h, w = x.chw
        return full.reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
    return full


def _arithmetic(context: _Context, node) -> None:
    """Add / Sub / Mul / Div: two data tensors (Add only) or a data tensor and a constant (affine)."""
    data = [i for i, name in enumerate(node.input) if name in context.tensors]
    if len(data) == 2:
        if node.op_type == "Mul" and _is_silu(context, node):
            raise context.fail(node, "x * sigmoid(x) is SiLU/Swish: replace it with ReLU, then fine-tune")
        if node.op_type != "Add":
            raise context.fail(node, TWO_TENSOR_HINT[node.op_type])
        a, b = context.tensor(node, 0), context.tensor(node, 1)
        if a.node == b.node and a.layout == b.layout and a.chw == b.chw:
            context.add(node, "affine", [a], a.layout, a.chw, params={
                "scale": np.full(context.builder.shape(a.node)[2], 2.0), "offset": np.zeros(context.builder.shape(a.node)[2])})
            return
        if a.layout != b.layout or a.chw != b.chw or context.onnx_shape(a) != context.onnx_shape(b):
            raise context.fail(node, f"adds tensors of different shapes {context.onnx_shape(a)} and "
                                     f"{context.onnx_shape(b)}; broadcasting adds are not supported")
        context.add(node, "add", [a, b], a.layout, a.chw)
        return
    if len(data) != 1 or (node.op_type == "Div" and data != [0]):
        raise context.fail(node, f"{node.op_type} is supported between a tensor and a constant "
                                 f"(tensor first for Div), or between two tensors for Add")
    x = context.tensor(node, data[0])
    value = _per_channel(context, node, x, context.constant(node, 1 - data[0]).astype(np.float64))
    ones, zeros = np.ones_like(value), np.zeros_like(value)
    if node.op_type == "Sub" and data == [1]:          # constant - x
        scale, offset = -ones, value
    elif node.op_type == "Div":
        if np.any(value == 0):
            raise context.fail(node, "divides by a constant that has zeros")
        scale, offset = 1.0 / value, zeros
    else:
        scale, offset = {"Add": (ones, value), "Sub": (ones, -value), "Mul": (value, zeros)}[node.op_type]
    context.add(node, "affine", [x], x.layout, x.chw, params={"scale": scale, "offset": offset})


def _is_silu(context: _Context, node) -> bool:
    """Mul(x, Sigmoid(x)) in either order."""
    for gate, other in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
        producer = context.producers.get(gate)
        if producer is not None and producer.op_type in ("Sigmoid", "HardSigmoid") and producer.input[0] == other:
            return True
    return False


def _batch_norm(context: _Context, node) -> None:
    x = context.tensor(node)
    attrs = _attrs(node)
    _only_first_output_used(context, node)
    if int(attrs.get("training_mode", 0)):
        raise context.fail(node, "training_mode=1 is not supported; export the model in eval mode")
    if x.layout not in ("nchw", "ncl", "flat"):
        raise context.fail(node, f"batch norm over axis 1 of a {x.layout} tensor is not supported")
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
    attrs = _attrs(node)
    low = context.constant(node, 1, required=False) if len(node.input) > 1 else attrs.get("min")
    high = context.constant(node, 2, required=False) if len(node.input) > 2 else attrs.get("max")
    low = None if low is None or not np.isfinite(float(low)) else float(low)
    high = None if high is None or not np.isfinite(float(high)) else float(high)
    if low == 0.0:
        context.add(node, "relu", [x], x.layout, x.chw, attrs={"max_value": high})
    else:
        context.add(node, "clip", [x], x.layout, x.chw, attrs={"min_value": low, "max_value": high})


def _min_max(context: _Context, node) -> None:
    """Min / Max of a tensor and a scalar constant (tf2onnx's clip_by_value of a bounded ReLU): a clip."""
    data = [i for i, name in enumerate(node.input) if name in context.tensors]
    if len(node.input) != 2 or len(data) != 1:
        raise context.fail(node, f"{node.op_type} is supported between one tensor and one constant")
    x = context.tensor(node, data[0])
    value = _per_channel(context, node, x, context.constant(node, 1 - data[0]).astype(np.float64))
    if not np.all(value == value[0]):
        raise context.fail(node, f"{node.op_type} with a per-channel constant is not supported (only a scalar)")
    bound = float(value[0])
    attrs = {"min_value": bound, "max_value": None} if node.op_type == "Max" else {"min_value": None, "max_value": bound}
    context.add(node, "clip", [x], x.layout, x.chw, attrs=attrs)


def _identity(context: _Context, node) -> None:
    if node.op_type == "Dropout":
        _only_first_output_used(context, node)
    x = context.tensor(node)
    context.add(node, "identity", [x], x.layout, x.chw, attrs={"was": node.op_type})


def _softmax(context: _Context, node) -> None:
    x = context.tensor(node)
    axis = int(_attrs(node).get("axis", -1))
    rank = len(context.onnx_shape(x))
    channel = {"nchw": 1, "ncl": 1, "nhwc": 3, "flat": 1}.get(x.layout)
    if channel is None or axis % rank != channel:
        raise context.fail(node, f"softmax over axis {axis} is not supported; only over channels")
    context.add(node, "softmax", [x], x.layout, x.chw)


_HANDLERS = {
    "Conv": _conv, "MaxPool": _pool, "AveragePool": _pool, "GlobalAveragePool": _global_average_pool,
    "ReduceMean": _reduce_mean, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Gemm": _gemm, "MatMul": _matmul,
    "Add": _arithmetic, "Sub": _arithmetic, "Mul": _arithmetic, "Div": _arithmetic,
    "BatchNormalization": _batch_norm, "Relu": _relu, "Clip": _clip, "Dropout": _identity,
    "Identity": _identity, "Softmax": _softmax, "Flatten": _flatten, "Reshape": _reshape,
    "Min": _min_max, "Max": _min_max, "Transpose": _transpose, "Cast": _cast, "Pad": _pad, "Concat": _concat, "Split": _split, "Slice": _slice,
}
