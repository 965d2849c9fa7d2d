"""The fastest CPU peers of benchmarks/engine.py and benchmarks/zoo.py: TFLite int8 through ai-edge-litert.

One home for the peer: how a .tflite file is found or made, how it is run (XNNPACK on and off, one
thread or two), and whether it computes the same network as the float model.

- Running: ai-edge-litert's ``Interpreter`` (``pip install -e .[bench]``), with its default delegates
  (XNNPACK, ``OpResolverType.AUTO``) or without them (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``: TFLite's
  own optimized builtin kernels), ``num_threads`` 1 or 2. One interpreter per batch size (the files
  keep a dynamic batch dimension; ``resize_tensor_input`` then ``allocate_tensors``, untimed). The
  int8 input is quantized from the float input outside the timed region, as onnxruntime gets its
  float input ready-made; a timed call is ``set_tensor``, ``invoke``, ``get_tensor``.
- The files: ``benchmarks/tflite/<model>.int8.tflite`` for the zoo's Keras models, written by
  ``benchmarks/tflite_build.py zoo`` in the zoo's TensorFlow environment (scripts/zoo-env.sh).
  benchmarks/engine.py's networks are torch ones trained at each run: ``torch_twin_spec`` writes their
  weights in Keras layouts and ``engine_tflite`` has ``tflite_build.py twin`` rebuild and convert them
  in that environment; the file is kept as ``benchmarks/tflite/engine-<name>-<hash of the weights and
  calibration>.int8.tflite``, so a run that trains the same weights needs no TensorFlow.

TensorFlow is never imported here; without ai-edge-litert, or without a .tflite and a TensorFlow
environment to make one, the benchmarks skip the peer and say why.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TFLITE_DIR = HERE / "tflite"
BUILDER = HERE / "tflite_build.py"
REPO = HERE.parent
SAME_NETWORK_SNR_DB = 20.0          # below this the .tflite's int8 output is not the float model's answer


def onnxruntime_session(path, threads: int = 1):
    """An onnxruntime CPU session as every benchmark times it: `threads` intra-op threads, sequential,
    every graph optimization on."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def litert_missing() -> str | None:
    """None when ai-edge-litert imports, else why the TFLite peer is skipped."""
    try:
        from ai_edge_litert import interpreter  # noqa: F401
    except ImportError as exc:
        return f"ai-edge-litert is not installed ({exc}); pip install -e .[bench]"
    return None


def litert_version() -> str | None:
    try:
        from importlib.metadata import version
        return version("ai-edge-litert")
    except Exception:
        return None


