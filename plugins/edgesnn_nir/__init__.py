"""NIR importer and exporter: ``.nir`` files (the Neuromorphic Intermediate Representation) <-> integer Model.

    model = es.convert("net.nir", samples=None, weight_bits=8, dt=1e-4)
    model.to_nir("out.nir")                  # or edgesnn_nir.to_nir(model, "out.nir")

**Design: a direct builder, not a float Graph.**  Every other importer returns a float Graph that
the converter calibrates.  A NIR graph is already a spiking network: its thresholds, time
constants and resets are the network, and there is nothing to calibrate.  So this importer
declares ``builds_model = True`` and ``es.convert`` hands the file to ``build_model``, which maps
each synapse + neuron pair straight onto one integer layer (docs/semantics.md):

- ``Affine`` / ``Linear`` (with any ``Scale`` right after it folded in; a ``Flatten`` of a CHW
  tensor before it permutes the weight columns into the HWC order of the Model) -> a ``dense``
  synaptic stage;
- the neuron after it: ``LIF`` -> ``lif`` with a multiplicative decay, ``IF`` -> ``if``, ``LI`` or
  ``Integrator`` (last only) -> ``none``.

**Discretization at ``dt``** (the ``dt`` option; else the graph's ``metadata["dt"]``; else 1e-4,
snnTorch's export convention), forward Euler, as the NIR reference simulators do:
``LIF``: ``v_t = (1 - dt/tau) v_{t-1} + (dt r / tau) (W x_t + b)``; ``IF``: ``v_t = v_{t-1} + dt r (W x_t + b)``;
spike when ``v > v_threshold``, then ``v = v_reset``.  Per output channel the input gain
``g = dt r / tau`` (or ``dt r``) is folded into the weights, which are quantized symmetrically to
``weight_bits`` with the scale ``s = max |g W| / (2^(b-1) - 1)`` (``s = 1`` when the weights are
already integers in range, so an exported model comes back identical); the threshold becomes
``floor(v_threshold / s) + 1`` (NIR's strict ``>`` on the integer grid) and ``1 - dt/tau`` the decay
multiplier over ``2^16``.  ``v_reset = 0`` maps to ``reset="zero"``; ``v_leak != 0`` or another
``v_reset`` is refused.  A ``LI`` output layer becomes the int32 sum of its input over timesteps
(the class scores; its leak is not modelled, which does not change which class leads only when
its tau is long: a warning says so).

**Refused, naming the node:** ``CubaLIF`` / ``CubaLI`` (a synaptic current state an integer layer
does not have), ``Conv1d`` / ``Conv2d`` / ``SumPool2d`` / ``AvgPool2d`` (not mapped yet), and
anything else.  Input values are integers of ``input_bits`` (default 1: spikes).

**Export** writes each layer as ``Affine`` (its integer weights and bias as floats) and its neuron:
``lif`` with decay -> ``LIF`` (``tau = dt / (1 - beta)``, ``r = tau / dt``), ``if`` -> ``IF`` (``r = 1/dt``),
``none`` -> ``I`` (nir's Integrator, ``r = 1/dt``); thresholds become ``threshold - 0.5``.  NIR's neurons
reset to ``v_reset``: a subtractive reset does not survive export, and a warning says so.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pluggy

hookimpl = pluggy.HookimplMarker("edgesnn")

DT_DEFAULT = 1e-4          # seconds; snnTorch's export_to_nir writes tau = dt / (1 - beta) with this dt
DECAY_SHIFT = 16           # decay multipliers are beta * 2^16
SUPPORTED_NODES = ("Input", "Output", "Affine", "Linear", "Scale", "Flatten", "IF", "LIF", "LI", "I")
# nir's integrator node is the class `I` ("Integrator" in the NIR paper); both names are read


class NirError(ValueError):
    """A NIR graph this importer cannot map (the message names the node)."""


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


def _vector(value, count: int, what: str, node: str) -> np.ndarray:
    arr = np.asarray(value, np.float64).reshape(-1)
    if arr.size == 1:
        arr = np.full(count, float(arr[0]))
    if arr.size != count:
        raise NirError(f"NIR node {node!r}: {what} has {arr.size} values for {count} neurons")
    return arr


def _quantize(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output row of `w` (Cout, fan_in): integer weights and their scale (1 where already integers)."""
    qmax = 2 ** (bits - 1) - 1
    peak = np.abs(w).max(axis=1)
    exact = np.all(w == np.round(w), axis=1) & (peak <= qmax)
    scale = np.where(exact, 1.0, np.where(peak > 0, peak / qmax, 1.0))
    return np.clip(np.round(w / scale[:, None]), -qmax - 1, qmax).astype(np.int64), scale


