"""The float Graph: what importers produce and the converter reads.

A Graph is a list of named nodes in execution order; each reads the graph input or earlier nodes.
Every tensor is **HWC without the batch axis** (flat vectors are (1, 1, K)); parameters are
float32 numpy arrays already laid out for HWC.  Importers translate their framework's layout
(NCHW for ONNX/PyTorch) into this one, so the converter never sees a framework.

    g = Graph(nodes, input_shape=(28, 28, 1))
    y = g.run(x)                          # x: (N, H, W, C) or (H, W, C) float -> (N, *output_shape)
    y, acts = g.run(x, capture=True)      # acts: node name -> (N, H, W, C) activation, "input" too
    g2 = g.simplify()                     # fold affine (batch norm), drop identity and final softmax, ...

Ops (``OPS``), their params (float32) and attrs:

    conv2d            weight (KH, KW, Cin, Cout), bias (Cout,)    strides (sh, sw), padding
    depthwise_conv2d  weight (KH, KW, C), bias (C,)                strides, padding   (channel multiplier 1)
    separable_conv2d  depthwise (KH, KW, C), pointwise (C, Cout),  strides, padding   (depthwise, no bias,
                      bias (Cout,)                                                     then 1x1 pointwise)
    dense             weight (fan_in, Cout), bias (Cout,)          -    input flattened in HWC order
    affine            scale (C,), offset (C,)                      -    y = x * scale + offset: batch norm
                                                                        (inference form) and Rescaling
    relu              -                                            max_value: float or None (relu6: 6.0)
    max_pool          -                                            pool_size (ph, pw), strides, padding
    avg_pool          -                                            pool_size, strides, padding,
                                                                   count_include_pad: bool
    global_avg_pool   -                                            -    -> (1, 1, C)
    flatten           -                                            -    -> (1, 1, H*W*C), HWC order
    reshape           -                                            shape (H, W, C), HWC row-major order
    add               -                                            -    2 or more inputs of equal shape
    identity          -                                            -    dropout and identity
    softmax           -                                            -    over the channel axis

Grouped convolutions and depthwise convolutions with a channel multiplier > 1 are imported as a
``conv2d`` whose weight is block-diagonal over the groups (exact, just not compact).

Padding (``padding`` attr) is ``"same"`` (TensorFlow: out = ceil(H / s), the odd padding pixel goes
after), ``"valid"`` (no padding) or explicit ``(top, bottom, left, right)`` as ONNX and PyTorch give
it.  The integer layers know only same and valid, so ``resolve_padding`` (part of ``simplify``)
rewrites explicit pads that compute the same thing, by this rule: explicit pads equal a mode when
they give the same output size and the same top and left padding (the bottom/right padding only
decides how many outputs fit, so the rest of it is never read).  Anything else is a ``GraphError``
naming the node, e.g. PyTorch's ``padding=1`` on a 3x3 stride-2 convolution of an even-sized input
(that pads the top row; TensorFlow's same pads only the bottom).  Pools are valid-only in the
integer layers; a pool's padding resolves only to ``"valid"``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import GraphError  # edgesnn.graph.GraphError stays importable
from .layers import same_padding

OPS = {
    "conv2d": "2-D convolution",
    "depthwise_conv2d": "depthwise 2-D convolution, channel multiplier 1",
    "separable_conv2d": "depthwise (no bias) then 1x1 pointwise convolution",
    "dense": "fully connected on the HWC-flattened input",
    "affine": "per-channel x * scale + offset (batch norm, rescaling)",
    "relu": "max(x, 0), clipped at max_value if set",
    "max_pool": "max pooling",
    "avg_pool": "average pooling",
    "global_avg_pool": "mean over height and width",
    "flatten": "to (1, 1, H*W*C) in HWC order",
    "reshape": "to attrs['shape'] (H, W, C) in HWC order",
    "add": "elementwise sum of 2 or more inputs",
    "identity": "no-op (dropout, identity)",
    "softmax": "softmax over channels",
}
SYNAPTIC_OPS = ("conv2d", "depthwise_conv2d", "separable_conv2d", "dense")
SPATIAL_OPS = ("conv2d", "depthwise_conv2d", "separable_conv2d", "max_pool", "avg_pool")
PADDING_MODES = ("same", "valid")


@dataclass(eq=False)
class Node:
    """One op of the Graph.  ``source`` says where it came from, for messages ("keras Conv2D 'c1'")."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    source: str = ""

    def where(self) -> str:
        return f"node {self.name!r} ({self.op}{', from ' + self.source if self.source else ''})"


