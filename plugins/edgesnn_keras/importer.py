"""Keras files (.keras zip and legacy .h5) -> edgesnn float Graph, read with json and h5py only.

File layouts read here (no TensorFlow, no Keras needed):

- ``.keras`` (Keras 3): a zip with ``config.json`` (the model config), ``metadata.json`` and
  ``model.weights.h5``, whose ``layers/<path>/vars`` groups hold datasets ``0, 1, ...`` in the
  layer's weight order and name their layer in the ``name`` attribute.
- legacy ``.h5`` (tf.keras 2.x ``model.save("m.h5")`` and Keras 3 alike): the JSON config in the
  root attribute ``model_config``; group ``model_weights`` with attribute ``layer_names`` and one
  group per layer whose attribute ``weight_names`` lists its datasets, in weight order.

Configs: Sequential (``layers`` in order, input from an InputLayer's ``batch_shape`` /
``batch_input_shape`` or the first layer's) and Functional (``inbound_nodes`` in Keras 3 form,
``{"args": [keras tensors], ...}``, or tf.keras 2 form, ``[[layer, node, tensor, kwargs], ...]``).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from edgesnn.graph import GraphBuilder, GraphError, block_diagonal_conv_weight

SUPPORTED_LAYERS = ("Activation", "Add", "AveragePooling2D", "BatchNormalization", "Conv2D", "Dense",
                    "DepthwiseConv2D", "Dropout", "Flatten", "GlobalAveragePooling2D", "InputLayer",
                    "MaxPooling2D", "ReLU", "Rescaling", "Reshape", "SeparableConv2D", "Softmax",
                    "SpatialDropout2D")
SUPPORTED_ACTIVATIONS = ("linear", "relu", "relu6", "softmax")
MODEL_CLASSES = ("Sequential", "Functional", "Model")
# class names older and newer Keras versions use for the same layer
ALIASES = {"Conv2d": "Conv2D", "Convolution2D": "Conv2D", "MaxPool2D": "MaxPooling2D",
           "AvgPool2D": "AveragePooling2D", "GlobalAvgPool2D": "GlobalAveragePooling2D",
           "SeparableConvolution2D": "SeparableConv2D"}


def is_keras_source(source) -> bool:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).suffix.lower() in (".keras", ".h5", ".hdf5")
    return _is_keras_model_object(source)


def _is_keras_model_object(source) -> bool:
    return any(cls.__module__.startswith("keras") and cls.__name__ in ("Model", "Sequential", "Functional")
               for cls in type(source).__mro__)


# -- reading files -----------------------------------------------------------------------------------


def read_keras_file(path: Path) -> tuple[dict, dict[str, list[np.ndarray]], dict]:
    """(model config, layer name -> weight arrays in order, info) of a .keras or .h5 file."""
    if not path.is_file():
        raise FileNotFoundError(f"Keras model {str(path)!r} does not exist")
    if zipfile.is_zipfile(path):
        return _read_keras_zip(path)
    import h5py

    if h5py.is_hdf5(path):
        return _read_legacy_h5(path)
    raise GraphError(f"{path}: neither a .keras zip archive nor an HDF5 file; save the model with "
                     f"model.save('model.keras') or model.save('model.h5')")


def _read_keras_zip(path: Path):
    import h5py

    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            for required in ("config.json", "model.weights.h5"):
                if required not in names:
                    raise GraphError(f"{path}: the .keras archive has no {required} (it holds {sorted(names)})")
            config = json.loads(archive.read("config.json"))
            metadata = json.loads(archive.read("metadata.json")) if "metadata.json" in names else {}
            weights_bytes = archive.read("model.weights.h5")
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GraphError(f"{path}: malformed .keras archive ({type(exc).__name__}: {exc})") from exc
    by_path: dict[str, list[np.ndarray]] = {}
    weights: dict[str, list[np.ndarray]] = {}
    try:
        with h5py.File(io.BytesIO(weights_bytes), "r") as h5:
            _collect_vars(h5, "", by_path, weights)
    except OSError as exc:
        raise GraphError(f"{path}: model.weights.h5 inside the archive is not readable HDF5 ({exc})") from exc
    version = str(metadata.get("keras_version") or "")
    if version.startswith("2."):  # tf.keras 2.x: vars are stored by class-based paths, not layer names
        weights = _tf_keras2_weights(config, by_path, "")
    info = {"file_format": "keras", "keras_version": metadata.get("keras_version")}
    return config, weights, info


def _collect_vars(group, path: str, by_path: dict, by_name: dict) -> None:
    """Every ``<path>/vars`` group of model.weights.h5: its datasets 0, 1, ... by path and by the
    layer name that Keras 3 stores in its ``name`` attribute (else the group's own key)."""
    import h5py

    for key, child in group.items():
        if not isinstance(child, h5py.Group):
            continue
        child_path = f"{path}/{key}" if path else key
        if key == "vars":
            arrays = [np.asarray(child[index][()]) for index in sorted(child.keys(), key=int)]
            by_path[path] = arrays
            name = child.attrs.get("name", path.rsplit("/", 1)[-1])
            by_name.setdefault(_text(name), arrays)
        else:
            _collect_vars(child, child_path, by_path, by_name)


def snake_case(class_name: str) -> str:
    """tf.keras' generic_utils.to_snake_case: the name a layer's weights are stored under in a
    tf.keras 2.x .keras file ("Conv2D" -> "conv2d", "ReLU" -> "re_lu")."""
    import re

    intermediate = re.sub("(.)([A-Z][a-z0-9]+)", r"\1_\2", class_name)
    insecure = re.sub("([a-z])([A-Z])", r"\1_\2", intermediate).lower()
    return insecure if insecure[0] != "_" else "private" + insecure


def _tf_keras2_weights(config: dict, by_path: dict, prefix: str) -> dict[str, list[np.ndarray]]:
    """Layer name -> weight arrays of a tf.keras 2.x .keras file: the weights of model.layers[i] live
    at ``layers/<snake_case(class name)>[_<n>]`` (numbered per class name in layer order; a
    Sequential's layers do not include its InputLayer), nested models below their own path."""
    model_config = config.get("config", {})
    layers = model_config if isinstance(model_config, list) else model_config.get("layers", [])
    if config.get("class_name") == "Sequential":
        layers = [layer for layer in layers if layer.get("class_name") != "InputLayer"]
    weights, used = {}, {}
    for layer in layers:
        name = snake_case(str(layer.get("class_name", "layer")))
        if name in used:
            used[name] += 1
            name = f"{name}_{used[name]}"
        else:
            used[name] = 0
        path = f"{prefix}layers/{name}"
        if layer.get("class_name") in MODEL_CLASSES:
            weights.update(_tf_keras2_weights(layer, by_path, path + "/"))
        else:
            weights[_layer_name(layer)] = by_path.get(path, [])
    return weights


def _read_legacy_h5(path: Path):
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            if "model_config" not in h5.attrs:
                raise GraphError(f"{path}: the HDF5 file has no model_config attribute (a weights-only file "
                                 f"from save_weights?); save the whole model with model.save('model.h5')")
            config = json.loads(_text(h5.attrs["model_config"]))
            root = h5["model_weights"] if "model_weights" in h5 else h5
            weights = {}
            nested: dict[str, list[np.ndarray]] = {}
            for layer_name in _h5_names(root, "layer_names"):
                group = root[layer_name]
                weight_names = _h5_names(group, "weight_names")
                weights[layer_name] = [np.asarray(group[n][()]) for n in weight_names]
                for weight_name, array in zip(weight_names, weights[layer_name]):
                    parts = weight_name.split("/")   # a nested model lists "<inner layer>/<var>:0"
                    if len(parts) >= 2 and parts[-2] != layer_name:
                        nested.setdefault(parts[-2], []).append(array)
            for inner, arrays in nested.items():
                weights.setdefault(inner, arrays)
            info = {"file_format": "h5", "keras_version": _text(h5.attrs.get("keras_version", b"")) or None,
                    "backend": _text(h5.attrs.get("backend", b"")) or None}
    except (KeyError, json.JSONDecodeError) as exc:
        raise GraphError(f"{path}: malformed legacy Keras .h5 file ({type(exc).__name__}: {exc})") from exc
    except OSError as exc:
        raise GraphError(f"{path}: unreadable HDF5 file ({exc})") from exc
    return config, weights, info


def _h5_names(group, key: str) -> list[str]:
    """A list of names stored as an HDF5 attribute; Keras splits long ones into key0, key1, ..."""
    if key in group.attrs:
        values = list(group.attrs[key])
    else:
        values, chunk = [], 0
        while f"{key}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{key}{chunk}"])
            chunk += 1
    return [_text(v) for v in values]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- the model config ---------------------------------------------------------------------------------


