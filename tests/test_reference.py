"""The numpy reference engine against small cases worked out by hand (docs/semantics.md)."""

import numpy as np
import pytest

import edgesnn as es
from edgesnn import layers as L


def run(model, x, timesteps=None):
    return model.forward(np.asarray(x, dtype=np.uint8), timesteps=timesteps, device="reference")


def image(rows):
    """A (1, H, W, 1) uint8 batch from a nested list of rows."""
    return np.array(rows, dtype=np.uint8)[None, :, :, None]


def test_conv2d_valid_by_hand():
    x = image([[1, 2, 0],
               [0, 3, 1],
               [4, 0, 2]])
    w = np.array([[1, -1],
                  [2, 0]]).reshape(2, 2, 1, 1)
    model = es.Model([L.InputConv2D(name="c", weights=w, bias=[5], padding="valid", neuron="none")],
                     input_shape=(3, 3, 1))
    # top-left window [[1,2],[0,3]]: 1 - 2 + 0 + 0 = -1, +5 = 4
    # top-right [[2,0],[3,1]]: 2 - 0 + 6 + 0 = 8, +5 = 13
    # bottom-left [[0,3],[4,0]]: 0 - 3 + 8 + 0 = 5, +5 = 10
    # bottom-right [[3,1],[0,2]]: 3 - 1 + 0 + 0 = 2, +5 = 7
    assert run(model, x)[0, :, :, 0].tolist() == [[4, 13], [10, 7]]
    stats = model.statistics["c"]
    assert stats.input_events == 6 and stats.input_size == 9
    # non-zero inputs in each window: 3, 3, 2, 3 -> 11 taps x 1 output channel
    assert stats.synaptic_ops == 11
    assert stats.output_events == 4 and stats.output_size == 4


def test_conv2d_same_stride2_pads_after():
    # 4x4 input, 3x3 kernel, stride 2, 'same': output 2x2, total pad 1 -> 0 before, 1 after.
    x = image([[1, 0, 0, 2],
               [0, 0, 0, 0],
               [0, 0, 0, 0],
               [3, 0, 0, 4]])
    w = np.ones((3, 3, 1, 1), dtype=int)
    model = es.Model([L.InputConv2D(name="c", weights=w, stride=2, padding="same", neuron="none")],
                     input_shape=(4, 4, 1))
    # windows start at rows/cols 0 and 2: (0,0) covers rows 0-2 cols 0-2 -> 1; (0,1) rows 0-2 cols 2-4 -> 2;
    # (1,0) rows 2-4 cols 0-2 -> 3; (1,1) rows 2-4 cols 2-4 -> 4
    assert run(model, x)[0, :, :, 0].tolist() == [[1, 2], [3, 4]]
    assert model.statistics["c"].synaptic_ops == 4


def test_conv2d_multichannel_events_times_fanout():
    x = np.zeros((1, 3, 3, 2), dtype=np.uint8)
    x[0, 1, 1, 0] = 2   # the centre pixel, channel 0 only
    w = np.zeros((3, 3, 2, 4), dtype=int)
    w[:, :, 0, :] = np.arange(9).reshape(3, 3, 1)  # weight value = tap index, same for all 4 outputs
    model = es.Model([L.InputConv2D(name="c", weights=w, padding="same", neuron="none")], input_shape=(3, 3, 2))
    out = run(model, x)[0, :, :, 0]
    # output (oy, ox) sees the centre through tap (1 - oy + 1, 1 - ox + 1) = (2 - oy, 2 - ox): value 3*(2-oy) + (2-ox)
    expected = [[2 * (3 * (2 - oy) + (2 - ox)) for ox in range(3)] for oy in range(3)]
    assert out.tolist() == expected
    # one event reaches all 9 output positions x 4 channels
    assert model.statistics["c"].synaptic_ops == 36


def test_depthwise2d_by_hand():
    x = np.zeros((1, 2, 2, 2), dtype=np.uint8)
    x[0, :, :, 0] = [[1, 2], [3, 4]]
    x[0, :, :, 1] = [[5, 0], [0, 6]]
    w = np.zeros((2, 2, 2), dtype=int)
    w[:, :, 0] = [[1, 1], [1, 1]]
    w[:, :, 1] = [[1, 0], [0, -1]]
    model = es.Model([L.Depthwise2D(name="dw", weights=w, bias=[0, 10], padding="valid", neuron="none")],
                     input_shape=(2, 2, 2))
    out = run(model, x)
    assert out[0, 0, 0].tolist() == [1 + 2 + 3 + 4, 5 - 6 + 10]
    assert model.statistics["dw"].synaptic_ops == 6  # 4 + 2 non-zero taps, one output channel each


