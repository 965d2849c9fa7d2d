"""Findings of the fuzz runs (docs/fuzzing.md) as regression tests, on a ReleaseSafe build:

- every input kept in tests/data/fuzz/ replays cleanly through the fuzz targets' oracle
  (native/fuzz/replay.py, in a subprocess so a crash fails the test instead of ending pytest);
- each finding also gets a direct test of the behaviour it broke;
- a short smoke fuzz of each target (atheris, when installed) still runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgesnn as es
from edgesnn import reference
from edgesnn.layers import Add, Conv2D, Dense, InputConv2D

native = pytest.importorskip("edgesnn.native")

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "native" / "fuzz"
FINDINGS = ROOT / "tests" / "data" / "fuzz"
SMOKE_SECONDS = 4


@pytest.fixture(scope="module")
def safe_library_path(engine_build) -> Path:
    """The ReleaseSafe build of this tree (tests/conftest.py: one per session, shared with other files)."""
    return engine_build("native")


def test_every_kept_load_input_replays_cleanly(safe_library_path):
    inputs = sorted((FINDINGS / "load").iterdir())
    assert inputs, "tests/data/fuzz/load/ is empty"
    result = subprocess.run([sys.executable, str(FUZZ / "replay.py"), str(safe_library_path), *map(str, inputs)],
                            capture_output=True, text=True, timeout=300, cwd=FUZZ)
    assert result.returncode == 0, f"replay ended with {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert len(result.stdout.splitlines()) == len(inputs)


def negative_add_model() -> es.Model:
    """A residual add whose second branch is subtracted (multiplier -3) and one mixed-sign one."""
    rng = np.random.default_rng(5)
    return es.Model([
        InputConv2D(name="stem", weights=rng.integers(-8, 8, (3, 3, 2, 6)), weight_bits=4, out_multiplier=3,
                    out_shift=5, activation_bits=4),
        Conv2D(name="branch", weights=rng.integers(-8, 8, (3, 3, 6, 6)), weight_bits=4, out_multiplier=2,
               out_shift=6, activation_bits=4),
        Add(name="residual", inputs=("stem", "branch"), input_multipliers=[[1] * 6, [-3] * 6],
            out_multiplier=1, out_shift=1, activation_bits=8),
        Add(name="mixed", inputs=("residual", "stem"), input_multipliers=rng.integers(-2**20, 2**20, (2, 6)),
            neuron="none"),
    ], input_shape=(7, 7, 2), input_bits=8)


def test_add_with_negative_multipliers_loads_and_equals_the_reference(safe_library_path):
    """Finding add_negative_input_multiplier: docs/semantics.md allows multipliers of any sign."""
    model = negative_add_model()
    engine = native.NativeModel(model.to_bytes(), native.Library(safe_library_path))
    x5 = np.random.default_rng(1).integers(0, 256, (3, 2, 7, 7, 2)).astype(np.uint8)
    potentials, counts = engine.run(x5)
    expected, expected_stats = reference.run(model, x5)
    np.testing.assert_array_equal(potentials, expected)
    assert (expected < 0).any(), "the subtracted branch should drive some potentials negative"
    assert counts[:, 4].tolist() == [layer.synaptic_ops for layer in expected_stats.layers]


def test_add_overflow_bound_counts_negative_multipliers_by_magnitude(safe_library_path):
    """sum_i |m[i,c]| * a_max_i > 2^31 - 1 must be refused (overflow), whatever the signs."""
    layers = [Dense(name="d", weights=np.ones((4, 3), int), weight_bits=2, activation_bits=8, out_shift=0),
              Add(name="a", inputs=("d", "d"), input_multipliers=[[-2**30] * 3, [2**22] * 3], neuron="none")]
    with pytest.raises(es.ModelError, match="int32"):
        es.Model(layers, input_shape=(1, 1, 4), input_bits=8)  # the Python side refuses it to begin with
    ok = es.Model([layers[0], Add(name="a", inputs=("d", "d"), input_multipliers=[[-2**22] * 3, [2**22] * 3],
                                  neuron="none")], input_shape=(1, 1, 4), input_bits=8)
    data = bytearray(ok.to_bytes())
    big = (-2**30).to_bytes(4, "little", signed=True)
    small = (2**22).to_bytes(4, "little", signed=True)
    position = data.index((-2**22).to_bytes(4, "little", signed=True) * 3)
    data[position:position + 12] = big * 3  # now 2^30 * 255 + 2^22 * 255 > 2^31 - 1
    assert data[position + 12:position + 24] == small * 3
    sys.path.insert(0, str(FUZZ))
    import harness

    with pytest.raises(es.FormatError, match=r"\(overflow\)"):
        native.NativeModel(harness.fix_checksums(bytes(data)), native.Library(safe_library_path))


@pytest.mark.parametrize("neuron", ["if", "lif"])
def test_spiking_state_at_int32_min_does_not_overflow(safe_library_path, neuron):
    """Finding if_state_near_int32_min: a strongly negative potential saturates v at int32_min;
    computing v - threshold for that non-spiking lane overflowed (a panic in a safety-checked
    build). The reference keeps v saturated and never subtracts there."""
    bias = -(2**31 - 1)  # zero weights: the overflow bound is exactly |bias| = 2^31 - 1
    fields = {"threshold": [1000, 1, 2**31 - 1], "leak_shift": 3} if neuron == "lif" else {"threshold": [1000, 1, 2**31 - 1]}
    model = es.Model([
        Dense(name="drain", weights=np.zeros((4, 3), int), bias=[bias, bias, 5], weight_bits=2, neuron=neuron,
              **fields),
        Dense(name="out", weights=np.ones((3, 2), int), weight_bits=2, neuron="none"),
    ], input_shape=(1, 1, 4), input_bits=8)
    x5 = np.random.default_rng(3).integers(0, 256, (2, 5, 1, 1, 4)).astype(np.uint8)
    engine = native.NativeModel(model.to_bytes(), native.Library(safe_library_path))
    potentials, _ = engine.run(x5)
    expected, _ = reference.run(model, x5)
    np.testing.assert_array_equal(potentials, expected)


@pytest.mark.parametrize("layer_index, kind", [(4, "add"), (7, "concat"), (9, "dense")])
def test_dense_and_add_records_with_same_padding_are_refused_by_both_readers(safe_library_path, layer_index, kind):
    """Finding dense_add_padding_same: docs/format.md fixes padding at 0 for dense and add; the
    Python reader refused 1, the native loader took it."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_format import every_kind_model, field, fix_crcs

    valid = every_kind_model(4).to_bytes()
    assert es.Model.from_bytes(valid).layers[layer_index].kind == kind
    at = field(valid, layer_index, "padding")
    data = bytearray(valid)
    data[at:at + 4] = (1).to_bytes(4, "little")
    data = fix_crcs(bytes(data))
    with pytest.raises(es.FormatError, match="padding"):
        es.Model.from_bytes(data)
    with pytest.raises(es.FormatError, match=rf"\(layer\): .*padding 1 .*a {kind} layer has kernel 1x1 stride 1x1 padding 0"):
        native.NativeModel(data, native.Library(safe_library_path))


@pytest.mark.parametrize("target", ["load", "run", "model"])
def test_smoke_fuzz(safe_library_path, tmp_path, target):
    """A few seconds of each fuzz target on the ReleaseSafe build (uninstrumented: no coverage
    guidance, just the harness and the oracle end to end)."""
    pytest.importorskip("atheris")
    seeds = tmp_path / "seeds"
    subprocess.run([sys.executable, str(FUZZ / "seeds.py"), str(seeds)], check=True, capture_output=True, cwd=FUZZ)
    (seeds / target).mkdir(exist_ok=True)
    env = {**os.environ, "EDGESNN_FUZZ_LIB": str(safe_library_path)}
    result = subprocess.run([sys.executable, str(FUZZ / f"fuzz_{target}.py"), str(seeds / target),
                             f"-max_total_time={SMOKE_SECONDS}", f"-artifact_prefix={tmp_path}/"],
                            capture_output=True, text=True, timeout=120, env=env, cwd=FUZZ)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Done " in result.stderr, result.stderr[-2000:]
