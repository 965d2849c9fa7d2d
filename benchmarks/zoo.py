"""Run the conformance zoo (benchmarks/zoo/): what edgesnn makes of other people's architectures.

    python benchmarks/zoo.py                       # every zoo file present, a Markdown table
    python benchmarks/zoo.py --only akidanet       # files whose name contains "akidanet"
    python benchmarks/zoo.py --json zoo.json       # also every number as JSON
    python benchmarks/zoo.py --no-latency          # skip the latency columns (faster)
    python benchmarks/zoo.py --summary --layers    # one row per architecture (README), time per layer kind
    EDGESNN_ZOO=/other/checkout/benchmarks/zoo python benchmarks/zoo.py   # the files of another zoo folder
    python benchmarks/zoo.py --baseline /tmp/main/libedgesnn.so   # also another build: before / after

Runs in the project's normal environment (no TensorFlow, no timm): the files were written by
benchmarks/zoo_build.py in the zoo's own environment, each with its float output on 4 image-like
uint8 inputs. For every file of benchmarks/zoo/manifest.json that is present:

- ops: the op kinds of the imported float Graph (``edgesnn.convert.load_graph(path).simplify()``);
- float-match: max |Graph.run - framework| / max |framework| on the reference inputs (target 1e-4);
- converts?: ``es.convert(path, samples, input_scaling=..., weight_bits=8, activation_bits=8)``
  (and 4/4); a failure is recorded with its exception type and message, and the run goes on;
- ORT int8 SNR: onnxruntime's own int8 (QDQ, per-channel, calibrated on the same samples) on the
  ONNX file of the same model, measured the same way on the same held-out digits against onnxruntime
  float: how much 8-bit quantization of this model costs another engine;
- SNR 8/8, SNR 4/4: of the dequantized integer logits (``(potentials - zero point) * metadata['output_scale']``)
  against the imported float graph's, on the 64 held-out digits no conversion saw (`held_out_samples`), at
  every output position (h, w) over batch and channels; the table gives the worst position (border taps
  included), the JSON every position's (and ``snr_8_refs``, on the 4 references against the framework's
  logits); es.convert's own check (``model.metadata["fidelity"]``, out of sample on its 64 calibration
  samples: each of 8 folds through a model calibrated on the others) refuses an 8/8 model under 25 dB there,
  or on more than 1 in 10 of the batches of half of them (es.PrecisionError): such a file does not convert
  (not as expected: issue 9 wants it to), and its SNR columns are those of the refused model
  (PrecisionError.model), to show how far; a file that converts under 25 dB held out is a
  ``silent_shortfall``;
- latency (issue 11): batch 1, one thread, in one run: edgesnn 4/4 through the binding
  (``edgesnn.native.native_model(model).runner()``, buffers bound once, as TFLite's set_tensor /
  invoke / get_tensor; the JSON also has 8/8 and 4/4 through
  ``model.forward``), onnxruntime's int8 QDQ model (``quantize_static``, per-channel) and its float
  model, of the same ONNX file or of a Keras file's tf2onnx twin, each session one intra-op thread.
  Every engine is measured in turn in `LATENCY_ROUNDS` rounds of `LATENCY_CALLS_PER_ROUND` calls
  (the reference inputs in turn), so a change of machine load falls on all; the table gives the
  median and the ratios onnxruntime time / edgesnn time (above 1: edgesnn is faster; issue 11's
  target: >= 2 against int8), and the run prints the median over the zoo with the load average.
- TFLite XNNPACK (issue 11's fastest CPU peer, benchmarks/peers.py): for a Keras model with a
  ``benchmarks/tflite/<model>.int8.tflite`` (full-integer int8 by the TFLite converter, calibrated on the
  references and their mirror images, the zoo's 8 samples before 2026-12-02: benchmarks/tflite_build.py
  zoo; and ``<model>.relu6.int8.tflite``, the same function
  with its bounded ReLUs rescaled to ReLU6, which TFLite fuses), ai-edge-litert's interpreter with its
  default XNNPACK delegate, one thread, batch 1, in the same interleaved rounds; the column is the
  faster file. Each file's SNR against the float logits is in the JSON (tflite_files) so that the
  column is known to time the same network. Without ai-edge-litert or a file the column is empty
  and the JSON says why (tflite_error).
- ``--layers``: each layer of the 4/4 model alone on its real input, summed per layer kind over the
  zoo (where the engine's time goes, and which kinds are slow per synaptic operation).

The model is calibrated on the 4 reference inputs, their mirror images and 56 digits of zoo_build's generator
(64 samples, `calibration_samples`); the SNR is measured on 64 other digits of the same draw.
Expected outcomes ("convert", or "refuse" naming an op) are in the manifest; the table says
whether each file did what is expected. tests/test_zoo.py checks the committed files.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics as stats_module
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# $EDGESNN_ZOO: another checkout's zoo folder (its git-ignored big files; the .tflite twins are matched to them
# by sha256, benchmarks/peers.py zoo_tflites)
ZOO = Path(os.environ.get("EDGESNN_ZOO") or Path(__file__).resolve().parent / "zoo")
MANIFEST = ZOO / "manifest.json"
FLOAT_MATCH_TARGET = 1e-4
SNR_TARGET_DB = 25.0
LATENCY_TARGET = 2.0                # issue 11: edgesnn 4/4 batch-1 at least 2x faster than onnxruntime int8
LATENCY_CALLS = 60


# -- the manifest and the reference data -------------------------------------------------------------

def load_manifest(zoo: Path = ZOO) -> list[dict]:
    """Every manifest entry, with "path" (Path) and "present" (the file and its reference exist)."""
    entries = json.loads((zoo / "manifest.json").read_text())["models"]
    for e in entries:
        e["path"] = zoo / e["file"]
        e["present"] = e["path"].exists() and (zoo / e["reference"]).exists()
    return entries


@dataclass
class Reference:
    x: np.ndarray               # (N, H, W, C) uint8, what es.convert and model.forward take
    y: np.ndarray               # the framework's float output, in the framework's layout
    logits: np.ndarray          # the same before a final softmax (== y when there is none), HWC
    y_hwc: np.ndarray           # y as (N, H, W, C)
    input_scaling: tuple


def to_hwc(y: np.ndarray, layout: str) -> np.ndarray:
    """A framework output as edgesnn's (N, H, W, C): vectors are (N, 1, 1, K)."""
    y = np.asarray(y, dtype=np.float32)
    if layout == "NC":
        return y.reshape(y.shape[0], 1, 1, -1)
    if layout == "NCHW":
        return y.transpose(0, 2, 3, 1)
    if layout == "NHWC":
        return y
    if layout == "NCT":                                     # Conv1d: (N, C, T) -> (N, 1, T, C)
        return y.transpose(0, 2, 1)[:, None]
    if layout == "NTC":
        return y[:, None]
    raise ValueError(f"unknown output layout {layout!r}")


