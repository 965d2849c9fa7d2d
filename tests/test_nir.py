"""NIR import and export (plugins/edgesnn_nir): files written by the real `nir` package, converted and run."""

import re

import numpy as np
import pytest

import edgesnn as es

nir = pytest.importorskip("nir")
import edgesnn_nir  # noqa: E402  (needs nir)
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
    (lambda: nir.CubaLIF(tau_syn=np.full(2, 2 * DT), tau_mem=np.full(2, 4 * DT), r=np.full(2, 4.0),
                         v_leak=np.zeros(2), v_threshold=np.ones(2)),
     "'neuron' (CubaLIF) cannot be converted: its synaptic current carries over between timesteps (alpha = "
     "1 - dt/tau_syn = 0.5"),
    (lambda: nir.CubaLI(tau_syn=np.ones(2), tau_mem=np.ones(2), r=np.ones(2), v_leak=np.zeros(2)),
     "'neuron' (CubaLI) cannot be converted: its synaptic current"),
    (lambda: nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
     "'neuron' (SumPool2d): a pool is mapped only between a convolution and its neuron"),
])
def test_unmapped_nodes_are_refused_by_name(tmp_path, node, words):
    nodes = {"input": nir.Input(input_type={"input": np.array([1])}),
             "fc": nir.Affine(weight=np.ones((2, 1)), bias=np.zeros(2)), "neuron": node(),
             "output": nir.Output(output_type={"output": np.array([2])})}
    with pytest.raises(es.ConversionError, match=re.escape(words)):
        es.convert(write(tmp_path, nodes, chain(nodes)), None)


# -- convolutions and pools: a float forward-Euler simulation of the NIR file, by hand, against the engine --

