"""The native engine: its Zig unit tests, the C header, the loader on malformed bytes, the binding's
validation, the arena contract and threads. Everything runs on a ReleaseSafe build (safety checks on)
built here with the pinned ziglang; test_native_bitexact.py compares it with the reference.
"""

from __future__ import annotations

import ctypes
import json
import re
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

import edgesnn as es
from edgesnn import reference
from edgesnn.layers import Conv2D, Dense, InputConv2D

native = pytest.importorskip("edgesnn.native")

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native"
MALFORMED = ROOT / "tests" / "data" / "malformed"


@pytest.fixture(scope="session")
def safe_library(engine_build) -> "native.Library":
    """The ReleaseSafe build of this tree (tests/conftest.py: one per session, shared with other files)."""
    return native.Library(engine_build("native"))


def small_model(seed: int = 0) -> es.Model:
    rng = np.random.default_rng(seed)
    layers = [
        InputConv2D(name="conv1", weights=rng.integers(-8, 8, (3, 3, 1, 6)), bias=rng.integers(-20, 20, 6),
                    weight_bits=4, padding="same", out_multiplier=3, out_shift=6, activation_bits=4,
                    pool="max", pool_size=2),
        Conv2D(name="conv2", weights=rng.integers(-2, 2, (3, 3, 6, 8)), bias=0, weight_bits=2, padding="valid",
               neuron="if", threshold=6),
        Dense(name="out", weights=rng.integers(-128, 128, (2 * 2 * 8, 4)), bias=rng.integers(-9, 9, 4),
              weight_bits=8, neuron="none"),
    ]
    return es.Model(layers=layers, input_shape=(9, 9, 1), input_bits=8, metadata={"labels": list("abcd")})


def sparse_input(model: es.Model, n: int, t: int, seed: int = 1, density: float = 0.4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 1 << model.input_bits, (n, t, *model.input_shape))
    return np.where(rng.random(x.shape) < density, x, 0).astype(np.uint8)


def with_crcs(data: bytearray) -> bytes:
    """Recompute both CRCs so that a deliberate corruption reaches the structural checks."""
    data[32:36] = zlib.crc32(bytes(data[64:])).to_bytes(4, "little")
    data[36:40] = zlib.crc32(bytes(data[:36])).to_bytes(4, "little")
    return bytes(data)


def section_offset(data: bytes, tag: bytes) -> tuple[int, int]:
    count = int.from_bytes(data[24:28], "little")
    for i in range(count):
        entry = 64 + 16 * i
        if data[entry:entry + 4] == tag:
            return int.from_bytes(data[entry + 8:entry + 12], "little"), int.from_bytes(data[entry + 12:entry + 16], "little")
    raise KeyError(tag)


# -- the Zig side ---------------------------------------------------------------------------------