def load_reference(e: dict, zoo: Path = ZOO) -> Reference:
    with np.load(zoo / e["reference"]) as data:
        x, y = data["x"], data["y"]
        logits = data["y_logits"] if "y_logits" in data.files else y
        scaling = tuple(float(v) for v in data["input_scaling"])
    return Reference(x=x, y=y, logits=to_hwc(logits, e["output_layout"]), y_hwc=to_hwc(y, e["output_layout"]),
                     input_scaling=scaling)


def float_input(x_uint8: np.ndarray, scaling) -> np.ndarray:
    scale, offset = scaling
    return ((x_uint8.astype(np.float32) - np.float32(offset)) / np.float32(scale)).astype(np.float32)


# what es.convert is calibrated on: the 4 references, their mirror images and CALIBRATION_DIGITS digits made by
# zoo_build's generator at the model's input shape; the SNR is measured on HELD_OUT_DIGITS others, which no
# conversion saw. Both come from one draw of distinct digits of the pool no model trained on (digits a model
# trained on give it confident, large outputs: an SNR over 4 dB higher than on digits it did not see)
CALIBRATION_DIGITS, HELD_OUT_DIGITS, DIGITS_SEED = 56, 64, 555


def _digits(e: dict, ref: Reference) -> np.ndarray:
    """CALIBRATION_DIGITS + HELD_OUT_DIGITS distinct held-out-pool digits, tinted and resized to `e`'s input
    (benchmarks/zoo_build.py's numpy generator; the frameworks it builds with are not needed)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import zoo_build
    spec = next(s for s in zoo_build.SPECS if s.name == e["model"])
    digits, _ = zoo_build._data(spec, CALIBRATION_DIGITS + HELD_OUT_DIGITS, DIGITS_SEED, held_out=True)
    return digits.reshape(-1, *ref.x.shape[1:])


def calibration_samples(e: dict, ref: Reference) -> np.ndarray:
    """The uint8 samples the zoo calibrates entry `e` on: the references, their mirror images and the first
    CALIBRATION_DIGITS digits of _digits."""
    return np.concatenate([ref.x, ref.x[:, :, ::-1], _digits(e, ref)[:CALIBRATION_DIGITS]])


def held_out_samples(e: dict, ref: Reference) -> np.ndarray:
    """The other HELD_OUT_DIGITS digits of _digits: what the zoo's SNR is measured on."""
    return _digits(e, ref)[CALIBRATION_DIGITS:]


# -- measures --------------------------------------------------------------------------------------------

def relative_max_diff(got: np.ndarray, want: np.ndarray) -> float:
    got = np.asarray(got, np.float64).reshape(want.shape)
    return float(np.max(np.abs(got - want)) / max(1e-12, float(np.max(np.abs(want)))))


