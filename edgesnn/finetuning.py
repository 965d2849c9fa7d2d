"""Quantization-aware fine-tuning: a float Graph -> a fake-quantized torch module -> trained -> an integer Model.

    model = es.finetune("net.onnx", x_train, y_train, weight_bits=4, activation_bits=4, epochs=3,
                        input_scaling=(255, 0))
    model = es.finetune(src, x, y, schedule=[(8, 8), (4, 4), (3, 3), (2, 2)])   # the episode table of CNN2SNN

How (what was trained is what runs):

1. The source is imported and simplified exactly as es.convert does, so Keras, ONNX and torch sources all
   work: the torch module is built from the float Graph (HWC params, run here in NCHW), not from the
   source framework.
2. A post-training conversion at the episode's bits gives the *plan*: which float node each integer layer
   quantizes at (``metadata["float_nodes"]``), its activation step and zero point, and each synaptic
   layer's weight bits. The module fake-quantizes at exactly those nodes: weights symmetric per output
   channel (per tensor on the output layer) with ``round(w / step)``, the weights first clamped to a clip
   per channel that is fitted at the start of each episode (smallest squared error at its bits) and then
   learned (``weight_clips=True``; the step is ``clip / (2^(b-1) - 1)``, as the converter computes it from
   the clamped weights it is given); activations
   ``clamp(floor(x / s + 1/2) + zp, 0, 2^b - 1)`` (round half up, docs/semantics.md), dequantized as
   ``(q - zp) * s``; a separable layer's depthwise result to signed 8 bits. Rounding passes gradients
   straight through; every activation's range ``(lo, hi)`` is learned (LSQ-style, the step's gradient
   flows through the rounding).
3. Training: Adam with a cosine schedule per episode, cross-entropy (mixed with ``distillation`` of the KL
   divergence to the float model's logits at ``temperature``), a validation split, a tqdm bar.
4. The learned weights, clamped to their learned clips, go back into the float Graph and the learned ranges
   into ``es.convert(..., ranges=...)``, so the integer Model uses the trained steps. The next episode
   starts from the unclamped weights and fits its own clips.

Episodes at 3 (or 5..7) bits: weights are fake-quantized with that many levels and stored in the next
wider field the format holds (2, 4, 8); 3-bit *activations* have no integer field (the relu clamps at
2^b - 1 of 1, 2, 4 or 8 bits), so such an episode is measured on the fake-quantized module only.

Spiking (``neuron="if"``): the rate approximation of the converter's IF neuron at `timesteps` T: a
layer's output is ``clamp(floor(x * T / hi), 0, T) * hi / T`` (the spike count of a constant input,
subtractive reset), trained with straight-through gradients.

Limits: weight steps are computed on the float weights, which matches the converter when each layer's
input has one scale for all its channels (every converter tensor except a concat of layers with
different scales or a per-channel input normalization).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np

from .convert import _calibration_activations, _check_samples, _float_input, activation_range, convert, load_graph
from .graph import Graph, _depthwise, pads_of

ACTIVATION_FIELD_BITS = (1, 2, 4, 8)


# -- straight-through quantizers ---------------------------------------------------------------------

def _round_half_up(x):
    import torch

    return x + (torch.floor(x + 0.5) - x).detach()


def _round_even(x):
    import torch

    return x + (torch.round(x) - x).detach()


def _floor(x):
    import torch

    return x + (torch.floor(x) - x).detach()


def fake_quant_weight(w, bits: int, per_channel: bool, channel_axis: int = 0, clip=None):
    """The converter's symmetric weight quantization (quantize_weights) as float, straight-through."""
    return fake_quant_weight_step(w, bits, per_channel, channel_axis, clip)[0]


def fake_quant_weight_step(w, bits: int, per_channel: bool, channel_axis: int = 0, clip=None):
    """(fake-quantized weight, step per output channel, shaped to broadcast over `w`).

    The step is the converter's, ``max |w| / (2^(bits-1) - 1)`` per channel. With `clip` (a learned clip per
    channel, or one for the tensor) the weights are first clamped to ``+-min(clip, max |w|)``: the weights
    that are exported (clipped_weight) are those clamped values, whose max is the clip, so the converter's
    step from them is this step and its integers are these."""
    import torch

    qmax = (1 << (bits - 1)) - 1
    dims = [d for d in range(w.dim()) if d != channel_axis]
    top = w.detach().abs().amax(dim=dims, keepdim=True) if per_channel else w.detach().abs().max()
    if clip is not None:
        top = torch.minimum(top, torch.abs(clip).reshape(top.shape))
        w = torch.maximum(torch.minimum(w, top), -top)
    step = torch.where(top > 0, top / qmax, torch.ones_like(top))
    return torch.clamp(_round_even(w / step), -qmax - 1, qmax) * step, step


