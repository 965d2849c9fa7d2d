"""es.convert and es.compare on real trained and exported models (torch -> ONNX -> Graph -> integer Model)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import edgesnn as es
from edgesnn.datasets import digits
from edgesnn.graph import GraphError

torch = pytest.importorskip("torch")
nn = torch.nn


def export(module, path, shape):
    module.eval()
    torch.onnx.export(module, torch.zeros(1, *shape), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
    return str(path)


@pytest.fixture(scope="module")
def digits_data():
    return digits()


@pytest.fixture(scope="module")
def trained_onnx(tmp_path_factory, digits_data):
    """A small CNN trained on scikit-learn's 8x8 digits, exported to ONNX (NCHW, input x / 255); trained on
    one thread (a small net trains no faster on more, and a second thread is another session's CPU)."""
    x_train, y_train, _, _ = digits_data
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Dropout(0.1),
                            nn.Linear(16 * 4 * 4, 10), nn.Softmax(dim=1))
        xt = torch.tensor(x_train.transpose(0, 3, 1, 2) / 255.0, dtype=torch.float32)
        yt = torch.tensor(y_train)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(40):
            net.train()
            for idx in torch.randperm(len(xt), generator=torch.Generator().manual_seed(1)).split(128):
                opt.zero_grad()
                logits = net[:-1](xt[idx])
                nn.functional.cross_entropy(logits, yt[idx]).backward()
                opt.step()
        return export(net, tmp_path_factory.mktemp("onnx") / "digits.onnx", (1, 8, 8))
    finally:
        torch.set_num_threads(threads)


def test_8bit_conversion_agrees_with_float(trained_onnx, digits_data):
    x_train, _, x_test, y_test = digits_data
    model = es.convert(trained_onnx, samples=x_train[:300], input_scaling=(255, 0), labels=list("0123456789"),
                       progress=False)
    assert [l.kind for l in model.layers] == ["input_conv2d", "conv2d", "dense"]
    assert model.layers[0].pool == "max" and model.layers[-1].neuron == "none"
    report = es.compare(trained_onnx, model, x_test, y_test)
    assert report.float_accuracy > 0.9, "the float model did not train"
    assert report.agreement >= 0.99
    assert abs(report.integer_accuracy - report.float_accuracy) <= 0.01
    assert all(layer.snr_db > 25 for layer in report.layers), report.table()
    assert "top-1 agreement" in report.table()


def test_labels_must_name_one_class_per_output(trained_onnx, digits_data):
    x_train = digits_data[0]
    with pytest.raises(ValueError, match=r"labels names 3 classes .*the model outputs 10 .*give 10 labels"):
        es.convert(trained_onnx, samples=x_train[:20], input_scaling=(255, 0), labels=["a", "b", "c"],
                   progress=False)
    with pytest.raises(ValueError, match="labels must be a list of class names"):
        es.convert(trained_onnx, samples=x_train[:20], input_scaling=(255, 0), labels="0123456789",
                   progress=False)


def test_metadata_and_round_trip(trained_onnx, digits_data, tmp_path):
    x_train, _, x_test, _ = digits_data
    model = es.convert(trained_onnx, samples=x_train[:100], input_scaling=(255, 0), labels=list("0123456789"),
                       weight_bits=4, activation_bits=4, progress=False)
    meta = model.metadata
    assert meta["labels"] == list("0123456789")
    assert meta["provenance"]["converter"]["weight_bits"] == 4
    # the file's name and content, never the path where the user keeps it
    assert meta["provenance"]["source"] == Path(trained_onnx).name
    assert meta["provenance"]["source_sha256"] == hashlib.sha256(Path(trained_onnx).read_bytes()).hexdigest()
    assert str(Path(trained_onnx).parent) not in json.dumps(meta)
    assert len(meta["output_scale"]) == 10
    path = tmp_path / "digits.esnn"
    model.save(path)
    again = es.Model.load(path)
    np.testing.assert_array_equal(again.forward(x_test[:50], device="reference"),
                                  model.forward(x_test[:50], device="reference"))