def snr_per_position(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """SNR in dB at every output position (h, w), over batch and channels: (H, W)."""
    got = np.asarray(got, np.float64).reshape(want.shape)
    want = np.asarray(want, np.float64)
    signal = np.sum(want ** 2, axis=(0, 3))
    noise = np.sum((got - want) ** 2, axis=(0, 3))
    with np.errstate(divide="ignore"):
        return 10 * np.log10(np.maximum(signal, 1e-30) / np.maximum(noise, 1e-30))


def dequantized(model, x: np.ndarray, device: str = "cpu") -> np.ndarray:
    """The model's output in float units: (potentials - the output zero point) * output_scale."""
    potentials = model.forward(x, device=device).astype(np.float64)
    zero_point = model.metadata.get("activation_zero_points", {}).get(model.layers[-1].name, 0)
    return (potentials - np.asarray(zero_point, np.float64)) * np.asarray(model.metadata["output_scale"], np.float64)


def _refused_db(fidelity: dict) -> float:
    """What es.convert's check refused on: the pooled worst position or the 10th percentile of its halves."""
    return min(fidelity["worst_position_snr_db"], fidelity.get("half_batch_p10_snr_db", float("inf")))


def names_op(message: str, refuse_op: str | None) -> bool:
    """Does a refusal's message name the op? refuse_op "A|B": either name will do (a Keras file names
    its layer's activation, the ONNX twin the node's op)."""
    return bool(refuse_op) and any(op.lower() in message.lower() for op in refuse_op.split("|"))


def op_kinds(graph) -> list[str]:
    seen = []
    for node in graph.nodes:
        if node.op not in seen:
            seen.append(node.op)
    return seen


def quiet_convert(path, samples, scaling, bits: int, **options):
    """es.convert on the calibration `samples` as a user calls it (its default fidelity policy unless `options`
    say otherwise, e.g. on_low_fidelity="record" for a diagnostic of a model under the bar); warnings are dropped."""
    import edgesnn as es
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return es.convert(str(path), samples=samples, input_scaling=scaling, weight_bits=bits,
                          activation_bits=bits, progress=False, **options)


def convert_recording(path, samples, scaling, bits: int):
    """(model, the message of the es.PrecisionError es.convert refused it with, or None): the refused
    model is the error's own (PrecisionError.model), so that its SNR can still be measured."""
    import edgesnn as es
    try:
        return quiet_convert(path, samples, scaling, bits), None
    except getattr(es, "PrecisionError", ()) as exc:
        return exc.model, str(exc)


def float_output(graph, x: np.ndarray, scaling) -> np.ndarray:
    """The imported (simplified) float graph's output on uint8 inputs, as (N, H, W, C): the reference for
    inputs the framework was not run on (the graph matches it within FLOAT_MATCH_TARGET on the references)."""
    return np.asarray(graph.run(float_input(x, scaling)), np.float64)


def failure(exc: BaseException) -> dict:
    return {"type": type(exc).__name__, "message": str(exc), "edgesnn_error": _is_edgesnn_error(exc)}


def _is_edgesnn_error(exc) -> bool:
    import edgesnn as es
    return isinstance(exc, es.EdgesnnError)


# -- latency ------------------------------------------------------------------------------------------------

LATENCY_ROUNDS = 20                 # every engine measured in turn, this many rounds ...
LATENCY_CALLS_PER_ROUND = 5         # ... of this many batch-1 calls each; the median of all is reported


def median_call_s(call, calls: int = LATENCY_CALLS, warmup: int = 5) -> float:
    return interleaved_medians_s({"call": call}, rounds=1, per_round=calls, warmup=warmup)["call"]


def interleaved_medians_s(calls: dict, rounds: int = LATENCY_ROUNDS,
                          per_round: int = LATENCY_CALLS_PER_ROUND, warmup: int = 3) -> dict:
    """{name: median seconds} of every callable of `calls` {name: call}, measured in `rounds` rounds that
    visit each in turn (after `warmup` calls of each), so a change in machine load falls on all alike."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples: dict = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(per_round):
                start = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - start)
    return {name: stats_module.median(times) for name, times in samples.items()}


def cycling(inputs: list, run):
    """A call that runs `run` on the next of `inputs` each time (batch 1, the reference inputs in turn)."""
    state = {"i": 0}

    def call():
        state["i"] = (state["i"] + 1) % len(inputs)
        return run(inputs[state["i"]])
    return call


def edgesnn_binding_call(model, x_uint8: np.ndarray, library=None):
    """Batch-1 calls of the native engine through the binding's bound runner
    (edgesnn.native.native_model(model).runner(): the input checked and copied into the bound buffer,
    esnn_run_bound, the output copied out), one thread: what set_tensor / invoke / get_tensor are to
    TFLite and session.run to onnxruntime. `library`: another build (a native.Library, --baseline), else
    the default one; a build from before esnn_run_bound runs through NativeModel.run, the path it had."""
    from edgesnn import native
    loaded = native.native_model(model, library=library)
    singles = [np.ascontiguousarray(x_uint8[i:i + 1, None]) for i in range(len(x_uint8))]
    return cycling(singles, loaded.runner() if loaded.library.run_bound is not None else loaded.run)


def onnx_twin(e: dict, entries: list[dict]) -> dict | None:
    """The ONNX file onnxruntime runs for entry `e`: itself, or the tf2onnx export of the same model."""
    if e["file"].endswith(".onnx"):
        return e
    for other in entries:
        if other["model"] == e["model"] and other["file"].endswith(".onnx") and other["present"]:
            return other
    return None


def framework_input(e: dict, x: np.ndarray, scaling) -> np.ndarray:
    """uint8 HWC inputs `x` as the ONNX file takes them (layout and dtype)."""
    if e.get("input_dtype") == "uint8":
        return x
    xf = float_input(x, scaling)
    layout = e["input_layout"]
    if layout == "NCHW":
        return np.ascontiguousarray(xf.transpose(0, 3, 1, 2))
    if layout == "NCT":
        return np.ascontiguousarray(xf[:, 0].transpose(0, 2, 1))
    return np.ascontiguousarray(xf)


def ort_int8_snr_db(e: dict, quantized, session, input_name: str, x_fw: np.ndarray) -> float:
    """onnxruntime int8 (QDQ, per-channel, calibrated on the zoo's calibration samples) on the held-out inputs
    `x_fw`: SNR of its output against onnxruntime float's at the worst position, dB; the yardstick for
    edgesnn's 8/8 SNR, measured the same way."""
    def run(s):
        return to_hwc(np.concatenate([s.run(None, {input_name: x_fw[i:i + 1]})[0] for i in range(len(x_fw))]),
                      e["output_layout"])
    return float(snr_per_position(run(quantized), run(session)).min())


def ort_sessions(e: dict, ref: Reference, workdir: Path, calibration: np.ndarray):
    """(onnxruntime int8 session of the ONNX file calibrated on the uint8 `calibration` samples, its float
    session, the input name, the reference inputs as they take them); both sessions one thread, every graph
    optimization on."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    x_fw = framework_input(e, ref.x, ref.input_scaling)
    x_calibration = framework_input(e, calibration, ref.input_scaling)
    session = _peers().onnxruntime_session(e["path"])
    input_name = session.get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{input_name: x_calibration[i:i + 1]} for i in range(len(x_calibration))])

        def get_next(self):
            return next(self.batches, None)

    prepared = workdir / f"{e['name']}.prep.onnx"
    int8 = workdir / f"{e['name']}.int8.onnx"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            quant_pre_process(str(e["path"]), str(prepared))
        except Exception:
            prepared = e["path"]
        quantize_static(str(prepared), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return _peers().onnxruntime_session(int8), session, input_name, x_fw


def load_average() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover - not on Linux
        return "?"


def layer_times(model, x_uint8: np.ndarray, calls: int = 20) -> list[dict]:
    """Every layer of `model` run alone (a one-layer Model through the binding) on its real batch-1
    inputs: median microseconds and synaptic operations per call. A layer of several inputs is timed
    with its first input in every slot when their shapes agree (the cost does not depend on the values),
    and left out (us None) when they do not (a concat of different widths)."""
    import edgesnn as es
    from edgesnn import native, reference

    outputs: dict = {}
    reference.run(model, model.check_input(x_uint8), capture=outputs)
    outputs["input"] = x_uint8
    bits = {"input": model.input_bits, **{layer.name: layer.output_bits for layer in model.layers}}
    rows = []
    for layer in model.layers:
        source = layer.inputs[0] if layer.inputs else "input"
        row = {"layer": layer.name, "kind": layer.kind, "input": "x".join(map(str, layer.input_shapes[0])),
               "us": None, "synaptic_ops": None}
        rows.append(row)
        if len(set(map(tuple, layer.input_shapes))) != 1:
            continue
        single = es.Model([layer.replace(inputs=("input",) * max(1, len(layer.inputs)))],
                          input_shape=tuple(layer.input_shapes[0]), input_bits=bits[source])
        x = outputs[source].astype(np.uint8)
        loaded = native.native_model(single)
        singles = [np.ascontiguousarray(x[i:i + 1, None]) for i in range(len(x))]
        call = cycling(singles, loaded.run)
        row["us"] = 1e6 * median_call_s(call, calls=calls, warmup=2)
        row["synaptic_ops"] = int(loaded.run(singles[0])[1][0, 4])
    return rows


def layer_kind_table(results: list[Result]) -> str:
    """Per layer kind, over every zoo model's 4/4 layers (one file per model): how many, the summed
    batch-1 time, its share of all layers' time and nanoseconds per synaptic operation (the slow kinds
    have the most)."""
    per_model: dict = {}
    for r in results:
        if r.layer_times and (r.model not in per_model or r.file.endswith(".onnx")):
            per_model[r.model] = r
    kinds: dict = {}
    for r in per_model.values():
        for row in r.layer_times:
            k = kinds.setdefault(row["kind"], {"count": 0, "us": 0.0, "ops": 0, "untimed": 0})
            k["count"] += 1
            if row["us"] is None:
                k["untimed"] += 1
                continue
            k["us"] += row["us"]
            k["ops"] += row["synaptic_ops"] or 0
    total = sum(k["us"] for k in kinds.values()) or 1.0
    lines = [f"Layer kinds over {len(per_model)} models (4/4, batch 1, each layer alone, median):", "",
             "| kind | layers | total us | share | us per layer | ns / synaptic op |",
             "| --- | --- | --- | --- | --- | --- |"]
    for kind, k in sorted(kinds.items(), key=lambda item: -item[1]["us"]):
        per_op = f"{1e3 * k['us'] / k['ops']:.2f}" if k["ops"] else "—"
        untimed = f" ({k['untimed']} not timed)" if k["untimed"] else ""
        timed = k["count"] - k["untimed"]
        per_layer = f"{k['us'] / timed:.1f}" if timed else "—"
        lines.append(f"| {kind} | {k['count']}{untimed} | {k['us']:.0f} | {100 * k['us'] / total:.0f} % | {per_layer} | "
                     f"{per_op} |")
    return "\n".join(lines)


# -- the TFLite peer (issue 11) -------------------------------------------------------------------------------

TFLITE_CALL = "tflite int8 xnnpack"
TFLITE_TARGET = 1.5                 # issue 11: the median over the zoo at least 1.5x faster than TFLite XNNPACK


def _peers():
    """benchmarks/peers.py (imported by path: tests load this file without benchmarks/ on sys.path)."""
    import importlib.util
    if "peers" not in sys.modules:
        spec = importlib.util.spec_from_file_location("peers", Path(__file__).resolve().parent / "peers.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["peers"] = module
        spec.loader.exec_module(module)
    return sys.modules["peers"]


def add_tflite_call(e: dict, ref: Reference, r: "Result", calls: dict) -> None:
    """Adds the TFLite XNNPACK batch-1 call of `e`'s model to `calls` (the interleaved rounds), and its SNR
    against the float logits to `r`; or says in `r.tflite_error` why there is none."""
    if e["input_layout"] != "NHWC":
        r.tflite_error = "not a Keras model (no .tflite made)"
        return
    try:
        files = _peers().zoo_tflite_calls(e["model"], ZOO, float_input(ref.x, ref.input_scaling), ref.logits)
    except Exception as exc:
        r.tflite_error = f"{type(exc).__name__}: {str(exc)[:200]}"
        return
    if "error" in files:
        r.tflite_error = files["error"]
        return
    r.tflite_files = {name: {"snr_db": f["snr_db"], "xnnpack_partitions": f["partitions"]} for name, f in files.items()}
    for name, f in files.items():
        calls[f"{TFLITE_CALL} {name}"] = f["call"]


def take_tflite_medians(r: "Result", medians: dict) -> None:
    """The TFLite column is the fastest of the model's .tflite files (each the same network: their SNRs are
    kept beside); every file's median goes to the JSON."""
    timed = {name: medians[f"{TFLITE_CALL} {name}"] for name in (r.tflite_files or {})}
    if not timed:
        return
    for name, us in timed.items():
        r.tflite_files[name]["latency_us"] = us
    fastest = min(timed, key=timed.get)
    r.tflite_latency_us, r.tflite_snr, r.tflite_file = timed[fastest], r.tflite_files[fastest]["snr_db"], fastest


