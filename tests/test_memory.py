"""Memory: a dense input run for T timesteps is never copied T times, and a native model's memory
is freed when its Model goes, without the cyclic garbage collector (issue 15, items 5 and 6)."""

from __future__ import annotations

import gc
import inspect
import json
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import numpy as np
import pytest

import edgesnn as es
from edgesnn import reference
from edgesnn.layers import Conv2D, Dense, InputConv2D

SPIKING = Path(es.__file__).resolve().parent / "data" / "mnist_cnn_if.esnn"


def small_spiking_model() -> es.Model:
    rng = np.random.default_rng(0)
    layers = [
        InputConv2D(name="conv1", weights=rng.integers(-8, 8, (3, 3, 1, 4)), bias=rng.integers(-20, 20, 4),
                    weight_bits=4, padding="same", out_multiplier=3, out_shift=6, activation_bits=4),
        Conv2D(name="conv2", weights=rng.integers(-2, 2, (3, 3, 4, 4)), bias=0, weight_bits=2, padding="valid",
               neuron="if", threshold=6),
        Dense(name="out", weights=rng.integers(-128, 128, (5 * 5 * 4, 3)), bias=0, weight_bits=8, neuron="none"),
    ]
    return es.Model(layers=layers, input_shape=(7, 7, 1), metadata={"timesteps": 8})