def import_keras(source):
    """Read a .keras / .h5 path (or a keras Model object, saved to a temporary .keras) into a Graph."""
    if not isinstance(source, (str, os.PathLike)):
        if not _is_keras_model_object(source):
            raise TypeError(f"the keras importer reads a .keras/.h5 path or a keras Model, "
                            f"got {type(source).__name__}")
        return _import_keras_object(source)
    path = Path(source)
    config, weights, info = read_keras_file(path)
    model = _Model(config, weights, str(path))
    graph = model.build()
    graph.metadata.update({"source_format": "keras", "source": str(path), **info})
    return graph


def _import_keras_object(model):
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        graph = import_keras(path)
    graph.metadata["source"] = f"<keras {type(model).__name__} {getattr(model, 'name', '')}>"
    return graph


class _Model:
    """Walks a Sequential or Functional config, adding Graph nodes layer by layer."""

    def __init__(self, config: dict, weights: dict, where: str):
        self.where = where
        self.weights = weights
        if not isinstance(config, dict) or "class_name" not in config or "config" not in config:
            raise GraphError(f"{where}: the model config is not a Keras model config (no class_name/config)")
        self.kind = config["class_name"]
        self.config = config["config"]
        if isinstance(self.config, list):  # Keras 2.2 wrote a Sequential config as its list of layers
            self.config = {"layers": self.config}
        if self.kind not in ("Sequential", "Functional", "Model"):
            raise GraphError(f"{where}: model class {self.kind!r} is not supported; only Sequential and "
                             f"Functional models (nested models are not supported)")
        self.layers = self.config.get("layers")
        if not isinstance(self.layers, list) or not self.layers:
            raise GraphError(f"{where}: the model config has no layers")

    def fail(self, layer: dict, message: str) -> GraphError:
        return GraphError(f"{self.where}: Keras layer {_layer_name(layer)!r} ({layer.get('class_name')}): {message}")

    def build(self):
        if self.kind == "Sequential":
            return self._build_sequential()
        return self._build_functional()

    def _build_sequential(self):
        layers = list(self.layers)
        shape = _batch_shape(layers[0])
        if layers[0]["class_name"] == "InputLayer":
            layers = layers[1:]
        if shape is None:
            raise GraphError(f"{self.where}: the Sequential model has no input shape; build it with "
                             f"keras.Input(shape=...) before saving")
        builder = GraphBuilder(self._input_hwc(shape))
        tensor = builder.input_name
        for layer in layers:
            tensor = self._convert(builder, layer, [tensor])
        return builder.build(output=tensor)

    def _build_functional(self):
        inputs = _layer_refs(self.config.get("input_layers"))
        outputs = _layer_refs(self.config.get("output_layers"))
        if len(inputs) != 1 or len(outputs) != 1:
            raise GraphError(f"{self.where}: only models with one input and one output are supported, "
                             f"got inputs {inputs} and outputs {outputs}")
        by_name = {_layer_name(layer): layer for layer in self.layers}
        input_layer = by_name.get(inputs[0])
        shape = _batch_shape(input_layer) if input_layer else None
        if shape is None:
            raise GraphError(f"{self.where}: input layer {inputs[0]!r} has no batch shape in the config")
        builder = GraphBuilder(self._input_hwc(shape))
        tensors = {inputs[0]: builder.input_name}
        pending = [layer for layer in self.layers if _layer_name(layer) != inputs[0]]
        while pending:
            ready = [layer for layer in pending if all(n in tensors for n in self._inbound(layer))]
            if not ready:
                names = [_layer_name(layer) for layer in pending]
                raise GraphError(f"{self.where}: layers {names} do not connect to the model input "
                                 f"(a second input or a cycle)")
            for layer in ready:
                sources = [tensors[n] for n in self._inbound(layer)]
                tensors[_layer_name(layer)] = self._convert(builder, layer, sources)
                pending.remove(layer)
        return builder.build(output=tensors[outputs[0]])

    def _inbound(self, layer: dict) -> list[str]:
        nodes = layer.get("inbound_nodes") or []
        if len(nodes) > 1:
            raise self.fail(layer, f"the layer is called {len(nodes)} times (a shared layer); not supported")
        if not nodes:
            return []
        history = _keras_history(nodes[0])
        for name, node_index, tensor_index in history:
            if int(tensor_index) != 0 or int(node_index) != 0:
                raise self.fail(layer, f"reads output {tensor_index} of call {node_index} of layer {name!r}; "
                                       f"only single-output, single-call layers are supported")
        return [name for name, _, _ in history]

    def _input_hwc(self, batch_shape) -> tuple:
        shape = list(batch_shape)[1:]
        if any(v is None for v in shape) or len(shape) not in (1, 3):
            raise GraphError(f"{self.where}: the input shape must be (H, W, C) or (K,) with fixed sizes, "
                             f"got {tuple(shape)}")
        return tuple(shape) if len(shape) == 3 else (1, 1, shape[0])

    def _convert(self, builder: GraphBuilder, layer: dict, sources: list[str]) -> str:
        class_name = ALIASES.get(layer.get("class_name"), layer.get("class_name"))
        converter = _LAYERS.get(class_name)
        if converter is None:
            raise self.fail(layer, f"layer class {class_name!r} is not supported; supported layers: "
                                   f"{', '.join(SUPPORTED_LAYERS)}")
        cfg = layer.get("config", {})
        if cfg.get("data_format", "channels_last") not in ("channels_last", None):
            raise self.fail(layer, f"data_format {cfg['data_format']!r} is not supported (only channels_last)")
        if class_name != "Add" and len(sources) != 1:
            raise self.fail(layer, f"takes one input, got {len(sources)}")
        return converter(_Layer(self, builder, layer, sources))