class TFLitePeer:
    """An int8 .tflite run by ai-edge-litert: `prepare(x_float)` (untimed: quantizes, and makes the
    interpreter of that batch size), then `run(prepared)` (timed) returns the int8 output."""

    def __init__(self, path: Path, threads: int = 1, xnnpack: bool = True):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.path, self.threads, self.xnnpack = Path(path), threads, xnnpack
        self._make = lambda: Interpreter(
            model_path=str(self.path), num_threads=threads,
            experimental_op_resolver_type=(OpResolverType.AUTO if xnnpack
                                           else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
        self._by_batch: dict[int, tuple] = {}
        probe = self._make()
        details = probe.get_input_details()[0]
        self.input_shape = tuple(int(v) for v in details["shape"][1:])
        self.input_dtype = details["dtype"]
        self.input_scale, self.input_zero = details["quantization"]
        out = probe.get_output_details()[0]
        self.output_scale, self.output_zero = out["quantization"]

    @property
    def name(self) -> str:
        return f"tflite int8 {'xnnpack' if self.xnnpack else 'builtin'}"

    def interpreter(self, batch: int):
        """(interpreter, input index, output index) for batches of `batch`, made once."""
        if batch not in self._by_batch:
            interpreter = self._make()
            index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(index, [batch, *self.input_shape], strict=True)
            interpreter.allocate_tensors()
            self._by_batch[batch] = (interpreter, index, interpreter.get_output_details()[0]["index"])
        return self._by_batch[batch]

    def quantize(self, x_float: np.ndarray) -> np.ndarray:
        info = np.iinfo(self.input_dtype)
        q = np.round(np.asarray(x_float, np.float32) / np.float32(self.input_scale)) + self.input_zero
        return np.ascontiguousarray(np.clip(q, info.min, info.max).astype(self.input_dtype))

    def prepare(self, x_float: np.ndarray) -> np.ndarray:
        q = self.quantize(x_float)
        self.interpreter(len(q))
        return q

    def run(self, q: np.ndarray) -> np.ndarray:
        interpreter, index, output = self._by_batch[len(q)]
        interpreter.set_tensor(index, q)
        interpreter.invoke()
        return interpreter.get_tensor(output)

    def dequantize(self, y: np.ndarray) -> np.ndarray:
        return (y.astype(np.float32) - np.float32(self.output_zero)) * np.float32(self.output_scale)

    def forward(self, x_float: np.ndarray) -> np.ndarray:
        """Dequantized float output, one sample at a time (for the SNR checks, not timed)."""
        return np.concatenate([self.dequantize(self.run(self.prepare(x_float[i:i + 1])))
                               for i in range(len(x_float))])

    def delegate_partitions(self) -> int:
        """How many graph partitions the default delegate (XNNPACK) took at batch 1: 1 means the whole
        graph, more mean ops it does not take run between them in the builtin kernels."""
        interpreter = self.interpreter(1)[0]
        return sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())

    def ops(self) -> list[str]:
        interpreter = self.interpreter(1)[0]
        return sorted({op["op_name"] for op in interpreter._get_ops_details()} - {"DELEGATE"})


def snr_db(got: np.ndarray, want: np.ndarray) -> float:
    """10 log10(sum want^2 / sum (got - want)^2) over every value."""
    got = np.asarray(got, np.float64).reshape(np.shape(want))
    want = np.asarray(want, np.float64)
    return float(10 * np.log10(max(np.sum(want ** 2), 1e-30) / max(np.sum((got - want) ** 2), 1e-30)))


# -- the zoo's files ---------------------------------------------------------------------------------------

def zoo_tflites(model_name: str, zoo: Path) -> tuple[list[Path], list[str]]:
    """The .tflite files of a zoo model in benchmarks/tflite/ that were made from the file now in `zoo`
    (benchmarks/tflite/manifest.json: its source's sha256): <model>.int8.tflite (the converter's, of the
    model as written) and <model>.relu6.int8.tflite (its bounded ReLUs as ReLU6, the same function:
    benchmarks/tflite_build.py bounded_relus_as_relu6); and why others were left out."""
    manifest_path = TFLITE_DIR / "manifest.json"
    recorded = json.loads(manifest_path.read_text())["files"] if manifest_path.exists() else {}
    paths, left_out = [], []
    for path in (TFLITE_DIR / f"{model_name}.int8.tflite", TFLITE_DIR / f"{model_name}.relu6.int8.tflite"):
        entry = recorded.get(path.name)
        if not path.exists():
            if entry and not entry.get("committed"):    # git-ignored (benchmarks/tflite_build.py commits)
                why = "too big to commit" if entry["bytes"] > 350_000 else f"its zoo file {entry['source']} is git-ignored"
                left_out.append(f"{TFLITE_DIR.name}/{path.name} is absent, not committed ({why}): make it with "
                                f".zoo-venv/bin/python benchmarks/tflite_build.py zoo --model {model_name}")
            continue
        source = zoo / entry["source"] if entry else None
        if source is None or not source.exists():
            left_out.append(f"{path.name}: its source is not recorded or not in {zoo}")
        elif hashlib.sha256(source.read_bytes()).hexdigest() != entry["source_sha256"]:
            left_out.append(f"{path.name}: made from another build of {source.name} (rebuild: tflite_build.py zoo)")
        else:
            paths.append(path)
    return paths, left_out


def zoo_tflite_calls(model_name: str, zoo: Path, x_float_nhwc: np.ndarray, want_logits: np.ndarray) -> dict:
    """The zoo's TFLite column: {file name: {"call": a batch-1 call cycling over the reference inputs
    (XNNPACK, one thread), "snr_db": its dequantized output against the framework's float logits,
    "partitions": XNNPACK's}} for each file of the model, or {"error": why none}. The calls join
    benchmarks/zoo.py's interleaved rounds."""
    missing = litert_missing()
    if missing:
        return {"error": missing}
    paths, left_out = zoo_tflites(model_name, zoo)
    if not paths:
        return {"error": "; ".join(left_out) or f"no {TFLITE_DIR.name}/{model_name}.int8.tflite "
                                                "(benchmarks/tflite_build.py zoo)"}
    files = {}
    for path in paths:
        peer = TFLitePeer(path, threads=1, xnnpack=True)
        if tuple(x_float_nhwc.shape[1:]) != peer.input_shape:
            return {"error": f"{path.name} takes {peer.input_shape}, the reference inputs are {x_float_nhwc.shape[1:]}"}
        singles = [peer.prepare(x_float_nhwc[i:i + 1]) for i in range(len(x_float_nhwc))]
        files[path.name] = {"call": _cycling(peer, singles), "snr_db": snr_db(peer.forward(x_float_nhwc), want_logits),
                            "partitions": peer.delegate_partitions()}
    return files


def _cycling(peer: TFLitePeer, singles: list):
    state = {"i": 0}

    def call():
        state["i"] = (state["i"] + 1) % len(singles)
        return peer.run(singles[state["i"]])
    return call


# -- benchmarks/engine.py's torch networks -------------------------------------------------------------------

def torch_twin_spec(network, input_hwc: tuple, calibration_nhwc: np.ndarray, check_nhwc: np.ndarray) -> dict:
    """The arrays of `network` (an nn.Sequential of Conv2d [+ BatchNorm2d] [+ ReLU], MaxPool2d, Flatten,
    Linear [+ ReLU], and a mean over H, W) in Keras layouts, as benchmarks/tflite_build.py twin reads
    them: batch norm folded into the conv, depthwise kernels (kh, kw, C, 1), a Linear after Flatten
    reordered from torch's C, H, W flattening to Keras's H, W, C. Also the calibration inputs and the
    torch logits on `check_nhwc`, against which the rebuilt network is checked."""
    import torch
    import torch.nn as nn

    shapes: dict = {}
    hooks = [m.register_forward_hook(lambda m, i, _o: shapes.__setitem__(id(m), tuple(i[0].shape[1:])))
             for m in network]
    with torch.no_grad():
        check_logits = network(torch.tensor(np.ascontiguousarray(check_nhwc.transpose(0, 3, 1, 2)))).numpy()
    for hook in hooks:
        hook.remove()
    modules = list(network)
    layers, arrays, flattened_chw = [], {}, None
    i = 0
    while i < len(modules):
        m = modules[i]
        index = len(layers)
        if isinstance(m, nn.Conv2d):
            weight = m.weight.detach().double().numpy()
            bias = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(m.out_channels)
            if i + 1 < len(modules) and isinstance(modules[i + 1], nn.BatchNorm2d):
                bn = modules[i + 1]
                scale = bn.weight.detach().double().numpy() / np.sqrt(bn.running_var.double().numpy() + bn.eps)
                weight = weight * scale[:, None, None, None]
                bias = (bias - bn.running_mean.double().numpy()) * scale + bn.bias.detach().double().numpy()
                i += 1
            depthwise = m.groups > 1
            if depthwise and not (m.groups == m.in_channels == m.out_channels):
                raise ValueError(f"module {i}: grouped conv other than depthwise multiplier 1 has no twin here")
            padding = m.padding if isinstance(m.padding, str) else (
                "valid" if all(p == 0 for p in m.padding) else
                "same" if all(2 * p == k - 1 for p, k in zip(m.padding, m.kernel_size)) and max(m.stride) == 1
                else None)
            if padding is None:
                raise ValueError(f"module {i}: padding {m.padding} at stride {m.stride} is neither 'same' nor 'valid'")
            kernel = weight.transpose(2, 3, 0, 1) if depthwise else weight.transpose(2, 3, 1, 0)
            layer = {"kind": "depthwise2d" if depthwise else "conv2d", "strides": list(m.stride), "padding": padding}
            arrays[f"{index}.kernel"], arrays[f"{index}.bias"] = kernel.astype(np.float32), bias.astype(np.float32)
        elif isinstance(m, nn.MaxPool2d):
            size, stride = m.kernel_size, m.stride or m.kernel_size
            layer = {"kind": "maxpool", "size": size if isinstance(size, int) else list(size),
                     "strides": stride if isinstance(stride, int) else list(stride)}
        elif isinstance(m, nn.Flatten):
            flattened_chw = shapes[id(m)]
            layer = {"kind": "flatten"}
        elif isinstance(m, nn.Linear):
            weight = m.weight.detach().numpy()                          # (out, in), in in torch's order
            if flattened_chw is not None and len(layers) and layers[-1]["kind"] == "flatten":
                c, h, w = flattened_chw
                weight = weight.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)
            layer = {"kind": "dense"}
            arrays[f"{index}.kernel"] = np.ascontiguousarray(weight.T).astype(np.float32)
            arrays[f"{index}.bias"] = m.bias.detach().numpy().astype(np.float32)
        elif type(m).__name__ == "GlobalAveragePool":                   # benchmarks/engine.py's x.mean((2, 3))
            layer = {"kind": "gap"}
        else:
            raise ValueError(f"module {i}: {type(m).__name__} has no twin in benchmarks/tflite_build.py")
        if layer["kind"] in ("conv2d", "depthwise2d", "dense") and i + 1 < len(modules) \
                and isinstance(modules[i + 1], nn.ReLU):
            layer["relu"] = True
            i += 1
        layers.append(layer)
        i += 1
    spec = {"input_hwc": list(input_hwc), "layers": layers}
    return {"spec": np.array(json.dumps(spec)), "calibration": calibration_nhwc.astype(np.float32),
            "check_x": check_nhwc.astype(np.float32), "check_logits": check_logits.astype(np.float32), **arrays}


