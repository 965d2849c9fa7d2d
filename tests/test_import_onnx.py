"""The onnx importer on real ONNX files (written by torch.onnx.export and by onnx.helper): the
imported float Graph matches onnxruntime within 1e-4; unsupported ops and malformed files fail clearly."""

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import edgesnn.plugins
from edgesnn.graph import GraphError

RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def importer():
    return edgesnn.plugins.get_importer("onnx")


def export(module, shape, path):
    """Write `module` as a real .onnx file with the TorchScript exporter; return the path."""
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, *shape),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "n"}})
    return path


def onnxruntime_output(model_or_path, x_nchw):
    data = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x_nchw.astype(np.float32)})[0]


def graph_output(graph, x_nchw):
    x_hwc = x_nchw.transpose(0, 2, 3, 1) if x_nchw.ndim == 4 else x_nchw[:, None, None, :]
    return graph.run(x_hwc)


def randomize_batch_norms(module):
    with torch.no_grad():
        for bn in [m for m in module.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d))]:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)


# -- real files from torch.onnx.export -----------------------------------------------------------


class FlattenCNN(torch.nn.Module):
    """conv -> pool -> flatten (C, H, W order in ONNX) -> dense: the weight rows must be permuted."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 6, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(6)
        self.fc1 = torch.nn.Linear(6 * 5 * 4, 16)
        self.bn1 = torch.nn.BatchNorm1d(16)
        self.fc2 = torch.nn.Linear(16, 4)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        x = torch.relu(self.bn1(self.fc1(x.view(x.size(0), -1))))
        return torch.softmax(self.fc2(torch.nn.functional.dropout(x, 0.5, self.training)), dim=1)


class ResidualSeparable(torch.nn.Module):
    """A residual block around a depthwise/pointwise (separable) pair, a grouped conv, global pooling."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = torch.nn.Conv2d(8, 8, 1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.grouped = torch.nn.Conv2d(8, 12, 3, stride=2, groups=4)
        self.head = torch.nn.Linear(12, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.nn.functional.relu6(x + self.bn(self.pw(self.dw(x))))
        x = torch.nn.functional.hardtanh(self.grouped(x), 0.0, 3.0)
        x = torch.nn.functional.adaptive_avg_pool2d(x, 1)
        return self.head(torch.flatten(x, 1))


def test_flatten_before_dense_matches_onnxruntime(importer, tmp_path):
    torch.manual_seed(0)
    net = FlattenCNN()
    randomize_batch_norms(net)
    path = export(net, (2, 10, 8), tmp_path / "flatten.onnx")
    graph = importer.load(path)
    assert graph.input_shape == (10, 8, 2) and graph.metadata["input_layout"] == "NCHW"
    x = RNG.normal(size=(5, 2, 10, 8)).astype(np.float32)
    expected = onnxruntime_output(path, x)
    np.testing.assert_allclose(graph_output(graph, x)[:, 0, 0], expected, atol=1e-4)
    logits = graph.simplify().run(x.transpose(0, 2, 3, 1))
    assert np.array_equal(logits[:, 0, 0].argmax(1), expected.argmax(1))


def test_residual_and_separable_match_onnxruntime(importer, tmp_path):
    torch.manual_seed(1)
    net = ResidualSeparable()
    randomize_batch_norms(net)
    path = export(net, (3, 9, 9), tmp_path / "residual.onnx")
    graph = importer.load(path)
    ops = [node.op for node in graph]
    assert "depthwise_conv2d" in ops and "add" in ops
    x = RNG.normal(size=(4, 3, 9, 9)).astype(np.float32)
    expected = onnxruntime_output(path, x)
    np.testing.assert_allclose(graph_output(graph, x)[:, 0, 0], expected, atol=1e-4)
    simple = graph.simplify()
    assert "separable_conv2d" in [node.op for node in simple]
    np.testing.assert_allclose(simple.run(x.transpose(0, 2, 3, 1))[:, 0, 0], expected, atol=1e-4)


def test_model_proto_source_and_registry(importer, tmp_path):
    assert "onnx" in edgesnn.plugins.importers()
    torch.manual_seed(2)
    path = export(FlattenCNN(), (2, 10, 8), tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    assert importer.can_import(path) and importer.can_import(str(path)) and importer.can_import(proto)
    assert not importer.can_import("m.keras") and not importer.can_import(42)
    x = RNG.normal(size=(2, 2, 10, 8)).astype(np.float32)
    np.testing.assert_allclose(graph_output(importer.load(proto), x), graph_output(importer.load(path), x), atol=0)


# -- edge cases built with onnx.helper -----------------------------------------------------------


def const(name, array):
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def make_model(nodes, initializers, input_shape, output_shape, opset=13, extra_inputs=()):
    graph = helper.make_graph(
        nodes, "edge", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape), *extra_inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def test_helper_built_ops_match_onnxruntime(importer, tmp_path):
    """auto_pad SAME_UPPER / SAME_LOWER, explicit pads, BatchNormalization after an Add, Clip,
    Mul/Sub/Div by constants, AveragePool counting pads, Gemm with alpha/beta/transB, MatMul + Add bias,
    Reshape to (N, -1), Identity, Dropout, Softmax."""
    c = 4
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="same_upper", auto_pad="SAME_UPPER", strides=[2, 2]),
        helper.make_node("Conv", ["x", "w1"], ["b"], name="same_lower", auto_pad="SAME_LOWER", strides=[2, 2]),
        helper.make_node("Add", ["a", "b"], ["ab"], name="add"),
        helper.make_node("BatchNormalization", ["ab", "g", "beta", "mean", "var"], ["bn"], name="bn", epsilon=1e-3),
        helper.make_node("Mul", ["bn", "half"], ["m"], name="mul"),
        helper.make_node("Sub", ["m", "shift"], ["s"], name="sub"),
        helper.make_node("Div", ["s", "two"], ["d"], name="div"),
        helper.make_node("Clip", ["d", "zero", "six"], ["r"], name="clip"),
        helper.make_node("AveragePool", ["r"], ["p"], name="avg", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         count_include_pad=1),
        helper.make_node("Conv", ["p", "w2", "b2"], ["q"], name="pads", pads=[1, 0, 1, 2]),
        helper.make_node("Relu", ["q"], ["qr"], name="relu"),
        helper.make_node("Identity", ["qr"], ["qi"], name="identity"),
        helper.make_node("Reshape", ["qi", "flat_shape"], ["f"], name="reshape"),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["g1"], name="gemm", alpha=0.5, beta=2.0, transB=1),
        helper.make_node("Dropout", ["g1"], ["g2"], name="dropout"),
        helper.make_node("MatMul", ["g2", "wm"], ["mm"], name="matmul"),
        helper.make_node("Add", ["mm", "bm"], ["mb"], name="bias"),
        helper.make_node("Softmax", ["mb"], ["y"], name="softmax", axis=-1),
    ]
    inits = [
        const("w1", RNG.normal(size=(c, 3, 3, 3))), const("b1", RNG.normal(size=c)),
        const("g", RNG.uniform(0.5, 1.5, c)), const("beta", RNG.normal(size=c)),
        const("mean", RNG.normal(size=c)), const("var", RNG.uniform(0.5, 2, c)),
        const("half", RNG.uniform(0.5, 1.5, (1, c, 1, 1))), const("shift", [-0.25]), const("two", [2.0]),
        const("zero", 0.0), const("six", 6.0),
        const("w2", RNG.normal(size=(c, c, 3, 3))), const("b2", RNG.normal(size=c)),
        numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape"),
    ]
    x = RNG.normal(size=(3, 3, 8, 7)).astype(np.float32)
    # shapes: conv stride 2 same on 8x7 -> 4x4; explicit pads (top 1, bottom 1, left 0, right 2) -> 4x4
    fan_in = c * 4 * 4
    inits += [const("wg", RNG.normal(size=(10, fan_in)) * 0.2), const("bg", RNG.normal(size=10)),
              const("wm", RNG.normal(size=(10, 6))), const("bm", RNG.normal(size=(6,)))]
    model = make_model(nodes, inits, ["n", 3, 8, 7], ["n", 6])
    path = tmp_path / "edge.onnx"
    onnx.save(model, str(path))
    graph = importer.load(path)
    expected = onnxruntime_output(path, x)
    np.testing.assert_allclose(graph_output(graph, x)[:, 0, 0], expected, atol=1e-4)
    same_lower = graph.node("same_lower")
    # 8 rows, 3x3 stride 2: one pad row, which SAME_LOWER puts first; 7 columns: two, one each side
    assert same_lower.attrs["padding"] == (1, 0, 1, 1)


