"""The float Graph: the numpy executor against torch.nn.functional, the simplification passes keep
the output, padding resolution follows its rule, and inconsistent graphs get clear errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesnn.graph import Graph, GraphBuilder, GraphError, Node, equivalent_padding_mode, pads_of

RNG = np.random.default_rng(1234)


def randn(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def torch_nchw(x_nhwc):
    return torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))).double()


def to_nhwc(t):
    return t.numpy().transpose(0, 2, 3, 1)


def torch_pad(x, pads):
    top, bottom, left, right = pads
    return F.pad(x, (left, right, top, bottom))


def single(op, input_shape, attrs=None, params=None, name="n"):
    return Graph([Node(name, op, ("input",), attrs or {}, params or {})], input_shape)


# -- executor against torch ----------------------------------------------------------------------


@pytest.mark.parametrize("size,kernel,stride,padding", [
    (8, 3, 1, "same"), (8, 3, 2, "same"), (7, 3, 2, "same"), (9, 5, 3, "same"), (8, 2, 2, "same"),
    (8, 3, 1, "valid"), (9, 3, 2, "valid"), (8, 3, 2, (1, 1, 1, 1)), (8, 3, 1, (2, 0, 0, 1)),
])
def test_conv2d_matches_torch(size, kernel, stride, padding):
    x = randn(2, size, size + 1, 3)
    weight, bias = randn(kernel, kernel, 3, 5), randn(5)
    graph = single("conv2d", x.shape[1:], {"strides": (stride, stride), "padding": padding},
                   {"weight": weight, "bias": bias})
    pads = pads_of(padding, x.shape[1:3], (kernel, kernel), (stride, stride))
    expected = F.conv2d(torch_pad(torch_nchw(x), pads), torch.from_numpy(weight.transpose(3, 2, 0, 1)).double(),
                        torch.from_numpy(bias).double(), stride=stride)
    np.testing.assert_allclose(graph.run(x), to_nhwc(expected), atol=1e-5)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_depthwise_and_separable_match_torch(padding):
    x = randn(2, 9, 8, 4)
    depthwise, dw_bias = randn(3, 3, 4), randn(4)
    pointwise, pw_bias = randn(4, 6), randn(6)
    pads = pads_of(padding, (9, 8), (3, 3), (2, 2))
    dw_torch = F.conv2d(torch_pad(torch_nchw(x), pads), torch.from_numpy(depthwise.transpose(2, 0, 1)[:, None]).double(),
                        torch.from_numpy(dw_bias).double(), stride=2, groups=4)
    geometry = {"strides": (2, 2), "padding": padding}
    graph = single("depthwise_conv2d", x.shape[1:], geometry, {"weight": depthwise, "bias": dw_bias})
    np.testing.assert_allclose(graph.run(x), to_nhwc(dw_torch), atol=1e-5)

    separable = single("separable_conv2d", x.shape[1:], geometry,
                       {"depthwise": depthwise, "pointwise": pointwise, "bias": pw_bias})
    no_bias = dw_torch - torch.from_numpy(dw_bias).double()[None, :, None, None]
    expected = F.conv2d(no_bias, torch.from_numpy(pointwise.T[:, :, None, None]).double(), torch.from_numpy(pw_bias).double())
    np.testing.assert_allclose(separable.run(x), to_nhwc(expected), atol=1e-5)


def test_pools_match_torch():
    x = randn(3, 8, 10, 2)
    max_pool = single("max_pool", x.shape[1:], {"pool_size": 2, "strides": 2, "padding": "valid"})
    np.testing.assert_allclose(max_pool.run(x), to_nhwc(F.max_pool2d(torch_nchw(x), 2)), atol=1e-6)
    avg_pool = single("avg_pool", x.shape[1:], {"pool_size": (3, 3), "strides": (1, 1), "padding": "valid"})
    np.testing.assert_allclose(avg_pool.run(x), to_nhwc(F.avg_pool2d(torch_nchw(x), 3, stride=1)), atol=1e-6)
    # same padding 3x3 stride 1 pads one pixel each side; Keras/ONNX exclude the padding from the mean
    for include in (False, True):
        avg_same = single("avg_pool", x.shape[1:], {"pool_size": 3, "strides": 1, "padding": "same",
                                                     "count_include_pad": include})
        expected = F.avg_pool2d(torch_nchw(x), 3, stride=1, padding=1, count_include_pad=include)
        np.testing.assert_allclose(avg_same.run(x), to_nhwc(expected), atol=1e-6)
    max_same = single("max_pool", x.shape[1:], {"pool_size": 3, "strides": 1, "padding": (1, 1, 1, 1)})
    expected = F.max_pool2d(torch_nchw(x), 3, stride=1, padding=1)
    np.testing.assert_allclose(max_same.run(x), to_nhwc(expected), atol=1e-6)
    global_avg = single("global_avg_pool", x.shape[1:])
    np.testing.assert_allclose(global_avg.run(x)[:, 0, 0], x.mean(axis=(1, 2)), atol=1e-6)


def test_dense_flattens_hwc_and_elementwise_ops():
    x = randn(4, 3, 2, 5)
    weight, bias = randn(30, 7), randn(7)
    builder = GraphBuilder((3, 2, 5))
    dense = builder.add("dense", "fc", ["input"], params={"weight": weight, "bias": bias})
    relu = builder.add("relu", "r6", [dense], attrs={"max_value": 0.5})
    soft = builder.add("softmax", "sm", [relu])
    graph = builder.build()
    out, acts = graph.run(x, capture=True)
    logits = np.stack([sample.reshape(-1) @ weight + bias for sample in x])   # row-major HWC flatten
    np.testing.assert_allclose(acts["fc"][:, 0, 0], logits, atol=1e-5)
    np.testing.assert_allclose(acts["r6"][:, 0, 0], np.clip(logits, 0, 0.5), atol=1e-6)
    expected = torch.softmax(torch.from_numpy(np.clip(logits, 0, 0.5)), dim=1).numpy()
    np.testing.assert_allclose(out[:, 0, 0], expected, atol=1e-6)
    assert set(acts) == {"input", "fc", "r6", "sm"} and acts["input"].shape == x.shape


def test_add_affine_reshape_and_batching():
    x = randn(5, 2, 2, 3)
    scale, offset = randn(3), randn(3)
    builder = GraphBuilder((2, 2, 3))
    affine = builder.add("affine", "bn", ["input"], params={"scale": scale, "offset": offset})
    added = builder.add("add", "sum", ["input", affine, affine])
    builder.add("reshape", "rs", [added], attrs={"shape": (1, 4, 3)})
    graph = builder.build()
    expected = (x + 2 * (x * scale + offset)).reshape(5, 1, 4, 3)
    np.testing.assert_allclose(graph.run(x), expected, atol=1e-5)
    np.testing.assert_allclose(graph.run(x, batch_size=2), graph.run(x), atol=0)
    np.testing.assert_allclose(graph.run(x[0]), expected[:1], atol=1e-5)


# -- simplification ---------------------------------------------------------------------------------


def _network():
    """conv -> affine -> relu -> depthwise -> 1x1 conv -> relu6 -> dropout -> flatten -> dense -> softmax,
    with a residual add around the depthwise/pointwise pair."""
    b = GraphBuilder((6, 6, 2))
    conv = b.add("conv2d", "conv", ["input"], attrs={"strides": 1, "padding": (1, 1, 1, 1)},
                 params={"weight": randn(3, 3, 2, 4), "bias": randn(4)})
    bn = b.add("affine", "bn", [conv], params={"scale": RNG.uniform(0.5, 2, 4), "offset": randn(4)})
    relu = b.add("relu", "relu", [bn])
    dw = b.add("depthwise_conv2d", "dw", [relu], attrs={"padding": "same"},
               params={"weight": randn(3, 3, 4), "bias": randn(4)})
    pw = b.add("conv2d", "pw", [dw], attrs={"padding": "valid"}, params={"weight": randn(1, 1, 4, 4), "bias": randn(4)})
    bn2 = b.add("affine", "bn2", [pw], params={"scale": RNG.uniform(0.5, 2, 4), "offset": randn(4)})
    res = b.add("add", "res", [relu, bn2])
    relu6 = b.add("relu", "relu6", [res], attrs={"max_value": 6.0})
    drop = b.add("identity", "drop", [relu6])
    flat = b.add("flatten", "flat", [drop])
    fc = b.add("dense", "fc", [flat], params={"weight": randn(144, 3), "bias": randn(3)})
    b.add("softmax", "softmax", [fc])
    return b.build()


def test_simplify_keeps_output_and_removes_what_it_should():
    graph = _network()
    x = randn(6, 6, 6, 2)
    full, acts = graph.run(x, capture=True)
    simple = graph.simplify()
    ops = [node.op for node in simple]
    assert ops == ["conv2d", "relu", "separable_conv2d", "add", "relu", "dense"]
    assert simple.node("conv").attrs["padding"] == "same" and simple.node("conv").attrs["folded"] == ["bn"]
    logits = simple.run(x)
    np.testing.assert_allclose(logits, acts["fc"], atol=1e-4)
    assert np.array_equal(logits.argmax(-1), full.argmax(-1))
    assert [node.op for node in graph].count("affine") == 2, "simplify must not modify the original graph"


def test_simplify_keeps_an_affine_it_cannot_fold():
    b = GraphBuilder((4, 4, 1))
    scaled = b.add("affine", "rescale", ["input"], params={"scale": [0.5], "offset": [-1.0]})
    b.add("conv2d", "conv", [scaled], attrs={"padding": "same"}, params={"weight": randn(3, 3, 1, 2), "bias": randn(2)})
    simple = b.build().simplify()
    assert [node.op for node in simple] == ["affine", "conv2d"]


def test_a_padded_pointwise_conv_is_not_fused():
    b = GraphBuilder((5, 5, 3))
    dw = b.add("depthwise_conv2d", "dw", ["input"], attrs={"padding": "valid"},
               params={"weight": randn(3, 3, 3), "bias": randn(3)})
    b.add("conv2d", "pw", [dw], attrs={"padding": (1, 1, 1, 1)}, params={"weight": randn(1, 1, 3, 2), "bias": randn(2)})
    graph = b.build()
    simple = graph.simplify(resolve_padding=False)
    assert [node.op for node in simple] == ["depthwise_conv2d", "conv2d"]
    x = randn(2, 5, 5, 3)
    np.testing.assert_allclose(simple.run(x), graph.run(x), atol=1e-6)


# -- padding resolution ----------------------------------------------------------------------------


def test_resolve_padding_maps_symmetric_pads_to_same_and_rejects_torch_stride2_on_even_input():
    ok = single("conv2d", (28, 28, 1), {"strides": 1, "padding": (1, 1, 1, 1)},
                {"weight": randn(3, 3, 1, 2), "bias": randn(2)})
    assert ok.simplify().node("n").attrs["padding"] == "same"
    odd = single("conv2d", (27, 27, 1), {"strides": 2, "padding": (1, 1, 1, 1)},
                 {"weight": randn(3, 3, 1, 2), "bias": randn(2)})
    assert odd.simplify().node("n").attrs["padding"] == "same"
    bad = single("conv2d", (28, 28, 1), {"strides": 2, "padding": (1, 1, 1, 1)},
                 {"weight": randn(3, 3, 1, 2), "bias": randn(2)})
    with pytest.raises(GraphError, match=r"node 'n'.*\(1, 1, 1, 1\).*28x28.*same \(0, 1, 0, 1\)"):
        bad.simplify()
    pool = single("max_pool", (28, 28, 1), {"pool_size": 2, "strides": 2, "padding": "same"})
    assert pool.simplify().node("n").attrs["padding"] == "valid"   # 28 / 2: the padding is never read


@settings(max_examples=60, deadline=None)
@given(size=st.integers(3, 9), kernel=st.integers(1, 4), stride=st.integers(1, 3),
       pads=st.tuples(*[st.integers(0, 2)] * 4))
def test_equivalent_padding_mode_computes_the_same(size, kernel, stride, pads):
    """Whenever a mode is reported equivalent, running with it gives exactly the explicit-pad output;
    whenever none is, each mode gives another shape or other values."""
    if size + pads[0] + pads[1] < kernel or size + pads[2] + pads[3] < kernel:
        return
    x = RNG.normal(size=(1, size, size, 1)).astype(np.float32)
    params = {"weight": RNG.normal(size=(kernel, kernel, 1, 1)).astype(np.float32), "bias": np.zeros(1, np.float32)}
    explicit = single("conv2d", x.shape[1:], {"strides": stride, "padding": pads}, params).run(x)
    mode = equivalent_padding_mode(pads, (size, size), (kernel, kernel), (stride, stride))
    for candidate in ("same", "valid"):
        try:
            other = single("conv2d", x.shape[1:], {"strides": stride, "padding": candidate}, params).run(x)
        except GraphError:  # the kernel does not fit with this mode
            assert candidate != mode
            continue
        equal = other.shape == explicit.shape and np.allclose(other, explicit, atol=1e-5)
        if candidate == mode:
            assert equal
        elif mode is None:
            assert not equal


# -- errors ------------------------------------------------------------------------------------------


def test_inconsistent_graphs_are_rejected_with_the_node_named():
    conv = {"weight": randn(3, 3, 2, 4), "bias": randn(4)}
    with pytest.raises(GraphError, match=r"node 'c'.*unknown op 'gelu'.*conv2d"):
        single("gelu", (4, 4, 2), name="c")
    with pytest.raises(GraphError, match=r"node 'c'.*expects 2 input channels.*has 3"):
        Graph([Node("c", "conv2d", ("input",), {}, conv)], (4, 4, 3))
    with pytest.raises(GraphError, match=r"node 'b'.*\['nowhere'\]"):
        Graph([Node("a", "relu", ("input",)), Node("b", "add", ("a", "nowhere"))], (4, 4, 2))
    with pytest.raises(GraphError, match=r"node 'a'.*used twice"):
        Graph([Node("a", "relu", ("input",)), Node("a", "relu", ("a",))], (4, 4, 2))
    with pytest.raises(GraphError, match=r"node 'd'.*fan_in 10.*flattens to 32"):
        Graph([Node("d", "dense", ("input",), {}, {"weight": randn(10, 2), "bias": randn(2)})], (4, 4, 2))
    with pytest.raises(GraphError, match=r"run: x must have shape \(N, 4, 4, 2\)"):
        Graph([Node("r", "relu", ("input",))], (4, 4, 2)).run(np.zeros((1, 4, 4, 3)))