def test_4bit_keeps_accuracy_within_a_few_points(trained_onnx, digits_data):
    x_train, _, x_test, y_test = digits_data
    model = es.convert(trained_onnx, samples=x_train[:300], input_scaling=(255, 0), weight_bits=4,
                       activation_bits=4, calibration="mse", progress=False)
    assert model.layers[0].weight_bits == 8      # the input layer's weights stay 8-bit by default (input_weight_bits)
    assert all(l.weight_bits == 4 for l in model.layers[1:])
    report = es.compare(trained_onnx, model, x_test, y_test)
    assert report.integer_accuracy >= report.float_accuracy - 0.04, report.table()


def test_spiking_conversion_approaches_float_as_timesteps_grow(trained_onnx, digits_data):
    x_train, _, x_test, y_test = digits_data
    agreement = {}
    for steps in (2, 24):
        model = es.convert(trained_onnx, samples=x_train[:300], input_scaling=(255, 0), neuron="if",
                           timesteps=steps, calibration="percentile", progress=False)
        assert {l.neuron for l in model.layers[:-1]} == {"if"}
        assert model.metadata["timesteps"] == steps
        report = es.compare(trained_onnx, model, x_test[:150], y_test[:150])
        agreement[steps] = report.agreement
    assert agreement[24] >= 0.93
    assert agreement[24] > agreement[2]


def test_residual_depthwise_global_pool_model(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU())
            self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU())
            self.pw = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU())
            self.head = nn.Linear(8, 5)

        def forward(self, x):
            a = self.stem(x)
            b = self.pw(self.dw(a))
            y = torch.relu(a + b)
            return self.head(nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))

    torch.manual_seed(3)
    path = export(Net(), tmp_path / "res.onnx", (2, 6, 6))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (200, 6, 6, 2)).astype(np.uint8)
    model = es.convert(path, samples=x[:100], input_scaling=(255, 0), progress=False)
    kinds = [l.kind for l in model.layers]
    assert "add" in kinds and "depthwise2d" in kinds
    assert any(l.pool == "global_avg" for l in model.layers)
    report = es.compare(path, model, x[100:])
    final = report.layers[-1]
    assert final.cosine > 0.995, report.table()


def test_resnet_v1_block_with_signed_branch_converts(tmp_path):
    """relu(bn(conv(a)) + a): the signed branch is held with a zero point, which the add's bias removes."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
            self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
            self.head = nn.Linear(8 * 4 * 4, 3)

        def forward(self, x):
            a = self.stem(x)
            return self.head(torch.relu(self.branch(a) + a).flatten(1))

    torch.manual_seed(5)
    path = export(Net(), tmp_path / "resv1.onnx", (1, 4, 4))
    x = np.random.default_rng(0).integers(0, 256, (300, 4, 4, 1)).astype(np.uint8)
    model = es.convert(path, samples=x[:150], input_scaling=(255, 0), progress=False)
    add = next(l for l in model.layers if l.kind == "add")
    branch = model.layer(add.inputs[0]) if model.layer(add.inputs[0]).out_zero_point.any() else model.layer(add.inputs[1])
    zero_point = branch.out_zero_point                    # per channel, from each channel's calibrated range
    assert zero_point.min() > 0 and zero_point.max() < 255
    i = add.inputs.index(branch.name)
    np.testing.assert_array_equal(add.bias, -add.input_multipliers[i] * zero_point)
    report = es.compare(path, model, x[150:])
    assert report.layers[-1].cosine > 0.995, report.table()
    assert report.agreement >= 0.95


def test_signed_output_into_a_conv_converts_with_a_zero_point(tmp_path):
    """conv -> conv without a ReLU between (a linear bottleneck): the signed tensor has a zero point, the next
    conv pads with it and folds it into its bias; every output position matches, border included."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 2))
    path = export(net, tmp_path / "signed.onnx", (1, 4, 4))
    x = np.random.default_rng(0).integers(0, 256, (200, 4, 4, 1)).astype(np.uint8)
    model = es.convert(path, samples=x[:100], input_scaling=(255, 0), progress=False)
    first, second = model.layers[:2]
    assert first.out_zero_point.any() and (second.pad_value == first.out_zero_point).all()
    report = es.compare(path, model, x[100:])
    assert min(l.snr_db for l in report.layers) > 25, report.table()


