"""NIR import and export (plugins/edgesnn_nir): files written by the real `nir` package, converted and run."""

import re

import numpy as np
import pytest

import edgesnn as es

nir = pytest.importorskip("nir")
DT = 1e-4


def write(tmp_path, nodes, edges, name="net.nir"):
    path = tmp_path / name
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    return path


def chain(nodes: dict) -> list:
    names = list(nodes)
    return list(zip(names, names[1:]))


def lif_net(tmp_path, beta=0.75, threshold=9.5):
    tau = DT / (1 - beta)
    w = np.array([[1.0], [2.0]])                       # 1 input -> 2 neurons
    nodes = {"input": nir.Input(input_type={"input": np.array([1])}),
             "fc": nir.Affine(weight=w, bias=np.zeros(2)),
             "lif": nir.LIF(tau=np.full(2, tau), r=np.full(2, tau / DT), v_leak=np.zeros(2),
                            v_threshold=np.full(2, threshold), v_reset=np.zeros(2)),
             "out": nir.Linear(weight=np.eye(2)),
             "acc": nir.I(r=np.full(2, 1 / DT)),
             "output": nir.Output(output_type={"output": np.array([2])})}
    return write(tmp_path, nodes, chain(nodes))


def test_lif_file_converts_to_the_euler_dynamics(tmp_path):
    model = es.convert(lif_net(tmp_path), None, input_bits=8)
    lif = model.layers[0]
    assert (lif.neuron, lif.reset, lif.decay_shift) == ("lif", "zero", 16)
    np.testing.assert_array_equal(lif.decay_multiplier, [3 << 14, 3 << 14])
    np.testing.assert_array_equal(lif.threshold, [10, 10])             # v > 9.5 on integers: v >= 10
    # by hand, input 4 each step, decay 3/4, reset to zero: ch0 (w 1): 4, 7, 9, 11 spike -> 0, 4, 7, 9, 11 spike
    # ch1 (w 2): 8, 14 spike -> 0, 8, 14 spike ...: spikes at t1, t3, t5, t7
    x5 = np.full((1, 8, 1, 1, 1), 4, np.uint8)
    np.testing.assert_array_equal(model.forward(x5, device="reference")[0, 0, 0], [2, 4])


def test_if_and_flatten_of_chw_input(tmp_path):
    w = np.arange(12, dtype=float).reshape(1, 12) - 6     # one neuron over a (3, 2, 2) input
    nodes = {"input": nir.Input(input_type={"input": np.array([3, 2, 2])}),
             "flat": nir.Flatten(input_type={"input": np.array([3, 2, 2])}, start_dim=0, end_dim=-1),
             "fc": nir.Linear(weight=w),
             "scale": nir.Scale(scale=np.array([0.5])),
             "if": nir.IF(r=np.array([1 / DT]), v_threshold=np.array([2.0]), v_reset=np.array([0.0])),
             "fc2": nir.Linear(weight=np.ones((1, 1))),
             "acc": nir.I(r=np.array([1 / DT])),
             "output": nir.Output(output_type={"output": np.array([1])})}
    model = es.convert(write(tmp_path, nodes, chain(nodes)), None, input_bits=1)
    assert model.input_shape == (2, 2, 3) and model.layers[0].neuron == "if"
    rng = np.random.default_rng(0)
    chw = rng.integers(0, 2, (5, 3, 3, 2, 2))            # (N, T, C, H, W) spikes
    v, spikes = np.zeros(5), np.zeros(5)                  # the NIR IF, by hand: v += 0.5 * w.x; fire v > 2
    for t in range(3):
        v += 0.5 * chw[:, t].reshape(5, -1) @ w[0]
        fired = v > 2.0
        spikes += fired
        v[fired] = 0.0
    got = model.forward(chw.transpose(0, 1, 3, 4, 2).astype(np.uint8), device="reference")
    np.testing.assert_array_equal(got.reshape(5), spikes)


@pytest.mark.parametrize("node, words", [
    (lambda: nir.CubaLIF(tau_syn=np.ones(2), tau_mem=np.ones(2), r=np.ones(2), v_leak=np.zeros(2),
                         v_threshold=np.ones(2)), "'neuron' (CubaLIF) cannot be converted: its synaptic current"),
    (lambda: nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
     "'neuron' (SumPool2d) cannot be converted"),
])
def test_unmapped_nodes_are_refused_by_name(tmp_path, node, words):
    nodes = {"input": nir.Input(input_type={"input": np.array([1])}),
             "fc": nir.Affine(weight=np.ones((2, 1)), bias=np.zeros(2)), "neuron": node(),
             "output": nir.Output(output_type={"output": np.array([2])})}
    with pytest.raises(ValueError, match=re.escape(words)):
        es.convert(write(tmp_path, nodes, chain(nodes)), None)


def test_export_read_import_round_trip_is_equal(tmp_path):
    model = es.convert(lif_net(tmp_path), None, input_bits=8)
    model.to_nir(tmp_path / "back.nir")
    graph = nir.read(tmp_path / "back.nir")
    assert {type(n).__name__ for n in graph.nodes.values()} == {"Input", "Affine", "LIF", "I", "Output"}
    again = es.convert(tmp_path / "back.nir", None, input_bits=8)
    from edgesnn import format as F

    assert F.write_model(again) == F.write_model(model)            # every integer, field and metadata equal
    x5 = np.random.default_rng(1).integers(0, 16, (4, 10, 1, 1, 1)).astype(np.uint8)
    np.testing.assert_array_equal(model.forward(x5, device="reference"), again.forward(x5, device="reference"))


def test_export_warns_that_a_subtractive_reset_does_not_survive(tmp_path):
    from edgesnn import layers as L

    model = es.Model([L.Dense(name="h", weights=np.ones((1, 2), int), neuron="lif", threshold=3, leak_shift=2),
                      L.Dense(name="o", weights=np.ones((2, 2), int), neuron="none")], input_shape=(1, 1, 1))
    with pytest.warns(UserWarning, match="subtractive reset"):
        model.to_nir(tmp_path / "m.nir")


def test_cli_export_nir(tmp_path):
    from edgesnn import cli

    model = es.convert(lif_net(tmp_path), None, input_bits=8)
    model.save(tmp_path / "m.esnn")
    assert cli.main(["export", str(tmp_path / "m.esnn"), "--nir", str(tmp_path / "m.nir")]) == 0
    again = es.convert(tmp_path / "m.nir", None, input_bits=8)
    assert [layer.neuron for layer in again.layers] == ["lif", "none"]
