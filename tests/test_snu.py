"""edgesnn.torch.SNU: its forward is the SNU recursion, and its 8-bit conversion is the engine's lif with decay,
reset to zero and floor 0, spike for spike."""

import numpy as np
import pytest

import edgesnn as es

torch = pytest.importorskip("torch")
from edgesnn.torch import SNU, to_model  # noqa: E402


def test_forward_is_the_snu_recursion_by_hand():
    snu = SNU(2, 1, decay=0.5, threshold=1.0).double()
    with torch.no_grad():
        snu.linear.weight[:] = torch.tensor([[0.75, -1.0]])
        snu.linear.bias[:] = 0.0
    x = torch.tensor([[[1, 0], [1, 0], [1, 0], [0, 1], [0, 0], [1, 0]]], dtype=torch.float64)
    # s_t = relu(W x_t + 0.5 s_{t-1} (1 - y_{t-1})), y_t = [s_t >= 1]
    # t0: 0.75 -> y 0; t1: 0.75 + 0.375 = 1.125 -> y 1; t2: 0.75 + 0 (reset) = 0.75; t3: relu(-1 + 0.375) = 0
    # t4: 0; t5: 0.75
    np.testing.assert_array_equal(snu(x)[0, :, 0].detach().numpy(), [0, 1, 0, 0, 0, 0])
    snu.threshold = 0.75
    np.testing.assert_array_equal(snu(x)[0, :, 0].detach().numpy(), [1, 1, 1, 0, 0, 1])


def random_net(seed: int):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(SNU(30, 24, decay=0.8, threshold=0.4), SNU(24, 16, decay=0.9, threshold=0.3),
                              SNU(16, 6, decay=0.6, threshold=0.3)).double()
    with torch.no_grad():
        for layer in net:                    # excitatory enough that every layer spikes
            layer.linear.weight.uniform_(-0.2, 0.25)
    x = (torch.rand(40, 15, 30, dtype=torch.float64) < 0.35).double()
    return net, x


def per_timestep_output(model, x5, device="reference"):
    """The last layer's spikes at every timestep: its counts after every timestep, differenced."""
    counts = model.forward(x5, timesteps=x5.shape[1], per_timestep=True, device=device)
    return np.diff(counts, axis=1, prepend=0).reshape(len(x5), x5.shape[1], -1)


@pytest.mark.parametrize("device", ["reference", "cpu"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_integer_form_is_the_converted_model_spike_for_spike(seed, device):
    net, x = random_net(seed)
    model = to_model(net)
    assert [(layer.neuron, layer.reset, layer.membrane_floor, layer.decay_shift) for layer in model.layers] == \
        [("lif", "zero", 0, 16)] * 3
    for layer in net:
        layer.integer = True
    theirs = net(x).numpy()
    for layer in net:
        layer.integer = False
    ours = per_timestep_output(model, x.numpy().astype(np.uint8).reshape(40, 15, 1, 1, 30), device)
    assert 0.1 < theirs.mean() < 0.9                                   # the network spikes, not always
    np.testing.assert_array_equal(ours, theirs)


def test_the_float_forward_and_the_8_bit_model_agree_on_spikes():
    agreement = []
    for seed in range(3):
        net, x = random_net(seed)
        float_spikes = net(x).detach().numpy()
        ours = per_timestep_output(to_model(net), x.numpy().astype(np.uint8).reshape(40, 15, 1, 1, 30))
        agreement.append(np.mean(ours == float_spikes))
    assert min(agreement) > 0.95, agreement   # the 8-bit rounding of weights and membrane, carried on by the resets


def test_surrogate_gradient_trains():
    net, x = random_net(0)
    net = net.float()
    x = x.float()
    target = torch.zeros(40, dtype=torch.long)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.cross_entropy(net(x[:10]).mean(1) * 10, target[:10])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_bad_arguments_and_networks_are_refused():
    with pytest.raises(ValueError, match="decay must be in"):
        SNU(2, 2, decay=1.5)
    with pytest.raises(ValueError, match=r"input must be \(N, T, 3\)"):
        SNU(3, 2)(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="an SNU of 4 outputs feeds one of 5 inputs"):
        to_model(torch.nn.Sequential(SNU(3, 4), SNU(5, 2)))
    with pytest.raises(ValueError, match="Conv1d"):
        to_model(torch.nn.Sequential(SNU(3, 4), torch.nn.Conv1d(4, 4, 1)))


def test_the_converted_model_saves_and_loads(tmp_path):
    net, x = random_net(3)
    model = to_model(net, labels=list("abcdef"), timesteps=15)
    model.save(tmp_path / "snu.esnn")
    again = es.Model.load(tmp_path / "snu.esnn")
    x5 = x.numpy().astype(np.uint8).reshape(40, 15, 1, 1, 30)
    np.testing.assert_array_equal(again.forward(x5, device="reference"), model.forward(x5, device="reference"))
