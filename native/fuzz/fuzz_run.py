"""Fuzz target over esnn_run_batch: valid models, fuzzed inputs, timesteps and argument sizes.

    EDGESNN_FUZZ_LIB=/tmp/fuzz-build/libedgesnn_fuzz.so \
        python native/fuzz/fuzz_run.py CORPUS_DIR [libFuzzer flags]

The input bytes choose a model (harness.valid_models()), batch 1..2, timesteps 1..4, whether one
frame repeats or every timestep has its own, usually-correct argument sizes (sometimes one is
off by one, zero or NULL) and the input values (sometimes above 2^input_bits - 1); a quarter of the
runs go through esnn_run_batch_trace (the output after every timestep, an early-exit margin 0..20,
the timesteps each sample ran; sometimes a trace or timesteps_used array one off). Oracle:
  - a wrong argument -> ESNN_ERROR_ARGUMENT with a message; a value out of range -> ESNN_ERROR_INPUT;
  - otherwise ESNN_OK, and potentials and statistics equal edgesnn.reference exactly. Each model
    keeps one context for the whole run, so state left over from an earlier input would show.
"""

from __future__ import annotations

import ctypes
import sys

import atheris
import numpy as np

import harness
from edgesnn import native, reference

LIBRARY = harness.fuzz_library()
STATUS_ARGUMENT = 1
FAULTS = ("input_short", "input_long", "output_short", "output_long", "stats_short", "stats_long",
          "timesteps_zero", "input_timesteps_wrong", "batch_zero", "input_null", "output_null")


class LoadedModel:
    """A valid model loaded once by the fuzzing build, with one context reused by every input."""

    def __init__(self, model):
        self.model = model
        self.engine = native.NativeModel(model.to_bytes(), LIBRARY)
        self.context = self.engine._acquire()
        self.input_max = (1 << model.input_bits) - 1


MODELS = [LoadedModel(model) for model in harness.valid_models().values()]


def c_buffer(ctype, values: np.ndarray | int):
    """A ctypes array holding `values` (or that many zeros); at least one element, never NULL."""
    if isinstance(values, int):
        return (ctype * max(values, 1))()
    return (ctype * max(values.size, 1)).from_buffer_copy(values.tobytes() or bytes(ctypes.sizeof(ctype)))


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    loaded = MODELS[fdp.ConsumeIntInRange(0, len(MODELS) - 1)]
    fault = FAULTS[fdp.ConsumeIntInRange(0, len(FAULTS) - 1)] if fdp.ConsumeIntInRange(0, 7) == 0 else None
    batch = fdp.ConsumeIntInRange(1, 2)
    timesteps = fdp.ConsumeIntInRange(1, 4)
    input_timesteps = 1 if fdp.ConsumeBool() else timesteps
    clip = fdp.ConsumeIntInRange(0, 3) != 0  # usually keep values in range
    frame_values = int(np.prod(loaded.model.input_shape))
    raw = fdp.ConsumeBytes(batch * input_timesteps * frame_values)
    x = np.frombuffer(raw.ljust(batch * input_timesteps * frame_values, b"\0"), dtype=np.uint8)
    if clip:
        x = np.minimum(x, loaded.input_max)
    x5 = x.reshape(batch, input_timesteps, *loaded.model.input_shape)
    if fdp.ConsumeIntInRange(0, 3) == 0:
        margin = fdp.ConsumeIntInRange(0, 20)
        trace_fault = (None, None, "trace_short", "used_long")[fdp.ConsumeIntInRange(0, 3)]
        run_trace_and_check(loaded, np.minimum(x5, loaded.input_max), timesteps, margin, trace_fault)
        return
    run_and_check(loaded, x5, timesteps, fault)


def run_and_check(loaded: LoadedModel, x5: np.ndarray, timesteps: int, fault: str | None) -> None:
    lib = LIBRARY.lib
    batch, input_timesteps = x5.shape[:2]
    layer_count = len(loaded.model.layers)
    output_values = batch * int(np.prod(loaded.model.output_shape))
    input_values, stats_count = x5.size, layer_count
    call_batch, call_timesteps, call_input_timesteps = batch, timesteps, input_timesteps
    if fault == "input_short": input_values -= 1
    if fault == "input_long": input_values += 1
    if fault == "output_short": output_values -= 1
    if fault == "output_long": output_values += 1
    if fault == "stats_short": stats_count -= 1
    if fault == "stats_long": stats_count += 1
    if fault == "timesteps_zero": call_timesteps = 0
    if fault == "input_timesteps_wrong": call_input_timesteps = timesteps + 1
    if fault == "batch_zero": call_batch = 0
    source = c_buffer(ctypes.c_uint8, x5.reshape(-1)[:input_values]) if input_values <= x5.size else \
        c_buffer(ctypes.c_uint8, np.concatenate([x5.reshape(-1), np.zeros(1, np.uint8)]))
    output = c_buffer(ctypes.c_int32, output_values)
    stats = (native._LayerStats * max(stats_count, 1))()
    status = lib.esnn_run_batch(loaded.context.handle, None if fault == "input_null" else source, input_values,
                                call_batch, call_input_timesteps, call_timesteps,
                                None if fault == "output_null" else output, output_values, stats, stats_count)
    message = lib.esnn_context_message(loaded.context.handle)
    harness.check_status(LIBRARY, status, message, "esnn_run_batch")
    if fault is not None:
        if status != STATUS_ARGUMENT:
            raise harness.FuzzFinding(f"fault {fault}: expected ESNN_ERROR_ARGUMENT, got {LIBRARY.status_name(status)}")
        return
    if x5.max(initial=0) > loaded.input_max:
        if status != native.STATUS_INPUT:
            raise harness.FuzzFinding(f"input above {loaded.input_max}: expected ESNN_ERROR_INPUT, got "
                                      f"{LIBRARY.status_name(status)}")
        return
    if status != native.STATUS_OK:
        raise harness.FuzzFinding(f"a correct run failed ({LIBRARY.status_name(status)}): {message!r}")
    check_against_reference(loaded, x5, timesteps, output, stats)


