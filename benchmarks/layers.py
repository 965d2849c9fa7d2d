"""Each layer kind alone, edgesnn (4/4 and 8/8 bits) vs onnxruntime int8 of the same op, in one run.

    python benchmarks/layers.py            # every case, about a minute on 2 cores
    python benchmarks/layers.py --quick    # smoke run: fewer calls
    python benchmarks/layers.py --cases separable,gap --json out.json
    python benchmarks/layers.py --baseline /tmp/main/libedgesnn.so   # also another build: before / after

Every case is one layer at a typical shape (the DS-CNN's 25x5x64 blocks, MNIST-sized 28x28 maps,
a PyTorch-style strided, padded conv): a one-layer edgesnn Model with random integer weights, run
through the binding (``native.native_model(model).run``: no Python checks, as benchmarks/engine.py's
per-layer table) at 4-bit weights and activations and at 8/8; and the same op as a float ONNX
graph quantized by ``onnxruntime.quantization.quantize_static`` (QDQ, per-channel int8 weights,
uint8 activations; the edgesnn ``separable2d`` is a depthwise and a pointwise conv there, as
tf2onnx writes Keras' SeparableConv2D). Batch 1, one thread; every engine and case is timed in
interleaved rounds (benchmarks/engine.py's helpers), so a change in machine load falls on all of
them alike; the median call is reported (by default the calling thread's CPU time, which on a
shared machine leaves out other processes' time slices; ``--clock wall`` for wall time), and the
ratio onnxruntime int8 / edgesnn (> 1: edgesnn faster). A slow layer kind shows itself as a ratio
below 1.

The edgesnn layer is the model's last, so its relu is not fused into the kernel and its output is
int32 (what a one-layer model returns); onnxruntime's includes its input quantize and output
dequantize. Both are per-call costs of a few microseconds that a whole network pays once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics as stats_module
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import cpu_name, git_commit, interleaved_samples_s, onnxruntime_session, table, timed  # noqa: E402


def cpu_timed(call):
    """A measurement: run `call()` once and return the CPU time this thread spent, in seconds.

    On a machine shared with other jobs a call's wall time includes the time slices other
    processes got meanwhile (longer calls lose more of them); the thread's CPU time does not.
    Both engines compute on the calling thread (onnxruntime with one intra-op thread)."""
    def measure() -> float:
        start = time.thread_time()
        call()
        return time.thread_time() - start
    return measure

BITS = (4, 8)                    # weight and activation bits of the edgesnn variants
CALIBRATION_SAMPLES = 16


@dataclass
class Case:
    """One layer alone: the edgesnn layer (for given bits) and the same op as ONNX nodes."""

    name: str
    description: str
    input_shape: tuple           # HWC of each input
    inputs: int                  # model inputs the layer reads (add and concat: 2, the same tensor)
    make_layer: object           # (rng, bits) -> edgesnn layer (neuron relu, bits-bit activations)
    make_onnx: object            # (rng) -> (nodes, initializers, output channels, output HW)
    input_bits: int | None = None  # the model input's bits when fixed (a stem conv reads 8-bit pixels), else the variant's
    weight_bits: int | None = None  # the weights' bits when fixed (the converter keeps a first layer at 8), else the variant's


# -- the ONNX side: the float op on x / 255 (NCHW), with float weights ------------------------------

def onnx_conv(rng, name, cin, cout, kernel, stride=1, pads=(1, 1, 1, 1), group=1, input_name="x", relu=True):
    """A float Conv (+ Relu) node list and its initializers; pads as (top, bottom, left, right)."""
    from onnx import helper, numpy_helper

    kh, kw = kernel
    weights = rng.normal(0, 0.3, (cout, cin // group, kh, kw)).astype(np.float32)
    bias = rng.normal(0, 0.1, cout).astype(np.float32)
    top, bottom, left, right = pads
    out = f"{name}_conv" if relu else f"{name}_out"
    nodes = [helper.make_node("Conv", [input_name, f"{name}_w", f"{name}_b"], [out], kernel_shape=[kh, kw],
                              strides=[stride, stride], pads=[top, left, bottom, right], group=group)]
    if relu:
        nodes.append(helper.make_node("Relu", [out], [f"{name}_out"]))
    return nodes, [numpy_helper.from_array(weights, f"{name}_w"), numpy_helper.from_array(bias, f"{name}_b")]


def onnx_model(case: Case, rng, path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    nodes, initializers, out_name = case.make_onnx(rng)
    h, w, c = case.input_shape
    graph = helper.make_graph(nodes, case.name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(onnx.shape_inference.infer_shapes(model), str(path))


def to_float_nchw(x_uint8: np.ndarray, bits: int = 8) -> np.ndarray:
    return np.ascontiguousarray(x_uint8.transpose(0, 3, 1, 2).astype(np.float32) / np.float32((1 << bits) - 1))


def quantize_int8(float_path: Path, int8_path: Path, calibration: np.ndarray) -> None:
    """onnxruntime's static int8 quantization, as benchmarks/engine.py does it (QDQ, per channel)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"x": to_float_nchw(calibration[i:i + 1])} for i in range(len(calibration))])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(float_path), str(int8_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