def build_model(source, *, weight_bits: int = 8, input_bits: int = 1, dt: float | None = None,
                timesteps: int | None = None, labels=None):
    """The integer Model of a NIR graph (a path or a ``nir.NIRGraph``); see the module docstring."""
    import edgesnn as es
    from edgesnn import layers as L

    nir = _nir()
    graph = nir.read(source) if isinstance(source, (str, Path)) else source
    dt = float(dt if dt is not None else (graph.metadata or {}).get("dt", DT_DEFAULT))
    chain = _chain(graph)
    shape = tuple(int(v) for v in np.asarray(chain[0][1].input_type["input"]).reshape(-1))
    if len(shape) == 1:
        input_shape, chw = (1, 1, shape[0]), None
    elif len(shape) == 3:
        input_shape, chw = (shape[1], shape[2], shape[0]), shape
    else:
        raise NirError(f"NIR Input {chain[0][0]!r}: shape {shape}; the importer maps (N,) and (C, H, W) inputs")
    layers, pending = [], None     # pending: (name, weight (Cout, fan_in), bias) waiting for its neuron
    for name, node in chain[1:]:
        kind = type(node).__name__
        if kind == "Output":
            continue
        if kind == "Flatten":
            continue   # a dense stage flattens; the CHW -> HWC column order is handled below
        if kind in ("Affine", "Linear"):
            if pending is not None:
                raise NirError(f"NIR node {name!r}: two synapses in a row ({pending[0]!r}, {name!r}) without a "
                               f"neuron between them")
            weight = np.asarray(node.weight, np.float64)
            bias = np.asarray(node.bias, np.float64) if kind == "Affine" else np.zeros(weight.shape[0])
            if not layers and chw is not None:   # columns in CHW order -> the Model's HWC order
                c, h, w = chw
                weight = weight.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)
            pending = (name, weight, bias)
            continue
        if kind == "Scale":
            if pending is None:
                raise NirError(f"NIR node {name!r}: a Scale must follow an Affine or Linear node to be folded")
            s = _vector(node.scale, pending[1].shape[0], "scale", name)
            pending = (pending[0], pending[1] * s[:, None], pending[2] * s)
            continue
        kind = "Integrator" if kind == "I" else kind
        if kind not in ("IF", "LIF", "LI", "Integrator"):
            why = {"CubaLIF": "its synaptic current is a second state an integer layer does not have",
                   "CubaLI": "its synaptic current is a second state an integer layer does not have"}.get(
                kind, "not mapped yet" if kind in ("Conv1d", "Conv2d", "SumPool2d", "AvgPool2d") else "unknown")
            raise NirError(f"NIR node {name!r} ({kind}) cannot be converted: {why}; the importer maps "
                           f"{', '.join(SUPPORTED_NODES)}")
        if pending is None:
            raise NirError(f"NIR node {name!r} ({kind}): a neuron needs an Affine or Linear node before it")
        layers.append(_layer(L, name, kind, node, pending, weight_bits, dt, last=False))
        pending = None
    if pending is not None:
        raise NirError(f"NIR node {pending[0]!r}: the graph ends in a synapse; add an LI or Integrator output")
    for layer in layers[:-1]:
        if layer.neuron == "none":
            raise NirError(f"NIR node {layer.name!r}: LI / Integrator neurons are mapped only as the last layer")
    metadata = {"timesteps": timesteps} if timesteps else {}
    if labels is not None:
        metadata["labels"] = list(labels)
    metadata["nir"] = {"dt": dt}
    return es.Model(layers, input_shape=input_shape, input_bits=input_bits, metadata=metadata)