def test_zig_unit_tests_pass():
    result = subprocess.run([sys.executable, "-m", "ziglang", "build", "test", "-Doptimize=ReleaseSafe"],
                            cwd=NATIVE, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout + result.stderr


def test_header_matches_the_zig_source():
    header = (NATIVE / "include" / "edgesnn.h").read_text()
    status_zig = (NATIVE / "src" / "status.zig").read_text()
    exports_zig = (NATIVE / "src" / "exports.zig").read_text()
    zig_status = {name: int(value) for name, value in re.findall(r"^\s+(\w+) = (\d+),", status_zig, re.M)}
    c_status = {name.lower(): int(value) for name, value in re.findall(r"ESNN_(?:ERROR_)?(\w+) = (\d+)", header)}
    assert zig_status == c_status
    zig_exports = set(re.findall(r"^export fn (\w+)\(", exports_zig, re.M))
    c_functions = set(re.findall(r"^(?:const )?[\w ]+?\*?\s*(esnn_\w+)\(", header, re.M))
    assert zig_exports == c_functions
    assert set(zig_exports) >= set(native._signatures())
    struct_fields = re.search(r"typedef struct esnn_layer_stats \{(.*?)\}", header, re.S).group(1)
    assert re.findall(r"uint64_t (\w+);", struct_fields) == list(native.STATS_FIELDS)


def zig_limits() -> dict[str, int]:
    """The `pub const name = <integer>;` (or `<integer> << <integer>`) lines of native/src/limits.zig."""
    text = (NATIVE / "src" / "limits.zig").read_text()
    found = re.findall(r"^pub const (\w+) = (\d+)(?: << (\d+))?;", text, re.M)
    return {name: int(value) << int(shift or 0) for name, value, shift in found}


def test_limits_match_the_python_side():
    """native/src/limits.zig and edgesnn/layers.py / format.py name the same numbers."""
    from edgesnn import format as F
    from edgesnn import layers as L
    zig = zig_limits()
    pairs = {"shift_max": L.SHIFT_MAX, "leak_shift_max": L.LEAK_SHIFT_MAX, "kernel_max": L.KERNEL_MAX,
             "decay_shift_max": L.DECAY_SHIFT_MAX, "stride_max": L.STRIDE_MAX, "pool_max": L.POOL_MAX,
             "add_inputs_max": L.ADD_INPUTS_MAX,
             "concat_inputs_max": L.CONCAT_INPUTS_MAX, "depth_multiplier_max": L.DEPTH_MULTIPLIER_MAX, "timesteps_max": L.TIMESTEPS_MAX,
             "input_bits_max": max(L.ACTIVATION_BITS), "layer_record_bytes": F.LAYER_RECORD_BYTES,
             "version_major": F.VERSION_MAJOR}
    assert {name: zig[name] for name in pairs} == pairs


# -- the loader on good and bad bytes --------------------------------------------------------------

def test_loads_and_reports_shapes_and_exact_memory(safe_library):
    model = small_model()
    loaded = native.NativeModel(model.to_bytes(), safe_library)
    assert loaded.input_shape == model.input_shape and loaded.input_bits == 8
    assert loaded.output_shape == model.output_shape and loaded.layer_count == 3
    assert loaded.arena_bytes > 0 and loaded.memory_bytes > 0
    lib = safe_library.lib
    data = model.to_bytes()
    source = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    message = ctypes.create_string_buffer(256)
    handle = ctypes.c_void_p()
    too_small = ctypes.create_string_buffer(loaded.memory_bytes - 1)
    status = lib.esnn_model_load(source, len(data), too_small, loaded.memory_bytes - 1, ctypes.byref(handle), message, 256)
    assert safe_library.status_name(status) == "argument" and b"needs" in message.value
    arena = ctypes.create_string_buffer(loaded.arena_bytes - 1)
    context = ctypes.c_void_p()
    status = lib.esnn_context_init(loaded._handle, arena, loaded.arena_bytes - 1, ctypes.byref(context), message, 256)
    assert safe_library.status_name(status) == "argument" and b"arena" in message.value


def corpus_cases():
    manifest = json.loads((MALFORMED / "MANIFEST.json").read_text())
    return sorted((name, entry) for name, entry in manifest.items() if not entry["python_only"])


@pytest.mark.parametrize("name,entry", corpus_cases(), ids=[c[0] for c in corpus_cases()])
def test_malformed_corpus(safe_library, name, entry):
    data = (MALFORMED / name).read_bytes()
    if name == "valid.esnn":
        native.NativeModel(data, safe_library)
        return
    with pytest.raises(es.FormatError, match="native loader refused") as info:
        native.NativeModel(data, safe_library)
    assert len(str(info.value)) > 40  # says what and where


def test_every_truncation_is_refused(safe_library):
    data = small_model().to_bytes()
    for length in range(len(data)):
        with pytest.raises(es.FormatError):
            native.NativeModel(data[:length], safe_library)


def test_bit_flips_with_fixed_crcs_agree_with_the_python_reader(safe_library):
    """Flip bits in GRPH/TENS/NAME, fix the CRCs: native and Python refuse or accept together, and
    whatever both accept runs bit-exact. Never a crash."""
    model = small_model()
    data = model.to_bytes()
    x5 = sparse_input(model, 2, 2)
    meta_offset, _ = section_offset(data, b"META")
    rng = np.random.default_rng(7)
    accepted = 0
    for _ in range(400):
        corrupted = bytearray(data)
        position = int(rng.integers(64, meta_offset))
        corrupted[position] ^= 1 << int(rng.integers(0, 8))
        corrupted = with_crcs(corrupted)
        try:
            python_model = es.Model.from_bytes(corrupted)
        except (es.FormatError, es.ModelError):
            python_model = None
        try:
            loaded = native.NativeModel(corrupted, safe_library)
        except es.FormatError:
            loaded = None
        assert (python_model is None) == (loaded is None), f"readers disagree on a flip at byte {position}"
        if loaded is not None:
            accepted += 1
            expected, _ = reference.run(python_model, x5)
            potentials, _ = loaded.run(x5)
            np.testing.assert_array_equal(potentials, expected)
    assert accepted > 0  # some flips land in weights and still form a valid model


def test_bad_offsets_are_refused_with_where(safe_library):
    data = small_model().to_bytes()
    grph, _ = section_offset(data, b"GRPH")
    first_record = grph + 64
    for field_offset, value, expected in [
        (128, 1 << 30, "outside the"),      # weights slot offset far past TENS
        (132, 7, "bytes"),                  # weights slot length wrong
        (128, 8, "multiple of 16"),         # weights slot misaligned
        (20, 5, "earlier layer"),           # inputs[0] refers forward
        (8, 1 << 20, "NAME"),               # name offset outside NAME
    ]:
        corrupted = bytearray(data)
        corrupted[first_record + field_offset:first_record + field_offset + 4] = value.to_bytes(4, "little", signed=True)
        with pytest.raises(es.FormatError, match=expected) as info:
            native.NativeModel(with_crcs(corrupted), safe_library)
        assert "GRPH layer 0 " in str(info.value) and "byte offset" in str(info.value)
    # a section offset beyond the file
    corrupted = bytearray(data)
    corrupted[64 + 8:64 + 12] = (len(data) + 16 * 4).to_bytes(4, "little")
    with pytest.raises(es.FormatError, match="past the end"):
        native.NativeModel(with_crcs(corrupted), safe_library)


def test_not_bytes_and_empty(safe_library):
    with pytest.raises(TypeError):
        native.NativeModel("model.esnn", safe_library)
    with pytest.raises(es.FormatError, match="header"):
        native.NativeModel(b"", safe_library)


# -- runs -----------------------------------------------------------------------------------------

V1 = ROOT / "tests" / "data" / "v1"


@pytest.mark.parametrize("name, key, timesteps", [("every_kind_v1", "x", 3), ("mnist_cnn_4bit_v1", "x_mnist", 1)])
def test_version_1_files_run_what_0_1_computed(safe_library, name, key, timesteps):
    """The native loader reads the 1.0 bytes themselves (256-byte records) and computes what edgesnn 0.1
    computed from them, with the statistics of the same model written as 2.0."""
    data = (V1 / f"{name}.esnn").read_bytes()
    expected = np.load(V1 / "expected_0.1.npz")
    x5 = np.ascontiguousarray(expected[key][:, None])
    potentials, counts = native.NativeModel(data, safe_library).run(x5, timesteps)
    np.testing.assert_array_equal(potentials, expected[name if name != "every_kind_v1" else "every_kind_t3"])
    rewritten = es.Model.from_bytes(data).to_bytes()
    potentials_v2, counts_v2 = native.NativeModel(rewritten, safe_library).run(x5, timesteps)
    np.testing.assert_array_equal(potentials_v2, potentials)
    np.testing.assert_array_equal(counts_v2, counts)


@pytest.mark.parametrize("path", sorted((ROOT / "edgesnn" / "data").glob("*.esnn")), ids=lambda p: p.name)
def test_shipped_models_run_as_the_reference(safe_library, path):
    """The models edgesnn ships (1.0 files) load natively from their own bytes and match the reference."""
    from edgesnn import format as F
    data = path.read_bytes()
    model = F.read_model(data)
    x5 = sparse_input(model, 2, 2, density=0.5)
    potentials, counts = native.NativeModel(data, safe_library).run(x5)
    expected, stats = reference.run(model, x5)
    np.testing.assert_array_equal(potentials, expected)
    _, counts_v2 = native.NativeModel(model.to_bytes(), safe_library).run(x5)
    np.testing.assert_array_equal(counts, counts_v2)


def test_cpu_is_the_default_device_and_matches_reference():
    assert "cpu" in es.devices()
    model = small_model()
    x = sparse_input(model, 3, 1)[:, 0]
    potentials = model.forward(x, timesteps=3)
    assert model.statistics.device == "cpu"
    expected = model.forward(x, timesteps=3, device="reference")
    np.testing.assert_array_equal(potentials, expected)


def test_binding_validates_input_before_calling(safe_library):
    model = small_model()
    loaded = native.NativeModel(model.to_bytes(), safe_library)
    good = sparse_input(model, 2, 2)
    with pytest.raises(TypeError, match="uint8"):
        loaded.run(good.astype(np.int32))
    with pytest.raises(ValueError, match="shape"):
        loaded.run(good[:, :, :5])
    with pytest.raises(ValueError, match="T = 1 or T = 3"):
        loaded.run(good, timesteps=3)
    narrow = es.Model(layers=[l.replace() for l in model.layers], input_shape=(9, 9, 1), input_bits=4)
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        native.NativeModel(narrow.to_bytes(), safe_library).run(good | 16)


def test_native_checks_input_range_itself(safe_library):
    """Called directly through the C ABI (no Python validation), values above 2^input_bits - 1 are refused."""
    model = es.Model(layers=[l.replace() for l in small_model().layers], input_shape=(9, 9, 1), input_bits=4)
    loaded = native.NativeModel(model.to_bytes(), safe_library)
    x = np.zeros((1, 1, 9, 9, 1), np.uint8)
    x[0, 0, 2, 3, 0] = 16
    out = np.empty((1, *model.output_shape), np.int32)
    context = loaded._acquire()
    status = safe_library.lib.esnn_run_batch(context.handle, x.ctypes.data, x.size, 1, 1, 1, out.ctypes.data, out.size,
                                             None, 0)
    assert safe_library.status_name(status) == "input"
    message = safe_library.lib.esnn_context_message(context.handle).decode()
    assert "pixel (2, 3)" in message and "15" in message


def test_a_single_frame_repeats_over_timesteps(safe_library):
    model = small_model()
    loaded = native.NativeModel(model.to_bytes(), safe_library)
    frame = sparse_input(model, 2, 1)
    repeated, stats_repeated = loaded.run(frame, timesteps=4)
    full, stats_full = loaded.run(np.ascontiguousarray(np.repeat(frame, 4, axis=1)))
    np.testing.assert_array_equal(repeated, full)
    np.testing.assert_array_equal(stats_repeated, stats_full)


def test_two_threads_run_in_parallel_and_agree(safe_library):
    """ctypes releases the GIL: while one thread is inside a long native run, Python code keeps running;
    and two threads with their own contexts give the results of sequential runs."""
    model = small_model()
    loaded = native.NativeModel(model.to_bytes(), safe_library)
    # long enough (tens of ms) that the main thread gets many GIL turns while native code runs
    inputs = [sparse_input(model, 4000, 4, seed=s, density=0.9) for s in (11, 12)]
    expected = [loaded.run(x)[0] for x in inputs]
    results: dict[int, np.ndarray] = {}
    started = threading.Event()

    def work(i):
        started.set()
        results[i] = loaded.run(inputs[i])[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    threads[0].start()
    started.wait()
    ticks = 0
    while threads[0].is_alive():
        ticks += 1
        if ticks == 1:
            threads[1].start()
    threads[1].join()
    threads[0].join()
    for i in range(2):
        np.testing.assert_array_equal(results[i], expected[i])
    assert ticks > 20, "the main thread could not run while native code ran: the GIL was held"
    assert len(loaded._contexts) == 2  # each thread had its own context