def test_old_opset_is_converted(importer):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["y"], name="gap")]
    model = make_model(nodes, [const("w", RNG.normal(size=(2, 1, 3, 3)))], [1, 1, 5, 5], [1, 2, 1, 1], opset=11)
    graph = importer.load(model)
    x = RNG.normal(size=(1, 1, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(graph_output(graph, x)[0, 0, 0], onnxruntime_output(model, x)[0, :, 0, 0], atol=1e-5)
    assert graph.metadata["opset"] == 13


# -- errors --------------------------------------------------------------------------------------


def test_unsupported_ops_become_unsupported_nodes_and_the_import_goes_on(importer):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("LeakyRelu", ["c"], ["l"], name="my_leaky"),
             helper.make_node("Conv", ["l", "w2"], ["c2"], name="dil", dilations=[2, 2]),
             helper.make_node("GlobalAveragePool", ["c"], ["squeezed"], name="squeeze"),
             helper.make_node("Sigmoid", ["squeezed"], ["gate"], name="gate"),
             helper.make_node("Mul", ["c", "gate"], ["se"], name="se_mul"),
             helper.make_node("Tile", ["se", "reps"], ["t"], name="tiled"),
             helper.make_node("GlobalAveragePool", ["c2"], ["y"], name="gap")]
    inits = [const("w", RNG.normal(size=(2, 1, 3, 3))), const("w2", RNG.normal(size=(2, 2, 3, 3))),
             numpy_helper.from_array(np.array([1, 1, 1, 1], np.int64), "reps")]
    model = make_model(nodes, inits, [1, 1, 9, 9], [1, 2, 1, 1])
    graph = importer.load(model)
    problems = {p["layer"]: p for p in graph.problems()}
    assert list(problems) == ["my_leaky", "dil", "gate", "se_mul", "tiled"]
    assert problems["my_leaky"]["op"] == "LeakyRelu" and "ReLU" in problems["my_leaky"]["hint"]
    assert "dilations [2, 2] are not supported" in problems["dil"]["hint"] and problems["dil"]["shape"] == (3, 3, 2)
    assert "squeeze-excite" in problems["se_mul"]["hint"]
    assert "'Tile' is not supported; supported ops: " in problems["tiled"]["hint"]
    assert graph.node("gap").op == "global_avg_pool"          # the import went on after them
    with pytest.raises(GraphError, match=r"node 'my_leaky' \(unsupported"):
        graph.run(np.zeros((1, 9, 9, 1), np.float32))


def test_unsupported_attributes_fail_clearly(importer):
    clip = make_model([helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="hardtanh")],
                      [const("lo", -1.0), const("hi", 1.0)], [1, 1, 3, 3], [1, 1, 3, 3])
    graph = importer.load(clip)     # a clip with min != 0 is a clip node now
    assert graph.node("hardtanh").attrs == {"min_value": -1.0, "max_value": 1.0}
    two_inputs = make_model([helper.make_node("Add", ["x", "x2"], ["y"], name="add")], [], [1, 1, 3, 3],
                            [1, 1, 3, 3], extra_inputs=[helper.make_tensor_value_info("x2", TensorProto.FLOAT, [1, 1, 3, 3])])
    with pytest.raises(GraphError, match=r"exactly one input.*'x', 'x2'"):
        importer.load(two_inputs)


