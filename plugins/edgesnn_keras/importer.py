"""Keras files (.keras zip and legacy .h5) -> edgesnn float Graph, read with json and h5py only.

File layouts read here (no TensorFlow, no Keras needed):

- ``.keras`` (Keras 3): a zip with ``config.json`` (the model config), ``metadata.json`` and
  ``model.weights.h5``, whose ``layers/<path>/vars`` groups hold datasets ``0, 1, ...`` in the
  layer's weight order and name their layer in the ``name`` attribute.
- ``.keras`` written by tf.keras 2.x (``metadata.json`` keras_version 2.x): the same zip, but the
  vars of ``model.layers[i]`` live at ``layers/<snake_case(class name)>[_<n>]`` (``conv2d``,
  ``conv2d_1``, ``re_lu``, ...: numbered per class in layer order), nested models below their path.
- legacy ``.h5`` (tf.keras 2.x ``model.save("m.h5")`` and Keras 3 alike): the JSON config in the
  root attribute ``model_config``; group ``model_weights`` with attribute ``layer_names`` and one
  group per layer whose attribute ``weight_names`` lists its datasets, in weight order.

Configs: Sequential (``layers`` in order, input from an InputLayer's ``batch_shape`` /
``batch_input_shape`` or the first layer's) and Functional (``inbound_nodes`` in Keras 3 form,
``{"args": [keras tensors], ...}``, or tf.keras 2 form, ``[[layer, node, tensor, kwargs], ...]``);
nested Sequential / Functional models are inlined.  A legacy .h5 lists a nested model's weights
under its own group as ``<inner layer>/<var>:0``.

A layer or activation that cannot be converted becomes an ``unsupported`` node (op, layer, hint,
and its output shape from the layer's geometry, a reader's ``build_config`` or its input), so the
import goes on and ``Graph.problems()`` lists everything; where no shape can be known the import
stops there (``metadata["import_stopped"]``).  1-D layers (Conv1D, pools) over (N, L, C) are the
Graph's 2-D ops of height 1 on (1, L, C).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from edgesnn.graph import GraphBuilder, GraphError, block_diagonal_conv_weight

SUPPORTED_LAYERS = ("Activation", "Add", "AveragePooling1D", "AveragePooling2D", "BatchNormalization",
                    "Concatenate", "Conv1D", "Conv2D", "Dense", "DepthwiseConv1D", "DepthwiseConv2D", "Dropout",
                    "Flatten", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "InputLayer", "MaxPooling1D",
                    "MaxPooling2D", "Normalization", "ReLU", "Rescaling", "Reshape", "SeparableConv1D",
                    "SeparableConv2D", "Softmax", "SpatialDropout1D", "SpatialDropout2D", "ZeroPadding1D",
                    "ZeroPadding2D", "Functional", "Sequential")
# what to change, for layers and activations that have no exact integer form
HINTS = {
    "hard_swish": "replace hard_swish with relu6 (or relu), then fine-tune",
    "hard_silu": "replace hard_swish with relu6 (or relu), then fine-tune",
    "swish": "replace swish/silu with relu, then fine-tune", "silu": "replace swish/silu with relu, then fine-tune",
    "sigmoid": "sigmoid has no integer form here; replace it (or remove the squeeze-excite / gating block "
               "using it) and fine-tune",
    "hard_sigmoid": "replace the hard sigmoid (or the squeeze-excite block using it) with relu6, then fine-tune",
    "tanh": "replace tanh with a (bounded) relu, then fine-tune", "gelu": "replace gelu with relu, then fine-tune",
    "elu": "replace elu with relu, then fine-tune", "selu": "replace selu with relu, then fine-tune",
    "LeakyReLU": "replace LeakyReLU with ReLU, then fine-tune", "PReLU": "replace PReLU with ReLU, then fine-tune",
    "ELU": "replace ELU with ReLU, then fine-tune",
    "Multiply": "multiplies two tensors (squeeze-excite / gating): remove the block, then fine-tune",
    "LayerNormalization": "LayerNorm normalizes by run-time statistics; use BatchNormalization instead, "
                          "then fine-tune",
    "UpSampling2D": "upsampling is not supported", "Conv2DTranspose": "transposed convolutions are not supported",
    "GlobalMaxPooling2D": "use GlobalAveragePooling2D instead of a global max",
    "MultiHeadAttention": "attention is not expressible as integer layers",
}
ELEMENTWISE_LAYERS = ("Activation", "LeakyReLU", "PReLU", "ELU", "ReLU", "Softmax", "LayerNormalization",
                      "Normalization", "Rescaling", "BatchNormalization", "Dropout")
SUPPORTED_ACTIVATIONS = ("linear", "relu", "relu6", "softmax")
MODEL_CLASSES = ("Sequential", "Functional", "Model")
# class names older and newer Keras versions use for the same layer
ALIASES = {"Conv2d": "Conv2D", "Convolution2D": "Conv2D", "MaxPool2D": "MaxPooling2D",
           "AvgPool2D": "AveragePooling2D", "GlobalAvgPool2D": "GlobalAveragePooling2D",
           "SeparableConvolution2D": "SeparableConv2D", "Convolution1D": "Conv1D", "MaxPool1D": "MaxPooling1D",
           "AvgPool1D": "AveragePooling1D", "GlobalAvgPool1D": "GlobalAveragePooling1D",
           "SeparableConvolution1D": "SeparableConv1D"}


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
    graph.metadata.update({"source_format": "keras", "source": str(path), **info,
                           "input_dtype": model.input_dtype()})
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
        if self.kind not in MODEL_CLASSES:
            raise GraphError(f"{where}: model class {self.kind!r} is not supported; only Sequential and "
                             f"Functional models")
        self.layers = self.config.get("layers")
        if not isinstance(self.layers, list) or not self.layers:
            raise GraphError(f"{where}: the model config has no layers")

    def input_dtype(self) -> str:
        """The dtype of the model's InputLayer ("uint8" for BrainChip's models), "float32" if not said."""
        for layer in self.layers:
            if layer.get("class_name") == "InputLayer":
                dtype = layer.get("config", {}).get("dtype")
                if isinstance(dtype, dict):  # Keras 3 may write a DTypePolicy
                    dtype = dtype.get("config", {}).get("name")
                return str(dtype or "float32")
        return "float32"

    def fail(self, layer: dict, message: str) -> GraphError:
        return GraphError(f"{self.where}: Keras layer {_layer_name(layer)!r} ({layer.get('class_name')}): {message}")

    def build(self):
        """The Graph; where the import had to stop (an unknown shape), the graph up to there with
        ``metadata["import_stopped"]`` saying why."""
        self.builder = None
        try:
            return self._build_sequential() if self.kind == "Sequential" else self._build_functional()
        except _Stop as stop:
            if self.builder is None or not self.builder.nodes:
                raise
            return self.builder.build(output=self.builder.nodes[-1].name,
                                      metadata={"import_stopped": str(stop)})

    def inline(self, builder: GraphBuilder, sources: list[str]) -> str:
        """Add a nested model's layers to `builder`, reading `sources`; return its output node."""
        if len(sources) != 1:
            raise GraphError(f"{self.where}: nested model {self.config.get('name')!r} must have one input")
        if self.kind == "Sequential":
            tensor = sources[0]
            for layer in self.layers:
                if layer.get("class_name") != "InputLayer":
                    tensor = self._convert(builder, layer, [tensor])
            return tensor
        inputs = _layer_refs(self.config.get("input_layers"))
        outputs = _layer_refs(self.config.get("output_layers"))
        if len(inputs) != 1 or len(outputs) != 1:
            raise GraphError(f"{self.where}: nested model {self.config.get('name')!r} must have one input and "
                             f"one output")
        return self._walk(builder, {inputs[0]: sources[0]}, inputs[0])[outputs[0]]

    def _build_sequential(self):
        layers = list(self.layers)
        shape = _batch_shape(layers[0])
        if layers[0]["class_name"] == "InputLayer":
            layers = layers[1:]
        if shape is None:
            raise GraphError(f"{self.where}: the Sequential model has no input shape; build it with "
                             f"keras.Input(shape=...) before saving")
        builder = self.builder = GraphBuilder(self._input_hwc(shape))
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
        builder = self.builder = GraphBuilder(self._input_hwc(shape))
        tensors = self._walk(builder, {inputs[0]: builder.input_name}, inputs[0])
        return builder.build(output=tensors[outputs[0]])

    def _walk(self, builder: GraphBuilder, tensors: dict, input_layer: str) -> dict:
        """Convert the Functional layers in dependency order; layer name -> its Graph node."""
        pending = [layer for layer in self.layers if _layer_name(layer) != input_layer]
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
        return tensors

    def _inbound(self, layer: dict) -> list[str]:
        nodes = layer.get("inbound_nodes") or []
        if len(nodes) > 1:
            raise self.fail(layer, f"the layer is called {len(nodes)} times (a shared layer); not supported")
        if not nodes:
            return []
        history = _keras_history(nodes[0])
        for name, node_index, tensor_index in history:
            # the node index only counts calls of the source layer; a nested model or an InputLayer
            # shared with another model is read at call 1 or later, which is still its one output
            if int(tensor_index) != 0:
                raise self.fail(layer, f"reads output {tensor_index} of layer {name!r} (call {node_index}); "
                                       f"only single-output layers are supported")
        return [name for name, _, _ in history]

    def _input_hwc(self, batch_shape) -> tuple:
        shape = list(batch_shape)[1:]
        if any(v is None for v in shape) or len(shape) not in (1, 2, 3):
            raise GraphError(f"{self.where}: the input shape must be (H, W, C), (L, C) or (K,) with fixed "
                             f"sizes, got {tuple(shape)}")
        return _hwc(shape)

    def _convert(self, builder: GraphBuilder, layer: dict, sources: list[str]) -> str:
        """Add the nodes of one layer; a layer that cannot be converted becomes an ``unsupported`` node
        (its shape from the config) so that the import goes on and every problem is listed at once."""
        class_name = ALIASES.get(layer.get("class_name"), layer.get("class_name"))
        if class_name in MODEL_CLASSES:
            return _Model(layer, self.weights, self.where).inline(builder, sources)
        converter = _LAYERS.get(class_name)
        try:
            if converter is None:
                raise self.fail(layer, HINTS.get(class_name, f"layer class {class_name!r} is not supported; "
                                                             f"supported layers: {', '.join(SUPPORTED_LAYERS)}"))
            cfg = layer.get("config", {})
            if cfg.get("data_format", "channels_last") not in ("channels_last", None):
                raise self.fail(layer, f"data_format {cfg['data_format']!r} is not supported (only channels_last)")
            if class_name not in ("Add", "Concatenate") and len(sources) != 1:
                raise self.fail(layer, f"takes one input, got {len(sources)}")
            return converter(_Layer(self, builder, layer, sources))
        except GraphError as exc:
            prefix = f"{self.where}: Keras layer {_layer_name(layer)!r} ({layer.get('class_name')}): "
            hint = str(exc)[len(prefix):] if str(exc).startswith(prefix) else str(exc)
            shape = self._output_shape(builder, layer, sources)
            if shape is None:
                raise _Stop(f"{str(exc)}; the layer's output shape is unknown, so the import stopped here") from exc
            return builder.add("unsupported", _layer_name(layer) or "layer", sources,
                               attrs={"op": class_name, "layer": _layer_name(layer), "hint": hint, "shape": shape},
                               source=f"keras {class_name} {_layer_name(layer)!r}")

    def _output_shape(self, builder: GraphBuilder, layer: dict, sources: list[str]):
        """A layer's output shape (HWC) from the build_config input_shape of a layer reading it, or its
        input's shape for elementwise layers; None when neither tells."""
        name = _layer_name(layer)
        for other in self.layers:
            try:
                inbound = self._inbound(other) if self.kind != "Sequential" else []
            except GraphError:
                continue
            if name in inbound:
                shape = (other.get("build_config") or {}).get("input_shape")
                if shape and isinstance(shape[0], list):
                    shape = shape[inbound.index(name)]
                if shape and all(v is not None for v in shape[1:]):
                    return _hwc(shape[1:])
        if self.kind == "Sequential":
            index = next((i for i, l in enumerate(self.layers) if l is layer), None)
            if index is not None and index + 1 < len(self.layers):
                shape = (self.layers[index + 1].get("build_config") or {}).get("input_shape")
                if shape and all(v is not None for v in shape[1:]):
                    return _hwc(shape[1:])
        class_name = ALIASES.get(layer.get("class_name"), layer.get("class_name"))
        geometric = _geometric_output_shape(layer, builder.shape(sources[0])) if len(sources) == 1 else None
        if geometric is not None:
            return geometric
        if sources and (class_name in ELEMENTWISE_LAYERS or class_name == "Multiply"):
            return max((builder.shape(s) for s in sources), key=lambda s: s[0] * s[1] * s[2])
        return None