def tflite_summary(results: list[Result]) -> dict:
    """Median over the models with a TFLite column of TFLite XNNPACK time / edgesnn 4/4 time (one file per
    model, the ONNX one when there is one, as latency_summary), and how many reach issue 11's 1.5x."""
    per_model: dict = {}
    for r in results:
        if r.latency_us and r.tflite_latency_us and (r.model not in per_model or r.file.endswith(".onnx")):
            per_model[r.model] = r
    ratios = {m: r.tflite_latency_us / r.latency_us for m, r in per_model.items()}
    values = list(ratios.values())
    return {"models": len(values), "median_ratio": stats_module.median(values) if values else None,
            "at_least_target": sum(v >= TFLITE_TARGET for v in values), "per_model": ratios,
            "min_snr_db": min((r.tflite_snr for r in per_model.values() if r.tflite_snr is not None), default=None)}


# -- one zoo file ---------------------------------------------------------------------------------------------

@dataclass
class Result:
    name: str
    model: str
    source: str
    writer: str
    file: str
    expect: str
    refuse_op: str | None
    committed: bool
    params: int
    ops: list = field(default_factory=list)
    import_error: dict | None = None
    float_match: float | None = None
    float_match_of: str | None = None           # "simplified" Graph, or only the "imported" one
    converts: bool = False
    convert_error: dict | None = None
    snr_8: float | None = None                  # worst output position on the held-out digits, dB
    snr_8_positions: list | None = None         # every position (H, W), dB
    snr_8_overall: float | None = None
    snr_8_refs: float | None = None             # worst output position on the 4 references (framework's logits)
    refused_8: str | None = None                # es.convert's PrecisionError at 8/8 (under 25 dB out of sample)
    fidelity_8: dict | None = None              # model.metadata["fidelity"]: its own check on its samples
    bias_corrected_8: bool = False              # es.convert took the integer bias correction (the plain check fell short)
    convert_8_s: float | None = None            # wall seconds of the 8/8 es.convert (its checks included)
    snr_4: float | None = None
    snr_4_positions: list | None = None
    convert_4_error: dict | None = None
    latency_us: float | None = None             # edgesnn 4/4, batch 1, one thread, the binding (median)
    latency_forward_us: float | None = None     # the same through model.forward(x, device="cpu")
    latency_8_us: float | None = None           # edgesnn 8/8 through the binding
    ort_int8_latency_us: float | None = None    # onnxruntime int8 QDQ, batch 1, one thread (median)
    ort_float_latency_us: float | None = None   # onnxruntime float32, batch 1, one thread (median)
    ort_int8_snr_8: float | None = None         # onnxruntime int8 on the same held-out inputs, worst position, dB
    ort_error: str | None = None
    tflite_latency_us: float | None = None      # TFLite int8 with XNNPACK, batch 1, one thread (median)
    baseline_latency_us: float | None = None    # edgesnn 4/4 on another build (--baseline), the same rounds
    tflite_snr: float | None = None             # its dequantized output against the float logits, dB
    tflite_file: str | None = None              # the fastest of the model's .tflite files (benchmarks/tflite/)
    tflite_files: dict | None = None            # every .tflite file of the model: SNR, XNNPACK partitions, latency
    tflite_error: str | None = None             # why there is no TFLite column for this file
    layer_times: list | None = None             # --layers: each 4/4 layer alone (layer_times)
    trained: dict | None = None                 # the build's brief fit (manifest): steps, seconds, accuracy

    @property
    def as_expected(self) -> bool:
        """Did the file do what the manifest expects (the issue's targets)?"""
        if self.expect == "refuse":
            err = self.convert_error or self.import_error
            return bool(err and err["edgesnn_error"] and names_op(err["message"], self.refuse_op))
        return (self.converts and self.float_match_of == "simplified" and self.float_match <= FLOAT_MATCH_TARGET
                and self.snr_8 is not None and self.snr_8 >= SNR_TARGET_DB)

    @property
    def silent_shortfall(self) -> bool:
        """Converted (not refused) yet under the SNR bar on the held-out inputs (the issue: exact, or refuse)."""
        return self.converts and self.snr_8 is not None and self.snr_8 < SNR_TARGET_DB