def _layer_name(layer: dict) -> str:
    return layer.get("name") or layer.get("config", {}).get("name", "")


def _batch_shape(layer: dict | None):
    cfg = (layer or {}).get("config", {})
    for key in ("batch_shape", "batch_input_shape"):
        if cfg.get(key):
            return cfg[key]
    build_shape = (layer or {}).get("build_config", {}).get("input_shape")
    return build_shape


def _layer_refs(value) -> list[str]:
    """Layer names of input_layers / output_layers: [name, 0, 0] or [[name, 0, 0], ...]."""
    if not value:
        return []
    if isinstance(value[0], str):
        return [value[0]]
    return [ref[0] for ref in value]


def _keras_history(node) -> list[tuple]:
    """(layer, node index, tensor index) of each input of one inbound node, both config styles."""
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        found = []
        _find_keras_tensors(node.get("args", []), found)
        return found
    return [(ref[0], ref[1], ref[2]) for ref in node]  # tf.keras 2: [[name, node, tensor, kwargs], ...]


def _find_keras_tensors(value, found: list) -> None:
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            found.append(tuple(value["config"]["keras_history"]))
            return
        for item in value.values():
            _find_keras_tensors(item, found)
    elif isinstance(value, list):
        for item in value:
            _find_keras_tensors(item, found)