def test_bad_arguments(trained_onnx, digits_data):
    x_train = digits_data[0]
    with pytest.raises(ValueError, match="weight_bits"):
        es.convert(trained_onnx, samples=x_train[:10], weight_bits=3)
    with pytest.raises(ValueError, match="calibration"):
        es.convert(trained_onnx, samples=x_train[:10], calibration="kl")
    with pytest.raises(ValueError, match="dtype float"):
        es.convert(trained_onnx, samples=x_train[:10].astype(float) / 255, progress=False)
    with pytest.raises(ValueError, match=r"\(N, 8, 8, 1\)"):
        es.convert(trained_onnx, samples=x_train[:10, :4], progress=False)
    with pytest.raises(ValueError, match="only applies to neuron='if'"):
        es.convert(trained_onnx, samples=x_train[:10], timesteps=8, progress=False)
    with pytest.raises(GraphError, match="no importer accepts"):
        es.convert(object(), samples=x_train[:10], progress=False)


def test_cli_convert_writes_model_and_report(trained_onnx, digits_data, tmp_path, capsys):
    from edgesnn import cli

    x_train, y_train, x_test, y_test = digits_data
    np.savez(tmp_path / "calib.npz", x=x_train[:200], y=y_train[:200])
    np.savez(tmp_path / "test.npz", x=x_test, y=y_test)
    out = tmp_path / "d.esnn"
    status = cli.main(["convert", trained_onnx, "-o", str(out), "--samples", str(tmp_path / "calib.npz"),
                       "--input-scaling", "255", "0", "--weight-bits", "4", "--activation-bits", "4",
                       "--labels", ",".join("0123456789"), "--report", "--test", str(tmp_path / "test.npz")])
    printed = capsys.readouterr().out
    assert status == 0
    model = es.Model.load(out)
    assert model.labels == list("0123456789") and model.layers[0].weight_bits == 8      # --input-weight-bits 8
    assert all(layer.weight_bits == 4 for layer in model.layers[1:])
    assert "top-1 agreement" in printed and "integer accuracy" in printed
    expected = es.compare(trained_onnx, model, x_test, y_test).integer_accuracy
    assert f"integer accuracy  {expected:.4f}" in printed
    assert cli.main(["convert", str(tmp_path / "missing.onnx"), "-o", str(out),
                     "--samples", str(tmp_path / "calib.npz")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_keras_dscnn_with_rescaling_converts(tmp_path):
    """Keras' DS-CNN pattern: Rescaling, Conv2D, BN, ReLU, SeparableConv2D, GlobalAveragePooling2D, Dense."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    net = keras.Sequential([
        keras.Input((10, 6, 1)),
        keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(8, 3, strides=2, padding="same"), keras.layers.BatchNormalization(), keras.layers.ReLU(),
        keras.layers.SeparableConv2D(12, 3, padding="same"), keras.layers.BatchNormalization(), keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(4),
    ])
    path = tmp_path / "dscnn.keras"
    net.save(path)
    x = np.random.default_rng(1).integers(0, 256, (200, 10, 6, 1)).astype(np.uint8)
    model = es.convert(path, samples=x[:100], progress=False)
    kinds = [l.kind for l in model.layers]
    assert kinds == ["input_conv2d", "separable2d", "concat", "dense"], kinds   # concat: the global average pool
    report = es.compare(path, model, x[100:])
    assert report.layers[-1].cosine > 0.99 and report.agreement >= 0.9, report.table()


def test_torch_module_converts_directly(digits_data):
    """An nn.Module is traced with the samples' shape; no ONNX file is written by the user."""
    x_train, _, x_test, _ = digits_data
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3)).eval()
    model = es.convert(net, samples=x_train[:64], input_scaling=(255, 0), progress=False)
    assert model.metadata["provenance"]["importer"] == "torch"
    with torch.no_grad():
        expected = net(torch.tensor(x_test[:100].transpose(0, 3, 1, 2) / 255.0, dtype=torch.float32)).numpy()
    potentials = model.forward(x_test[:100], device="reference").reshape(100, 3)
    dequantized = potentials * np.asarray(model.metadata["output_scale"])
    assert np.corrcoef(dequantized.ravel(), expected.ravel())[0, 1] > 0.99


