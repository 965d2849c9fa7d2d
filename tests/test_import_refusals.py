"""Every refusal of the converter, from a real framework model: es.convert raises es.ConversionError whose
message names the node, its op, the source framework's own layer name where it differs, why, and what to
change; es.check lists the same problems without calibration data.

The importer tests (test_import_*.py) check each importer's list of unsupported ops (graph.problems());
tests/test_zoo.py checks the zoo's refused files. These are the refusals made while building the integer
layers (edgesnn/convert.py _Refusal), each reached the way a user reaches it, plus an unsupported op of
each importer carried through to the ConversionError's message."""

import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import edgesnn as es  # noqa: E402

torch = pytest.importorskip("torch")
nn = torch.nn


def refusal(source, samples, **options) -> tuple[str, list]:
    """es.convert's ConversionError on `source` (message, problems); es.check must list the same problems."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(es.ConversionError) as info:
            es.convert(source, samples=samples, progress=False, **options)
    assert not isinstance(info.value, es.PrecisionError)
    check_options = {k: v for k, v in options.items() if k in ("neuron", "input_scaling", "input_shape")}
    if isinstance(source, nn.Module):
        check_options.setdefault("input_shape", samples.shape[1:])
    checked = es.check(source, **check_options)
    assert [(p.node, p.op, p.reason) for p in checked] == [(p.node, p.op, p.reason) for p in info.value.problems]
    return str(info.value), info.value.problems


def assert_names(message: str, problems: list, node: str, op: str, reason: str, layer: str | None = None,
                 hint: str | None = None):
    """The one problem of `problems` is `node`/`op` and the message says so, with the reason and the hint."""
    [problem] = problems
    assert (problem.node, problem.op) == (node, op), problem
    assert f"node {node!r}" in message and f"op {op!r}" in message, message
    assert reason in problem.reason and reason in message, message
    if layer is not None:
        assert problem.layer == layer, problem
    else:   # the converter's own refusals describe the source node, e.g. "onnx Conv '/0/Conv'", "keras Add 'sum5'"
        assert f"{node!r}" in problem.layer, problem
    assert problem.layer == node or f"({problem.layer})" in message, message
    if hint is not None:
        assert hint in problem.hint and hint in message, message
    assert message.startswith("1 node(s) will not convert to integer layers"), message


def images(shape, n=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def seeded(module):
    torch.manual_seed(0)
    return module.eval()


# -- refusals of the converter (edgesnn/convert.py), each from a torch module -------------------------

def test_a_softmax_inside_the_network():
    net = seeded(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Softmax(dim=1), nn.Conv2d(4, 2, 3)))
    message, problems = refusal(net, images((7, 7, 1)))
    assert_names(message, problems, "/1/Softmax", "softmax", "a softmax inside the network (not the final op)",
                 hint="only a final softmax is dropped")


def test_a_pool_window_over_8():
    net = seeded(nn.Sequential(nn.Conv2d(1, 4, 1), nn.ReLU(), nn.MaxPool2d(9), nn.Flatten(), nn.Linear(4, 2)))
    message, problems = refusal(net, images((9, 9, 1)))
    assert_names(message, problems, "/2/MaxPool", "max_pool", "is larger than the integer pools' 8")


def test_a_clip_with_a_lower_bound_above_zero():
    net = seeded(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Hardtanh(0.5, 3.0), nn.Flatten(), nn.Linear(4 * 5 * 5, 2)))
    message, problems = refusal(net, images((7, 7, 1)))
    assert_names(message, problems, "/1/Clip", "clip", "a clip with a lower bound 0.5 > 0 does not convert")


def test_a_stride_over_4():
    net = seeded(nn.Sequential(nn.Conv2d(1, 4, 3, stride=5), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 2 * 2, 2)))
    message, problems = refusal(net, images((8, 8, 1)))
    assert_names(message, problems, "/0/Conv", "conv2d", "strides (5, 5) exceed the integer layers' 4")


def test_a_depth_multiplier_over_8():
    net = seeded(nn.Sequential(nn.Conv2d(2, 18, 3, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(18 * 3 * 3, 2)))
    message, problems = refusal(net, images((5, 5, 2)))
    assert_names(message, problems, "/0/Conv", "depthwise_conv2d", "depth multiplier 9 exceeds the integer layers' 8",
                 hint="use a regular convolution (groups=1)")


def test_a_signed_output_into_a_spiking_layer():
    """conv -> conv without a ReLU: the first conv's output is signed, which a spike cannot carry."""
    net = seeded(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 2)))
    message, problems = refusal(net, images((7, 7, 1)), neuron="if", timesteps=4)
    assert_names(message, problems, "/0/Conv", "conv2d", "a spiking layer's output must be non-negative",
                 hint="convert with neuron='relu', or add a ReLU")


def test_an_input_zero_point_outside_the_input_range_under_padding():
    """input_scaling=(255, -10): float 0 would be the integer -10, which no zero-padded tap can hold."""
    net = seeded(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)))
    message, problems = refusal(net, images((6, 6, 1)), input_scaling=(255, -10))
    assert_names(message, problems, "/0/Conv", "conv2d", "its input's zero point [-10.0] is outside the integer range "
                 "[0, 255]", hint="the offset must lie in the input's range")