# -- the edgesnn side --------------------------------------------------------------------------------

def weights(rng, shape, bits):
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return rng.integers(low, high + 1, shape)


def relu_scaled(layer, model_input_shape, bits, x, inputs=1, input_bits=None):
    """The layer with an output shift that spreads its relu outputs over the activation range
    (from the reference potentials of `x`), so that its output density is realistic (~50 %)."""
    import edgesnn as es

    probe = layer.replace(neuron="none")
    model = es.Model([probe], input_shape=model_input_shape, input_bits=input_bits or bits)
    potentials = model.forward(x, device="reference")
    positive = potentials[potentials > 0]
    high = float(np.percentile(positive, 90)) if positive.size else 1.0
    shift = max(0, int(np.ceil(np.log2(max(high, 1.0) / ((1 << bits) - 1)))))
    return layer.replace(out_multiplier=1, out_shift=shift, activation_bits=bits)


def conv_case(name, description, hwc, cout, kernel, stride=1, padding="same", pads=None, input_bits=None,
              weight_bits=None):
    from edgesnn import layers as L

    kh, kw = kernel
    h, w, cin = hwc
    onnx_pads = pads if pads is not None else _same_pads(h, w, kh, kw, stride)

    def make_layer(rng, bits):
        bits = weight_bits or bits
        return L.Conv2D(name=name, weights=weights(rng, (kh, kw, cin, cout), bits), weight_bits=bits,
                        bias=rng.integers(-20, 20, cout), stride=stride, padding=pads if pads is not None else padding)

    def make_onnx(rng):
        nodes, inits = onnx_conv(rng, name, cin, cout, kernel, stride, onnx_pads)
        return nodes, inits, f"{name}_out"

    return Case(name, description, hwc, 1, make_layer, make_onnx, input_bits, weight_bits)


def _same_pads(h, w, kh, kw, stride):
    from edgesnn.layers import same_padding

    top, bottom = same_padding(h, kh, stride)
    left, right = same_padding(w, kw, stride)
    return (top, bottom, left, right)


def depthwise_case(name, description, hwc, multiplier=1, kernel=(3, 3)):
    from edgesnn import layers as L

    h, w, c = hwc
    kh, kw = kernel

    def make_layer(rng, bits):
        return L.Depthwise2D(name=name, weights=weights(rng, (kh, kw, c * multiplier), bits), weight_bits=bits,
                             bias=rng.integers(-20, 20, c * multiplier), depth_multiplier=multiplier, padding="same")

    def make_onnx(rng):
        nodes, inits = onnx_conv(rng, name, c, c * multiplier, kernel, 1, _same_pads(h, w, kh, kw, 1), group=c)
        return nodes, inits, f"{name}_out"

    return Case(name, description, hwc, 1, make_layer, make_onnx)