# -- geometry ------------------------------------------------------------------------------------


def pads_of(padding, in_hw: tuple[int, int], kernel_hw: tuple[int, int],
            strides: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding of a padding attr on an input of size in_hw."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        top, bottom = same_padding(in_hw[0], kernel_hw[0], strides[0])
        left, right = same_padding(in_hw[1], kernel_hw[1], strides[1])
        return (top, bottom, left, right)
    return tuple(int(p) for p in padding)


def output_hw(padding, in_hw, kernel_hw, strides) -> tuple[int, int]:
    top, bottom, left, right = pads_of(padding, in_hw, kernel_hw, strides)
    out_h = (in_hw[0] + top + bottom - kernel_hw[0]) // strides[0] + 1
    out_w = (in_hw[1] + left + right - kernel_hw[1]) // strides[1] + 1
    return out_h, out_w


def equivalent_padding_mode(pads, in_hw, kernel_hw, strides, modes=PADDING_MODES) -> str | None:
    """The mode among `modes` that computes the same as explicit `pads`, or None (see module doc)."""
    for mode in modes:
        mode_pads = pads_of(mode, in_hw, kernel_hw, strides)
        same_origin = mode_pads[0] == pads[0] and mode_pads[2] == pads[2]
        if same_origin and output_hw(mode, in_hw, kernel_hw, strides) == output_hw(pads, in_hw, kernel_hw, strides):
            return mode
    return None


def _check_padding_attr(node: Node) -> None:
    padding = node.attrs.get("padding", "valid")
    if isinstance(padding, str):
        if padding not in PADDING_MODES:
            raise GraphError(f"{node.where()}: padding must be 'same', 'valid' or (top, bottom, left, right), "
                             f"got {padding!r}")
        return
    if len(padding) != 4 or any(int(p) < 0 for p in padding):
        raise GraphError(f"{node.where()}: explicit padding must be 4 non-negative ints "
                         f"(top, bottom, left, right), got {padding!r}")


def _pair(node: Node, key: str, default=None) -> tuple[int, int]:
    value = node.attrs.get(key, default)
    if value is None:
        raise GraphError(f"{node.where()}: attr {key!r} is required")
    if np.ndim(value) == 0:
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise GraphError(f"{node.where()}: attr {key!r} must be two positive ints, got {value!r}")
    return value


# -- shape inference -----------------------------------------------------------------------------


def _param(node: Node, key: str, ndim: int) -> np.ndarray:
    arr = node.params.get(key)
    if arr is None:
        raise GraphError(f"{node.where()}: param {key!r} is missing")
    arr = np.asarray(arr)
    if arr.ndim != ndim:
        raise GraphError(f"{node.where()}: param {key!r} must have {ndim} dims, got shape {arr.shape}")
    return arr


def _vector(node: Node, key: str, length: int) -> None:
    arr = _param(node, key, 1)
    if arr.shape[0] != length:
        raise GraphError(f"{node.where()}: param {key!r} must have {length} entries, got {arr.shape[0]}")


def _spatial_output(node: Node, shape, kernel_hw) -> tuple[int, int]:
    _check_padding_attr(node)
    strides = _pair(node, "strides", 1)
    out = output_hw(node.attrs.get("padding", "valid"), shape[:2], kernel_hw, strides)
    if min(out) < 1:
        raise GraphError(f"{node.where()}: kernel {kernel_hw} with padding {node.attrs.get('padding')!r} "
                         f"does not fit the {shape[0]}x{shape[1]} input")
    return out


def infer_shape(node: Node, input_shapes: list[tuple]) -> tuple[int, int, int]:
    """Check `node` against its input shapes (HWC) and return its output shape (HWC)."""
    op = node.op
    if op not in OPS:
        raise GraphError(f"{node.where()}: unknown op {op!r}; known ops: {', '.join(OPS)}")
    if op == "add":
        if len(input_shapes) < 2 or any(s != input_shapes[0] for s in input_shapes):
            raise GraphError(f"{node.where()}: add needs 2 or more inputs of equal shape, got {input_shapes}")
        return input_shapes[0]
    if len(input_shapes) != 1:
        raise GraphError(f"{node.where()}: {op} takes one input, got {len(input_shapes)}")
    shape = input_shapes[0]
    h, w, c = shape
    if op == "conv2d":
        weight = _param(node, "weight", 4)
        if weight.shape[2] != c:
            raise GraphError(f"{node.where()}: weight {weight.shape} expects {weight.shape[2]} input channels, "
                             f"the input {shape} has {c}")
        _vector(node, "bias", weight.shape[3])
        return (*_spatial_output(node, shape, weight.shape[:2]), weight.shape[3])
    if op == "depthwise_conv2d":
        weight = _param(node, "weight", 3)
        if weight.shape[2] != c:
            raise GraphError(f"{node.where()}: weight {weight.shape} expects {weight.shape[2]} channels, "
                             f"the input {shape} has {c}")
        _vector(node, "bias", c)
        return (*_spatial_output(node, shape, weight.shape[:2]), c)
    if op == "separable_conv2d":
        depthwise = _param(node, "depthwise", 3)
        pointwise = _param(node, "pointwise", 2)
        if depthwise.shape[2] != c or pointwise.shape[0] != c:
            raise GraphError(f"{node.where()}: depthwise {depthwise.shape} / pointwise {pointwise.shape} "
                             f"do not match the {c} input channels")
        _vector(node, "bias", pointwise.shape[1])
        return (*_spatial_output(node, shape, depthwise.shape[:2]), pointwise.shape[1])
    if op == "dense":
        weight = _param(node, "weight", 2)
        if weight.shape[0] != h * w * c:
            raise GraphError(f"{node.where()}: weight {weight.shape} expects fan_in {weight.shape[0]}, "
                             f"the input {shape} flattens to {h * w * c}")
        _vector(node, "bias", weight.shape[1])
        return (1, 1, weight.shape[1])
    if op == "affine":
        _vector(node, "scale", c)
        _vector(node, "offset", c)
        return shape
    if op in ("max_pool", "avg_pool"):
        return (*_spatial_output(node, shape, _pair(node, "pool_size")), c)
    if op == "global_avg_pool":
        return (1, 1, c)
    if op == "flatten":
        return (1, 1, h * w * c)
    if op == "reshape":
        target = tuple(int(v) for v in node.attrs.get("shape", ()))
        if len(target) != 3 or int(np.prod(target)) != h * w * c:
            raise GraphError(f"{node.where()}: reshape target {target} must be (H, W, C) with "
                             f"{h * w * c} elements like the input {shape}")
        return target
    return shape  # relu, identity, softmax


# -- the Graph -----------------------------------------------------------------------------------


class Graph:
    """A float network in HWC layout; see the module docstring for ops, params and padding."""

    def __init__(self, nodes: list[Node], input_shape: tuple, *, input_name: str = "input",
                 output: str | None = None, metadata: dict | None = None):
        self.nodes = list(nodes)
        self.input_name = input_name
        self.input_shape = tuple(int(v) for v in input_shape)
        self.metadata = dict(metadata or {})
        if not self.nodes:
            raise GraphError("a Graph needs at least one node")
        self.output = output if output is not None else self.nodes[-1].name
        self.shapes = self._check()

    def _check(self) -> dict[str, tuple]:
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise GraphError(f"input_shape must be (H, W, C) of positive ints, got {self.input_shape}")
        shapes = {self.input_name: self.input_shape}
        for node in self.nodes:
            if node.name in shapes:
                raise GraphError(f"{node.where()}: the name is used twice")
            missing = [name for name in node.inputs if name not in shapes]
            if missing:
                raise GraphError(f"{node.where()}: inputs {missing} are not the graph input "
                                 f"{self.input_name!r} or an earlier node")
            shapes[node.name] = tuple(int(v) for v in infer_shape(node, [shapes[n] for n in node.inputs]))
        if self.output not in shapes or self.output == self.input_name:
            raise GraphError(f"output {self.output!r} is not a node of the graph")
        return shapes

    # -- lookups ------------------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node named {name!r}; nodes: {[n.name for n in self.nodes]}")

    def consumers(self, name: str) -> list[Node]:
        """Nodes that read `name` (a node or the graph input)."""
        return [node for node in self.nodes if name in node.inputs]

    @property
    def output_shape(self) -> tuple:
        return self.shapes[self.output]

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        return f"Graph({len(self.nodes)} nodes, input {self.input_shape}, output {self.output!r} {self.output_shape})"

    def summary(self) -> str:
        """A table: node, op, inputs, output shape, parameter count."""
        rows = [("node", "op", "inputs", "output", "params")]
        for node in self.nodes:
            params = sum(int(np.asarray(p).size) for p in node.params.values())
            rows.append((node.name, node.op, ",".join(node.inputs), str(self.shapes[node.name]), str(params)))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows)

    def replace(self, nodes: list[Node] | None = None, **changes) -> "Graph":
        """A new Graph with other nodes and/or other input_shape, input_name, output, metadata."""
        kwargs = dict(input_shape=self.input_shape, input_name=self.input_name,
                      output=self.output, metadata=self.metadata)
        kwargs.update(changes)
        return Graph(self.nodes if nodes is None else nodes, **kwargs)

    # -- running -----------------------------------------------------------------------------------
    def run(self, x, *, capture: bool = False, batch_size: int = 64):
        """Run the float graph on `x` (N, H, W, C) or (H, W, C); returns (N, *output_shape) float32.

        With ``capture=True`` returns ``(output, activations)``: every node's output (and the input
        under ``input_name``) as (N, H, W, C) float32 arrays.  Batches are run `batch_size` at a time.
        """
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise GraphError(f"run: x must have shape (N, {', '.join(map(str, self.input_shape))}) "
                             f"or {self.input_shape}, got {x.shape}")
        chunks = [self._run_batch(x[i:i + batch_size], capture) for i in range(0, len(x), batch_size)]
        if not chunks:
            chunks = [self._run_batch(x, capture)]
        if not capture:
            return np.concatenate(chunks)
        names = [self.input_name] + [node.name for node in self.nodes]
        activations = {name: np.concatenate([chunk[name] for chunk in chunks]) for name in names}
        return activations[self.output], activations

    def _run_batch(self, x: np.ndarray, capture: bool):
        values = {self.input_name: x}
        needed = self._last_use()
        for index, node in enumerate(self.nodes):
            values[node.name] = _run_node(node, [values[name] for name in node.inputs]).astype(np.float32, copy=False)
            if not capture:  # free what no later node reads
                for name in node.inputs:
                    if needed.get(name, -1) <= index and name != self.output:
                        values.pop(name, None)
        return values if capture else values[self.output]

    def _last_use(self) -> dict[str, int]:
        last = {}
        for index, node in enumerate(self.nodes):
            for name in node.inputs:
                last[name] = index
        return last

    # -- simplification ------------------------------------------------------------------------------
    def simplify(self, *, fold_affine: bool = True, drop_softmax: bool = True, fuse_separable: bool = True,
                 drop_flatten: bool = True, resolve_padding: bool = True) -> "Graph":
        """The graph the converter maps onto integer layers; the float output is unchanged
        (up to float rounding), except that a final softmax is dropped (argmax unchanged).

        In order: remove identity/dropout; drop a final softmax; fold each affine (batch norm) into
        the conv/depthwise/separable/dense node before it; fuse depthwise -> 1x1 conv into
        separable_conv2d; remove flatten/reshape-to-flat nodes that only feed dense nodes; rewrite
        explicit padding to 'same'/'valid' (GraphError where impossible); drop unused nodes.
        """
        graph = self.copy()
        graph = remove_identity(graph)
        if drop_softmax:
            graph = drop_final_softmax(graph)
        if fold_affine:
            graph = fold_affine_nodes(graph)
        if fuse_separable:
            graph = fuse_separable_nodes(graph)
        if drop_flatten:
            graph = drop_flatten_before_dense(graph)
        if resolve_padding:
            graph = resolve_explicit_padding(graph)
        return prune_unused(graph)

    def copy(self) -> "Graph":
        return self.replace([copy.deepcopy(node) for node in self.nodes])


