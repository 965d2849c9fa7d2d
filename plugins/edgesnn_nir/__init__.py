"""NIR importer and exporter: ``.nir`` files (the Neuromorphic Intermediate Representation) <-> integer Model.

    model = es.convert("net.nir", samples=None, weight_bits=8, dt=1e-4)
    model.to_nir("out.nir")                  # or edgesnn_nir.to_nir(model, "out.nir")
    counts = edgesnn_nir.simulate("net.nir", spikes)   # the file in float64, before any rounding

**Design: a direct builder, not a float Graph.**  Every other importer returns a float Graph that
the converter calibrates.  A NIR graph is already a spiking network: its thresholds, time
constants and resets are the network, and there is nothing to calibrate.  So this importer
declares ``builds_model = True`` and ``es.convert`` hands the file to ``build_model``, which maps
each synapse [+ pool] [+ scale] + neuron group of a sequential graph straight onto one integer layer
(docs/semantics.md):

- synapse: ``Affine`` / ``Linear`` -> ``dense`` (a ``Flatten`` of a (C, H, W) tensor before it
  permutes the weight columns into the HWC order of the Model); ``Conv2d`` -> ``conv2d`` (groups 1,
  dilation 1, padding an int, a pair, ``valid`` or stride-1 ``same``); ``Conv1d`` -> a ``conv2d`` of
  height 1 (its (C, L) tensor is the Model's (1, L, C));
- pool, between a convolution and its neuron: ``SumPool2d`` -> an ``avg`` pool (a window sum),
  ``AvgPool2d`` -> the same with ``1 / (kh kw)`` folded into the weights (zeros padded in, as NIR and
  torch count them); a pool after a neuron is refused (it would average spikes into fractions);
- ``Scale`` right after the synapse or pool, folded into the weights (one value per channel);
- neuron: ``LIF`` -> ``lif`` with a multiplicative decay, ``IF`` -> ``if``, ``CubaLIF`` -> ``lif`` when its
  synaptic current has no memory (``dt == tau_syn``: then ``I_t = w_in * x_t`` exactly), ``LI`` or
  ``I`` / Integrator (last only) -> ``none``.  Parameters of a convolution's neurons may be given per
  neuron (C, H, W) but must be equal over H and W (the integer layer's are per channel).

**Discretization at ``dt``** (the ``dt`` option; else the graph's ``metadata["dt"]``; else 1e-4,
snnTorch's export convention), forward Euler, as the NIR reference simulators and snnTorch's
``import_from_nir`` do:
``LIF``: ``v_t = (1 - dt/tau) v_{t-1} + (dt r / tau) (W x_t + b)``; ``IF``: ``v_t = v_{t-1} + dt r (W x_t + b)``;
spike when ``v > v_threshold``, then ``v = v_reset``.  Per output channel the input gain
``g = dt r / tau`` (or ``dt r``; times ``w_in`` for CubaLIF, divided by the window area for AvgPool2d)
is folded into the weights, which are quantized symmetrically to ``weight_bits`` with the scale
``s = max |g W| / (2^(b-1) - 1)`` (``s = 1`` when the weights are already integers in range; the
synapse node's ``metadata["edgesnn_scale"]``, written by the exporter, when present, so an exported
model comes back identical); the threshold becomes ``floor(v_threshold / s) + 1`` (NIR's strict ``>``
on the integer grid) and ``1 - dt/tau`` the decay multiplier over ``2^16``.  ``v_reset = 0`` maps to
``reset="zero"``; ``v_leak != 0`` or another ``v_reset`` is refused.  A ``LI`` output layer becomes the
int32 sum of its input over timesteps (the class scores; its leak is not modelled: a warning says so).

**Calibration samples** (``es.convert("net.nir", spikes)``, spike trains (N, T, ...)) are optional.
Without them each weight is rounded to nearest.  That rounding is what separates the integer model
from the file: ``simulate(path, spikes)`` runs the graph as read here in float64, before any rounding,
and on snnTorch's exports it has snnTorch's own spike counts exactly; ``simulate(..., weight_bits=8)``
rounds only the weights and costs what the whole integer model costs (the integer membrane, the decay
multiplier ``beta * 2^16`` and the threshold ``floor(v_threshold / s) + 1`` add next to nothing).  The
membrane's integer unit is the weights' step ``s``: a finer membrane would need larger integers, i.e.
more weight bits.  A membrane sums the rounding errors of many small weights over many timesteps, and
they flip spikes, and through them near-tied class counts.  With samples, each layer's bias and weights
are rounded by error feedback against the second moment of its input spike counts on them (GPTQ), layer
after layer on the spikes of the layers already converted, which cuts the spike-count error by about 40 %
(README, "Spiking networks in time: NIR, snnTorch, SNU").

**Refused with a ConversionError naming the node and why:** a CubaLIF whose current carries over
(``tau_syn != dt``), ``CubaLI``, grouped or dilated convolutions, pools after neurons, graphs that are not
a chain, and anything else.  Input values are integers of ``input_bits`` (default 1: spikes).

**Export** writes each layer as ``Affine`` (dense; a ``Flatten`` first where a (C, H, W) tensor comes in)
or ``Conv2d`` [+ ``AvgPool2d``] and its neuron: ``lif`` with decay -> ``LIF`` (``tau = dt / (1 - beta)``,
``r = tau / dt``), ``if`` -> ``IF`` (``r = 1/dt``), ``none`` -> ``I`` (``r = 1/dt``).  Each spiking
channel's weights and bias are divided by ``threshold - 1/2`` so that every neuron's ``v_threshold``
is 1 (an integer ``v >= threshold`` is a real ``v > threshold - 1/2``; snnTorch's importer needs one
threshold per layer), and the division is kept in ``metadata["edgesnn_scale"]``.  NIR's neurons reset
to ``v_reset``: a subtractive reset does not survive export (exported as a reset to zero, with a
warning); ``reset="none"``, a membrane floor (an SNU), max pools and relu layers have no NIR node and
are refused.  The engine rounds the decayed membrane to an integer each timestep; a float simulator of
the file does not, so the two may differ where a membrane ends a timestep within rounding of a threshold.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pluggy

import edgesnn as es

hookimpl = pluggy.HookimplMarker("edgesnn")

DT_DEFAULT = 1e-4          # seconds; snnTorch's export_to_nir writes tau = dt / (1 - beta) with this dt
DECAY_SHIFT = 16           # decay multipliers are beta * 2^16
SUPPORTED_NODES = ("Input", "Output", "Affine", "Linear", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d", "Scale",
                   "Flatten", "IF", "LIF", "CubaLIF", "LI", "I")
# nir's integrator node is the class `I` ("Integrator" in the NIR paper); both names are read
SCALE_KEY = "edgesnn_scale"   # synapse metadata: the float value of one integer weight step, per channel
SYNAPSES = ("Affine", "Linear", "Conv1d", "Conv2d")
NEURONS = ("IF", "LIF", "CubaLIF", "LI", "Integrator")


class NirError(es.ConversionError):
    """A NIR graph this importer cannot map, or a Model NIR cannot express (the message names the node)."""


def _nir():
    try:
        import nir
    except ImportError as exc:   # pragma: no cover - the extra is missing
        raise ImportError("reading or writing .nir files needs the `nir` package: pip install 'edgesnn[nir]'") from exc
    return nir


def _chain(graph) -> list[tuple[str, object]]:
    """The nodes of a sequential NIR graph from its Input to its Output, in order."""
    successors: dict[str, list[str]] = {}
    for source, target in graph.edges:
        successors.setdefault(source, []).append(target)
    inputs = [k for k, n in graph.nodes.items() if type(n).__name__ == "Input"]
    if len(inputs) != 1:
        raise NirError(f"the NIR graph has {len(inputs)} Input nodes; the importer maps graphs with one")
    chain, name, seen = [], inputs[0], set()
    while True:
        if name in seen:
            raise NirError(f"NIR node {name!r}: the graph has a cycle (recurrent edges are not mapped)")
        seen.add(name)
        chain.append((name, graph.nodes[name]))
        nxt = successors.get(name, [])
        if not nxt:
            return chain
        if len(nxt) > 1:
            raise NirError(f"NIR node {name!r} feeds {len(nxt)} nodes {nxt}; the importer maps sequential graphs")
        name = nxt[0]


def _per_channel(value, channels: int, spatial: tuple, what: str, node: str) -> np.ndarray:
    """One float per channel of a node parameter given as a scalar, per channel or per neuron (C, *spatial)."""
    arr = np.asarray(value, np.float64)
    if arr.size == 1:
        return np.full(channels, float(arr.reshape(-1)[0]))
    if arr.size == channels:
        return arr.reshape(channels)
    if arr.size == channels * int(np.prod(spatial)):
        arr = arr.reshape(channels, -1)
        if np.any(arr != arr[:, :1]):
            raise NirError(f"NIR node {node!r}: {what} differs between the positions of one channel; the integer "
                           f"layer holds one {what} per channel")
        return arr[:, 0].copy()
    raise NirError(f"NIR node {node!r}: {what} has {arr.size} values for {channels} channels"
                   + (f" of {spatial}" if spatial else ""))


def _pair(value, what: str, node: str) -> tuple[int, int]:
    arr = np.asarray(value).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.size != 2:
        raise NirError(f"NIR node {node!r}: {what} {value!r} is not an int or a pair")
    return int(arr[0]), int(arr[1])


def _quantize(w: np.ndarray, bias: np.ndarray, bits: int, given=None, second_moment=None):
    """Per output row of `w` (Cout, fan_in): (integer weights, integer bias, scale); the scale is 1 where the
    weights are already integers, `given` where the file names it, else max |w| / (2^(bits-1) - 1).

    With `second_moment` (1 + fan_in, 1 + fan_in), E[c c^T] of the layer's input spike counts with the
    bias's constant input first, rows that are not already integers are rounded by error feedback
    (_round_gptq), the bias first, so that the weights absorb its rounding too."""
    qmax = 2 ** (bits - 1) - 1
    peak = np.abs(w).max(axis=1)
    if given is not None:
        scale, exact = given, np.ones(len(w), bool)
    else:
        exact = np.all(w == np.round(w), axis=1) & (peak <= qmax)
        scale = np.where(exact, 1.0, np.where(peak > 0, peak / qmax, 1.0))
    q = np.round(np.concatenate([bias[:, None], w], axis=1) / scale[:, None])
    if second_moment is not None and not exact.all():
        rows = np.concatenate([bias[~exact, None], w[~exact]], axis=1) / scale[~exact, None]
        q[~exact] = _round_gptq(rows, second_moment, qmax)
    return np.clip(q[:, 1:], -qmax - 1, qmax).astype(np.int64), q[:, 0].astype(np.int64), scale


def _round_gptq(w: np.ndarray, h: np.ndarray, qmax: int) -> np.ndarray:
    """Integers near `w` (rows, 1 + fan_in: the bias, then the weights, in units of each row's scale) with a
    small error (w - q) h (w - q)^T; the weights within [-qmax - 1, qmax], the bias (int32) not.

    Rounding each weight to nearest leaves the error sum_i c_i (w_i - q_i) of a membrane whose inputs
    fired c_i times; over many inputs these add up.  Quantizing the inputs one at a time and spreading
    each rounding error onto the inputs not yet quantized, weighted by how they fire together
    (GPTQ, Frantar et al. 2023: the inverse Cholesky factor of h), keeps that sum small.
    """
    w, h = w.astype(np.float64).copy(), h.astype(np.float64).copy()
    fan_in = w.shape[1]
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    h += 0.01 * float(np.mean(np.diag(h))) * np.eye(fan_in)       # dampening, as GPTQ's
    upper = np.linalg.cholesky(np.linalg.inv(h)).T
    q = np.zeros_like(w)
    for i in range(fan_in):
        q[:, i] = np.round(w[:, i]) if i == 0 else np.clip(np.round(w[:, i]), -qmax - 1, qmax)
        error = (w[:, i] - q[:, i]) / upper[i, i]
        w[:, i + 1:] -= error[:, None] * upper[i, i + 1:][None, :]
    return q


class _Synapse:
    """A synapse waiting for its neuron: float weights (Cout, fan_in) in the Model's order, bias, geometry."""

    def __init__(self, name, kind, weight, bias, out_shape, conv=None, scale=None):
        self.name, self.kind, self.weight, self.bias = name, kind, weight, bias
        self.out_shape = out_shape        # NIR order: (C,) or (C, H, W)
        self.conv = conv                  # (kh, kw, cin, stride, pads) for a convolution
        self.pool = None                  # (size, stride, pads) of a window sum
        self.scale = scale                # the exporter's per-channel scale, when the file carries it

    def fold(self, factor: np.ndarray) -> None:
        self.weight = self.weight * factor[:, None]
        self.bias = self.bias * factor


def _read_synapse(name, kind, node, shape, first_chw):
    """A _Synapse of an Affine / Linear / Conv node reading a tensor of NIR shape `shape`."""
    meta = getattr(node, "metadata", None) or {}
    given = np.asarray(meta[SCALE_KEY], np.float64).reshape(-1) if SCALE_KEY in meta else None
    weight = np.asarray(node.weight, np.float64)
    cout = weight.shape[0]
    bias = np.asarray(node.bias, np.float64).reshape(-1) if getattr(node, "bias", None) is not None \
        else np.zeros(cout)
    if bias.size == 1 and cout > 1:
        bias = np.full(cout, float(bias[0]))
    if kind in ("Affine", "Linear"):
        fan_in = int(np.prod(shape))
        if weight.ndim != 2 or weight.shape[1] != fan_in:
            raise NirError(f"NIR node {name!r} ({kind}): weight {weight.shape} does not read the {tuple(shape)} "
                           f"tensor before it")
        if first_chw is not None:   # columns of a flattened (C, H, W) tensor -> the Model's HWC order
            c, h, w = first_chw
            weight = weight.reshape(cout, c, h, w).transpose(0, 2, 3, 1).reshape(cout, -1)
        return _Synapse(name, "dense", weight, bias, (cout,), scale=given)
    if len(shape) != (2 if kind == "Conv1d" else 3):
        raise NirError(f"NIR node {name!r} ({kind}): reads a tensor of shape {tuple(shape)}; a {kind} needs "
                       f"{'(C, L)' if kind == 'Conv1d' else '(C, H, W)'}")
    if kind == "Conv1d":
        weight = weight[:, :, None, :]                      # (Cout, Cin, 1, K)
        h, w = 1, shape[1]
        stride = (1, int(np.asarray(node.stride).reshape(-1)[0]))
        dilation = (1, int(np.asarray(node.dilation).reshape(-1)[0]))
        padding = node.padding if isinstance(node.padding, str) else (0, int(np.asarray(node.padding).reshape(-1)[0]))
    else:
        h, w = shape[1], shape[2]
        stride, dilation = _pair(node.stride, "stride", name), _pair(node.dilation, "dilation", name)
        padding = node.padding if isinstance(node.padding, str) else _pair(node.padding, "padding", name)
    cin = shape[0]
    if int(node.groups) != 1:
        raise NirError(f"NIR node {name!r} ({kind}): groups {int(node.groups)} is not mapped (only groups = 1)")
    if dilation != (1, 1):
        raise NirError(f"NIR node {name!r} ({kind}): dilation {dilation} is not mapped (only 1)")
    if weight.shape[1] != cin:
        raise NirError(f"NIR node {name!r} ({kind}): weight {weight.shape} expects {weight.shape[1]} input channels, "
                       f"the tensor before it has {cin}")
    kh, kw = weight.shape[2:]
    if padding == "valid":
        pads = (0, 0, 0, 0)
    elif padding == "same":
        if stride != (1, 1):
            raise NirError(f"NIR node {name!r} ({kind}): padding 'same' with stride {stride} is not mapped")
        pads = ((kh - 1) // 2, kh - 1 - (kh - 1) // 2, (kw - 1) // 2, kw - 1 - (kw - 1) // 2)
    else:
        pads = (padding[0], padding[0], padding[1], padding[1])
    oh = es.layers.conv_output_size(h, kh, stride[0], pads[:2])
    ow = es.layers.conv_output_size(w, kw, stride[1], pads[2:])
    if oh < 1 or ow < 1:
        raise NirError(f"NIR node {name!r} ({kind}): a {kh}x{kw} kernel does not fit the {h}x{w} input")
    flat = weight.transpose(0, 2, 3, 1).reshape(cout, -1)   # (Cout, KH*KW*Cin), the Model's (KH, KW, Cin) order
    out_shape = (cout, ow) if kind == "Conv1d" else (cout, oh, ow)
    return _Synapse(name, "conv2d", flat, bias, out_shape, conv=(kh, kw, cin, stride, pads), scale=given)


def _read_pool(name, kind, node, syn: _Synapse) -> None:
    size, stride = _pair(node.kernel_size, "kernel_size", name), _pair(node.stride, "stride", name)
    ph, pw = _pair(node.padding, "padding", name)
    c, h, w = syn.out_shape if len(syn.out_shape) == 3 else (syn.out_shape[0], 1, syn.out_shape[1])
    oh = es.layers.conv_output_size(h, size[0], stride[0], (ph, ph))
    ow = es.layers.conv_output_size(w, size[1], stride[1], (pw, pw))
    if oh < 1 or ow < 1:
        raise NirError(f"NIR node {name!r} ({kind}): a {size} window does not fit the {h}x{w} input")
    syn.pool = (size, stride, (ph, ph, pw, pw))
    syn.out_shape = (c, oh, ow) if len(syn.out_shape) == 3 else (c, ow)
    if kind == "AvgPool2d":     # the window sum (zeros padded in) divided by the window's area
        syn.fold(np.full(c, 1.0 / (size[0] * size[1])))


def _read_graph(source, dt: float | None):
    """(dt, the Model's input shape (H, W, C), [(name, kind, neuron node, _Synapse)]) of a NIR graph: each
    neuron with the synapse [+ pool] [+ scale] before it, in order, the weights still float."""
    nir = _nir()
    graph = nir.read(source) if isinstance(source, (str, Path)) else source
    dt = float(dt if dt is not None else (graph.metadata or {}).get("dt", DT_DEFAULT))
    chain = _chain(graph)
    shape = tuple(int(v) for v in np.asarray(chain[0][1].input_type["input"]).reshape(-1))
    if len(shape) == 1:
        input_shape = (1, 1, shape[0])
    elif len(shape) == 2:
        input_shape = (1, shape[1], shape[0])       # (C, L) -> a height-1 image
    elif len(shape) == 3:
        input_shape = (shape[1], shape[2], shape[0])
    else:
        raise NirError(f"NIR Input {chain[0][0]!r}: shape {shape}; the importer maps (N,), (C, L) and (C, H, W) "
                       f"inputs")
    specs, pending, flat_chw = [], None, None     # flat_chw: the (C, H, W) a Flatten flattened, for the next dense
    for name, node in chain[1:]:
        kind = type(node).__name__
        kind = "Integrator" if kind == "I" else kind
        if kind == "Output":
            continue
        if kind == "Flatten":
            if pending is not None:
                raise NirError(f"NIR node {name!r} (Flatten): between the synapse {pending.name!r} and its neuron; "
                               f"the importer maps a Flatten before a synapse")
            if len(shape) == 3:
                flat_chw = shape
            shape = (int(np.prod(shape)),)
            continue
        if kind in SYNAPSES:
            if pending is not None:
                raise NirError(f"NIR node {name!r}: two synapses in a row ({pending.name!r}, {name!r}) without a "
                               f"neuron between them")
            if kind in ("Affine", "Linear") and len(shape) == 3 and flat_chw is None:
                flat_chw = shape          # a dense reading a (C, H, W) tensor flattens it
            pending = _read_synapse(name, kind, node, shape, flat_chw if kind in ("Affine", "Linear") else None)
            flat_chw = None
            continue
        if kind in ("SumPool2d", "AvgPool2d"):
            if pending is None or pending.kind != "conv2d" or pending.pool is not None:
                raise NirError(f"NIR node {name!r} ({kind}): a pool is mapped only between a convolution and its "
                               f"neuron (pooling spikes would make fractional activations)")
            _read_pool(name, kind, node, pending)
            continue
        if kind == "Scale":
            if pending is None:
                raise NirError(f"NIR node {name!r}: a Scale must follow a synapse (Affine, Linear, Conv) to be folded")
            pending.fold(_per_channel(node.scale, pending.out_shape[0], pending.out_shape[1:], "scale", name))
            continue
        if kind not in NEURONS:
            why = {"CubaLI": "its synaptic current is a second state an integer layer does not have"}.get(kind, "unknown")
            raise NirError(f"NIR node {name!r} ({kind}) cannot be converted: {why}; the importer maps "
                           f"{', '.join(SUPPORTED_NODES)}")
        if pending is None:
            raise NirError(f"NIR node {name!r} ({kind}): a neuron needs a synapse (Affine, Linear, Conv) before it")
        specs.append((name, kind, node, pending))
        shape, pending = pending.out_shape, None
    if pending is not None:
        raise NirError(f"NIR node {pending.name!r}: the graph ends in a synapse; add an LI or Integrator output")
    for name, kind, _, _ in specs[:-1]:
        if kind in ("LI", "Integrator"):
            raise NirError(f"NIR node {name!r}: LI / Integrator neurons are mapped only as the last layer")
    return dt, input_shape, specs


def build_model(source, *, weight_bits: int = 8, input_bits: int = 1, dt: float | None = None,
                timesteps: int | None = None, labels=None, samples=None):
    """The integer Model of a NIR graph (a path or a ``nir.NIRGraph``); see the module docstring.

    samples: optional input spike trains (N, T, ...) of the Model's input size; then each layer's
    weights are rounded to keep its membranes close on them (_round_gptq), layer after layer on the
    spikes of the layers already converted.
    """
    dt, input_shape, specs = _read_graph(source, dt)
    layers = []
    for name, kind, node, syn in specs:
        moment = None if samples is None else _input_moment(syn, layers, input_shape, input_bits, samples)
        layers.append(_layer(name, kind, node, syn, weight_bits, dt, moment))
    metadata = {"timesteps": timesteps} if timesteps else {}
    if labels is not None:
        metadata["labels"] = list(labels)
    metadata["nir"] = {"dt": dt}
    return es.Model(layers, input_shape=input_shape, input_bits=input_bits, metadata=metadata)


def _input_moment(syn: _Synapse, layers: list, input_shape, input_bits, samples) -> np.ndarray:
    """E[c c^T] over the calibration samples of what the synapse's weights multiply: the input spike
    counts of a dense layer, or the count patches (KH, KW, Cin) of a convolution."""
    x = np.asarray(samples)
    if x.ndim < 3 or int(np.prod(x.shape[2:])) != int(np.prod(input_shape)):
        raise NirError(f"samples: expected spike trains (N, T, ...) of {int(np.prod(input_shape))} values per "
                       f"timestep (the input {input_shape}), got shape {x.shape}")
    x5 = x.reshape(x.shape[0], x.shape[1], *input_shape).astype(np.uint8)
    if layers:
        model = es.Model(list(layers), input_shape=input_shape, input_bits=input_bits)
        counts = model.forward(x5, device="reference").astype(np.float64)   # (N, H, W, C) of the last layer
    else:
        counts = x5.sum(axis=1, dtype=np.float64)
    steps = x5.shape[1]   # the bias is a constant input of every timestep: its count is T
    rows = _patches(syn, counts).reshape(-1, syn.weight.shape[1])
    rows = np.concatenate([np.full((len(rows), 1), float(steps)), rows], axis=1)
    return rows.T @ rows / max(len(rows), 1)


def _patches(syn: _Synapse, a: np.ndarray) -> np.ndarray:
    """What each output position of the synapse multiplies with its weights: (N, fan_in) of a dense layer,
    (N, OH, OW, KH * KW * Cin) of a convolution (zeros padded in), from activations `a` (N, H, W, C)."""
    if syn.kind == "dense":
        return a.reshape(len(a), -1)
    kh, kw, cin, stride, (top, bottom, left, right) = syn.conv
    padded = np.pad(a, ((0, 0), (top, bottom), (left, right), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(1, 2))[:, ::stride[0], ::stride[1]]
    return win.transpose(0, 1, 2, 4, 5, 3).reshape(*win.shape[:3], kh * kw * cin)   # (KH, KW, Cin) order


def _window_sum(syn: _Synapse, p: np.ndarray) -> np.ndarray:
    """The pool of a synapse on potentials (N, H, W, C): each window's sum, zeros padded in."""
    (ph, pw), stride, (top, bottom, left, right) = syn.pool
    padded = np.pad(p, ((0, 0), (top, bottom), (left, right), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(padded, (ph, pw), axis=(1, 2))[:, ::stride[0], ::stride[1]]
    return win.sum(axis=(-2, -1))


def simulate(source, spikes, *, dt: float | None = None, dtype=np.float64,
             weight_bits: int | None = None) -> np.ndarray:
    """A float simulation of a NIR graph as this importer reads it, before any rounding: the output layer's
    spike counts (or, for an LI / Integrator output, its summed input), (N, H, W, C) as ``Model.forward``.

    `spikes` (N, T, ...) holds the Model's input values per timestep.  Each timestep, layer after layer, in
    `dtype`: ``v = beta v + g (W x + b)`` (``beta = 1`` for IF), a spike where ``v > v_threshold``, then
    ``v = v_reset (= 0)``; the forward Euler step at `dt` that ``build_model`` maps onto integers.  Set
    beside the integer Model it tells the graph's meaning (this, equal to snnTorch's simulation) from the
    rounding of the conversion (the rest).  With `weight_bits`, the weights and biases are first rounded to
    nearest on the integer grid ``build_model`` uses (the membrane stays float): the cost of that rounding
    alone."""
    dt, input_shape, specs = _read_graph(source, dt)
    x = np.asarray(spikes)
    if x.ndim < 3 or int(np.prod(x.shape[2:])) != int(np.prod(input_shape)):
        raise NirError(f"spikes: expected (N, T, ...) of {int(np.prod(input_shape))} values per timestep (the "
                       f"input {input_shape}), got shape {x.shape}")
    x = x.reshape(x.shape[0], x.shape[1], *input_shape).astype(dtype)
    plan = []
    for name, kind, node, syn in specs:
        cout, spatial = syn.out_shape[0], syn.out_shape[1:]
        gain, beta = _gain_and_decay(name, kind, node, cout, spatial, dt)
        threshold = None if kind in ("LI", "Integrator") else \
            _per_channel(node.v_threshold, cout, spatial, "v_threshold", name).astype(dtype)
        weight, bias = syn.weight * gain[:, None], syn.bias * gain
        if weight_bits is not None:
            wq, bq, scale = _quantize(weight, bias, weight_bits, syn.scale)
            weight, bias = wq * scale[:, None], bq * scale
        plan.append((syn, weight.T.astype(dtype), bias.astype(dtype),
                     None if beta is None else beta.astype(dtype), threshold))
    state = [0.0] * len(plan)
    total = 0.0
    for t in range(x.shape[1]):
        a = x[:, t]
        for i, (syn, weight_t, bias, beta, threshold) in enumerate(plan):
            p = _patches(syn, a) @ weight_t + bias
            if syn.kind == "dense":
                p = p.reshape(len(p), 1, 1, -1)
            elif syn.pool is not None:
                p = _window_sum(syn, p)
            if threshold is None:
                a = p
                continue
            v = p + (state[i] if beta is None else beta * state[i])
            a = (v > threshold).astype(dtype)
            state[i] = np.where(a > 0, 0, v).astype(dtype)
        total = total + a
    return np.asarray(total)


def _gain_and_decay(name, kind, node, cout, spatial, dt):
    """(input gain per channel, decay beta per channel or None) of a NIR neuron's forward-Euler step."""
    vec = lambda value, what: _per_channel(value, cout, spatial, what, name)  # noqa: E731
    if kind in ("IF", "Integrator"):
        return dt * vec(node.r, "r"), None
    tau = vec(node.tau_mem if kind == "CubaLIF" else node.tau, "tau_mem" if kind == "CubaLIF" else "tau")
    if np.any(vec(node.v_leak, "v_leak") != 0):
        raise NirError(f"NIR node {name!r} ({kind}): v_leak != 0 is not mapped (the integer leak decays to 0)")
    gain, beta = dt * vec(node.r, "r") / tau, 1.0 - dt / tau
    if np.any(beta < 0) or np.any(beta > 1):
        raise NirError(f"NIR node {name!r}: dt {dt} / tau gives a decay outside [0, 1]; give a smaller dt")
    if kind == "CubaLIF":
        tau_syn = vec(node.tau_syn, "tau_syn")
        alpha = 1.0 - dt / tau_syn
        if np.any(np.abs(alpha) > 1e-9):
            raise NirError(f"NIR node {name!r} (CubaLIF) cannot be converted: its synaptic current carries over "
                           f"between timesteps (alpha = 1 - dt/tau_syn = {alpha.max():.4g} at dt {dt:g}), a second "
                           f"state the integer neuron does not have; it maps only when tau_syn == dt")
        gain = gain * vec(node.w_in, "w_in") * (dt / tau_syn)
    return gain, beta


def _layer(name, kind, node, syn: _Synapse, weight_bits, dt, moment=None):
    L = es.layers
    cout, spatial = syn.out_shape[0], syn.out_shape[1:]
    gain, beta = _gain_and_decay(name, kind, node, cout, spatial, dt)
    syn.fold(gain)
    if syn.scale is not None and syn.scale.size != cout:
        raise NirError(f"NIR node {syn.name!r}: metadata {SCALE_KEY} has {syn.scale.size} values for {cout} channels")
    wq, bq, scale = _quantize(syn.weight, syn.bias, weight_bits, syn.scale, moment)
    fields = dict(name=name, bias=bq, weight_bits=weight_bits)
    if syn.kind == "dense":
        fields["weights"] = wq.T
        make = L.Dense
    else:
        kh, kw, cin, stride, pads = syn.conv
        fields.update(weights=wq.reshape(cout, kh, kw, cin).transpose(1, 2, 3, 0), stride=stride,
                      padding=pads if any(pads) else "valid")
        if syn.pool is not None:
            size, pool_stride, pool_pads = syn.pool
            fields.update(pool="avg", pool_size=size, pool_stride=pool_stride,
                          pool_padding=pool_pads if any(pool_pads) else "valid", pool_count_include_pad=True)
        make = L.Conv2D
    if kind in ("LI", "Integrator"):
        if kind == "LI":
            warnings.warn(f"NIR node {name!r} (LI): the output layer sums its input over timesteps; its leak "
                          f"(tau {(dt / (1 - beta)).min():g} s and up) is not modelled", stacklevel=3)
        return make(neuron="none", **fields)
    v_threshold = _per_channel(node.v_threshold, cout, spatial, "v_threshold", name)
    v_reset = _per_channel(node.v_reset if node.v_reset is not None else 0.0, cout, spatial, "v_reset", name)
    if np.any(v_reset != 0):
        raise NirError(f"NIR node {name!r} ({kind}): v_reset != 0 is not mapped (resets go to zero)")
    fields.update(threshold=np.clip(np.floor(v_threshold / scale) + 1, 1, 2**31 - 1).astype(np.int64),
                  reset="zero")
    if kind in ("LIF", "CubaLIF"):
        meta = getattr(node, "metadata", None) or {}
        shift = int(np.asarray(meta.get("edgesnn_decay_shift", DECAY_SHIFT)).reshape(-1)[0])
        return make(neuron="lif", decay_shift=shift, decay_multiplier=np.round(beta * 2**shift).astype(np.int64),
                    **fields)
    return make(neuron="if", **fields)


def _channel_params(values: np.ndarray, shape: tuple) -> np.ndarray:
    """A per-channel vector as NIR per-neuron parameters of a tensor of NIR shape `shape`."""
    return np.broadcast_to(values.reshape(-1, *([1] * (len(shape) - 1))), shape).astype(np.float64).copy()


def to_nir(model, path=None, *, dt: float = DT_DEFAULT):
    """A ``nir.NIRGraph`` of `model`, written to `path` when given; see the module docstring."""
    nir = _nir()
    h, w, c = model.input_shape
    shape = (h * w * c,) if (h, w) == (1, 1) else (c, h, w)     # the NIR shape of the tensor flowing
    nodes = {"input": nir.Input(input_type={"input": np.array(shape)})}
    edges, previous = [], "input"
    for index, layer in enumerate(model.layers):
        expected = (model.layers[index - 1].name,) if index else ("input",)
        if layer.kind not in ("dense", "conv2d", "input_conv2d") or tuple(layer.inputs) != expected:
            raise NirError(f"layer {layer.name!r} ({layer.kind}): export maps sequential dense and conv2d layers only")
        if layer.neuron not in ("if", "lif", "none"):
            raise NirError(f"layer {layer.name!r}: neuron {layer.neuron!r} has no NIR node (relu is not spiking)")
        if layer.neuron in ("if", "lif") and (layer.reset == "none" or layer.membrane_floor is not None):
            raise NirError(f"layer {layer.name!r}: reset {layer.reset!r} / membrane_floor {layer.membrane_floor!r} "
                           f"have no NIR neuron (NIR's IF and LIF reset to v_reset and have no floor)")
        if layer.neuron in ("if", "lif") and layer.reset == "subtract":
            warnings.warn(f"layer {layer.name!r}: NIR neurons reset to v_reset; the subtractive reset is exported "
                          f"as a reset to zero", stacklevel=2)
        cout = layer.output_shape[-1]
        # one integer step in the exported float units: every spiking channel's threshold becomes 1
        step = 1.0 / (layer.threshold.astype(np.float64) - 0.5) if layer.neuron != "none" else np.ones(cout)
        synapse, neuron = f"{layer.name}.synapse", layer.name
        if layer.kind == "dense":
            if len(shape) == 3:
                nodes[f"{layer.name}.flatten"] = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0,
                                                             end_dim=-1)
                edges.append((previous, f"{layer.name}.flatten"))
                previous = f"{layer.name}.flatten"
            weight = layer.weights.astype(np.float64).T       # (Cout, fan_in), fan_in in HWC order
            if len(shape) == 3:                               # NIR flattens CHW
                ci, hi, wi = shape
                weight = weight.reshape(-1, hi, wi, ci).transpose(0, 3, 1, 2).reshape(cout, -1)
            nodes[synapse] = nir.Affine(weight=weight * step[:, None], bias=layer.bias * step,
                                        metadata={SCALE_KEY: step})
            edges.append((previous, synapse))
            previous, shape = synapse, (cout,)
        else:
            previous, shape = _export_conv(nir, layer, shape, step, nodes, edges, previous, synapse)
        params = lambda values: _channel_params(np.asarray(values, np.float64), shape)  # noqa: E731
        ones, zeros = params(np.ones(cout)), params(np.zeros(cout))
        if layer.neuron == "lif":
            if layer.decay_multiplier is not None:
                beta = layer.decay_multiplier.astype(np.float64) / 2**layer.decay_shift
                meta = {"edgesnn_decay_shift": np.array([layer.decay_shift])}
            else:
                beta, meta = np.full(cout, 1.0 - 2.0 ** -layer.leak_shift), {}
            if np.any(beta >= 1):
                raise NirError(f"layer {layer.name!r}: a decay of 1 has no NIR LIF (tau would be infinite)")
            tau = params(dt / (1 - beta))
            nodes[neuron] = nir.LIF(tau=tau, r=tau / dt, v_leak=zeros, v_threshold=ones, v_reset=zeros.copy(),
                                    metadata=meta)
        elif layer.neuron == "if":
            nodes[neuron] = nir.IF(r=ones / dt, v_threshold=ones.copy(), v_reset=zeros)
        else:
            nodes[neuron] = nir.I(r=ones / dt)
        edges.append((previous, neuron))
        previous = neuron
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    edges.append((previous, "output"))
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": dt}, type_check=False)
    if path is not None:
        nir.write(path, graph)
    return graph


def _export_conv(nir, layer, shape, step, nodes, edges, previous, synapse):
    """Conv2d [+ AvgPool2d] nodes of a conv2d layer reading NIR shape `shape`; (last node, its output shape)."""
    if len(shape) != 3:
        raise NirError(f"layer {layer.name!r}: a conv2d after a dense layer has no NIR shape")
    top, bottom, left, right = layer.pads
    if top != bottom or left != right:
        raise NirError(f"layer {layer.name!r}: padding {layer.pads} is not symmetric; NIR's Conv2d pads both sides "
                       f"equally")
    if layer.pool not in (None, "avg"):
        raise NirError(f"layer {layer.name!r}: a {layer.pool} pool has no NIR node")
    area = 1.0
    if layer.pool == "avg":
        pt, pb, pl, pr = layer.pool_pads
        if pt != pb or pl != pr or (any(layer.pool_pads) and not layer.pool_count_include_pad):
            raise NirError(f"layer {layer.name!r}: the avg pool's padding {layer.pool_pads} (count_include_pad "
                           f"{layer.pool_count_include_pad}) has no NIR AvgPool2d")
        area = float(layer.pool_size[0] * layer.pool_size[1])    # NIR averages where the engine sums
    weight = layer.weights.astype(np.float64).transpose(3, 2, 0, 1)   # (Cout, Cin, KH, KW)
    factor = step * area
    hi, wi = shape[1:]
    nodes[synapse] = nir.Conv2d(input_shape=(hi, wi), weight=weight * factor[:, None, None, None],
                                stride=tuple(layer.stride), padding=(top, left), dilation=(1, 1), groups=1,
                                bias=layer.bias * factor, metadata={SCALE_KEY: step})
    edges.append((previous, synapse))
    previous = synapse
    if layer.pool == "avg":
        pool = f"{layer.name}.pool"
        nodes[pool] = nir.AvgPool2d(kernel_size=np.array(layer.pool_size), stride=np.array(layer.pool_stride),
                                    padding=np.array(layer.pool_pads[::2]))
        edges.append((previous, pool))
        previous = pool
    oh, ow = layer.output_shape[:2]
    return previous, (layer.output_shape[2], oh, ow)


class NirImporter:
    """Reads NIR graphs into an integer Model directly (``builds_model``; see the module docstring)."""

    name = "nir"
    extensions = (".nir",)
    supported_ops = SUPPORTED_NODES
    builds_model = True

    def can_import(self, source) -> bool:
        if isinstance(source, (str, Path)):
            return str(source).lower().endswith(".nir")
        return type(source).__name__ == "NIRGraph"

    def load(self, source, **options):
        raise NirError("a NIR graph converts straight to an integer Model: use es.convert(path, ...) "
                       "(edgesnn_nir.build_model), there is no float Graph to return")

    def build_model(self, source, **options):
        return build_model(source, **options)

    def to_nir(self, model, path=None, **options):
        return to_nir(model, path, **options)


@hookimpl
def edgesnn_register_importers(register):
    register("nir", NirImporter())


__all__ = ["NirImporter", "build_model", "simulate", "to_nir", "NirError", "SUPPORTED_NODES"]
