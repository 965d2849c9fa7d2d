"""Write the TFLite peers of the benchmarks' models: full-integer int8 .tflite files made by the TFLite
converter from the Keras models, calibrated on the inputs the benchmarks time.

    bash scripts/zoo-env.sh                                    # once: .zoo-venv/ with TensorFlow, tf_keras, Keras 3
    .zoo-venv/bin/python benchmarks/tflite_build.py zoo        # every Keras model of benchmarks/zoo/ that converts
    .zoo-venv/bin/python benchmarks/tflite_build.py zoo --only ds_cnn --zoo /other/checkout/benchmarks/zoo
    .zoo-venv/bin/python benchmarks/tflite_build.py zoo --model akida_akidanet_025_features   # that one model
    python benchmarks/tflite_build.py check [--zoo DIR]          # which twins are stale, missing (no TensorFlow)
    .zoo-venv/bin/python benchmarks/tflite_build.py twin SPEC.npz OUT.tflite   # what benchmarks/engine.py runs

This runs in the zoo's environment (TensorFlow); edgesnn is not imported, and TensorFlow is never a
dependency of edgesnn or of its tests. The benchmarks run the files with ai-edge-litert
(benchmarks/peers.py, the "bench" extra).

- ``zoo``: for every Keras file of the zoo's manifest (one per model: ``.keras`` before ``.h5``) whose
  model edgesnn is expected to convert, writes ``benchmarks/tflite/<model>.int8.tflite``. The model is
  loaded by its own framework (Keras 3 for ``.k3.``, tf_keras for ``.tfk.``); a final softmax is left
  out (edgesnn's converted model and the zoo's SNR columns end at the logits too); a uint8 ``Input``
  becomes a float32 one of the same values (the TFLite model's int8 input then carries them exactly).
  Calibration: the zoo's 4 reference inputs and their mirror images, the 8 samples benchmarks/zoo.py
  calibrates edgesnn and onnxruntime on. Printed per model: the SNR of the .tflite's dequantized output
  against the framework's float output on the reference inputs (the same network, quantized), and the
  ops that remain. Where the model has bounded ReLUs (akida_models' ReLU(max_value=3.75) and the like)
  it also writes ``<model>.relu6.int8.tflite``: the same function with them rescaled to ReLU6
  (`bounded_relus_as_relu6`), which the converter fuses into the convs, where a clamp at another bound
  stays as MINIMUM + RELU ops that XNNPACK's int8 path leaves to the builtin kernels.
  ``benchmarks/tflite/manifest.json`` records, per file, the zoo file it was made from and its sha256
  (benchmarks/peers.py runs a .tflite only beside that very file), SNR, ops and size. A file is
  committed when its zoo file is committed and it is at most ``COMMIT_MAX_BYTES``: the twin of a
  git-ignored zoo file could only run beside that very build of it (the sha256), which a clone never
  has (zoo_build.py makes another), so it would be dead weight. The others are git-ignored
  (benchmarks/tflite/.gitignore, rewritten from the manifest) and rebuilt here, after the zoo file;
  benchmarks/peers.py names each absent twin and the command that makes it.
  ``--model NAME`` builds only the models of exactly that name (``--only`` matches a part of the name).
- ``check``: every twin of the manifest against the zoo file it was made from (sha256): ok, stale (the
  zoo file was rebuilt since: ``zoo --model NAME``), its file or source missing; and the zoo's Keras
  models expected to convert that have no twin. Exit status 1 when any is stale or missing.
- ``twin``: benchmarks/engine.py's networks are torch ones trained at each run; it writes their weights
  (batch norm folded, Keras layouts) and its calibration inputs into SPEC.npz, and this rebuilds the
  same network layer by layer in tf_keras, checks it against torch's float logits, and converts it.

Options of the converter, for both: ``Optimize.DEFAULT``, ``TFLITE_BUILTINS_INT8`` only, int8 input and
output (``inference_input_type`` / ``inference_output_type``), per-channel weights (the default).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
ZOO = HERE / "zoo"
OUT = HERE / "tflite"
COMMIT_MAX_BYTES = 350_000           # as benchmarks/zoo_build.py: a bigger file is rebuilt, not committed


def commits(e: dict, content: bytes) -> bool:
    """Whether the twin `content` of zoo entry `e` is committed: its zoo file is, and it is small."""
    return bool(e.get("committed")) and len(content) <= COMMIT_MAX_BYTES


# -- the converter -----------------------------------------------------------------------------------------

def int8_tflite(model, representative_x: np.ndarray) -> bytes:
    """Full-integer int8 TFLite of a Keras model (Keras 3 or tf_keras) taking float32 NHWC input, calibrated
    on `representative_x` one sample at a time; the batch dimension stays dynamic."""
    import tensorflow as tf

    shape = (None, *representative_x.shape[1:])
    if type(model).__module__.startswith("keras."):
        # Keras 3: a traced call keeps its weights as resource variables (READ_VARIABLE ops that fail at
        # run time); its own SavedModel export freezes them
        import tempfile
        saved = tempfile.mkdtemp(prefix="tflite-build-")
        model.export(saved, format="tf_saved_model", verbose=False,
                     input_signature=[tf.TensorSpec(shape, tf.float32)])
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    else:
        function = tf.function(lambda x: model(x, training=False))
        concrete = function.get_concrete_function(tf.TensorSpec(shape, tf.float32))
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    samples = representative_x.astype(np.float32)
    converter.representative_dataset = lambda: ([samples[i:i + 1]] for i in range(len(samples)))
    return converter.convert()


def run_tflite(content: bytes, x_float: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The dequantized float output of an int8 .tflite on `x_float` (one sample at a time, TensorFlow's
    own interpreter, reference kernels' numbers), and the op names of its graph."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_content=content,
                                      experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    outputs = []
    for i in range(len(x_float)):
        q = np.clip(np.round(x_float[i:i + 1] / in_scale) + in_zero, -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], q)
        interpreter.invoke()
        outputs.append((interpreter.get_tensor(out["index"]).astype(np.float32) - out_zero) * out_scale)
    ops = sorted({op["op_name"] for op in interpreter._get_ops_details()})
    return np.concatenate(outputs), ops


def snr_db(got: np.ndarray, want: np.ndarray) -> float:
    got = np.asarray(got, np.float64).reshape(want.shape)
    want = np.asarray(want, np.float64)
    return float(10 * np.log10(max(np.sum(want ** 2), 1e-30) / max(np.sum((got - want) ** 2), 1e-30)))


# -- bounded ReLUs as ReLU6 -------------------------------------------------------------------------------------

PASS_THROUGH = ("MaxPooling2D", "GlobalAveragePooling2D", "AveragePooling2D", "GlobalMaxPooling2D", "Flatten",
                "Reshape", "Dropout", "ZeroPadding2D")
SCALES_INPUT = ("Conv2D", "DepthwiseConv2D", "Dense", "SeparableConv2D")


def _single_neighbours(model):
    """{layer name: (its one producer, its consumers)}, or None when a layer has several inputs."""
    producers, consumers = {}, {layer.name: [] for layer in model.layers}
    for layer in model.layers:
        inbound = [n for node in layer._inbound_nodes for n in
                   (node.inbound_layers if isinstance(node.inbound_layers, (list, tuple)) else [node.inbound_layers])]
        if len(inbound) > 1:
            return None
        producers[layer.name] = inbound[0] if inbound else None
        for source in inbound:
            consumers.setdefault(source.name, []).append(layer)
    return producers, consumers


def bounded_relus_as_relu6(model, keras_module):
    """The same function with every ReLU(max_value=m != 6) replaced by ReLU6: the layer that feeds it (a
    BatchNormalization's gamma and beta, or a conv's kernel and bias) is scaled by 6 / m, and the kernel of
    the next weighted layer (through pooling, flatten, dropout) by m / 6. TFLite fuses ReLU6 into the conv
    before it; a clamp at another bound becomes MINIMUM + RELU ops, which XNNPACK's int8 path does not take
    (the graph falls into several partitions, builtin kernels between). Returns (model, how many ReLUs), or
    (None, why not) for a graph with branches or a ReLU between other layers. Same model object: a clone."""
    def bounded(layer):
        return type(layer).__name__ == "ReLU" and layer.max_value is not None and float(np.asarray(layer.max_value)) != 6

    if not any(bounded(layer) for layer in model.layers):
        return None, 0
    clone = keras_module.models.clone_model(model)
    clone.set_weights(model.get_weights())
    try:
        neighbours = _single_neighbours(clone)
    except AttributeError:                               # Keras 3's graph nodes: not walked here
        return None, "not a tf_keras graph"
    if neighbours is None:
        return None, "a layer with several inputs"
    producers, consumers = neighbours
    count = 0
    for layer in clone.layers:
        if not bounded(layer):
            continue
        bound = float(np.asarray(layer.max_value))
        if float(np.asarray(layer.threshold)) != 0 or float(np.asarray(layer.negative_slope)) != 0:
            continue
        k = 6.0 / bound
        producer = producers[layer.name]
        kind = type(producer).__name__ if producer is not None else None
        if kind == "BatchNormalization" and producer.scale and producer.center:
            gamma, beta, mean, var = producer.get_weights()
            producer.set_weights([gamma * k, beta * k, mean, var])
        elif kind in ("Conv2D", "DepthwiseConv2D", "Dense") and producer.use_bias:
            kernel, bias = producer.get_weights()
            producer.set_weights([kernel * k, bias * k])
        else:
            return None, f"{layer.name}: fed by {kind}"
        consumer = layer
        while True:
            nexts = consumers.get(consumer.name, [])
            if len(nexts) != 1:
                return None, f"{consumer.name}: {len(nexts)} consumers"
            consumer = nexts[0]
            if type(consumer).__name__ in SCALES_INPUT:
                break
            if type(consumer).__name__ not in PASS_THROUGH:
                return None, f"{layer.name}: followed by {type(consumer).__name__}"
        weights = consumer.get_weights()
        weights[0] = weights[0] / k                      # the (depthwise) kernel of the first op of the consumer
        consumer.set_weights(weights)
        layer.max_value = np.float32(6.0)
        count += 1
    return clone, count


# -- the zoo's Keras models ------------------------------------------------------------------------------------

def keras_module_for(file_name: str):
    if ".k3." in file_name:
        import keras
        return keras
    import tf_keras
    return tf_keras


def logits_model(model, keras_module):
    """`model` without a final softmax (layer or activation), with a float32 input in place of a uint8 one."""
    last = model.layers[-1]
    softmax = isinstance(last, keras_module.layers.Softmax) or (
        isinstance(last, keras_module.layers.Activation) and getattr(last.activation, "__name__", "") == "softmax")
    if softmax:
        model = keras_module.Model(model.inputs, last.input)
    if "uint8" in str(model.inputs[0].dtype):
        float_input = keras_module.Input(model.inputs[0].shape[1:], dtype="float32")
        clone = keras_module.models.clone_model(model, input_tensors=float_input)
        clone.set_weights(model.get_weights())
        model = clone
    return model


def zoo_entries(zoo: Path, only: list[str], models: list[str] = ()) -> list[dict]:
    """One Keras file per model of the manifest (".keras" before ".h5"), present, expected to convert; with
    `only`, models whose name contains one of them; with `models`, models of exactly those names."""
    chosen: dict = {}
    for e in json.loads((zoo / "manifest.json").read_text())["models"]:
        keras_file = e["file"].endswith((".keras", ".h5"))
        if not keras_file or e["expect"] != "convert" or not (zoo / e["file"]).exists():
            continue
        if only and not any(o in e["model"] for o in only):
            continue
        if models and e["model"] not in models:
            continue
        if e["model"] not in chosen or e["file"].endswith(".keras"):
            chosen[e["model"]] = e
    return list(chosen.values())


def sha256(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(out: Path, name: str, entry: dict | None) -> None:
    """benchmarks/tflite/manifest.json: per .tflite file, the zoo file it was made from and that file's sha256
    (benchmarks/peers.py uses a .tflite only beside the very file it was made from), its SNR, size and ops."""
    path = out / "manifest.json"
    files = json.loads(path.read_text())["files"] if path.exists() else {}
    if entry is None:
        files.pop(name, None)
    else:
        files[name] = entry
    path.write_text(json.dumps({"files": dict(sorted(files.items()))}, indent=1) + "\n")
    write_gitignore(out, files)


GITIGNORE_HEAD = """\
# Written by benchmarks/tflite_build.py from manifest.json: a twin is committed when its zoo file is committed
# and it is at most COMMIT_MAX_BYTES; the others are rebuilt (tflite_build.py zoo --model NAME, after
# zoo_build.py); engine-*: benchmarks/engine.py's twins of its trained networks, named by a hash of their weights.
*.tflite
"""


def write_gitignore(out: Path, files: dict) -> None:
    committed = sorted(name for name, entry in files.items() if entry.get("committed"))
    (out / ".gitignore").write_text(GITIGNORE_HEAD + "".join(f"!{name}\n" for name in committed))


def check(zoo: Path, out: Path) -> int:
    """Prints, per twin of the manifest, whether it was made from the zoo file now in `zoo`; and the zoo's
    Keras models (expected to convert, present) without a twin. 1 when any twin is stale or missing."""
    files = json.loads((out / "manifest.json").read_text())["files"]
    bad = 0
    for name, entry in files.items():
        source = zoo / entry["source"]
        if not (out / name).exists():
            state = "missing (git-ignored: rebuild it)"
        elif not source.exists():
            state = f"its source {entry['source']} is not in {zoo}"
        elif sha256(source) != entry["source_sha256"]:
            state = f"stale: {entry['source']} was rebuilt since (tflite_build.py zoo --model {entry['model']})"
        else:
            print(f"ok       {name}  ({entry['source']}, SNR {entry['snr_db']} dB)")
            continue
        bad += 1
        print(f"NOT OK   {name}: {state}")
    twinned = {entry["model"] for entry in files.values()}
    for e in zoo_entries(zoo, []):
        if e["model"] not in twinned:
            bad += 1
            print(f"NO TWIN  {e['model']} ({e['file']}): tflite_build.py zoo --model {e['model']}")
    return 1 if bad else 0


def build_zoo(zoo: Path, out: Path, only: list[str], models: list[str] = ()) -> int:
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    entries = zoo_entries(zoo, only, models)
    unknown = sorted(set(models) - {e["model"] for e in entries})
    if unknown:
        print(f"no Keras model expected to convert named {', '.join(unknown)} in {zoo / 'manifest.json'}",
              file=sys.stderr)
        return 2
    for e in entries:
        keras_module = keras_module_for(e["file"])
        with np.load(zoo / e["reference"]) as data:
            x_uint8, y = data["x"], data["y"]
            logits = data["y_logits"] if "y_logits" in data.files else y
            scale, offset = (float(v) for v in data["input_scaling"])
        x_float = ((x_uint8.astype(np.float32) - np.float32(offset)) / np.float32(scale)).astype(np.float32)
        calibration = np.concatenate([x_float, x_float[:, :, ::-1]])     # benchmarks/zoo.py calibration_samples
        path = out / f"{e['model']}.int8.tflite"
        try:
            model = logits_model(keras_module.models.load_model(str(zoo / e["file"]), compile=False), keras_module)
            float_check = snr_db(np.asarray(model(x_float, training=False)), logits)
            content = int8_tflite(model, calibration)
            got, ops = run_tflite(content, x_float)
        except Exception as exc:  # one model's failure is reported, the others go on
            failures += 1
            print(f"{e['model']}: not converted: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            continue
        path.write_bytes(content)
        source = {"model": e["model"], "source": e["file"], "source_sha256": sha256(zoo / e["file"])}
        record(out, path.name, {**source, "variant": "as written", "bytes": len(content),
                                "snr_db": round(snr_db(got, logits), 2), "ops": ops,
                                "committed": commits(e, content)})
        note = ("" if commits(e, content) else " (too big to commit)" if e.get("committed")
                else " (not committed: its zoo file is not)")
        print(f"{e['model']}: {e['file']} -> {path.name}, {len(content):,} bytes{note}; "
              f"SNR vs the framework's float logits {snr_db(got, logits):.1f} dB "
              f"(its float model reloaded: {float_check:.0f} dB); ops: {', '.join(ops)}", flush=True)
        relu6, count = bounded_relus_as_relu6(model, keras_module)
        relu6_path = out / f"{e['model']}.relu6.int8.tflite"
        if relu6 is None or not count:
            relu6_path.unlink(missing_ok=True)
            record(out, relu6_path.name, None)
            if count:
                print(f"{e['model']}: its bounded ReLUs stay (not rescaled to ReLU6: {count})", flush=True)
            continue
        rescaled_check = snr_db(np.asarray(relu6(x_float, training=False)), logits)
        content = int8_tflite(relu6, calibration)
        got, ops = run_tflite(content, x_float)
        relu6_path.write_bytes(content)
        record(out, relu6_path.name, {**source, "variant": f"{count} bounded ReLUs as ReLU6", "bytes": len(content),
                                      "snr_db": round(snr_db(got, logits), 2), "ops": ops,
                                      "committed": commits(e, content)})
        print(f"{e['model']}: {count} bounded ReLUs as ReLU6 -> {relu6_path.name}, {len(content):,} bytes; "
              f"SNR vs the float logits {snr_db(got, logits):.1f} dB (the rescaled float model: "
              f"{rescaled_check:.0f} dB); ops: {', '.join(ops)}", flush=True)
    return 1 if failures else 0


# -- benchmarks/engine.py's torch networks, rebuilt in tf_keras ------------------------------------------------

def twin_model(spec: dict, arrays: dict):
    """The tf_keras network that `spec["layers"]` describes (benchmarks/peers.py torch_twin_spec writes it):
    conv2d / depthwise2d (folded batch norm, optional relu), maxpool, gap, flatten, dense."""
    import tf_keras as keras

    x = inputs = keras.Input(tuple(spec["input_hwc"]), dtype="float32")
    for i, layer in enumerate(spec["layers"]):
        kind = layer["kind"]
        activation = "relu" if layer.get("relu") else None
        if kind == "conv2d":
            kernel, bias = arrays[f"{i}.kernel"], arrays[f"{i}.bias"]
            conv = keras.layers.Conv2D(kernel.shape[3], kernel.shape[:2], strides=layer["strides"],
                                       padding=layer["padding"], activation=activation)
            x = conv(x)
            conv.set_weights([kernel, bias])
        elif kind == "depthwise2d":
            kernel, bias = arrays[f"{i}.kernel"], arrays[f"{i}.bias"]
            conv = keras.layers.DepthwiseConv2D(kernel.shape[:2], strides=layer["strides"], padding=layer["padding"],
                                                activation=activation)
            x = conv(x)
            conv.set_weights([kernel, bias])
        elif kind == "maxpool":
            x = keras.layers.MaxPooling2D(layer["size"], strides=layer["strides"])(x)
        elif kind == "gap":
            x = keras.layers.GlobalAveragePooling2D()(x)
        elif kind == "flatten":
            x = keras.layers.Flatten()(x)
        elif kind == "dense":
            kernel, bias = arrays[f"{i}.kernel"], arrays[f"{i}.bias"]
            dense = keras.layers.Dense(kernel.shape[1], activation=activation)
            x = dense(x)
            dense.set_weights([kernel, bias])
        else:
            raise ValueError(f"layer {i}: unknown kind {kind!r} (benchmarks/peers.py and this file disagree)")
    return keras.Model(inputs, x)


def build_twin(spec_path: Path, out: Path) -> int:
    with np.load(spec_path) as data:
        arrays = {k: data[k] for k in data.files}
    spec = json.loads(str(arrays.pop("spec")))
    calibration, check_x, check_logits = arrays.pop("calibration"), arrays.pop("check_x"), arrays.pop("check_logits")
    model = twin_model(spec, arrays)
    float_snr = snr_db(np.asarray(model(check_x, training=False)), check_logits)
    if float_snr < 60:
        print(f"twin: the tf_keras rebuild of {spec_path.name} gives other logits than torch's "
              f"(SNR {float_snr:.1f} dB < 60): not the same network", file=sys.stderr)
        return 1
    content = int8_tflite(model, calibration)
    got, ops = run_tflite(content, check_x)
    out.write_bytes(content)
    print(json.dumps({"tflite": str(out), "bytes": len(content), "keras_vs_torch_snr_db": float_snr,
                      "int8_vs_torch_snr_db": snr_db(got, check_logits), "ops": ops}))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    zoo = commands.add_parser("zoo", help="the zoo's Keras models -> benchmarks/tflite/<model>.int8.tflite")
    zoo.add_argument("--zoo", type=Path, default=ZOO, help="the zoo folder (manifest.json and the files)")
    zoo.add_argument("--out", type=Path, default=OUT)
    zoo.add_argument("--only", action="append", default=[], help="models whose name contains this (repeatable)")
    zoo.add_argument("--model", action="append", default=[], help="the model of exactly this name (repeatable)")
    checking = commands.add_parser("check", help="which twins were made from the zoo files now there (sha256)")
    checking.add_argument("--zoo", type=Path, default=ZOO, help="the zoo folder (manifest.json and the files)")
    checking.add_argument("--out", type=Path, default=OUT)
    twin = commands.add_parser("twin", help="a torch network's spec (benchmarks/peers.py) -> an int8 .tflite")
    twin.add_argument("spec", type=Path)
    twin.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "zoo":
        return build_zoo(args.zoo, args.out, args.only, args.model)
    if args.command == "check":
        return check(args.zoo, args.out)
    return build_twin(args.spec, args.out)


if __name__ == "__main__":
    sys.exit(main())