# -- executor: one function per op, inputs and outputs (N, H, W, C) float32 -------------------------


def _pad(x: np.ndarray, pads, value: float = 0.0) -> np.ndarray:
    top, bottom, left, right = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def _windows(x: np.ndarray, kernel_hw, strides, pads, value: float = 0.0) -> np.ndarray:
    """(N, OH, OW, C, KH, KW) view of the padded input's windows."""
    padded = _pad(x, pads, value)
    view = sliding_window_view(padded, kernel_hw, axis=(1, 2))
    return view[:, ::strides[0], ::strides[1]]


def _geometry(node: Node, x: np.ndarray, kernel_hw):
    strides = _pair(node, "strides", 1)
    pads = pads_of(node.attrs.get("padding", "valid"), x.shape[1:3], kernel_hw, strides)
    return strides, pads


def _conv2d(node, x):
    weight = np.asarray(node.params["weight"], np.float32)           # (KH, KW, Cin, Cout)
    strides, pads = _geometry(node, x, weight.shape[:2])
    win = _windows(x, weight.shape[:2], strides, pads)               # (N, OH, OW, Cin, KH, KW)
    y = np.tensordot(win, weight.transpose(2, 0, 1, 3), axes=([3, 4, 5], [0, 1, 2]))
    return y + np.asarray(node.params["bias"], np.float32)


