"""What both fuzz targets share: the fuzzing build of the engine, its coverage hook-up, the checks.

The library is `libedgesnn_fuzz.so` built by native/fuzz/build.sh: ReleaseSafe (every Zig safety
check on: bounds, overflow, alignment, unreachable) and instrumented with LLVM's inline 8-bit
counters, which `register_coverage` hands to the libFuzzer inside atheris. A safety-check failure
panics and aborts the process; libFuzzer then saves the input as crash-<sha1>.

The oracle of both targets (docs/fuzzing.md):
  - every call returns a known status (docs/c-api.md), and a failure comes with a message;
  - esnn_model_memory_bytes and esnn_model_load agree; a model that loads gets a context and runs;
  - a run with correct arguments succeeds and equals the numpy reference exactly (potentials and
    statistics), also when the same context ran other inputs before.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edgesnn import native  # noqa: E402  (the binding's Library declares the C signatures)

LIBRARY_ENV = "EDGESNN_FUZZ_LIB"
STATUS_COUNT = 13  # esnn_status: ESNN_OK = 0 .. ESNN_ERROR_INPUT = 12
MESSAGE_BYTES = native.MESSAGE_BYTES
MEMORY_BYTES_MAX = 64 << 20  # a fuzzed model asking for more memory than this is validated, not loaded
ARENA_BYTES_MAX = 16 << 20  # nor run
HEADER_BYTES = 64


class FuzzFinding(AssertionError):
    """The engine broke its contract without crashing (wrong status, missing message, wrong result)."""


def fuzz_library() -> native.Library:
    """The instrumented ReleaseSafe build named by $EDGESNN_FUZZ_LIB (or any build, for replaying)."""
    path = os.environ.get(LIBRARY_ENV)
    if not path:
        raise SystemExit(f"set {LIBRARY_ENV} to the library built by native/fuzz/build.sh")
    return native.Library(path)


def register_coverage(library: native.Library) -> int:
    """Give the engine's counters to atheris's libFuzzer; return how many there are (0: not instrumented)."""
    register = getattr(library.lib, "esnn_fuzz_register_coverage", None)
    if register is None:
        return 0
    libfuzzer = ctypes.CDLL(importlib.import_module("atheris.core_with_libfuzzer").__file__)
    register.restype = ctypes.c_long
    register.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    counters_init = ctypes.cast(libfuzzer.__sanitizer_cov_8bit_counters_init, ctypes.c_void_p)
    pcs_init = ctypes.cast(libfuzzer.__sanitizer_cov_pcs_init, ctypes.c_void_p)
    count = register(counters_init, pcs_init)
    if count < 0:
        raise SystemExit("the fuzzing build's counter and PC tables differ in length")
    return count


def fix_checksums(data: bytes) -> bytes:
    """`data` with file_bytes, body CRC and header CRC made right, so mutations reach the deeper checks."""
    if len(data) < HEADER_BYTES:
        return data
    fixed = bytearray(data)
    struct.pack_into("<Q", fixed, 16, len(fixed))
    struct.pack_into("<I", fixed, 32, zlib.crc32(fixed[HEADER_BYTES:]))
    struct.pack_into("<I", fixed, 36, zlib.crc32(fixed[:36]))
    return bytes(fixed)


def load_input_bytes(data: bytes) -> bytes:
    """The .esnn bytes a fuzz_load.py input stands for: its first byte picks the mode (even: the rest
    as is; odd: the rest with file_bytes and both CRC-32s fixed)."""
    if not data:
        return b""
    return fix_checksums(data[1:]) if data[0] & 1 else data[1:]


def check_status(library: native.Library, status: int, message: str, call: str) -> None:
    if not 0 <= status < STATUS_COUNT:
        raise FuzzFinding(f"{call} returned unknown status {status}")
    if status != native.STATUS_OK and not message:
        raise FuzzFinding(f"{call} failed ({library.status_name(status)}) without a message")


def load_and_run(library: native.Library, data: bytes) -> int:
    """Validate, load, and (when small enough) run fuzzed .esnn bytes once; return the load status."""
    lib = library.lib
    source = (ctypes.c_uint8 * max(len(data), 1)).from_buffer_copy(data or b"\0")
    message = ctypes.create_string_buffer(MESSAGE_BYTES)
    memory_bytes = ctypes.c_size_t(0)
    status = lib.esnn_model_memory_bytes(source, len(data), ctypes.byref(memory_bytes), message, MESSAGE_BYTES)
    check_status(library, status, message.value, "esnn_model_memory_bytes")
    if status != native.STATUS_OK or memory_bytes.value > MEMORY_BYTES_MAX:
        return status
    memory = ctypes.create_string_buffer(max(memory_bytes.value, 1))
    handle = ctypes.c_void_p()
    status = lib.esnn_model_load(source, len(data), memory, memory_bytes.value, ctypes.byref(handle), message,
                                 MESSAGE_BYTES)
    if status != native.STATUS_OK:
        raise FuzzFinding(f"validated bytes failed to load ({library.status_name(status)}): {message.value!r}")
    short = lib.esnn_model_load(source, len(data), memory, memory_bytes.value - 1, ctypes.byref(ctypes.c_void_p()),
                                message, MESSAGE_BYTES) if memory_bytes.value > 0 else native.STATUS_OK + 1
    if short == native.STATUS_OK:
        raise FuzzFinding(f"loaded into {memory_bytes.value - 1} bytes, one less than the reported memory")
    _run_loaded(library, handle, memory)
    return native.STATUS_OK


def _run_loaded(library: native.Library, handle: ctypes.c_void_p, memory) -> None:
    """A model that loaded must get a context and run a zero and a full-range input."""
    lib = library.lib
    arena_bytes = lib.esnn_model_arena_bytes(handle)
    if arena_bytes == 0:
        raise FuzzFinding("a loaded model reports 0 arena bytes")
    if arena_bytes > ARENA_BYTES_MAX:
        return
    shape_in, shape_out = (ctypes.c_uint32 * 4)(), (ctypes.c_uint32 * 3)()
    lib.esnn_model_input_shape(handle, ctypes.byref(shape_in))
    lib.esnn_model_output_shape(handle, ctypes.byref(shape_out))
    arena = ctypes.create_string_buffer(arena_bytes)
    context = ctypes.c_void_p()
    message = ctypes.create_string_buffer(MESSAGE_BYTES)
    status = lib.esnn_context_init(handle, arena, arena_bytes, ctypes.byref(context), message, MESSAGE_BYTES)
    if status != native.STATUS_OK:
        raise FuzzFinding(f"context init failed ({library.status_name(status)}): {message.value!r}")
    input_values = shape_in[0] * shape_in[1] * shape_in[2]
    output_values = shape_out[0] * shape_out[1] * shape_out[2]
    layer_count = lib.esnn_model_layer_count(handle)
    stats = (native._LayerStats * layer_count)()
    output = (ctypes.c_int32 * output_values)()
    for value in (0, (1 << shape_in[3]) - 1):
        frame = (ctypes.c_uint8 * input_values)(*([value] * input_values))
        status = lib.esnn_run_batch(context, frame, input_values, 1, 1, 2, output, output_values, stats, layer_count)
        if status != native.STATUS_OK:
            raise FuzzFinding(f"a loaded model failed to run input {value} ({library.status_name(status)}): "
                              f"{lib.esnn_context_message(context)!r}")
    del memory  # kept alive until here: the model lives in it


# -- the valid models the run target uses and the loader target's seeds start from ------------------

def valid_models() -> dict:
    """name -> edgesnn Model: every layer kind, neuron, pool and weight width, and the version-2 geometry
    (explicit asymmetric pads, rectangular strides and pools, pad values, depth multipliers, min
    pools, avg pools with and without their padding, zero points, a mapped concat, a pooled add with
    a bias), the if/lif dynamics (decay, reset to zero and none, membrane floors), small enough to run fast."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_format import every_kind_model  # the format tests' model with all kinds (tests/test_format.py)

    import edgesnn as es
    from edgesnn import layers as L

    rng = np.random.default_rng(7)
    spiking_dense = es.Model([
        L.Dense(name="hidden", weights=rng.integers(-8, 8, (3 * 4 * 2, 12)), weight_bits=4, neuron="lif",
                threshold=rng.integers(1, 30, 12), leak_shift=2),
        L.Dense(name="out", weights=rng.integers(-2, 2, (12, 3)), weight_bits=2, neuron="none"),
    ], input_shape=(3, 4, 2), input_bits=1)
    strided = es.Model([
        L.InputConv2D(name="c1", weights=rng.integers(-128, 128, (5, 5, 1, 17)), weight_bits=8, stride=3,
                      padding="same", out_multiplier=rng.integers(1, 50, 17), out_shift=9, activation_bits=8),
        L.Depthwise2D(name="dw", weights=rng.integers(-2, 2, (3, 3, 17)), weight_bits=2, padding="same",
                      pool="max", pool_size=3, pool_stride=2, out_multiplier=2, out_shift=3, activation_bits=2),
        L.Conv2D(name="out", weights=rng.integers(-8, 8, (1, 1, 17, 4)), weight_bits=4, pool="global_avg",
                 neuron="none"),
    ], input_shape=(11, 9, 1), input_bits=8)
    geometry = es.Model([
        L.InputConv2D(name="c1", weights=rng.integers(-8, 8, (3, 4, 3, 6)), weight_bits=4, stride=(2, 1),
                      padding=(1, 1, 2, 1), pad_value=[0, 9, 255], out_multiplier=rng.integers(1, 9, 6), out_shift=6,
                      activation_bits=4, out_zero_point=[0, 3, 7, 15, 1, 0], pool="max", pool_size=(3, 2),
                      pool_stride=(2, 1), pool_padding=(1, 1, 0, 1), pool_sign=[1, -1, 1, -1, 1, 1]),
        L.Separable2D(name="sep", weights=rng.integers(-2, 2, (3, 3, 18)), pointwise=rng.integers(-2, 2, (18, 5)),
                      weight_bits=2, mid_bits=4, mid_multiplier=rng.integers(1, 40, 18), mid_shift=4,
                      depth_multiplier=3, stride=(1, 2), padding=(2, 0, 1, 1), pad_value=rng.integers(0, 16, 6),
                      out_multiplier=3, out_shift=4, activation_bits=2),
        L.Depthwise2D(name="dw", inputs=("c1",), weights=rng.integers(-8, 8, (2, 3, 12)), weight_bits=4,
                      depth_multiplier=2, padding="same", pad_value=rng.integers(0, 16, 6), neuron="if",
                      threshold=rng.integers(1, 30, 12), pool="avg", pool_size=2, pool_stride=1,
                      pool_padding=(1, 0, 1, 0)),
        L.Concat(name="cat", inputs=("dw", "c1", "dw"), sources=[(0, 11), (1, 2), (2, 0), (1, 5), (0, 4)],
                 input_multipliers=[3, -1, 2, 1, -4], bias=[1, 0, -2, 5, 0], out_multiplier=1, out_shift=1,
                 activation_bits=4, pool="avg", pool_size=(1, 2), pool_stride=(1, 2), pool_count_include_pad=True),
        L.Add(name="sum", inputs=("cat", "cat"), input_multipliers=rng.integers(-3, 4, (2, 5)), bias=[1, -1, 2, 0, 3],
              pool="max", pool_size=2, pool_stride=1, neuron="lif", threshold=7, leak_shift=1),
        L.Dense(name="out", weights=rng.integers(-8, 8, (4 * 1 * 5, 3)), weight_bits=4, neuron="none"),
    ], input_shape=(10, 7, 3), input_bits=8)
    # the if/lif dynamics of bytes 284..300 and slot 13: decay per channel with reset to zero and a
    # floor (an SNU), reset none, a shift leak with a floor, a decay near beta = 1
    dynamics = es.Model([
        L.InputConv2D(name="snu", weights=rng.integers(-8, 8, (3, 3, 2, 5)), weight_bits=4, padding="same",
                      bias=rng.integers(-40, 40, 5), neuron="lif", threshold=rng.integers(1, 60, 5),
                      decay_multiplier=[205, 128, 0, 256, 255], decay_shift=8, reset="zero", membrane_floor=0),
        L.Conv2D(name="hold", weights=rng.integers(-2, 2, (1, 1, 5, 6)), weight_bits=2, neuron="if",
                 threshold=rng.integers(1, 4, 6), reset="none", pool="max", pool_size=2),
        L.Dense(name="leak", weights=rng.integers(-8, 8, (2 * 2 * 6, 7)), weight_bits=4, bias=rng.integers(-9, 9, 7),
                neuron="lif", threshold=rng.integers(1, 9, 7), leak_shift=3, membrane_floor=-6),
        L.Dense(name="slow", weights=rng.integers(-8, 8, (7, 4)), weight_bits=4, neuron="lif", threshold=3,
                decay_multiplier=(1 << 30) - np.arange(4), decay_shift=30, membrane_floor=-2**31),
        L.Dense(name="out", weights=rng.integers(-2, 2, (4, 3)), weight_bits=2, neuron="none"),
    ], input_shape=(4, 5, 2), input_bits=8)
    return {
        "geometry_v2": geometry,
        "every_kind_w2": every_kind_model(2, seed=1),
        "every_kind_w4": every_kind_model(4, seed=2),
        "every_kind_w8": every_kind_model(8, seed=3),
        "spiking_dense": spiking_dense,
        "strided": strided,
        "dynamics": dynamics,
    }


# -- the second reader --------------------------------------------------------------------------------

def check_readers_agree(library: native.Library, data: bytes, native_status: int) -> None:
    """The Python reader (edgesnn.format) accepts exactly the files the native loader accepts, except
    for the JSON in META, which only Python parses; it refuses with FormatError or ModelError only."""
    import edgesnn as es

    try:
        es.Model.from_bytes(data)
        python_error = None
    except (es.FormatError, es.ModelError) as exc:
        python_error = exc
    if native_status == native.STATUS_OK and python_error is not None:
        if getattr(python_error, "section", None) != "META":
            raise FuzzFinding(f"native loads, Python refuses: {type(python_error).__name__}: {python_error}")
    if native_status != native.STATUS_OK and python_error is None:
        raise FuzzFinding(f"Python loads, native refuses ({library.status_name(native_status)})")