class NegatedInput(nn.Module):
    """x * -2 before a zero-padded conv: the input affine cannot fold into the conv (the padding would
    change), and the integer input has no sign to flip."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x * -2.0).flatten(1)


def test_an_input_rescaling_by_a_negative_factor():
    message, problems = refusal(seeded(NegatedInput()), images((5, 5, 1)))
    assert_names(message, problems, "/Mul", "affine", "an input rescaling by -2.0 <= 0 does not convert",
                 hint="fold a sign into the first layer's weights")


class ZeroScaleNormAfterPool(nn.Module):
    """conv -> ReLU -> max pool -> batch norm with one channel's scale 0: the norm cannot fold into the conv
    (the ReLU is between) and its own layer keeps a channel only by its sign, which 0 has not."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 3 * 3, 2)
        with torch.no_grad():
            self.bn.weight.copy_(torch.tensor([1.0, 0.0, 0.5, 2.0]))

    def forward(self, x):
        return self.fc(torch.relu(self.bn(nn.functional.max_pool2d(torch.relu(self.conv(x)), 2))).flatten(1))


def test_a_batch_norm_with_a_zero_scale_after_a_pool():
    message, problems = refusal(seeded(ZeroScaleNormAfterPool()), images((6, 6, 1)))
    assert_names(message, problems, "/bn/BatchNormalization", "affine", "an affine (batch norm) with a zero scale")


class PaddedMaxPool(nn.Module):
    """F.pad (zeros) before a max pool of signed values: the zero is a tap the pool reads, which an integer
    pool's padding (never read) is not."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 3 * 3, 2)

    def forward(self, x):
        return self.fc(nn.functional.max_pool2d(nn.functional.pad(self.conv(x), (1, 1, 1, 1)), 2).flatten(1))


def test_a_zero_pad_before_a_max_pool():
    message, problems = refusal(seeded(PaddedMaxPool()), images((6, 6, 1)))
    assert_names(message, problems, "/Pad", "pad", "op 'pad' has no integer form here", hint="convertible: conv2d")


class ReshapedIntoConv(nn.Module):
    """A reshape between convolutions that moves values across positions: the torch importer lists it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.conv2 = nn.Conv2d(32, 2, 1)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv(x)).reshape(-1, 32, 1, 1)).flatten(1)


def test_a_reshape_across_positions_into_a_convolution():
    message, problems = refusal(seeded(ReshapedIntoConv()), images((4, 4, 1)))
    assert_names(message, problems, "/Reshape", "Reshape", "cannot be computed in integers", layer="/Reshape",
                 hint="reshape (1, 2, 4, 4) -> (1, 32, 1, 1) reorders values across positions")


# -- the same through the other importers: Keras names, ONNX node names ---------------------------------

def test_keras_add_of_five_inputs_names_the_keras_layer(tmp_path):
    keras = pytest.importorskip("keras")
    inputs = keras.Input((5, 5, 1))
    branches = [keras.layers.Conv2D(2, 1, activation="relu", name=f"b{i}")(inputs) for i in range(5)]
    x = keras.layers.Add(name="sum5")(branches)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    model.save(tmp_path / "add5.keras")
    message, problems = refusal(str(tmp_path / "add5.keras"), images((5, 5, 1)))
    assert_names(message, problems, "sum5", "add", "5 inputs exceed the add layer's 4",
                 hint="split the sum into adds of at most 4")


def test_keras_reshape_into_a_convolution(tmp_path):
    """A Keras Reshape the importer keeps (an HWC reshape) that feeds a conv: only one before a Dense converts."""
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 1, activation="relu", name="c"),
                              keras.layers.Reshape((2, 16, 1), name="fold"), keras.layers.Conv2D(2, 1, name="c2"),
                              keras.layers.GlobalAveragePooling2D()])
    model.save(tmp_path / "fold.keras")
    message, problems = refusal(str(tmp_path / "fold.keras"), images((4, 4, 1)))
    assert_names(message, problems, "fold", "reshape", "a reshape converts only in front of dense layers",
                 layer="keras Reshape 'fold'", hint="reshape/flatten just before a Dense/Linear layer")


def test_keras_unsupported_activation_names_node_op_and_layer(tmp_path):
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 3, activation="hard_swish", name="c_hs"),
                              keras.layers.GlobalAveragePooling2D()])
    model.save(tmp_path / "hs.h5")
    message, problems = refusal(str(tmp_path / "hs.h5"), images((6, 6, 1)))
    assert_names(message, problems, "c_hs/hard_silu", "hard_silu", "cannot be computed in integers", layer="c_hs",
                 hint="relu6")


def test_onnx_unsupported_op_names_node_and_op(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(2, 1, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("LeakyRelu", ["c"], ["l"], name="my_leaky", alpha=0.1),
             helper.make_node("GlobalAveragePool", ["l"], ["y"], name="gap")]
    graph = helper.make_graph(nodes, "leaky", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 1, 1])], initializer=[w])
    path = tmp_path / "leaky.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    message, problems = refusal(str(path), images((5, 5, 1)))
    assert_names(message, problems, "my_leaky", "LeakyRelu", "cannot be computed in integers", layer="my_leaky",
                 hint="replace LeakyReLU with ReLU")


def test_torch_unsupported_module_names_node_and_op():
    net = seeded(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Hardswish(), nn.Flatten(), nn.Linear(2 * 3 * 3, 2)))
    message, problems = refusal(net, images((5, 5, 1)))
    assert_names(message, problems, "/1/HardSwish", "HardSwish", "cannot be computed in integers",
                 layer="/1/HardSwish", hint="replace Hardswish with ReLU6")