def test_input_offset_is_exact_at_the_border(tmp_path):
    """Rescaling(1/128, -1) (BrainChip's AkidaNet/MobileNet input) before a zero-padded strided conv: the
    integer input conv pads with the input's zero point (128), so the border row and column match the float
    model as well as the interior does (0.1 folded the offset into the bias: -0.4 dB at the border)."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(2)
    net = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Rescaling(1 / 128.0, offset=-1),
        keras.layers.Conv2D(8, 3, strides=2, padding="same"), keras.layers.ReLU(),
        keras.layers.Conv2D(6, 3, padding="same"),
    ])
    path = tmp_path / "offset.keras"
    net.save(path)
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (64, 16, 16, 3)).astype(np.uint8)
    model = es.convert(path, samples=x[:32], progress=False)
    assert model.layers[0].pad_value.tolist() == [128, 128, 128]
    from edgesnn.convert import load_graph

    reference = load_graph(path).simplify().run(x[32:].astype(np.float32))
    approx = model.forward(x[32:], device="reference") * np.asarray(model.metadata["output_scale"])

    def snr(region):
        ref, got = reference[region], approx[region]
        return 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - got) ** 2))

    interior = snr((slice(None), slice(1, -1), slice(1, -1)))
    border = min(snr((slice(None), 0)), snr((slice(None), -1)), snr((slice(None), slice(None), 0)),
                 snr((slice(None), slice(None), -1)))
    assert interior > 30 and border > 30, (interior, border)


def test_every_problem_is_listed_at_once_by_check_convert_and_the_cli(tmp_path, capsys):
    """Hardswish and a squeeze-excite gate in one net: es.check, es.ConversionError and `edgesnn check` /
    `edgesnn convert --check` name every node that will not convert, its op and what to change."""
    from edgesnn.cli import main

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.s = nn.Conv2d(8, 8, 1)
            self.f = nn.Linear(8, 3)

        def forward(self, x):
            y = nn.functional.hardswish(self.a(x))
            gate = torch.sigmoid(self.s(y.mean((2, 3), keepdim=True)))
            return self.f((y * gate).mean((2, 3)))

    import onnx

    path = export(Net(), tmp_path / "se.onnx", (3, 8, 8))
    problems = es.check(path)
    assert [p.op for p in problems] == ["HardSwish", "Sigmoid", "Mul"], problems
    assert "ReLU6" in problems[0].hint
    # each problem names its own node: a node of the exported file, of the op the problem says
    op_of = {node.name: node.op_type for node in onnx.load(path).graph.node}
    assert [op_of.get(p.node) for p in problems] == [p.op for p in problems], problems
    assert len({p.node for p in problems}) == 3
    named = [f"node {p.node!r}, op {p.op!r}" for p in problems]
    with pytest.raises(es.ConversionError) as info:
        es.convert(path, samples=np.zeros((2, 8, 8, 3), np.uint8), progress=False)
    assert [(p.node, p.op) for p in info.value.problems] == [(p.node, p.op) for p in problems]
    assert all(name in str(info.value) for name in named), str(info.value)
    for argv in (["check", str(path)], ["convert", str(path), "--check"]):
        assert main(argv) == 1
        out = capsys.readouterr().out
        assert "3 node(s) will not convert" in out and all(name in out for name in named), out
    assert es.check(tmp_path / "se.onnx") != [] and main(["convert", str(path)]) == 1
    assert "--samples required" in capsys.readouterr().err


def _cancelling_net(gain: float):
    """1x1 convs: two ReLU'd copies of the input, x and 0.9 x + 0.05, then x + gain * (0.9 x + 0.05) + bias.
    gain = -1.1 leaves 0.01 x: a 100x cancellation whose output 8-bit activations cannot keep (one activation
    step of the second copy is a third of the output's spread); gain = +1 is the benign sum 1.9 x."""
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.Conv2d(2, 1, 1)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, 0.9]).reshape(2, 1, 1, 1))
        net[0].bias.copy_(torch.tensor([0.0, 0.05]))
        net[2].weight.copy_(torch.tensor([1.0, gain]).reshape(1, 2, 1, 1))
        net[2].bias.copy_(torch.tensor([-0.05 * gain]))
    return net


def _worst_position_snr(model, net, x) -> float:
    with torch.no_grad():
        want = net(torch.tensor(x.transpose(0, 3, 1, 2) / 255.0, dtype=torch.float32)).numpy().transpose(0, 2, 3, 1)
    got = model.forward(x, device="reference") * np.asarray(model.metadata["output_scale"])
    signal = np.sum(want.astype(np.float64) ** 2, axis=(0, 3))
    noise = np.sum((got - want) ** 2, axis=(0, 3))
    return float((10 * np.log10(signal / noise)).min())


