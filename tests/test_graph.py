"""The float Graph: the numpy executor against torch.nn.functional, the simplification passes keep
the output, padding resolution follows its rule, and inconsistent graphs get clear errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesnn.graph import Graph, GraphBuilder, GraphError, Node, ceil_mode_pads, equivalent_padding_mode, pads_of

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


def test_resolve_padding_names_equivalent_modes_and_keeps_other_explicit_pads():
    ok = single("conv2d", (28, 28, 1), {"strides": 1, "padding": (1, 1, 1, 1)},
                {"weight": randn(3, 3, 1, 2), "bias": randn(2)})
    assert ok.simplify().node("n").attrs["padding"] == "same"
    odd = single("conv2d", (27, 27, 1), {"strides": 2, "padding": (1, 1, 1, 1)},
                 {"weight": randn(3, 3, 1, 2), "bias": randn(2)})
    assert odd.simplify().node("n").attrs["padding"] == "same"
    # PyTorch's padding=1 on a stride-2 conv of an even input pads the top row: TensorFlow's same does
    # not, so the pads stay explicit (the integer layers take them)
    torch_style = single("conv2d", (28, 28, 1), {"strides": 2, "padding": (1, 1, 1, 1)},
                         {"weight": randn(3, 3, 1, 2), "bias": randn(2)})
    assert torch_style.simplify().node("n").attrs["padding"] == (1, 1, 1, 1)
    pool = single("max_pool", (28, 28, 1), {"pool_size": 2, "strides": 2, "padding": "same"})
    assert pool.simplify().node("n").attrs["padding"] == "valid"   # 28 / 2: no padding at all


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



# -- the ops of the wider integer contract ------------------------------------------------------------


def test_depthwise_multiplier_matches_torch_groups_equal_to_channels():
    x = randn(2, 7, 6, 3)
    weight, bias = randn(3, 3, 6), randn(6)               # output o reads input o // 2
    graph = single("depthwise_conv2d", x.shape[1:], {"strides": (2, 1), "padding": (1, 1, 0, 2),
                                                     "depth_multiplier": 2}, {"weight": weight, "bias": bias})
    torch_weight = torch.from_numpy(weight.transpose(2, 0, 1)[:, None]).double()   # (6, 1, 3, 3)
    expected = F.conv2d(torch_pad(torch_nchw(x), (1, 1, 0, 2)), torch_weight, torch.from_numpy(bias).double(),
                        stride=(2, 1), groups=3)
    np.testing.assert_allclose(graph.run(x), to_nhwc(expected), atol=1e-5)
    pointwise, pw_bias = randn(6, 4), randn(4)
    separable = single("separable_conv2d", x.shape[1:], {"strides": (2, 1), "padding": (1, 1, 0, 2),
                                                         "depth_multiplier": 2},
                       {"depthwise": weight, "pointwise": pointwise, "bias": pw_bias})
    no_bias = to_nhwc(expected) - bias
    np.testing.assert_allclose(separable.run(x), no_bias @ pointwise + pw_bias, atol=1e-5)
    with pytest.raises(GraphError, match=r"node 'n'.*6 output channels.*depth_multiplier 3 makes 9"):
        single("depthwise_conv2d", x.shape[1:], {"depth_multiplier": 3}, {"weight": weight, "bias": bias})


def test_max_pool_channel_sign_makes_a_min_pool_and_padded_taps_are_ignored():
    x = randn(2, 5, 5, 2)
    graph = single("max_pool", x.shape[1:], {"pool_size": (3, 2), "strides": (2, 2), "padding": (1, 1, 0, 1),
                                             "channel_sign": [1, -1]})
    y = graph.run(x)
    padded = torch_pad(torch_nchw(x), (1, 1, 0, 1))
    maxed = to_nhwc(F.max_pool2d(F.pad(torch_nchw(x), (0, 1, 1, 1), value=-np.inf), (3, 2), stride=2))
    mined = -to_nhwc(F.max_pool2d(F.pad(-torch_nchw(x), (0, 1, 1, 1), value=-np.inf), (3, 2), stride=2))
    assert padded.shape[2:] == (7, 6)
    np.testing.assert_allclose(y[..., 0], maxed[..., 0], atol=1e-6)
    np.testing.assert_allclose(y[..., 1], mined[..., 1], atol=1e-6)
    with pytest.raises(GraphError, match=r"channel_sign must be 2 values"):
        single("max_pool", x.shape[1:], {"pool_size": 2, "channel_sign": [1, 0]})


def test_clip_pad_concat_slice_and_permute():
    x = randn(3, 4, 5, 4)
    b = GraphBuilder((4, 5, 4))
    clip = b.add("clip", "clip", ["input"], attrs={"min_value": -0.5, "max_value": 1.0})
    pad = b.add("pad", "pad", [clip], attrs={"pads": (1, 0, 2, 1)})
    low = b.add("slice_channels", "low", ["input"], attrs={"start": 1, "stop": 3})
    shuffled = b.add("permute_channels", "shuffle", ["input"], attrs={"order": [0, 2, 1, 3]})
    cat = b.add("concat", "cat", [low, shuffled, clip])
    graph = b.build(output=cat)
    _, acts = graph.run(x, capture=True)
    clipped = np.clip(x, -0.5, 1.0)
    np.testing.assert_allclose(acts["pad"], np.pad(clipped, ((0, 0), (1, 0), (2, 1), (0, 0))))
    np.testing.assert_allclose(acts["cat"], np.concatenate([x[..., 1:3], x[..., [0, 2, 1, 3]], clipped], axis=3))
    assert graph.shapes["pad"] == (5, 8, 4) and graph.shapes["cat"] == (4, 5, 10)
    with pytest.raises(GraphError, match=r"node 'c'.*equal height and width"):
        Graph([Node("p", "pad", ("input",), {"pads": (1, 0, 0, 0)}), Node("c", "concat", ("input", "p"))], (4, 5, 4))
    with pytest.raises(GraphError, match=r"node 'n'.*permutation of the 4"):
        single("permute_channels", (4, 5, 4), {"order": [0, 1, 1, 3]})
    with pytest.raises(GraphError, match=r"node 'n'.*channels 2..9"):
        single("slice_channels", (4, 5, 4), {"start": 2, "stop": 9})


def test_unsupported_nodes_are_kept_listed_and_refuse_to_run():
    b = GraphBuilder((4, 4, 3))
    conv = b.add("conv2d", "conv", ["input"], attrs={"padding": "same"},
                 params={"weight": randn(3, 3, 3, 3), "bias": randn(3)})
    swish = b.add("unsupported", "hs", [conv], attrs={"op": "HardSwish", "layer": "features.1",
                                                       "hint": "replace Hardswish with ReLU6, then fine-tune",
                                                       "shape": (4, 4, 3)})
    se = b.add("unsupported", "se", [swish, conv], attrs={"op": "Mul", "layer": "/se/Mul", "shape": (4, 4, 3),
                                                          "hint": "squeeze-excite multiplies two tensors"})
    b.add("global_avg_pool", "gap", [se])
    graph = b.build().simplify()
    problems = graph.problems()
    assert [(p["node"], p["op"], p["layer"]) for p in problems] == [("hs", "HardSwish", "features.1"),
                                                                     ("se", "Mul", "/se/Mul")]
    assert problems[0]["hint"].startswith("replace Hardswish") and problems[1]["shape"] == (4, 4, 3)
    with pytest.raises(GraphError, match=r"node 'hs' \(unsupported\).*HardSwish 'features.1'.*ReLU6"):
        graph.run(randn(1, 4, 4, 3))
    with pytest.raises(GraphError, match=r"node 'n'.*needs attr 'shape'"):
        single("unsupported", (4, 4, 3), {"op": "Sigmoid"})


@pytest.mark.parametrize("size,kernel,stride,pad", [(8, 3, 2, 1), (7, 3, 2, 0), (6, 2, 2, 0), (9, 3, 2, 1),
                                                    (10, 3, 3, 1), (5, 2, 3, 0), (6, 3, 2, 1)])
def test_ceil_mode_pads_match_torch(size, kernel, stride, pad):
    x = randn(2, size, size + 1, 2)
    pads, overhang = ceil_mode_pads((size, size + 1), (kernel, kernel), (stride, stride), (pad,) * 4)
    attrs = {"pool_size": kernel, "strides": stride, "padding": pads}
    expected = F.max_pool2d(torch_nchw(x), kernel, stride, pad, ceil_mode=True)
    np.testing.assert_allclose(single("max_pool", x.shape[1:], attrs).run(x), to_nhwc(expected), atol=1e-6)
    expected = F.avg_pool2d(torch_nchw(x), kernel, stride, pad, ceil_mode=True, count_include_pad=False)
    avg = single("avg_pool", x.shape[1:], {**attrs, "count_include_pad": False})
    np.testing.assert_allclose(avg.run(x), to_nhwc(expected), atol=1e-6)
    expected = F.avg_pool2d(torch_nchw(x), kernel, stride, pad, ceil_mode=True, count_include_pad=True)
    included = single("avg_pool", x.shape[1:], {**attrs, "count_include_pad": True}).run(x)
    assert np.allclose(included, to_nhwc(expected), atol=1e-6) == (not overhang)


# -- the rewrites of simplify, each exact in float -------------------------------------------------------


def _assert_same_output(graph, simple, x, atol=1e-4):
    np.testing.assert_allclose(simple.run(x), graph.run(x), atol=atol)


def test_batch_norm_after_max_pool_folds_into_the_conv_with_min_pools_for_negative_scales():
    b = GraphBuilder((8, 8, 2))
    conv = b.add("conv2d", "conv", ["input"], attrs={"padding": (1, 1, 1, 1), "strides": 1},
                 params={"weight": randn(3, 3, 2, 4), "bias": randn(4)})
    pool = b.add("max_pool", "pool", [conv], attrs={"pool_size": 3, "strides": 2, "padding": (1, 1, 1, 1)})
    bn = b.add("affine", "bn", [pool], params={"scale": [1.5, -0.5, 0.0, -2.0], "offset": randn(4)})
    b.add("relu", "relu", [bn])
    graph = b.build()
    simple = graph.simplify()
    assert [n.op for n in simple] == ["conv2d", "max_pool", "relu"]
    assert simple.node("pool").attrs["channel_sign"] == [1, -1, 1, -1]
    assert simple.node("conv").attrs["folded"] == ["bn"]
    _assert_same_output(graph, simple, randn(3, 8, 8, 2))


@pytest.mark.parametrize("padding,include,ops", [
    ("valid", True, ["conv2d", "avg_pool"]),
    ((1, 1, 1, 1), False, ["conv2d", "avg_pool"]),
    ((1, 1, 1, 1), True, ["conv2d", "avg_pool", "affine"]),   # the border windows hold fewer taps' offset
])
def test_batch_norm_after_avg_pool_folds_where_exact(padding, include, ops):
    b = GraphBuilder((6, 6, 2))
    conv = b.add("conv2d", "conv", ["input"], params={"weight": randn(1, 1, 2, 3), "bias": randn(3)})
    pool = b.add("avg_pool", "pool", [conv], attrs={"pool_size": 3, "strides": 2, "padding": padding,
                                                    "count_include_pad": include})
    b.add("affine", "bn", [pool], params={"scale": [0.5, -1.0, 2.0], "offset": randn(3)})
    graph = b.build()
    simple = graph.simplify()
    assert [n.op for n in simple] == ops
    if "affine" in ops:
        assert np.all(simple.node("bn").params["scale"] == 1)
    _assert_same_output(graph, simple, randn(3, 6, 6, 2))


def test_global_avg_pool_then_batch_norm_folds_into_the_conv():
    b = GraphBuilder((5, 5, 2))
    conv = b.add("conv2d", "conv", ["input"], attrs={"padding": "same"}, params={"weight": randn(3, 3, 2, 3), "bias": randn(3)})
    gap = b.add("global_avg_pool", "gap", [conv])
    b.add("affine", "bn", [gap], params={"scale": randn(3), "offset": randn(3)})
    graph = b.build()
    simple = graph.simplify()
    assert [n.op for n in simple] == ["conv2d", "global_avg_pool"]
    _assert_same_output(graph, simple, randn(3, 5, 5, 2))


@pytest.mark.parametrize("reader", ["dense", "flatten_dense", "conv2d", "depthwise_conv2d", "separable_conv2d",
                                    "padded_conv"])
def test_batch_norm_after_relu_folds_forward_into_unpadded_readers(reader):
    b = GraphBuilder((5, 5, 3))
    relu = b.add("relu", "relu", ["input"])
    bn = b.add("affine", "bn", [relu], params={"scale": RNG.uniform(-2, 2, 3), "offset": randn(3)})
    if reader == "dense":
        b.add("dense", "r", [bn], params={"weight": randn(75, 4), "bias": randn(4)})
    elif reader == "flatten_dense":
        flat = b.add("flatten", "flat", [bn])
        b.add("dense", "r", [flat], params={"weight": randn(75, 4), "bias": randn(4)})
    elif reader in ("conv2d", "padded_conv"):
        padding = "same" if reader == "padded_conv" else "valid"
        b.add("conv2d", "r", [bn], attrs={"padding": padding, "strides": 2},
              params={"weight": randn(3, 3, 3, 4), "bias": randn(4)})
    elif reader == "depthwise_conv2d":
        b.add("depthwise_conv2d", "r", [bn], attrs={"depth_multiplier": 2},
              params={"weight": randn(3, 2, 6), "bias": randn(6)})
    else:
        b.add("separable_conv2d", "r", [bn], attrs={"depth_multiplier": 2},
              params={"depthwise": randn(2, 3, 6), "pointwise": randn(6, 4), "bias": randn(4)})
    graph = b.build()
    simple = graph.simplify()
    expected = {"padded_conv": ["relu", "affine", "conv2d"], "flatten_dense": ["relu", "dense"]}.get(reader,
                                                                                                 ["relu", reader])
    assert [n.op for n in simple] == expected
    _assert_same_output(graph, simple, randn(3, 5, 5, 3))


def test_pads_merge_into_convs_and_into_max_pools_only_after_a_relu():
    b = GraphBuilder((6, 6, 2))
    pad = b.add("pad", "pad", ["input"], attrs={"pads": (1, 0, 0, 1)})
    conv = b.add("conv2d", "conv", [pad], attrs={"strides": 2, "padding": "same"},
                 params={"weight": randn(3, 3, 2, 3), "bias": randn(3)})
    relu = b.add("relu", "relu", [conv])
    pad2 = b.add("pad", "pad2", [relu], attrs={"pads": (1, 1, 1, 1)})
    pool = b.add("max_pool", "pool", [pad2], attrs={"pool_size": 3, "strides": 2})
    pad3 = b.add("pad", "pad3", [conv], attrs={"pads": (1, 1, 1, 1)})     # no relu before it: stays
    pool2 = b.add("max_pool", "pool2", [pad3], attrs={"pool_size": 3, "strides": 2})
    b.add("add", "sum", [pool, pool2])
    graph = b.build()
    simple = graph.simplify()
    assert [n.op for n in simple] == ["conv2d", "relu", "max_pool", "pad", "max_pool", "add"]
    assert simple.node("conv").attrs["padding"] == (2, 1, 1, 2)   # (1, 0, 0, 1) + same (1, 1, 1, 1) on 7x7
    assert simple.node("pool").attrs["padding"] in ("same", (1, 1, 1, 1))
    _assert_same_output(graph, simple, randn(3, 6, 6, 2))
    # a pad that would leave a window with no input tap (a 3x3 kernel over 3 padded rows) stays
    b = GraphBuilder((6, 6, 2))
    pad = b.add("pad", "pad", ["input"], attrs={"pads": (3, 0, 0, 0)})
    b.add("conv2d", "conv", [pad], params={"weight": randn(3, 3, 2, 3), "bias": randn(3)})
    assert [n.op for n in b.build().simplify()] == ["pad", "conv2d"]


def test_depthwise_with_multiplier_then_pointwise_fuses_and_softmax_drop_is_noted():
    b = GraphBuilder((5, 5, 2))
    dw = b.add("depthwise_conv2d", "dw", ["input"], attrs={"padding": "same", "depth_multiplier": 3},
               params={"weight": randn(3, 3, 6), "bias": randn(6)})
    pw = b.add("conv2d", "pw", [dw], params={"weight": randn(1, 1, 6, 4), "bias": randn(4)})
    gap = b.add("global_avg_pool", "gap", [pw])
    b.add("softmax", "probs", [gap])
    graph = b.build()
    simple = graph.simplify()
    assert [n.op for n in simple] == ["separable_conv2d", "global_avg_pool"]
    assert simple.node("pw").attrs["depth_multiplier"] == 3
    assert simple.metadata["final_softmax_dropped"] == "probs"
    x = randn(3, 5, 5, 2)
    np.testing.assert_allclose(simple.run(x), graph.run(x, capture=True)[1]["gap"], atol=1e-4)


def test_clip_with_zero_min_is_a_relu_and_clip_and_affine_chains_merge():
    b = GraphBuilder((4, 4, 2))
    a1 = b.add("affine", "a1", ["input"], params={"scale": [2.0, -1.0], "offset": [0.5, 0.0]})
    a2 = b.add("affine", "a2", [a1], params={"scale": [0.5, 3.0], "offset": [-1.0, 1.0]})
    clip = b.add("clip", "c", [a2], attrs={"min_value": 0.0, "max_value": 6.0})
    b.add("clip", "c2", [clip], attrs={"min_value": -1.0, "max_value": None})
    graph = b.build()
    simple = graph.simplify()
    assert [n.op for n in simple] == ["affine", "relu"]          # clip(-1, None) of relu6 is relu6
    assert simple.node("c2").attrs["max_value"] == 6.0
    _assert_same_output(graph, simple, randn(3, 4, 4, 2))

    b = GraphBuilder((4, 4, 2))                                   # tf2onnx's relu6: Relu, Min(6), Max(0)
    relu = b.add("relu", "r", ["input"])
    low = b.add("clip", "min", [relu], attrs={"min_value": None, "max_value": 6.0})
    b.add("clip", "max", [low], attrs={"min_value": 0.0, "max_value": None})
    graph = b.build()
    simple = graph.simplify()
    assert [(n.op, n.attrs["max_value"]) for n in simple] == [("relu", 6.0)]
    _assert_same_output(graph, simple, randn(3, 4, 4, 2) * 5)
