"""The post-training recipe: cross-layer equalization, bias correction and activation range search.

    model = es.convert(src, samples, weight_bits=4, activation_bits=4, calibration="mse",
                       equalize=True, bias_correction=True, search_ranges=True)
    graph = equalize(es.convert_graph(src))      # or by hand on a float Graph

Each step is a keyword of es.convert and can be switched off; ``model.metadata["recipe"]`` says what each
did, and es.compare shows the per-layer SNR it bought.

- **equalize** (Nagel et al. 2019, "data-free quantization"): for a depthwise -> [ReLU] [max pool] ->
  conv2d pair (and inside each separable node), channel i of the depthwise output is divided by s_i and
  the reader's input channel i multiplied by s_i. ReLU and max pooling commute with a positive scale, so
  the float function is unchanged (exactly, up to float rounding). s_i = sqrt(r1_i / r2_i) balances the
  depthwise channel's range r1_i (its activation range on the samples, or its weight range without
  samples) against the reader's weight range r2_i on that channel, so one per-tensor activation step
  and per-channel weight steps fit all channels.
- **bias_correction**: layer by layer, the mean shift per output channel that quantization adds to the
  synaptic node's output (measured on the samples with the fake-quantized network, which computes what
  the integer Model computes: edgesnn.finetuning) is subtracted from the float bias.
- **search_ranges**: each activation's clip (lo, hi) is searched, one layer after the other, for the
  smallest divergence of the *network's output* (KL of the softmax) from the float network's, not of
  the layer's own values; the result is passed to the converter as fixed ranges.
"""

from __future__ import annotations

import numpy as np

from .graph import Graph, Node

SCALE_LIMIT = 100.0                       # equalization scales are kept in [1 / limit, limit]
SEARCH_FACTORS = (0.35, 0.5, 0.65, 0.8, 0.9, 1.0, 1.1)   # candidate clips, relative to the calibrated one
SEARCH_SAMPLES = 256


def equalize(graph: Graph, activations: dict | None = None) -> tuple[Graph, list]:
    """Cross-layer equalization of depthwise -> pointwise pairs; returns (new graph, names of the pairs).

    `activations` (node -> float values, as Graph.run(capture=True) gives) makes the depthwise side's
    range its activation range; without it, its weight range.
    """
    graph = graph.copy()
    done = []
    for node in graph.nodes:
        if node.op == "separable_conv2d":
            _equalize_separable(node)
            done.append(node.name)
            continue
        if node.op != "depthwise_conv2d":
            continue
        chain = _positive_chain(graph, node)
        if chain is None:
            continue
        reader = chain[-1]
        w1 = np.asarray(node.params["weight"], np.float64)                  # (KH, KW, C)
        w2 = np.asarray(reader.params["weight"], np.float64)                # (KH, KW, C, Cout)
        if activations is not None and node.name in activations:
            r1 = np.abs(activations[node.name]).reshape(-1, w1.shape[-1]).max(axis=0)
        else:
            r1 = np.abs(w1).reshape(-1, w1.shape[-1]).max(axis=0)
        r2 = np.abs(w2).transpose(2, 0, 1, 3).reshape(w2.shape[2], -1).max(axis=1)
        s = _scales(r1, r2)
        node.params["weight"] = (w1 / s).astype(np.float32)
        node.params["bias"] = (np.asarray(node.params["bias"], np.float64) / s).astype(np.float32)
        reader.params["weight"] = (w2 * s[None, None, :, None]).astype(np.float32)
        done.append(f"{node.name} -> {reader.name}")
    return graph.replace(), done


def _scales(r1, r2) -> np.ndarray:
    ok = (r1 > 0) & (r2 > 0)
    s = np.ones_like(r1)
    s[ok] = np.sqrt(r1[ok] / r2[ok])
    return np.clip(s, 1 / SCALE_LIMIT, SCALE_LIMIT)