def _depthwise(x, weight, strides, pads):
    win = _windows(x, weight.shape[:2], strides, pads)               # (N, OH, OW, C, KH, KW)
    return np.einsum("nhwcij,ijc->nhwc", win, weight, optimize=True)


def _depthwise_conv2d(node, x):
    weight = np.asarray(node.params["weight"], np.float32)           # (KH, KW, C)
    strides, pads = _geometry(node, x, weight.shape[:2])
    return _depthwise(x, weight, strides, pads) + np.asarray(node.params["bias"], np.float32)


def _separable_conv2d(node, x):
    depthwise = np.asarray(node.params["depthwise"], np.float32)     # (KH, KW, C)
    strides, pads = _geometry(node, x, depthwise.shape[:2])
    mid = _depthwise(x, depthwise, strides, pads)                     # (N, OH, OW, C)
    return mid @ np.asarray(node.params["pointwise"], np.float32) + np.asarray(node.params["bias"], np.float32)


def _dense(node, x):
    flat = x.reshape(len(x), -1)                                      # HWC order
    y = flat @ np.asarray(node.params["weight"], np.float32) + np.asarray(node.params["bias"], np.float32)
    return y.reshape(len(x), 1, 1, -1)


def _max_pool(node, x):
    size = _pair(node, "pool_size")
    strides, pads = _geometry(node, x, size)
    return _windows(x, size, strides, pads, value=-np.inf).max(axis=(4, 5))


