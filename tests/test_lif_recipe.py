"""The converter's spiking LIF recipe (neuron="lif", seed 003's NengoDL workflow): a leak chosen from the rate
approximation, on a real trained and exported model."""

import numpy as np
import pytest

import edgesnn as es
from edgesnn.convert import LIF_DECAY_SHIFT, _constant_drive_counts, lif_decay
from edgesnn.datasets import digits

torch = pytest.importorskip("torch")
nn = torch.nn


@pytest.mark.parametrize("timesteps", [8, 16, 32, 64])
def test_the_leak_is_the_strongest_the_rate_code_still_reads(timesteps):
    multiplier, shift = lif_decay(timesteps)
    assert shift == LIF_DECAY_SHIFT
    k = LIF_DECAY_SHIFT - int(np.log2((1 << shift) - multiplier))          # beta = 1 - 2^-k
    assert multiplier == (1 << shift) - (1 << (shift - k))
    drive = (2 * np.arange(1, timesteps + 1) - 1) * 4096 // (2 * timesteps)
    if_counts = _constant_drive_counts(drive, 1 << shift, timesteps)
    assert np.array_equal(if_counts, np.arange(timesteps))                  # floor(x T) at the midpoints
    deficit = np.mean(if_counts - _constant_drive_counts(drive, multiplier, timesteps))
    stronger = np.mean(if_counts - _constant_drive_counts(drive, (1 << shift) - (1 << (shift - k + 1)), timesteps))
    assert 0 < deficit <= 0.5 < stronger
    assert 0.5 / timesteps <= 1 - multiplier / 2**shift <= 4 / timesteps   # about one leak per rate-code length


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    x_train, y_train, x_test, y_test = digits()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(8 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))
    xt = torch.tensor(x_train.transpose(0, 3, 1, 2) / 255.0, dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(8):
        for idx in torch.randperm(len(xt), generator=torch.Generator().manual_seed(1)).split(128):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[idx]), torch.tensor(y_train)[idx]).backward()
            opt.step()
    path = tmp_path_factory.mktemp("onnx") / "digits.onnx"
    net.eval()
    torch.onnx.export(net, torch.zeros(1, 1, 8, 8), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
    return str(path), (x_train, y_train, x_test, y_test)


def test_lif_conversion_approaches_the_float_model_and_the_if_one(trained):
    path, (x_train, _, x_test, y_test) = trained
    accuracy = {}
    for neuron in ("if", "lif"):
        model = es.convert(path, samples=x_train[:300], input_scaling=(255, 0), neuron=neuron, timesteps=32,
                           calibration="percentile", progress=False)
        spiking = model.layers[:-1]
        assert {layer.neuron for layer in spiking} == {neuron} and model.metadata["timesteps"] == 32
        if neuron == "lif":
            assert {int(layer.decay_multiplier[0]) for layer in spiking} == {lif_decay(32)[0]}
            assert all(layer.reset == "subtract" for layer in spiking)
        report = es.compare(path, model, x_test[:200], y_test[:200])
        accuracy[neuron] = report.integer_accuracy
        float_accuracy = report.float_accuracy
    assert float_accuracy > 0.85                                        # a classifier (8 epochs on 8x8 digits)
    assert accuracy["lif"] >= float_accuracy - 0.04, (accuracy, float_accuracy)
    assert accuracy["lif"] >= accuracy["if"] - 0.03, accuracy


def test_neuron_names_are_checked():
    with pytest.raises(ValueError, match=r"neuron must be one of \('relu', 'if', 'lif'\)"):
        es.convert("x.onnx", None, neuron="alif")