def fit_weight_clip(w: np.ndarray, bits: int, per_channel: bool, channel_axis: int = 0) -> np.ndarray:
    """The clip per channel (or one, per tensor) whose symmetric quantization at `bits` has the smallest squared
    error to `w`, searched over fractions of max |w| (at 2 bits the best ternary clip is near 0.4 max |w|)."""
    qmax = (1 << (bits - 1)) - 1
    v = np.moveaxis(np.asarray(w, np.float64), channel_axis, 0).reshape(np.shape(w)[channel_axis], -1)
    if not per_channel:
        v = v.reshape(1, -1)
    top = np.abs(v).max(axis=1)
    best, best_err = top.copy(), np.full(len(v), np.inf)
    for fraction in np.linspace(0.05, 1.0, 96):
        clip = np.maximum(top * fraction, 1e-12)[:, None]
        step = clip / qmax
        err = ((np.clip(np.round(np.clip(v, -clip, clip) / step), -qmax - 1, qmax) * step - v) ** 2).sum(axis=1)
        better = err < best_err
        best[better], best_err[better] = clip[better, 0], err[better]
    return (best if per_channel else best[:1].reshape(())).astype(np.float32)


@dataclass
class QuantPoint:
    """One activation quantization: the float node whose output an integer layer emits."""

    node: str
    layer: str
    bits: int
    lo: float
    hi: float
    ceiling: float | None = None

    @property
    def signed(self) -> bool:
        return self.lo < 0


@dataclass
class Plan:
    """Where and how the integer Model quantizes, per float node."""

    points: dict = field(default_factory=dict)          # float node -> QuantPoint
    weight_bits: dict = field(default_factory=dict)     # synaptic float node (or "<sep>/depthwise") -> bits
    per_tensor: set = field(default_factory=set)        # synaptic nodes quantized per tensor (the output layer)
    mid_scales: dict = field(default_factory=dict)      # separable node -> the depthwise stage's 8-bit step
    neuron: str = "relu"
    timesteps: int = 1
    input_scaling: tuple = (1.0, 0.0)


def plan_from_model(model, graph: Graph) -> Plan:
    """Read the quantization points of an integer Model converted from `graph` (its float_nodes metadata)."""
    meta = model.metadata
    float_nodes = meta.get("float_nodes", {})
    scales = meta.get("activation_scales", {})
    zero_points = meta.get("activation_zero_points", {})
    timesteps = int(meta.get("timesteps", 1))
    neuron = meta.get("provenance", {}).get("converter", {}).get("neuron", "relu")
    scaling = tuple(float(v) for v in meta.get("input_scaling", (1.0, 0.0)))
    plan = Plan(neuron=neuron, timesteps=timesteps, input_scaling=scaling)
    names = {n.name for n in graph.nodes}
    for layer in model.layers:
        qbits = layer_quant_bits(model, layer)
        base = layer.name
        if base in names or base.endswith("/depthwise"):
            if qbits is not None:
                plan.weight_bits[base] = qbits
            if layer.neuron == "none" and base in names:
                plan.per_tensor.add(base)
        node = float_nodes.get(layer.name)
        if node is None or layer.neuron == "none":
            continue
        scale = float(np.asarray(scales[layer.name]).ravel()[0])
        if layer.neuron == "if":
            hi, lo, bits = scale * timesteps, 0.0, 1
        else:
            bits = int(layer.activation_bits)
            zp = float(np.asarray(zero_points.get(layer.name, 0)).ravel()[0])
            lo, hi = -zp * scale, ((1 << bits) - 1 - zp) * scale
        plan.points[node] = QuantPoint(node, layer.name, bits, lo, hi, _ceiling_of(graph, node))
        if layer.kind == "separable2d":
            plan.mid_scales[layer.name] = None
    return plan


def layer_quant_bits(model, layer) -> int | None:
    """The bits a layer's weights were quantized to (3 for a 3-bit layer in a 4-bit field)."""
    if getattr(layer, "weights", None) is None:
        return None
    options = model.metadata.get("provenance", {}).get("converter", {})
    per_layer = options.get("layer_weight_bits") or {}
    if layer.name in per_layer:
        return int(per_layer[layer.name])
    if layer.inputs == ("input",) and options.get("input_weight_bits") is not None:
        return int(options["input_weight_bits"])
    return int(options.get("weight_bits", layer.weight_bits))


def _ceiling_of(graph: Graph, name: str) -> float | None:
    try:
        node = graph.node(name)
    except KeyError:
        return None
    value = node.attrs.get("max_value") if node.op in ("relu", "clip") else None
    return None if value is None else float(value)


# -- the torch module --------------------------------------------------------------------------------

