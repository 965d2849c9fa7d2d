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
        importer.load(net, input_shape=(5, 5))
    with pytest.raises(GraphError, match=r"ONNX export failed"):
        importer.load(net, input_shape=(5, 5, 3))   # 3 channels into a 1-channel conv
    with pytest.raises(TypeError, match=r"torch.nn.Module"):
        importer.load("model.pt", input_shape=(5, 5, 1))
