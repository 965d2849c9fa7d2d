"""Model.forward over time (docs/semantics.md, "Over time and early exit"): the output after every
timestep and the early exit, on the native and reference engines (randomized agreement of the two is
tests/test_native_bitexact.py::test_native_over_time_and_early_exit_equal_reference)."""

import numpy as np
import pytest

import edgesnn as es
from edgesnn import layers as L

DEVICES = ["reference", pytest.param("cpu", marks=pytest.mark.skipif(
    "cpu" not in es.devices(), reason="no native engine"))]


def counter_model() -> es.Model:
    """Two if neurons with threshold 1 and reset to zero: output c fires at every timestep its input
    channel c is >= 1, so the spike counts after t timesteps are easy to write down."""
    return es.Model([L.Dense(name="o", weights=np.eye(2, dtype=int), weight_bits=2, neuron="if", threshold=1,
                             reset="zero")], input_shape=(1, 1, 2))


def train(*columns) -> np.ndarray:
    """A spike train (N = 1, T, 1, 1, 2) from the per-timestep inputs of the two channels."""
    return np.array(list(zip(*columns)), np.uint8).reshape(1, -1, 1, 1, 2)


@pytest.mark.parametrize("device", DEVICES)
def test_per_timestep_gives_the_counts_so_far(device):
    model = counter_model()
    x5 = train([1, 0, 1, 1, 0, 1], [0, 1, 1, 0, 0, 0])
    trace = model.forward(x5, per_timestep=True, device=device)
    assert trace.shape == (1, 6, 1, 1, 2) and trace.dtype == np.int32
    assert trace[0, :, 0, 0].tolist() == [[1, 0], [1, 1], [2, 2], [3, 2], [3, 2], [4, 2]]
    np.testing.assert_array_equal(trace[:, -1], model.forward(x5, device=device))
    assert model.statistics.timesteps_used is None and model.statistics.timesteps == 6


@pytest.mark.parametrize("device", DEVICES)
def test_early_exit_stops_when_the_lead_reaches_the_margin(device):
    model = counter_model()
    # sample 0: channel 0 leads by 1, 1, 2 -> stops after timestep 3 with margin 2
    # sample 1: tied all along -> runs all 6 timesteps
    x5 = np.concatenate([train([1, 1, 1, 1, 1, 1], [0, 1, 0, 0, 0, 0]), train([1] * 6, [1] * 6)])
    out = model.forward(x5, early_exit=2, device=device)
    assert out[:, 0, 0].tolist() == [[3, 1], [6, 6]]
    stats = model.statistics
    assert stats.timesteps_used.tolist() == [3, 6] and stats.mean_timesteps == 4.5
    # the counts are over the 3 + 6 timesteps run: 9 output rows of 2 values, sample 0's 4 and sample 1's 12 spikes
    assert stats.layers[0].output_size == 9 * 2 and stats.layers[0].output_events == 4 + 12
    trace = model.forward(x5, early_exit=2, per_timestep=True, device=device)
    assert trace[0, :, 0, 0].tolist() == [[1, 0], [2, 1], [3, 1], [3, 1], [3, 1], [3, 1]]   # rows repeat after the stop
    assert "early exit: 4.50 timesteps" in str(model.statistics)


@pytest.mark.parametrize("device", DEVICES)
def test_early_exit_on_a_dense_input_and_predict(device):
    model = counter_model()
    x = np.array([[[[3, 0]]], [[[0, 1]]]], np.uint8)
    assert model.predict(x, timesteps=10, early_exit=4, device=device).tolist() == [0, 1]
    assert model.statistics.timesteps_used.tolist() == [4, 4]


def test_bad_margins_and_models_are_refused():
    model = counter_model()
    x = np.zeros((1, 1, 1, 2), np.uint8)
    for margin in (0, -1, 2.5, True, 2**31):
        with pytest.raises(ValueError, match="early_exit must be an integer margin"):
            model.forward(x, timesteps=3, early_exit=margin, device="reference")
    single = es.Model([L.Dense(name="o", weights=np.ones((2, 1), int), neuron="none")], input_shape=(1, 1, 2))
    with pytest.raises(ValueError, match="at least two output values"):
        single.forward(x, timesteps=3, early_exit=1, device="reference")
    assert single.forward(x, timesteps=3, per_timestep=True, device="reference").shape == (1, 3, 1, 1, 1)


def test_a_device_without_the_capability_says_so():
    class Plain(es.Device):
        name = "plain"

        def run(self, program, x5, timesteps=None):
            raise AssertionError("not reached")

    with pytest.raises(es.DeviceError, match="declares no runs_over_time capability"):
        counter_model().forward(np.zeros((1, 1, 1, 2), np.uint8), timesteps=2, per_timestep=True, device=Plain())


def test_the_c_abi_checks_the_trace_arguments():
    native = pytest.importorskip("edgesnn.native")
    loaded = native.NativeModel(counter_model().to_bytes())
    context = loaded._acquire()
    x5 = np.ones((2, 1, 1, 1, 2), np.uint8)
    output, trace, used = np.zeros(4, np.int32), np.zeros(4 * 3, np.int32), np.zeros(2, np.uint32)
    lib = loaded.library.lib

    def call(trace_values=trace.size, used_count=used.size, margin=1):
        return lib.esnn_run_batch_trace(context.handle, x5.ctypes.data, x5.size, 2, 1, 3, margin,
                                        output.ctypes.data, output.size, trace.ctypes.data, trace_values,
                                        used.ctypes.data, used_count, None, 0)

    assert call() == native.STATUS_OK and used.tolist() == [3, 3]
    for arguments, words in [(dict(trace_values=11), "trace: 11 values given"),
                             (dict(used_count=1), "timesteps_used: 1 entries"),
                             (dict(margin=-2), "early_exit_margin -2")]:
        assert call(**arguments) == 1   # ESNN_ERROR_ARGUMENT
        assert words in lib.esnn_context_message(context.handle).decode()