def twin_hash(arrays: dict) -> str:
    """A short digest of a twin spec's arrays (weights, calibration, layout): names its .tflite file."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    return digest.hexdigest()[:12]


def tensorflow_python(explicit: str | None = None) -> str | None:
    """The python of a TensorFlow environment: `explicit`, $EDGESNN_TFLITE_PYTHON, or the repo's .zoo-venv."""
    for candidate in (explicit, os.environ.get("EDGESNN_TFLITE_PYTHON"), str(REPO / ".zoo-venv" / "bin" / "python")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def engine_tflite(name: str, network, input_hwc: tuple, calibration_nhwc: np.ndarray, check_nhwc: np.ndarray,
                  workdir: Path, tf_python: str | None = None) -> tuple[Path | None, str]:
    """(the int8 .tflite of benchmarks/engine.py's trained `network`, how it was got) or (None, why not).

    benchmarks/tflite/engine-<name>-<hash>.int8.tflite is used when present (the same weights and
    calibration); else `tflite_build.py twin` makes it in a TensorFlow environment and it is kept there."""
    arrays = torch_twin_spec(network, input_hwc, calibration_nhwc, check_nhwc)
    digest = twin_hash({k: v for k, v in arrays.items() if k not in ("check_x", "check_logits")})
    path = TFLITE_DIR / f"engine-{name}-{digest}.int8.tflite"
    if path.exists():
        return path, f"{path.name} (committed, made from these weights)"
    python = tensorflow_python(tf_python)
    if python is None:
        return None, (f"no {path.name} for these weights and no TensorFlow environment to make it "
                      f"(bash scripts/zoo-env.sh, or --tflite-python / $EDGESNN_TFLITE_PYTHON)")
    spec_path = workdir / f"{name}.twin.npz"
    np.savez(spec_path, **arrays)
    TFLITE_DIR.mkdir(exist_ok=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([python, str(BUILDER), "twin", str(spec_path), str(path)], capture_output=True, text=True,
                            env=env)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        return None, f"tflite_build.py twin failed: {' | '.join(tail)}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return path, (f"{path.name} made now by {Path(python).parent.parent.name}: tf_keras rebuild vs torch "
                  f"{report['keras_vs_torch_snr_db']:.0f} dB, ops {', '.join(report['ops'])}")
