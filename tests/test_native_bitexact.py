"""Native == reference, bit for bit: potentials and statistics, on randomized models over every layer
kind, padding, stride, pooling, neuron, activation bits 1/2/4/8, weight bits 2/4/8, timestep counts
and input sparsity (hypothesis). Runs the ReleaseSafe build, so any overflow or out-of-bounds
access in the engine aborts instead of passing silently.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import edgesnn as es
from edgesnn import reference
from edgesnn.layers import Add, Conv2D, Dense, Depthwise2D, InputConv2D, Separable2D

native = pytest.importorskip("edgesnn.native")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", params=["native", "baseline"])
def cpu(request, tmp_path_factory):
    """The engine built for this machine's CPU (e.g. AVX-512 VNNI kernels) and for the baseline CPU
    of the architecture (the portable kernels), both with safety checks on."""
    sys.path.insert(0, str(ROOT / "_build_backend"))
    try:
        import edgesnn_build
    finally:
        sys.path.remove(str(ROOT / "_build_backend"))
    path = edgesnn_build.build_native("ReleaseSafe", tmp_path_factory.mktemp(f"native-{request.param}"), request.param)
    return native.CpuDevice(library=path)


SPATIAL = ("input_conv2d", "conv2d", "depthwise2d", "separable2d")
# mostly small; sometimes above 64, where the kernels switch to their wide-row loop
channel_counts = st.one_of(st.integers(1, 20), st.integers(1, 20), st.integers(1, 20), st.integers(60, 80))


def sparse_ints(rng, low, high, shape, zero_fraction):
    values = rng.integers(low, high + 1, shape)
    return np.where(rng.random(shape) < zero_fraction, 0, values)


def neuron_fields(draw, rng, channels: int, last: bool) -> dict:
    neuron = draw(st.sampled_from(("relu", "if", "lif", "none") if last else ("relu", "if", "lif")))
    if neuron == "relu":
        return {"neuron": "relu", "activation_bits": draw(st.sampled_from((1, 2, 4, 8))),
                "out_multiplier": rng.integers(0, 1 << 12, channels),
                "out_shift": rng.integers(0, 17, channels)}
    if neuron in ("if", "lif"):
        fields = {"neuron": neuron, "threshold": rng.integers(1, 400, channels)}
        if neuron == "lif":
            fields["leak_shift"] = draw(st.sampled_from((1, 2, 5, 31)))
        return fields
    return {"neuron": "none"}


def pool_fields(draw, height: int, width: int) -> dict:
    pool = draw(st.sampled_from((None, None, "max", "avg", "global_avg")))
    if pool in ("max", "avg"):
        size = draw(st.integers(1, min(3, height, width)))
        return {"pool": pool, "pool_size": size, "pool_stride": draw(st.integers(1, 3))}
    return {"pool": pool}


@st.composite
def models(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shape = (draw(st.integers(1, 8)), draw(st.integers(1, 8)), draw(st.integers(1, 5)))
    input_bits = draw(st.integers(1, 8))
    layer_count = draw(st.integers(1, 4))
    layers, shapes = [], {"input": shape}
    current = "input"
    for index in range(layer_count):
        last = index == layer_count - 1
        h, w, c = shapes[current]
        same_shape = [name for name, s in shapes.items() if s == (h, w, c) and name != current]
        kinds = ["conv2d", "depthwise2d", "separable2d", "dense"] + (["add"] if index > 0 else [])
        kind = "input_conv2d" if index == 0 and draw(st.booleans()) else draw(st.sampled_from(kinds))
        weight_bits = draw(st.sampled_from((2, 4, 8)))
        w_low, w_high = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
        zeros = draw(st.sampled_from((0.0, 0.5, 0.9)))
        name = f"l{index}"
        common = {"name": name, "inputs": (current,)}
        if kind in SPATIAL:
            kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
            padding = draw(st.sampled_from(("same", "valid")))
            if padding == "valid" and (kh > h or kw > w):
                padding = "same"
            stride = draw(st.integers(1, 3))
            oh = -(-h // stride) if padding == "same" else (h - kh) // stride + 1
            ow = -(-w // stride) if padding == "same" else (w - kw) // stride + 1
            cout = c if kind == "depthwise2d" else draw(channel_counts)
            spatial = {"weight_bits": weight_bits, "stride": stride, "padding": padding,
                       "bias": rng.integers(-300, 301, cout), **pool_fields(draw, oh, ow),
                       **neuron_fields(draw, rng, cout, last)}
            if kind in ("input_conv2d", "conv2d"):
                cls = InputConv2D if kind == "input_conv2d" else Conv2D
                layer = cls(**common, **spatial, weights=sparse_ints(rng, w_low, w_high, (kh, kw, c, cout), zeros))
            elif kind == "depthwise2d":
                layer = Depthwise2D(**common, **spatial, weights=sparse_ints(rng, w_low, w_high, (kh, kw, c), zeros))
            else:
                layer = Separable2D(**common, **spatial, weights=sparse_ints(rng, w_low, w_high, (kh, kw, c), zeros),
                                    pointwise=sparse_ints(rng, w_low, w_high, (c, cout), zeros),
                                    mid_bits=draw(st.sampled_from((2, 4, 8))),
                                    mid_multiplier=rng.integers(0, 1 << 10, c), mid_shift=rng.integers(0, 12, c))
        elif kind == "dense":
            cout = draw(channel_counts)
            layer = Dense(**common, weight_bits=weight_bits, bias=rng.integers(-300, 301, cout),
                          weights=sparse_ints(rng, w_low, w_high, (h * w * c, cout), zeros),
                          **neuron_fields(draw, rng, cout, last))
        else:
            partners = same_shape or [current]
            inputs = (current, *draw(st.lists(st.sampled_from(partners), min_size=1, max_size=3)))
            layer = Add(name=name, inputs=inputs, input_multipliers=rng.integers(0, 50, (len(inputs), c)),
                        **neuron_fields(draw, rng, c, last))
        layers.append(layer)
        try:
            model = es.Model(layers=list(layers), input_shape=shape, input_bits=input_bits)
        except es.ModelError as exc:
            assume(False)
            raise AssertionError from exc  # unreachable: assume raises
        shapes[name] = model.layers[-1].output_shape
        current = name
    return model


@st.composite
def inputs(draw, model):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n, t = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    density = draw(st.sampled_from((0.0, 0.1, 0.5, 1.0)))
    repeated = draw(st.booleans())  # a dense input shown at every timestep (the engine's static path)
    x = rng.integers(0, 1 << model.input_bits, (n, 1 if repeated else t, *model.input_shape))
    x = np.where(rng.random(x.shape) < density, x, 0).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(x, (n, t, *model.input_shape)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_native_equals_reference(cpu, data):
    model = data.draw(models())
    x5 = data.draw(inputs(model))
    expected, expected_stats = reference.run(model, x5)
    potentials, stats = cpu.run(model, x5)
    np.testing.assert_array_equal(potentials, expected)
    assert potentials.dtype == np.int32
    assert stats == expected_stats, f"\nnative:\n{stats}\nreference:\n{expected_stats}"


def test_every_kind_and_neuron_is_generated():
    """Guard against a strategy that silently stops producing some layer kinds."""
    seen_kinds, seen_neurons = set(), set()

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(models())
    def collect(model):
        for layer in model.layers:
            seen_kinds.add(layer.kind)
            seen_neurons.add(layer.neuron)

    collect()
    assert seen_kinds == {"input_conv2d", "conv2d", "depthwise2d", "separable2d", "dense", "add"}
    assert seen_neurons == {"relu", "if", "lif", "none"}


def test_saturation_and_rounding_edges(cpu):
    """Hand-picked extremes the random search rarely reaches: the none output saturating over many
    timesteps, requantization with shift 62 and multiplier 2^31 - 1, lif with leak 31."""
    big = Dense(name="big", weights=np.full((1, 2), 127), bias=np.array([2**31 - 1 - 127 * 255, -(2**31 - 1 - 127 * 255)]),
                weight_bits=8, neuron="none")
    relu = Dense(name="relu", weights=np.array([[127, -128, 1]]), bias=np.array([2**31 - 1 - 127 * 255, 0, -1]),
                 weight_bits=8, out_multiplier=2**31 - 1, out_shift=np.array([62, 0, 1]), activation_bits=8)
    lif = Dense(name="lif", inputs=("input",), weights=np.array([[100, -100]]), bias=np.array([7, 3]), weight_bits=8,
                neuron="lif", leak_shift=31, threshold=np.array([2**31 - 1, 1]))
    for layers in ([big], [relu, Dense(name="o", weights=np.ones((3, 1)), weight_bits=2, neuron="none")], [lif]):
        model = es.Model(layers=layers, input_shape=(1, 1, 1), input_bits=8)
        x5 = np.array([255, 0, 17, 255, 1, 255, 255, 255, 255, 255], np.uint8).reshape(1, 10, 1, 1, 1)
        expected, expected_stats = reference.run(model, x5)
        potentials, stats = cpu.run(model, x5)
        np.testing.assert_array_equal(potentials, expected)
        assert stats == expected_stats
