"""Fuzz target over the native loader: bytes -> validate -> load -> (context, run).

    EDGESNN_FUZZ_LIB=/tmp/fuzz-build/libedgesnn_fuzz.so \
        python native/fuzz/fuzz_load.py CORPUS_DIR [libFuzzer flags, e.g. -max_total_time=60]

The first input byte picks the mode: even -> the rest is loaded as is (exercises the header,
length and checksum checks); odd -> file_bytes and both CRC-32s are fixed first, so mutations
get past the checksums into the section table, graph and tensor checks. Must never crash: every
input gets a status (docs/fuzzing.md); and the Python reader must accept exactly what the native
loader accepts (but for META's JSON) and refuse only with FormatError / ModelError.
"""

from __future__ import annotations

import sys

import atheris

import harness

LIBRARY = harness.fuzz_library()


def test_one_input(data: bytes) -> None:
    body = harness.load_input_bytes(data)
    status = harness.load_and_run(LIBRARY, body)
    harness.check_readers_agree(LIBRARY, body, status)


def main() -> None:
    counters = harness.register_coverage(LIBRARY)
    print(f"fuzz_load: {LIBRARY.path}, {counters} engine coverage counters", flush=True)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