def _out_of_sample_snr(net, x, folds: int = 8, **options) -> float:
    """The worst-position SNR over x where each sample's output comes from es.convert on the other folds'
    samples (sample i in fold i mod `folds`): what es.convert's out-of-sample check measures, done here
    through the public API, one conversion per fold."""
    fold_of = np.arange(len(x)) % folds
    got = np.zeros((len(x), *es.convert(net, samples=x, input_scaling=(255, 0), progress=False,
                                        on_low_fidelity="record", **options).output_shape))
    for j in range(folds):
        fitted = es.convert(net, samples=x[fold_of != j], input_scaling=(255, 0), progress=False,
                            on_low_fidelity="record", **options)
        got[fold_of == j] = fitted.forward(x[fold_of == j], device="reference") * np.asarray(
            fitted.metadata["output_scale"])
    with torch.no_grad():
        want = net(torch.tensor(x.transpose(0, 3, 1, 2) / 255.0, dtype=torch.float32)).numpy().transpose(0, 2, 3, 1)
    signal = np.sum(want.astype(np.float64) ** 2, axis=(0, 3))
    noise = np.sum((got - want) ** 2, axis=(0, 3))
    return float((10 * np.log10(signal / noise)).min())


def test_8bit_conversion_that_loses_the_output_is_refused():
    """es.convert checks its model against the float graph on the calibration samples *out of sample*: each
    fold of them (8, interleaved) through a model calibrated on the others, at every output position
    (metadata["fidelity"]; the in-sample figures beside them). At 8/8 bits under 25 dB it tries one range
    per layer and the integer bias correction, then refuses: es.PrecisionError, a ConversionError naming the
    SNR, the position, how it was measured, what was tried and the layer where the SNR falls most (as
    es.compare measures it on samples the ranges did not see), carrying the measurement and the model;
    on_low_fidelity="warn" returns the model with a PrecisionWarning, "record" only records (in sample).
    The benign net converts silently; below 8 bits it is recorded."""
    import warnings

    x = np.random.default_rng(0).integers(0, 256, (16, 6, 6, 1), dtype=np.uint8)
    bad, good = _cancelling_net(-1.1), _cancelling_net(1.0)
    with pytest.raises(es.PrecisionError, match=r"keeps only .* dB SNR .* worst output position") as info:
        es.convert(bad, samples=x, input_scaling=(255, 0), progress=False)
    refused = info.value
    assert isinstance(refused, es.ConversionError) and 'on_low_fidelity="warn"' in str(refused)
    fidelity, model = refused.fidelity, refused.model
    assert fidelity["samples"] == 16 and fidelity["decided_by"] == "out_of_sample" and fidelity["folds"] == 8
    assert fidelity["worst_position_snr_db"] < 25 and fidelity["per_channel_activations"] is True
    assert fidelity["worst_position_snr_db"] == pytest.approx(_out_of_sample_snr(bad, x), abs=0.05)
    assert fidelity["in_sample"]["worst_position_snr_db"] == pytest.approx(_worst_position_snr(model, bad, x), abs=0.01)
    assert "each checked on a model calibrated without it (8-fold cross-fitting" in str(refused)
    # one range per layer and the integer bias correction of both were tried first, out of sample too, and named
    tried = {(t["ranges"], t["bias_corrected"]): t for t in fidelity["tried"]}
    assert set(tried) == {("per layer", False), ("per channel", True), ("per layer", True)}
    assert all(t["worst_position_snr_db"] < 25 for t in tried.values()) and "bias_corrected" not in model.metadata
    assert tried[("per layer", False)]["worst_position_snr_db"] == pytest.approx(
        _out_of_sample_snr(bad, x, per_channel_activations=False), abs=0.05)
    for label, key in (("one range per layer", ("per layer", False)),
                       ("per-channel ranges with the integer bias correction", ("per channel", True))):
        assert f"{label}: {tried[key]['worst_position_snr_db']:.1f} dB" in str(refused), str(refused)
    assert f"{fidelity['worst_position_snr_db']:.1f} dB" in str(refused)
    assert str(tuple(fidelity["worst_position"])) in str(refused)
    # the first layer reads the exact input: the cancelling sum falls, on fold 0 through the model fitted without it
    falls = fidelity["falls_most"]
    assert falls["layer"] == model.layers[-1].name and f"layer {falls['layer']!r}" in str(refused)
    fold0 = np.arange(16) % 8 == 0
    fitted = es.convert(bad, samples=x[~fold0], input_scaling=(255, 0), progress=False, on_low_fidelity="record")
    per_layer = {l.name: l.snr_db for l in es.compare(bad, fitted, x[fold0]).layers}
    assert falls["snr_db"] == pytest.approx(per_layer[falls["layer"]], abs=0.01)
    assert falls["input_snr_db"] == pytest.approx(per_layer[model.layers[0].name], abs=0.01)
    assert falls["input_snr_db"] > 25 > falls["snr_db"]
    with pytest.warns(es.PrecisionWarning, match=r"keeps only .* dB SNR .* worst output position"):
        warned = es.convert(bad, samples=x, input_scaling=(255, 0), progress=False, on_low_fidelity="warn")
    assert warned.metadata["fidelity"] == fidelity
    with warnings.catch_warnings():
        warnings.simplefilter("error", es.PrecisionWarning)
        recorded = es.convert(bad, samples=x, input_scaling=(255, 0), progress=False, on_low_fidelity="record")
        assert recorded.metadata["fidelity"] == fidelity["in_sample"]       # recorded, in sample, nothing decided
        model = es.convert(good, samples=x, input_scaling=(255, 0), progress=False)       # no warning
        assert model.metadata["fidelity"]["worst_position_snr_db"] >= 25
        kept = model.metadata["fidelity"]
        assert kept["decided_by"] == "out_of_sample"
        # both granularities measured: the one kept holds at least as well out of sample as the other
        (other,) = kept["tried"]
        assert other["ranges"] == ("per layer" if kept["per_channel_activations"] else "per channel")
        assert min(other["worst_position_snr_db"], other["half_batch_p10_snr_db"]) <= min(
            kept["worst_position_snr_db"], kept["half_batch_p10_snr_db"])
        assert model.metadata["fidelity"]["in_sample"]["worst_position_snr_db"] == pytest.approx(
            _worst_position_snr(model, good, x), abs=0.01)
        low = es.convert(bad, samples=x, input_scaling=(255, 0), weight_bits=4, activation_bits=4, progress=False)
        node = model.metadata["float_nodes"][model.layers[-1].name]
        mixed = es.convert(bad, samples=x, input_scaling=(255, 0), layer_weight_bits={node: 4}, progress=False)
    assert low.metadata["fidelity"]["worst_position_snr_db"] < fidelity["worst_position_snr_db"]   # recorded, no refusal
    assert "decided_by" not in low.metadata["fidelity"]
    assert "worst_position_snr_db" in mixed.metadata["fidelity"]      # not every layer at 8 bits: recorded only
    # with fewer than 4 samples there is no other sample to check on: the in-sample check decides, and says so
    few = es.convert(good, samples=x[:3], input_scaling=(255, 0), progress=False)
    assert few.metadata["fidelity"]["decided_by"] == "in_sample" and few.metadata["fidelity"]["folds"] == 0
    with pytest.raises(ValueError, match="on_low_fidelity must be one of"):
        es.convert(good, samples=x, input_scaling=(255, 0), progress=False, on_low_fidelity="ignore")