def test_separable2d_requantizes_signed_intermediate():
    x = np.array([[[[3, 1]]]], dtype=np.uint8)          # 1x1 input, 2 channels
    dw = np.array([[[-1, 3]]])                          # 1x1 depthwise: Q = [-3, 3]
    pw = np.array([[1, 2],
                   [1, 0]])                             # (Cin=2, Cout=2)
    model = es.Model([L.Separable2D(name="sep", weights=dw, pointwise=pw, bias=[0, 100], mid_multiplier=1,
                                    mid_shift=1, mid_bits=4, padding="valid", neuron="none")],
                     input_shape=(1, 1, 2))
    # mid = (Q + 1) >> 1 : -3 -> -1 (i.e. -1.5 rounds half up to -1), 3 -> 2 (1.5 -> 2)
    # out0 = 1*-1 + 1*2 = 1 ; out1 = 2*-1 + 0*2 + 100 = 98
    assert run(model, x)[0, 0, 0].tolist() == [1, 98]
    # depthwise: 2 events x 1; pointwise: 2 non-zero mids x 2 outputs
    assert model.statistics["sep"].synaptic_ops == 2 + 4


def test_separable2d_clamps_intermediate():
    x = np.array([[[[200]]]], dtype=np.uint8)
    model = es.Model([L.Separable2D(name="sep", weights=[[[-100]]], pointwise=[[1]], mid_bits=4, padding="valid",
                                    neuron="none")], input_shape=(1, 1, 1))
    assert run(model, x)[0, 0, 0, 0] == -8   # -20000 clamps to the 4-bit signed minimum


def test_dense_flattens_hwc():
    x = np.zeros((1, 1, 2, 2), dtype=np.uint8)
    x[0, 0, 0] = [1, 2]   # position (0,0): channels 0, 1 -> flat 0, 1
    x[0, 0, 1] = [3, 4]   # position (0,1): flat 2, 3
    w = np.array([[1], [-2], [5], [-7]])
    model = es.Model([L.Dense(name="fc", weights=w, bias=[7], neuron="none")], input_shape=(1, 2, 2))
    assert run(model, x)[0, 0, 0, 0] == 1 * 1 - 2 * 2 + 5 * 3 - 7 * 4 + 7  # flat order (y, x, c)
    assert model.statistics["fc"].synaptic_ops == 4


def test_relu_requantization_rounds_half_up_and_clamps():
    x = np.array([5, 6, 7, 100], dtype=np.uint8).reshape(1, 1, 1, 4)
    w = np.eye(4, dtype=int).reshape(1, 1, 4, 4)
    model = es.Model([L.InputConv2D(name="c", weights=w, out_multiplier=3, out_shift=2, activation_bits=4)],
                     input_shape=(1, 1, 4))
    # 5*3/4 = 3.75 -> 4; 6*3/4 = 4.5 -> 5 (half up); 7*3/4 = 5.25 -> 5; 100*3/4 = 75 -> clamp 15
    assert run(model, x)[0, 0, 0].tolist() == [4, 5, 5, 15]


def test_relu_negative_potentials_give_zero():
    x = np.array([[[[9]]]], dtype=np.uint8)
    model = es.Model([L.InputConv2D(name="c", weights=[[[[-1]]]], out_multiplier=1, out_shift=0)],
                     input_shape=(1, 1, 1))
    assert run(model, x)[0, 0, 0, 0] == 0
    assert model.statistics["c"].output_events == 0


def pooled_model(pool, size=2, stride=None):
    return es.Model([L.InputConv2D(name="c", weights=[[[[1]]]], pool=pool, pool_size=size, pool_stride=stride,
                                   neuron="none")], input_shape=(3, 3, 1))


def test_pooling_max_avg_global():
    x = image([[1, 5, 2],
               [3, 4, 0],
               [9, 1, 1]])
    # valid 2x2 windows, stride 2: only the top-left window fits a 3x3 map
    assert run(pooled_model("max"), x)[0, :, :, 0].tolist() == [[5]]
    assert run(pooled_model("avg"), x)[0, :, :, 0].tolist() == [[13]]         # the window's sum
    assert run(pooled_model("max", 2, 1), x)[0, :, :, 0].tolist() == [[5, 5], [9, 4]]
    assert run(pooled_model("global_avg"), x)[0, :, :, 0].tolist() == [[26]]  # the map's sum