def _avg_pool(node, x):
    size = _pair(node, "pool_size")
    strides, pads = _geometry(node, x, size)
    sums = _windows(x, size, strides, pads).sum(axis=(4, 5))
    if node.attrs.get("count_include_pad", False) or not any(pads):
        return sums / (size[0] * size[1])
    ones = np.ones((1, *x.shape[1:3], 1), np.float32)
    counts = _windows(ones, size, strides, pads).sum(axis=(4, 5))   # (1, OH, OW, 1) taps inside the input
    return sums / counts


def _relu(node, x):
    y = np.maximum(x, 0.0)
    max_value = node.attrs.get("max_value")
    return y if max_value is None else np.minimum(y, np.float32(max_value))


def _softmax(node, x):
    shifted = x - x.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


_SINGLE_INPUT = {
    "conv2d": _conv2d,
    "depthwise_conv2d": _depthwise_conv2d,
    "separable_conv2d": _separable_conv2d,
    "dense": _dense,
    "affine": lambda node, x: x * np.asarray(node.params["scale"], np.float32)
    + np.asarray(node.params["offset"], np.float32),
    "relu": _relu,
    "max_pool": _max_pool,
    "avg_pool": _avg_pool,
    "global_avg_pool": lambda node, x: x.mean(axis=(1, 2), keepdims=True),
    "flatten": lambda node, x: x.reshape(len(x), 1, 1, -1),
    "reshape": lambda node, x: x.reshape(len(x), *node.attrs["shape"]),
    "identity": lambda node, x: x,
    "softmax": _softmax,
}


