"""Fuzz target over model structure: fuzzed models and inputs, native == reference bit for bit.

    EDGESNN_FUZZ_LIB=/tmp/fuzz-build/libedgesnn_fuzz.so \
        python native/fuzz/fuzz_model.py CORPUS_DIR [libFuzzer flags]

The bytes drive the hypothesis strategies of tests/test_native_bitexact.py (`models()`,
`inputs()`: every layer kind, padding, stride, pool, neuron, bit width, timesteps, sparsity)
through `fuzz_one_input`, so libFuzzer's coverage of the engine steers the model generator
towards new kernel paths. Oracle: the model loads natively and a run equals edgesnn.reference
exactly, potentials and statistics; ReleaseSafe aborts on any overflow or out-of-bounds access.
"""

from __future__ import annotations

import sys

import atheris
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import harness
from edgesnn import native, reference

sys.path.insert(0, str(harness.ROOT / "tests"))
from test_native_bitexact import inputs, models  # noqa: E402  (the bit-exact suite's strategies)

LIBRARY = harness.fuzz_library()
DEVICE = native.CpuDevice(library=LIBRARY)


@settings(database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def native_equals_reference(data):
    model = data.draw(models())
    x5 = data.draw(inputs(model))
    expected, expected_stats = reference.run(model, x5)
    potentials, stats = DEVICE.run(model, x5)
    if not np.array_equal(potentials, expected):
        raise harness.FuzzFinding(f"potentials differ from the reference on {x5.shape}:\n{model.summary(print_fn=None)}")
    if stats.layers != expected_stats.layers:
        raise harness.FuzzFinding(f"statistics differ:\nnative:\n{stats}\nreference:\n{expected_stats}")


def main() -> None:
    counters = harness.register_coverage(LIBRARY)
    print(f"fuzz_model: {LIBRARY.path}, {counters} engine coverage counters", flush=True)
    atheris.Setup(sys.argv, native_equals_reference.hypothesis.fuzz_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