def test_add_merges_branches_with_multipliers():
    x = np.array([[[[2, 3]]]], dtype=np.uint8)
    a = L.InputConv2D(name="a", weights=np.eye(2, dtype=int).reshape(1, 1, 2, 2), activation_bits=8)
    b = L.InputConv2D(name="b", inputs=("input",), weights=2 * np.eye(2, dtype=int).reshape(1, 1, 2, 2),
                      activation_bits=8)
    add = L.Add(name="sum", inputs=("a", "b"), input_multipliers=[[1, 3], [2, 1]], neuron="none")
    model = es.Model([a, b, add], input_shape=(1, 1, 2))
    # a = [2, 3], b = [4, 6]; channel 0: 1*2 + 2*4 = 10; channel 1: 3*3 + 1*6 = 15
    assert run(model, x)[0, 0, 0].tolist() == [10, 15]
    assert model.statistics["sum"].synaptic_ops == 4


def spiking_model(neuron, threshold, leak_shift=0, weight=1):
    return es.Model([L.InputConv2D(name="n", weights=[[[[weight]]]], neuron=neuron, threshold=threshold,
                                   leak_shift=leak_shift)], input_shape=(1, 1, 1))


def test_if_neuron_subtractive_reset():
    model = spiking_model("if", threshold=10)
    # constant input 4: v = 4, 8, 12 -> spike (v = 2), 6, 10 -> spike (v = 0): 2 spikes in 5 steps
    assert run(model, [[[[4]]]], timesteps=5)[0, 0, 0, 0] == 2
    assert model.statistics["n"].output_events == 2
    assert model.statistics["n"].output_size == 5


def test_if_neuron_spike_train_input():
    model = spiking_model("if", threshold=3, weight=2)
    train = np.array([1, 0, 1, 1, 0, 1], dtype=np.uint8).reshape(1, 6, 1, 1, 1)
    # v: 2, 2, 4 -> spike (1), 3 -> spike (0), 0, 2  => 2 spikes
    assert run(model, train)[0, 0, 0, 0] == 2


def test_lif_neuron_leaks_by_shift():
    model = spiking_model("lif", threshold=10, leak_shift=1)
    # input 6 each step, leak v -= v >> 1 first:
    # t0: 0 + 6 = 6; t1: 6 - 3 + 6 = 9; t2: 9 - 4 + 6 = 11 -> spike, 1; t3: 1 - 0 + 6 = 7; t4: 7 - 3 + 6 = 10 -> spike
    assert run(model, [[[[6]]]], timesteps=5)[0, 0, 0, 0] == 2
    # input 4 never reaches 10 with that leak: 4, 6, 7, 7, 7
    assert run(model, [[[[4]]]], timesteps=5)[0, 0, 0, 0] == 0


def test_lif_leak_of_negative_potential_uses_arithmetic_shift():
    # v goes negative and the leak floors: v = -3 -> -3 - (-3 >> 1) = -3 - (-2) = -1
    model = es.Model([L.InputConv2D(name="n", weights=[[[[-3]]]], bias=[0], neuron="lif", threshold=1,
                                    leak_shift=1)], input_shape=(1, 1, 1))
    train = np.array([1, 0, 0], dtype=np.uint8).reshape(1, 3, 1, 1, 1)
    # t0: v = -3; t1: -3 - (-2) = -1 (+0); t2: -1 - (-1) = 0: never spikes
    assert run(model, train)[0, 0, 0, 0] == 0
    # with bias 1 at every step:
    model2 = es.Model([L.InputConv2D(name="n", weights=[[[[-3]]]], bias=[1], neuron="lif", threshold=1,
                                     leak_shift=1)], input_shape=(1, 1, 1))
    # t0: -3 + 1 = -2; t1: -2 - (-1) + 1 = 0; t2: 0 - 0 + 1 = 1 -> spike
    assert run(model2, train)[0, 0, 0, 0] == 1


def test_none_output_accumulates_over_timesteps():
    model = es.Model([L.InputConv2D(name="o", weights=[[[[3]]]], bias=[1], neuron="none")], input_shape=(1, 1, 1))
    assert run(model, [[[[2]]]], timesteps=4)[0, 0, 0, 0] == 4 * (2 * 3 + 1)


def test_statistics_chain_and_sparsity():
    x = image([[0, 1], [2, 0]])
    model = es.Model([
        L.InputConv2D(name="c", weights=np.ones((1, 1, 1, 3), dtype=int), out_multiplier=1, activation_bits=2),
        L.Dense(name="fc", weights=np.ones((12, 2), dtype=int), neuron="none"),
    ], input_shape=(2, 2, 1))
    out = run(model, x)
    c, fc = model.statistics["c"], model.statistics["fc"]
    assert (c.input_events, c.output_events, c.output_size) == (2, 6, 12)
    assert c.sparsity == pytest.approx(0.5)
    assert fc.input_events == c.output_events
    assert fc.synaptic_ops == 6 * 2
    # each 2-bit output: pixel 1 -> 1, pixel 2 -> 2; dense sums 3 channels x (1 + 2)
    assert out[0, 0, 0].tolist() == [9, 9]


