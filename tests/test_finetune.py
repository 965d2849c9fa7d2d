"""es.finetune: the fake-quantized torch module built from the float Graph computes what the integer Model
computes (top-1 agreement >= 99.5 %, dequantized activations within one step) for nets from each importer,
and fine-tuning improves a 2-bit toy net over post-training quantization (fixed seeds)."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")

import edgesnn as es  # noqa: E402
from edgesnn import finetuning as ft  # noqa: E402
from edgesnn.datasets import digits  # noqa: E402

SCALING = (255.0, 0.0)


@pytest.fixture(scope="module")
def data():
    return digits()


def _train(net, x, y, epochs=8, seed=0):
    torch.manual_seed(seed)
    xt = torch.tensor(x.transpose(0, 3, 1, 2) / 255.0, dtype=torch.float32)
    yt = torch.tensor(y)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
    return net.eval()


def _torch_net(seed=0):
    torch.manual_seed(seed)
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(), nn.Conv2d(8, 16, 1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * 16, 10))


@pytest.fixture(scope="module")
def trained(data):
    torch.set_num_threads(1)
    x, y, _, _ = data
    return _train(_torch_net(), x, y)


def _check_agreement(result, x, scaling=SCALING):
    report = ft.agreement(result.module, result.model, x, scaling)
    assert report["agreement"] >= 0.995, report
    assert report["layers"], "no layer was compared"
    for name, layer in report["layers"].items():
        assert layer["within_one_step"] >= 0.999, (name, layer)
    return report


def test_torch_net_fake_quant_matches_integer_model(data, trained):
    x, y, xt, yt = data
    result = ft.finetune_result(trained, x, y, weight_bits=4, activation_bits=4, epochs=1, input_scaling=SCALING,
                                progress=False)
    _check_agreement(result, xt)
    assert result.model.layers[0].weight_bits == 8          # the input layer keeps 8-bit weights by default
    assert result.model.layers[1].weight_bits == 4
    assert result.model.metadata["finetune"]["episodes"][0]["integer_accuracy"] is not None


def test_onnx_net_fake_quant_matches_integer_model(data, trained, tmp_path):
    x, y, xt, _ = data
    path = tmp_path / "net.onnx"
    torch.onnx.export(trained, torch.zeros(1, 1, 8, 8), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
    result = ft.finetune_result(str(path), x, y, weight_bits=2, activation_bits=2, epochs=1, input_scaling=SCALING,
                                progress=False)
    _check_agreement(result, xt)


def test_keras_separable_net_fake_quant_matches_integer_model(data, tmp_path):
    keras = pytest.importorskip("keras")
    from keras import layers

    x, y, xt, yt = data
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), layers.Rescaling(1 / 255.0, name="rescaling"),
                              layers.Conv2D(8, 3, padding="same", activation="relu"),
                              layers.SeparableConv2D(16, 3, padding="same", activation="relu"),
                              layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x.astype("float32"), y, epochs=6, batch_size=64, verbose=0)
    path = tmp_path / "sep.keras"
    model.save(path)
    result = ft.finetune_result(str(path), x, y, weight_bits=4, activation_bits=4, epochs=2, progress=False)
    assert any(layer.kind == "separable2d" for layer in result.model.layers)
    _check_agreement(result, xt, (1.0, 0.0))   # the separable layer's 8-bit depthwise step included
    assert np.mean(result.model.predict(xt) == yt) > 0.8
    # the input normalization (Rescaling 1/255) is folded into the input scaling, so it is not trained
    assert result.graph.node("rescaling").params["scale"] == pytest.approx(1 / 255.0)


def test_learned_weight_clips_are_what_the_converter_quantizes(data, trained):
    x, y, xt, _ = data
    result = ft.finetune_result(trained, x, y, weight_bits=2, activation_bits=2, epochs=1, input_scaling=SCALING,
                                progress=False)
    module = result.module
    assert set(module.clips) == {ft._key(n, "weight") for n in ("/0/Conv", "/4/Conv", "/6/Conv", "/9/Gemm")}
    conv = module.graph.node("/6/Conv")
    w = module.p(conv, "weight").detach()
    clip = module.clips[ft._key("/6/Conv", "weight")].detach()
    assert (clip < w.abs().amax(dim=(1, 2, 3))).all()       # at 2 bits the best clip is well inside max |w|
    fake, step = module.weight_step(conv, "weight")
    layer = next(l for l in result.model.layers if l.name == "/6/Conv")
    # the converter's integers from the exported (clamped) weights are the module's: w_q / step
    np.testing.assert_array_equal(np.asarray(layer.weights).reshape(-1, layer.weights.shape[-1]),
                                  (fake / step).detach().numpy().round().transpose(2, 3, 1, 0).reshape(
                                      -1, fake.shape[0]))
    assert set(np.unique(layer.weights)) <= {-1, 0, 1}      # symmetric: 2 bits hold -1, 0, +1 times the step


def test_finetuning_improves_a_2bit_toy_net_over_ptq(data, trained):
    x, y, xt, yt = data
    ptq = es.convert(trained, x[:256], input_scaling=SCALING, weight_bits=2, activation_bits=2,
                     calibration="mse", progress=False)
    ptq_accuracy = float(np.mean(ptq.predict(xt, device="reference") == yt))
    model = es.finetune(trained, x, y, weight_bits=2, activation_bits=2, epochs=4, input_scaling=SCALING,
                        progress=False, learning_rate=1e-3, seed=0)
    accuracy = float(np.mean(model.predict(xt, device="reference") == yt))
    assert accuracy > ptq_accuracy + 0.1, (ptq_accuracy, accuracy)


def test_progressive_schedule_table_and_3bit_fields(data, trained):
    x, y, xt, _ = data
    result = ft.finetune_result(trained, x, y, schedule=[(4, 4), (3, 4), (3, 3), (2, 2)], epochs=1,
                                input_scaling=SCALING, progress=False)
    table = result.table()
    assert "Episode" in table and "3 bits" in table and table.count("\n") == 6
    rows = result.model.metadata["finetune"]["episodes"]
    assert [r["integer_accuracy"] is None for r in rows] == [False, False, True, False]   # no 3-bit activations
    _check_agreement(result, xt)


def test_3bit_weights_are_stored_in_4bit_fields(data, trained):
    x, _, _, _ = data
    model = es.convert(trained, x[:64], input_scaling=SCALING, weight_bits=4, activation_bits=4, progress=False,
                       layer_weight_bits={"/4/Conv": 3})
    layer = next(l for l in model.layers if l.name == "/4/Conv")
    assert layer.weight_bits == 4 and layer.weights.min() >= -4 and layer.weights.max() <= 3


def test_spiking_finetune_converts_to_if(data, trained):
    x, y, xt, yt = data
    model = es.finetune(trained, x, y, weight_bits=4, activation_bits=4, epochs=1, neuron="if", timesteps=8,
                        input_scaling=SCALING, progress=False)
    assert any(l.neuron == "if" for l in model.layers)
    assert np.mean(model.predict(xt[:200], device="reference") == yt[:200]) > 0.5