class _Stop(GraphError):
    """The import cannot go on: a layer that cannot be converted has an unknown output shape."""


def _geometric_output_shape(layer: dict, in_hwc: tuple):
    """The output shape (HWC) of a conv or pooling layer from its config (dilation included), else None."""
    class_name = ALIASES.get(layer.get("class_name"), layer.get("class_name"))
    cfg = layer.get("config", {})
    kernel = cfg.get("kernel_size") or cfg.get("pool_size")
    if kernel is None or not any(class_name.startswith(p) for p in ("Conv", "Depthwise", "Separable", "MaxPool",
                                                                      "AveragePool")):
        return None
    one_d = class_name.endswith("1D")
    as_pair = (lambda v: (1, int(v[0] if isinstance(v, (list, tuple)) else v))) if one_d else _pair
    kernel, strides = as_pair(kernel), as_pair(cfg.get("strides") or kernel)
    dilation = as_pair(cfg.get("dilation_rate", 1))
    out = []
    for size, k, s, d in zip(in_hwc[:2], kernel, strides, dilation):
        span = (k - 1) * d + 1
        out.append(-(-size // s) if str(cfg.get("padding", "valid")).lower() in ("same", "causal")
                   else -(-(size - span + 1) // s))
    channels = cfg.get("filters") or in_hwc[2] * int(cfg.get("depth_multiplier", 1))
    return (out[0], out[1], int(channels)) if min(out) >= 1 else None


def _hwc(shape) -> tuple:
    """The Graph's (H, W, C) of a Keras shape without the batch axis: (H, W, C), (L, C) or (K,)."""
    shape = tuple(int(v) for v in shape)
    return {3: shape, 2: (1, *shape), 1: (1, 1, *shape)}[len(shape)]


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
        self.one_d = self.class_name.endswith("1D")    # over (N, L, C): the Graph's (1, L, C)

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

    def pair(self, value) -> tuple[int, int]:
        """A 2-D (rows, columns) pair of a config value; a 1-D layer's value is (1, value)."""
        if self.one_d:
            return (1, int(value[0] if isinstance(value, (list, tuple)) else value))
        return _pair(value)

    def geometry(self, kernel_key: str = "kernel_size") -> dict:
        if any(int(d) != 1 for d in _pair(self.cfg.get("dilation_rate", 1))):
            raise self.fail(f"dilation_rate {self.cfg['dilation_rate']} is not supported (only 1): dilated "
                            f"convolutions have no integer layer")
        padding = str(self.cfg.get("padding", "valid")).lower()
        strides = self.pair(self.cfg.get("strides") or self.cfg.get(kernel_key))
        if padding == "causal" and self.one_d:  # pads K - 1 steps before the sequence
            padding = (0, 0, self.pair(self.cfg.get(kernel_key))[1] - 1, 0)
        elif padding not in ("same", "valid"):
            raise self.fail(f"padding {padding!r} is not supported (same, valid, causal for 1-D)")
        return {"strides": strides, "padding": padding}

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
        hint = HINTS.get(activation, f"activation {activation!r} is not supported; supported: "
                                     f"{', '.join(SUPPORTED_ACTIVATIONS)}")
        return self.builder.add("unsupported", f"{self.name}/{activation}", [tensor],
                                attrs={"op": str(activation), "layer": self.name, "hint": hint,
                                       "shape": self.builder.shape(tensor)},
                                source=f"keras {self.class_name} {self.name!r} activation")


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return (int(value[0]), int(value[-1]))
    return (int(value), int(value))


def _bias_names(layer: _Layer, names: list[str]) -> list[str]:
    return names + (["bias"] if layer.cfg.get("use_bias", True) else [])


def _bias(weights: dict, channels: int) -> np.ndarray:
    return weights.get("bias", np.zeros(channels, np.float32))


def _kernel_2d(layer: _Layer, kernel: np.ndarray) -> np.ndarray:
    """A 1-D layer's kernel (K, ...) as the 2-D kernel (1, K, ...) of height 1."""
    return kernel[None] if layer.one_d else kernel


def _conv2d(layer: _Layer) -> str:
    w = layer.weights(_bias_names(layer, ["kernel"]))
    kernel = _kernel_2d(layer, w["kernel"])                          # (KH, KW, Cin/groups, Cout)
    groups = int(layer.cfg.get("groups", 1))
    if groups > 1:
        kernel = block_diagonal_conv_weight(np.split(kernel, groups, axis=3))
    params = {"weight": kernel, "bias": _bias(w, kernel.shape[3])}
    out = layer.add("conv2d", attrs=layer.geometry(), params=params)
    return layer.activation(out)


def _depthwise_conv2d(layer: _Layer) -> str:
    """Output channel c*M + m reads input channel c: the Graph's depthwise_conv2d with multiplier M."""
    w = layer.weights(_bias_names(layer, ["depthwise_kernel"]))
    kernel = _kernel_2d(layer, w["depthwise_kernel"])                # (KH, KW, C, M)
    kh, kw, channels, multiplier = kernel.shape
    params = {"weight": kernel.reshape(kh, kw, channels * multiplier), "bias": _bias(w, channels * multiplier)}
    out = layer.add("depthwise_conv2d", attrs={**layer.geometry(), "depth_multiplier": multiplier}, params=params)
    return layer.activation(out)


def _separable_conv2d(layer: _Layer) -> str:
    w = layer.weights(_bias_names(layer, ["depthwise_kernel", "pointwise_kernel"]))
    depthwise = _kernel_2d(layer, w["depthwise_kernel"])             # (KH, KW, C, M)
    pointwise = w["pointwise_kernel"].reshape(-1, w["pointwise_kernel"].shape[-1])   # (C*M, Cout)
    kh, kw, channels, multiplier = depthwise.shape
    params = {"depthwise": depthwise.reshape(kh, kw, channels * multiplier), "pointwise": pointwise,
              "bias": _bias(w, pointwise.shape[1])}
    out = layer.add("separable_conv2d", attrs={**layer.geometry(), "depth_multiplier": multiplier}, params=params)
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


def _keras_rank(layer: _Layer) -> int:
    """The rank (batch included) of the layer's Keras input: from build_config, else from the Graph."""
    shape = (layer.layer.get("build_config") or {}).get("input_shape")
    if shape and not isinstance(shape[0], list):
        return len(shape)
    h, w, _ = layer.input_shape
    return 2 if (h, w) == (1, 1) else (3 if h == 1 else 4)


def _channel_axis_only(layer: _Layer, axis) -> None:
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    rank = _keras_rank(layer)
    if not isinstance(axis, int) or axis % rank != rank - 1:
        raise layer.fail(f"only normalization over the channel (last) axis is supported, got axis={axis} "
                         f"of a rank-{rank} input")


def _batch_norm(layer: _Layer) -> str:
    _channel_axis_only(layer, layer.cfg.get("axis", -1))
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
    attrs = {"pool_size": layer.pair(layer.cfg.get("pool_size", 2)), **geometry}
    if layer.class_name.startswith("MaxPooling"):
        return layer.add("max_pool", attrs=attrs)
    return layer.add("avg_pool", attrs={**attrs, "count_include_pad": False})


def _reshape(layer: _Layer) -> str:
    target = [int(v) for v in layer.cfg.get("target_shape", [])]
    size = int(np.prod(layer.input_shape))
    if len(target) == 1:
        if target[0] not in (-1, size):
            raise layer.fail(f"target_shape {tuple(target)} does not hold the {size} input values")
        return layer.add("flatten")
    if len(target) == 2:   # (L, C): the Graph's (1, L, C)
        target = [1, *target]
    if len(target) == 3:
        if -1 in target:
            known = int(np.prod([v for v in target if v != -1]))
            target[target.index(-1)] = size // max(known, 1)
        return layer.add("reshape", attrs={"shape": tuple(target)})
    raise layer.fail(f"target_shape {tuple(target)} is not supported; only (K,), (L, C) or (H, W, C)")


def _zero_padding(layer: _Layer) -> str:
    padding = layer.cfg.get("padding", 1)
    if layer.one_d:
        before, after = (padding, padding) if isinstance(padding, int) else padding
        pads = (0, 0, int(before), int(after))
    elif isinstance(padding, int):
        pads = (padding,) * 4
    elif isinstance(padding[0], int):
        pads = (padding[0], padding[0], padding[1], padding[1])
    else:
        pads = (*padding[0], *padding[1])
    return layer.add("pad", attrs={"pads": tuple(int(p) for p in pads)})


def _concatenate(layer: _Layer) -> str:
    axis = int(layer.cfg.get("axis", -1))
    rank = _keras_rank(layer)
    if axis % rank != rank - 1:
        raise layer.fail(f"only concatenation along channels (the last axis) is supported, got axis={axis}")
    return layer.add("concat")


def _normalization(layer: _Layer) -> str:
    """keras Normalization (adapted): (x - mean) / max(sqrt(variance), 1e-7), per channel."""
    _channel_axis_only(layer, layer.cfg.get("axis", -1))
    if layer.cfg.get("invert"):
        raise layer.fail("invert=True is not supported")
    arrays = layer.model.weights.get(layer.name, [])
    if layer.cfg.get("mean") is not None and layer.cfg.get("variance") is not None:
        arrays = [layer.cfg["mean"], layer.cfg["variance"]]          # given to the constructor
    if len(arrays) < 2:
        raise layer.fail(f"expected the adapted mean and variance, the file has {len(arrays)} arrays")
    channels = layer.input_shape[2]
    mean = np.broadcast_to(np.asarray(arrays[0], np.float64).reshape(-1), (channels,))
    std = np.maximum(np.sqrt(np.broadcast_to(np.asarray(arrays[1], np.float64).reshape(-1), (channels,))), 1e-7)
    return layer.add("affine", params={"scale": 1.0 / std, "offset": -mean / std})


def _global_average(layer: _Layer) -> str:
    return layer.add("global_avg_pool")   # (1, 1, C) in HWC with or without keepdims


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
    "GlobalAveragePooling2D": _global_average,
    "GlobalAveragePooling1D": _global_average,
    "Conv1D": _conv2d,
    "DepthwiseConv1D": _depthwise_conv2d,
    "SeparableConv1D": _separable_conv2d,
    "MaxPooling1D": _pool,
    "AveragePooling1D": _pool,
    "ZeroPadding2D": _zero_padding,
    "ZeroPadding1D": _zero_padding,
    "Concatenate": _concatenate,
    "Normalization": _normalization,
    "SpatialDropout1D": lambda layer: layer.add("identity", attrs={"was": layer.class_name}),
    "Flatten": lambda layer: layer.add("flatten"),
    "Reshape": _reshape,
    "Dropout": lambda layer: layer.add("identity", attrs={"was": layer.class_name}),
    "SpatialDropout2D": lambda layer: layer.add("identity", attrs={"was": layer.class_name}),
    "Add": lambda layer: layer.add("add"),
    "Rescaling": _rescaling,
}
