"""Mixed precision: per-layer sensitivity to weight bits, and per-layer bit widths under a byte budget.

    report = es.sensitivity("net.onnx", samples, input_scaling=(255, 0))     # SNR and packed bytes per layer
    print(report.table())
    model = es.convert("net.onnx", samples, activation_bits=4, budget_bytes=20_000)
    model.metadata["budget"]        # {"budget_bytes", "packed_bytes", "layer_weight_bits"}

Sensitivity: the network with one layer's weights at 2, 4 or 8 bits (every other layer at 8 bits, the
activations at `activation_bits`) is run as the fake-quantized module of edgesnn.finetuning, which computes
what the integer Model computes; the loss is the output's SNR against the float network (and the accuracy,
with labels). Budget: every synaptic layer starts at 8 bits; while the model's packed bytes exceed the
budget, the layer step (8 -> 4 or 4 -> 2) that adds the least output noise per byte saved is taken
(greedy, noise assumed additive over layers). The packed bytes of every assignment are exact (each
layer's packed bytes at each width are measured on converted models), so the budget is never exceeded;
a budget below the all-2-bit model raises ValueError naming the smallest possible size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .convert import _check_samples, _float_input, convert, load_graph
from .statistics import format_table

BITS = (2, 4, 8)


@dataclass
class LayerSensitivity:
    layer: str
    kind: str
    params: int
    bytes: dict                   # bits -> packed bytes of this layer
    snr_db: dict                  # bits -> output SNR (dB) with this layer at bits
    noise: dict                   # bits -> output mean squared error
    accuracy: dict = field(default_factory=dict)   # bits -> accuracy (with labels)


@dataclass
class SensitivityReport:
    layers: list
    float_accuracy: float | None
    fixed_bytes: int              # packed bytes of the layers without weights

    def table(self) -> str:
        heads = ["layer", "kind", "params"] + [f"bytes@{b}" for b in BITS] + [f"SNR dB @{b}" for b in BITS]
        if self.layers and self.layers[0].accuracy:
            heads += [f"acc @{b}" for b in BITS]
        rows = []
        for l in self.layers:
            row = [l.layer, l.kind, f"{l.params:,}"] + [f"{l.bytes[b]:,}" for b in BITS]
            row += [f"{l.snr_db[b]:.1f}" for b in BITS]
            if l.accuracy:
                row += [f"{l.accuracy[b]:.3f}" for b in BITS]
            rows.append(row)
        text = format_table(heads, rows)
        if self.float_accuracy is not None:
            text += f"\nfloat accuracy {self.float_accuracy:.4f}"
        return text

    def __str__(self) -> str:
        return self.table()


def _base_options(kw: dict) -> dict:
    keep = ("activation_bits", "input_bits", "input_scaling", "per_channel", "calibration", "neuron", "timesteps",
            "importer", "equalize", "bias_correction", "search_ranges", "ranges", "labels")
    return {k: v for k, v in kw.items() if k in keep and v is not None}


def sensitivity(source, samples, y=None, *, activation_bits: int = 8, input_scaling=(1.0, 0.0),
                calibration: str = "minmax", importer=None, progress: bool = False, **convert_options):
    """Per synaptic layer: packed bytes and the output SNR (accuracy with labels `y`) at 2, 4 and 8 weight bits."""
    import torch

    from .finetuning import _mid_scales, graph_module, plan_from_model

    x = np.asarray(samples)
    hint = x.shape[1:] if x.ndim == 4 else None
    graph = load_graph(source, importer=importer, input_shape_hint=hint).simplify()
    x = _check_samples(x, graph.input_shape, 8)
    options = dict(activation_bits=activation_bits, input_scaling=input_scaling, calibration=calibration,
                   progress=progress, **convert_options)
    options.setdefault("per_channel_activations", False)       # one range per layer, as the fake-quantized module
    options["on_low_fidelity"] = "record"       # measurement models: their SNR is what this reports
    models = {b: convert(graph, x, weight_bits=b, input_weight_bits=b, **options) for b in BITS}
    plan = plan_from_model(models[8], graph)
    _mid_scales(graph, plan, _float_input(x, input_scaling), calibration)
    module = graph_module(graph, plan)
    xf = torch.tensor(_float_input(x, input_scaling).transpose(0, 3, 1, 2).copy())
    module.quantize = False
    with torch.no_grad():
        target = module(xf)
    module.quantize = True
    signal = float((target ** 2).mean())
    yv = None if y is None else np.asarray(y).reshape(-1)
    float_accuracy = None if yv is None else float(np.mean(target.argmax(1).numpy() == yv))
    rows = []
    base_bits = dict(plan.weight_bits)
    for layer in models[8].layers:
        if layer.name not in base_bits:
            continue
        row = LayerSensitivity(layer.name, layer.kind, int(np.asarray(layer.weights).size)
                               + int(np.asarray(getattr(layer, "pointwise", None) if getattr(layer, "pointwise", None)
                                                is not None else []).size),
                               {b: _layer(models[b], layer.name).packed_bytes for b in BITS}, {}, {})
        for b in BITS:
            module.plan.weight_bits = dict(base_bits, **{layer.name: b})
            with torch.no_grad():
                out = module(xf)
            noise = float(((out - target) ** 2).mean())
            row.noise[b] = noise
            row.snr_db[b] = math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-30) / noise)
            if yv is not None:
                row.accuracy[b] = float(np.mean(out.argmax(1).numpy() == yv))
        module.plan.weight_bits = dict(base_bits)
        rows.append(row)
    weighted = {l.layer for l in rows}
    fixed = sum(l.packed_bytes for l in models[8].layers if l.name not in weighted)
    return SensitivityReport(rows, float_accuracy, fixed)


def _layer(model, name):
    return next(l for l in model.layers if l.name == name)


def choose_bits(report: SensitivityReport, budget_bytes: int) -> dict:
    """{layer: bits}: greedy from all-8-bit, the cheapest noise per byte saved first, until within budget."""
    bits = {l.layer: 8 for l in report.layers}
    by_name = {l.layer: l for l in report.layers}

    def total() -> int:
        return report.fixed_bytes + sum(by_name[n].bytes[b] for n, b in bits.items())

    smallest = report.fixed_bytes + sum(l.bytes[2] for l in report.layers)
    if smallest > budget_bytes:
        raise ValueError(f"budget_bytes={budget_bytes:,} is below the smallest model at 2-bit weights everywhere "
                         f"({smallest:,} packed bytes)")
    while total() > budget_bytes:
        best, best_cost = None, math.inf
        for name, b in bits.items():
            if b == 2:
                continue
            lower = BITS[BITS.index(b) - 1]
            l = by_name[name]
            saved = l.bytes[b] - l.bytes[lower]
            if saved <= 0:
                continue
            cost = max(l.noise[lower] - l.noise[b], 0.0) / saved
            if cost < best_cost:
                best, best_cost = (name, lower), cost
        if best is None:
            break
        bits[best[0]] = best[1]
    return bits


def convert_within_budget(source, samples, budget_bytes: int, *, progress: bool = True, layer_weight_bits=None,
                          weight_bits=None, input_weight_bits=None, **options):
    """es.convert(..., budget_bytes=N): per-layer weight bits from es.sensitivity, packed bytes <= N."""
    base = {k: v for k, v in options.items() if v is not None}
    importer_options = {k: v for k, v in base.items() if k not in _KNOWN}
    sens_options = {k: v for k, v in base.items() if k in ("activation_bits", "input_scaling", "calibration",
                                                           "neuron", "timesteps", "per_channel", "input_bits",
                                                           "importer")}
    graph = load_graph(source, importer=base.get("importer"),
                       input_shape_hint=np.shape(samples)[1:] if np.ndim(samples) == 4 else None,
                       **importer_options)
    report = sensitivity(graph, samples, **sens_options)
    bits = choose_bits(report, int(budget_bytes))
    bits.update(layer_weight_bits or {})
    convert_kw = {k: v for k, v in base.items() if k != "importer" and k not in importer_options}
    model = convert(graph, samples, weight_bits=8, layer_weight_bits=bits, progress=progress, **convert_kw)
    if model.packed_bytes > budget_bytes:
        raise ValueError(f"the chosen widths give {model.packed_bytes:,} packed bytes, over budget_bytes="
                         f"{budget_bytes:,} (layer_weight_bits given by hand?)")
    model.metadata["budget"] = {"budget_bytes": int(budget_bytes), "packed_bytes": int(model.packed_bytes),
                                "layer_weight_bits": bits}
    return model


_KNOWN = {"activation_bits", "input_bits", "input_scaling", "per_channel", "calibration", "neuron", "timesteps",
          "labels", "importer", "ranges", "equalize", "bias_correction", "search_ranges", "on_low_fidelity"}