# -- layers ---------------------------------------------------------------------------------------------


class _Layer:
    """One layer being converted: its config, weights, inputs and helpers to add nodes."""

    def __init__(self, model: _Model, builder: GraphBuilder, layer: dict, sources: list[str]):
        self.model = model
        self.builder = builder
        self.layer = layer
        self.name = _layer_name(layer)
        self.class_name = ALIASES.get(layer["class_name"], layer["class_name"])
        self.cfg = layer.get("config", {})
        self.sources = sources

    @property
    def input_shape(self) -> tuple:
        return self.builder.shape(self.sources[0])

    def fail(self, message: str) -> GraphError:
        return self.model.fail(self.layer, message)

    def weights(self, names: list[str]) -> dict[str, np.ndarray]:
        arrays = self.model.weights.get(self.name, [])
        if len(arrays) != len(names):
            raise self.fail(f"expected {len(names)} weight arrays ({', '.join(names)}), "
                            f"the file has {len(arrays)} for this layer")
        return {name: np.asarray(array, np.float32) for name, array in zip(names, arrays)}

    def add(self, op: str, inputs=None, *, attrs=None, params=None, suffix: str = "") -> str:
        return self.builder.add(op, self.name + suffix, self.sources if inputs is None else inputs,
                                attrs=attrs, params=params, source=f"keras {self.class_name} {self.name!r}")

    def geometry(self, kernel_key: str = "kernel_size") -> dict:
        if any(int(d) != 1 for d in _pair(self.cfg.get("dilation_rate", 1))):
            raise self.fail(f"dilation_rate {self.cfg['dilation_rate']} is not supported (only 1)")
        padding = str(self.cfg.get("padding", "valid")).lower()
        if padding not in ("same", "valid"):
            raise self.fail(f"padding {padding!r} is not supported (same, valid)")
        strides = self.cfg.get("strides") or self.cfg.get(kernel_key)
        return {"strides": _pair(strides), "padding": padding}

    def activation(self, tensor: str, activation=None) -> str:
        """Add the node of a layer's `activation` config after `tensor`."""
        activation = self.cfg.get("activation", "linear") if activation is None else activation
        if isinstance(activation, dict):  # Keras 3 may serialize a built-in activation as a dict
            activation = activation.get("config") if isinstance(activation.get("config"), str) \
                else activation.get("class_name")
        activation = activation or "linear"
        if activation == "linear":
            return tensor
        if activation in ("relu", "relu6"):
            return self.add("relu", [tensor], attrs={"max_value": 6.0 if activation == "relu6" else None},
                            suffix="/" + activation)
        if activation == "softmax":
            return self.add("softmax", [tensor], suffix="/softmax")
        raise self.fail(f"activation {activation!r} is not supported; supported: {', '.join(SUPPORTED_ACTIVATIONS)}")


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return (int(value[0]), int(value[-1]))
    return (int(value), int(value))


