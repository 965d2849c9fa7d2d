"""The keras importer on real files written by Keras 3 (torch backend), .keras and legacy .h5: the
imported float Graph matches model.predict within 1e-4. The reader itself uses only json and h5py.
tf.keras 2.x cannot run here, so its config style (old inbound_nodes, batch_input_shape, ':0'
weight names) is produced by rewriting a Keras 3 legacy .h5 file into that documented layout."""

import json
import os
import zipfile

os.environ.setdefault("KERAS_BACKEND", "torch")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import layers  # noqa: E402

import edgesnn.plugins  # noqa: E402
from edgesnn.graph import GraphError  # noqa: E402

RNG = np.random.default_rng(3)


@pytest.fixture(scope="module")
def importer():
    return edgesnn.plugins.get_importer("keras")


def randomize_batch_norms(model):
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            values = {"gamma": RNG.uniform(0.5, 1.5, c), "beta": RNG.normal(size=c) * 0.3,
                      "moving_mean": RNG.normal(size=c) * 0.3, "moving_variance": RNG.uniform(0.5, 2.0, c)}
            layer.set_weights([values[w.name] for w in layer.weights])


def residual_separable_model():
    """Functional: rescaling, conv+relu, batch norm, separable and depthwise (multiplier 2) branches,
    grouped conv, residual add, relu6, pooling, flatten -> dropout -> dense -> softmax."""
    inputs = keras.Input((10, 10, 3))
    x = layers.Rescaling(1 / 4, offset=-0.5)(inputs)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(x)
    x = layers.BatchNormalization()(x)
    branch_a = layers.SeparableConv2D(8, 3, padding="same", name="sep")(x)
    branch_b = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)
    branch_b = layers.Conv2D(8, 1, groups=4)(branch_b)
    x = layers.Add(name="residual")([x, branch_a, branch_b])
    x = layers.ReLU(max_value=6.0)(x)
    x = layers.MaxPooling2D()(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu")(x)
    x = layers.SeparableConv2D(6, 2, depth_multiplier=2, activation="relu6")(x)
    x = layers.AveragePooling2D(pool_size=2, strides=1)(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(5, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    randomize_batch_norms(model)
    return model


def sequential_flatten_model():
    """Sequential: flat input reshaped to an image, conv, batch norm, pooling, flatten (HWC order),
    dense with batch norm, global pooling path not used."""
    model = keras.Sequential([
        keras.Input((8 * 6,)),
        layers.Reshape((8, 6, 1)),
        layers.Conv2D(4, 3, strides=2, padding="same", use_bias=False),
        layers.BatchNormalization(),
        layers.Activation("relu"),
        layers.Conv2D(6, 2, padding="valid"),
        layers.Flatten(),
        layers.Dense(12),
        layers.BatchNormalization(center=False),
        layers.ReLU(),
        layers.Dense(4),
        layers.Softmax(),
    ])
    randomize_batch_norms(model)
    return model


def gap_model():
    return keras.Sequential([keras.Input((7, 7, 2)), layers.Conv2D(4, 3, activation="relu6"),
                             layers.SpatialDropout2D(0.2), layers.GlobalAveragePooling2D(), layers.Dense(3)])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each model saved by Keras in both formats, with its predictions on random inputs."""
    folder = tmp_path_factory.mktemp("keras")
    cases = {}
    for name, build, shape in (("residual", residual_separable_model, (10, 10, 3)),
                               ("sequential", sequential_flatten_model, (48,)),
                               ("gap", gap_model, (7, 7, 2))):
        model = build()
        x = RNG.uniform(0, 4, size=(5, *shape)).astype(np.float32)
        model.save(folder / f"{name}.keras")
        model.save(folder / f"{name}.h5")
        cases[name] = (folder, x, model.predict(x, verbose=0), model)
    return cases


def graph_input(graph, x):
    return x.reshape(len(x), *graph.input_shape)


@pytest.mark.parametrize("name", ["residual", "sequential", "gap"])
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_imported_graph_matches_keras_predict(importer, saved, name, suffix):
    folder, x, expected, _ = saved[name]
    graph = importer.load(folder / f"{name}{suffix}")
    assert graph.metadata["file_format"] == suffix[1:] and graph.metadata["source_format"] == "keras"
    out = graph.run(graph_input(graph, x))
    np.testing.assert_allclose(out.reshape(expected.shape), expected, atol=1e-4)
    simple = graph.simplify(resolve_padding=False)
    assert "identity" not in [node.op for node in simple] and "softmax" not in [node.op for node in simple]
    logits = simple.run(graph_input(graph, x)).reshape(len(x), -1)
    assert np.array_equal(logits.argmax(1), expected.reshape(len(x), -1).argmax(1))


def test_residual_graph_keeps_its_structure(importer, saved):
    folder = saved["residual"][0]
    graph = importer.load(folder / "residual.keras")
    ops = {node.name: node.op for node in graph}
    assert ops["sep"] == "separable_conv2d" and ops["residual"] == "add"
    assert len(graph.node("residual").inputs) == 3
    assert graph.node("stem/relu").inputs == ("stem",)


def test_keras_model_object_and_registry(importer, saved):
    _, x, expected, model = saved["gap"]
    assert "keras" in edgesnn.plugins.importers()
    assert importer.can_import(model) and importer.can_import("m.keras") and importer.can_import("m.h5")
    assert not importer.can_import("m.onnx") and not importer.can_import(object())
    graph = importer.load(model)
    np.testing.assert_allclose(graph.run(x)[:, 0, 0], expected, atol=1e-4)


# -- tf.keras 2.x legacy layout ------------------------------------------------------------------


def _to_tf_keras2_config(config, nested_index=0):
    """Rewrite a Keras 3 model config the way tf.keras 2.x writes it; a nested model's output is read
    at call `nested_index` (tf.keras counts the model's own graph as call 0)."""
    nested = {layer["config"]["name"] for layer in config["config"]["layers"]
              if layer["class_name"] in ("Functional", "Sequential")}
    for layer in config["config"]["layers"]:
        if layer["class_name"] in ("Functional", "Sequential"):
            _to_tf_keras2_config(layer, nested_index)
        layer.pop("module", None)
        layer.pop("registered_name", None)
        layer.pop("build_config", None)
        cfg = layer["config"]
        if "batch_shape" in cfg:
            cfg["batch_input_shape"] = cfg.pop("batch_shape")
        nodes = layer.get("inbound_nodes")
        if nodes:
            refs = []
            _collect_history(nodes[0]["args"], refs)
            layer["inbound_nodes"] = [[[name, nested_index if name in nested else node, tensor, {}]
                                       for name, node, tensor in refs]]
    for key in ("input_layers", "output_layers"):
        value = config["config"].get(key)
        if value and isinstance(value[0], str):
            config["config"][key] = [value]
    return config


def _collect_history(value, refs):
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            refs.append(value["config"]["keras_history"])
        return
    for item in value:
        _collect_history(item, refs)


def nested_model():
    inner_functional_input = keras.Input((6, 6, 4))
    y = layers.Conv2D(4, 3, padding="same", name="inner_conv")(inner_functional_input)
    y = layers.BatchNormalization(name="inner_bn")(y)
    inner_functional = keras.Model(inner_functional_input, layers.ReLU(name="inner_relu")(y), name="block")
    head = keras.Sequential([keras.Input((6, 6, 4)), layers.GlobalAveragePooling2D(), layers.Dense(3, name="fc")],
                            name="head")
    inputs = keras.Input((6, 6, 2))
    x = layers.Conv2D(4, 1, name="stem")(inputs)
    x = layers.Add(name="skip")([x, inner_functional(x)])
    model = keras.Model(inputs, head(x))
    randomize_batch_norms(inner_functional)
    return model


@pytest.mark.parametrize("name", ["residual", "nested"])
def test_tf_keras2_style_h5(importer, saved, tmp_path, name):
    if name == "nested":
        model = nested_model()
        x = RNG.uniform(0, 4, size=(3, 6, 6, 2)).astype(np.float32)
        expected = model.predict(x, verbose=0)
        model.save(tmp_path / "nested.h5")
        folder = tmp_path
    else:
        folder, x, expected, _ = saved["residual"]
    legacy = tmp_path / "tf2.h5"
    with h5py.File(folder / f"{name}.h5", "r") as source, h5py.File(legacy, "w") as target:
        config = _to_tf_keras2_config(json.loads(source.attrs["model_config"]), nested_index=1)
        target.attrs["model_config"] = json.dumps(config).encode()
        target.attrs["keras_version"] = b"2.15.0"
        target.attrs["backend"] = b"tensorflow"
        weights = target.create_group("model_weights")
        weights.attrs["layer_names"] = source["model_weights"].attrs["layer_names"]
        for layer_name in source["model_weights"].attrs["layer_names"]:
            group = weights.create_group(layer_name)
            names = [n.decode() if isinstance(n, bytes) else n for n in
                     source["model_weights"][layer_name].attrs["weight_names"]]
            new_names = []
            for old in names:
                parts = old.split("/")   # a nested model's weights keep their inner layer's name
                new = f"{parts[-2] if len(parts) >= 2 else layer_name}/{parts[-1]}:0"
                group.create_dataset(new, data=source["model_weights"][layer_name][old][()])
                new_names.append(new.encode())
            group.attrs["weight_names"] = np.array(new_names, dtype=object) if new_names else np.zeros(0)
    graph = importer.load(legacy)
    assert graph.metadata["keras_version"] == "2.15.0"
    np.testing.assert_allclose(graph.run(x).reshape(expected.shape), expected, atol=1e-4)


# -- errors ---------------------------------------------------------------------------------------


def test_unsupported_layers_and_activations_are_listed_and_the_import_goes_on(importer, tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="hard_swish", name="c_hs")(inputs)
    x = layers.LeakyReLU(name="leaky")(x)
    squeeze = layers.GlobalAveragePooling2D(keepdims=True)(x)
    gate = layers.Conv2D(4, 1, activation="sigmoid", name="se_expand")(squeeze)
    x = layers.Multiply(name="se_mul")([x, gate])
    x = layers.Conv2D(2, 3, dilation_rate=2, name="dil")(x)
    outputs = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, outputs)
    for suffix in (".keras", ".h5"):
        model.save(tmp_path / f"m{suffix}")
        graph = importer.load(tmp_path / f"m{suffix}")
        problems = [(p["op"], p["layer"], p["shape"]) for p in graph.problems()]   # Keras 3 says hard_silu
        assert problems == [("hard_silu", "c_hs", (8, 8, 4)), ("LeakyReLU", "leaky", (8, 8, 4)),
                            ("sigmoid", "se_expand", (1, 1, 4)), ("Multiply", "se_mul", (8, 8, 4)),
                            ("Conv2D", "dil", (4, 4, 2))]
        hints = [p["hint"] for p in graph.problems()]
        assert "relu6" in hints[0] and "squeeze-excite" in hints[3] and "dilation_rate" in hints[4]
        assert graph.output_shape == (1, 1, 2)
        with pytest.raises(GraphError, match=r"'c_hs/hard_silu' \(unsupported"):
            graph.run(np.zeros((1, 8, 8, 3), np.float32))


def test_malformed_files(importer, saved, tmp_path):
    folder = saved["gap"][0]
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a keras file at all" * 10)
    with pytest.raises(GraphError, match=r"garbage.keras: neither a .keras zip archive nor an HDF5 file"):
        importer.load(garbage)
    no_config = tmp_path / "no_config.keras"
    with zipfile.ZipFile(folder / "gap.keras") as source, zipfile.ZipFile(no_config, "w") as target:
        target.writestr("model.weights.h5", source.read("model.weights.h5"))
    with pytest.raises(GraphError, match=r"no config.json"):
        importer.load(no_config)
    whole = (folder / "gap.keras").read_bytes()
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(GraphError, match=r"truncated.keras"):
        importer.load(truncated)
    weights_only = tmp_path / "gap.weights.h5"
    saved["gap"][3].save_weights(weights_only)
    with pytest.raises(GraphError, match=r"no model_config.*model.save\('model.h5'\)"):
        importer.load(weights_only)
    with pytest.raises(FileNotFoundError, match=r"missing.keras"):
        importer.load(tmp_path / "missing.keras")


# -- the layers of keras.applications / akida_models (issue 9) --------------------------------------------


def mobilenet_like_model():
    """ZeroPadding2D before a stride-2 depthwise with a multiplier, ReLU(max_value=6), BN(axis=3),
    separable with a multiplier, a nested Sequential, Concatenate, GAP with keepdims, Normalization."""
    inner = keras.Sequential([keras.Input((5, 5, 6)), layers.Conv2D(4, 1, name="inner_conv"),
                              layers.BatchNormalization(axis=3, name="inner_bn"), layers.ReLU(name="inner_relu")],
                             name="inner")
    inputs = keras.Input((10, 10, 3))
    norm = layers.Normalization(axis=-1, mean=[0.5, 1.0, 1.5], variance=[0.25, 1.0, 4.0], name="norm")
    x = norm(inputs)
    x = layers.ZeroPadding2D(((0, 1), (0, 1)), name="pad")(x)
    x = layers.DepthwiseConv2D(3, strides=2, depth_multiplier=2, use_bias=False, name="dw")(x)
    x = layers.BatchNormalization(axis=3, name="dw_bn")(x)
    x = layers.ReLU(max_value=6.0, name="dw_relu")(x)
    a = layers.SeparableConv2D(4, 3, padding="same", depth_multiplier=2, name="sep")(x)
    b = inner(x)
    x = layers.Concatenate(name="cat")([a, b])
    x = layers.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
    x = layers.Conv2D(3, 1, name="head")(x)
    outputs = layers.Reshape((3,), name="logits")(x)
    model = keras.Model(inputs, outputs)
    randomize_batch_norms(model)
    randomize_batch_norms(inner)
    return model


def conv1d_model():
    return keras.Sequential([keras.Input((20, 6)), layers.Conv1D(8, 5, strides=2, padding="same", name="c1"),
                             layers.BatchNormalization(name="bn"), layers.ReLU(),
                             layers.MaxPooling1D(2, name="mp"), layers.Conv1D(4, 3, padding="causal", name="c2"),
                             layers.GlobalAveragePooling1D(), layers.Dense(3)])


@pytest.mark.parametrize("build,shape", [(mobilenet_like_model, (10, 10, 3)), (conv1d_model, (20, 6))])
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_application_layers_match_keras_predict(importer, tmp_path, build, shape, suffix):
    model = build()
    x = RNG.uniform(0, 2, size=(4, *shape)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / f"m{suffix}")
    graph = importer.load(tmp_path / f"m{suffix}")
    assert graph.problems() == []
    x_hwc = x.reshape(len(x), *graph.input_shape)
    np.testing.assert_allclose(graph.run(x_hwc).reshape(expected.shape), expected, atol=1e-4)
    simple = graph.simplify()
    np.testing.assert_allclose(simple.run(x_hwc).reshape(expected.shape), expected, atol=1e-4)
    ops = [node.op for node in simple]
    if build is mobilenet_like_model:
        assert "pad" not in ops and "concat" in ops and simple.node("dw").attrs["padding"] == "same"  # (0, 1, 0, 1)
        assert simple.node("dw").attrs["depth_multiplier"] == 2 and simple.node("sep").attrs["depth_multiplier"] == 2
        assert ops.count("affine") == 1        # the input Normalization before a padded layer stays
    else:
        assert graph.input_shape == (1, 20, 6) and simple.node("c2").attrs["padding"] == (0, 0, 2, 0)


# -- BrainChip's layer order: Conv2D -> MaxPooling2D -> BatchNormalization -> ReLU (issue 9) -----------------


def brainchip_order_model():
    """akida_models' block order, with batch norm scales of both signs after the pools: a max pool (folded
    through as a min pool where the scale is negative) and an average pool. (A scale of 0 makes a constant
    channel: test_import_torch.py test_a_constant_channel_keeps_its_value.)"""
    inputs = keras.Input((12, 12, 2))
    x = layers.Rescaling(1 / 255.0)(inputs)
    x = layers.Conv2D(4, 3, padding="same", name="conv1")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.Conv2D(3, 3, padding="same", name="conv2")(x)
    x = layers.AveragePooling2D(2, name="pool2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.ReLU(max_value=6.0, name="relu2")(x)
    outputs = layers.Dense(4, name="fc")(layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    model.get_layer("bn1").set_weights([np.array([1.2, -0.7, 0.3, -1.5]), np.array([0.1, 0.3, 0.2, -0.1]),
                                        np.array([0.05, -0.1, 0.0, 0.2]), np.array([0.5, 1.5, 1.0, 0.8])])
    model.get_layer("bn2").set_weights([np.array([-0.8, 1.1, 0.6]), np.array([0.2, 0.1, 0.4]),
                                        np.array([0.1, -0.2, 0.0]), np.array([1.2, 0.7, 1.0])])
    return model


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_batch_norm_after_pools_with_negative_scales_matches_keras(importer, tmp_path, suffix):
    """The float graph and its simplified form (the norms folded into the convs, a min pool on the negative
    channels) match model.predict; the 8/8 integer model keeps >= 25 dB of it."""
    import edgesnn as es

    keras.utils.set_random_seed(4)
    model = brainchip_order_model()
    x = np.random.default_rng(5).integers(0, 256, (64, 12, 12, 2)).astype(np.uint8)
    expected = model.predict(x.astype(np.float32), verbose=0)
    model.save(tmp_path / f"m{suffix}")
    graph = importer.load(tmp_path / f"m{suffix}")
    assert graph.problems() == []
    np.testing.assert_allclose(graph.run(x.astype(np.float32))[:, 0, 0], expected, atol=1e-4)
    simple = graph.simplify()
    np.testing.assert_allclose(simple.run(x.astype(np.float32))[:, 0, 0], expected, atol=1e-4)
    ops = [n.op for n in simple]
    assert ops.count("affine") == 1 and ops[0] == "affine"   # only the input Rescaling (before a padded conv)
    assert simple.node("pool1").attrs["channel_sign"] == [1, -1, 1, -1]
    converted = es.convert(str(tmp_path / f"m{suffix}"), samples=x, progress=False)
    assert [int(s) for s in converted.layers[0].pool_sign] == [1, -1, 1, -1]   # the integer min pool
    got = converted.forward(x, device="reference")[:, 0, 0] * np.asarray(converted.metadata["output_scale"])
    # the zoo's measure: over the batch and the channels of the (one) output position
    snr = 10 * np.log10(np.sum(expected.astype(np.float64) ** 2) / np.sum((got - expected) ** 2))
    assert snr >= 25, snr