def test_malformed_files(importer, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07this is not a protobuf \xff\xff\xff" * 3)
    with pytest.raises(GraphError, match=r"garbage.onnx"):
        importer.load(garbage)
    torch.manual_seed(3)
    whole = export(FlattenCNN(), (2, 10, 8), tmp_path / "whole.onnx").read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(GraphError, match=r"truncated.onnx"):
        importer.load(truncated)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(GraphError, match=r"no nodes"):
        importer.load(empty)
    with pytest.raises(FileNotFoundError, match=r"missing.onnx"):
        importer.load(tmp_path / "missing.onnx")
    buffer = io.BytesIO(whole)
    with pytest.raises(TypeError, match=r"\.onnx path or an onnx.ModelProto"):
        importer.load(buffer)


def test_tf2onnx_style_nhwc_uint8_input_matches_onnxruntime(importer):
    """tf2onnx's layout: a uint8 NHWC input, Cast, Rescaling as Mul/Add, a Transpose to NCHW before the
    conv, ReLU6 as Relu/Min/Max, a Transpose back to NHWC, Reshape to (N, -1), MatMul, Softmax."""
    nodes = [
        helper.make_node("Cast", ["x"], ["xf"], name="model/rescaling/Cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xf", "scale"], ["xs"], name="model/rescaling/mul"),
        helper.make_node("Add", ["xs", "offset"], ["xo"], name="model/rescaling/add"),
        helper.make_node("Transpose", ["xo"], ["xt"], name="model/conv/Conv2D__6", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["xt", "w", "b"], ["c"], name="model/conv/Conv2D", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"], name="model/conv/relu/Relu"),
        helper.make_node("Min", ["r", "six"], ["r6"], name="model/conv/relu/clip_by_value/Minimum"),
        helper.make_node("Max", ["r6", "zero"], ["rc"], name="model/conv/relu/clip_by_value"),
        helper.make_node("Transpose", ["rc"], ["back"], name="model/conv/Conv2D__9", perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["back", "flat_shape"], ["f"], name="model/flatten/Reshape"),
        helper.make_node("MatMul", ["f", "wd"], ["m"], name="model/dense/MatMul"),
        helper.make_node("Softmax", ["m"], ["y"], name="model/dense/Softmax", axis=-1),
    ]
    inits = [const("scale", [1 / 127.5]), const("offset", [-1.0]), const("w", RNG.normal(size=(4, 3, 3, 3))),
             const("b", RNG.normal(size=4)), const("six", 6.0), const("zero", 0.0),
             numpy_helper.from_array(np.array([-1, 4 * 4 * 4], np.int64), "flat_shape"),
             const("wd", RNG.normal(size=(64, 5)))]
    graph_proto = helper.make_graph(nodes, "tf2onnx", [helper.make_tensor_value_info("x", TensorProto.UINT8,
                                                                                      ["n", 8, 8, 3])],
                                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
                                    initializer=inits)
    model = helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 13)], ir_version=8,
                              producer_name="tf2onnx")
    graph = importer.load(model)
    assert graph.metadata["input_layout"] == "NHWC" and graph.metadata["input_dtype"] == "uint8"
    x = RNG.integers(0, 256, size=(3, 8, 8, 3)).astype(np.uint8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(graph.run(x.astype(np.float32))[:, 0, 0], expected, atol=1e-5)
    simple = graph.simplify()
    assert [n.op for n in simple] == ["affine", "conv2d", "relu", "dense"]   # the input affine meets padding
    assert simple.node("model/conv/relu/clip_by_value").attrs["max_value"] == 6.0


def test_silu_and_dynamo_module_names_in_problems(importer):
    sigmoid = helper.make_node("Sigmoid", ["c"], ["s"], name="node_Sigmoid_3")
    mul = helper.make_node("Mul", ["c", "s"], ["y"], name="node_silu")
    for node, scopes in ((sigmoid, "['', 'features.0', 'features.0.2', 'sigmoid']"),
                         (mul, "['', 'features.0', 'features.0.2', 'silu']")):
        entry = node.metadata_props.add()
        entry.key, entry.value = "pkg.torch.onnx.name_scopes", scopes
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="node_Conv_1"), sigmoid, mul]
    graph = importer.load(make_model(nodes, [const("w", RNG.normal(size=(2, 1, 3, 3)))], [1, 1, 5, 5], [1, 2, 3, 3]))
    problems = [(p["op"], p["layer"]) for p in graph.problems()]
    assert problems == [("Sigmoid", "features.0.2"), ("Mul", "features.0.2")]
    assert graph.problems()[1]["hint"].startswith("x * sigmoid(x) is SiLU/Swish: replace it with ReLU")


