"""The torch importer on real nn.Modules: the imported float Graph matches torch's own output within
1e-4 (NCHW in torch, HWC in the Graph); unsupported layers fail naming the layer."""

import numpy as np
import pytest
import torch
from torch import nn

import edgesnn.plugins
from edgesnn.graph import GraphError

RNG = np.random.default_rng(11)


@pytest.fixture(scope="module")
def importer():
    return edgesnn.plugins.get_importer("torch")


class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.pointwise = nn.Conv2d(channels, channels, 1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.pointwise(self.bn1(self.depthwise(x)))))


class Net(nn.Module):
    """Every layer the issue lists: Conv2d (groups), Linear, BatchNorm2d, ReLU/ReLU6/Hardtanh,
    MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), Flatten, Dropout, residual add."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.MaxPool2d(2),
            Block(8),
            nn.Conv2d(8, 12, 3, padding=1, groups=4), nn.ReLU6(),
            nn.AvgPool2d(2),
            nn.Conv2d(12, 16, 3), nn.Hardtanh(0.0, 4.0),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(16, 10))

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))


def randomized(module):
    torch.manual_seed(5)
    with torch.no_grad():
        for bn in [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return module


def torch_output(module, x_nchw):
    with torch.no_grad():
        return module.eval()(torch.from_numpy(x_nchw)).numpy()


def test_net_matches_torch(importer):
    net = randomized(Net()).train()
    graph = importer.load(net, example_input=torch.zeros(1, 1, 16, 16))
    assert net.training, "the importer must restore the module's training mode"
    assert graph.input_shape == (16, 16, 1) and graph.metadata["source_format"] == "torch"
    x = RNG.normal(size=(6, 1, 16, 16)).astype(np.float32)
    expected = torch_output(net, x)
    np.testing.assert_allclose(graph.run(x.transpose(0, 2, 3, 1))[:, 0, 0], expected, atol=1e-4)
    simple = graph.simplify()
    assert "separable_conv2d" in [node.op for node in simple] and "add" in [node.op for node in simple]
    np.testing.assert_allclose(simple.run(x.transpose(0, 2, 3, 1))[:, 0, 0], expected, atol=1e-4)


def test_flatten_before_linear_and_input_shape_option(importer):
    net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4 * 6, 7), nn.Softmax(dim=1))
    torch.manual_seed(6)
    graph = importer.load(net, input_shape=(6, 8, 3))
    x = RNG.normal(size=(4, 3, 6, 8)).astype(np.float32)
    np.testing.assert_allclose(graph.run(x.transpose(0, 2, 3, 1))[:, 0, 0], torch_output(net, x), atol=1e-4)
    assert importer.can_import(net) and not importer.can_import("net.onnx")
    assert "torch" in edgesnn.plugins.importers()


class MeanPooled(nn.Module):
    """Global pooling written as tensor means (ReduceMean, Squeeze in ONNX) instead of modules."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3)
        self.fc = nn.Linear(6, 3)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        squeezed = x.mean((2, 3), keepdim=True).squeeze(-1).squeeze(-1)
        return self.fc(x.mean((2, 3))) + self.fc2(squeezed)


def test_tensor_means_as_global_pooling(importer):
    torch.manual_seed(8)
    net = MeanPooled()
    graph = importer.load(net, input_shape=(7, 6, 2))
    x = RNG.normal(size=(3, 2, 7, 6)).astype(np.float32)
    np.testing.assert_allclose(graph.run(x.transpose(0, 2, 3, 1))[:, 0, 0], torch_output(net, x), atol=1e-4)
    assert [node.op for node in graph].count("global_avg_pool") == 2