def _equalize_separable(node: Node) -> None:
    d = np.asarray(node.params["depthwise"], np.float64)          # (KH, KW, C*M)
    p = np.asarray(node.params["pointwise"], np.float64)          # (C*M, Cout)
    s = _scales(np.abs(d).reshape(-1, d.shape[-1]).max(axis=0), np.abs(p).max(axis=1))
    node.params["depthwise"] = (d / s).astype(np.float32)
    node.params["pointwise"] = (p * s[:, None]).astype(np.float32)


def _positive_chain(graph: Graph, node: Node) -> list | None:
    """[relu] [max_pool] ... conv2d after `node`, each the sole reader of the one before (None otherwise)."""
    chain, last = [], node
    while True:
        if last.name == graph.output:
            return None
        readers = graph.consumers(last.name)
        if len(readers) != 1:
            return None
        nxt = readers[0]
        if nxt.op == "conv2d":
            chain.append(nxt)
            return chain
        if (nxt.op == "relu" and nxt.attrs.get("max_value") is None) or \
                (nxt.op == "max_pool" and not np.any(np.asarray(nxt.attrs.get("channel_sign") or [1]) < 0)):
            chain.append(nxt)
            last = nxt
            continue
        return None


def _convert_options(options: dict) -> dict:
    keep = ("weight_bits", "activation_bits", "input_bits", "input_scaling", "per_channel", "calibration", "neuron",
            "timesteps", "input_weight_bits", "layer_weight_bits")
    out = {k: options[k] for k in keep if k in options}
    out.setdefault("input_weight_bits", options.get("weight_bits"))
    return out


def _fake_quant(graph: Graph, x: np.ndarray, options: dict, ranges: dict | None = None):
    """The fake-quantized torch module of what es.convert makes of `graph` with `options`."""
    from .convert import convert
    from .finetuning import _mid_scales, graph_module, plan_from_model
    from .convert import _float_input

    model = convert(graph, x, progress=False, ranges=ranges, on_low_fidelity="record",   # a step of the recipe
                    **_convert_options(options))
    plan = plan_from_model(model, graph)
    _mid_scales(graph, plan, _float_input(x, options["input_scaling"]), options["calibration"])
    return graph_module(graph, plan)


def bias_correction(graph: Graph, x: np.ndarray, options: dict, ranges: dict | None = None) -> tuple[Graph, dict]:
    """Subtract each synaptic node's mean quantization shift per channel from its bias, layer by layer;
    returns (new graph, node -> largest correction relative to the node's output spread)."""
    import torch

    from .convert import _float_input

    graph = graph.copy()
    xf = torch.tensor(_float_input(x, options["input_scaling"]).transpose(0, 3, 1, 2).copy())
    synaptic = [n for n in graph.nodes if n.op in ("conv2d", "depthwise_conv2d", "separable_conv2d", "dense")
                and n.name != graph.output]
    float_module = _fake_quant(graph, x, options, ranges)
    float_module.quantize = False
    float_module.capture = {}
    with torch.no_grad():
        float_module(xf)
    reference = {k: v for k, v in float_module.capture.items()}
    found = {}
    for node in synaptic:
        module = _fake_quant(graph, x, options, ranges)
        module.capture = {}
        with torch.no_grad():
            module(xf)
        q = module.capture[node.name].numpy()
        f = reference[node.name].numpy()
        shift = (q - f).mean(axis=(0, 2, 3))
        spread = f.std(axis=(0, 2, 3)) + 1e-12
        node.params["bias"] = (np.asarray(node.params["bias"], np.float64) - shift).astype(np.float32)
        found[node.name] = float(np.max(np.abs(shift) / spread))
    return graph.replace(), found


