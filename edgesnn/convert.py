"""Conversion: a float network (any importer's Graph) -> an integer Model, and the fidelity report.

    model = es.convert("net.onnx", samples=x_uint8, weight_bits=4, activation_bits=4)
    report = es.compare("net.onnx", model, x_uint8, y)

How (docs/semantics.md has the integer side):

1. The source is imported by the importer plugin that accepts it, then simplified (batch norm
   folded, also through pooling; identity, layout ops and a final softmax dropped; pads merged:
   edgesnn.graph). Every node that will not convert is listed at once (``es.check``, or
   ``es.ConversionError.problems``) before any calibration runs.
2. The float graph runs on the calibration `samples` (seen as ``(x - offset) / scale``) and every
   activation's range is measured ("minmax", "percentile" = 99.99th percentile, or "mse" = the
   clipping that minimizes the quantization error), kept to 12 significant bits so that a re-run on
   another CPU, whose BLAS sums in another order, writes the same file (``reproducible``).
3. Nodes are grouped into integer layers: a synaptic node (conv, depthwise, separable, dense) or an
   add takes the pooling and the ReLU / ReLU6 / clip that follow it (a max pool after the ReLU
   commutes and is taken too). Concat, split and channel shuffle are *views*: a new channel order
   over existing integers, which costs a `concat` layer only where a consumer needs one tensor (or a
   pooling or activation follows). A pooling, batch norm or ReLU left on its own is a `concat` layer
   over its input's channels. Flatten/reshape before dense is free.
4. Every tensor is held as ``value = (a - zero_point) * scale`` per channel. A ReLU'd tensor has zero
   point 0; a signed one (a linear bottleneck, a residual sum, batch norm without ReLU) gets an
   output zero point from its calibrated range, and its consumers pad with it and fold it into their
   bias, so zero padding means what it meant in float, border taps included. The model input's
   offset (``input_scaling`` or a Rescaling layer) becomes the input conv's pad value the same way.
5. Weights are quantized symmetrically per output channel to `weight_bits`, with the input's
   per-channel scale folded in; biases, multipliers and shifts follow, so that
   ``q_out ~ float_out / scale_out``. An average pool's divisor is folded into the multiplier.
6. ``neuron="if"`` makes the spiking model (the NengoDL recipe): each ReLU becomes an
   integrate-and-fire neuron whose threshold is the activation range in potential units, so its
   spike rate over `timesteps` approximates ReLU / range; a spike carries the range to the next
   layer. The output layer sums its potentials over the timesteps. ``neuron="lif"`` is the same
   with a leaky neuron (NengoDL's LIF): its membrane decays by ``beta`` each step, and the leak is
   chosen from the rate approximation (``lif_decay``): the strongest leak ``beta = 1 - 2^-k`` whose
   spike count over `timesteps`, at every constant drive, stays within half a spike on average of
   the IF count the ReLU's rate stands for.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import layers as L
from .errors import ConversionError, ModelError, PrecisionError, PrecisionWarning
from .graph import Graph, GraphError, Node
from .model import Model
from .statistics import format_table

CALIBRATIONS = ("minmax", "percentile", "mse")
NEURONS = ("relu", "if", "lif")      # the converter's neuron recipes; if and lif are spiking
SPIKING = ("if", "lif")
PERCENTILE = 99.99
ADD_MULTIPLIER_BITS = 10      # add inputs are rescaled to a common scale with multipliers up to 2**10
CALIBRATION_VALUES_MAX = 2_000_000   # values per activation kept for percentile / mse search
SNR_WARN_DB = 10.0            # compare() warns below this per-layer SNR
FIDELITY_DB = 25.0            # convert() at 8/8 refuses (PrecisionError) below this output SNR on its samples
FIDELITY_SAMPLES = 128        # calibration samples the converted model is checked on (32 -> 128: +0-15 % convert time)
FIDELITY_HALF_QUANTILE = 0.1  # ... and on 9 in 10 of the batches of half of those samples (other inputs)
FIDELITY_FOLDS = 8            # ... out of sample: each fold's samples checked on a model calibrated on the others
FIDELITY_FOLDS_MIN_SAMPLES = 4   # with fewer samples the in-sample check decides (metadata["fidelity"] says so)
FIDELITY_LAYER_SAMPLES = 8    # of those, the ones a refusal's per-layer SNR (where it falls most) is measured on
LOW_FIDELITY = ("refuse", "warn", "record")   # convert(on_low_fidelity=...): what an 8/8 model under the bar gets


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


def _model_builder(source, importer: str | None):
    """The importer that declares ``builds_model`` and accepts `source` (it returns a Model, not a Graph), or None."""
    from . import plugins

    names = [importer] if importer is not None else plugins.importers()
    for name in names:
        candidate = plugins.get_importer(name)
        if getattr(candidate, "builds_model", False) and candidate.can_import(source):
            return candidate
    return None


def convert(source, samples, *, weight_bits: int = 8, activation_bits: int = 8, input_bits: int = 8,
            input_scaling: tuple[float, float] = (1.0, 0.0), per_channel: bool = True,
            calibration: str = "minmax", neuron: str = "relu", timesteps: int | None = None,
            labels: list[str] | None = None, importer: str | None = None, progress: bool = True,
            input_weight_bits: int | None = 8, layer_weight_bits: dict | None = None, ranges: dict | None = None,
            equalize: bool = False, bias_correction: bool = False, search_ranges: bool = False,
            per_channel_activations: bool | None = None, on_low_fidelity: str = "refuse",
            budget_bytes: int | None = None, **importer_options) -> Model:
    """Convert a float network into an integer Model calibrated on uint8 HWC `samples`.

    input_scaling=(scale, offset): the source model sees ``(x - offset) / scale`` (cnn2snn's
    convention); NCHW sources are transposed by their importer, so samples are always HWC.
    neuron: "relu" (quantized, stateless), "if" (spiking, rate-coded over `timesteps`, default 16) or
    "lif" (spiking with a leak chosen for `timesteps`, see lif_decay). Extra keyword arguments go to the
    importer (e.g. example_input for torch).

    Precision and the post-training recipe (edgesnn.calibrate, edgesnn.precision):
    input_weight_bits: weight bits of the layers reading the model input (8 by default, as Akida does;
    None: weight_bits). layer_weight_bits: {float node name: bits} per layer (2..8; 3, 5, 6, 7 are
    quantized to that many levels and stored in the next wider field). ranges: {float node name: (lo, hi)}
    fixed activation ranges (what es.finetune learned) instead of calibrated ones. equalize: cross-layer
    equalization of depthwise -> pointwise pairs; bias_correction: each layer's mean quantization shift
    folded into its bias; search_ranges: each activation's clip searched for the smallest network output
    error. budget_bytes: per-layer weight bits chosen greedily (es.sensitivity) so that
    model.packed_bytes <= budget_bytes (metadata["budget"] says what was chosen).
    per_channel_activations: each channel's activation range calibrated on its own (the requantization
    is per channel, so it costs nothing at run time); False: one range per layer. None (the default): per
    channel, but per layer with bias_correction, search_ranges or ranges (what they measure and learn); and at
    8/8 under the fidelity check, per layer when per-channel ranges do not hold out of sample and per-layer
    ones do (a channel's maximum over few samples underestimates what other inputs drive it to; one range
    per layer needs fewer samples): metadata["fidelity"]["per_channel_activations"] says which.

    Fidelity: the model is checked against the float graph on (up to 128, spread over) the samples at every
    output position, border taps included (metadata["fidelity"]). With every layer at 8/8 bits the check
    decides, out of sample: the checked samples fall in 8 interleaved folds, and each fold's output comes from
    a model calibrated (ranges, and the bias correction below) on the calibration samples without that fold,
    so no sample vouches for ranges fitted on itself (with fewer than 4 samples the in-sample figures decide:
    metadata["fidelity"]["decided_by"]; "in_sample" holds the in-sample figures of the same model). It must
    keep 25 dB SNR at every position on all of them and on 9 in 10 of the batches of half of them (a
    conversion that passes only because its good inputs outweigh its bad ones falls under the bar on other
    batches). With per_channel_activations=None both granularities are measured and the better one that keeps
    the bar is returned; when none does, the integer bias correction of each (each layer's mean quantization
    shift per channel, measured on the samples, taken out of its integer bias:
    edgesnn.calibrate.correct_integer_biases; metadata["bias_corrected"]) is measured the same way
    (metadata["fidelity"]["tried"] lists every other candidate measured); else it refuses the granularity
    nearest the bar: es.PrecisionError (a ConversionError) naming the SNR, the position, how it was
    measured, what was tried, the layer where the SNR falls most and what helps (more, more varied samples
    when the ranges do not hold on unseen ones). on_low_fidelity="warn" returns that model with an
    es.PrecisionWarning instead (an untrained or deliberately random network); "record" only records the
    in-sample metadata["fidelity"] (for a tool's intermediate models). Below 8 bits the in-sample SNR is
    recorded only. The out-of-sample check costs 8 more builds of the model (its calibration data are
    reused; twice that with per_channel_activations=None) and runs the integer model once more over the
    checked samples per granularity.
    """
    if on_low_fidelity not in LOW_FIDELITY:
        raise ValueError(f"on_low_fidelity must be one of {LOW_FIDELITY}, got {on_low_fidelity!r}")
    if budget_bytes is not None:
        from .precision import convert_within_budget

        return convert_within_budget(
            source, samples, budget_bytes, weight_bits=weight_bits, activation_bits=activation_bits,
            input_bits=input_bits, input_scaling=input_scaling, per_channel=per_channel, calibration=calibration,
            neuron=neuron, timesteps=timesteps, labels=labels, importer=importer, progress=progress,
            input_weight_bits=input_weight_bits, layer_weight_bits=layer_weight_bits, ranges=ranges,
            equalize=equalize, bias_correction=bias_correction, search_ranges=search_ranges,
            on_low_fidelity=on_low_fidelity, **importer_options)
    direct = _model_builder(source, importer)
    if direct is not None:   # an importer whose source is already an integer-ready spiking network (NIR)
        if samples is not None:   # calibration input, for an importer that can use it
            importer_options["samples"] = samples
        return direct.build_model(source, weight_bits=weight_bits, input_bits=input_bits, timesteps=timesteps,
                                  labels=labels, **importer_options)
    options = dict(weight_bits=weight_bits, activation_bits=activation_bits, input_bits=input_bits,
                   input_scaling=[float(v) for v in input_scaling], per_channel=per_channel,
                   calibration=calibration, neuron=neuron)
    # None: per channel, or one range per layer with a recipe or learned ranges (what they measure and learn);
    # at 8/8 under the check also per layer when per-channel ranges do not hold out of sample (_check_fidelity)
    auto = per_channel_activations is None and not (bias_correction or search_ranges or ranges)
    if per_channel_activations is None:
        per_channel_activations = not (bias_correction or search_ranges or ranges)
    if not per_channel_activations:
        options["per_channel_activations"] = False
    if input_weight_bits is not None and input_weight_bits != weight_bits:
        options["input_weight_bits"] = int(input_weight_bits)
    if layer_weight_bits:
        options["layer_weight_bits"] = {str(k): int(v) for k, v in layer_weight_bits.items()}
    _check_options(weight_bits, activation_bits, input_bits, input_scaling, calibration, neuron)
    for bits in list(options.get("layer_weight_bits", {}).values()) + [options.get("input_weight_bits", 8)]:
        if bits not in range(2, 9):
            raise ValueError(f"per-layer weight bits must be in 2..8, got {bits!r}")
    if neuron in SPIKING:
        timesteps = 16 if timesteps is None else timesteps
        options["timesteps"] = timesteps
    elif timesteps not in (None, 1):
        raise ValueError(f"timesteps={timesteps} only applies to neuron='if' or 'lif' (spiking); relu models run "
                         f"1 step")
    hint = np.shape(samples)[1:] if np.ndim(samples) == 4 else None
    graph = load_graph(source, importer=importer, input_shape_hint=hint, **importer_options).simplify()
    _Builder(graph.copy(), None, options).build()      # every node that will not convert, before calibrating
    _check_labels(labels, graph)
    x = _check_samples(samples, graph.input_shape, input_bits)
    recipe, source_graph = {}, graph
    if equalize or bias_correction or search_ranges:
        from .calibrate import post_training_recipe

        graph, found, recipe = post_training_recipe(graph, x, options, equalize=equalize,
                                                    bias_correction=bias_correction, search_ranges=search_ranges)
        ranges = {**found, **(ranges or {})}
    activations = _calibration_activations(graph, x, input_scaling, progress)
    fit = _Fit(graph, activations, dict(options, ranges=_ranges(ranges)), {
        "labels": list(labels) if labels is not None else graph.metadata.get("labels"),
        "input_scaling": options["input_scaling"],
        "provenance": {**_describe(source), "importer": graph.metadata.get("importer"),
                       "converter": options, "edgesnn_version": _version(),
                       "calibration_samples": int(len(x))},
        **({"timesteps": timesteps} if neuron in SPIKING else {}), **({"recipe": recipe} if recipe else {})})
    if neuron in SPIKING:
        return fit.model(per_channel_activations)[0]
    # checked on up to FIDELITY_SAMPLES spread over the calibration set (a set sorted by class: every class)
    pick = np.unique(np.linspace(0, len(x) - 1, min(len(x), FIDELITY_SAMPLES)).round().astype(np.int64))
    # the source's own float output: a recipe's graph (bias correction) is not the model the user brought
    float_out = activations[graph.output][pick] if source_graph is graph else \
        source_graph.run(_float_input(x[pick], input_scaling))
    all_8 = (weight_bits >= 8 and activation_bits >= 8 and options.get("input_weight_bits", 8) >= 8
             and all(b >= 8 for b in options.get("layer_weight_bits", {}).values()))
    return _check_fidelity(fit, x, pick, float_out, per_channel_activations, auto, all_8, on_low_fidelity, progress)


class _Rows:
    """The calibration activations of some samples only (`rows` of every array, taken on first use): what a
    conversion calibrated on those samples alone would see. What the builder adds (a separable layer's
    depthwise probe) stays here."""

    def __init__(self, activations: dict, rows: np.ndarray):
        self._all, self._rows, self._own = activations, rows, {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._own:
            self._own[name] = self._all[name][self._rows]
        return self._own[name]

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        self._own[name] = value

    def __contains__(self, name) -> bool:
        return name in self._own or name in self._all

    def get(self, name, default=None):
        return self[name] if name in self else default


@dataclass
class _Fit:
    """The calibrated conversion of one graph, repeatable on part of the samples: `model()` builds the integer
    Model from the activations of all calibration samples or of `rows` of them (the out-of-sample check's
    folds), with one activation range per channel or per layer."""
    graph: Graph
    activations: dict
    options: dict
    metadata: dict

    def model(self, per_channel_activations: bool, rows: np.ndarray | None = None) -> tuple[Model, "_Builder"]:
        options = dict(self.options)
        if not per_channel_activations:
            options["per_channel_activations"] = False
        activations = self.activations if rows is None else _Rows(self.activations, rows)
        builder = _Builder(self.graph, activations, options)
        with warnings.catch_warnings():
            if rows is not None:              # a fold's model: the full one has warned already
                warnings.simplefilter("ignore")
            model_layers = builder.build()
        provenance = dict(self.metadata["provenance"], converter={k: v for k, v in options.items() if k != "ranges"})
        metadata = {**self.metadata, "provenance": provenance, "output_scale": builder.output_scale,
                    "activation_scales": builder.activation_scales,
                    "activation_zero_points": builder.zero_points, "float_nodes": builder.float_nodes}
        metadata = {k: metadata[k] for k in _METADATA_ORDER if k in metadata}
        if metadata.get("labels") is None:
            metadata.pop("labels", None)
        if not builder.zero_points:
            del metadata["activation_zero_points"]
        try:
            model = Model(model_layers, input_shape=self.graph.input_shape, input_bits=options["input_bits"],
                          metadata=metadata)
        except ModelError as exc:
            raise ModelError(f"the converted model is not valid: {exc}. Fewer weight or activation bits "
                             f"shrink the integer ranges") from exc
        return model, builder


_METADATA_ORDER = ("labels", "output_scale", "input_scaling", "activation_scales", "activation_zero_points",
                   "float_nodes", "provenance", "timesteps", "recipe")


@dataclass
class _Candidate:
    """One model the check measures: its granularity, whether its biases are corrected, the full model and,
    for the out-of-sample check, one model per fold fitted without that fold's samples."""
    label: str
    per_channel: bool
    model: Model
    builder: "_Builder"
    folds: list = field(default_factory=list)      # [(Model, _Builder)] per fold, fitted on the other folds
    corrected: bool = False                        # its integer biases corrected (_bias_corrected)
    in_sample: dict | None = None
    out_of_sample: dict | None = None

    @property
    def decisive(self) -> dict:
        return self.out_of_sample if self.out_of_sample is not None else self.in_sample


def _check_fidelity(fit: _Fit, x: np.ndarray, pick: np.ndarray, float_out: np.ndarray, per_channel: bool,
                    auto: bool, all_8: bool, on_low_fidelity: str, progress: bool) -> Model:
    """The integer model, checked against the float graph on the samples x[pick] (up to FIDELITY_SAMPLES,
    spread over the set): metadata["fidelity"] (see _fidelity).

    With every layer at 8/8 bits (`all_8`) the check decides, and *out of sample*: the samples are split
    into k = min(FIDELITY_FOLDS, n) interleaved folds, and each fold's output comes from a model whose
    activation ranges (and bias correction) were fitted on the calibration samples without it, so that no
    sample vouches for a model calibrated on itself (with fewer than FIDELITY_FOLDS_MIN_SAMPLES samples the
    in-sample figures decide, and the record says so). When `auto`, per-channel and per-layer ranges are
    both measured and, of those that keep the bar (pooled worst position and 10th percentile of batches of
    half at FIDELITY_DB or more), the one with the higher lower figure is returned: per-channel ranges fit
    the samples they saw most closely, one range per layer holds better on others when they are few. When
    none keeps it, the integer bias correction (_bias_corrected) of each is measured the same way (the
    better plain one first); else the plain model nearest the bar is refused (PrecisionError, carrying it)
    or, with on_low_fidelity="warn", warned about (PrecisionWarning). The message says whether the ranges do
    not hold on unseen samples (in-sample figures over the bar: more, more varied samples help) or the 8-bit
    rounding compounds over the depth, and names the layer where the SNR falls most (as es.compare measures
    it)."""
    xs = x[pick]
    want = np.asarray(float_out[:len(xs)], np.float64)
    model, builder = fit.model(per_channel)
    in_sample = _fidelity(_dequantized(model, xs, builder), want)
    if not all_8 or on_low_fidelity == "record":
        model.metadata["fidelity"] = in_sample          # recorded only: nothing is decided on it
        return model
    fold_of = _folds(len(xs))
    plain = _Candidate("per-channel ranges" if per_channel else "one range per layer", per_channel, model, builder,
                       in_sample=in_sample)
    candidates = [plain]
    if auto and per_channel:
        candidates.append(_Candidate("one range per layer", False, *fit.model(False)))
    from tqdm.auto import tqdm

    bar = tqdm(total=len(candidates) * 2, desc="checking", unit="model", disable=not progress, leave=False)
    tried = []
    try:
        for corrected in (False, True):
            measured = []
            for base in candidates:
                bar.update(1)
                candidate = base if not corrected else _corrected(base, fit, x, pick, want, fold_of)
                if candidate is None:
                    continue
                if candidate.in_sample is None:
                    candidate.in_sample = _fidelity(_dequantized(candidate.model, xs, candidate.builder), want)
                if fold_of is not None:
                    folds = _fold_models(candidate, fit, x, pick, fold_of)
                    candidate.out_of_sample = _fidelity(_fold_outputs(folds, xs, fold_of), want)
                measured.append(candidate)
            tried += measured
            passing = [c for c in measured if _passes(c.decisive)]
            if passing:      # of the granularities that hold, the one that holds best out of sample
                return _chosen(max(passing, key=_score), tried, fold_of)
            candidates.sort(key=_score, reverse=True)      # the correction of the better one first
    finally:
        bar.close()
    # the uncorrected granularity that came nearest the bar is refused (or returned with a warning)
    nearest = max((c for c in tried if not c.corrected), key=_score)
    return _refuse(nearest, tried, xs, pick, fold_of, fit, on_low_fidelity)


def _score(candidate: _Candidate) -> float:
    """What the check holds a candidate to: the lower of its worst position and its 10th percentile of halves."""
    return min(candidate.decisive["worst_position_snr_db"], candidate.decisive["half_batch_p10_snr_db"])


def _folds(n: int) -> np.ndarray | None:
    """The fold of each of n check samples, interleaved (sample i in fold i mod k, so a set sorted by class has
    every class in every fold), k = min(FIDELITY_FOLDS, n); None with fewer than FIDELITY_FOLDS_MIN_SAMPLES."""
    if n < FIDELITY_FOLDS_MIN_SAMPLES:
        return None
    return np.arange(n) % min(FIDELITY_FOLDS, n)


def _without(n: int, rows: np.ndarray) -> np.ndarray:
    """The calibration rows 0..n-1 but `rows`."""
    keep = np.ones(n, bool)
    keep[rows] = False
    return np.flatnonzero(keep)


def _fold_outputs(folds: list, xs: np.ndarray, fold_of: np.ndarray) -> np.ndarray:
    """The dequantized output on xs where each sample's comes from its fold's model (fitted without it)."""
    got = None
    for j, (model, builder) in enumerate(folds):
        held = fold_of == j
        out = _dequantized(model, xs[held], builder)
        if got is None:
            got = np.zeros((len(xs), *out.shape[1:]))
        got[held] = out
    return got


def _corrected(base: _Candidate, fit: _Fit, x: np.ndarray, pick: np.ndarray, want: np.ndarray,
               fold_of) -> _Candidate | None:
    """`base` with its integer biases corrected on the check samples x[pick], and each of its fold models
    corrected on the check samples of the other folds (never on its own); None when it changes no bias."""
    xs = x[pick]
    model = _bias_corrected(base.model, xs, base.builder, fit.activations, pick)
    if model is None:
        return None
    candidate = _Candidate(base.label + " with the integer bias correction", base.per_channel, model, base.builder,
                           in_sample=_fidelity(_dequantized(model, xs, base.builder), want), corrected=True)
    if fold_of is not None:
        candidate.folds = [((_bias_corrected(m, xs[fold_of != j], b, fit.activations, pick[fold_of != j]) or m), b)
                           for j, (m, b) in enumerate(_fold_models(base, fit, x, pick, fold_of))]
    return candidate


def _fold_models(candidate: _Candidate, fit: _Fit, x: np.ndarray, pick: np.ndarray, fold_of: np.ndarray) -> list:
    """One (Model, _Builder) per fold, calibrated on every sample but that fold's (built once per candidate)."""
    if not candidate.folds:
        candidate.folds = [fit.model(candidate.per_channel, _without(len(x), pick[fold_of == j]))
                           for j in range(int(fold_of.max()) + 1)]
    return candidate.folds
def _summary(candidate: _Candidate) -> dict:
    """What the check measured of one candidate, for the record of the one chosen or refused."""
    row = {"ranges": "per channel" if candidate.per_channel else "per layer",
           "bias_corrected": candidate.corrected}
    for key in ("worst_position_snr_db", "half_batch_p10_snr_db"):
        row[key] = candidate.decisive[key]
        row["in_sample_" + key] = candidate.in_sample[key]
    return row


def _record(candidate: _Candidate, tried: list, fold_of) -> dict:
    """metadata["fidelity"] of a decided check: the figures that decided (out of sample, or in sample with too
    few samples to split), how they were measured, the in-sample figures of the same model, and every
    candidate measured before it."""
    fidelity = dict(candidate.decisive)
    if fold_of is not None:
        fidelity.update(decided_by="out_of_sample", folds=int(fold_of.max()) + 1)
    else:
        fidelity.update(decided_by="in_sample", folds=0)
    fidelity.update(in_sample=candidate.in_sample, per_channel_activations=candidate.per_channel)
    earlier = [_summary(c) for c in tried if c is not candidate]
    if earlier:
        fidelity["tried"] = earlier
    return fidelity


def _chosen(candidate: _Candidate, tried: list, fold_of) -> Model:
    model = candidate.model
    model.metadata["fidelity"] = _record(candidate, tried, fold_of)
    if candidate.corrected:
        uncorrected = next(c for c in tried if c.per_channel == candidate.per_channel)
        model.metadata["bias_corrected"].update(uncorrected_fidelity=uncorrected.decisive,
                                                in_sample_fidelity=candidate.in_sample)
    return model


def _refuse(plain: _Candidate, tried: list, xs: np.ndarray, pick: np.ndarray, fold_of, fit: _Fit,
            on_low_fidelity: str) -> Model:
    """No candidate keeps the bar: the plain model `plain` (of the granularity nearest the bar) is refused
    (PrecisionError) or warned about, with a message that says what was measured, how, what was tried, where
    the SNR falls most and what helps."""
    model = plain.model
    fidelity = _record(plain, tried, fold_of)
    n, half, worst, quantile = fidelity["samples"], fidelity["half_samples"], \
        fidelity["worst_position_snr_db"], fidelity["half_batch_p10_snr_db"]
    at, overall = tuple(fidelity["worst_position"]), fidelity["snr_db"]
    held_out = fold_of is not None
    how = (f"each checked on a model calibrated without it ({fidelity['folds']}-fold cross-fitting; "
           f"{plain.in_sample['worst_position_snr_db']:.1f} dB on the samples it was calibrated on)" if held_out else
           f"on the samples it was calibrated on (fewer than {FIDELITY_FOLDS_MIN_SAMPLES}: too few to check it "
           f"on others)")
    if worst < FIDELITY_DB or half == n:
        shown, on = worst, f"on {n} calibration samples, {how}"
    else:
        shown, on = quantile, (
            f"on 1 in 10 of the batches of half ({half} of {n}) of its calibration samples, {how} ({worst:.1f} dB "
            f"on all {n}: the bar must hold on other batches of inputs too, not only on the pool of these)")
    others = [c for c in tried if c is not plain]
    also = "".join(f"; {c.label}: {c.decisive['worst_position_snr_db']:.1f} dB at the worst position and "
                   f"{c.decisive['half_batch_p10_snr_db']:.1f} dB on 9 in 10 batches of half" for c in others)
    if held_out:
        fold0 = fold_of == 0
        falls = _where_snr_falls_most(plain.folds[0][0], xs[fold0][:FIDELITY_LAYER_SAMPLES], fit.activations,
                                      pick[fold0][:FIDELITY_LAYER_SAMPLES])
    else:
        falls = _where_snr_falls_most(model, xs[:FIDELITY_LAYER_SAMPLES], fit.activations,
                                      pick[:FIDELITY_LAYER_SAMPLES])
    where = ""
    if falls is not None:
        fidelity["falls_most"] = falls
        where = (f"; the SNR falls most at layer {falls['layer']!r} (float node {falls['float_node']!r}): "
                 f"{falls['input_snr_db']:.1f} dB at its input, {falls['snr_db']:.1f} dB at its output"
                 + (" on samples its ranges did not see" if held_out else ""))
    samples = model.metadata["provenance"]["calibration_samples"]
    if held_out and _passes(plain.in_sample):
        cause = (f"its activation ranges, fitted on {samples} samples, do not hold on samples they did not see{where}."
                 f" More, and more varied, calibration samples (a few hundred, covering every class and condition "
                 f"the model will meet) usually help"
                 + ("" if any(not c.per_channel for c in tried) else
                    "; so may one range per layer (per_channel_activations=False), which fewer samples fit"))
    else:
        cause = (f"every layer converted exactly, but the 8-bit rounding of its {len(model.layers)} layers "
                 f"compounds{where} (es.compare(source, model, samples) shows every layer). A better trained "
                 f"network or es.finetune(..., weight_bits=8, activation_bits=8) usually helps"
                 + ("; so do more calibration samples" if held_out and samples < 64 else ""))
    message = (f"the 8/8-bit model keeps only {shown:.1f} dB SNR of the float output at its worst output position "
               f"{at} ({overall:.1f} dB overall) {on}{also}, under the {FIDELITY_DB:g} dB an 8/8 conversion must "
               f"keep: {cause}; es.convert(..., on_low_fidelity=\"warn\") converts anyway (an untrained or random "
               f"network)")
    model.metadata["fidelity"] = fidelity
    if on_low_fidelity == "warn":
        warnings.warn(PrecisionWarning(message), stacklevel=4)
        return model
    raise PrecisionError(message, fidelity=fidelity, model=model)


def _dequantized(model: Model, x: np.ndarray, builder) -> np.ndarray:
    """The model's output on `x` in float units (potentials minus the output zero point, times its scale)."""
    potentials = model.forward(x).astype(np.float64)
    zero_point = np.asarray(builder.zero_points.get(builder._output_layer, 0), np.float64)
    return (potentials - zero_point) * np.asarray(builder.output_scale, np.float64)


def _fidelity(got: np.ndarray, want: np.ndarray) -> dict:
    """SNR of the dequantized output `got` (n, H, W, C) against the float output `want` over all outputs and at
    the worst output position (h, w), border taps included, on all n samples and on the batches of ceil(n/2)
    of them (every such subset, or 2000 drawn with a fixed seed: the 10th percentile of their worst-position
    SNR; and, recorded, the worst half, exactly)."""
    n = len(got)
    want = want.reshape(got.shape)
    signal_each = np.sum(want ** 2, axis=3)                 # (n, H, W): every sample at every position
    noise_each = np.sum((got - want) ** 2, axis=3)
    signal, noise = signal_each.sum(axis=0), noise_each.sum(axis=0)
    per_position = _db(signal, noise)
    overall = float(_db(signal.sum(), noise.sum()))
    worst = float(per_position.min())
    at = np.unravel_index(int(np.argmin(per_position)), per_position.shape)
    half = (n + 1) // 2
    half_db = _db(*_worst_subset(signal_each, noise_each, half))
    worst_half = float(half_db.min())
    # the batches a user runs are other inputs: of the batches of half the samples, the worst-position SNR
    # that all but FIDELITY_HALF_QUANTILE of them keep (every half when there are few, else a fixed draw)
    halves = _halves(n, half)
    half_batch = _db(halves @ signal_each.reshape(n, -1), halves @ noise_each.reshape(n, -1)).min(axis=1)
    quantile = float(np.quantile(half_batch, FIDELITY_HALF_QUANTILE, method="lower"))
    return {"samples": int(n), "snr_db": round(overall, 2), "worst_position_snr_db": round(worst, 2),
            "worst_position": [int(v) for v in at], "half_samples": int(half),
            "half_batches": int(len(halves)), "half_batch_p10_snr_db": round(quantile, 2),
            "worst_half_snr_db": round(worst_half, 2)}


def _passes(fidelity: dict) -> bool:
    return fidelity["worst_position_snr_db"] >= FIDELITY_DB and fidelity["half_batch_p10_snr_db"] >= FIDELITY_DB


def _bias_corrected(model: Model, x: np.ndarray, builder, activations: dict, index: np.ndarray) -> Model | None:
    """A copy of the relu `model` with its integer biases corrected on `x` (calibrate.correct_integer_biases),
    metadata["bias_corrected"] = {samples, layers: {layer: largest shift / spread}}; None when it changes
    no bias or the corrected biases overflow the integer ranges."""
    from .calibrate import correct_integer_biases

    probe = Model(model.layers, input_shape=model.input_shape, input_bits=model.input_bits,   # copies the layers
                  metadata=model.metadata)
    found = correct_integer_biases(probe, x, activations, builder.bias_scales, index)
    if all(np.array_equal(a.bias, b.bias) for a, b in zip(model.layers, probe.layers) if hasattr(a, "bias")):
        return None
    metadata = {**model.metadata, "bias_corrected": {"samples": int(len(x)),
                                                     "layers": {k: round(v, 4) for k, v in found.items()}}}
    try:
        return Model(probe.layers, input_shape=model.input_shape, input_bits=model.input_bits, metadata=metadata)
    except ModelError:
        return None


def _halves(n: int, k: int) -> np.ndarray:
    """(batches, n) 0/1 rows: every k-subset of n samples when there are at most 2000 of them, else 2000
    drawn with a fixed seed (the check is deterministic)."""
    if math.comb(n, k) <= 2000:
        rows = np.zeros((math.comb(n, k), n))
        for i, subset in enumerate(itertools.combinations(range(n), k)):
            rows[i, list(subset)] = 1.0
        return rows
    rng = np.random.default_rng(0)
    rows = np.zeros((2000, n))
    for i in range(2000):
        rows[i, rng.choice(n, k, replace=False)] = 1.0
    return rows


EXACT_DB = 200.0              # the SNR recorded where the integer output has no error at all


def _db(signal, noise):
    """10 log10(signal / noise), EXACT_DB where there is no noise (an exact output, zero or not)."""
    signal, noise = np.asarray(signal, np.float64), np.asarray(noise, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        db = 10 * np.log10(np.maximum(signal, 1e-300) / np.where(noise > 0, noise, 1.0))
    return np.where(noise > 0, np.minimum(db, EXACT_DB), EXACT_DB)


def _worst_subset(signal: np.ndarray, noise: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """At every position, the k samples whose pooled SNR (sum of signal over sum of noise) is lowest:
    their (signal, noise) sums, each (H, W). `signal`, `noise`: (n, H, W). Exact, by Dinkelbach's
    iteration for the smallest ratio of sums: for the current ratio r the k samples with the least
    signal - r * noise form the next subset; the ratio falls strictly until it is the minimum."""
    n = signal.shape[0]
    if k >= n:
        return signal.sum(axis=0), noise.sum(axis=0)
    # a sample that is exact and zero at a position (a ReLU output off) counts as exact, not as 0/0
    s = signal.reshape(n, -1) + (1e-12 * float(signal.mean()) + 1e-300)
    e = noise.reshape(n, -1)
    ratio = s.sum(axis=0) / np.maximum(e.sum(axis=0), 1e-300)
    cols = np.arange(s.shape[1])
    for _ in range(4 * n):
        pick = np.argpartition(s - ratio * e, k - 1, axis=0)[:k]
        s_sum, e_sum = s[pick, cols].sum(axis=0), e[pick, cols].sum(axis=0)
        new = s_sum / np.maximum(e_sum, 1e-300)
        if not np.any(new < ratio * (1 - 1e-12)):
            break
        ratio = np.minimum(ratio, new)
    return s_sum.reshape(signal.shape[1:]), e_sum.reshape(signal.shape[1:])


def _where_snr_falls_most(model: Model, x: np.ndarray, activations: dict, index=None) -> dict | None:
    """The layer whose output SNR (against its float node, as es.compare measures it) is lowest below the
    SNR at its inputs (the lowest of its producing layers'; an unmeasured producer passes on its own
    inputs'; a layer reading the exact model input is not ranked): {layer, float_node, input_snr_db,
    snr_db}, or None when no layer could be compared."""
    from . import reference

    captured: dict[str, np.ndarray] = {}
    reference.run(model, model.check_input(x, 1), capture=captured)
    scales = model.metadata.get("activation_scales", {})
    zero_points = model.metadata.get("activation_zero_points", {})
    snr: dict[str, float] = {}
    nodes = model.metadata.get("float_nodes", {})
    for name, node in nodes.items():
        if name not in captured or node not in activations or name not in scales:
            continue
        ref = np.asarray(activations[node][:len(x)] if index is None else activations[node][index], np.float64)
        approx = (captured[name].astype(np.float64) - np.asarray(zero_points.get(name, 0), np.float64)) \
            * np.asarray(scales[name], np.float64)
        if approx.shape != ref.shape:
            continue
        noise, signal = float(np.sum((ref - approx) ** 2)), float(np.sum(ref ** 2))
        snr[name] = math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-30) / noise)
    best, previous, seen = None, None, {}
    for layer in model.layers:
        producers = list(layer.inputs) if layer.inputs is not None else ([previous] if previous else [])
        previous = layer.name
        # an unmeasured layer (its output has no float node of its shape) passes on its inputs' SNR
        before = min((seen[p] for p in producers if p in seen), default=math.inf)
        seen[layer.name] = snr.get(layer.name, before)
        if layer.name not in snr or not math.isfinite(before):
            continue                 # unmeasured, or reads the exact model input: no drop to rank
        drop = before - snr[layer.name]
        if best is None or drop > best[0]:
            best = (drop, layer.name, before)
    if best is None:
        return None
    _, name, before = best
    return {"layer": name, "float_node": nodes[name], "input_snr_db": round(before, 2),
            "snr_db": round(snr[name], 2)}


def check(source, *, importer: str | None = None, neuron: str = "relu", weight_bits: int = 8,
          activation_bits: int = 8, input_scaling: tuple[float, float] = (1.0, 0.0), **importer_options) -> list:
    """Every node of `source` that will not convert, each a Problem (node, op, the framework's layer name,
    reason, hint); an empty list when the whole network converts. Needs no calibration data.

    `edgesnn convert SRC --check` prints the same list. A torch module needs `input_shape=(H, W, C)` or
    `example_input=...`.
    """
    options = dict(weight_bits=weight_bits, activation_bits=activation_bits, input_bits=8,
                   input_scaling=[float(v) for v in input_scaling], per_channel=True, calibration="minmax",
                   neuron=neuron, timesteps=16 if neuron in SPIKING else 1)
    _check_options(weight_bits, activation_bits, 8, input_scaling, "minmax", neuron)
    graph = load_graph(source, importer=importer, **importer_options).simplify()
    try:
        _Builder(graph, None, options).build()
    except ConversionError as error:
        return error.problems
    return []


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
    if neuron not in NEURONS:
        raise ValueError(f"neuron must be one of {NEURONS}, got {neuron!r}")
    scale, _offset = input_scaling
    if not scale > 0:
        raise ValueError(f"input_scaling=(scale, offset) needs scale > 0, got {input_scaling!r}")


def _check_labels(labels, graph: Graph) -> None:
    """A label list names one class per output value (what Classifier and Pipeline expect)."""
    if labels is None:
        return
    if isinstance(labels, str) or not hasattr(labels, "__len__"):
        raise ValueError(f"labels must be a list of class names, one per output, got {type(labels).__name__} "
                         f"{labels!r}")
    shape = tuple(graph.shapes[graph.output])
    classes = int(np.prod(shape))
    if len(labels) != classes:
        raise ValueError(f"labels names {len(labels)} classes ({list(labels)[:5]}"
                         f"{'...' if len(labels) > 5 else ''}), but the model outputs {classes} (output shape "
                         f"{shape}): give {classes} labels, one per output, or none")


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


def _ranges(ranges) -> dict:
    """{node: (lo, hi)} as plain floats (a fixed activation range per float node)."""
    return {str(k): (float(v[0]), float(v[1])) for k, v in (ranges or {}).items()}


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

RANGE_SIGNIFICANT_BITS = 12   # activation ranges are kept to this many significant bits


def reproducible(value: float, bits: int = RANGE_SIGNIFICANT_BITS) -> float:
    """`value` rounded to `bits` significant bits.

    The float model's activations come out of BLAS, whose sums another CPU (or build) orders
    differently: they agree to ~1e-7, not bit for bit. A range rounded to 12 bits (2.4e-4
    relative, far below a 4- or 8-bit step) is the same on every machine but for values within
    ~1e-7 of a rounding boundary, so a re-run elsewhere writes the same file.
    """
    if not np.isfinite(value) or value == 0:
        return float(value)
    mantissa, exponent = math.frexp(float(value))
    return math.ldexp(round(mantissa * (1 << bits)) / (1 << bits), exponent)


def activation_range(values: np.ndarray, method: str, bits: int) -> float:
    """The float value the largest activation integer stands for (values are >= 0), kept to
    RANGE_SIGNIFICANT_BITS significant bits (`reproducible`)."""
    return reproducible(_activation_range(values, method, bits))


def _activation_range(values: np.ndarray, method: str, bits: int) -> float:
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


ZERO_CHANNEL_BIAS_UNITS = 1 << 12   # the bias of a channel without weights, in its potential units


def quantize_weights(weight: np.ndarray, bits: int, per_channel: bool,
                     bias: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric quantization over the last axis: (integer weights, scale per output channel).

    An output channel whose weights are all zero (a pruned filter, a batch norm of scale 0 folded in)
    outputs its `bias` alone, so its scale is chosen for that bias: |bias| / ZERO_CHANNEL_BIAS_UNITS,
    which makes its int32 bias exactly +-4096 units, far inside the int32 bound of docs/semantics.md
    (4096 * pool_factor). Per tensor (one scale for all channels) that happens only
    when no channel has a weight, and the largest |bias| sets the scale. Without a bias (or with a
    zero one) such a channel outputs 0 and keeps scale 1."""
    qmax = (1 << (bits - 1)) - 1
    w = np.asarray(weight, np.float64)
    flat = np.abs(w).reshape(-1, w.shape[-1])
    top = flat.max(axis=0) if per_channel else np.full(w.shape[-1], flat.max())
    scale = np.where(top > 0, top / qmax, 1.0)
    if bias is not None:
        magnitude = np.broadcast_to(np.abs(np.asarray(bias, np.float64)), top.shape)
        if not per_channel:
            magnitude = np.full(top.shape, magnitude.max(initial=0.0))
        constant = (top == 0) & (magnitude > 0)
        scale[constant] = magnitude[constant] / ZERO_CHANNEL_BIAS_UNITS
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

SYNAPTIC = ("conv2d", "depthwise_conv2d", "separable_conv2d", "dense")
POOLS = ("max_pool", "avg_pool", "global_avg_pool")
ACTIVATIONS = ("relu", "clip")
VIEWS = ("concat", "slice_channels", "permute_channels")
SPIKE_COPY_THRESHOLD = 1            # an IF neuron with threshold 1 passes a 0/1 spike through unchanged
LIF_DECAY_SHIFT = 16                # the lif recipe's decay: beta = multiplier / 2^16 = 1 - 2^-k
LIF_RATE_THRESHOLD = 1 << 12        # the threshold, in potential units, of lif_decay's simulated neuron


def _constant_drive_counts(drive: np.ndarray, multiplier: int, timesteps: int) -> np.ndarray:
    """Spike counts over `timesteps` of integer lif neurons (threshold LIF_RATE_THRESHOLD, subtractive reset,
    decay multiplier / 2^LIF_DECAY_SHIFT rounded half up) driven by the constant potentials `drive`."""
    v, counts = np.zeros_like(drive), np.zeros_like(drive)
    for _ in range(timesteps):
        v = ((v * multiplier + (1 << (LIF_DECAY_SHIFT - 1))) >> LIF_DECAY_SHIFT) + drive
        fired = v >= LIF_RATE_THRESHOLD
        v = v - fired * LIF_RATE_THRESHOLD
        counts += fired
    return counts


def lif_decay(timesteps: int) -> tuple[int, int]:
    """(decay_multiplier, decay_shift) of the converter's lif neurons for a rate code of `timesteps` steps.

    The rate approximation of the spiking recipe: a neuron driven by a constant potential ``x * threshold``
    (x in (0, 1], a ReLU output over its range) fires ``floor(x T)`` times in T steps as an IF neuron.
    A leak lowers the count where the membrane waits long below threshold (small x).  Of the decays
    ``beta = 1 - 2^-k`` (k = 1..16) this picks the strongest whose count, simulated on the integer lif
    (docs/semantics.md: decay rounded half up, subtractive reset) at x = 0.5/T, 1.5/T, ..., 1 - 0.5/T, falls short
    of the IF count by at most half a spike on average: the leakiest neuron the rate code still reads.
    """
    timesteps = int(timesteps)
    # x = (k - 1/2) / T: drives between the IF's count steps (at x = k / T exactly, any leak loses the k-th spike)
    drive = (2 * np.arange(1, timesteps + 1, dtype=np.int64) - 1) * LIF_RATE_THRESHOLD // (2 * timesteps)
    if_counts = _constant_drive_counts(drive, 1 << LIF_DECAY_SHIFT, timesteps)              # no leak
    for k in range(1, LIF_DECAY_SHIFT + 1):
        multiplier = (1 << LIF_DECAY_SHIFT) - (1 << (LIF_DECAY_SHIFT - k))
        if np.mean(if_counts - _constant_drive_counts(drive, multiplier, timesteps)) <= 0.5:
            return multiplier, LIF_DECAY_SHIFT
    return (1 << LIF_DECAY_SHIFT) - 1, LIF_DECAY_SHIFT


@dataclass
class Problem:
    """One node that will not convert: what it is, where it came from, why, and what to change."""

    node: str
    op: str
    layer: str          # the source framework's own name for it ("" when unknown)
    reason: str
    hint: str = ""

    def __str__(self) -> str:
        origin = f" ({self.layer})" if self.layer and self.layer != self.node else ""
        hint = f"; {self.hint}" if self.hint else ""
        return f"node {self.node!r}{origin}, op {self.op!r}: {self.reason}{hint}"


class _Refusal(Exception):
    """Raised inside the builder for one node; collected into Problems."""

    def __init__(self, node: Node, reason: str, hint: str = ""):
        super().__init__(reason)
        self.problem = Problem(node.name, node.attrs.get("op", node.op) if node.op == "unsupported" else node.op,
                               _framework_name(node), reason, hint)


def _framework_name(node: Node) -> str:
    return str(node.attrs.get("layer") or node.source or "")


@dataclass
class _Tensor:
    """How the integers hold a float node's value: channel c is channel sources[c][1] of the integer layer
    sources[c][0] (or of the model input), and stands for (a - zero_point[c]) * scale[c].

    A tensor whose channels are one producer's, in order, is *plain*; concat, split and shuffle make
    *views* (channels of several producers, in any order) that cost no layer until a consumer needs a
    plain tensor. A spiking layer's tensor has `spikes` set (a spike stands for scale)."""

    sources: list
    scale: np.ndarray
    zero_point: np.ndarray
    spikes: bool = False

    @property
    def channels(self) -> int:
        return len(self.sources)

    @property
    def producer(self) -> str | None:
        """The one producer of a plain tensor, else None."""
        first = self.sources[0][0]
        if all(p == first and c == i for i, (p, c) in enumerate(self.sources)):
            return first
        return None

    @property
    def signed(self) -> bool:
        return bool(np.any(self.zero_point != 0))

    def take(self, channels) -> "_Tensor":
        idx = list(channels)
        return _Tensor([self.sources[i] for i in idx], self.scale[idx], self.zero_point[idx], self.spikes)


def _producers(tensor: _Tensor) -> list[str]:
    """The layers a tensor's channels come from, in order of first appearance."""
    return list(dict.fromkeys(p for p, _ in tensor.sources))


def _join(tensors: list[_Tensor]) -> _Tensor:
    return _Tensor([s for t in tensors for s in t.sources], np.concatenate([t.scale for t in tensors]),
                   np.concatenate([t.zero_point for t in tensors]), all(t.spikes for t in tensors))


_FAILED = object()   # the tensor of a node that did not convert (its readers are not reported again)


@dataclass
class _Builder:
    graph: Graph
    activations: dict | None      # None: check only (no calibration data; ranges are placeholders)
    options: dict
    layers: list = field(default_factory=list)
    tensors: dict = field(default_factory=dict)
    activation_scales: dict = field(default_factory=dict)
    zero_points: dict = field(default_factory=dict)
    float_nodes: dict = field(default_factory=dict)
    output_scale: object = None
    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    bits: dict = field(default_factory=dict)           # layer name -> output bits
    bias_scales: dict = field(default_factory=dict)    # synaptic layer name -> float value of one bias unit (Cout,)

    def build(self) -> list:
        g = self.graph
        scale, offset = self.options["input_scaling"]
        channels = g.input_shape[2]
        self.tensors[g.input_name] = _Tensor([("input", c) for c in range(channels)], np.full(channels, 1.0 / scale),
                                             np.full(channels, float(offset)))
        self.bits["input"] = self.options["input_bits"]
        for found in g.problems():
            self.problems.append(Problem(found["node"], str(found["op"]), str(found["layer"]),
                                         "this op cannot be computed in integers without changing the network",
                                         str(found["hint"])))
            self.tensors[found["node"]] = _FAILED
        done: set[str] = set()
        for node in g.nodes:
            if node.name in done or self.tensors.get(node.name) is _FAILED:
                continue
            if any(self.tensors.get(name) is _FAILED for name in node.inputs):
                self.tensors[node.name] = _FAILED   # reported where it started
                continue
            try:
                done.update(self._convert(node))
            except _Refusal as refusal:
                self.problems.append(refusal.problem)
                self.tensors[node.name] = _FAILED
        output = self.tensors.get(g.output)
        output_converted = output is not None and output is not _FAILED
        if output_converted and not self.problems and (not self.layers or self.layers[-1].name != self._output_layer):
            self._finish_output()   # the output is a view or an alias of an earlier layer
        if self.problems:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            raise ConversionError(f"{len(self.problems)} node(s) will not convert to integer layers:\n{lines}",
                                  self.problems)
        return self.layers

    _output_layer = None

    def _convert(self, node: Node) -> list[str]:
        op = node.op
        if op in SYNAPTIC:
            return self._synaptic(node)
        if op == "add":
            return self._add(node)
        if op in VIEWS:
            return self._view(node)
        if op == "affine" and self._input(node).producer == "input":
            return self._input_affine(node)
        if op in POOLS or op == "affine":
            return self._gather_node(node)
        if op in ACTIVATIONS:
            return self._activation_only(node)
        if op in ("flatten", "reshape", "identity"):
            self._alias(node, node.inputs[0])
            return [node.name]
        if op == "softmax":
            raise _Refusal(node, "a softmax inside the network (not the final op) does not convert",
                           "only a final softmax is dropped (argmax is unchanged)")
        if op == "unsupported":
            raise _Refusal(node, "this op cannot be computed in integers", str(node.attrs.get("hint", "")))
        raise _Refusal(node, f"op {op!r} has no integer form here",
                       "convertible: conv2d, depthwise/separable conv, dense, relu/relu6/clip, batch norm, "
                       "max/avg/global pooling, add, concat, split, channel shuffle, flatten/reshape before dense")

    # -- tensors -------------------------------------------------------------------------------------
    def _next(self, node: Node) -> Node | None:
        if node.name == self.graph.output:
            return None
        readers = self.graph.consumers(node.name)
        return readers[0] if len(readers) == 1 else None

    def _input(self, node: Node, index: int = 0) -> _Tensor:
        tensor = self.tensors.get(node.inputs[index])
        if tensor is None:
            raise _Refusal(node, f"its input {node.inputs[index]!r} has no integer form")
        return tensor

    def _plain(self, tensor: _Tensor, node: Node) -> _Tensor:
        """`tensor` as one producer's channels in order (a concat layer gathers a view first)."""
        if tensor.producer is not None:
            return tensor
        return self._materialize(tensor, node, f"{node.name}/gather")

    def _alias(self, node: Node, source: str) -> None:
        readers = self.graph.consumers(node.name)
        if node.op == "reshape" and any(r.op != "dense" for r in readers):
            raise _Refusal(node, "a reshape converts only in front of dense layers",
                           "reshape/flatten just before a Dense/Linear layer")
        self.tensors[node.name] = self.tensors[source]

    def _values(self, name: str) -> np.ndarray:
        if self.activations is None:
            return np.array([-1.0, 1.0])    # check only: any range will do
        return self.activations[name]

    def _is_output(self, node: Node) -> bool:
        return node.name == self.graph.output

    # -- chains --------------------------------------------------------------------------------------
    def _take_chain(self, node: Node, allow_pool_first: bool = True):
        """(pool, activation, last) absorbed after `node`: [pool] [relu | clip] [max pool after the relu]."""
        pool = act = None
        last = node
        nxt = self._next(last)
        if allow_pool_first and nxt is not None and nxt.op in POOLS:
            pool, last = nxt, nxt
            nxt = self._next(last)
        if nxt is not None and nxt.op in ACTIVATIONS:
            act, last = nxt, nxt
            nxt = self._next(last)
            if pool is None and nxt is not None and nxt.op == "max_pool" and _floor(act) == 0.0:
                pool, last = nxt, nxt        # max commutes with a relu
        return pool, act, last

    def _pool_fields(self, pool: Node | None, pre_shape) -> tuple[dict, float]:
        """Layer pooling fields and the divisor an average needs folded into the scale."""
        if pool is None:
            return {}, 1.0
        if pool.op == "global_avg_pool":
            return {"pool": "global_avg"}, float(pre_shape[0] * pre_shape[1])
        size = _pair(pool, "pool_size")
        strides = _pair(pool, "strides", size)
        padding = pool.attrs.get("padding", "valid")
        if isinstance(padding, (list, tuple)):
            padding = tuple(int(v) for v in padding)
        fields = {"pool": "max" if pool.op == "max_pool" else "avg", "pool_size": size, "pool_stride": strides,
                  "pool_padding": padding}
        for key in ("pool_size", "pool_stride"):
            if max(fields[key]) > L.POOL_MAX:
                raise _Refusal(pool, f"{key} {fields[key]} is larger than the integer pools' {L.POOL_MAX}")
        if pool.op == "max_pool":
            sign = pool.attrs.get("channel_sign")
            if sign is not None and np.any(np.asarray(sign) < 0):
                fields["pool_sign"] = np.where(np.asarray(sign) < 0, -1, 1)
            return fields, 1.0
        fields["pool_count_include_pad"] = bool(pool.attrs.get("count_include_pad", False))
        return fields, float(size[0] * size[1])

    # -- neuron stage --------------------------------------------------------------------------------
    def _neuron(self, name: str, last: Node, act: Node | None, acc_scale: np.ndarray, bits_in: int = 8) -> dict:
        """Neuron fields for a layer whose float output is node `last`; registers its tensor."""
        channels = len(acc_scale)
        if self._is_output(last) and act is None:
            timesteps = self._timesteps()
            self.output_scale = [float(v) / timesteps for v in acc_scale]
            self.float_nodes[name] = last.name
            self.activation_scales[name] = self.output_scale
            self._output_layer = name
            self.bits[name] = 32
            return {"neuron": "none"}
        fields, scale, zero_point, spikes = self._activation_fields(last, act, acc_scale)
        self.tensors[last.name] = _Tensor([(name, c) for c in range(channels)], scale, zero_point, spikes)
        self.float_nodes[name] = last.name
        self.activation_scales[name] = [float(v) / self._timesteps() if spikes else float(v) for v in scale]
        if np.any(zero_point):
            self.zero_points[name] = [int(v) for v in zero_point]
        self.bits[name] = 1 if spikes else fields["activation_bits"]
        if self._is_output(last):
            self.output_scale = self.activation_scales[name]
            self._output_layer = name
        return fields

    def _activation_fields(self, last: Node, act: Node | None, acc_scale: np.ndarray):
        """(fields, scale, zero_point, spikes) of the neuron stage that makes `last`'s float values."""
        values = self._values(last.name)
        floor, ceiling = (_floor(act), _ceiling(act)) if act is not None else (None, None)
        bits = self.options["activation_bits"]
        method = self.options["calibration"]
        channels = len(acc_scale)
        fixed = (self.options.get("ranges") or {}).get(last.name)
        # a range per channel (the requantization is per channel anyway, so it costs nothing at run time),
        # unless the range was learned (es.finetune) or searched for the whole tensor
        per_channel = (self.options.get("per_channel_activations", True) and fixed is None
                       and np.ndim(values) == 4 and np.shape(values)[-1] == channels)
        columns = np.asarray(values).reshape(-1, channels).T if per_channel else [values]
        his = np.array([activation_range(np.maximum(v, 0), method, bits) for v in columns])
        unsigned = (floor is not None and floor >= 0)
        los = np.array([0.0 if unsigned or (act is None and float(np.min(v, initial=0.0)) >= 0)
                        else -activation_range(np.maximum(-v, 0), method, bits) for v in columns])
        if floor is not None:
            los = np.maximum(los, floor)
        if ceiling is not None:
            his = np.minimum(his, ceiling)
        if fixed is not None and self.activations is not None:
            los, his = np.array([fixed[0]], np.float64), np.array([fixed[1]], np.float64)   # learned or searched
        if floor is not None and floor > 0:
            raise _Refusal(act, f"a clip with a lower bound {floor} > 0 does not convert (integer activations "
                           f"start at 0 or at a zero point below it)")
        his = np.broadcast_to(his, (channels,)).astype(np.float64)
        los = np.broadcast_to(los, (channels,)).astype(np.float64)
        if self.options["neuron"] in SPIKING:
            if np.any(los < 0):
                raise _Refusal(last, "a spiking layer's output must be non-negative (a ReLU after it); this one "
                               "is signed", "convert with neuron='relu', or add a ReLU")
            # one spike value per layer (the rate code's unit), calibrated over the whole layer
            hi = float(activation_range(np.maximum(values, 0), method, bits)) if fixed is None else float(his.max())
            if ceiling is not None:
                hi = min(hi, ceiling)
            threshold = np.clip(np.round(hi / acc_scale), 1, L.INT32_MAX).astype(np.int64)
            fields = {"neuron": "if", "threshold": threshold}
            if self.options["neuron"] == "lif":
                multiplier, shift = lif_decay(self._timesteps())
                fields.update(neuron="lif", decay_multiplier=np.full(channels, multiplier), decay_shift=shift)
            return fields, np.full(channels, hi), np.zeros(channels), True
        levels = (1 << bits) - 1
        dead = his - los <= 0
        his, los = np.where(dead, 1.0, his), np.where(dead, 0.0, los)
        scale = (his - los) / levels
        zero_point = np.where(los < 0, np.clip(np.round(-los / scale), 0, levels), 0).astype(np.int64)
        mult, shift = multiplier_shift(acc_scale / scale)
        fields = {"neuron": "relu", "activation_bits": bits, "out_multiplier": mult, "out_shift": shift}
        if zero_point.any():
            fields["out_zero_point"] = zero_point
        return fields, scale, zero_point.astype(np.float64), False

    def _timesteps(self) -> int:
        return int(self.options.get("timesteps", 1))

    # -- synaptic layers -----------------------------------------------------------------------------
    def _synaptic(self, node: Node) -> list[str]:
        src = self._plain(self._input(node), node)
        if src.spikes is False and node.op == "separable_conv2d" and src.signed:
            return self._separable_split(node, src)
        in_shape = self.graph.shapes[node.inputs[0]]
        pool, act, last = self._take_chain(node, allow_pool_first=node.op != "dense")
        output = self._is_output(last) and act is None
        per_channel = self.options["per_channel"] and not output
        wbits, qbits = self._weight_bits(node.name, src)
        name = node.name
        fields = {}
        if node.op == "separable_conv2d":
            fields, acc_scale = self._separable(node, src, per_channel)
        else:
            weight = self._scaled_weight(node, src, in_shape)
            # a channel without weights gets a scale for its bias (the zero point adds nothing to it)
            q, w_scale = quantize_weights(weight, qbits, per_channel, node.params["bias"])
            # the zero point times the *quantized* weights, as the integer layer computes it
            dequantized = q.astype(np.float64) * w_scale
            bias = np.asarray(node.params["bias"], np.float64) - self._zero_point_term(node, dequantized, src, in_shape)
            fields = {"weights": q, "bias": _quantize_bias(bias, w_scale, name)}
            acc_scale = w_scale
            if node.op != "dense":
                fields.update(self._geometry(node, src))
            if node.op == "depthwise_conv2d":
                fields["depth_multiplier"] = _depth_multiplier(node, src.channels)
        pool_fields, divisor = self._pool_fields(pool, self.graph.shapes[node.name])
        fields.update(pool_fields)
        self.bias_scales[name] = np.asarray(acc_scale, np.float64)     # before the pooling: where the bias adds
        acc_scale = np.asarray(acc_scale, np.float64) / divisor
        cls = {"conv2d": L.Conv2D, "depthwise_conv2d": L.Depthwise2D, "separable_conv2d": L.Separable2D,
               "dense": L.Dense}[node.op]
        if cls is L.Conv2D and src.producer == "input":
            cls = L.InputConv2D
        fields.update(self._neuron(name, last, act, acc_scale))
        self.layers.append(cls(name=name, inputs=(src.producer,), weight_bits=wbits, **fields))
        return [node.name] + [n.name for n in (pool, act) if n is not None] + [last.name]

    def _weight_bits(self, name: str, src: _Tensor) -> tuple[int, int]:
        """(field bits, quantization bits) of a layer's weights: layer_weight_bits, else input_weight_bits for a
        layer reading the model input, else weight_bits; 3, 5, 6, 7 bits are stored in the next wider field."""
        bits = (self.options.get("layer_weight_bits") or {}).get(name)
        if bits is None and src.producer == "input":
            bits = self.options.get("input_weight_bits")
        bits = self.options["weight_bits"] if bits is None else int(bits)
        return next(b for b in L.WEIGHT_BITS if b >= bits), bits

    def _scaled_weight(self, node: Node, src: _Tensor, in_shape) -> np.ndarray:
        """The float weight with the input's per-channel scale folded in (so it acts on the integers)."""
        weight = np.asarray(node.params["weight"], np.float64)
        if node.op == "conv2d":
            return weight * src.scale[None, None, :, None]
        if node.op == "depthwise_conv2d":
            m = _depth_multiplier(node, src.channels)
            return weight * np.repeat(src.scale, m)[None, None, :]
        rows = np.tile(src.scale, in_shape[0] * in_shape[1])        # dense: HWC-flattened input
        return weight * rows[:, None]

    def _zero_point_term(self, node: Node, scaled_weight: np.ndarray, src: _Tensor, in_shape) -> np.ndarray:
        """sum over the taps of weight * zero point, per output channel: what the zero point adds to the bias
        (the pad value makes out-of-bounds taps read the zero point, so this holds at the border too)."""
        z = src.zero_point
        if not np.any(z):
            return 0.0
        if node.op == "conv2d":
            return np.einsum("hwio,i->o", scaled_weight, z)
        if node.op == "depthwise_conv2d":
            m = _depth_multiplier(node, src.channels)
            return np.einsum("hwo,o->o", scaled_weight, np.repeat(z, m))
        return np.tile(z, in_shape[0] * in_shape[1]) @ scaled_weight

    def _geometry(self, node: Node, src: _Tensor) -> dict:
        strides = _pair(node, "strides", (1, 1))
        if max(strides) > L.STRIDE_MAX:
            raise _Refusal(node, f"strides {strides} exceed the integer layers' {L.STRIDE_MAX}")
        if node.attrs.get("dilations", (1, 1)) not in ((1, 1), [1, 1], 1):
            raise _Refusal(node, f"dilation {node.attrs.get('dilations')} does not convert", "use dilation 1")
        padding = node.attrs.get("padding", "valid")
        if isinstance(padding, (list, tuple)):
            padding = tuple(int(v) for v in padding)
        fields = {"stride": strides, "padding": padding}
        if np.any(src.zero_point):
            pad = np.round(src.zero_point)
            top = (1 << self.bits[src.producer]) - 1 if src.producer in self.bits else 255
            if np.any(np.abs(pad - src.zero_point) > 0.5 + 1e-6) or pad.min() < 0 or pad.max() > top:
                raise _Refusal(node, f"its input's zero point {src.zero_point.tolist()} is outside the integer "
                               f"range [0, {top}], so zero padding cannot be expressed",
                               "check input_scaling=(scale, offset): the offset must lie in the input's range")
            fields["pad_value"] = pad.astype(np.int64)
        return fields

    def _separable(self, node: Node, src: _Tensor, per_channel: bool) -> tuple[dict, np.ndarray]:
        _, wbits = self._weight_bits(node.name, src)
        m = _depth_multiplier(node, src.channels)
        depthwise = np.asarray(node.params["depthwise"], np.float64) * np.repeat(src.scale, m)[None, None, :]
        pointwise = np.asarray(node.params["pointwise"], np.float64)
        bias = np.asarray(node.params["bias"], np.float64)
        dq, d_scale = quantize_weights(depthwise, wbits, per_channel)
        mid_bits = 8
        if self.activations is None:
            mid_scale = np.ones(depthwise.shape[-1])
        else:
            mid = self._depthwise_probe(node, src)
            top = activation_range(np.abs(mid), self.options["calibration"], mid_bits - 1)
            mid_scale = np.full(depthwise.shape[-1], top / ((1 << (mid_bits - 1)) - 1))
        mid_mult, mid_shift = multiplier_shift(d_scale / mid_scale)
        pq, p_scale = quantize_weights(pointwise * mid_scale[:, None], wbits, per_channel, bias)
        fields = {"weights": dq, "pointwise": pq, "bias": _quantize_bias(bias, p_scale, node.name),
                  "mid_multiplier": mid_mult, "mid_shift": mid_shift, "mid_bits": mid_bits,
                  "depth_multiplier": m, **self._geometry(node, src)}
        return fields, p_scale

    def _depthwise_probe(self, node: Node, src: _Tensor) -> np.ndarray:
        """The float depthwise stage of a separable node on the calibration data (it is no graph node), run once
        and kept with the activations: a fold's builder (_Rows) takes its rows of it, as of any activation."""
        key = f"{node.name}/depthwise (probe)"
        if key not in self.activations:
            self.activations[key] = self._run_depthwise_probe(node)
        return self.activations[key]

    def _run_depthwise_probe(self, node: Node) -> np.ndarray:
        in_shape = self.graph.shapes[node.inputs[0]]
        attrs = {k: v for k, v in node.attrs.items() if k in ("strides", "padding", "depth_multiplier")}
        probe = Graph([Node("dw", "depthwise_conv2d", ("input",), attrs=attrs,
                            params={"weight": np.asarray(node.params["depthwise"], np.float32),
                                    "bias": np.zeros(node.params["depthwise"].shape[-1], np.float32)})],
                      input_shape=in_shape)
        return probe.run(self.activations[node.inputs[0]])

    def _separable_split(self, node: Node, src: _Tensor) -> list[str]:
        """A separable node reading a signed (zero-pointed) tensor: its depthwise stage has no bias to take the
        zero point, so it runs as a depthwise layer (signed output) and a 1x1 conv layer."""
        m = _depth_multiplier(node, src.channels)
        dw_name = f"{node.name}/depthwise"
        dw_node = Node(dw_name, "depthwise_conv2d", node.inputs,
                       attrs={k: v for k, v in node.attrs.items() if k in ("strides", "padding")} | {
                           "depth_multiplier": m},
                       params={"weight": node.params["depthwise"],
                               "bias": np.zeros(node.params["depthwise"].shape[-1], np.float32)},
                       source=node.source)
        weight = self._scaled_weight(dw_node, src, None)
        dw_bits, dw_qbits = self._weight_bits(dw_name, src)
        q, w_scale = quantize_weights(weight, dw_qbits, self.options["per_channel"])
        bias = -self._zero_point_term(dw_node, q.astype(np.float64) * w_scale, src, None)
        if self.activations is not None:
            self.activations[dw_name] = self._depthwise_probe(node, src)
        fields = {"weights": q, "bias": _quantize_bias(bias, w_scale, dw_name), "depth_multiplier": m,
                  **self._geometry(dw_node, src)}
        fields.update(self._neuron(dw_name, dw_node, None, w_scale))
        self.layers.append(L.Depthwise2D(name=dw_name, inputs=(src.producer,), weight_bits=dw_bits, **fields))
        pointwise = Node(node.name, "conv2d", (dw_name,), attrs={"strides": (1, 1), "padding": "valid"},
                         params={"weight": np.asarray(node.params["pointwise"])[None, None],
                                 "bias": node.params["bias"]}, source=node.source)
        self.graph.shapes[dw_name] = tuple(self.graph.shapes[node.name][:2]) + (src.channels * m,)
        return self._synaptic(pointwise)     # same name and readers as the separable node

    # -- add, views and gathers ------------------------------------------------------------------------
    def _add(self, node: Node) -> list[str]:
        tensors = [self._plain(self._input(node, i), node) for i in range(len(node.inputs))]
        if len(tensors) > L.ADD_INPUTS_MAX:
            raise _Refusal(node, f"{len(tensors)} inputs exceed the add layer's {L.ADD_INPUTS_MAX}",
                           "split the sum into adds of at most 4")
        scales = np.stack([t.scale for t in tensors])                  # (inputs, C)
        common = np.abs(scales).max(axis=0) / (1 << ADD_MULTIPLIER_BITS)
        multipliers = np.round(scales / common).astype(np.int64)
        bias = -(multipliers * np.stack([t.zero_point for t in tensors])).sum(axis=0)
        pool, act, last = self._take_chain(node)
        pool_fields, divisor = self._pool_fields(pool, self.graph.shapes[node.name])
        fields = {"input_multipliers": multipliers, "bias": np.round(bias).astype(np.int64), **pool_fields}
        fields.update(self._neuron(node.name, last, act, common / divisor))
        self.layers.append(L.Add(name=node.name, inputs=tuple(t.producer for t in tensors), **fields))
        return [node.name] + [n.name for n in (pool, act) if n is not None] + [last.name]

    def _view(self, node: Node) -> list[str]:
        """concat, slice_channels and permute_channels: a new channel order over existing integers (no layer,
        unless a pooling or activation follows: then one concat layer does both)."""
        if node.op == "concat":
            view = _join([self._input(node, i) for i in range(len(node.inputs))])
        elif node.op == "slice_channels":
            src = self._input(node)
            view = src.take(range(int(node.attrs["start"]), int(node.attrs["stop"])))
        else:
            view = self._input(node).take([int(v) for v in node.attrs["order"]])
        nxt = self._next(node)
        if self._is_output(node) or (nxt is not None and (nxt.op in POOLS or nxt.op in ACTIVATIONS)):
            return self._gather(node, view)
        self.tensors[node.name] = view
        return [node.name]

    def _input_affine(self, node: Node) -> list[str]:
        """An affine on the model input (Rescaling, a per-channel normalization) folds into how the input
        integers are read: value = (x - zero_point) * scale per channel; no layer."""
        src = self._input(node)
        scale = np.asarray(node.params["scale"], np.float64) * np.ones(src.channels)
        offset = np.asarray(node.params["offset"], np.float64) * np.ones(src.channels)
        if np.any(scale <= 0):
            raise _Refusal(node, f"an input rescaling by {scale.min()} <= 0 does not convert",
                           "rescale by a positive factor (fold a sign into the first layer's weights)")
        new_scale = src.scale * scale
        self.tensors[node.name] = _Tensor(src.sources, new_scale, src.zero_point - offset / new_scale)
        return [node.name]

    def _gather_node(self, node: Node) -> list[str]:
        """A pooling or an affine (batch norm) node on its own: a concat layer over its input's channels."""
        src = self._input(node)
        if node.op == "affine":
            scale = np.asarray(node.params["scale"], np.float64)
            offset = np.asarray(node.params["offset"], np.float64)
            if np.any(scale == 0):
                raise _Refusal(node, "an affine (batch norm) with a zero scale does not convert")
            return self._gather(node, src, sign=np.sign(scale), gain=np.abs(scale), offset=offset)
        return self._gather(node, src, pool_node=node)

    def _gather(self, node: Node, view: _Tensor, *, sign=None, gain=None, offset=None,
                pool_node=None) -> list[str]:
        """One concat layer: channel j = sign[j] * (view channel j - its zero point) (+ offset / gain), then the
        pooling and activation that follow `node`."""
        if len(_producers(view)) > L.CONCAT_INPUTS_MAX:
            view = self._materialize(view, node, f"{node.name}/gather")
        producers = _producers(view)
        channels = view.channels
        sign = np.ones(channels) if sign is None else sign
        gain = np.ones(channels) if gain is None else gain
        offset = np.zeros(channels) if offset is None else offset
        acc_scale = view.scale * gain                              # float value of one potential unit
        bias = np.round(-sign * view.zero_point + offset / acc_scale).astype(np.int64)
        if pool_node is not None:
            pool, act, last = pool_node, None, pool_node
            nxt = self._next(pool_node)
            if nxt is not None and nxt.op in ACTIVATIONS:
                act, last = nxt, nxt
        else:
            pool, act, last = self._take_chain(node)
        pre_shape = self.graph.shapes[node.inputs[0]] if pool_node is not None else self.graph.shapes[node.name]
        pool_fields, divisor = self._pool_fields(pool, pre_shape)
        sources = [(producers.index(p), c) for p, c in view.sources]
        name = node.name
        fields = {"sources": sources, "input_multipliers": sign.astype(np.int64), "bias": bias, **pool_fields}
        fields.update(self._neuron(name, last, act, acc_scale / divisor))
        self.layers.append(L.Concat(name=name, inputs=tuple(producers), **fields))
        return [node.name] + [n.name for n in (pool, act) if n is not None] + [last.name]

    def _materialize(self, view: _Tensor, node: Node, name: str) -> _Tensor:
        """A concat layer that makes `view` plain: an exact copy when its channels share one scale and zero point
        (and fit the bits), else requantized to one scale over the union of their ranges."""
        producers = _producers(view)
        if len(producers) > L.CONCAT_INPUTS_MAX:
            # a concat layer reads at most 4 layers: gather each group of 4 producers' channels first (in the
            # order they appear), then gather those
            groups = [producers[i:i + L.CONCAT_INPUTS_MAX] for i in range(0, len(producers), L.CONCAT_INPUTS_MAX)]
            parts, where = [], {}
            for g, group in enumerate(groups):
                picked = [i for i, (p, _) in enumerate(view.sources) if p in group]
                part = self._materialize(view.take(picked), node, f"{name}/{g}")
                parts.append(part)
                where.update({i: (g, k) for k, i in enumerate(picked)})
            joined = _join(parts)
            offsets = np.cumsum([0] + [p.channels for p in parts])
            view = joined.take([offsets[where[i][0]] + where[i][1] for i in range(view.channels)])
            producers = _producers(view)
        channels = view.channels
        sources = [(producers.index(p), c) for p, c in view.sources]
        # an exact copy: every channel keeps its own scale and zero point (the requantization is per channel)
        needed = max(self.bits.get(p, 8) for p in producers)
        bits = min(b for b in L.ACTIVATION_BITS if b >= needed)
        fields = {"sources": sources}
        if view.spikes:
            fields.update(neuron="if", threshold=SPIKE_COPY_THRESHOLD)
            self.bits[name] = 1
        else:
            zero_point = np.round(view.zero_point).astype(np.int64)
            fields.update(neuron="relu", activation_bits=bits, out_multiplier=1, out_shift=0)
            if zero_point.any():
                fields.update(bias=-zero_point, out_zero_point=zero_point)
            self.bits[name] = bits
        scale, zero_point = view.scale.copy(), view.zero_point.copy()
        self.layers.append(L.Concat(name=name, inputs=tuple(producers), **fields))
        self.activation_scales[name] = [float(v) for v in scale]
        return _Tensor([(name, c) for c in range(channels)], scale, zero_point, view.spikes)

    def _activation_only(self, node: Node) -> list[str]:
        """A relu/clip on a tensor no layer took it with: free on an unsigned tensor (relu), else a concat layer."""
        src = self._input(node)
        floor, ceiling = _floor(node), _ceiling(node)
        if not src.signed and floor == 0.0 and ceiling is None:
            self.tensors[node.name] = src
            return [node.name]
        return self._gather_activation(node, src)

    def _gather_activation(self, node: Node, src: _Tensor) -> list[str]:
        if len(_producers(src)) > L.CONCAT_INPUTS_MAX:
            src = self._plain(src, node)
        producers = _producers(src)
        channels = src.channels
        sources = [(producers.index(p), c) for p, c in src.sources]
        bias = np.round(-src.zero_point).astype(np.int64)
        fields = {"sources": sources, "bias": bias}
        fields.update(self._neuron(node.name, node, node, src.scale))
        self.layers.append(L.Concat(name=node.name, inputs=tuple(producers), **fields))
        return [node.name]

    def _finish_output(self) -> None:
        """The graph's output is a view or an alias of a layer that is not the last: a final concat layer."""
        out = self.graph.node(self.graph.output)
        tensor = self.tensors[out.name]
        if len(_producers(tensor)) > L.CONCAT_INPUTS_MAX:
            tensor = self._plain(tensor, out)
        producers = _producers(tensor)
        sources = [(producers.index(p), c) for p, c in tensor.sources]
        name = f"{out.name}/output"
        bias = np.round(-tensor.zero_point).astype(np.int64)
        self.layers.append(L.Concat(name=name, inputs=tuple(producers), sources=sources, bias=bias, neuron="none"))
        timesteps = self._timesteps() if tensor.spikes else 1
        self.output_scale = [float(v) / timesteps for v in tensor.scale]
        self.activation_scales[name] = self.output_scale
        self.float_nodes[name] = out.name
        self._output_layer = name


def _floor(act: Node | None) -> float | None:
    """The lower bound of a relu/clip node (0 for relu)."""
    if act is None:
        return None
    if act.op == "relu":
        return 0.0
    value = act.attrs.get("min_value")
    return None if value is None else float(value)


def _ceiling(act: Node | None) -> float | None:
    if act is None:
        return None
    value = act.attrs.get("max_value")
    return None if value is None else float(value)


def _pair(node: Node, key: str, default=None) -> tuple[int, int]:
    value = node.attrs.get(key, default)
    if value is None:
        raise _Refusal(node, f"attr {key!r} is missing")
    pair = (value, value) if np.ndim(value) == 0 else tuple(value)
    return int(pair[0]), int(pair[1])


def _depth_multiplier(node: Node, channels: int) -> int:
    m = int(node.attrs.get("depth_multiplier", 1))
    if not 1 <= m <= L.DEPTH_MULTIPLIER_MAX:
        raise _Refusal(node, f"depth multiplier {m} exceeds the integer layers' {L.DEPTH_MULTIPLIER_MAX}",
                       "use a regular convolution (groups=1)")
    return m


def _describe(source) -> dict:
    """The provenance of `source`: a file's name and the sha256 of its bytes (not its path: a converted file
    must not carry where the user keeps their files, and the same source writes the same bytes anywhere),
    or an object's type."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        described = {"source": os.path.basename(path)}
        if os.path.isfile(path):
            with open(path, "rb") as f:
                described["source_sha256"] = hashlib.file_digest(f, "sha256").hexdigest()
        return described
    return {"source": f"<{type(source).__module__}.{type(source).__name__}>"}


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
    zero_points = model.metadata.get("activation_zero_points", {})
    for name, node in model.metadata.get("float_nodes", {}).items():
        if name not in captured or node not in float_acts:
            continue
        ref = float_acts[node].astype(np.float64)
        zero_point = np.asarray(zero_points.get(name, 0), np.float64) * timesteps
        approx = (captured[name].astype(np.float64) - zero_point) * np.asarray(scales[name], np.float64)
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