def test_8bit_conversion_under_the_bar_on_other_batches_is_refused():
    """The fidelity check must hold on other batches of inputs, not only on the pool of its samples: a model
    that keeps over 30 dB on 16 samples because 2 bright ones outweigh 14 dark ones (each dark input's output
    is at the same 8-bit steps, a fraction of the signal) is under 25 dB on a batch of dark inputs, and about
    1 in 4 of the batches of 8 of these samples holds no bright one. es.convert refuses it, naming the
    batches of half; measured here on the dark ones alone, the refused model is indeed under the bar there,
    while the benign net keeps it on both kinds."""
    rng = np.random.default_rng(0)
    bright = rng.integers(128, 256, (2, 6, 6, 1), dtype=np.uint8)
    dark = rng.integers(0, 24, (14, 6, 6, 1), dtype=np.uint8)
    x = np.concatenate([bright, dark])
    net = _cancelling_net(-0.8)
    with pytest.raises(es.PrecisionError, match=r"1 in 10 of the batches of half \(8 of 16\)") as info:
        es.convert(net, samples=x, input_scaling=(255, 0), progress=False)
    fidelity, model = info.value.fidelity, info.value.model
    assert fidelity["samples"] == 16 and fidelity["half_samples"] == 8 and fidelity["half_batches"] == 2000
    pooled = _worst_position_snr(model, net, x)
    assert fidelity["worst_position_snr_db"] == pytest.approx(pooled, abs=0.01) and pooled > 30
    on_dark, on_bright = _worst_position_snr(model, net, dark[:8]), _worst_position_snr(model, net, bright)
    assert fidelity["half_batch_p10_snr_db"] < 25 and on_dark < 25 < on_bright
    assert fidelity["worst_half_snr_db"] <= on_dark + 0.01     # the worst half: the worst 8 of the dark ones
    assert f"{fidelity['half_batch_p10_snr_db']:.1f} dB" in str(info.value) and f"{pooled:.1f} dB" in str(info.value)
    good = _cancelling_net(1.0)
    model = es.convert(good, samples=x, input_scaling=(255, 0), progress=False)
    assert model.metadata["fidelity"]["half_batch_p10_snr_db"] >= 25
    assert _worst_position_snr(model, good, dark) >= 25 and _worst_position_snr(model, good, bright) >= 25
    # a larger set is checked on 128 samples spread over it (a set sorted by class: every class), not its first
    many = np.concatenate([rng.integers(128, 256, (150, 6, 6, 1)), rng.integers(0, 24, (150, 6, 6, 1))]).astype(np.uint8)
    model = es.convert(good, samples=many, input_scaling=(255, 0), progress=False)
    spread = many[np.unique(np.linspace(0, 299, 128).round().astype(int))]
    assert model.metadata["fidelity"]["samples"] == 128
    assert model.metadata["fidelity"]["worst_position_snr_db"] == pytest.approx(
        _worst_position_snr(model, good, spread), abs=0.01)