def run_trace_and_check(loaded: LoadedModel, x5: np.ndarray, timesteps: int, margin: int, fault: str | None) -> None:
    """esnn_run_batch_trace with valid input: ESNN_ERROR_ARGUMENT for a wrong trace or timesteps_used
    size, else the trace, the timesteps used and the statistics equal the reference's exactly."""
    lib = LIBRARY.lib
    batch = x5.shape[0]
    output_values = batch * int(np.prod(loaded.model.output_shape))
    trace_values = output_values * timesteps - (fault == "trace_short")
    used_count = batch + (fault == "used_long")
    source = c_buffer(ctypes.c_uint8, x5.reshape(-1))
    output, trace = c_buffer(ctypes.c_int32, output_values), c_buffer(ctypes.c_int32, trace_values)
    used = c_buffer(ctypes.c_uint32, used_count)
    stats = (native._LayerStats * len(loaded.model.layers))()
    status = lib.esnn_run_batch_trace(loaded.context.handle, source, x5.size, batch, x5.shape[1], timesteps, margin,
                                      output, output_values, trace, trace_values, used, used_count, stats,
                                      len(loaded.model.layers))
    harness.check_status(LIBRARY, status, lib.esnn_context_message(loaded.context.handle), "esnn_run_batch_trace")
    if fault is not None:
        if status != STATUS_ARGUMENT:
            raise harness.FuzzFinding(f"trace fault {fault}: expected ESNN_ERROR_ARGUMENT, got {LIBRARY.status_name(status)}")
        return
    if status != native.STATUS_OK:
        raise harness.FuzzFinding(f"a correct trace run failed ({LIBRARY.status_name(status)})")
    every_step = np.ascontiguousarray(np.broadcast_to(x5, (batch, timesteps, *x5.shape[2:])))
    expected_trace = {}
    expected, expected_stats = reference.run(loaded.model, every_step, trace=expected_trace, early_exit=margin or None)
    shape = expected_trace["outputs"].shape
    if not np.array_equal(np.frombuffer(trace, np.int32, count=int(np.prod(shape))).reshape(shape), expected_trace["outputs"]):
        raise harness.FuzzFinding(f"trace differs from the reference on {x5.shape} T={timesteps} margin {margin}")
    if not np.array_equal(np.frombuffer(output, np.int32, count=expected.size).reshape(expected.shape), expected):
        raise harness.FuzzFinding(f"trace run's output differs from the reference, margin {margin}")
    if list(used)[:batch] != expected_trace["timesteps_used"].tolist():
        raise harness.FuzzFinding(f"timesteps used {list(used)[:batch]}, reference {expected_trace['timesteps_used']}")
    check_stats(stats, expected_stats, "trace run, ")


def check_against_reference(loaded: LoadedModel, x5: np.ndarray, timesteps: int, output, stats) -> None:
    every_step = np.broadcast_to(x5, (x5.shape[0], timesteps, *x5.shape[2:]))
    expected, expected_stats = reference.run(loaded.model, np.ascontiguousarray(every_step))
    potentials = np.frombuffer(output, dtype=np.int32, count=expected.size).reshape(expected.shape)
    if not np.array_equal(potentials, expected):
        raise harness.FuzzFinding(f"potentials differ from the reference on {x5.shape} T={timesteps}")
    check_stats(stats, expected_stats)


def check_stats(stats, expected_stats, run: str = "") -> None:
    """Every field of the native per-layer statistics equals the reference's (`run`: the message's prefix)."""
    for got, want in zip(stats, expected_stats.layers):
        for name in native.STATS_FIELDS:
            if getattr(got, name) != getattr(want, name):
                raise harness.FuzzFinding(f"{run}layer {want.name} {name}: native {getattr(got, name)}, "
                                          f"reference {getattr(want, name)}")


def main() -> None:
    counters = harness.register_coverage(LIBRARY)
    print(f"fuzz_run: {LIBRARY.path}, {counters} engine coverage counters, {len(MODELS)} models", flush=True)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