def _bias_names(layer: _Layer, names: list[str]) -> list[str]:
    return names + (["bias"] if layer.cfg.get("use_bias", True) else [])


def _bias(weights: dict, channels: int) -> np.ndarray:
    return weights.get("bias", np.zeros(channels, np.float32))


def _conv2d(layer: _Layer) -> str:
    w = layer.weights(_bias_names(layer, ["kernel"]))
    kernel = w["kernel"]                                             # (KH, KW, Cin/groups, Cout)
    groups = int(layer.cfg.get("groups", 1))
    if groups > 1:
        kernel = block_diagonal_conv_weight(np.split(kernel, groups, axis=3))
    params = {"weight": kernel, "bias": _bias(w, kernel.shape[3])}
    out = layer.add("conv2d", attrs=layer.geometry(), params=params)
    return layer.activation(out)


def _depthwise_conv2d(layer: _Layer) -> str:
    w = layer.weights(_bias_names(layer, ["depthwise_kernel"]))
    kernel = w["depthwise_kernel"]                                   # (KH, KW, C, M)
    kh, kw, channels, multiplier = kernel.shape
    bias = _bias(w, channels * multiplier)
    if multiplier == 1:
        out = layer.add("depthwise_conv2d", attrs=layer.geometry(), params={"weight": kernel[..., 0], "bias": bias})
    else:  # output channel c*M + m reads input channel c: a block-diagonal conv2d
        groups = [kernel[:, :, c:c + 1, :] for c in range(channels)]
        params = {"weight": block_diagonal_conv_weight(groups), "bias": bias}
        out = layer.add("conv2d", attrs=layer.geometry(), params=params)
    return layer.activation(out)


def _separable_conv2d(layer: _Layer) -> str:
    w = layer.weights(_bias_names(layer, ["depthwise_kernel", "pointwise_kernel"]))
    depthwise = w["depthwise_kernel"]                                # (KH, KW, C, M)
    pointwise = w["pointwise_kernel"][0, 0]                          # (C*M, Cout)
    kh, kw, channels, multiplier = depthwise.shape
    bias = _bias(w, pointwise.shape[1])
    if multiplier == 1:
        params = {"depthwise": depthwise[..., 0], "pointwise": pointwise, "bias": bias}
        out = layer.add("separable_conv2d", attrs=layer.geometry(), params=params)
    else:  # fold both stages into one conv2d: W[kh, kw, c, o] = sum_m D[kh, kw, c, m] * P[c*M + m, o]
        combined = np.einsum("ijcm,cmo->ijco", depthwise.astype(np.float64),
                             pointwise.reshape(channels, multiplier, -1).astype(np.float64))
        out = layer.add("conv2d", attrs=layer.geometry(), params={"weight": combined, "bias": bias})
    return layer.activation(out)


def _dense(layer: _Layer) -> str:
    w = layer.weights(_bias_names(layer, ["kernel"]))
    kernel = w["kernel"]                                             # (K_in, K_out)
    bias = _bias(w, kernel.shape[1])
    h, wd, c = layer.input_shape
    if h * wd == 1:
        out = layer.add("dense", params={"weight": kernel, "bias": bias})
    else:  # Keras Dense on (H, W, C) acts on the last axis: a 1x1 convolution
        out = layer.add("conv2d", attrs={"strides": (1, 1), "padding": "valid"},
                        params={"weight": kernel[None, None], "bias": bias})
    return layer.activation(out)