def _layer(L, name, kind, node, pending, weight_bits, dt, last):
    _, weight, bias = pending
    cout = weight.shape[0]
    r = _vector(node.r, cout, "r", name)
    if kind in ("LIF", "LI"):
        tau = _vector(node.tau, cout, "tau", name)
        if np.any(_vector(node.v_leak, cout, "v_leak", name) != 0):
            raise NirError(f"NIR node {name!r} ({kind}): v_leak != 0 is not mapped (the integer leak decays to 0)")
        gain, beta = dt * r / tau, 1.0 - dt / tau
        if np.any(beta < 0) or np.any(beta > 1):
            raise NirError(f"NIR node {name!r}: dt {dt} / tau gives a decay outside [0, 1]; give a smaller dt")
    else:
        gain, beta = dt * r, None
    wq, scale = _quantize(weight * gain[:, None], weight_bits)
    fields = dict(name=name, weights=wq.T, bias=np.round(bias * gain / scale).astype(np.int64),
                  weight_bits=weight_bits)
    if kind in ("LI", "Integrator"):
        if kind == "LI":
            warnings.warn(f"NIR node {name!r} (LI): the output layer sums its input over timesteps; its leak "
                          f"(tau {tau.min():g}..{tau.max():g} s) is not modelled", stacklevel=3)
        return L.Dense(neuron="none", **fields)
    v_threshold = _vector(node.v_threshold, cout, "v_threshold", name)
    v_reset = _vector(node.v_reset if node.v_reset is not None else 0.0, cout, "v_reset", name)
    if np.any(v_reset != 0):
        raise NirError(f"NIR node {name!r} ({kind}): v_reset != 0 is not mapped (resets go to zero)")
    fields.update(threshold=np.clip(np.floor(v_threshold / scale) + 1, 1, 2**31 - 1).astype(np.int64),
                  reset="zero")
    if kind == "LIF":
        fields.update(neuron="lif", decay_shift=DECAY_SHIFT,
                      decay_multiplier=np.round(beta * 2**DECAY_SHIFT).astype(np.int64))
        return L.Dense(**fields)
    return L.Dense(neuron="if", **fields)


def to_nir(model, path=None, *, dt: float = DT_DEFAULT):
    """A ``nir.NIRGraph`` of `model` (dense layers only), written to `path` when given; see the module docstring."""
    nir = _nir()
    h, w, c = model.input_shape
    nodes = {"input": nir.Input(input_type={"input": np.array([h * w * c] if (h, w) == (1, 1) else [c, h, w])})}
    edges, previous = [], "input"
    if (h, w) != (1, 1):
        nodes["flatten"] = nir.Flatten(input_type={"input": np.array([c, h, w])}, start_dim=0, end_dim=-1)
        edges.append(("input", "flatten"))
        previous = "flatten"
    for index, layer in enumerate(model.layers):
        if layer.kind != "dense" or layer.inputs != ((model.layers[index - 1].name,) if index else ("input",)):
            raise NirError(f"layer {layer.name!r} ({layer.kind}): export maps sequential dense layers only")
        weight = layer.weights.astype(np.float64).T       # (Cout, fan_in), fan_in in HWC order
        if index == 0 and (h, w) != (1, 1):              # NIR flattens CHW
            weight = weight.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(weight.shape[0], -1)
        cout = weight.shape[0]
        synapse, neuron = f"{layer.name}.synapse", layer.name
        nodes[synapse] = nir.Affine(weight=weight, bias=layer.bias.astype(np.float64))
        if layer.neuron in ("if", "lif") and layer.reset == "subtract":
            warnings.warn(f"layer {layer.name!r}: NIR neurons reset to v_reset; the subtractive reset is exported "
                          f"as a reset to zero", stacklevel=2)
        if layer.neuron in ("if", "lif") and (layer.reset == "none" or layer.membrane_floor is not None):
            raise NirError(f"layer {layer.name!r}: reset {layer.reset!r} / membrane_floor have no NIR neuron")
        threshold = layer.threshold.astype(np.float64) - 0.5
        if layer.neuron == "lif":
            if layer.decay_multiplier is not None:
                beta = layer.decay_multiplier.astype(np.float64) / 2**layer.decay_shift
            else:
                beta = np.full(cout, 1.0 - 2.0 ** -layer.leak_shift)
            if np.any(beta >= 1):
                raise NirError(f"layer {layer.name!r}: a decay of 1 has no NIR LIF (tau would be infinite)")
            tau = dt / (1 - beta)
            nodes[neuron] = nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros(cout), v_threshold=threshold,
                                    v_reset=np.zeros(cout))
        elif layer.neuron == "if":
            nodes[neuron] = nir.IF(r=np.full(cout, 1 / dt), v_threshold=threshold, v_reset=np.zeros(cout))
        elif layer.neuron == "none":
            nodes[neuron] = nir.I(r=np.full(cout, 1 / dt))
        else:
            raise NirError(f"layer {layer.name!r}: neuron {layer.neuron!r} has no NIR node (relu is not spiking)")
        edges += [(previous, synapse), (synapse, neuron)]
        previous = neuron
    nodes["output"] = nir.Output(output_type={"output": np.array([model.layers[-1].output_shape[-1]])})
    edges.append((previous, "output"))
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": dt}, type_check=False)
    if path is not None:
        nir.write(path, graph)
    return graph


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


__all__ = ["NirImporter", "build_model", "to_nir", "NirError", "SUPPORTED_NODES"]