def _run_node(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    if node.op == "add":
        return np.sum(xs, axis=0)
    return _SINGLE_INPUT[node.op](node, xs[0])


# -- simplification passes: each takes a Graph and returns a new one --------------------------------
# (they may modify the nodes of the graph they are given; Graph.simplify gives them a copy)


def _rewire(graph: Graph, old: str, new: str) -> tuple[list[Node], str]:
    """Nodes and output with every read of `old` replaced by `new`."""
    for node in graph.nodes:
        node.inputs = tuple(new if name == old else name for name in node.inputs)
    return graph.nodes, (new if graph.output == old else graph.output)


def _without(graph: Graph, removed: Node, replacement: str) -> Graph:
    nodes, output = _rewire(graph, removed.name, replacement)
    return graph.replace([n for n in nodes if n is not removed], output=output)


def remove_identity(graph: Graph) -> Graph:
    """Remove identity (dropout) nodes, connecting their readers to their input."""
    for node in list(graph.nodes):
        input_is_output = node.name == graph.output and node.inputs[0] == graph.input_name
        if node.op == "identity" and not input_is_output:  # a graph must keep at least one node
            graph = _without(graph, node, node.inputs[0])
    return graph


def drop_final_softmax(graph: Graph) -> Graph:
    """Make the softmax's input the output when the output is a softmax (argmax is unchanged)."""
    out = graph.node(graph.output)
    if out.op == "softmax" and out.inputs[0] != graph.input_name:
        graph = graph.replace(output=out.inputs[0])
    return graph


def fold_affine_nodes(graph: Graph) -> Graph:
    """Fold each affine node into the conv/depthwise/separable/dense node before it, when that node
    feeds only the affine: weight *= scale per output channel, bias = bias * scale + offset."""
    for node in list(graph.nodes):
        if node.op != "affine" or node.inputs[0] == graph.input_name:
            continue
        producer = graph.node(node.inputs[0])
        if producer.op not in SYNAPTIC_OPS or len(graph.consumers(producer.name)) != 1 \
                or producer.name == graph.output:
            continue
        scale = np.asarray(node.params["scale"], np.float64)
        offset = np.asarray(node.params["offset"], np.float64)
        key = "pointwise" if producer.op == "separable_conv2d" else "weight"
        producer.params[key] = (np.asarray(producer.params[key], np.float64) * scale).astype(np.float32)
        producer.params["bias"] = (np.asarray(producer.params["bias"], np.float64) * scale + offset).astype(np.float32)
        producer.attrs["folded"] = [*producer.attrs.get("folded", []), node.name]
        graph = _without(graph, node, producer.name)
    return graph


def fuse_separable_nodes(graph: Graph) -> Graph:
    """Fuse depthwise_conv2d -> 1x1 stride-1 conv2d (nothing between, the depthwise feeding only the
    conv) into separable_conv2d; the depthwise bias moves through the pointwise weights."""
    for node in list(graph.nodes):
        if node.op != "conv2d" or node.inputs[0] == graph.input_name:
            continue
        weight = np.asarray(node.params["weight"])
        pads = pads_of(node.attrs.get("padding", "valid"), graph.shapes[node.inputs[0]][:2], (1, 1), (1, 1))
        if weight.shape[:2] != (1, 1) or _pair(node, "strides", 1) != (1, 1) or any(pads):
            continue
        producer = graph.node(node.inputs[0])
        if producer.op != "depthwise_conv2d" or len(graph.consumers(producer.name)) != 1 \
                or producer.name == graph.output:
            continue
        pointwise = weight[0, 0].astype(np.float64)                    # (C, Cout)
        bias = np.asarray(node.params["bias"], np.float64) + np.asarray(producer.params["bias"], np.float64) @ pointwise
        fused = Node(name=node.name, op="separable_conv2d", inputs=producer.inputs,
                     attrs={"strides": producer.attrs.get("strides", (1, 1)),
                            "padding": producer.attrs.get("padding", "valid"),
                            "fused": [producer.name, node.name]},
                     params={"depthwise": np.asarray(producer.params["weight"], np.float32),
                             "pointwise": pointwise.astype(np.float32), "bias": bias.astype(np.float32)},
                     source=node.source)
        nodes = [fused if n is node else n for n in graph.nodes if n is not producer]
        graph = graph.replace(nodes)
    return graph


def drop_flatten_before_dense(graph: Graph) -> Graph:
    """Remove flatten nodes (and reshapes to (1, 1, K)) read only by dense nodes, which flatten anyway."""
    for node in list(graph.nodes):
        flattens = node.op == "flatten" or (node.op == "reshape" and tuple(node.attrs["shape"])[:2] == (1, 1))
        readers = graph.consumers(node.name)
        if flattens and readers and all(r.op == "dense" for r in readers) and node.name != graph.output:
            graph = _without(graph, node, node.inputs[0])
    return graph


def resolve_explicit_padding(graph: Graph) -> Graph:
    """Rewrite explicit (top, bottom, left, right) padding to 'same' or 'valid' (module doc's rule);
    GraphError naming the node where neither computes the same.  Pools resolve only to 'valid'."""
    for node in graph.nodes:
        if node.op not in SPATIAL_OPS:
            continue
        padding = node.attrs.get("padding", "valid")
        pools = node.op in ("max_pool", "avg_pool")
        if padding == "valid" or (padding == "same" and not pools):
            continue
        in_hw = graph.shapes[node.inputs[0]][:2]
        kernel_hw = _pair(node, "pool_size") if pools else np.asarray(
            node.params["depthwise" if node.op == "separable_conv2d" else "weight"]).shape[:2]
        strides = _pair(node, "strides", 1)
        pads = pads_of(padding, in_hw, kernel_hw, strides)
        modes = ("valid",) if pools else PADDING_MODES
        mode = equivalent_padding_mode(pads, in_hw, kernel_hw, strides, modes)
        if mode is None:
            wanted = " or ".join(f"{m} {pads_of(m, in_hw, kernel_hw, strides)}" for m in modes)
            raise GraphError(f"{node.where()}: padding (top, bottom, left, right) = {pads} on the "
                             f"{in_hw[0]}x{in_hw[1]} input (kernel {tuple(kernel_hw)}, strides {strides}) "
                             f"cannot be expressed by the integer layers, which know only {wanted}; "
                             f"change the source model's padding or input size")
        node.attrs["padding"] = mode
    return graph.replace(graph.nodes)


def prune_unused(graph: Graph) -> Graph:
    """Drop nodes the output does not depend on."""
    needed = {graph.output}
    for node in reversed(graph.nodes):
        if node.name in needed:
            needed.update(node.inputs)
    return graph.replace([node for node in graph.nodes if node.name in needed])


# -- building -------------------------------------------------------------------------------------


class GraphBuilder:
    """Adds nodes one at a time, checking each and tracking shapes; importers use it.

        b = GraphBuilder((28, 28, 1))
        name = b.add("conv2d", "c1", ["input"], attrs={...}, params={...}, source="onnx Conv '/c1'")
        b.shape(name)          # (H, W, C)
        graph = b.build(metadata={...})
    """

    def __init__(self, input_shape: tuple, input_name: str = "input"):
        self.input_name = input_name
        self.input_shape = tuple(int(v) for v in input_shape)
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise GraphError(f"input_shape must be (H, W, C) of positive ints, got {self.input_shape}")
        self.nodes: list[Node] = []
        self.shapes = {input_name: self.input_shape}

    def unique_name(self, base: str) -> str:
        name, index = base or "node", 1
        while name in self.shapes:
            name = f"{base}_{index}"
            index += 1
        return name

    def add(self, op: str, name: str, inputs, *, attrs: dict | None = None, params: dict | None = None,
            source: str = "") -> str:
        """Append a node (name made unique), check it, return its name."""
        params = {key: np.asarray(value, np.float32) for key, value in (params or {}).items()}
        node = Node(name=self.unique_name(name), op=op, inputs=tuple(inputs), attrs=dict(attrs or {}),
                    params=params, source=source)
        missing = [n for n in node.inputs if n not in self.shapes]
        if missing:
            raise GraphError(f"{node.where()}: inputs {missing} are not defined yet")
        self.shapes[node.name] = tuple(int(v) for v in infer_shape(node, [self.shapes[n] for n in node.inputs]))
        self.nodes.append(node)
        return node.name

    def shape(self, name: str) -> tuple:
        return self.shapes[name]

    def build(self, output: str | None = None, metadata: dict | None = None) -> Graph:
        return Graph(self.nodes, self.input_shape, input_name=self.input_name, output=output, metadata=metadata)


def block_diagonal_conv_weight(weight_groups: list[np.ndarray]) -> np.ndarray:
    """One conv2d weight (KH, KW, Cin, Cout) from per-group weights [(KH, KW, Cin_g, Cout_g), ...]:
    group g reads input channels g*Cin_g.. and writes output channels g*Cout_g.. (ONNX/Keras order)."""
    kh, kw, cin_g, cout_g = weight_groups[0].shape
    groups = len(weight_groups)
    weight = np.zeros((kh, kw, cin_g * groups, cout_g * groups), np.float32)
    for g, part in enumerate(weight_groups):
        weight[:, :, g * cin_g:(g + 1) * cin_g, g * cout_g:(g + 1) * cout_g] = part
    return weight


__all__ = ["Graph", "Node", "GraphBuilder", "GraphError", "OPS", "SYNAPTIC_OPS", "infer_shape", "pads_of",
           "output_hw", "equivalent_padding_mode", "block_diagonal_conv_weight"]