def _rounding_biased_net():
    """3x3 valid conv to two ReLU'd channels, then their difference minus 0.5: A = x + 8 neighbours each
    (10 + 0.49) weight steps, B = the 8 neighbours at exactly 10 steps. Every neighbour weight of A rounds
    down by 0.49 of a step, so its 8-bit copy loses 8 * 0.49 / 127 of the neighbours' sum, about 0.015 at
    mid-grey: a mean shift a third of the output's spread (the centre pixel minus 0.5), the same at every
    position. Under 25 dB at 8/8, unless the shift is taken out of A's bias."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 1, 1)).eval()
    ring = torch.ones(3, 3)
    ring[1, 1] = 0.0
    with torch.no_grad():
        net[0].weight.copy_(torch.stack([ring * (10.49 / 127) + (1 - ring), ring * (10 / 127)])[:, None])
        net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([1.0, -1.0]).reshape(1, 2, 1, 1))
        net[2].bias.copy_(torch.tensor([-0.5]))
    return net


def test_8bit_conversion_under_the_bar_is_bias_corrected_in_its_integers():
    """When the 8/8 check falls short, es.convert takes each layer's mean quantization shift per channel (its
    dequantized potentials against its float node, on the integer model's own inputs, layer by layer) out of
    the integer bias, and checks again, cross-fitted (each fold's output from the model calibrated and
    corrected on the other folds' samples): the rounding-biased net is refused by the plain conversion (13 dB), converts
    corrected, and keeps the bar on inputs it was not corrected on. metadata["bias_corrected"] names the
    layers and keeps the uncorrected and the in-sample check; a model that passes uncorrected is not touched
    (on_low_fidelity="record" measures the uncorrected model)."""
    rng = np.random.default_rng(0)
    x = rng.integers(96, 161, (32, 8, 8, 1), dtype=np.uint8)
    other = rng.integers(96, 161, (64, 8, 8, 1), dtype=np.uint8)
    net = _rounding_biased_net()
    plain = es.convert(net, samples=x, input_scaling=(255, 0), progress=False, on_low_fidelity="record")
    assert "bias_corrected" not in plain.metadata
    assert plain.metadata["fidelity"]["worst_position_snr_db"] < 20 and _worst_position_snr(plain, net, other) < 20
    model = es.convert(net, samples=x, input_scaling=(255, 0), progress=False)
    fidelity, corrected = model.metadata["fidelity"], model.metadata["bias_corrected"]
    assert fidelity["worst_position_snr_db"] >= 25 and fidelity["half_batch_p10_snr_db"] >= 25
    in_sample = corrected["in_sample_fidelity"]
    assert in_sample["worst_position_snr_db"] == pytest.approx(_worst_position_snr(model, net, x), abs=0.01)
    assert fidelity["decided_by"] == "out_of_sample" and fidelity["in_sample"] == in_sample
    assert _worst_position_snr(model, net, other) >= 25                  # not only on the samples it measured
    assert corrected["samples"] == 32 and corrected["uncorrected_fidelity"]["worst_position_snr_db"] < 20
    # measured beside it, out of sample: the plain model and one range per layer, both under the bar, and the
    # correction of the other granularity
    tried = [(t["ranges"], t["bias_corrected"]) for t in fidelity["tried"]]
    assert tried[:2] == [("per channel", False), ("per layer", False)] and tried[2][1] is True
    assert all(t["worst_position_snr_db"] < 25 for t in fidelity["tried"][:2])
    assert fidelity["tried"][0]["in_sample_worst_position_snr_db"] == plain.metadata["fidelity"]["worst_position_snr_db"]
    first = model.layers[0].name
    assert corrected["layers"][first] > 0.2                             # a third of the spread, in channel A
    layer = plain.layers[0]      # one bias unit: the activation step times the requantization ratio
    unit = np.asarray(plain.metadata["activation_scales"][first]) * layer.out_multiplier / 2.0 ** layer.out_shift
    raised = (model.layers[0].bias.astype(np.int64) - layer.bias) * unit    # A's copy fell short: raised
    assert raised[0] == pytest.approx(8 * 0.49 / 127 * 128 / 255, rel=0.2) and abs(raised[1]) < raised[0] / 10
    assert [l.weights.tolist() for l in model.layers] == [l.weights.tolist() for l in plain.layers]   # biases only
    benign = _cancelling_net(1.0)
    untouched = es.convert(benign, samples=x, input_scaling=(255, 0), progress=False)
    assert "bias_corrected" not in untouched.metadata


def test_worst_half_is_the_exact_minimum_over_subsets():
    """The worst subset of k samples at every position (Dinkelbach's iteration) against every subset,
    with exact-and-zero samples (a ReLU output off) counted as exact."""
    import itertools

    from edgesnn.convert import _db, _worst_subset

    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(2, 9))
        k = int(rng.integers(1, n))
        signal = rng.exponential(1, (n, 2, 3)) * (rng.random((n, 2, 3)) > 0.2)
        noise = rng.exponential(0.01, (n, 2, 3)) * (rng.random((n, 2, 3)) > 0.3)
        padded = signal + 1e-12 * signal.mean() + 1e-300
        want = np.full((2, 3), np.inf)
        for subset in itertools.combinations(range(n), k):
            want = np.minimum(want, _db(padded[list(subset)].sum(0), noise[list(subset)].sum(0)))
        np.testing.assert_allclose(_db(*_worst_subset(signal, noise, k)), want, atol=1e-6)


def test_cli_convert_refuses_a_low_fidelity_8bit_model_unless_told(tmp_path, capsys):
    """`edgesnn convert` exits 1 with the PrecisionError's one line and writes nothing; with
    --on-low-fidelity warn it writes the model (and es.convert's PrecisionWarning is raised)."""
    from edgesnn.cli import main

    x = np.random.default_rng(0).integers(0, 256, (16, 6, 6, 1), dtype=np.uint8)
    path = export(_cancelling_net(-1.1), tmp_path / "cancel.onnx", (1, 6, 6))
    np.savez(tmp_path / "calib.npz", x=x)
    out = tmp_path / "m.esnn"
    argv = ["convert", path, "-o", str(out), "--samples", str(tmp_path / "calib.npz"), "--input-scaling", "255", "0"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "keeps only" in err and "worst output position" in err and "falls most at layer" in err, err
    assert not out.exists()
    with pytest.warns(es.PrecisionWarning):
        assert main(argv + ["--on-low-fidelity", "warn"]) == 0
    assert es.Model.load(out).metadata["fidelity"]["worst_position_snr_db"] < 25