def _module_classes():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class ActQuant(nn.Module):
        """clamp(round_half_up(x / s) + zp, 0, L) * s - zp * s with a learned (lo, hi); IF: floor, L = T.

        hi (and -lo of a signed range) are learned as logarithms: an update changes them by a fraction, so a
        small range is never driven through zero (where it would stay, its gradient gone)."""

        def __init__(self, point: QuantPoint, spiking: bool, timesteps: int):
            super().__init__()
            self.point = point
            self.spiking = spiking
            self.signed = point.signed
            self.levels = timesteps if spiking else (1 << point.bits) - 1
            self.log_hi = nn.Parameter(torch.tensor(math.log(max(float(point.hi), 1e-8))))
            self.log_neg_lo = nn.Parameter(torch.tensor(math.log(-float(point.lo)))) if self.signed else None
            self.enabled = True

        def set_bounds(self, lo: float, hi: float) -> None:
            with torch.no_grad():
                self.log_hi.fill_(math.log(max(hi, 1e-8)))
                if self.signed:
                    self.log_neg_lo.fill_(math.log(max(-lo, 1e-8)))

        def bounds(self):
            lo = -torch.exp(self.log_neg_lo) if self.signed else torch.zeros(())
            hi = torch.exp(self.log_hi)
            if self.point.ceiling is not None:
                hi = torch.clamp(hi, max=self.point.ceiling)
            hi = torch.maximum(hi, lo + 1e-6)
            return lo, hi

        def forward(self, x):
            if not self.enabled:
                return x
            lo, hi = self.bounds()
            step = (hi - lo) / self.levels
            if self.spiking:
                return torch.clamp(_floor(x / step), 0, self.levels) * step
            zp = torch.clamp(torch.round(-lo / step), 0, self.levels).detach() if self.signed else 0.0
            q = torch.clamp(_round_half_up(x / step) + zp, 0, self.levels)
            return (q - zp) * step

        def learned(self) -> tuple[float, float]:
            lo, hi = self.bounds()
            return float(lo.detach()), float(hi.detach())

    class GraphModule(nn.Module):
        """The float Graph as a torch module (NCHW inside), fake-quantized as `plan` says."""

        def __init__(self, graph: Graph, plan: Plan | None, weight_clips: bool = False):
            super().__init__()
            self.graph = graph
            self.plan = plan
            self.params = nn.ParameterDict()
            self.quant = nn.ModuleDict()
            self.clips = nn.ParameterDict()      # learned weight clips (weight_clips=True), per weight tensor
            self.quantize = plan is not None
            self.capture: dict | None = None
            for node in graph.nodes:
                # an input normalization (an affine node on the input) is folded into the converter's input
                # scaling and must stay positive: it is not trained (a step of Adam would flip 1/255)
                frozen = node.op == "affine" and node.inputs == (graph.input_name,)
                for key, value in node.params.items():
                    self.params[_key(node.name, key)] = nn.Parameter(
                        torch.tensor(_to_torch_layout(node, key, value)), requires_grad=not frozen)
            if plan is not None and weight_clips:
                for node, key, layer, axis in quantized_weights(graph, plan):
                    w = self.params[_key(node.name, key)].detach().numpy()
                    clip = fit_weight_clip(w, plan.weight_bits[layer], layer not in plan.per_tensor, axis)
                    self.clips[_key(node.name, key)] = nn.Parameter(torch.tensor(clip))
            if plan is not None:
                spiking = plan.neuron == "if"
                for name, point in plan.points.items():
                    self.quant[_key(name)] = ActQuant(point, spiking, plan.timesteps)

        def p(self, node, key):
            return self.params[_key(node.name, key)]

        def weight(self, node, key, layer_name=None, per_channel_axis=0):
            return self.weight_step(node, key, layer_name, per_channel_axis)[0]

        def weight_step(self, node, key, layer_name=None, per_channel_axis=0):
            w = self.p(node, key)
            name = layer_name or node.name
            if not self.quantize or name not in self.plan.weight_bits:
                return w, None
            return fake_quant_weight_step(w, self.plan.weight_bits[name], name not in self.plan.per_tensor,
                                          per_channel_axis, self.clips.get(_key(node.name, key)))

        def clipped_weight(self, node, key):
            """The float weight the converter is given: clamped to the learned clip (unchanged without one)."""
            w = self.p(node, key).detach()
            clip = self.clips.get(_key(node.name, key))
            if clip is None:
                return w
            axis = next(a for n, k, _, a in quantized_weights(self.graph, self.plan) if n is node and k == key)
            if clip.dim():
                dims = [d for d in range(w.dim()) if d != axis]
                shape = [-1 if d == axis else 1 for d in range(w.dim())]
                top = torch.minimum(w.abs().amax(dim=dims, keepdim=True), clip.detach().abs().reshape(shape))
            else:
                top = torch.minimum(w.abs().max(), clip.detach().abs())
            return torch.maximum(torch.minimum(w, top), -top)

        def source(self, name):
            """(step, zero point) of the integers holding float node `name` (None: not known here)."""
            g = self.graph
            while True:
                if name == g.input_name:
                    scale, offset = self.plan.input_scaling
                    return torch.tensor(1.0 / scale), torch.tensor(float(offset))
                if _key(name) in self.quant:
                    q = self.quant[_key(name)]
                    lo, hi = q.bounds()
                    step = ((hi - lo) / q.levels).detach()
                    zp = torch.clamp(torch.round(-lo.detach() / step), 0, q.levels) if q.signed else 0.0
                    return step, torch.as_tensor(zp, dtype=torch.float32)
                node = g.node(name)
                if node.op in ("flatten", "reshape", "identity") or (node.op == "relu" and node.attrs.get("max_value") is None):
                    name = node.inputs[0]
                    continue
                return None

        def bias(self, node, w, w_q, step, sum_dims, channel_shape, key="bias", src=None):
            """The bias as the integer layer holds it: round((b - zero point term) / acc) * acc plus the zero point
            seen through the quantized weights (the converter folds the float weights' term into the bias)."""
            b = self.p(node, key)
            if step is None:
                return b
            src = self.source(node.inputs[0]) if src is None else src
            if src is None:
                return b
            s_in, zp = src
            acc = (step.reshape(-1) * s_in)
            zp_quant = s_in * zp * w_q.sum(dim=sum_dims)   # as the converter folds it: with the quantized weights
            return _round_even((b - zp_quant) / acc) * acc + zp_quant

        def act(self, name, x):
            if self.capture is not None:
                self.capture[name] = x
            if self.quantize and _key(name) in self.quant:
                x = self.quant[_key(name)](x)
                if self.capture is not None:
                    self.capture[name + ":q"] = x
            return x

        def forward(self, x):
            g = self.graph
            values = {g.input_name: x}
            for node in g.nodes:
                xs = [values[n] for n in node.inputs]
                values[node.name] = self.act(node.name, self.run_node(node, xs))
            return values[g.output].flatten(1)

        def run_node(self, node, xs):
            op = node.op
            x = xs[0]
            if op == "conv2d":
                w, step = self.weight_step(node, "weight")
                b = self.bias(node, self.p(node, "weight"), w, step, (1, 2, 3), None)
                x = _pad_input(x, node, w.shape[2:])
                return F.conv2d(x, w, b, stride=_strides(node))
            if op == "depthwise_conv2d":
                w, step = self.weight_step(node, "weight")
                b = self.bias(node, self.p(node, "weight"), w, step, (1, 2, 3), None)
                x = _pad_input(x, node, w.shape[2:])
                return F.conv2d(x, w, b, stride=_strides(node), groups=x.shape[1])
            if op == "separable_conv2d":
                return self.separable(node, x)
            if op == "dense":
                w, step = self.weight_step(node, "weight", per_channel_axis=1)
                b = self.bias(node, self.p(node, "weight"), w, step, (0,), None)
                flat = x.permute(0, 2, 3, 1).reshape(len(x), -1)
                return (flat @ w + b)[:, :, None, None]
            if op == "affine":
                return x * self.p(node, "scale")[None, :, None, None] + self.p(node, "offset")[None, :, None, None]
            if op == "relu":
                y = torch.relu(x)
                mv = node.attrs.get("max_value")
                return y if mv is None else torch.clamp(y, max=float(mv))
            if op == "clip":
                lo, hi = node.attrs.get("min_value"), node.attrs.get("max_value")
                return torch.clamp(x, min=None if lo is None else float(lo), max=None if hi is None else float(hi))
            if op == "max_pool":
                size = _pair(node, "pool_size")
                top, bottom, left, right = pads_of(node.attrs.get("padding", "valid"), tuple(x.shape[2:]), size,
                                                   _strides(node, size))
                sign = node.attrs.get("channel_sign")
                s = torch.ones(x.shape[1]) if sign is None else torch.tensor(np.asarray(sign, np.float32))
                y = F.pad(x * s[None, :, None, None], (left, right, top, bottom), value=-math.inf)
                return F.max_pool2d(y, size, _strides(node, size)) * s[None, :, None, None]
            if op == "avg_pool":
                size = _pair(node, "pool_size")
                stride = _strides(node, size)
                top, bottom, left, right = pads_of(node.attrs.get("padding", "valid"), tuple(x.shape[2:]), size, stride)
                sums = F.avg_pool2d(F.pad(x, (left, right, top, bottom)), size, stride) * (size[0] * size[1])
                if node.attrs.get("count_include_pad", False) or not any((top, bottom, left, right)):
                    return sums / (size[0] * size[1])
                ones = F.pad(torch.ones(1, 1, *x.shape[2:]), (left, right, top, bottom))
                return sums / (F.avg_pool2d(ones, size, stride) * (size[0] * size[1]))
            if op == "global_avg_pool":
                return x.mean(dim=(2, 3), keepdim=True)
            if op == "pad":
                top, bottom, left, right = (int(v) for v in node.attrs["pads"])
                return F.pad(x, (left, right, top, bottom))
            if op == "concat":
                return torch.cat(xs, dim=1)
            if op == "add":
                return sum(xs[1:], xs[0])
            if op == "slice_channels":
                return x[:, int(node.attrs.get("start", 0)):int(node.attrs.get("stop", x.shape[1]))]
            if op == "permute_channels":
                return x[:, [int(v) for v in node.attrs["order"]]]
            if op == "flatten":
                return x.permute(0, 2, 3, 1).reshape(len(x), -1, 1, 1)
            if op == "reshape":
                h, w, c = node.attrs["shape"]
                return x.permute(0, 2, 3, 1).reshape(len(x), h, w, c).permute(0, 3, 1, 2)
            if op == "identity":
                return x
            if op == "softmax":
                return torch.softmax(x, dim=1)
            raise ValueError(f"node {node.name!r}: op {op!r} cannot be fine-tuned")

        def separable(self, node, x):
            split = self.quantize and f"{node.name}/depthwise" in self.plan.weight_bits
            dw_name = f"{node.name}/depthwise" if split else node.name
            d = self.weight(node, "depthwise", layer_name=dw_name)
            x = _pad_input(x, node, d.shape[2:])
            mid = F.conv2d(x, d, None, stride=_strides(node), groups=x.shape[1])
            src = None
            if split:
                mid = self.act(dw_name, mid)
                src = self.source(dw_name)
            elif self.quantize and self.plan.mid_scales.get(node.name):
                mid_step = self.plan.mid_scales[node.name]
                mid = torch.clamp(_round_half_up(mid / mid_step), -128, 127) * mid_step
                src = (torch.tensor(float(mid_step)), torch.tensor(0.0))
            pw, step = self.weight_step(node, "pointwise", per_channel_axis=0)        # (Cout, C*M, 1, 1)
            b = self.bias(node, self.p(node, "pointwise"), pw, step, (1, 2, 3), None, src=src) if src else \
                self.p(node, "bias")
            return F.conv2d(mid, pw, b)

    return ActQuant, GraphModule


