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