def conv_chw(x, weight, bias, stride, pad):
    """NIR Conv2d of x (N, C, H, W) (zero padding (ph, pw), no dilation, groups 1), float64."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    win = np.lib.stride_tricks.sliding_window_view(xp, weight.shape[2:], axis=(2, 3))[:, :, ::stride[0], ::stride[1]]
    return np.einsum("ncyxhw,ochw->noyx", win, weight) + bias[None, :, None, None]


def window_sum(x, size, stride):
    win = np.lib.stride_tricks.sliding_window_view(x, size, axis=(2, 3))[:, :, ::stride[0], ::stride[1]]
    return win.sum(axis=(-2, -1))


def euler_lif(drives, beta, threshold, rounded=True):
    """Spikes (N, T, ...) of NIR LIF neurons (r = tau / dt: input gain 1) on integer input currents (N, T, ...),
    reset to 0; the decayed membrane rounded half up to an integer, as the engine states (docs/semantics.md),
    or (rounded=False) kept float, as NIR means it."""
    v, out = np.zeros(drives[:, 0].shape), []
    for t in range(drives.shape[1]):
        v = (np.floor(beta * v + 0.5) if rounded else beta * v) + drives[:, t]
        fired = v > threshold
        v = np.where(fired, 0.0, v)
        out.append(fired.astype(float))
    return np.stack(out, 1)


def lif(shape, beta, threshold):
    tau = DT / (1 - beta)
    return nir.LIF(tau=np.full(shape, tau), r=np.full(shape, tau / DT), v_leak=np.zeros(shape),
                   v_threshold=np.full(shape, threshold), v_reset=np.zeros(shape))


@pytest.mark.parametrize("pool", ["AvgPool2d", "SumPool2d"])
def test_conv_pool_lif_flatten_dense_matches_the_euler_simulation(tmp_path, pool):
    rng = np.random.default_rng(3)
    w1 = rng.integers(-3, 4, (4, 2, 3, 3)) * 4.0          # multiples of 4: AvgPool's 1/4 keeps them integers
    b1 = rng.integers(-2, 3, 4) * 4.0
    w2 = rng.integers(-5, 6, (3, 4 * 2 * 2)).astype(float)
    pooled = {"AvgPool2d": nir.AvgPool2d, "SumPool2d": nir.SumPool2d}[pool](
        kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    nodes = {"input": nir.Input(input_type={"input": np.array([2, 8, 8])}),
             "conv": nir.Conv2d(input_shape=(8, 8), weight=w1, stride=(2, 2), padding=(1, 1), dilation=(1, 1),
                                groups=1, bias=b1),                    # 8x8 -> 4x4, pooled to 2x2
             "pool": pooled, "lif1": lif((4, 2, 2), 0.75, 6.5),   # per-neuron (C, H, W) parameters, as snnTorch writes
             "flat": nir.Flatten(input_type={"input": np.array([4, 2, 2])}, start_dim=0, end_dim=-1),
             "fc": nir.Affine(weight=w2, bias=np.array([1.0, 0.0, -1.0])), "lif2": lif(3, 0.5, 4.5),
             "output": nir.Output(output_type={"output": np.array([3])})}
    path = write(tmp_path, nodes, chain(nodes))
    model = es.convert(path, None, input_bits=1)
    assert [layer.kind for layer in model.layers] == ["conv2d", "dense"]
    assert model.layers[0].pool == "avg" and model.layers[0].input_shapes[0] == (8, 8, 2)
    x = (rng.random((6, 10, 2, 8, 8)) < 0.3).astype(float)             # (N, T, C, H, W) spikes
    n, t = x.shape[:2]
    drive = conv_chw(x.reshape(n * t, 2, 8, 8), w1, b1, (2, 2), (1, 1))
    drive = window_sum(drive, (2, 2), (2, 2)) / (4 if pool == "AvgPool2d" else 1)
    s1 = euler_lif(drive.reshape(n, t, 4, 2, 2), 0.75, 6.5)
    s2 = euler_lif(s1.reshape(n, t, 16) @ w2.T + [1.0, 0.0, -1.0], 0.5, 4.5)
    got = model.forward(x.transpose(0, 1, 3, 4, 2).astype(np.uint8), device="reference").reshape(n, 3)
    np.testing.assert_array_equal(got, s2.sum(1))
    assert s2.sum() > 0 and s1.sum() > 0
    # the float simulation of the file (edgesnn_nir.simulate): the same graph, the membrane never rounded
    f1 = euler_lif(drive.reshape(n, t, 4, 2, 2), 0.75, 6.5, rounded=False)
    f2 = euler_lif(f1.reshape(n, t, 16) @ w2.T + [1.0, 0.0, -1.0], 0.5, 4.5, rounded=False)
    simulated = edgesnn_nir.simulate(path, x.transpose(0, 1, 3, 4, 2))
    np.testing.assert_array_equal(simulated.reshape(n, 3), f2.sum(1))
    assert np.any(f1 != s1)                              # the rounding of the membrane does show
    rounded_weights = edgesnn_nir.simulate(path, x.transpose(0, 1, 3, 4, 2), weight_bits=8)
    np.testing.assert_array_equal(rounded_weights, simulated)   # integer weights in range: nothing to round


def test_conv1d_scale_and_cubalif_without_synaptic_memory(tmp_path):
    rng = np.random.default_rng(4)
    w = rng.integers(-4, 5, (3, 2, 3)).astype(float)      # (Cout, Cin, K) over a (2, 10) input
    nodes = {"input": nir.Input(input_type={"input": np.array([2, 10])}),
             "conv": nir.Conv1d(input_shape=10, weight=w, stride=1, padding=1, dilation=1, groups=1,
                                bias=np.zeros(3)),
             "scale": nir.Scale(scale=np.repeat([[1.0], [2.0], [0.5]], 10, axis=1)),   # per channel, over L
             # tau_syn == dt: the current I_t = w_in * x_t holds nothing over; tau_mem 2 dt: beta 0.5, gain r dt/tau
             "cuba": nir.CubaLIF(tau_syn=np.full((3, 10), DT), tau_mem=np.full((3, 10), 2 * DT),
                                 r=np.full((3, 10), 2.0), v_leak=np.zeros((3, 10)), v_threshold=np.full((3, 10), 3.5),
                                 w_in=np.full((3, 10), 2.0)),
             "flat": nir.Flatten(input_type={"input": np.array([3, 10])}, start_dim=0, end_dim=-1),
             "fc": nir.Linear(weight=np.ones((1, 30))), "acc": nir.I(r=np.array([1 / DT])),
             "output": nir.Output(output_type={"output": np.array([1])})}
    model = es.convert(write(tmp_path, nodes, chain(nodes)), None, input_bits=1)
    assert model.input_shape == (1, 10, 2) and model.layers[0].kernel.startswith("1x3")
    x = (rng.random((5, 6, 2, 10)) < 0.5).astype(float)
    drive = np.stack([sum(np.convolve(np.pad(x[n, t, ci], 1), w[co, ci][::-1], "valid") for ci in range(2))
                      for n in range(5) for t in range(6) for co in range(3)]).reshape(5, 6, 3, 10)
    gain = 2.0 * (2.0 * DT / (2 * DT))                   # w_in times r dt / tau_mem
    drive = drive * np.array([1.0, 2.0, 0.5])[None, None, :, None] * gain
    spikes = euler_lif(drive, 0.5, 3.5)
    assert 0.1 < spikes.mean() < 0.9
    got = model.forward(x.transpose(0, 1, 3, 2)[:, :, None].astype(np.uint8), device="reference").reshape(5)
    np.testing.assert_array_equal(got, spikes.reshape(5, 6, -1).sum(axis=(1, 2)))


def test_a_pool_after_a_neuron_is_refused_by_name(tmp_path):
    nodes = {"input": nir.Input(input_type={"input": np.array([1, 4, 4])}),
             "conv": nir.Conv2d(input_shape=(4, 4), weight=np.ones((2, 1, 1, 1)), stride=1, padding=0, dilation=1,
                                groups=1, bias=np.zeros(2)),
             "lif": lif((2, 4, 4), 0.5, 0.5),
             "pool": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
             "output": nir.Output(output_type={"output": np.array([2, 2, 2])})}
    with pytest.raises(es.ConversionError, match=re.escape("NIR node 'pool' (AvgPool2d): a pool is mapped only "
                                                           "between a convolution and its neuron")):
        es.convert(write(tmp_path, nodes, chain(nodes)), None)


def test_conv_export_read_import_round_trip_is_equal(tmp_path):
    from edgesnn import format as F
    from edgesnn import layers as L

    rng = np.random.default_rng(5)
    model = es.Model([L.Conv2D(name="c", weights=rng.integers(-9, 10, (3, 3, 2, 4)), bias=rng.integers(-5, 5, 4),
                               stride=2, padding=(1, 1, 1, 1), pool="avg", pool_size=2, pool_count_include_pad=True,
                               neuron="lif", threshold=rng.integers(5, 40, 4), decay_multiplier=[900, 1000, 512, 0],
                               decay_shift=10, reset="zero"),
                      L.Dense(name="d", weights=rng.integers(-7, 8, (16, 3)), bias=[0, 3, -3], neuron="none")],
                     input_shape=(8, 8, 2), input_bits=1, metadata={"nir": {"dt": DT}})
    model.to_nir(tmp_path / "c.nir")
    graph = nir.read(tmp_path / "c.nir")
    assert [type(graph.nodes[k]).__name__ for k in ("c.synapse", "c.pool", "c", "d.flatten", "d.synapse", "d")] == \
        ["Conv2d", "AvgPool2d", "LIF", "Flatten", "Affine", "I"]
    np.testing.assert_array_equal(graph.nodes["c"].v_threshold, np.ones((4, 2, 2)))   # one threshold: snnTorch reads it
    again = es.convert(tmp_path / "c.nir", None, input_bits=1)
    assert F.write_model(again) == F.write_model(model)


def test_samples_round_weights_by_error_feedback(tmp_path):
    """With calibration spike trains the weights are rounded so that the membranes' input error on them is
    smaller than rounding to nearest gives (es.convert(path, samples))."""
    rng = np.random.default_rng(6)
    w = rng.normal(0, 0.3, (8, 64))
    nodes = {"input": nir.Input(input_type={"input": np.array([64])}),
             "fc": nir.Affine(weight=w, bias=np.zeros(8)), "lif": lif(8, 0.9, 1.0),
             "output": nir.Output(output_type={"output": np.array([8])})}
    path = write(tmp_path, nodes, chain(nodes))
    rates = rng.random(64) * 0.5
    calib = (rng.random((200, 10, 64)) < rates).astype(np.uint8)
    test = (rng.random((200, 10, 64)) < rates).astype(np.uint8).sum(1)
    errors = []
    for samples in (None, calib):
        layer = es.convert(path, samples, weight_bits=4, input_bits=1).layers[0]
        scale = np.abs(w).max(1) / 7
        errors.append(np.mean((test @ (layer.weights * scale - w.T)) ** 2))
    assert errors[1] < 0.7 * errors[0], errors


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


def test_simulate_refuses_spikes_of_the_wrong_size(tmp_path):
    path = lif_net(tmp_path)
    with pytest.raises(es.ConversionError, match=re.escape("spikes: expected (N, T, ...) of 1 values per timestep "
                                                           "(the input (1, 1, 1)), got shape (2, 3, 4)")):
        edgesnn_nir.simulate(path, np.zeros((2, 3, 4)))
    counts = edgesnn_nir.simulate(path, np.full((1, 8, 1), 4.0))     # the hand-worked run above, membrane float
    np.testing.assert_array_equal(counts.reshape(-1), [2, 4])