def test_torch_stride2_padding1_on_even_input_keeps_its_explicit_pads(importer):
    net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.ReLU())
    graph = importer.load(net, input_shape=(8, 8, 1))
    x = RNG.normal(size=(2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(graph.run(x.transpose(0, 2, 3, 1)), torch_output(net, x).transpose(0, 2, 3, 1),
                               atol=1e-5)
    simple = graph.simplify()   # TensorFlow's same would pad the bottom row, torch pads the top one
    assert simple.nodes[0].attrs["padding"] == (1, 1, 1, 1)
    np.testing.assert_allclose(simple.run(x.transpose(0, 2, 3, 1)), graph.run(x.transpose(0, 2, 3, 1)), atol=1e-6)


def test_unsupported_layer_names_it(importer):
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sigmoid())
    graph = importer.load(net, input_shape=(5, 5, 1))
    [problem] = graph.problems()
    assert (problem["op"], problem["layer"], problem["shape"]) == ("Sigmoid", "/1/Sigmoid", (3, 3, 2))


def test_bad_arguments(importer):
    net = nn.Sequential(nn.Conv2d(1, 2, 3))
    with pytest.raises(ValueError, match=r"example_input=torch.zeros\(1, C, H, W\)"):
        importer.load(net)
    with pytest.raises(ValueError, match=r"input_shape must be \(H, W, C\)"):
        importer.load(net, input_shape=(5, 5, 1, 1))
    with pytest.raises(GraphError, match=r"ONNX export failed"):
        importer.load(net, input_shape=(5, 5, 3))   # 3 channels into a 1-channel conv
    with pytest.raises(TypeError, match=r"torch.nn.Module"):
        importer.load("model.pt", input_shape=(5, 5, 1))


# -- the patterns users write (issue 9): each imported graph, and its simplified form, match torch ------


def _check(importer, net, shape_nchw, *, simplified=True, atol=1e-4):
    x = RNG.normal(size=(3, *shape_nchw)).astype(np.float32)
    graph = importer.load(net, example_input=torch.zeros(1, *shape_nchw))
    expected = torch_output(net, x)
    to_hwc = {4: lambda a: a.transpose(0, 2, 3, 1), 3: lambda a: a.transpose(0, 2, 1)[:, None],
              2: lambda a: a[:, None, None]}[x.ndim]
    out_hwc = {4: lambda a: a.transpose(0, 2, 3, 1), 3: lambda a: a.transpose(0, 2, 1)[:, None],
               2: lambda a: a[:, None, None]}[expected.ndim](expected)
    np.testing.assert_allclose(graph.run(to_hwc(x)), out_hwc, atol=atol)
    if simplified:
        np.testing.assert_allclose(graph.simplify().run(to_hwc(x)), out_hwc, atol=atol)
    return graph


class ResNetStem(nn.Module):
    """ResNet's stem (7x7/2 pad 3, BN, ReLU, MaxPool 3/2 pad 1) and a strided basic block with a 1x1
    downsample: symmetric pads on strided convs of even inputs, residual add -> relu."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.conv2, self.bn2 = nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16)
        self.conv3, self.bn3 = nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        self.down = nn.Sequential(nn.Conv2d(8, 16, 1, 2, bias=False), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        y = self.bn3(self.conv3(torch.relu(self.bn2(self.conv2(x)))))
        x = torch.relu(y + self.down(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_resnet_stem_with_torch_paddings(importer):
    graph = _check(importer, randomized(ResNetStem()), (3, 32, 32))
    simple = graph.simplify()
    assert simple.node("/conv1/Conv").attrs["padding"] == (3, 3, 3, 3)
    assert simple.node("/pool/MaxPool").attrs["padding"] == (1, 1, 1, 1)
    assert "affine" not in [n.op for n in simple]


class ShuffleBlock(nn.Module):
    """ShuffleNet v2's unit: chunk, a depthwise (multiplier 2) branch, cat, channel shuffle."""

    def __init__(self):
        super().__init__()
        self.branch = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.ReLU(),
                                    nn.Conv2d(4, 8, 3, 1, 1, groups=4), nn.BatchNorm2d(8),
                                    nn.Conv2d(8, 4, 1), nn.ReLU())

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        x = torch.cat((a, self.branch(b)), dim=1)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return x[:, 2:7]