@pytest.mark.parametrize("size,kernel,stride,pad", [(5, 2, 2, 1), (6, 3, 2, 1), (8, 3, 3, 1), (10, 4, 3, 2)])
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_ceil_mode_pools_match_onnxruntime(importer, size, kernel, stride, pad, op):
    """ceil_mode as extra bottom/right padding, with the rule onnxruntime (like torch) applies: a window
    starting in the bottom/right padding is dropped (5x5, 2x2/2, pad 1: 3x3 outputs, not 4x4)."""
    extra = {"count_include_pad": 0} if op == "AveragePool" else {}
    node = helper.make_node(op, ["x"], ["y"], name="pool", kernel_shape=[kernel] * 2, strides=[stride] * 2,
                            pads=[pad] * 4, ceil_mode=1, **extra)
    model = make_model([node], [], [1, 2, size, size], [1, 2, None, None])
    x = RNG.normal(size=(1, 2, size, size)).astype(np.float32)
    expected = onnxruntime_output(model, x)
    np.testing.assert_allclose(graph_output(importer.load(model), x), expected.transpose(0, 2, 3, 1), atol=1e-6)


def test_an_unsupported_op_of_unknown_shape_stops_the_import_and_says_so(importer):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("NonZero", ["r"], ["nz"], name="nonzero"),       # data-dependent shape
             helper.make_node("Cast", ["nz"], ["y"], name="cast", to=TensorProto.FLOAT)]
    model = make_model(nodes, [const("w", RNG.normal(size=(2, 1, 3, 3)))], [1, 1, 5, 5], [4, None])
    graph = importer.load(model)
    assert [n.op for n in graph] == ["conv2d", "relu"] and "NonZero" in graph.metadata["import_stopped"]
    [stopped] = graph.problems()
    assert stopped["op"] == "import stopped" and stopped["node"] == "relu" and "NonZero" in stopped["hint"]