def test_batch_samples_are_independent():
    model = spiking_model("if", threshold=5)
    x = np.array([4, 0, 9], dtype=np.uint8).reshape(3, 1, 1, 1)
    both = run(model, x, timesteps=3)[:, 0, 0, 0]
    alone = [run(model, x[i:i + 1], timesteps=3)[0, 0, 0, 0] for i in range(3)]
    # 4: v = 4, 8 -> spike (3), 7 -> spike (2): 2 spikes; 0: none; 9: 9 s(4), 13 s(8), 17 s(12): 3 spikes
    assert both.tolist() == alone == [2, 0, 3]


def test_add_with_a_negative_multiplier_subtracts_a_branch():
    x = np.array([[[[5, 2]]]], dtype=np.uint8)
    a = L.InputConv2D(name="a", weights=np.eye(2, dtype=int).reshape(1, 1, 2, 2))
    b = L.InputConv2D(name="b", inputs=("input",), weights=np.eye(2, dtype=int)[::-1].reshape(1, 1, 2, 2))
    add = L.Add(name="diff", inputs=("a", "b"), input_multipliers=[[3, 3], [-2, -2]])
    model = es.Model([a, b, add], input_shape=(1, 1, 2))
    # a = [5, 2], b = [2, 5]; relu(3a - 2b) = relu([11, -4]) = [11, 0]
    assert run(model, x)[0, 0, 0].tolist() == [11, 0]


# -- contract v2: explicit paddings, pad values, depth multipliers, pools with padding, concat, zero points --

def test_conv2d_explicit_asymmetric_padding_reads_the_pad_value():
    x = image([[1, 2, 3],
               [4, 5, 6],
               [7, 8, 9]])
    w = np.array([[1, 2],
                  [3, 4]]).reshape(2, 2, 1, 1)
    model = es.Model([L.InputConv2D(name="c", weights=w, bias=[1], stride=(2, 1), padding=(1, 0, 0, 1),
                                    pad_value=5, neuron="none")], input_shape=(3, 3, 1))
    # OH = (3 + 1 - 2) // 2 + 1 = 2, OW = (3 + 1 - 2) // 1 + 1 = 3; rows -1 and col 3 read 5:
    # (0,0): 1*5 + 2*5 + 3*1 + 4*2 = 26   (0,1): 5 + 10 + 6 + 12 = 33   (0,2): 5 + 10 + 9 + 20 = 44
    # (1,0): 4 + 10 + 21 + 32 = 67        (1,1): 5 + 12 + 24 + 36 = 77  (1,2): 6 + 10 + 27 + 20 = 63
    assert run(model, x)[0, :, :, 0].tolist() == [[27, 34, 45], [68, 78, 64]]
    # in-bounds non-zero taps: 2, 2, 1, 4, 4, 2 (the pad value is no event)
    assert model.statistics["c"].synaptic_ops == 15


def test_depthwise2d_depth_multiplier_reads_channel_o_div_m():
    x = np.array([3, 5], np.uint8).reshape(1, 1, 1, 2)
    model = es.Model([L.Depthwise2D(name="d", weights=np.array([1, 2, 3, 4]).reshape(1, 1, 4), depth_multiplier=2,
                                    padding="valid", neuron="none")], input_shape=(1, 1, 2))
    assert run(model, x)[0, 0, 0].tolist() == [3, 6, 15, 20]   # 3*1, 3*2, 5*3, 5*4
    assert model.statistics["d"].synaptic_ops == 4              # 2 events x multiplier 2


@pytest.mark.parametrize("bias, expected", [(0, [8, 8]), (-5, [-7, -7])])
def test_avg_pool_excluding_padding_scales_partial_windows_half_up(bias, expected):
    x = np.array([[2, 3, 1, 4]], np.uint8)[None, :, :, None]
    model = es.Model([L.InputConv2D(name="c", weights=np.ones((1, 1, 1, 1)), bias=[bias], padding="valid",
                                    pool="avg", pool_size=(1, 3), pool_stride=(1, 2), pool_padding=(0, 0, 1, 0),
                                    neuron="none")], input_shape=(1, 4, 1))
    # window 0 holds columns -1 (padding), 0, 1: S = 5 + 2 * bias over n = 2 of A = 3 taps -> S * 3 / 2 half up:
    # 7.5 -> 8 (bias 0), -7.5 -> -7 (bias -5); window 1 holds columns 1..3, all inside: S = 8 + 3 * bias
    assert run(model, x)[0, 0, :, 0].tolist() == expected
    included = model.layers[0].replace(pool_count_include_pad=True)
    model2 = es.Model([included], input_shape=(1, 4, 1))
    assert run(model2, x)[0, 0, :, 0].tolist() == [5 + 2 * bias, 8 + 3 * bias]


