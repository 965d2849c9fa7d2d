"""The float Graph: what importers produce and the converter reads.

A Graph is a list of named nodes in execution order; each reads the graph input or earlier nodes.
Every tensor is **HWC without the batch axis** (flat vectors are (1, 1, K)); parameters are
float32 numpy arrays already laid out for HWC.  Importers translate their framework's layout
(NCHW for ONNX/PyTorch) into this one, so the converter never sees a framework.

    g = Graph(nodes, input_shape=(28, 28, 1))
    y = g.run(x)                          # x: (N, H, W, C) or (H, W, C) float -> (N, *output_shape)
    y, acts = g.run(x, capture=True)      # acts: node name -> (N, H, W, C) activation, "input" too
    g2 = g.simplify()                     # fold affine (batch norm), merge pads, drop identity, ...
    g.problems()                          # the nodes that cannot be converted, with op, layer, hint

Ops (``OPS``), their params (float32) and attrs:

    conv2d            weight (KH, KW, Cin, Cout), bias (Cout,)    strides (sh, sw), padding
    depthwise_conv2d  weight (KH, KW, C*M), bias (C*M,)            strides, padding, depth_multiplier M
                                                                   (output o reads input channel o // M)
    separable_conv2d  depthwise (KH, KW, C*M), pointwise           strides, padding, depth_multiplier
                      (C*M, Cout), bias (Cout,)                    (depthwise, no bias, then 1x1 pointwise)
    dense             weight (fan_in, Cout), bias (Cout,)          -    input flattened in HWC order
    affine            scale (C,), offset (C,)                      -    y = x * scale + offset: batch norm
                                                                        (inference form), Rescaling, Mul/Add
                                                                        by constants
    relu              -                                            max_value: float or None (relu6: 6.0)
    clip              -                                            min_value, max_value (float or None)
    max_pool          -                                            pool_size (ph, pw), strides, padding,
                                                                   channel_sign: list of +1/-1 (default all
                                                                   +1; -1: that channel is a min pool)
    avg_pool          -                                            pool_size, strides, padding,
                                                                   count_include_pad: bool
    global_avg_pool   -                                            -    -> (1, 1, C)
    pad               -                                            pads (top, bottom, left, right), zeros
    concat            -                                            -    2+ inputs of equal H, W; channels
                                                                        follow each other in input order
    slice_channels    -                                            start, stop: channels start..stop-1
    permute_channels  -                                            order: output channel j = input order[j]
    flatten           -                                            -    -> (1, 1, H*W*C), HWC order
    reshape           -                                            shape (H, W, C), HWC row-major order
    add               -                                            -    2 or more inputs of equal shape
    identity          -                                            -    dropout and identity
    softmax           -                                            -    over the channel axis
    unsupported       -                                            op, layer, hint, shape (H, W, C): a
                                                                   source op that cannot be converted

Grouped convolutions (1 < groups < Cin) are imported as a ``conv2d`` whose weight is block-diagonal
over the groups (exact, just not compact); ``groups == Cin`` (PyTorch) and Keras' depth_multiplier
are ``depthwise_conv2d`` with ``depth_multiplier`` M.

Padding (``padding`` attr) is ``"same"`` (TensorFlow: out = ceil(H / s), the odd padding pixel goes
after), ``"valid"`` (no padding) or explicit ``(top, bottom, left, right)`` as ONNX and PyTorch give
it; the integer layers take all three (docs/semantics.md, "Geometry").  Padding is zero for convs;
pools never read padded taps (max ignores them, avg divides by the in-bounds count unless
``count_include_pad``).  ``simplify`` rewrites explicit pads to a mode only where the mode computes
the same (same output size, same top and left padding: ``equivalent_padding_mode``) and otherwise
keeps them explicit.  PyTorch's / ONNX's ``ceil_mode`` is explicit extra bottom/right padding
(``ceil_mode_pads``).

``unsupported`` nodes keep a model whose ops are not all convertible in one graph, so every problem
can be listed at once (``Graph.problems()``); running one raises a GraphError naming it.

Metadata keys the importers and ``simplify`` set besides provenance: ``final_softmax_dropped`` (the
name of the final softmax simplify removed), ``import_stopped`` (why an importer stopped early: an
unsupported op whose output shape it could not know; the graph then ends at the last node made),
``input_layout`` / ``input_dtype`` (ONNX: NCHW, NHWC, NCL or NC; uint8 for a tf2onnx uint8 input).
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
    "depthwise_conv2d": "depthwise 2-D convolution, depth multiplier M (output o reads input o // M)",
    "separable_conv2d": "depthwise (multiplier M, no bias) then 1x1 pointwise convolution",
    "dense": "fully connected on the HWC-flattened input",
    "affine": "per-channel x * scale + offset (batch norm, rescaling, constant mul/add)",
    "relu": "max(x, 0), clipped at max_value if set",
    "clip": "min(max(x, min_value), max_value), either bound None",
    "max_pool": "max pooling (min pooling on channels whose channel_sign is -1)",
    "avg_pool": "average pooling",
    "global_avg_pool": "mean over height and width",
    "pad": "constant zero padding (top, bottom, left, right)",
    "concat": "channel concatenation of 2 or more inputs of equal height and width",
    "slice_channels": "channels start .. stop - 1",
    "permute_channels": "output channel j = input channel order[j]",
    "flatten": "to (1, 1, H*W*C) in HWC order",
    "reshape": "to attrs['shape'] (H, W, C) in HWC order",
    "add": "elementwise sum of 2 or more inputs",
    "identity": "no-op (dropout, identity)",
    "softmax": "softmax over channels",
    "unsupported": "a source op that cannot be converted (attrs op, layer, hint, shape)",
}
SYNAPTIC_OPS = ("conv2d", "depthwise_conv2d", "separable_conv2d", "dense")
SPATIAL_OPS = ("conv2d", "depthwise_conv2d", "separable_conv2d", "max_pool", "avg_pool")
POOL_OPS = ("max_pool", "avg_pool")
PADDING_MODES = ("same", "valid")
MULTI_INPUT_OPS = ("add", "concat", "unsupported")


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


def ceil_mode_pads(in_hw, kernel_hw, strides, pads) -> tuple[tuple[int, int, int, int], bool]:
    """Explicit pads of a pool with ``ceil_mode`` (PyTorch, ONNX): extra bottom/right padding so that
    floor division gives the ceil-mode output size, with PyTorch's rule that a window starting in the
    bottom/right padding is dropped.  Returns (pads, overhang): overhang says that some window reaches
    past the given padding (where PyTorch's count_include_pad divisor is not PH * PW any more)."""
    top, bottom, left, right = (int(p) for p in pads)
    new_after, overhang = [], False
    for size, k, s, before, after in ((in_hw[0], kernel_hw[0], strides[0], top, bottom),
                                      (in_hw[1], kernel_hw[1], strides[1], left, right)):
        span = size + before + after - k
        out = -(-span // s) + 1
        if (out - 1) * s >= size + before:
            out -= 1
        extra = max(0, (out - 1) * s + k - (size + before + after))
        overhang = overhang or extra > 0
        new_after.append(after + extra)
    return (top, new_after[0], left, new_after[1]), overhang


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


def _multiplier(node: Node) -> int:
    value = int(node.attrs.get("depth_multiplier", 1))
    if value < 1:
        raise GraphError(f"{node.where()}: depth_multiplier must be >= 1, got {value}")
    return value


def infer_shape(node: Node, input_shapes: list[tuple]) -> tuple[int, int, int]:
    """Check `node` against its input shapes (HWC) and return its output shape (HWC)."""
    op = node.op
    if op not in OPS:
        raise GraphError(f"{node.where()}: unknown op {op!r}; known ops: {', '.join(OPS)}")
    if op in MULTI_INPUT_OPS:
        return _infer_multi_input(node, input_shapes)
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
        multiplier = _multiplier(node)
        if weight.shape[2] != c * multiplier:
            raise GraphError(f"{node.where()}: weight {weight.shape} has {weight.shape[2]} output channels, "
                             f"the input {shape} times depth_multiplier {multiplier} makes {c * multiplier}")
        _vector(node, "bias", c * multiplier)
        return (*_spatial_output(node, shape, weight.shape[:2]), c * multiplier)
    if op == "separable_conv2d":
        depthwise = _param(node, "depthwise", 3)
        pointwise = _param(node, "pointwise", 2)
        mid = c * _multiplier(node)
        if depthwise.shape[2] != mid or pointwise.shape[0] != mid:
            raise GraphError(f"{node.where()}: depthwise {depthwise.shape} / pointwise {pointwise.shape} "
                             f"do not match the {c} input channels times depth_multiplier {_multiplier(node)}")
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
    if op == "max_pool":
        sign = node.attrs.get("channel_sign")
        if sign is not None and (len(sign) != c or any(int(v) not in (-1, 1) for v in sign)):
            raise GraphError(f"{node.where()}: channel_sign must be {c} values of +1 or -1, got {list(sign)}")
        return (*_spatial_output(node, shape, _pair(node, "pool_size")), c)
    if op == "avg_pool":
        return (*_spatial_output(node, shape, _pair(node, "pool_size")), c)
    if op == "global_avg_pool":
        return (1, 1, c)
    if op == "pad":
        pads = node.attrs.get("pads")
        if pads is None or len(pads) != 4 or any(int(p) < 0 for p in pads):
            raise GraphError(f"{node.where()}: attr 'pads' must be 4 non-negative ints (top, bottom, left, "
                             f"right), got {pads!r}")
        top, bottom, left, right = (int(p) for p in pads)
        return (h + top + bottom, w + left + right, c)
    if op == "slice_channels":
        start, stop = int(node.attrs.get("start", 0)), int(node.attrs.get("stop", c))
        if not 0 <= start < stop <= c:
            raise GraphError(f"{node.where()}: channels {start}..{stop} are not a non-empty range "
                             f"of the input's {c}")
        return (h, w, stop - start)
    if op == "permute_channels":
        order = [int(v) for v in node.attrs.get("order", ())]
        if sorted(order) != list(range(c)):
            raise GraphError(f"{node.where()}: order must be a permutation of the {c} input channels, got {order}")
        return shape
    if op == "clip":
        low, high = node.attrs.get("min_value"), node.attrs.get("max_value")
        if low is not None and high is not None and float(low) > float(high):
            raise GraphError(f"{node.where()}: min_value {low} is above max_value {high}")
        return shape
    if op == "flatten":
        return (1, 1, h * w * c)
    if op == "reshape":
        target = tuple(int(v) for v in node.attrs.get("shape", ()))
        if len(target) != 3 or int(np.prod(target)) != h * w * c:
            raise GraphError(f"{node.where()}: reshape target {target} must be (H, W, C) with "
                             f"{h * w * c} elements like the input {shape}")
        return target
    return shape  # relu, identity, softmax


def _infer_multi_input(node: Node, input_shapes: list[tuple]) -> tuple[int, int, int]:
    if node.op == "add":
        if len(input_shapes) < 2 or any(s != input_shapes[0] for s in input_shapes):
            raise GraphError(f"{node.where()}: add needs 2 or more inputs of equal shape, got {input_shapes}")
        return input_shapes[0]
    if node.op == "concat":
        if len(input_shapes) < 2 or any(s[:2] != input_shapes[0][:2] for s in input_shapes):
            raise GraphError(f"{node.where()}: concat needs 2 or more inputs of equal height and width, "
                             f"got {input_shapes}")
        return (*input_shapes[0][:2], sum(s[2] for s in input_shapes))
    shape = tuple(int(v) for v in node.attrs.get("shape") or ())  # unsupported
    if len(shape) != 3 or min(shape) < 1:
        raise GraphError(f"{node.where()}: an unsupported node needs attr 'shape' (H, W, C), its output "
                         f"shape, got {node.attrs.get('shape')!r}")
    return shape


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

    def problems(self) -> list[dict]:
        """Every ``unsupported`` node, in graph order, as a dict: node, op (the framework's op type),
        layer (the framework's own name), hint (what to change), source, shape.  When the importer
        had to stop early (``metadata["import_stopped"]``) a last entry says so: op "import stopped",
        node the last node made (the graph is only the part before it)."""
        found = [{"node": node.name, "op": node.attrs.get("op", "?"), "layer": node.attrs.get("layer", node.name),
                  "hint": node.attrs.get("hint", ""), "source": node.source, "shape": self.shapes[node.name]}
                 for node in self.nodes if node.op == "unsupported"]
        if self.metadata.get("import_stopped"):
            found.append({"node": self.output, "op": "import stopped", "layer": "",
                          "hint": str(self.metadata["import_stopped"]), "source": "", "shape": self.output_shape})
        return found

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
                 drop_flatten: bool = True, resolve_padding: bool = True, merge_pads: bool = True) -> "Graph":
        """The graph the converter maps onto integer layers; the float output is unchanged
        (up to float rounding), except that a final softmax is dropped (argmax unchanged; noted in
        ``metadata["final_softmax_dropped"]``).

        In order: remove identity/dropout; drop a final softmax; merge relu/clip chains, and clip(0, max)
        becomes relu; merge pad
        nodes into the padding of the convs/pools that read them; merge affine chains, move affines
        before the pools that follow a synaptic node and fold each into the conv/depthwise/separable/
        dense node before it; remove flatten/reshape-to-flat nodes that only feed dense nodes; fold
        the affines left into the dense / unpadded conv nodes that read them; fuse depthwise -> 1x1
        conv into separable_conv2d; name explicit padding by its mode where equivalent (explicit pads
        otherwise stay); drop unused nodes.  Affines that fold nowhere stay (the converter makes a
        layer of them); unsupported nodes stay.
        """
        graph = self.copy()
        graph = remove_identity(graph)
        if drop_softmax:
            graph = drop_final_softmax(graph)
        graph = clip_to_relu(merge_clip_chains(graph))
        if merge_pads:
            graph = merge_pad_nodes(graph)
        if fold_affine:
            graph = merge_affine_chains(graph)
            graph = fold_affine_nodes(move_affine_before_pools(graph))
        if drop_flatten:
            graph = drop_flatten_before_dense(graph)
        if fold_affine:
            graph = fold_affine_forward(graph)
        if fuse_separable:
            graph = fuse_separable_nodes(graph)
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


def _depthwise(x, weight, strides, pads, multiplier: int = 1):
    win = _windows(x, weight.shape[:2], strides, pads)               # (N, OH, OW, C, KH, KW)
    if multiplier > 1:
        win = np.repeat(win, multiplier, axis=3)                      # output o reads input o // M
    return np.einsum("nhwcij,ijc->nhwc", win, weight, optimize=True)


def _depthwise_conv2d(node, x):
    weight = np.asarray(node.params["weight"], np.float32)           # (KH, KW, C*M)
    strides, pads = _geometry(node, x, weight.shape[:2])
    y = _depthwise(x, weight, strides, pads, int(node.attrs.get("depth_multiplier", 1)))
    return y + np.asarray(node.params["bias"], np.float32)


def _separable_conv2d(node, x):
    depthwise = np.asarray(node.params["depthwise"], np.float32)     # (KH, KW, C*M)
    strides, pads = _geometry(node, x, depthwise.shape[:2])
    mid = _depthwise(x, depthwise, strides, pads, int(node.attrs.get("depth_multiplier", 1)))
    return mid @ np.asarray(node.params["pointwise"], np.float32) + np.asarray(node.params["bias"], np.float32)


def _dense(node, x):
    flat = x.reshape(len(x), -1)                                      # HWC order
    y = flat @ np.asarray(node.params["weight"], np.float32) + np.asarray(node.params["bias"], np.float32)
    return y.reshape(len(x), 1, 1, -1)


def _max_pool(node, x):
    size = _pair(node, "pool_size")
    strides, pads = _geometry(node, x, size)
    sign = np.asarray(node.attrs.get("channel_sign") or np.ones(x.shape[3]), np.float32)
    return sign * _windows(sign * x, size, strides, pads, value=-np.inf).max(axis=(4, 5))


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


def _clip(node, x):
    low, high = node.attrs.get("min_value"), node.attrs.get("max_value")
    y = x if low is None else np.maximum(x, np.float32(low))
    return y if high is None else np.minimum(y, np.float32(high))


def _softmax(node, x):
    shifted = x - x.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def _unsupported(node, xs):
    raise GraphError(f"{node.where()}: cannot be run: {node.attrs.get('op', '?')} "
                     f"{node.attrs.get('layer', '')!r} is not supported"
                     f"{'; ' + node.attrs['hint'] if node.attrs.get('hint') else ''}")


_SINGLE_INPUT = {
    "conv2d": _conv2d,
    "depthwise_conv2d": _depthwise_conv2d,
    "separable_conv2d": _separable_conv2d,
    "dense": _dense,
    "affine": lambda node, x: x * np.asarray(node.params["scale"], np.float32)
    + np.asarray(node.params["offset"], np.float32),
    "relu": _relu,
    "clip": _clip,
    "max_pool": _max_pool,
    "avg_pool": _avg_pool,
    "global_avg_pool": lambda node, x: x.mean(axis=(1, 2), keepdims=True),
    "pad": lambda node, x: _pad(x, tuple(int(p) for p in node.attrs["pads"])),
    "slice_channels": lambda node, x: x[..., int(node.attrs.get("start", 0)):int(node.attrs.get("stop", x.shape[3]))],
    "permute_channels": lambda node, x: x[..., [int(v) for v in node.attrs["order"]]],
    "flatten": lambda node, x: x.reshape(len(x), 1, 1, -1),
    "reshape": lambda node, x: x.reshape(len(x), *node.attrs["shape"]),
    "identity": lambda node, x: x,
    "softmax": _softmax,
}


def _run_node(node: Node, xs: list[np.ndarray]) -> np.ndarray:
    if node.op == "add":
        return np.sum(xs, axis=0)
    if node.op == "concat":
        return np.concatenate(xs, axis=3)
    if node.op == "unsupported":
        return _unsupported(node, xs)
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
    """Remove identity (dropout) nodes and flatten/reshape nodes that keep their input's shape,
    connecting their readers to their input."""
    for node in list(graph.nodes):
        input_is_output = node.name == graph.output and node.inputs[0] == graph.input_name
        no_op = node.op == "identity" or (node.op in ("flatten", "reshape")
                                          and graph.shapes[node.name] == graph.shapes[node.inputs[0]])
        if no_op and not input_is_output:  # a graph must keep at least one node
            graph = _without(graph, node, node.inputs[0])
    return graph


def drop_final_softmax(graph: Graph) -> Graph:
    """Make the softmax's input the output when the output is a softmax (argmax is unchanged); the
    dropped node's name is kept in ``metadata["final_softmax_dropped"]`` so the converter can say so."""
    out = graph.node(graph.output)
    if out.op == "softmax" and out.inputs[0] != graph.input_name:
        graph = graph.replace(output=out.inputs[0], metadata={**graph.metadata, "final_softmax_dropped": out.name})
    return graph


def _clip_bounds(node: Node) -> tuple[float, float]:
    if node.op == "relu":
        low, high = 0.0, node.attrs.get("max_value")
    else:
        low, high = node.attrs.get("min_value"), node.attrs.get("max_value")
    return (-np.inf if low is None else float(low)), (np.inf if high is None else float(high))


def merge_clip_chains(graph: Graph) -> Graph:
    """relu/clip -> relu/clip (the first read only by the second): one clip with the tighter bounds
    (tf2onnx writes ReLU(max_value=6) as Relu, Min, Max)."""
    for node in list(graph.nodes):
        if node.op not in ("relu", "clip") or not _sole_reader(graph, node.inputs[0]):
            continue
        first = graph.node(node.inputs[0])
        if first.op not in ("relu", "clip"):
            continue
        (low1, high1), (low2, high2) = _clip_bounds(first), _clip_bounds(node)
        low, high = max(low1, low2), min(high1, high2)
        if low > high:
            continue
        node.op, node.inputs = "clip", first.inputs
        node.attrs = {"min_value": None if low == -np.inf else low, "max_value": None if high == np.inf else high}
        graph = graph.replace([n for n in graph.nodes if n is not first])
    return graph


def clip_to_relu(graph: Graph) -> Graph:
    """A clip with min_value 0 is a (bounded) relu; a clip without bounds is nothing."""
    for node in graph.nodes:
        if node.op == "clip" and node.attrs.get("min_value") is not None and float(node.attrs["min_value"]) == 0.0:
            high = node.attrs.get("max_value")
            node.op, node.attrs = "relu", {"max_value": None if high is None else float(high), "was": "clip"}
        elif node.op == "clip" and node.attrs.get("min_value") is None and node.attrs.get("max_value") is None:
            node.op, node.attrs = "identity", {"was": "clip"}
    return remove_identity(graph.replace(graph.nodes))


def _kernel_hw(node: Node) -> tuple[int, int]:
    if node.op in POOL_OPS:
        return _pair(node, "pool_size")
    return tuple(np.asarray(node.params["depthwise" if node.op == "separable_conv2d" else "weight"]).shape[:2])


def _node_pads(graph: Graph, node: Node) -> tuple[int, int, int, int]:
    return pads_of(node.attrs.get("padding", "valid"), graph.shapes[node.inputs[0]][:2], _kernel_hw(node),
                   _pair(node, "strides", 1))


def every_window_in_bounds(pads, in_hw, kernel_hw, strides) -> bool:
    """True when every window holds at least one tap inside the input (docs/semantics.md, Geometry)."""
    top, bottom, left, right = pads
    out_h, out_w = output_hw(pads, in_hw, kernel_hw, strides)
    return (top < kernel_hw[0] and left < kernel_hw[1] and (out_h - 1) * strides[0] - top < in_hw[0]
            and (out_w - 1) * strides[1] - left < in_hw[1])


def _is_non_negative(graph: Graph, name: str) -> bool:
    if name == graph.input_name:
        return False
    node = graph.node(name)
    if node.op == "relu":
        return True
    return node.op == "clip" and node.attrs.get("min_value") is not None and float(node.attrs["min_value"]) >= 0


def _pad_merged_into(graph: Graph, pad: Node, reader: Node):
    """The reader's explicit padding with the pad node's zeros merged in, or None where not exact."""
    in_hw = graph.shapes[pad.inputs[0]][:2]
    own = _node_pads(graph, reader)
    merged = tuple(a + b for a, b in zip((int(p) for p in pad.attrs["pads"]), own))
    if reader.op == "max_pool":
        signs = reader.attrs.get("channel_sign") or []
        if not _is_non_negative(graph, pad.inputs[0]) or any(int(s) < 0 for s in signs):
            return None  # padded taps are ignored, the pad's zeros are not: equal only for inputs >= 0
    if reader.op == "avg_pool" and not reader.attrs.get("count_include_pad", False) and any(own):
        return None      # its own padding is not counted, the pad's zeros are
    if not every_window_in_bounds(merged, in_hw, _kernel_hw(reader), _pair(reader, "strides", 1)):
        return None
    return merged


def merge_pad_nodes(graph: Graph) -> Graph:
    """Merge each pad node into the padding of the convs and pools that read it, when all its readers
    can take it exactly (convs always; a max pool only when the input is >= 0, e.g. after a relu; an
    avg pool then counts padding, which it may only if its own padding was counted or absent)."""
    for node in list(graph.nodes):
        if node.op != "pad" or node.name == graph.output:
            continue
        readers = graph.consumers(node.name)
        merged = [_pad_merged_into(graph, node, r) if r.op in SPATIAL_OPS else None for r in readers]
        if not readers or any(m is None for m in merged):
            continue
        for reader, pads in zip(readers, merged):
            reader.attrs["padding"] = pads
            if reader.op == "avg_pool":
                reader.attrs["count_include_pad"] = True
            reader.attrs["merged_pad"] = [*reader.attrs.get("merged_pad", []), node.name]
        graph = _without(graph, node, node.inputs[0])
    return graph


def _affine_arrays(node: Node) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(node.params["scale"], np.float64), np.asarray(node.params["offset"], np.float64)


def _sole_reader(graph: Graph, name: str) -> bool:
    """`name` is a node (not the input, not the output) read by exactly one node."""
    return name != graph.input_name and name != graph.output and len(graph.consumers(name)) == 1


def merge_affine_chains(graph: Graph) -> Graph:
    """affine -> affine (the first read only by the second): one affine."""
    for node in list(graph.nodes):
        if node.op != "affine" or not _sole_reader(graph, node.inputs[0]):
            continue
        first = graph.node(node.inputs[0])
        if first.op != "affine":
            continue
        (s1, o1), (s2, o2) = _affine_arrays(first), _affine_arrays(node)
        node.params = {"scale": (s1 * s2).astype(np.float32), "offset": (o1 * s2 + o2).astype(np.float32)}
        node.inputs = first.inputs
        graph = graph.replace([n for n in graph.nodes if n is not first])
    return graph


def fold_affine_nodes(graph: Graph) -> Graph:
    """Fold each affine node into the conv/depthwise/separable/dense node before it, when that node
    feeds only the affine: weight *= scale per output channel, bias = bias * scale + offset."""
    for node in list(graph.nodes):
        if node.op != "affine" or not _sole_reader(graph, node.inputs[0]):
            continue
        producer = graph.node(node.inputs[0])
        if producer.op not in SYNAPTIC_OPS:
            continue
        scale, offset = _affine_arrays(node)
        key = "pointwise" if producer.op == "separable_conv2d" else "weight"
        producer.params[key] = (np.asarray(producer.params[key], np.float64) * scale).astype(np.float32)
        producer.params["bias"] = (np.asarray(producer.params["bias"], np.float64) * scale + offset).astype(np.float32)
        producer.attrs["folded"] = [*producer.attrs.get("folded", []), node.name]
        graph = _without(graph, node, producer.name)
    return graph


def move_affine_before_pools(graph: Graph) -> Graph:
    """synaptic -> pool -> affine becomes synaptic -> affine -> pool (then fold_affine_nodes folds it):
    exact for a max pool per channel (a negative scale turns the channel's max into a min:
    channel_sign -1), for global average pooling, and for an avg pool; through an avg pool that counts
    padded taps (count_include_pad with padding) only the scale moves and the offset stays after it."""
    for node in list(graph.nodes):
        if node.op != "affine" or not _sole_reader(graph, node.inputs[0]):
            continue
        pool = graph.node(node.inputs[0])
        if pool.op not in (*POOL_OPS, "global_avg_pool") or not _sole_reader(graph, pool.inputs[0]) \
                or graph.node(pool.inputs[0]).op not in SYNAPTIC_OPS:
            continue
        scale, offset = _affine_arrays(node)
        keep_offset = pool.op == "avg_pool" and pool.attrs.get("count_include_pad", False) \
            and any(_node_pads(graph, pool)) and np.any(offset != 0)
        if keep_offset and np.all(scale == 1):
            continue
        if pool.op == "max_pool":
            sign = np.asarray(pool.attrs.get("channel_sign") or np.ones(len(scale)), np.int64)
            pool.attrs["channel_sign"] = [int(v) for v in np.where(scale < 0, -sign, sign)]
        moved_offset = np.zeros_like(offset) if keep_offset else offset
        moved = Node(name=node.name + "/scale" if keep_offset else node.name, op="affine", inputs=pool.inputs,
                     params={"scale": scale.astype(np.float32), "offset": moved_offset.astype(np.float32)},
                     attrs={"moved_before": pool.name}, source=node.source)
        output = graph.output
        if keep_offset:
            node.params["scale"] = np.ones_like(scale, dtype=np.float32)
        else:  # the affine's readers read the pool now
            for n in graph.nodes:
                n.inputs = tuple(pool.name if i == node.name else i for i in n.inputs)
            output = pool.name if output == node.name else output
        pool.inputs = (moved.name,)
        nodes = []
        for n in graph.nodes:
            if n is pool:
                nodes.append(moved)
            if n is not node or keep_offset:
                nodes.append(n)
        graph = graph.replace(nodes, output=output)
    return graph


def _takes_affine_forward(graph: Graph, reader: Node) -> bool:
    if reader.op == "dense":
        return True
    return reader.op in ("conv2d", "depthwise_conv2d", "separable_conv2d") and not any(_node_pads(graph, reader))


def _fold_affine_into_reader(graph: Graph, affine: Node, reader: Node) -> None:
    scale, offset = _affine_arrays(affine)
    h, w, _ = graph.shapes[affine.name]
    bias = np.asarray(reader.params["bias"], np.float64)
    if reader.op == "dense":
        weight = np.asarray(reader.params["weight"], np.float64)                 # (H*W*C, Cout), HWC rows
        reader.params["weight"] = weight * np.tile(scale, h * w)[:, None]
        reader.params["bias"] = bias + np.tile(offset, h * w) @ weight
    elif reader.op == "conv2d":
        weight = np.asarray(reader.params["weight"], np.float64)                 # (KH, KW, Cin, Cout)
        reader.params["weight"] = weight * scale[None, None, :, None]
        reader.params["bias"] = bias + np.einsum("ijco,c->o", weight, offset)
    else:
        multiplier = int(reader.attrs.get("depth_multiplier", 1))
        key = "weight" if reader.op == "depthwise_conv2d" else "depthwise"
        weight = np.asarray(reader.params[key], np.float64)                      # (KH, KW, C*M)
        reader.params[key] = weight * np.repeat(scale, multiplier)
        constant = weight.sum(axis=(0, 1)) * np.repeat(offset, multiplier)       # (C*M,)
        reader.params["bias"] = bias + (constant if key == "weight"
                                        else constant @ np.asarray(reader.params["pointwise"], np.float64))
    for key in list(reader.params):
        reader.params[key] = np.asarray(reader.params[key], np.float32)
    reader.attrs["folded_input"] = [*reader.attrs.get("folded_input", []), affine.name]


def fold_affine_forward(graph: Graph) -> Graph:
    """Fold an affine that is left (e.g. a batch norm after a relu) into the nodes that read it when
    all of them are dense or unpadded convs: the scale into their input-channel weights, the offset
    (times the weights) into their bias.  A padded conv reads zeros, not the offset, at the border,
    so there the affine stays."""
    for node in list(graph.nodes):
        if node.op != "affine" or node.name == graph.output:
            continue
        readers = graph.consumers(node.name)
        if not readers or not all(_takes_affine_forward(graph, r) for r in readers):
            continue
        for reader in readers:
            _fold_affine_into_reader(graph, node, reader)
        graph = _without(graph, node, node.inputs[0])
    return graph


def fuse_separable_nodes(graph: Graph) -> Graph:
    """Fuse depthwise_conv2d -> 1x1 stride-1 unpadded conv2d (nothing between, the depthwise feeding
    only the conv) into separable_conv2d; the depthwise bias moves through the pointwise weights."""
    for node in list(graph.nodes):
        if node.op != "conv2d" or not _sole_reader(graph, node.inputs[0]):
            continue
        weight = np.asarray(node.params["weight"])
        if weight.shape[:2] != (1, 1) or _pair(node, "strides", 1) != (1, 1) or any(_node_pads(graph, node)):
            continue
        producer = graph.node(node.inputs[0])
        if producer.op != "depthwise_conv2d":
            continue
        pointwise = weight[0, 0].astype(np.float64)                    # (C*M, Cout)
        bias = np.asarray(node.params["bias"], np.float64) + np.asarray(producer.params["bias"], np.float64) @ pointwise
        fused = Node(name=node.name, op="separable_conv2d", inputs=producer.inputs,
                     attrs={"strides": producer.attrs.get("strides", (1, 1)),
                            "padding": producer.attrs.get("padding", "valid"),
                            "depth_multiplier": int(producer.attrs.get("depth_multiplier", 1)),
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
    """Name padding by its mode where one computes the same (module doc's rule): all-zero pads become
    'valid', explicit pads equal to 'same' become 'same'; all other explicit pads stay explicit."""
    for node in graph.nodes:
        if node.op not in SPATIAL_OPS or node.attrs.get("padding", "valid") == "valid":
            continue
        in_hw = graph.shapes[node.inputs[0]][:2]
        kernel_hw, strides = _kernel_hw(node), _pair(node, "strides", 1)
        pads = pads_of(node.attrs["padding"], in_hw, kernel_hw, strides)
        mode = equivalent_padding_mode(pads, in_hw, kernel_hw, strides, ("valid", "same"))
        if mode is not None:
            node.attrs["padding"] = mode
        elif not isinstance(node.attrs["padding"], str):
            node.attrs["padding"] = pads
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
           "output_hw", "equivalent_padding_mode", "ceil_mode_pads", "every_window_in_bounds",
           "block_diagonal_conv_weight"]
