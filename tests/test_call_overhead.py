"""model.forward on the cpu device through its per-call fast path: the same results, statistics and
errors as the general path (no timings here; benchmarks/engine.py measures the per-call floor)."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest

import edgesnn as es
from edgesnn import layers as L

native = pytest.importorskip("edgesnn.native")


def twelve_layer_model(input_bits: int = 8, seed: int = 0) -> es.Model:
    """A DS-CNN-like chain: input conv, five depthwise + pointwise pairs, dense output (12 layers);
    shifts chosen so that every layer keeps 25-75 % of its outputs active on `inputs`."""
    rng = np.random.default_rng(seed)

    def weights(shape):
        return rng.integers(-6, 8, shape)

    layers = [L.InputConv2D(name="conv", weights=weights((3, 3, 1, 8)), stride=2, weight_bits=4,
                            activation_bits=4, out_multiplier=1, out_shift=7 if input_bits == 8 else 3)]
    for block in range(5):
        layers.append(L.Depthwise2D(name=f"dw{block}", weights=weights((3, 3, 8)), weight_bits=4,
                                    activation_bits=4, out_multiplier=1, out_shift=3))
        layers.append(L.Conv2D(name=f"pw{block}", weights=weights((1, 1, 8, 8)), weight_bits=4,
                               activation_bits=4, out_multiplier=1, out_shift=4,
                               pool="global_avg" if block == 4 else None))
    layers.append(L.Dense(name="fc", weights=rng.integers(-7, 8, (8, 12)), weight_bits=4, neuron="none"))
    return es.Model(layers, input_shape=(12, 10, 1), input_bits=input_bits)


def inputs(model: es.Model, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 1 << model.input_bits, (n, *model.input_shape))
    return np.where(rng.random(x.shape) < 0.6, x, 0).astype(np.uint8)


def reference_run(model: es.Model, x, **kwargs) -> tuple[np.ndarray, es.Statistics]:
    potentials = model.forward(x, device="reference", **kwargs)
    return potentials, model.statistics


def test_twelve_layers_match_reference_with_statistics_of_each_run():
    model = twelve_layer_model()
    assert len(model.layers) == 12
    for seed in range(3):
        x = inputs(model, 1, seed)
        expected, expected_stats = reference_run(model, x)
        np.testing.assert_array_equal(model.forward(x, device="cpu"), expected)
        stats = model.statistics
        assert stats == expected_stats and stats.device == "cpu"
        assert [s.name for s in stats] == [l.name for l in model.layers]
        assert stats.samples == 1 and stats.timesteps == 1
        assert stats["conv"].input_events == np.count_nonzero(x)
        assert all(0 < s.output_events < s.output_size for s in stats.layers[:-1])  # a live network


def test_statistics_are_those_of_the_last_run_even_when_read_late():
    model = twelve_layer_model()
    x1, x2 = inputs(model, 1, 1), inputs(model, 3, 2)
    _, stats2 = reference_run(model, x2)
    _, stats1 = reference_run(model, x1)
    model.forward(x1, device="cpu")
    model.forward(x2, device="cpu")   # statistics of x1 never read
    assert model.statistics == stats2 and model.statistics.samples == 3
    read_twice = model.statistics
    model.forward(x1, device="cpu")
    native.native_model(model).run(x2[:, None])   # another run in the same engine context
    assert model.statistics == stats1
    assert read_twice == stats2       # a Statistics read earlier is not changed by a later run


def test_results_of_earlier_calls_are_not_overwritten():
    model = twelve_layer_model()
    xs = [inputs(model, 1, seed) for seed in range(4)]
    outputs = [model.forward(x, device="cpu") for x in xs]
    for x, output in zip(xs, outputs):
        np.testing.assert_array_equal(output, reference_run(model, x)[0])
    loaded = native.native_model(model)
    first = loaded.run(xs[0][:, None])
    second = loaded.run(xs[1][:, None])
    assert not np.array_equal(first[1], second[1])
    np.testing.assert_array_equal(first[0], outputs[0])
    np.testing.assert_array_equal(loaded.run(xs[0][:, None])[1], first[1])


def test_batch_sizes_change_between_calls():
    model = twelve_layer_model()
    big = (native._OUTPUT_KEPT_BYTES // (4 * 12)) + 5   # an output too large for a context to keep
    for n in (1, 3, 1, big, big, 2):
        x = inputs(model, n, n)
        potentials = model.forward(x, device="cpu")
        assert potentials.shape == (n, 1, 1, 12) and potentials.flags.owndata
        if n < 100:
            np.testing.assert_array_equal(potentials, reference_run(model, x)[0])
        assert model.statistics.samples == n


def test_inputs_off_the_fast_path_give_the_same_results():
    model = twelve_layer_model()
    x = inputs(model, 2, 5)
    expected = reference_run(model, x)[0]
    readonly = x.copy()
    readonly.setflags(write=False)
    flipped = np.ascontiguousarray(x[:, ::-1])[:, ::-1]     # the same values, not C-contiguous
    assert not flipped.flags.c_contiguous
    for variant in (readonly, flipped, x.astype(np.int32), x.tolist(), x[:, None], np.repeat(x[:, None], 1, 1)):
        np.testing.assert_array_equal(model.forward(variant, device="cpu"), expected)


def test_dense_input_over_timesteps_matches_reference():
    model = twelve_layer_model()
    x = inputs(model, 2, 6)
    expected, expected_stats = reference_run(model, x, timesteps=3)
    np.testing.assert_array_equal(model.forward(x, timesteps=3, device="cpu"), expected)
    assert model.statistics == expected_stats and model.statistics.timesteps == 3


@pytest.mark.parametrize("x, error, message", [
    (np.zeros((2, 12, 10), np.uint8), ValueError, "rank 3"),
    (np.zeros((12, 10, 1), np.uint8), ValueError, "add a batch axis"),
    (np.zeros((1, 12, 9, 1), np.uint8), ValueError, r"got shape \(1, 12, 9, 1\)"),
    (np.zeros((1, 12, 10, 1), np.float32), ValueError, "got dtype float32"),
    (np.full((1, 12, 10, 1), np.nan), ValueError, "contains NaN"),
    (np.zeros((0, 12, 10, 1), np.uint8), ValueError, "empty batch"),
    (np.full((1, 12, 10, 1), 256, np.int32), ValueError, r"\[0, 255\].*max 256"),
    (np.full((1, 12, 10, 1), -1, np.int16), ValueError, "min -1"),
    (np.array(["a"]), ValueError, "dtype <U1"),
])
def test_bad_input_on_cpu_raises_clear_errors(x, error, message):
    model = twelve_layer_model()
    with pytest.raises(error, match=message):
        model.forward(x, device="cpu")


def test_uint8_above_input_bits_is_refused_naming_the_value():
    model = twelve_layer_model(input_bits=4)
    x = inputs(model, 2, 7)
    x[1, 2, 3, 0] = 16
    with pytest.raises(ValueError, match=r"\[0, 15\] \(input_bits=4\).*sample 1 timestep 0 pixel \(2, 3\)"):
        model.forward(x, device="cpu")
    with pytest.raises(ValueError, match=r"\[0, 15\].*max 16"):
        model.forward(x, device="reference")
    with pytest.raises(ValueError, match=r"\[0, 15\].*max 16"):
        model.forward(x.astype(np.int64), device="cpu")   # not uint8: the Python check, before any cast


def test_each_model_runs_its_own_parameters():
    a, b = twelve_layer_model(seed=1), twelve_layer_model(seed=2)
    x = inputs(a, 1, 8)
    out_a, out_b = a.forward(x, device="cpu"), b.forward(x, device="cpu")
    np.testing.assert_array_equal(out_a, reference_run(a, x)[0])
    np.testing.assert_array_equal(out_b, reference_run(b, x)[0])
    assert not np.array_equal(out_a, out_b)


def test_a_copied_model_runs_and_loads_its_own_engine():
    model = twelve_layer_model()
    x = inputs(model, 1, 9)
    expected = model.forward(x, device="cpu")
    for clone in (copy.deepcopy(model), copy.copy(model)):
        assert clone.device_cache == {}
        np.testing.assert_array_equal(clone.forward(x, device="cpu"), expected)
        assert native.native_model(clone) is not native.native_model(model)
    assert model.statistics == clone.statistics


def test_two_threads_forward_on_one_model():
    model = twelve_layer_model()
    xs = [[inputs(model, 1, 100 * t + i) for i in range(200)] for t in range(2)]
    expected = [[reference_run(model, x)[0] for x in xs_t[:10]] for xs_t in xs]
    results: dict[int, list] = {}
    barrier = threading.Barrier(2)

    def work(t):
        barrier.wait()
        results[t] = [model.forward(x, device="cpu") for x in xs[t]]

    threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for t in range(2):
        for got, want in zip(results[t], expected[t]):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(results[t][-1], model.forward(xs[t][-1], device="cpu"))


# -- NativeModel.runner: buffers bound once (esnn_context_bind / esnn_run_bound) ------------------------------

def test_runner_matches_the_reference_and_the_counts_of_run():
    model = twelve_layer_model()
    loaded = native.native_model(model)
    runner = loaded.runner()
    for seed in range(4):
        x5 = inputs(model, 1, 20 + seed)[:, None]
        expected, _ = reference_run(model, x5[:, 0])
        got = runner(x5)
        np.testing.assert_array_equal(got, expected)
        potentials, counts = loaded.run(x5)
        np.testing.assert_array_equal(runner.counts, counts)
        assert got is not runner.output and got.flags.owndata   # a copy: the next run does not change it
    kept = runner(inputs(model, 1, 30)[:, None])
    runner(inputs(model, 1, 31)[:, None])
    np.testing.assert_array_equal(kept, reference_run(model, inputs(model, 1, 30))[0])


def test_runner_of_a_batch_over_timesteps_and_invoke_on_its_own_input():
    model = twelve_layer_model()
    runner = native.native_model(model).runner(batch=3, timesteps=2)
    x = inputs(model, 3, 40)
    runner.input[:] = x[:, None]     # written in place, then run without a copy
    runner.invoke()
    expected, expected_stats = reference_run(model, x, timesteps=2)
    np.testing.assert_array_equal(runner.output, expected)
    model.forward(x, timesteps=2, device="cpu")
    assert model.statistics == expected_stats
    np.testing.assert_array_equal(runner.counts, native.native_model(model).run(x[:, None], 2)[1])
    sequence = native.native_model(model).runner(batch=1, timesteps=2, input_timesteps=2)
    frames = inputs(model, 2, 41)[None]                 # (1, T = 2, H, W, C): a frame per step
    np.testing.assert_array_equal(sequence(frames), model.forward(frames, device="reference"))


@pytest.mark.parametrize("x, error, message", [
    (np.zeros((1, 1, 12, 10, 1), np.int32), TypeError, "uint8 array of shape"),
    ([[0]], TypeError, "got list"),
    (np.zeros((1, 12, 10, 1), np.uint8), ValueError, r"got shape \(1, 12, 10, 1\)"),
    (np.zeros((2, 1, 12, 10, 1), np.uint8), ValueError, r"got shape \(2, 1, 12, 10, 1\)"),
    (np.zeros((1, 1, 1, 1, 1), np.uint8), ValueError, "got shape"),   # would broadcast: refused
])
def test_runner_refuses_input_of_another_type_or_shape(x, error, message):
    runner = native.native_model(twelve_layer_model()).runner()
    with pytest.raises(error, match=message):
        runner(x)


def test_runner_refuses_values_above_input_bits_naming_them_and_runs_on_after():
    model = twelve_layer_model(input_bits=4)
    runner = native.native_model(model).runner()
    x5 = inputs(model, 1, 50)[:, None]
    bad = x5.copy()
    bad[0, 0, 2, 3, 0] = 16
    with pytest.raises(ValueError, match=r"\[0, 15\] \(input_bits=4\).*sample 0 timestep 0 pixel \(2, 3\)"):
        runner(bad)
    np.testing.assert_array_equal(runner(x5), reference_run(model, x5[:, 0])[0])
    non_contiguous = np.ascontiguousarray(np.swapaxes(x5, 2, 3)).swapaxes(2, 3)
    assert not non_contiguous.flags.c_contiguous
    np.testing.assert_array_equal(runner(non_contiguous), reference_run(model, x5[:, 0])[0])


def test_runner_shapes_outside_the_engine_limits_are_refused():
    loaded = native.native_model(twelve_layer_model())
    for kwargs in ({"batch": 0}, {"timesteps": 0}, {"timesteps": 3, "input_timesteps": 2}):
        with pytest.raises(ValueError, match="runner needs"):
            loaded.runner(**kwargs)
    with pytest.raises(ValueError, match="timesteps"):
        loaded.runner(timesteps=2**30)       # above the engine's limit: esnn_context_bind says so


def test_bound_run_c_calls_check_their_arguments():
    """esnn_run_bound without a bind, and binds the engine must refuse, through the C functions."""
    loaded = native.native_model(twelve_layer_model())
    context = native._Context(loaded)
    lib = loaded.library.lib
    assert lib.esnn_run_bound(context.handle) == native.STATUS_ARGUMENT
    assert b"no batch is bound" in lib.esnn_context_message(context.handle)
    assert lib.esnn_run_bound(None) == native.STATUS_ARGUMENT
    x = np.zeros((1, 1, 12, 10, 1), np.uint8)
    out = np.zeros((1, 1, 1, 12), np.int32)
    address = native._address
    assert lib.esnn_context_bind(context.handle, address(x), x.size - 1, 1, 1, 1, address(out), out.size,
                                 None, 0) == native.STATUS_ARGUMENT
    assert b"input: 119 values given" in lib.esnn_context_message(context.handle)
    assert lib.esnn_context_bind(context.handle, None, x.size, 1, 1, 1, address(out), out.size,
                                 None, 0) == native.STATUS_ARGUMENT
    assert lib.esnn_context_bind(context.handle, address(x), x.size, 1, 1, 1, address(out), out.size,
                                 None, 3) == native.STATUS_OK          # stats NULL: not counted
    assert lib.esnn_run_bound(context.handle) == native.STATUS_OK
    assert lib.esnn_context_bind(context.handle, address(x), x.size, 1, 1, 1, address(out), out.size - 1,
                                 None, 0) == native.STATUS_ARGUMENT
    assert lib.esnn_run_bound(context.handle) == native.STATUS_ARGUMENT   # a failed bind leaves none bound


def test_single_samples_through_the_bound_buffers_follow_their_timesteps():
    """A batch-1 run of one frame goes through the context's bound buffers (rebound when the timestep
    count changes): each call the reference's result and statistics, an engine refusal still clear."""
    model = twelve_layer_model()
    x = inputs(model, 1, 60)
    for timesteps in (1, 3, 3, 1, 2):
        expected, expected_stats = reference_run(model, x, timesteps=timesteps)
        np.testing.assert_array_equal(model.forward(x, timesteps=timesteps, device="cpu"), expected)
        assert model.statistics == expected_stats
    with pytest.raises(es.DeviceError, match="timesteps"):
        native.native_model(model).run(x[:, None], 2**30)       # above the engine's limit
    np.testing.assert_array_equal(model.forward(x, device="cpu"), reference_run(model, x)[0])