def test_max_pool_with_padding_and_a_min_channel():
    x = np.array([[[1, 3], [5, 1], [2, 4]]], np.uint8)[None]      # (1, 1, 3, 2)
    model = es.Model([L.Depthwise2D(name="d", weights=np.ones((1, 1, 2)), bias=[0, -10], padding="valid",
                                    pool="max", pool_size=(1, 2), pool_stride=(1, 2), pool_padding=(0, 0, 1, 0),
                                    pool_sign=[1, -1], neuron="none")], input_shape=(1, 3, 2))
    # channel 0: max(1) = 1, max(5, 2) = 5; channel 1 potentials -7, -9, -6: min(-7) = -7, min(-9, -6) = -9
    # (the padded tap is never read: it does not count as 0)
    assert run(model, x)[0, 0].tolist() == [[1, -7], [5, -9]]


def test_concat_sources_multipliers_bias_and_a_relu_zero_point():
    x = np.array([10, 20, 30], np.uint8).reshape(1, 1, 1, 3)
    model = es.Model([L.Concat(name="cat", inputs=("input", "input"), sources=[(0, 2), (1, 0), (0, 1)],
                               input_multipliers=[1, -2, 3], bias=[0, 5, -1], out_multiplier=1, out_shift=1,
                               out_zero_point=[0, 50, 3])], input_shape=(1, 1, 3))
    # P = [30, -20 + 5, 60 - 1] = [30, -15, 59]; (P + 1) >> 1 = [15, -7, 30]; + zero points = [15, 43, 33]
    assert run(model, x)[0, 0, 0].tolist() == [15, 43, 33]
    stats = model.statistics["cat"]
    assert stats.input_events == 6 and stats.synaptic_ops == 3


def test_add_bias_and_pooling():
    x = np.array([[1, 2], [3, 4]], np.uint8)[None, :, :, None]
    model = es.Model([L.Add(name="a", inputs=("input", "input"), input_multipliers=[[1], [-3]], bias=[10],
                            pool="max", pool_size=2, neuron="none")], input_shape=(2, 2, 1))
    # P = 10 - 2x = [[8, 6], [4, 2]]; max = 8
    assert run(model, x)[0, 0, 0].tolist() == [8]


def test_a_window_without_an_in_bounds_tap_is_refused():
    with pytest.raises(es.ModelError, match="no tap inside"):
        es.Model([L.InputConv2D(name="c", weights=np.ones((2, 2, 1, 1)), padding=(2, 0, 0, 0), neuron="none")],
                 input_shape=(4, 4, 1))
    with pytest.raises(es.ModelError, match="pool_sign"):
        es.Model([L.InputConv2D(name="c", weights=np.ones((1, 1, 1, 2)), pool="avg", pool_sign=[1, -1],
                                neuron="none")], input_shape=(4, 4, 1))


# -- issue 9's geometry, hand-worked: strides 3 and 4, depthwise / separable with explicit asymmetric
# padding, a 3x3 / stride 2 padded pool window (max and both avg modes), a 3-input concat. Each model
# also runs on the native engine (device "cpu"), which must give the same potentials and statistics.

def native_agrees(model, x, timesteps=None):
    """The native engine on `model` and `x`: the reference's potentials and statistics, bit for bit."""
    pytest.importorskip("edgesnn.native")
    expected = run(model, x, timesteps)
    expected_stats = model.statistics
    got = model.forward(np.asarray(x, dtype=np.uint8), timesteps=timesteps, device="cpu")
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int32
    assert model.statistics == expected_stats, f"\nnative:\n{model.statistics}\nreference:\n{expected_stats}"