def run_measured(code: str) -> dict:
    """Run `code` in a fresh interpreter; it prints one JSON object as its last line."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=3600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- item 5: a dense input with a timestep count goes to the engine as it is --------------------------


def test_check_input_presents_a_dense_input_at_every_timestep_without_copying_it():
    model = small_spiking_model()
    x = np.random.default_rng(1).integers(0, 256, (5, 7, 7, 1), dtype=np.uint8)
    x5 = model.check_input(x)                             # the model's own T = 8
    assert x5.shape == (5, 8, 7, 7, 1) and x5.strides[1] == 0 and not x5.flags.writeable
    assert np.shares_memory(x5, x)                        # the caller's frames, not a copy
    assert np.array_equal(x5[:, 5], x)


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_a_dense_input_gives_the_potentials_and_statistics_of_its_explicit_spike_train(device):
    if device not in es.devices():
        pytest.skip("no native engine built")
    model = small_spiking_model()
    x = np.random.default_rng(2).integers(0, 256, (6, 7, 7, 1), dtype=np.uint8)
    explicit = np.ascontiguousarray(np.repeat(x[:, None], 8, axis=1))
    dense = model.forward(x, device=device)
    dense_stats = model.statistics.as_dicts()
    assert np.array_equal(dense, model.forward(explicit, device=device))
    assert dense_stats == model.statistics.as_dicts()
    assert np.array_equal(dense, model.forward(x, device="reference"))


def test_the_reference_engine_runs_a_dense_input_without_materializing_the_timesteps():
    result = run_measured(textwrap.dedent("""
        import json, tracemalloc
        import numpy as np
        import edgesnn as es
        from edgesnn.layers import Conv2D, Dense, InputConv2D
        MODEL_SOURCE
        model = small_spiking_model()
        x = np.random.default_rng(0).integers(0, 256, (200, 7, 7, 1), dtype=np.uint8)
        peaks = {}
        for timesteps in (2, 64):
            model.forward(x[:1], timesteps=timesteps, device="reference")
            tracemalloc.start()
            model.forward(x, timesteps=timesteps, device="reference")
            peaks[timesteps] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        print(json.dumps({"peak_t2": peaks[2], "peak_t64": peaks[64], "input": x.nbytes}))
    """).replace("MODEL_SOURCE", inspect.getsource(small_spiking_model)))
    # the reference's working set is per timestep: 64 copies of the input would add 64 x its size
    assert result["peak_t64"] <= result["peak_t2"] + 8 * result["input"], result


@pytest.mark.skipif(not SPIKING.exists(), reason="the shipped spiking model is missing")
def test_peak_memory_of_10000_images_at_32_timesteps_is_at_most_twice_the_input_plus_the_outputs():
    if "cpu" not in es.devices():
        pytest.skip("no native engine built")
    result = run_measured(f"""
        import json, resource, tracemalloc
        import numpy as np
        import edgesnn as es
        model = es.Model.load({str(SPIKING)!r})
        assert model.metadata["timesteps"] == 32
        model.forward(np.zeros((1, *model.input_shape), np.uint8))   # loads the native model
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        x = np.random.default_rng(0).integers(0, 256, (10_000, *model.input_shape), dtype=np.uint8)
        potentials = model.forward(x)
        peak = tracemalloc.get_traced_memory()[1]
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"peak": peak, "input": x.nbytes, "output": potentials.nbytes,
                          "rss_growth_kib": rss_after - rss_before}}))
    """)
    print(f"\npeak {result['peak'] / 2**20:.1f} MiB (input {result['input'] / 2**20:.1f} MiB, output "
          f"{result['output'] / 2**20:.2f} MiB), max RSS grew {result['rss_growth_kib'] / 1024:.1f} MiB")
    assert result["peak"] <= 2 * result["input"] + result["output"], result


# -- item 6: no reference cycle between a native model and its contexts -------------------------------


def test_a_native_model_is_freed_with_its_model_without_the_cyclic_gc():
    native = pytest.importorskip("edgesnn.native")
    model = small_spiking_model()
    x = np.random.default_rng(3).integers(0, 256, (4, 7, 7, 1), dtype=np.uint8)
    gc.collect()
    gc.disable()
    try:
        model.forward(x, device="cpu")
        loaded = model.device_cache[native.LIBRARY.key]
        assert loaded._contexts, "the run should have left an idle context in the pool"
        loaded_ref = weakref.ref(loaded)
        context_ref = weakref.ref(loaded._contexts[0])
        arena_ref = weakref.ref(loaded._contexts[0].arena)
        del loaded, model
        assert loaded_ref() is None and context_ref() is None and arena_ref() is None
    finally:
        gc.enable()


def test_a_context_keeps_the_model_memory_alive_while_it_runs():
    native = pytest.importorskip("edgesnn.native")
    model = small_spiking_model()
    loaded = native.NativeModel(model.to_bytes())
    context = loaded._acquire()
    x5 = np.random.default_rng(4).integers(0, 256, (2, 1, 7, 7, 1), dtype=np.uint8)
    expected, _ = context.run(x5, 8)
    del loaded
    gc.collect()
    again, _ = context.run(x5, 8)           # the model memory the handle points into is still there
    assert np.array_equal(expected, again)


# -- the arena plans (native/src/planner.zig): fast and lean, bit-exact, lean the smaller ---------------

DATA = Path(es.__file__).resolve().parent / "data"
SHIPPED = ("kws_dscnn_4bit.esnn", "mnist_cnn_4bit.esnn", "mnist_cnn_if.esnn")


def native_plans(model):
    native = pytest.importorskip("edgesnn.native")
    data = model.to_bytes()
    return native.NativeModel(data), native.NativeModel(data, plan="lean")


@pytest.mark.parametrize("name", SHIPPED)
def test_both_plans_are_bit_exact_and_the_lean_one_is_smaller(name):
    model = es.Model.load(DATA / name)
    fast, lean = native_plans(model)
    assert fast.plan_arena_bytes == lean.plan_arena_bytes == {"fast": fast.arena_bytes, "lean": lean.arena_bytes}
    assert lean.arena_bytes < fast.arena_bytes
    rng = np.random.default_rng(3)
    x = rng.integers(0, 1 << model.input_bits, (2, *model.input_shape)).astype(np.uint8)
    for timesteps in (1, 3):
        repeated = np.ascontiguousarray(x[:, None])
        per_step = rng.integers(0, 1 << model.input_bits, (2, timesteps, *model.input_shape)).astype(np.uint8)
        for x5 in (repeated, per_step):
            expected, expected_stats = reference.run(model, np.ascontiguousarray(
                np.broadcast_to(x5, (2, timesteps, *model.input_shape))))
            for loaded in (fast, lean):
                potentials, counts = loaded.run(x5, timesteps)
                np.testing.assert_array_equal(potentials, expected, err_msg=loaded.plan)
                got = es.Statistics.from_counts(model.layers, counts, 2, timesteps, "cpu")
                assert got == expected_stats, loaded.plan


def conv_chain(depth: int) -> es.Model:
    rng = np.random.default_rng(depth)
    relu = {"weight_bits": 4, "padding": "same", "out_multiplier": 1, "out_shift": 6, "activation_bits": 4}
    layers = [InputConv2D(name="c0", weights=rng.integers(-8, 8, (3, 3, 1, 16)), **relu)]
    layers += [Conv2D(name=f"c{i}", weights=rng.integers(-8, 8, (3, 3, 16, 16)), **relu) for i in range(1, depth)]
    layers.append(Dense(name="out", weights=rng.integers(-8, 8, (12 * 12 * 16, 4)), weight_bits=4, neuron="none"))
    return es.Model(layers=layers, input_shape=(12, 12, 1))


def test_a_chain_reuses_its_buffers_so_its_arena_does_not_grow_with_depth():
    """Liveness-based reuse: each layer's activations and scratch are freed after their last reader,
    so a chain of 8 equal convs needs the arena of a chain of 3 but for a counter per layer (the lean
    plan keeps no per-layer frames; the fast plan keeps one painted frame per conv)."""
    def aligned(n: int) -> int:
        return -(-n // 64) * 64

    short, long = native_plans(conv_chain(3)), native_plans(conv_chain(8))
    per_layer_counters = aligned(9 * 8) - aligned(4 * 8)   # one u64 of synaptic ops per layer
    assert long[1].arena_bytes - short[1].arena_bytes == per_layer_counters
    frame_bytes = aligned(14 * 14 * 16 + 4)                # a conv's padded input (3x3, same, 16 channels)
    assert long[0].arena_bytes - short[0].arena_bytes == per_layer_counters + 5 * frame_bytes


def test_the_plan_is_checked_at_the_c_api():
    native = pytest.importorskip("edgesnn.native")
    import ctypes

    data = small_spiking_model().to_bytes()
    with pytest.raises(ValueError, match="plan 'tiny', expected one of 'fast', 'lean'"):
        native.NativeModel(data, plan="tiny")
    lib = native.LIBRARY.lib
    source = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    memory = ctypes.create_string_buffer(1 << 16)
    message = ctypes.create_string_buffer(256)
    handle = ctypes.c_void_p()
    status = lib.esnn_model_load_plan(source, len(data), memory, len(memory), 2, ctypes.byref(handle), message, 256)
    assert status == 1 and handle.value is None          # ESNN_ERROR_ARGUMENT
    assert message.value.decode() == "plan 2, expected ESNN_PLAN_FAST (0) or ESNN_PLAN_LEAN (1)"
    assert lib.esnn_model_load_plan(source, len(data), memory, len(memory), 1, ctypes.byref(handle), message, 256) == 0
    assert lib.esnn_model_plan_arena_bytes(handle, 2) == 0
    assert lib.esnn_model_plan_arena_bytes(handle, 1) == lib.esnn_model_arena_bytes(handle)