def separable_case(name, description, hwc, cout):
    from edgesnn import layers as L

    h, w, c = hwc

    def make_layer(rng, bits):
        depthwise = weights(rng, (3, 3, c), bits)
        # the depthwise sums of a 3x3 window reach ~ 9 * a_max * w_max / 3: to signed 8 bits
        mid_shift = max(0, int(np.ceil(np.log2(9 * ((1 << bits) - 1) * (1 << (bits - 1)) / 3 / 127))))
        return L.Separable2D(name=name, weights=depthwise, pointwise=weights(rng, (c, cout), bits), weight_bits=bits,
                             bias=rng.integers(-20, 20, cout), mid_multiplier=1, mid_shift=mid_shift, mid_bits=8,
                             padding="same")

    def make_onnx(rng):
        dw_nodes, dw_inits = onnx_conv(rng, f"{name}_dw", c, c, (3, 3), 1, _same_pads(h, w, 3, 3, 1), group=c,
                                       relu=False)
        pw_nodes, pw_inits = onnx_conv(rng, f"{name}_pw", c, cout, (1, 1), 1, (0, 0, 0, 0),
                                       input_name=f"{name}_dw_out")
        return dw_nodes + pw_nodes, dw_inits + pw_inits, f"{name}_pw_out"

    return Case(name, description, hwc, 1, make_layer, make_onnx)