def test_conv2d_stride_3_by_4_with_explicit_padding():
    x = image([[1, 2, 3, 4, 5],
               [6, 7, 8, 9, 10],
               [11, 12, 13, 14, 15],
               [16, 17, 18, 19, 20]])
    w = np.array([[1, 2],
                  [3, 4]]).reshape(2, 2, 1, 1)
    model = es.Model([L.InputConv2D(name="c", weights=w, stride=(3, 4), padding=(1, 0, 0, 1), neuron="none")],
                     input_shape=(4, 5, 1))
    # OH = (4 + 1 + 0 - 2) // 3 + 1 = 2, OW = (5 + 0 + 1 - 2) // 4 + 1 = 2
    # rows iy = 3*oy + kh - 1: oy 0 -> -1 (pad), 0; oy 1 -> 2, 3.  cols ix = 4*ox + kw: ox 0 -> 0, 1; ox 1 -> 4, 5 (pad)
    # (0,0): 1*0 + 2*0 + 3*x[0,0] + 4*x[0,1] = 3*1 + 4*2 = 11      (0,1): 3*x[0,4] + 4*0 = 15
    # (1,0): 1*11 + 2*12 + 3*16 + 4*17 = 11 + 24 + 48 + 68 = 151    (1,1): 1*15 + 2*0 + 3*20 + 4*0 = 75
    assert run(model, x)[0, :, :, 0].tolist() == [[11, 15], [151, 75]]
    # non-zero in-bounds taps per window: 2, 1, 4, 2 (row 1 and columns 2, 3 are skipped by the strides)
    assert model.statistics["c"].synaptic_ops == 9
    native_agrees(model, x)


@pytest.mark.parametrize("width, kernel, stride, pads, expected", [
    # OW = ceil(7 / 3) = 3; total pad (3 - 1) * 3 + 4 - 7 = 3: floor(3 / 2) = 1 before, 2 after
    # ox 0 reads columns -1..2: 0*1 + 1*2 + 2*4 + 3*8 = 34; ox 1 columns 2..5: 3*1 + 4*2 + 5*4 + 6*8 = 79;
    # ox 2 columns 5..8: 6*1 + 7*2 + 0*4 + 0*8 = 20
    (7, 4, 3, (1, 2), [34, 79, 20]),
    # OW = ceil(9 / 4) = 3; total pad (3 - 1) * 4 + 3 - 9 = 2: 1 before, 1 after
    # ox 0 reads columns -1..1: 0*1 + 1*2 + 2*4 = 10; ox 1 columns 3..5: 4*1 + 5*2 + 6*4 = 38;
    # ox 2 columns 7..9: 8*1 + 9*2 + 0*4 = 26
    (9, 3, 4, (1, 1), [10, 38, 26]),
])
def test_same_padding_at_strides_3_and_4_puts_the_odd_pixel_after(width, kernel, stride, pads, expected):
    x = np.arange(1, width + 1, dtype=np.uint8).reshape(1, 1, width, 1)     # 1, 2, ..., width
    w = np.array([1, 2, 4, 8][:kernel]).reshape(1, kernel, 1, 1)
    model = es.Model([L.InputConv2D(name="c", weights=w, stride=(1, stride), padding="same", neuron="none")],
                     input_shape=(1, width, 1))
    assert model.layers[0].pads == (0, 0, *pads)
    assert run(model, x)[0, 0, :, 0].tolist() == expected
    native_agrees(model, x)


def test_depthwise2d_stride_3_with_explicit_asymmetric_padding_and_pad_values():
    x = np.zeros((1, 2, 4, 2), dtype=np.uint8)
    x[0, :, :, 0] = [[1, 2, 3, 4],
                     [5, 6, 7, 8]]
    x[0, :, :, 1] = [[0, 0, 0, 9],
                     [0, 0, 0, 0]]
    w = np.zeros((2, 3, 2), dtype=int)
    w[:, :, 0] = [[1, 2, 3],
                  [4, 5, 6]]
    w[:, :, 1] = 1
    model = es.Model([L.Depthwise2D(name="dw", weights=w, bias=[0, -1], stride=(1, 3), padding=(0, 1, 2, 0),
                                    pad_value=[0, 2], neuron="none")], input_shape=(2, 4, 2))
    # padding top 0, bottom 1, left 2, right 0: OH = (2 + 1 - 2) // 1 + 1 = 2, OW = (4 + 2 - 3) // 3 + 1 = 2
    # rows iy = oy + kh: oy 0 -> 0, 1; oy 1 -> 1, 2 (pad).  cols ix = 3*ox + kw - 2: ox 0 -> -2, -1 (pad), 0; ox 1 -> 1, 2, 3
    # channel 0 (pad value 0, bias 0):
    #   (0,0): only column 0: 3*x[0,0] + 6*x[1,0] = 3 + 30 = 33
    #   (0,1): 1*2 + 2*3 + 3*4 + 4*6 + 5*7 + 6*8 = 2 + 6 + 12 + 24 + 35 + 48 = 127
    #   (1,0): row 1 through kh 0, column 0: 3*x[1,0] = 15          (1,1): 1*6 + 2*7 + 3*8 = 44
    # channel 1 (weights all 1, pad value 2, bias -1): a window's sum is 2 per padded tap plus its inputs
    #   (0,0): 4 padded taps (columns -2, -1 of rows 0, 1) -> 8 - 1 = 7     (0,1): no padding, the 9 -> 9 - 1 = 8
    #   (1,0): 5 padded taps (row 2, and columns -2, -1 of row 1) -> 10 - 1 = 9
    #   (1,1): 3 padded taps (row 2) -> 6 - 1 = 5
    assert run(model, x)[0].tolist() == [[[33, 7], [127, 8]], [[15, 9], [44, 5]]]
    # non-zero in-bounds taps: channel 0 2 + 6 + 1 + 3, channel 1 only the 9 in window (0,1): 13 x multiplier 1
    assert model.statistics["dw"].synaptic_ops == 13
    native_agrees(model, x)


