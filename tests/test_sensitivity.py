"""es.sensitivity and es.convert(..., budget_bytes=N): per-layer bits chosen greedily never exceed the budget,
and the choice is reported in the model's metadata."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import edgesnn as es  # noqa: E402
from edgesnn.datasets import digits  # noqa: E402
from edgesnn.precision import choose_bits  # noqa: E402

from test_finetune import SCALING, _torch_net, _train  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    x, y, xt, yt = digits()
    return _train(_torch_net(), x, y, epochs=4), x[:96], y[:96]


def test_sensitivity_reports_bytes_and_snr_per_layer(setup):
    net, x, y = setup
    report = es.sensitivity(net, x, y, input_scaling=SCALING)
    assert [l.kind for l in report.layers] == ["input_conv2d", "depthwise2d", "conv2d", "dense"]
    for layer in report.layers:
        assert layer.bytes[2] < layer.bytes[4] < layer.bytes[8]
        assert layer.snr_db[2] < layer.snr_db[4] < layer.snr_db[8]
    assert "SNR dB @2" in report.table()


@pytest.mark.parametrize("budget", [10_000, 2_000, 1_500, 1_200, 1_140])
def test_budget_is_never_exceeded_and_reported(setup, budget):
    net, x, _ = setup
    model = es.convert(net, x, input_scaling=SCALING, activation_bits=4, budget_bytes=budget, progress=False)
    chosen = model.metadata["budget"]
    assert model.packed_bytes <= budget and chosen["packed_bytes"] == model.packed_bytes
    for layer in model.layers:
        if layer.name in chosen["layer_weight_bits"]:
            assert layer.weight_bits == chosen["layer_weight_bits"][layer.name]


def test_budget_below_the_smallest_model_is_refused(setup):
    net, x, _ = setup
    with pytest.raises(ValueError, match="below the smallest model"):
        es.convert(net, x, input_scaling=SCALING, activation_bits=4, budget_bytes=100, progress=False)


def test_greedy_choice_on_a_synthetic_report():
    from edgesnn.precision import LayerSensitivity, SensitivityReport

    layers = [LayerSensitivity("a", "conv2d", 10, {2: 10, 4: 20, 8: 40}, {}, {2: 5.0, 4: 1.0, 8: 0.0}),
              LayerSensitivity("b", "dense", 100, {2: 30, 4: 60, 8: 120}, {}, {2: 0.5, 4: 0.1, 8: 0.0})]
    report = SensitivityReport(layers, None, fixed_bytes=5)
    rng = np.random.default_rng(0)
    for budget in rng.integers(45, 170, 30):
        bits = choose_bits(report, int(budget))
        assert 5 + sum(l.bytes[bits[l.layer]] for l in layers) <= budget
    assert choose_bits(report, 125) == {"a": 8, "b": 4}      # the dense layer is cheaper to lower