def _key(name: str, param: str | None = None) -> str:
    text = name if param is None else f"{name}::{param}"
    return text.replace(".", "_").replace("/", "|")


def _pair(node, key, default=None):
    value = node.attrs.get(key, default)
    return (int(value), int(value)) if np.ndim(value) == 0 else (int(value[0]), int(value[1]))


def _strides(node, default=(1, 1)):
    return _pair(node, "strides", default)


def _pad_input(x, node, kernel_hw):
    import torch.nn.functional as F

    top, bottom, left, right = pads_of(node.attrs.get("padding", "valid"), tuple(x.shape[2:]), tuple(kernel_hw),
                                       _strides(node))
    return F.pad(x, (left, right, top, bottom)) if any((top, bottom, left, right)) else x


def _to_torch_layout(node, key, value) -> np.ndarray:
    v = np.asarray(value, np.float32)
    if node.op == "conv2d" and key == "weight":
        return np.ascontiguousarray(v.transpose(3, 2, 0, 1))            # (Cout, Cin, KH, KW)
    if (node.op == "depthwise_conv2d" and key == "weight") or (node.op == "separable_conv2d" and key == "depthwise"):
        return np.ascontiguousarray(v.transpose(2, 0, 1)[:, None])       # (C*M, 1, KH, KW)
    if node.op == "separable_conv2d" and key == "pointwise":
        return np.ascontiguousarray(v.T[:, :, None, None])               # (Cout, C*M, 1, 1)
    return np.ascontiguousarray(v)