def test_shuffle_block_chunk_cat_shuffle_and_slice(importer):
    graph = _check(importer, randomized(ShuffleBlock()), (8, 6, 6))
    ops = [n.op for n in graph.simplify()]
    assert ops.count("slice_channels") == 3 and "concat" in ops and "permute_channels" in ops
    assert "separable_conv2d" in ops and graph.simplify().node("/branch/branch.5/Conv").attrs["depth_multiplier"] == 2


class Audio1d(nn.Module):
    """Conv1d over mel frames: (N, 40, 49) -> Conv1d, BatchNorm1d, MaxPool1d, AvgPool1d, mean, Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(10, 12, 5, stride=2, padding=2)
        self.bn = nn.BatchNorm1d(12)
        self.dw = nn.Conv1d(12, 12, 3, padding=1, groups=12)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        x = nn.functional.max_pool1d(torch.relu(self.bn(self.conv(x))), 3, 2, 1)
        x = nn.functional.avg_pool1d(nn.functional.relu6(self.dw(x)), 2)
        return self.fc(x.mean(2))


def test_conv1d_over_a_3d_input_runs_as_height_one_2d_ops(importer):
    graph = _check(importer, randomized(Audio1d()), (10, 49))
    assert graph.input_shape == (1, 49, 10) and graph.metadata["input_layout"] == "NCL"
    assert graph.node("/conv/Conv").attrs["padding"] == (0, 0, 2, 2)


class CeilAndPads(nn.Module):
    """ceil_mode pools, F.pad before a conv, Hardtanh(-1, 1), mean with keepdim, a depthwise multiplier."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, groups=3)
        self.conv2 = nn.Conv2d(6, 4, 3)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv(nn.functional.pad(x, (1, 0, 2, 1)))), 3, 2,
                                     ceil_mode=True)
        x = nn.functional.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False)
        x = nn.functional.hardtanh(self.conv2(nn.functional.pad(x, (1, 1, 1, 1))), -1.0, 1.0)
        return x.mean((2, 3), keepdim=True)


def test_ceil_mode_pads_and_clips(importer):
    graph = _check(importer, CeilAndPads(), (3, 12, 11))
    simple = graph.simplify()
    assert [n.op for n in simple] == ["depthwise_conv2d", "relu", "max_pool", "avg_pool", "conv2d", "clip",
                                      "global_avg_pool"]
    assert simple.node("/conv/Conv").attrs["padding"] == (2, 1, 1, 0)


def test_ceil_mode_avg_pool_counting_pads_past_the_input_is_unsupported(importer):
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=True))
    graph = importer.load(net, input_shape=(7, 7, 1))
    [problem] = graph.problems()
    assert problem["op"] == "AveragePool" and "ceil_mode=False or count_include_pad=False" in problem["hint"]


def test_hardswish_squeeze_excite_are_all_listed(importer):
    class SE(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            x = nn.functional.hardswish(self.conv(x))
            return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))

    graph = importer.load(SE(), input_shape=(8, 8, 3))
    assert [p["op"] for p in graph.problems()] == ["HardSwish", "Sigmoid", "Mul"]
    assert "squeeze-excite" in graph.problems()[2]["hint"]


