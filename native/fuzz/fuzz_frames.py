"""Fuzz target over the device runner's frame handling (native/runner/fuzz.zig): bytes as they would
arrive on the link -> the runner's parser, sequence checks, LOAD / RUN / STATS / RESET and the engine.

    EDGESNN_RUNNER_FUZZ_LIB=/tmp/fuzz-build/libedgesnn_runner_fuzz.so \\
        python native/fuzz/fuzz_frames.py CORPUS_DIR [libFuzzer flags, e.g. -max_total_time=60]

Oracle: the runner never crashes (every Zig safety check is on: a bounds, overflow or alignment
failure panics and libFuzzer keeps the input) and every reply it writes is one well-formed frame of
a reply type (checked inside the library, which panics otherwise). The first input byte picks raw
bytes (even) or records sent as frames with right CRCs (odd); see native/runner/fuzz.zig.
"""

from __future__ import annotations

import ctypes
import os
import sys

import atheris

import harness

LIBRARY_ENV = "EDGESNN_RUNNER_FUZZ_LIB"


def runner_library():
    path = os.environ.get(LIBRARY_ENV)
    if not path:
        raise SystemExit(f"set {LIBRARY_ENV} to libedgesnn_runner_fuzz.so (native/fuzz/build.sh)")
    from edgesnn import native

    library = native.Library(path)   # the engine's C API is in it too
    library.lib.esnn_runner_fuzz_one.restype = ctypes.c_int
    library.lib.esnn_runner_fuzz_one.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    return library


LIBRARY = runner_library()
FUZZ_ONE = LIBRARY.lib.esnn_runner_fuzz_one


def test_one_input(data: bytes) -> None:
    replies = FUZZ_ONE(data, len(data))
    if replies < 0:
        raise harness.FuzzFinding(f"esnn_runner_fuzz_one returned {replies}")


def main() -> None:
    counters = harness.register_coverage(LIBRARY)
    print(f"fuzz_frames: {LIBRARY.path}, {counters} coverage counters (runner and engine)", flush=True)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