def test_separable2d_stride_2_explicit_asymmetric_padding_pad_value_and_multiplier_2():
    x = image([[1, 2, 3],
               [4, 5, 6],
               [7, 8, 9]])
    dw = np.zeros((2, 2, 2), dtype=int)            # multiplier 2: both mids read input channel 0
    dw[:, :, 0] = [[1, 0],
                   [0, 2]]
    dw[:, :, 1] = [[0, -3],
                   [1, 0]]
    pw = np.array([[1, -1],
                   [2, 3]])                         # (mid, Cout)
    model = es.Model([L.Separable2D(name="sep", weights=dw, pointwise=pw, bias=[0, 10], depth_multiplier=2,
                                    stride=2, padding=(1, 0, 0, 1), pad_value=1, mid_multiplier=1,
                                    mid_shift=[1, 2], mid_bits=4, neuron="none")], input_shape=(3, 3, 1))
    # padding top 1, right 1: OH = (3 + 1 - 2) // 2 + 1 = 2, OW = (3 + 1 - 2) // 2 + 1 = 2
    # rows 2*oy + kh - 1: oy 0 -> -1 (pad), 0; oy 1 -> 1, 2.  cols 2*ox + kw: ox 0 -> 0, 1; ox 1 -> 2, 3 (pad)
    # the windows, padded taps reading 1: (0,0) [[1, 1], [1, 2]]  (0,1) [[1, 1], [3, 1]]
    #                                     (1,0) [[4, 5], [7, 8]]  (1,1) [[6, 1], [9, 1]]
    # Q0 = w[0,0] + 2*w[1,1]:  1 + 4 = 5,  1 + 2 = 3,  4 + 16 = 20,  6 + 2 = 8
    # Q1 = -3*w[0,1] + w[1,0]: -3 + 1 = -2, -3 + 3 = 0, -15 + 7 = -8, -3 + 9 = 6
    # Mid0 = (Q0 + 1) >> 1, clamped to [-8, 7]: 2.5 -> 3, 1.5 -> 2, 10 -> 7 (clamped), 4 -> 4
    # Mid1 = (Q1 + 2) >> 2: -0.5 -> 0 (half up), 0 -> 0, -2 -> -2, 1.5 -> 2
    # out0 = Mid0 + 2*Mid1:       3, 2, 7 - 4 = 3, 4 + 4 = 8
    # out1 = -Mid0 + 3*Mid1 + 10: 7, 8, -7 - 6 + 10 = -3, -4 + 6 + 10 = 12
    assert run(model, x)[0].tolist() == [[[3, 7], [2, 8]], [[3, -3], [8, 12]]]
    # depthwise: in-bounds non-zero taps 2 + 1 + 4 + 2 = 9, x multiplier 2 = 18;
    # pointwise: 6 non-zero mids (3, 2, 7, -2, 4, 2) x 2 outputs = 12
    assert model.statistics["sep"].synaptic_ops == 18 + 12
    native_agrees(model, x)


POOL_INPUT = [[1, 2, 3, 4],
              [5, 6, 7, 8],
              [9, 10, 11, 12],
              [13, 14, 15, 16]]


def pool_3x3_stride_2_pad_1(pool, bias, include_pad=False):
    """ResNet's stem pool (MaxPool2d(3, 2, 1)) on the potentials x + bias of a 1x1 identity conv."""
    return es.Model([L.InputConv2D(name="c", weights=np.ones((1, 1, 1, 1), dtype=int), bias=[bias], padding="valid",
                                   pool=pool, pool_size=3, pool_stride=2, pool_padding=(1, 1, 1, 1),
                                   pool_count_include_pad=include_pad, neuron="none")], input_shape=(4, 4, 1))