def _batch_norm(layer: _Layer) -> str:
    axis = layer.cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    rank = 2 if layer.input_shape[:2] == (1, 1) else 4
    if axis not in (-1, rank - 1):
        raise layer.fail(f"only normalization over the channel axis (-1) is supported, got axis={axis}")
    names = (["gamma"] if layer.cfg.get("scale", True) else []) + \
            (["beta"] if layer.cfg.get("center", True) else []) + ["moving_mean", "moving_variance"]
    w = {k: v.astype(np.float64) for k, v in layer.weights(names).items()}
    gamma = w.get("gamma", 1.0)
    scale = gamma / np.sqrt(w["moving_variance"] + float(layer.cfg.get("epsilon", 1e-3)))
    offset = w.get("beta", 0.0) - w["moving_mean"] * scale
    return layer.add("affine", params={"scale": scale, "offset": offset})


def _relu(layer: _Layer) -> str:
    for key in ("negative_slope", "threshold"):
        if float(layer.cfg.get(key) or 0.0) != 0.0:
            raise layer.fail(f"{key}={layer.cfg[key]} is not supported (only a plain or clipped relu)")
    max_value = layer.cfg.get("max_value")
    return layer.add("relu", attrs={"max_value": None if max_value is None else float(max_value)})


def _activation(layer: _Layer) -> str:
    out = layer.activation(layer.sources[0], layer.cfg.get("activation", "linear"))
    return out if out != layer.sources[0] else layer.add("identity", attrs={"was": "Activation(linear)"})


def _softmax(layer: _Layer) -> str:
    axis = layer.cfg.get("axis", -1)
    if axis not in (-1, [-1]):
        raise layer.fail(f"softmax over axis {axis} is not supported (only -1)")
    return layer.add("softmax")


def _pool(layer: _Layer) -> str:
    geometry = layer.geometry("pool_size")
    attrs = {"pool_size": _pair(layer.cfg.get("pool_size", 2)), **geometry}
    if layer.class_name == "MaxPooling2D":
        return layer.add("max_pool", attrs=attrs)
    return layer.add("avg_pool", attrs={**attrs, "count_include_pad": False})


def _reshape(layer: _Layer) -> str:
    target = [int(v) for v in layer.cfg.get("target_shape", [])]
    size = int(np.prod(layer.input_shape))
    if len(target) == 1:
        if target[0] not in (-1, size):
            raise layer.fail(f"target_shape {tuple(target)} does not hold the {size} input values")
        return layer.add("flatten")
    if len(target) == 3:
        if -1 in target:
            known = int(np.prod([v for v in target if v != -1]))
            target[target.index(-1)] = size // max(known, 1)
        return layer.add("reshape", attrs={"shape": tuple(target)})
    raise layer.fail(f"target_shape {tuple(target)} is not supported; only (K,) or (H, W, C)")


def _rescaling(layer: _Layer) -> str:
    channels = layer.input_shape[2]
    scale = np.broadcast_to(np.asarray(layer.cfg.get("scale", 1.0), np.float64), (channels,))
    offset = np.broadcast_to(np.asarray(layer.cfg.get("offset", 0.0), np.float64), (channels,))
    return layer.add("affine", params={"scale": scale, "offset": offset})


_LAYERS = {
    "Conv2D": _conv2d,
    "DepthwiseConv2D": _depthwise_conv2d,
    "SeparableConv2D": _separable_conv2d,
    "Dense": _dense,
    "BatchNormalization": _batch_norm,
    "ReLU": _relu,
    "Activation": _activation,
    "Softmax": _softmax,
    "MaxPooling2D": _pool,
    "AveragePooling2D": _pool,
    "GlobalAveragePooling2D": lambda layer: layer.add("global_avg_pool"),
    "Flatten": lambda layer: layer.add("flatten"),
    "Reshape": _reshape,
    "Dropout": lambda layer: layer.add("identity", attrs={"was": layer.class_name}),
    "SpatialDropout2D": lambda layer: layer.add("identity", attrs={"was": layer.class_name}),
    "Add": lambda layer: layer.add("add"),
    "Rescaling": _rescaling,
}
