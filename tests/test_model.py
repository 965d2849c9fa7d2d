"""Model construction checks, input validation, summary, and properties of the integer contract."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import edgesnn as es
from edgesnn import layers as L


def three_layer_model(rng=None, weight_bits=4, activation_bits=4):
    rng = rng or np.random.default_rng(0)
    wmax = (1 << (weight_bits - 1)) - 1
    return es.Model([
        L.InputConv2D(name="conv1", weights=rng.integers(-wmax, wmax + 1, (3, 3, 1, 8)), bias=rng.integers(-50, 50, 8),
                      weight_bits=weight_bits, activation_bits=activation_bits, out_multiplier=1, out_shift=6,
                      pool="max"),
        L.Conv2D(name="conv2", weights=rng.integers(-wmax, wmax + 1, (3, 3, 8, 16)), stride=2,
                 weight_bits=weight_bits, activation_bits=activation_bits, out_multiplier=1, out_shift=3),
        L.Dense(name="fc", weights=rng.integers(-wmax, wmax + 1, (4 * 4 * 16, 10)), weight_bits=weight_bits,
                neuron="none"),
    ], input_shape=(16, 16, 1), metadata={"labels": [str(i) for i in range(10)]})


# -- construction ------------------------------------------------------------------------------------

def test_shapes_are_inferred():
    model = three_layer_model()
    assert [l.output_shape for l in model.layers] == [(8, 8, 8), (4, 4, 16), (1, 1, 10)]
    assert model.layers[1].inputs == ("conv1",)
    assert model.output_shape == (1, 1, 10)


def test_overflow_is_rejected_naming_the_layer():
    w = np.full((15, 15, 512, 1), 127)   # 225 * 512 * 127 * 255 = 3.7e9 > 2**31
    with pytest.raises(es.ModelError, match=r"layer 'big'.*int32"):
        es.Model([L.Conv2D(name="big", weights=w, neuron="none")], input_shape=(15, 15, 512))


def test_global_pool_counts_in_the_overflow_bound():
    w = np.full((1, 1, 1, 1), 127)
    ok = es.Model([L.Conv2D(name="c", weights=w, neuron="none", pool="global_avg")], input_shape=(256, 256, 1))
    assert ok.output_shape == (1, 1, 1)
    with pytest.raises(es.ModelError, match="layer 'c'"):
        es.Model([L.Conv2D(name="c", weights=w, neuron="none", pool="global_avg")], input_shape=(512, 512, 1))


@pytest.mark.parametrize("kwargs, message", [
    (dict(weight_bits=3), "weight_bits"),
    (dict(activation_bits=5), "activation_bits"),
    (dict(weights=np.full((3, 3, 1, 2), 8), weight_bits=4), r"out of range for weight_bits=4 \(\[-8, 7\]\)"),
    (dict(weights=np.zeros((3, 3, 2, 2))), "input channels"),
    (dict(weights=np.zeros((3, 3, 2))), r"\(KH, KW, Cin, Cout\)"),
    (dict(out_shift=63), "out_shift"),
    (dict(neuron="sigmoid"), "neuron must be one of"),
    (dict(neuron="if", threshold=0), "threshold must be >= 1"),
    (dict(neuron="lif", threshold=4, leak_shift=0), "leak_shift"),
    (dict(padding="causal"), "padding"),
    (dict(stride=0), "stride"),
    (dict(pool="min"), "pool must be"),
    (dict(bias=[1, 2, 3]), r"bias must have shape \(2,\)"),
    (dict(weights=np.full((3, 3, 1, 2), 0.5)), "non-integer"),
])
def test_bad_layer_parameters(kwargs, message):
    params = dict(name="bad", weights=np.zeros((3, 3, 1, 2), dtype=int))
    params.update(kwargs)
    with pytest.raises(es.ModelError, match=message):
        es.Model([L.InputConv2D(**params)], input_shape=(8, 8, 1))


def test_graph_errors():
    conv = dict(weights=np.ones((1, 1, 1, 1), dtype=int))
    with pytest.raises(es.ModelError, match="already used"):
        es.Model([L.Conv2D(name="a", **conv), L.Conv2D(name="a", **conv)], input_shape=(2, 2, 1))
    with pytest.raises(es.ModelError, match="reads 'later'"):
        es.Model([L.Conv2D(name="a", inputs=("later",), **conv), L.Conv2D(name="later", **conv)], input_shape=(2, 2, 1))
    with pytest.raises(es.ModelError, match="only allowed on the last layer"):
        es.Model([L.Conv2D(name="a", neuron="none", **conv), L.Conv2D(name="b", **conv)], input_shape=(2, 2, 1))
    with pytest.raises(es.ModelError, match="equal shapes"):
        es.Model([L.Conv2D(name="a", **conv), L.Conv2D(name="b", stride=2, inputs=("input",), **conv),
                  L.Add(name="s", inputs=("a", "b"))], input_shape=(2, 2, 1))
    with pytest.raises(es.ModelError, match="does not fit"):
        es.Model([L.Conv2D(name="a", weights=np.ones((5, 5, 1, 1), dtype=int), padding="valid")],
                 input_shape=(3, 3, 1))
    with pytest.raises(es.ModelError, match="at least one layer"):
        es.Model([], input_shape=(2, 2, 1))
    with pytest.raises(es.ModelError, match="input_bits"):
        es.Model([L.Conv2D(name="a", **conv)], input_shape=(2, 2, 1), input_bits=9)


def test_model_copies_its_layers():
    layer = L.InputConv2D(name="c", weights=np.ones((1, 1, 1, 1), dtype=int))
    a = es.Model([layer], input_shape=(2, 2, 1))
    b = es.Model([layer], input_shape=(4, 4, 1))
    assert a.output_shape == (2, 2, 1) and b.output_shape == (4, 4, 1)


# -- input validation --------------------------------------------------------------------------------

@pytest.mark.parametrize("x, message", [
    (np.zeros((2, 16, 16), np.uint8), "rank 3"),
    (np.zeros((16, 16, 1), np.uint8), r"add a batch axis"),
    (np.zeros((2, 16, 15, 1), np.uint8), r"got shape \(2, 16, 15, 1\)"),
    (np.zeros((2, 16, 16, 1), np.float32), "got dtype float32"),
    (np.full((2, 16, 16, 1), np.nan), "contains NaN"),
    (np.zeros((0, 16, 16, 1), np.uint8), "empty batch"),
    (np.full((1, 16, 16, 1), 16, np.int32), r"\[0, 15\].*max 16"),
    (np.full((1, 16, 16, 1), -1, np.int16), r"min -1"),
    (np.array(["a"]), "dtype <U1"),
])
def test_bad_input_raises_value_error(x, message):
    model = es.Model(three_layer_model().layers, input_shape=(16, 16, 1), input_bits=4)
    with pytest.raises(ValueError, match=message):
        model.forward(x, device="reference")


def test_bad_timesteps():
    model = three_layer_model()
    x = np.zeros((1, 16, 16, 1), np.uint8)
    with pytest.raises(ValueError, match="timesteps"):
        model.forward(x, timesteps=0, device="reference")
    with pytest.raises(ValueError, match="disagrees"):
        model.forward(np.zeros((1, 3, 16, 16, 1), np.uint8), timesteps=4, device="reference")


def test_predict_is_argmax_of_forward():
    model = three_layer_model()
    x = np.random.default_rng(1).integers(0, 256, (5, 16, 16, 1)).astype(np.uint8)
    pot = model.forward(x, device="reference")
    assert pot.shape == (5, 1, 1, 10) and pot.dtype == np.int32
    assert model.predict(x, device="reference").tolist() == pot.reshape(5, 10).argmax(1).tolist()


def test_summary_lists_every_layer_with_totals():
    model = three_layer_model()
    text = model.summary(print_fn=None)
    for name in ("conv1", "conv2", "fc", "total"):
        assert name in text
    assert "16x16x1" in text and "8x8x8" in text and "3x3/2" in text
    assert f"{model.params:,}" in text
    # 4-bit weights: 72 + 1152 + 2560 weights at half a byte, plus 32-bit per-channel vectors
    weights = 3 * 3 * 8 + 3 * 3 * 8 * 16 + 256 * 10
    assert model.packed_bytes == weights // 2 + 4 * (8 * 3 + 16 * 3 + 10)


# -- properties --------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(bits=st.sampled_from([1, 2, 4, 8]), multiplier=st.integers(0, 2**20), shift=st.integers(0, 40),
       seed=st.integers(0, 2**31))
def test_quantized_relu_stays_in_range(bits, multiplier, shift, seed):
    rng = np.random.default_rng(seed)
    model = es.Model([L.InputConv2D(name="c", weights=rng.integers(-128, 128, (3, 3, 2, 4)),
                                    bias=rng.integers(-10**5, 10**5, 4), activation_bits=bits,
                                    out_multiplier=multiplier, out_shift=shift)], input_shape=(5, 5, 2))
    out = model.forward(rng.integers(0, 256, (3, 5, 5, 2)).astype(np.uint8), device="reference")
    assert out.min() >= 0 and out.max() <= (2**bits - 1)


@settings(max_examples=30, deadline=None)
@given(timesteps=st.integers(1, 12), threshold=st.integers(1, 500), leak=st.sampled_from([0, 1, 3]),
       seed=st.integers(0, 2**31))
def test_spiking_neuron_fires_at_most_once_per_timestep(timesteps, threshold, leak, seed):
    rng = np.random.default_rng(seed)
    neuron = "lif" if leak else "if"
    model = es.Model([
        L.InputConv2D(name="s", weights=rng.integers(-128, 128, (3, 3, 1, 4)), bias=rng.integers(-300, 300, 4),
                      neuron=neuron, threshold=threshold, leak_shift=leak),
        L.Conv2D(name="o", weights=np.eye(4, dtype=int).reshape(1, 1, 4, 4), neuron="none"),
    ], input_shape=(4, 4, 1))
    x = rng.integers(0, 256, (2, 4, 4, 1)).astype(np.uint8)
    spike_counts = model.forward(x, timesteps=timesteps, device="reference")
    assert spike_counts.min() >= 0 and spike_counts.max() <= timesteps
    assert model.statistics["s"].output_events == int(spike_counts.sum())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), density=st.floats(0, 1), timesteps=st.integers(1, 3))
def test_events_and_sparsity_add_up(seed, density, timesteps):
    rng = np.random.default_rng(seed)
    model = three_layer_model(rng)
    x = rng.integers(0, 16, (3, 16, 16, 1)) * (rng.random((3, 16, 16, 1)) < density)
    model.forward(x.astype(np.uint8), timesteps=timesteps, device="reference")
    stats = model.statistics
    assert stats.samples == 3 and stats.timesteps == timesteps
    assert stats["conv1"].input_events == np.count_nonzero(x) * timesteps
    for producer, consumer in zip(stats.layers, stats.layers[1:]):
        assert consumer.input_events == producer.output_events
        assert consumer.input_size == producer.output_size
    for s in stats:
        assert 0 <= s.output_events <= s.output_size
        assert s.sparsity == pytest.approx(1 - s.output_events / s.output_size)
    # dense synaptic ops are exactly events x fan-out
    assert stats["fc"].synaptic_ops == stats["fc"].input_events * 10