def run_entry(e: dict, entries: list[dict], *, latency: bool = True, ort_snr: bool = True,
              layers: bool = False, baseline=None) -> Result:
    from edgesnn.convert import load_graph

    r = Result(name=e["name"], model=e["model"], source=e["source"], writer=e["writer"], file=e["file"],
               expect=e["expect"], refuse_op=e.get("refuse_op"), committed=e["committed"], params=e["params"],
               trained=e.get("trained"))
    ref = load_reference(e)
    xf = float_input(ref.x, ref.input_scaling)
    calibration, held = calibration_samples(e, ref), held_out_samples(e, ref)
    simple = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = load_graph(str(e["path"]))
        r.ops = op_kinds(graph)
        r.float_match, r.float_match_of = relative_max_diff(graph.run(xf), ref.y_hwc), "imported"
        simple = graph.simplify()
        r.ops = op_kinds(simple)
        r.float_match, r.float_match_of = relative_max_diff(simple.run(xf), ref.logits), "simplified"
    except Exception as exc:
        r.import_error = failure(exc)
    try:
        start = time.perf_counter()
        model, r.refused_8 = convert_recording(e["path"], calibration, ref.input_scaling, 8)
        r.convert_8_s = round(time.perf_counter() - start, 2)
        r.fidelity_8 = model.metadata.get("fidelity")
        r.bias_corrected_8 = "bias_corrected" in model.metadata
        r.converts = r.refused_8 is None
        if r.refused_8 is not None:
            import edgesnn as es
            r.convert_error = failure(es.PrecisionError(r.refused_8))
        r.snr_8_refs = float(snr_per_position(dequantized(model, ref.x), ref.logits).min())
        if simple is not None:
            got = dequantized(model, held)
            want = float_output(simple, held, ref.input_scaling).reshape(got.shape)
            positions = snr_per_position(got, want)
            r.snr_8, r.snr_8_positions = float(positions.min()), positions.round(2).tolist()
            r.snr_8_overall = float(snr_per_position(got.reshape(len(got), 1, 1, -1),
                                                     want.reshape(len(got), 1, 1, -1))[0, 0])
    except Exception as exc:
        r.convert_error = failure(exc)
    model4 = None
    if r.converts or r.refused_8 is not None:
        try:
            model4 = quiet_convert(e["path"], calibration, ref.input_scaling, 4)
            got = dequantized(model4, held)
            positions = snr_per_position(got, float_output(simple, held, ref.input_scaling).reshape(got.shape))
            r.snr_4, r.snr_4_positions = float(positions.min()), positions.round(2).tolist()
        except Exception as exc:
            r.convert_4_error = failure(exc)
    calls = {}
    if latency and model4 is not None:
        calls["edgesnn 4/4"] = edgesnn_binding_call(model4, ref.x)
        calls["edgesnn 8/8"] = edgesnn_binding_call(model, ref.x)
        if baseline is not None:
            calls["edgesnn 4/4 baseline"] = edgesnn_binding_call(model4, ref.x, baseline)
        calls["edgesnn 4/4 forward"] = cycling([ref.x[i:i + 1] for i in range(len(ref.x))],
                                               lambda x: model4.forward(x, device="cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        if (latency or ort_snr) and (r.converts or r.refused_8 is not None):
            twin = onnx_twin(e, entries)
            if twin is None:
                r.ort_error = "no ONNX file of this model"
            else:
                try:
                    twin_ref = load_reference(twin)
                    quantized, session, input_name, x_fw = ort_sessions(twin, twin_ref, Path(tmp), calibration)
                    if ort_snr:
                        r.ort_int8_snr_8 = ort_int8_snr_db(twin, quantized, session, input_name,
                                                           framework_input(twin, held, ref.input_scaling))
                    singles = [{input_name: x_fw[i:i + 1]} for i in range(len(x_fw))]
                    calls["onnxruntime int8"] = cycling(singles, lambda feed: quantized.run(None, feed))
                    calls["onnxruntime float"] = cycling(singles, lambda feed: session.run(None, feed))
                except Exception as exc:
                    r.ort_error = f"{type(exc).__name__}: {str(exc)[:200]}"
        if latency and "edgesnn 4/4" in calls:
            add_tflite_call(e, ref, r, calls)
            medians = {name: 1e6 * t for name, t in interleaved_medians_s(calls).items()}
            r.latency_us, r.latency_8_us = medians["edgesnn 4/4"], medians["edgesnn 8/8"]
            r.latency_forward_us = medians["edgesnn 4/4 forward"]
            r.baseline_latency_us = medians.get("edgesnn 4/4 baseline")
            r.ort_int8_latency_us = medians.get("onnxruntime int8")
            r.ort_float_latency_us = medians.get("onnxruntime float")
            take_tflite_medians(r, medians)
    if layers and model4 is not None:
        r.layer_times = layer_times(model4, ref.x)
    return r


# -- the table ------------------------------------------------------------------------------------------------

def _short(message: str, limit: int = 110) -> str:
    first = " ".join(message.split())
    return first if len(first) <= limit else first[:limit - 1] + "…"


def _db(v):
    return "—" if v is None else f"{v:.1f}"


def _ratio(theirs, ours) -> str:
    """onnxruntime time / edgesnn time: above 1, edgesnn is faster."""
    return "—" if not theirs or not ours else f"{theirs / ours:.2f}x"


def latency_summary(results: list[Result]) -> dict:
    """Median over the zoo's architectures of the batch-1 ratios (one file per model: the ONNX one), and
    how many reach issue 11's target (edgesnn 4/4 at least 2x faster than onnxruntime int8)."""
    per_model: dict = {}
    for r in results:
        if r.latency_us and r.ort_int8_latency_us and (r.model not in per_model or r.file.endswith(".onnx")):
            per_model[r.model] = r
    int8 = [r.ort_int8_latency_us / r.latency_us for r in per_model.values()]
    floats = [r.ort_float_latency_us / r.latency_us for r in per_model.values() if r.ort_float_latency_us]
    return {"models": len(per_model),
            "median_int8_ratio": stats_module.median(int8) if int8 else None,
            "median_float_ratio": stats_module.median(floats) if floats else None,
            "at_least_2x_int8": sum(v >= LATENCY_TARGET for v in int8),
            "min_int8_ratio": min(int8) if int8 else None,
            "max_int8_ratio": max(int8) if int8 else None}


def architecture_table(results: list[Result]) -> str:
    """One row per architecture (the README's table): its files, how many convert (or what refuses them),
    the worst over its files of edgesnn's 8/8 and 4/4 SNR and of onnxruntime int8's, and the batch-1
    latency ratios of its ONNX file (of its tf2onnx twin for a Keras model)."""
    models: dict = {}
    for r in results:
        models.setdefault(r.model, []).append(r)
    rows = ["| architecture | source | files | converts | trained (steps, accuracy) | SNR 8/8 held out (worst position) | "
            "onnxruntime int8 SNR | SNR 4/4 | ORT int8 / edgesnn 4/4 | ORT float / edgesnn 4/4 | "
            "TFLite XNNPACK / edgesnn 4/4 |",
            "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]

    def worst(values):
        values = [v for v in values if v is not None]
        return _db(min(values)) if values else "—"

    for model, files in models.items():
        first = files[0]
        if first.expect == "refuse":
            ok = all(f.as_expected for f in files)
            converts = f"refused, names {first.refuse_op.split('|')[0]}" if ok else "**not as expected**"
        else:
            converts = f"{sum(f.converts for f in files)}/{len(files)}"
        timed = next((f for f in files if f.latency_us and f.ort_int8_latency_us and f.file.endswith(".onnx")),
                     next((f for f in files if f.latency_us and f.ort_int8_latency_us), None))
        tflite = next((f for f in files if f.latency_us and f.tflite_latency_us and f.file.endswith(".onnx")),
                      next((f for f in files if f.latency_us and f.tflite_latency_us), None))
        trained = first.trained or {}
        steps = trained.get("steps")
        accuracy = trained.get("train_accuracy")
        fit = "—" if not steps else f"{steps}, {accuracy:.2f}" if accuracy is not None else f"{steps}"
        refused = sum(f.refused_8 is not None for f in files)
        snr_8 = worst(f.snr_8 for f in files) + (f" (refused: {refused}/{len(files)})" if refused else "")
        rows.append(f"| {model} | {first.source} | {len(files)} | {converts} | {fit} | "
                    f"{snr_8} | {worst(f.ort_int8_snr_8 for f in files)} | "
                    f"{worst(f.snr_4 for f in files)} | "
                    f"{_ratio(timed.ort_int8_latency_us, timed.latency_us) if timed else '—'} | "
                    f"{_ratio(timed.ort_float_latency_us, timed.latency_us) if timed else '—'} | "
                    f"{_ratio(tflite.tflite_latency_us, tflite.latency_us) if tflite else '—'} |")
    return "\n".join(rows)


def markdown_table(results: list[Result]) -> str:
    rows = ["| model | source | format | ops | converts? | float-match | SNR 8/8 held out (worst pos.) | ORT int8 SNR | "
            "SNR 4/4 | edgesnn 4/4 us | ORT int8 / edgesnn | ORT float / edgesnn | TFLite XNNPACK / edgesnn | "
            "as expected |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        if r.converts:
            converts = "yes"
        else:
            err = r.convert_error or r.import_error
            converts = f"no: `{err['type']}`: {_short(err['message'])}" if err else "no"
        match = "—" if r.float_match is None else f"{r.float_match:.1e}"
        if r.float_match_of == "imported":
            match += " (imported; simplify fails)"
        latency = "—" if r.latency_us is None else f"{r.latency_us:.0f}"
        int8_ratio = _ratio(r.ort_int8_latency_us, r.latency_us)
        float_ratio = _ratio(r.ort_float_latency_us, r.latency_us)
        ops = ", ".join(r.ops) if r.ops else "—"
        expected = ("yes" if r.as_expected else "**no**") + (f" (refuse: {r.refuse_op})" if r.expect == "refuse" else "")
        if r.refused_8 is not None:
            expected += (f" (PrecisionError: {_refused_db(r.fidelity_8):.1f} dB out of sample or on 9 in 10 "
                         f"batches of half)"
                         if r.fidelity_8 else " (PrecisionError)")
        rows.append(f"| {r.name} | {r.source} | {r.writer} | {ops} | {converts} | {match} | {_db(r.snr_8)} | "
                    f"{_db(r.ort_int8_snr_8)} | {_db(r.snr_4)} | {latency} | {int8_ratio} | {float_ratio} | "
                    f"{_ratio(r.tflite_latency_us, r.latency_us)} | {expected} |")
    return "\n".join(rows)


def baseline_summary(results: list["Result"], path: Path) -> str:
    """--baseline: per model (one file each, the ONNX one where there is one) baseline time / this build's
    (above 1: this build is faster) and the TFLite XNNPACK ratio of each build, measured in the same rounds."""
    per_model: dict = {}
    for r in results:
        if r.latency_us and r.baseline_latency_us and (r.model not in per_model or r.file.endswith(".onnx")):
            per_model[r.model] = r
    if not per_model:
        return f"baseline {path}: no model timed"
    speedups = {m: r.baseline_latency_us / r.latency_us for m, r in per_model.items()}
    tflite = {m: (r.tflite_latency_us / r.baseline_latency_us, r.tflite_latency_us / r.latency_us)
              for m, r in per_model.items() if r.tflite_latency_us}
    line = (f"baseline {path} (load {load_average()}): over {len(speedups)} models, baseline / this build 4/4 median "
            f"{stats_module.median(speedups.values()):.3f}x (range {min(speedups.values()):.3f}x .. "
            f"{max(speedups.values()):.3f}x; " + ", ".join(f"{m} {v:.3f}x" for m, v in speedups.items()) + ")")
    if tflite:
        line += (f"; TFLite XNNPACK / edgesnn median {stats_module.median(v[0] for v in tflite.values()):.2f}x before, "
                 f"{stats_module.median(v[1] for v in tflite.values()):.2f}x after")
    return line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], help="files whose name contains this (repeatable)")
    parser.add_argument("--json", type=Path, help="write every result as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the table here too")
    parser.add_argument("--no-latency", action="store_true", help="skip both latency measurements")
    parser.add_argument("--no-ort", action="store_true",
                        help="skip onnxruntime int8 (its SNR on the same inputs and its latency)")
    parser.add_argument("--committed", action="store_true", help="only the committed files")
    parser.add_argument("--summary", action="store_true", help="also print one row per architecture (README)")
    parser.add_argument("--baseline", type=Path, metavar="LIB",
                        help="also time edgesnn 4/4 on another build of the engine (a libedgesnn.so) in the same "
                             "interleaved rounds: the run prints baseline time / this build's (before / after)")
    parser.add_argument("--layers", action="store_true",
                        help="also time every layer of the 4/4 models alone and sum the times per layer kind")
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "torch")     # edgesnn needs no keras, but a keras 3 on the path may
    from tqdm import tqdm

    entries = load_manifest()
    todo = [e for e in entries if e["present"] and (not args.only or any(o in e["name"] for o in args.only))
            and (e["committed"] or not args.committed)]
    missing = [e["file"] for e in entries if not e["present"]]
    results = []
    baseline = None
    if args.baseline is not None:
        from edgesnn import native
        baseline = native.Library(args.baseline)
    for e in tqdm(todo, desc="zoo", unit="file", file=sys.stderr):
        try:
            results.append(run_entry(e, entries, latency=not (args.no_latency or args.no_ort),
                                     ort_snr=not args.no_ort, layers=args.layers, baseline=baseline))
        except Exception as exc:  # run_entry catches per step; this is the last line of defence
            traceback.print_exc(file=sys.stderr)
            results.append(Result(name=e["name"], model=e["model"], source=e["source"], writer=e["writer"],
                                  file=e["file"], expect=e["expect"], refuse_op=e.get("refuse_op"),
                                  committed=e["committed"], params=e["params"], import_error=failure(exc)))
    table = markdown_table(results)
    print(table)
    expected = sum(r.as_expected for r in results)
    over = sum(r.converts and r.snr_8 is not None and r.snr_8 >= SNR_TARGET_DB for r in results)
    refused = [r.file for r in results if r.refused_8 is not None]
    silent = [r.file for r in results if r.silent_shortfall]
    should = [r for r in results if r.expect == "convert"]
    print(f"\n{len(results)} files: {sum(r.converts for r in results)} of {len(should)} expected conversions convert "
          f"({over} at >= {SNR_TARGET_DB:g} dB at 8/8 on the held-out inputs, {len(silent)} under it"
          + (f": {', '.join(silent)}" if silent else "") + f"), {len(refused)} refused for precision "
          f"(es.PrecisionError under {SNR_TARGET_DB:g} dB out of sample or on 1 in 10 batches of half"
          + (f": {', '.join(refused)}" if refused else "") + f"), {expected} as expected"
          + (f"; {len(missing)} manifest files absent (rebuild with benchmarks/zoo_build.py)" if missing else ""))
    summary = latency_summary(results)
    if summary["models"]:
        print(f"latency (batch 1, one thread, median of interleaved rounds; load {load_average()}): over "
              f"{summary['models']} models, onnxruntime int8 / edgesnn 4/4 median {summary['median_int8_ratio']:.2f}x "
              f"(range {summary['min_int8_ratio']:.2f}x .. {summary['max_int8_ratio']:.2f}x, "
              f"{summary['at_least_2x_int8']} at >= {LATENCY_TARGET:.0f}x), onnxruntime float / edgesnn 4/4 "
              f"median {summary['median_float_ratio']:.2f}x")
    tflite = tflite_summary(results)
    if tflite["models"]:
        print(f"TFLite int8 XNNPACK (ai-edge-litert {_peers().litert_version()}, batch 1, one thread, the same "
              f"rounds; load {load_average()}): over {tflite['models']} models with a .tflite, TFLite / edgesnn 4/4 "
              f"median {tflite['median_ratio']:.2f}x ({tflite['at_least_target']} at >= {TFLITE_TARGET:g}x; "
              + ", ".join(f"{m} {v:.2f}x" for m, v in tflite["per_model"].items())
              + f"); worst TFLite SNR against the float logits {_db(tflite['min_snr_db'])} dB")
    elif not (args.no_latency or args.no_ort):
        reasons = sorted({r.tflite_error for r in results if r.tflite_error and "not a Keras" not in r.tflite_error})
        print("TFLite int8 XNNPACK: no column: " + ("; ".join(reasons) if reasons else "no Keras model timed"))
    if baseline is not None:
        print(baseline_summary(results, args.baseline))
    kinds = None
    if args.layers:
        kinds = layer_kind_table(results)
        print(kinds)
    architectures = architecture_table(results)
    if args.summary:
        print("\n" + architectures)
    if args.markdown:
        args.markdown.write_text(table + "\n\n" + architectures + "\n" + (f"\n{kinds}\n" if kinds else ""))
    if args.json:
        payload = [dict(asdict(r), as_expected=r.as_expected, silent_shortfall=r.silent_shortfall) for r in results]
        args.json.write_text(json.dumps({"results": payload, "absent": missing, "latency_summary": summary,
                                         "tflite_summary": tflite,
                                         "load_average": load_average()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