class PoolThenNorm(nn.Module):
    """MaxPool2d(3, 2, 1) then BatchNorm2d with negative and zero scales, AvgPool2d(3, 2, 1) (counting
    its padding, torch's default) then BatchNorm2d: the orders torch users write after a stem."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 3 * 3, 4)
        with torch.no_grad():
            self.bn1.weight.copy_(torch.tensor([1.2, -0.7, 0.0, -1.5]))
            self.bn2.weight.copy_(torch.tensor([-0.8, 1.1, 0.6]))

    def forward(self, x):
        x = torch.relu(self.bn1(nn.functional.max_pool2d(self.conv1(x), 3, 2, 1)))
        x = torch.relu(self.bn2(nn.functional.avg_pool2d(self.conv2(x), 3, 2, 1)))
        return self.fc(x.flatten(1))


def test_batch_norm_after_pools_with_negative_scales_matches_torch(importer):
    """Graph and simplified graph equal torch; the 8/8 integer model keeps >= 25 dB of torch's output, the
    negative channels of the max pool as an integer min pool."""
    import edgesnn as es

    net = randomized(PoolThenNorm())
    with torch.no_grad():   # randomized() drew the scales too: the signs under test again
        net.bn1.weight.copy_(torch.tensor([1.2, -0.7, 0.0, -1.5]))
        net.bn2.weight.copy_(torch.tensor([-0.8, 1.1, 0.6]))
    graph = _check(importer, net, (2, 12, 12))
    assert graph.simplify().node("/MaxPool").attrs["channel_sign"] == [1, -1, 1, -1]
    x = np.random.default_rng(6).integers(0, 256, (64, 12, 12, 2)).astype(np.uint8)
    model = es.convert(net, samples=x, input_scaling=(255, 0), progress=False)
    assert [int(s) for s in model.layers[0].pool_sign] == [1, -1, 1, -1]
    expected = torch_output(net, (x.transpose(0, 3, 1, 2) / 255.0).astype(np.float32))
    got = model.forward(x, device="reference")[:, 0, 0] * np.asarray(model.metadata["output_scale"])
    # the zoo's measure: over the batch and the channels of the (one) output position
    snr = 10 * np.log10(np.sum(expected.astype(np.float64) ** 2) / np.sum((got - expected) ** 2))
    assert snr >= 25, snr


def test_a_constant_channel_keeps_its_value():
    """A conv whose channels 1 and 2 have zero weights and biases 0.2 and 3.3: after the ReLU they are
    constants, which the integer model must give back like any other value."""
    import edgesnn as es

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU()).eval()
    with torch.no_grad():
        net[0].weight[1:] = 0.0
        net[0].bias.copy_(torch.tensor([0.1, 0.2, 3.3]))
    x = np.random.default_rng(5).integers(0, 256, (16, 6, 6, 2)).astype(np.uint8)
    model = es.convert(net, samples=x, input_scaling=(255, 0), progress=False, on_low_fidelity="record")
    expected = torch_output(net, (x.transpose(0, 3, 1, 2) / 255.0).astype(np.float32)).transpose(0, 2, 3, 1)
    got = model.forward(x, device="reference") * np.asarray(model.metadata["output_scale"])
    np.testing.assert_allclose(got[..., 1:], expected[..., 1:], rtol=0.01)
    # convert.quantize_weights gives such a channel a scale for its bias: +-4096 potential units exactly
    np.testing.assert_array_equal(model.layers[0].bias[1:], [4096, 4096])


def test_a_layer_without_weights_outputs_its_biases():
    """A head whose weights are all zero outputs its biases; the output layer has one scale for all its
    channels (its potentials are compared by argmax), set by the largest bias."""
    import edgesnn as es

    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    with torch.no_grad():
        net[3].weight.zero_()
        net[3].bias.copy_(torch.tensor([0.5, -0.25, 2.0]))
    x = np.random.default_rng(6).integers(0, 256, (8, 6, 6, 1)).astype(np.uint8)
    model = es.convert(net, samples=x, input_scaling=(255, 0), progress=False, on_low_fidelity="record")
    np.testing.assert_array_equal(model.layers[-1].bias, [1024, -512, 4096])
    got = model.forward(x, device="reference")[:, 0, 0] * np.asarray(model.metadata["output_scale"])
    np.testing.assert_allclose(got, np.tile([0.5, -0.25, 2.0], (8, 1)), rtol=1e-6)