def search_ranges(graph: Graph, x: np.ndarray, options: dict) -> dict:
    """{node: (lo, hi)}: each activation clip chosen, in graph order, for the smallest output divergence."""
    import torch

    from .convert import _float_input

    x = x[:SEARCH_SAMPLES]
    xf = torch.tensor(_float_input(x, options["input_scaling"]).transpose(0, 3, 1, 2).copy())
    module = _fake_quant(graph, x, options)
    module.quantize = False
    with torch.no_grad():
        target = module(xf)
    module.quantize = True

    soft = torch.softmax(target, dim=1)

    def error() -> float:
        """KL(float || quantized) of the output's softmax: what the class decision feels."""
        with torch.no_grad():
            return float(torch.nn.functional.kl_div(torch.log_softmax(module(xf), dim=1), soft,
                                                    reduction="batchmean"))

    for q in module.quant.values():
        lo0, hi0 = q.learned()
        best, best_err = (lo0, hi0), error()
        for f in SEARCH_FACTORS:
            q.set_bounds(lo0 * f, hi0 * f)
            err = error()
            if err < best_err:
                best, best_err = (lo0 * f, hi0 * f), err
        q.set_bounds(*best)
    return {q.point.node: q.learned() for q in module.quant.values()}


def post_training_recipe(graph: Graph, x: np.ndarray, options: dict, *, equalize: bool = True,
                         bias_correction: bool = True, search_ranges: bool = True) -> tuple[Graph, dict, dict]:
    """(graph, ranges, what was done) for es.convert's equalize / bias_correction / search_ranges."""
    from .convert import _float_input

    done: dict = {}
    calib = x[:SEARCH_SAMPLES * 2]
    if equalize:
        _, acts = graph.run(_float_input(calib, options["input_scaling"]), capture=True)
        graph, pairs = globals()["equalize"](graph, acts)
        done["equalized"] = pairs
    ranges = {}
    if search_ranges:       # first: bias correction then measures the shift with the searched clips
        ranges = globals()["search_ranges"](graph, calib, options)
        done["searched_ranges"] = {k: [round(lo, 6), round(hi, 6)] for k, (lo, hi) in ranges.items()}
    if bias_correction:
        graph, found = globals()["bias_correction"](graph, calib, options, ranges or None)
        done["bias_correction"] = {k: round(v, 4) for k, v in found.items()}
    return graph, ranges, done


def correct_integer_biases(model, x: np.ndarray, activations: dict, bias_scales: dict,
                           index: np.ndarray | None = None) -> dict:
    """Empirical bias correction of a converted relu Model, in its integer biases (in place), layer by layer.

    Each synaptic layer's potentials before pooling, dequantized (potential * bias_scales[layer], the float
    value of one bias unit), are compared with its float node's output (`activations[layer.name]`, rows
    `index` of it for the samples `x`) on the integer model's own inputs, those of the layers before it
    already corrected: the mean difference per output channel, the shift the quantization of the weights
    and of every earlier layer adds, is subtracted from the integer bias (rounded to bias units), and the
    corrected layer feeds the next. Returns {layer: largest |shift| over its channels / the channel's float
    spread}, for the layers corrected. One pass of the numpy reference engine over `x`.
    """
    from . import reference
    from .layers import INT32_MAX, INT32_MIN

    x5 = model.check_input(x, 1)
    acts = {"input": x5[:, 0].astype(np.int64)}
    state: dict = {}
    found = {}
    for layer in model.layers:
        potentials, _ = reference.SYNAPTIC[layer.kind](layer, [acts[name] for name in layer.inputs])
        scale = bias_scales.get(layer.name)
        want = activations.get(layer.name)
        if scale is not None and want is not None:
            want = np.asarray(want if index is None else want[index], np.float64)
            if want.size == potentials.size:
                want = want.reshape(potentials.shape)
                error = potentials * scale - want
                shift = error.reshape(-1, error.shape[-1]).mean(axis=0)
                units = np.round(shift / scale).astype(np.int64)
                bias = np.clip(layer.bias.astype(np.int64) - units, INT32_MIN, INT32_MAX)
                units = layer.bias.astype(np.int64) - bias
                layer.bias = bias.astype(np.int32)
                potentials = potentials - units
                spread = want.reshape(-1, want.shape[-1]).std(axis=0) + 1e-12
                found[layer.name] = float(np.max(np.abs(shift) / spread))
        acts[layer.name] = reference._neuron(layer, reference._pool(layer, potentials), state)
    return found
