"""Replay fuzz_load.py inputs (a finding, a corpus) without atheris, through any build of the engine.

    python native/fuzz/replay.py LIBRARY.so INPUT [INPUT ...]

Each input goes through the same oracle as the fuzz target (harness.load_and_run and
harness.check_readers_agree); prints one line per input and exits 1 on the first broken contract.
A crash of the engine ends the process with its signal: run it in a subprocess (the tests do).
"""

from __future__ import annotations

import sys
from pathlib import Path

import harness
from edgesnn import native


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    library = native.Library(argv[0])
    for name in argv[1:]:
        data = harness.load_input_bytes(Path(name).read_bytes())
        try:
            status = harness.load_and_run(library, data)
            harness.check_readers_agree(library, data, status)
        except harness.FuzzFinding as finding:
            print(f"{name}: FINDING: {finding}", flush=True)
            return 1
        print(f"{name}: {library.status_name(status)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