def _from_torch_layout(node, key, value: np.ndarray) -> np.ndarray:
    if node.op == "conv2d" and key == "weight":
        return value.transpose(2, 3, 1, 0)
    if (node.op == "depthwise_conv2d" and key == "weight") or (node.op == "separable_conv2d" and key == "depthwise"):
        return value[:, 0].transpose(1, 2, 0)
    if node.op == "separable_conv2d" and key == "pointwise":
        return value[:, :, 0, 0].T
    return value


def graph_module(graph: Graph, plan: Plan | None = None, weight_clips: bool = False):
    """A torch module computing `graph` (input NCHW float), fake-quantized as `plan` says (None: float).

    weight_clips: each quantized weight tensor gets a clip per channel (fitted for the smallest squared
    error, then learned); without, the step is the converter's from max |w| (what es.convert would do)."""
    _, GraphModule = _module_classes()
    return GraphModule(graph, plan, weight_clips)


def quantized_weights(graph: Graph, plan: Plan) -> list:
    """(node, param key, integer layer name, output-channel axis in the torch layout) of each weight tensor the
    plan quantizes."""
    out = []
    for node in graph.nodes:
        if node.op in ("conv2d", "depthwise_conv2d") and node.name in plan.weight_bits:
            out.append((node, "weight", node.name, 0))
        elif node.op == "dense" and node.name in plan.weight_bits:
            out.append((node, "weight", node.name, 1))
        elif node.op == "separable_conv2d":
            split = f"{node.name}/depthwise"
            depthwise = split if split in plan.weight_bits else node.name
            if depthwise in plan.weight_bits:
                out.append((node, "depthwise", depthwise, 0))
            if node.name in plan.weight_bits:
                out.append((node, "pointwise", node.name, 0))
    return out


def trained_graph(module, clipped: bool = True) -> Graph:
    """The float Graph with the module's (trained) parameters; `clipped`: weights clamped to their learned clips
    (what the converter quantizes to the module's integers), else as trained (where the next episode starts)."""
    graph = module.graph.copy()
    for node, original in zip(graph.nodes, module.graph.nodes):
        for key in list(node.params):
            value = module.clipped_weight(original, key) if clipped else module.params[_key(node.name, key)].detach()
            node.params[key] = _from_torch_layout(node, key, value.cpu().numpy().astype(np.float32))
    return graph


def learned_ranges(module) -> dict:
    return {q.point.node: q.learned() for q in module.quant.values()}


def _mid_scales(graph: Graph, plan: Plan, x_float: np.ndarray, calibration: str) -> None:
    """The converter's 8-bit step of each separable layer's depthwise stage, from the float graph."""
    seps = [n for n in graph.nodes if n.op == "separable_conv2d" and n.name in plan.mid_scales]
    if not seps:
        return
    _, acts = graph.run(x_float, capture=True)
    for node in seps:
        inp = acts[node.inputs[0]]
        d = np.asarray(node.params["depthwise"], np.float32)
        strides = _strides(node)
        pads = pads_of(node.attrs.get("padding", "valid"), inp.shape[1:3], d.shape[:2], strides)
        mid = _depthwise(inp, d, strides, pads, int(node.attrs.get("depth_multiplier", 1)))
        plan.mid_scales[node.name] = activation_range(np.abs(mid), calibration, 7) / 127


# -- fine-tuning -------------------------------------------------------------------------------------