def dense_case(name, description, hwc, cout):
    from onnx import helper, numpy_helper

    from edgesnn import layers as L

    fan_in = int(np.prod(hwc))

    def make_layer(rng, bits):
        return L.Dense(name=name, weights=weights(rng, (fan_in, cout), bits), weight_bits=bits,
                       bias=rng.integers(-20, 20, cout))

    def make_onnx(rng):
        w = rng.normal(0, 0.05, (fan_in, cout)).astype(np.float32)
        b = rng.normal(0, 0.1, cout).astype(np.float32)
        # HWC flattening as edgesnn's (a 1x1 map needs no transpose)
        nodes = [] if hwc[:2] == (1, 1) else [helper.make_node("Transpose", ["x"], [f"{name}_hwc"], perm=[0, 2, 3, 1])]
        nodes += [helper.make_node("Flatten", ["x" if hwc[:2] == (1, 1) else f"{name}_hwc"], [f"{name}_flat"]),
                  helper.make_node("Gemm", [f"{name}_flat", f"{name}_w", f"{name}_b"], [f"{name}_gemm"]),
                  helper.make_node("Relu", [f"{name}_gemm"], [f"{name}_out"])]
        return nodes, [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")], f"{name}_out"

    return Case(name, description, hwc, 1, make_layer, make_onnx)


def add_case(name, description, hwc):
    from onnx import helper

    from edgesnn import layers as L

    c = hwc[2]

    def make_layer(rng, bits):
        return L.Add(name=name, inputs=("input", "input"), input_multipliers=rng.integers(1, 4, (2, c)),
                     bias=rng.integers(-20, 0, c))

    def make_onnx(rng):
        return ([helper.make_node("Add", ["x", "x"], [f"{name}_sum"]),
                 helper.make_node("Relu", [f"{name}_sum"], [f"{name}_out"])], [], f"{name}_out")

    return Case(name, description, hwc, 2, make_layer, make_onnx)


def concat_case(name, description, hwc):
    from onnx import helper

    from edgesnn import layers as L

    def make_layer(rng, bits):
        return L.Concat(name=name, inputs=("input", "input"))

    def make_onnx(rng):
        return ([helper.make_node("Concat", ["x", "x"], [f"{name}_out"], axis=1)], [], f"{name}_out")

    return Case(name, description, hwc, 2, make_layer, make_onnx)


def pool_case(name, description, hwc, pool, size=None, stride=None, pads=(0, 0, 0, 0)):
    """A pooling-only layer: edgesnn's one-input concat with a pool (what the converter makes of a
    pooling node that cannot fold into its producer); onnxruntime's pooling node on int8."""
    from onnx import helper

    from edgesnn import layers as L

    def make_layer(rng, bits):
        extra = {} if pool == "global_avg" else {"pool_size": size, "pool_stride": stride, "pool_padding": pads}
        return L.Concat(name=name, inputs=("input",), pool=pool, **extra)

    def make_onnx(rng):
        top, bottom, left, right = pads
        if pool == "global_avg":
            node = helper.make_node("GlobalAveragePool", ["x"], [f"{name}_out"])
        elif pool == "max":
            node = helper.make_node("MaxPool", ["x"], [f"{name}_out"], kernel_shape=[size, size],
                                    strides=[stride, stride], pads=[top, left, bottom, right])
        else:
            node = helper.make_node("AveragePool", ["x"], [f"{name}_out"], kernel_shape=[size, size],
                                    strides=[stride, stride], pads=[top, left, bottom, right], count_include_pad=0)
        return [node], [], f"{name}_out"

    return Case(name, description, hwc, 1, make_layer, make_onnx)


CASES = [
    conv_case("stem", "conv 3x3/2 3->16, 96x96 RGB, pads (0,1,0,1), 8-bit input and weights (a MobileNet stem)",
              (96, 96, 3), 16, (3, 3), stride=2, pads=(0, 1, 0, 1), input_bits=8, weight_bits=8),
    conv_case("stem7x7", "conv 7x7/2 3->8, 32x32 RGB, pads (3,3,3,3), 8-bit input and weights (a ResNet stem)",
              (32, 32, 3), 8, (7, 7), stride=2, pads=(3, 3, 3, 3), input_bits=8, weight_bits=8),
    conv_case("stem3x3", "conv 3x3 3->8, 32x32 RGB, same, 8-bit input and weights (the zoo's small stems)",
              (32, 32, 3), 8, (3, 3), input_bits=8, weight_bits=8),
    conv_case("conv3x3", "conv 3x3 32->32, 28x28, same", (28, 28, 32), 32, (3, 3)),
    conv_case("conv3x3_8", "conv 3x3 8->8, 32x32, same (a small network's conv)", (32, 32, 8), 8, (3, 3)),
    conv_case("conv1x1", "conv 1x1 64->64, 25x5 (a DS-CNN pointwise)", (25, 5, 64), 64, (1, 1)),
    conv_case("expand1x1", "conv 1x1 8->48, 32x32 (a MobileNetV2 0.35 expansion)", (32, 32, 8), 48, (1, 1)),
    conv_case("expand1x1_96", "conv 1x1 16->96, 8x8 (a MobileNetV2 0.35 expansion, deeper)", (8, 8, 16), 96, (1, 1)),
    conv_case("project1x1", "conv 1x1 48->8, 16x16 (a MobileNetV2 0.35 projection)", (16, 16, 48), 8, (1, 1)),
    conv_case("project1x1_96", "conv 1x1 96->16, 8x8 (a MobileNetV2 0.35 projection, deeper)", (8, 8, 96), 16, (1, 1)),
    conv_case("head1x1", "conv 1x1 112->1280, 2x2 (a MobileNetV2 0.35 head)", (2, 2, 112), 1280, (1, 1)),
    conv_case("conv3x3s2", "conv 3x3/2 16->32, 32x32, pads (1,1,1,1) PyTorch-style", (32, 32, 16), 32, (3, 3),
              stride=2, pads=(1, 1, 1, 1)),
    conv_case("conv5x5", "conv 5x5 32->64, 14x14, same (gxnor_mnist conv2)", (14, 14, 32), 64, (5, 5)),
    conv_case("conv3x3_2x2", "conv 3x3 256->256, 2x2, pads (1,1,1,1) (ResNet18 layer3 at 32x32 input)", (2, 2, 256),
              256, (3, 3), pads=(1, 1, 1, 1)),
    conv_case("conv3x3_1x1", "conv 3x3 512->512, 1x1, pads (1,1,1,1) (ResNet18 layer4: one tap of nine in bounds)",
              (1, 1, 512), 512, (3, 3), pads=(1, 1, 1, 1)),
    depthwise_case("depthwise", "depthwise 3x3, 64 ch, 25x5, same (DS-CNN)", (25, 5, 64)),
    depthwise_case("depthwise_m2", "depthwise 3x3 x2, 32->64 ch, 28x28, same", (28, 28, 32), multiplier=2),
    separable_case("separable", "separable 3x3 + 1x1, 64->64, 25x5, same (akida DS-CNN)", (25, 5, 64), 64),
    separable_case("separable_big", "separable 3x3 + 1x1, 32->64, 28x28, same", (28, 28, 32), 64),
    dense_case("dense", "dense 3136->512 (gxnor_mnist fc1)", (7, 7, 64), 512),
    dense_case("dense_small", "dense 64->12 (a DS-CNN classifier)", (1, 1, 64), 12),
    add_case("add", "add of 2 inputs, 28x28x32", (28, 28, 32)),
    concat_case("concat", "concat of 2 inputs, 28x28x32 each -> 64", (28, 28, 32)),
    concat_case("concat12", "concat of 2 inputs, 32x32x12 each -> 24 (channels across vectors: gathered)",
                (32, 32, 12)),
    pool_case("maxpool", "max pool 3x3/2, pads (1,1,1,1), 28x28x32", (28, 28, 32), "max", 3, 2, (1, 1, 1, 1)),
    pool_case("maxpool2", "max pool 2x2/2, 28x28x32", (28, 28, 32), "max", 2, 2),
    pool_case("avgpool", "avg pool 3x3/1, pads (1,1,1,1), no count_include_pad, 14x14x64", (14, 14, 64), "avg",
              3, 1, (1, 1, 1, 1)),
    pool_case("gap", "global average pool, 25x5x64 (DS-CNN)", (25, 5, 64), "global_avg"),
]


def edgesnn_runner(case: Case, bits: int, rng, x_uint8: np.ndarray, library=None):
    """A one-layer model for `bits` and its binding call on (1, 1, H, W, C) inputs, on the installed
    engine or on `library` (a native.Library: another build, --baseline)."""
    import edgesnn as es
    from edgesnn import native

    layer = case.make_layer(rng, bits)
    input_bits = case.input_bits or bits
    x = (x_uint8 >> (8 - input_bits)).astype(np.uint8)
    if layer.kind in ("conv2d", "depthwise2d", "separable2d", "dense"):
        layer = relu_scaled(layer, case.input_shape, bits, x[:4], input_bits=input_bits)
    else:
        layer = layer.replace(activation_bits=bits, out_shift=0)
    model = es.Model([layer], input_shape=case.input_shape, input_bits=input_bits)
    loaded = native.native_model(model, library)
    singles = [np.ascontiguousarray(x[i:i + 1, None]) for i in range(len(x))]
    state = {"i": 0}

    def run():
        state["i"] = (state["i"] + 1) % len(singles)
        loaded.run(singles[state["i"]])

    reference = model.forward(x[:2], device="reference")
    native_out = model.forward(x[:2], device="cpu" if library is None else native.CpuDevice(library=library))
    if not np.array_equal(reference, native_out):
        raise AssertionError(f"{case.name} {bits}/{bits}: native differs from the reference")
    return run, model


def onnxruntime_runner(case: Case, rng, x_uint8: np.ndarray, workdir: Path):
    float_path = workdir / f"{case.name}.onnx"
    int8_path = workdir / f"{case.name}.int8.onnx"
    onnx_model(case, rng, float_path)
    quantize_int8(float_path, int8_path, x_uint8[:CALIBRATION_SAMPLES])
    session = onnxruntime_session(int8_path, 1)
    singles = [to_float_nchw(x_uint8[i:i + 1]) for i in range(len(x_uint8))]
    state = {"i": 0}

    def run():
        state["i"] = (state["i"] + 1) % len(singles)
        session.run(None, {"x": singles[state["i"]]})

    return run


def realistic_input(rng, count: int, hwc) -> np.ndarray:
    """uint8 inputs about half zero (as after a ReLU), the rest spread over the range."""
    values = rng.integers(1, 256, (count, *hwc))
    return (values * (rng.random((count, *hwc)) < 0.5)).astype(np.uint8)


def run_cases(cases: list[Case], calls: int, rounds: int, workdir: Path, clock: str = "cpu", baseline=None) -> list[dict]:
    """`baseline`: a native.Library (another build of the engine) timed on the same models in the
    same interleaved rounds: the before / after of a kernel change."""
    timed_by = cpu_timed if clock == "cpu" else timed
    measurements, models = {}, {}
    for case in cases:
        # a fixed seed per case name (str hash() changes per process: the models would too)
        rng = np.random.default_rng(int.from_bytes(case.name.encode()[:8], "little"))
        x = realistic_input(rng, 16, case.input_shape)
        for bits in BITS:
            run, models[case.name, bits] = edgesnn_runner(case, bits, np.random.default_rng(bits), x)
            measurements[case.name, f"edgesnn {bits}/{bits}"] = (timed_by(run), calls)
            if baseline is not None:
                base_run, _ = edgesnn_runner(case, bits, np.random.default_rng(bits), x, baseline)
                measurements[case.name, f"baseline {bits}/{bits}"] = (timed_by(base_run), calls)
        measurements[case.name, "onnxruntime int8"] = (timed_by(onnxruntime_runner(case, rng, x, workdir)), calls)
    samples_s = interleaved_samples_s(measurements, rounds)
    rows = []
    for case in cases:
        row = {"case": case.name, "description": case.description}
        for engine in [f"edgesnn {b}/{b}" for b in BITS] + ["onnxruntime int8"]:
            row[engine] = {"median_us": 1e6 * stats_module.median(samples_s[case.name, engine]),
                           "fastest_us": 1e6 * min(samples_s[case.name, engine])}
        ort = row["onnxruntime int8"]["median_us"]
        for bits in BITS:
            row[f"ratio {bits}/{bits}"] = ort / row[f"edgesnn {bits}/{bits}"]["median_us"]
            if baseline is not None:
                base = 1e6 * stats_module.median(samples_s[case.name, f"baseline {bits}/{bits}"])
                row[f"baseline {bits}/{bits}"] = {"median_us": base}
                row[f"speed-up {bits}/{bits}"] = base / row[f"edgesnn {bits}/{bits}"]["median_us"]
        row["kernel"] = models[case.name, 4].layers[0].kernel
        rows.append(row)
    return rows


def report_table(rows: list[dict]) -> str:
    header = ("case", "what", "edgesnn 4/4 us", "edgesnn 8/8 us", "ort int8 us", "ort / 4/4", "ort / 8/8")
    body = [(r["case"], r["description"], f"{r['edgesnn 4/4']['median_us']:.1f}", f"{r['edgesnn 8/8']['median_us']:.1f}",
             f"{r['onnxruntime int8']['median_us']:.1f}", f"{r['ratio 4/4']:.2f}x", f"{r['ratio 8/8']:.2f}x")
            for r in rows]
    if rows and "baseline 4/4" in rows[0]:
        header += ("baseline 4/4 us", "baseline 8/8 us", "speed-up 4/4", "speed-up 8/8")
        body = [line + (f"{r['baseline 4/4']['median_us']:.1f}", f"{r['baseline 8/8']['median_us']:.1f}",
                        f"{r['speed-up 4/4']:.2f}x", f"{r['speed-up 8/8']:.2f}x") for line, r in zip(body, rows)]
    return table(header, body)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls: a smoke run")
    parser.add_argument("--cases", help=f"comma-separated subset of {','.join(c.name for c in CASES)}")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every number as JSON to OUT")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="time each call by the thread's CPU time (default; robust on a loaded machine) or wall time")
    parser.add_argument("--baseline", type=Path, metavar="LIB",
                        help="also time another build of the engine (a libedgesnn.so) on the same models, "
                             "interleaved: the speed-up columns are baseline time / this build's")
    args = parser.parse_args(argv)
    cases = CASES
    if args.cases:
        names = args.cases.split(",")
        unknown = sorted(set(names) - {c.name for c in CASES})
        if unknown:
            parser.error(f"--cases: unknown {unknown}; choose from {[c.name for c in CASES]}")
        cases = [c for c in CASES if c.name in names]
    calls, rounds = (60, 3) if args.quick else (400, 10)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="edgesnn-layers-") as tmp:
        baseline = None
        if args.baseline is not None:
            from edgesnn import native
            baseline = native.Library(args.baseline)
        rows = run_cases(cases, calls, rounds, Path(tmp), args.clock, baseline)
    import onnxruntime

    print(f"\n## Each layer kind alone: batch 1, one thread, median {args.clock} time of {calls} calls per engine, "
          f"interleaved\n")
    print(report_table(rows))
    print(f"\n{cpu_name()}, {os.cpu_count()} cpus, load average at start {load:.2f}; onnxruntime "
          f"{onnxruntime.__version__}; edgesnn {git_commit()}. ratio = onnxruntime int8 / edgesnn (> 1: edgesnn faster)")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "load_average_at_start": load, "git_commit": git_commit(),
                                         "clock": args.clock,
                                         "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
