"""The post-training recipe: equalization leaves the float function unchanged (it is exact in float), bias
correction makes the quantized network's mean output per channel match the float one's, and each step is an
es.convert keyword whose work is recorded in metadata["recipe"]."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import edgesnn as es  # noqa: E402
from edgesnn import calibrate  # noqa: E402
from edgesnn.convert import load_graph  # noqa: E402
from edgesnn.datasets import digits  # noqa: E402
from edgesnn.graph import Graph, Node  # noqa: E402

from test_finetune import SCALING, _torch_net, _train  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    x, y, xt, yt = digits()
    net = _train(_torch_net(), x, y, epochs=4)
    return net, load_graph(net, input_shape_hint=(8, 8, 1)).simplify(), x[:128], xt, yt


def test_equalization_is_exact_in_float(setup):
    _, graph, x, _, _ = setup
    xf = x.astype(np.float32) / 255
    _, acts = graph.run(xf, capture=True)
    for activations in (None, acts):
        equalized, pairs = calibrate.equalize(graph, activations)
        assert pairs == ["/4/Conv -> /6/Conv"]
        np.testing.assert_allclose(equalized.run(xf), graph.run(xf), rtol=1e-4, atol=1e-4)
        dw = np.abs(equalized.node("/4/Conv").params["weight"]).max(axis=(0, 1))
        pw = np.abs(equalized.node("/6/Conv").params["weight"]).max(axis=(0, 1, 3))
        if activations is None:   # the weight ranges are balanced: r1 / s == r2 * s
            np.testing.assert_allclose(dw, pw, rtol=1e-5)


def test_separable_equalization_is_exact():
    rng = np.random.default_rng(0)
    node = Node("sep", "separable_conv2d", ("input",), attrs={"padding": "same"},
                params={"depthwise": rng.normal(0, [0.01, 1, 5], (3, 3, 3)).astype(np.float32),
                        "pointwise": rng.normal(size=(3, 4)).astype(np.float32),
                        "bias": rng.normal(size=4).astype(np.float32)})
    graph = Graph([node], input_shape=(5, 5, 3))
    x = rng.normal(size=(4, 5, 5, 3)).astype(np.float32)
    equalized, _ = calibrate.equalize(graph)
    np.testing.assert_allclose(equalized.run(x), graph.run(x), rtol=1e-4, atol=1e-5)


def test_bias_correction_removes_the_mean_shift(setup):
    _, graph, x, _, _ = setup
    options = dict(weight_bits=2, activation_bits=4, input_bits=8, input_scaling=list(SCALING), per_channel=True,
                   calibration="mse", neuron="relu")
    corrected, found = calibrate.bias_correction(graph, x, options)
    assert set(found) == {"/0/Conv", "/4/Conv", "/6/Conv"}
    module = calibrate._fake_quant(corrected, x, options)
    reference = calibrate._fake_quant(graph, x, options)      # the float network before correction
    reference.quantize = False
    xf = torch.tensor(x.transpose(0, 3, 1, 2) / 255.0, dtype=torch.float32)
    for m in (module, reference):
        m.capture = {}
        with torch.no_grad():
            m(xf)
    # the last corrected layer is measured after every earlier correction: its mean shift is gone
    q, f = module.capture["/6/Conv"].numpy(), reference.capture["/6/Conv"].numpy()
    before = calibrate._fake_quant(graph, x, options)
    before.capture = {}
    with torch.no_grad():
        before(xf)
    shift_before = np.abs((before.capture["/6/Conv"].numpy() - f).mean(axis=(0, 2, 3)))
    shift_after = np.abs((q - f).mean(axis=(0, 2, 3)))
    assert shift_after.mean() < 0.5 * shift_before.mean(), (shift_before, shift_after)


def test_recipe_steps_are_convert_keywords(setup):
    net, _, x, xt, yt = setup
    plain = es.convert(net, x, input_scaling=SCALING, weight_bits=2, activation_bits=4, calibration="mse",
                       progress=False)
    tuned = es.convert(net, x, input_scaling=SCALING, weight_bits=2, activation_bits=4, calibration="mse",
                       progress=False, equalize=True, bias_correction=True, search_ranges=True)
    assert "recipe" not in plain.metadata
    assert set(tuned.metadata["recipe"]) == {"equalized", "bias_correction", "searched_ranges"}
    report = es.compare(net, tuned, xt[:200], yt[:200])
    assert report.layers