@dataclass
class Episode:
    weight_bits: int
    activation_bits: int
    epochs: int
    accuracy: float             # validation accuracy of the fake-quantized module after the episode
    integer_accuracy: float | None = None   # of the converted Model on the validation split (None: no field)
    seconds: float = 0.0
    test_accuracy: float | None = None      # with evaluation=(x, y): the fake-quantized module on it
    integer_test_accuracy: float | None = None   # and the integer Model on it


@dataclass
class FinetuneResult:
    model: object               # the integer Model of the last episode
    module: object              # the fake-quantized torch module it was converted from
    graph: Graph                # the fine-tuned float graph
    episodes: list
    float_accuracy: float
    float_test_accuracy: float | None = None

    def table(self) -> str:
        base = self.float_test_accuracy if self.float_test_accuracy is not None else self.float_accuracy
        return episode_table(self.episodes, base)



def episode_table(episodes: list, float_accuracy: float | None = None) -> str:
    """The CNN2SNN tutorial's table: episode, weight and activation bits, accuracy (of the fake-quantized
    module, and of the integer Model where the format holds the bits), epochs. Accuracies are on the
    evaluation set when one was given, else on the validation split."""
    test = bool(episodes) and episodes[0].test_accuracy is not None
    rows = [("Episode", "Weights Quant.", "Activ. Quant.", "Accuracy", "Integer Model", "Epochs")]
    if float_accuracy is not None:
        rows.append(("1", "N/A", "N/A", f"{100 * float_accuracy:.2f} %", "", "-"))
    for i, e in enumerate(episodes, start=2 if float_accuracy is not None else 1):
        acc, integer = (e.test_accuracy, e.integer_test_accuracy) if test else (e.accuracy, e.integer_accuracy)
        integer = "- (no field)" if integer is None else f"{100 * integer:.2f} %"
        wq = f"{e.weight_bits} bits" + (" (4-bit field)" if e.weight_bits == 3 else "")
        rows.append((str(i), wq, f"{e.activation_bits} bits", f"{100 * acc:.2f} %", integer, str(e.epochs)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    line = "| " + " | ".join("{:<%d}" % w for w in widths) + " |"
    out = [line.format(*rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line.format(*r) for r in rows[1:]]
    return "\n".join(out)


def finetune(source, x, y, *, weight_bits: int = 4, activation_bits: int = 4, epochs=3, schedule=None,
             input_scaling=(1.0, 0.0), samples=None, validation_split: float = 0.1, batch_size: int = 64,
             learning_rate: float = 5e-4, calibration: str = "mse", neuron: str = "relu", timesteps=None,
             input_weight_bits: int | None = 8, layer_weight_bits: dict | None = None, labels=None,
             seed: int = 0, progress: bool = True, threads: int | None = None, importer=None,
             distillation: float = 0.0, temperature: float = 4.0, weight_clips: bool = True,
             **importer_options):
    """Fine-tune `source` with fake quantization on uint8 HWC `x` and labels `y`; return the integer Model.

    schedule: [(weight_bits, activation_bits), ...] episodes, each `epochs` epochs (an int or a list per
    episode), starting from the previous one's weights; default [(weight_bits, activation_bits)].
    The returned Model's ``metadata["finetune"]`` has the episode table. `samples` calibrate the first
    plan (default: up to 512 training samples). Use ``finetune_result`` for the module and the history.
    """
    return finetune_result(source, x, y, weight_bits=weight_bits, activation_bits=activation_bits, epochs=epochs,
                           schedule=schedule, input_scaling=input_scaling, samples=samples,
                           validation_split=validation_split, batch_size=batch_size, learning_rate=learning_rate,
                           calibration=calibration, neuron=neuron, timesteps=timesteps,
                           input_weight_bits=input_weight_bits, layer_weight_bits=layer_weight_bits, labels=labels,
                           seed=seed, progress=progress, threads=threads, importer=importer,
                           distillation=distillation, temperature=temperature, weight_clips=weight_clips,
                           **importer_options).model


def finetune_result(source, x, y, *, weight_bits=4, activation_bits=4, epochs=3, schedule=None,
                    input_scaling=(1.0, 0.0), samples=None, validation_split=0.1, batch_size=64,
                    learning_rate=5e-4, calibration="mse", neuron="relu", timesteps=None, input_weight_bits=8,
                    layer_weight_bits=None, labels=None, seed=0, progress=True, threads=None, importer=None,
                    evaluation=None, distillation=0.0, temperature=4.0, weight_clips=True,
                    **importer_options) -> FinetuneResult:
    """es.finetune, returning the Model, the fake-quantized module, the fine-tuned Graph and the episodes."""
    import time

    import torch

    if neuron not in ("relu", "if"):   # the fake-quantized module models the relu and IF recipes only
        raise ValueError(f"es.finetune: neuron must be 'relu' or 'if' (the lif recipe has no fine-tuning "
                         f"model yet; convert with es.convert(..., neuron='lif')), got {neuron!r}")
    if threads is not None:
        torch.set_num_threads(threads)
    x = np.asarray(x)
    y = np.asarray(y).reshape(-1).astype(np.int64)
    hint = x.shape[1:] if x.ndim == 4 else None
    graph = load_graph(source, importer=importer, input_shape_hint=hint, **importer_options).simplify()
    x = _check_samples(x, graph.input_shape, 8)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_val = int(round(len(x) * validation_split))
    val, train = order[:n_val], order[n_val:]
    calib = np.asarray(samples) if samples is not None else x[train[:512]]
    schedule = list(schedule) if schedule is not None else [(weight_bits, activation_bits)]
    epoch_list = list(epochs) if isinstance(epochs, (list, tuple)) else [int(epochs)] * len(schedule)
    xf = torch.tensor(_float_input(x, input_scaling).transpose(0, 3, 1, 2).copy())
    yt = torch.tensor(y)
    float_module = graph_module(graph, None)
    float_accuracy = _accuracy(float_module, xf[val], yt[val]) if n_val else float("nan")
    teacher = _logits(float_module, xf[train]) if distillation > 0 else None
    float_test = None
    if evaluation is not None:
        x_eval, y_eval = np.asarray(evaluation[0]), np.asarray(evaluation[1]).reshape(-1)
        float_test = float(np.mean(predict(float_module, x_eval, input_scaling) == y_eval))
    episodes, module, ranges = [], None, None
    model = None
    for (wbits, abits), n_epochs in zip(schedule, epoch_list):
        start = time.perf_counter()
        field_abits = abits if abits in ACTIVATION_FIELD_BITS else next(b for b in ACTIVATION_FIELD_BITS if b > abits)
        per_layer = _per_layer_bits(graph, wbits, layer_weight_bits)
        convert_args = dict(input_scaling=input_scaling, weight_bits=_field(wbits), activation_bits=field_abits,
                            calibration=calibration, neuron=neuron, timesteps=timesteps, progress=False,
                            input_weight_bits=input_weight_bits, layer_weight_bits=per_layer, labels=labels)
        current = graph if module is None else trained_graph(module, clipped=False)
        plan_model = convert(current, calib, per_channel_activations=False, on_low_fidelity="record",
                             **convert_args)   # as the module: its steps, not a model to keep
        plan = plan_from_model(plan_model, current)
        _mid_scales(current, plan, _float_input(calib, input_scaling), calibration)
        if abits != field_abits:                       # 3-bit activations: the plan's steps at 3 bits
            _refit_points(current, plan, calib, input_scaling, abits, calibration)
        if module is not None and ranges is not None and abits == episodes[-1].activation_bits:
            for name, (lo, hi) in ranges.items():       # same activation bits: keep what was learned
                if name in plan.points:
                    plan.points[name].lo, plan.points[name].hi = (lo if plan.points[name].signed else 0.0), hi
        new_module = graph_module(current, plan, weight_clips=weight_clips)
        torch.manual_seed(seed)
        _train(new_module, xf[train], yt[train], n_epochs, batch_size, learning_rate, seed, progress,
               f"{wbits}/{abits} bits", teacher, distillation, temperature)
        module = new_module
        if plan.mid_scales:      # a separable layer's 8-bit depthwise step, as the converter will find it now
            _mid_scales(trained_graph(module), plan, _float_input(calib, input_scaling), calibration)
        ranges = learned_ranges(module)
        accuracy = _accuracy(module, xf[val], yt[val]) if n_val else float("nan")
        integer_accuracy = None
        if abits == field_abits:
            model = convert(trained_graph(module), calib, **convert_args, ranges=ranges,
                            on_low_fidelity="warn")   # the trained steps' model: kept, warned about if low
            if n_val:
                integer_accuracy = float(np.mean(model.predict(x[val]) == y[val]))
        episode = Episode(wbits, abits, n_epochs, accuracy, integer_accuracy, time.perf_counter() - start)
        if evaluation is not None:
            episode.test_accuracy = float(np.mean(predict(module, x_eval, input_scaling) == y_eval))
            if abits == field_abits:
                episode.integer_test_accuracy = float(np.mean(model.predict(x_eval) == y_eval))
        episodes.append(episode)
        if progress:
            print(episode_table(episodes, float_test if float_test is not None else float_accuracy))
    if model is None:
        raise ValueError(f"no episode of {schedule} has activation bits the format holds {ACTIVATION_FIELD_BITS}")
    model.metadata["finetune"] = {
        "float_accuracy": None if math.isnan(float_accuracy) else float_accuracy,
        "episodes": [{"weight_bits": e.weight_bits, "activation_bits": e.activation_bits, "epochs": e.epochs,
                      "accuracy": e.accuracy, "integer_accuracy": e.integer_accuracy, "seconds": round(e.seconds, 1),
                      "test_accuracy": e.test_accuracy, "integer_test_accuracy": e.integer_test_accuracy}
                     for e in episodes]}
    return FinetuneResult(model, module, trained_graph(module), episodes, float_accuracy, float_test)


def _field(bits: int) -> int:
    return next(b for b in (2, 4, 8) if b >= bits)


def _per_layer_bits(graph: Graph, wbits: int, layer_weight_bits: dict | None) -> dict:
    """Every synaptic node at `wbits` quantization bits (3 is kept as 3 levels in a 4-bit field), except what
    `layer_weight_bits` names; the input layer is left to input_weight_bits."""
    out = {}
    if wbits not in (2, 4, 8):
        first = {n.name for n in graph.nodes if graph.input_name in n.inputs}
        out = {n.name: wbits for n in graph.nodes
               if n.op in ("conv2d", "depthwise_conv2d", "separable_conv2d", "dense") and n.name not in first}
    out.update(layer_weight_bits or {})
    return out


def _refit_points(graph, plan, calib, input_scaling, bits, calibration):
    """Ranges of the activation points searched at `bits` (for episodes whose bits have no integer field)."""
    _, acts = graph.run(_float_input(calib, input_scaling), capture=True)
    for name, point in plan.points.items():
        if name not in acts:
            continue
        v = acts[name]
        point.bits = bits
        point.hi = activation_range(np.maximum(v, 0), calibration, bits)
        point.lo = -activation_range(np.maximum(-v, 0), calibration, bits) if point.signed else 0.0


def _accuracy(module, x, y, batch: int = 256) -> float:
    import torch

    module.eval()
    with torch.no_grad():
        pred = torch.cat([module(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return float((pred == y).float().mean())


def predict(module, x_uint8: np.ndarray, input_scaling=(1.0, 0.0), batch: int = 256) -> np.ndarray:
    """Class indices of the (fake-quantized) module on uint8 HWC input."""
    import torch

    xf = torch.tensor(_float_input(np.asarray(x_uint8), input_scaling).transpose(0, 3, 1, 2).copy())
    module.eval()
    with torch.no_grad():
        return torch.cat([module(xf[i:i + batch]).argmax(1) for i in range(0, len(xf), batch)]).numpy()


def _logits(module, x, batch: int = 256):
    import torch

    module.eval()
    with torch.no_grad():
        return torch.cat([module(x[i:i + batch]) for i in range(0, len(x), batch)])


def _train(module, x, y, epochs, batch_size, learning_rate, seed, progress, desc, teacher=None,
           distillation=0.0, temperature=4.0):
    """Adam, cosine learning rate over the episode; the loss is cross-entropy, mixed with `distillation` of the
    KL divergence to the float model's `teacher` logits at `temperature` (Hinton et al.'s T^2 scaling)."""
    import torch
    from tqdm.auto import tqdm

    if epochs <= 0:
        return
    weights = [p for p in module.params.values() if p.requires_grad] + [p for p in module.clips.values()]
    ranges = [p for p in module.quant.parameters()]
    groups = [{"params": weights, "lr": learning_rate}]
    if ranges:
        groups.append({"params": ranges, "lr": learning_rate * 10})
    optimizer = torch.optim.Adam(groups)
    steps = epochs * math.ceil(len(x) / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    module.train()
    bar = tqdm(total=steps, desc=f"fine-tuning {desc}", unit="batch", disable=not progress, leave=False)
    for _ in range(epochs):
        for index in torch.randperm(len(x), generator=generator).split(batch_size):
            optimizer.zero_grad()
            logits = module(x[index])
            loss = torch.nn.functional.cross_entropy(logits, y[index])
            if teacher is not None:
                soft = torch.nn.functional.kl_div(torch.log_softmax(logits / temperature, 1),
                                                  torch.softmax(teacher[index] / temperature, 1), reduction="batchmean")
                loss = (1 - distillation) * loss + distillation * temperature ** 2 * soft
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
    bar.close()
    module.eval()


# -- agreement: what was trained is what runs ---------------------------------------------------------

def agreement(module, model, x_uint8: np.ndarray, input_scaling=(1.0, 0.0)) -> dict:
    """Fake-quantized module vs integer Model on uint8 `x`: top-1 agreement, and per layer the fraction of
    dequantized activations within one quantization step and the largest difference in steps."""
    import torch

    from . import reference

    x_uint8 = np.asarray(x_uint8)
    xf = torch.tensor(_float_input(x_uint8, input_scaling).transpose(0, 3, 1, 2).copy())
    module.eval()
    module.capture = {}
    with torch.no_grad():
        logits = module(xf)
    captured = {k: v.numpy() for k, v in module.capture.items()}
    module.capture = None
    timesteps = int(model.metadata.get("timesteps", 1))
    ints: dict = {}
    potentials, _ = reference.run(model, model.check_input(x_uint8, timesteps), capture=ints)
    # the module's logits in the output layer's potential units, rounded: ties break as the integers' do
    out_scale = np.asarray(model.metadata.get("output_scale", 1.0), np.float64).reshape(1, -1)
    fq_pred = np.round(logits.numpy().reshape(len(x_uint8), -1) / out_scale).argmax(1)
    int_pred = potentials.reshape(len(x_uint8), -1).argmax(1)
    scales = model.metadata.get("activation_scales", {})
    zero_points = model.metadata.get("activation_zero_points", {})
    layers = {}
    for layer, node in model.metadata.get("float_nodes", {}).items():
        key = node + ":q"
        if key not in captured or layer not in ints:
            continue
        step = float(np.asarray(scales[layer]).ravel()[0])
        zp = np.asarray(zero_points.get(layer, 0), np.float64) * timesteps
        approx = (ints[layer].astype(np.float64) - zp) * np.asarray(scales[layer], np.float64)
        ref = captured[key].transpose(0, 2, 3, 1).astype(np.float64)
        if ref.shape != approx.shape:
            continue
        diff = np.abs(ref - approx) / step
        layers[layer] = {"within_one_step": float(np.mean(diff <= 1.0 + 1e-3)), "max_steps": float(diff.max())}
    return {"agreement": float(np.mean(fq_pred == int_pred)), "layers": layers}