# The 4x4 map pooled by 3x3 windows at stride 2 with one padded row/column on each side: OH = OW =
# (4 + 2 - 3) // 2 + 1 = 2; windows cover rows (and columns) -1..1 and 1..3, so their in-bounds taps are
# rows/cols {0, 1} x {0, 1} (n = 4), {0, 1} x {1, 2, 3} (6), {1, 2, 3} x {0, 1} (6), {1, 2, 3} x {1, 2, 3} (9).
@pytest.mark.parametrize("bias, expected", [
    (0, [[6, 8], [14, 16]]),
    # all potentials negative (x - 20): a padded tap read as 0 would win every window; it is never read
    (-20, [[-14, -12], [-6, -4]]),
])
def test_max_pool_3x3_stride_2_padded_ignores_padded_taps(bias, expected):
    model = pool_3x3_stride_2_pad_1("max", bias)
    assert run(model, image(POOL_INPUT))[0, :, :, 0].tolist() == expected
    native_agrees(model, image(POOL_INPUT))


@pytest.mark.parametrize("bias, sums, excluded", [
    # sums S: 1+2+5+6 = 14; 2+3+4+6+7+8 = 30; 5+6+9+10+13+14 = 57; 6+7+8+10+11+12+14+15+16 = 99
    # excluding padding, S * 9 / n half up: 14*9/4 = 31.5 -> 32; 30*9/6 = 45; 57*9/6 = 85.5 -> 86; n = 9: 99
    (0, [[14, 30], [57, 99]], [[32, 45], [86, 99]]),
    # potentials x - 20: S = 14 - 80 = -66; 30 - 120 = -90; 57 - 120 = -63; 99 - 180 = -81
    # -66*9/4 = -148.5 -> -148 (half up: towards +infinity); -90*9/6 = -135; -63*9/6 = -94.5 -> -94; -81
    # e.g. floor((2 * -66 * 9 + 4) / (2 * 4)) = floor(-1184 / 8) = -148
    (-20, [[-66, -90], [-63, -81]], [[-148, -135], [-94, -81]]),
])
def test_avg_pool_3x3_stride_2_padded_both_count_modes(bias, sums, excluded):
    included = pool_3x3_stride_2_pad_1("avg", bias, include_pad=True)
    assert run(included, image(POOL_INPUT))[0, :, :, 0].tolist() == sums         # count_include_pad: the sum
    native_agrees(included, image(POOL_INPUT))
    scaled = pool_3x3_stride_2_pad_1("avg", bias, include_pad=False)
    assert run(scaled, image(POOL_INPUT))[0, :, :, 0].tolist() == excluded       # scaled to the 9 taps
    native_agrees(scaled, image(POOL_INPUT))
    # pooling is on potentials: the conv's statistics are those of its 16 positions, the output 2x2
    stats = scaled.statistics["c"]
    assert stats.synaptic_ops == 16 and stats.output_size == 4


def test_concat_of_three_inputs_each_rescaled_like_add():
    x = np.array([[[[4, 6]], [[2, 0]]]], np.uint8)             # (1, 2, 1, 2): pixels (4, 6) and (2, 0)
    a = L.InputConv2D(name="a", weights=np.eye(2, dtype=int).reshape(1, 1, 2, 2), activation_bits=4)   # a = x
    b = L.InputConv2D(name="b", inputs=("input",), weights=np.array([[1], [1]]).reshape(1, 1, 2, 1),
                      activation_bits=4)                        # b = x0 + x1
    cat = L.Concat(name="cat", inputs=("a", "input", "b"), input_multipliers=[3, -1, 2, 1, -2], bias=[0, 20, 1, 0, 30],
                   neuron="none")
    model = es.Model([a, b, cat], input_shape=(2, 1, 2))
    # channels in input order: a0, a1, x0, x1, b0; P[j] = bias[j] + m[j] * source
    # pixel (4, 6): a = (4, 6), b = 10 -> 3*4, 20 - 6, 1 + 2*4, 6, 30 - 2*10 = 12, 14, 9, 6, 10
    # pixel (2, 0): a = (2, 0), b = 2  -> 3*2, 20 - 0, 1 + 2*2, 0, 30 - 2*2  = 6, 20, 5, 0, 26
    assert run(model, x)[0, :, 0].tolist() == [[12, 14, 9, 6, 10], [6, 20, 5, 0, 26]]
    stats = model.statistics["cat"]
    # inputs counted once each: a has 3 non-zero values, x 3, b 2; ops: the (y, x, j) whose source is non-zero
    assert (stats.input_events, stats.input_size) == (3 + 3 + 2, 4 + 4 + 2)
    assert stats.synaptic_ops == 5 + 3   # pixel (4, 6): all 5 sources non-zero; pixel (2, 0): a1 and x1 are 0
    native_agrees(model, x)
