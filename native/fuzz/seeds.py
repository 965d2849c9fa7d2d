"""Write the seed corpora of the fuzz targets (fuzz_model.py starts from none).

    python native/fuzz/seeds.py OUT_DIR      -> OUT_DIR/load/ and OUT_DIR/run/

load/: every file of tests/data/malformed/, the version-1 files of tests/data/v1/ and edgesnn/data/,
and the valid models of harness.valid_models(), each
twice, behind the mode byte of fuzz_load.py (0: as is, 1: checksums fixed). run/: a few inputs
per model in fuzz_run.py's encoding (only the first bytes choose; libFuzzer grows the rest).
"""

from __future__ import annotations

import sys
from pathlib import Path

import harness

MALFORMED = harness.ROOT / "tests" / "data" / "malformed"


def main(out: Path) -> None:
    load_dir, run_dir = out / "load", out / "run"
    load_dir.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    files = {path.stem: path.read_bytes() for path in sorted(MALFORMED.glob("*.esnn"))}
    # version-1 files (256-byte records) as edgesnn 0.1 wrote them
    for folder in (harness.ROOT / "tests" / "data" / "v1", harness.ROOT / "edgesnn" / "data"):
        files.update({f"v1_{path.stem}": path.read_bytes() for path in sorted(folder.glob("*.esnn"))})
    models = harness.valid_models()
    files.update({f"model_{name}": model.to_bytes() for name, model in models.items()})
    for name, data in files.items():
        for mode in (0, 1):
            (load_dir / f"{name}_{mode}").write_bytes(bytes([mode]) + data)
    for index, name in enumerate(models):
        for variant in range(4):
            (run_dir / f"{name}_{variant}").write_bytes(bytes([index, variant, 1, 3]) + bytes(range(variant * 40, 255)))
    frames = frame_seeds(out / "frames", models)
    print(f"{len(files) * 2} load seeds in {load_dir}, {len(models) * 4} run seeds in {run_dir}, "
          f"{frames} frames seeds in {out / 'frames'}")


def frame_seeds(frames_dir: Path, models: dict) -> int:
    """fuzz_frames.py: per model a session (HELLO, LOAD, RUN, STATS, RUN of a spike train, RUN_TRACE
    with an early exit, RESET, RUN without a model) as records (mode 1) and as the raw frames (mode 0)."""
    import struct

    import numpy as np
    from edgesnn_remote import protocol as P

    frames_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    for name, model in models.items():
        data = model.to_bytes()
        if len(data) > 60000:
            continue
        frame = np.zeros((1, *model.input_shape), np.uint8).tobytes()
        train = bytes(range(256)) * (3 * 2 * len(frame) // 256 + 1)
        session = [(P.HELLO, b""), (P.LOAD, data), (P.RUN, P.RUN_REQUEST.pack(1, 1, 2, 0) + frame), (P.STATS, b""),
                   (P.RUN, P.RUN_REQUEST.pack(2, 3, 3, 0) + train[:6 * len(frame)]),
                   (P.RUN_TRACE, P.RUN_REQUEST.pack(2, 1, 4, 2) + frame * 2), (P.RESET, b""),
                   (P.RUN, P.RUN_REQUEST.pack(1, 1, 1, 0) + frame)]
        records = b"".join(struct.pack("<BBH", kind, 0, len(payload)) + payload for kind, payload in session)
        raw = b"".join(P.encode(kind, sequence, payload) for sequence, (kind, payload) in enumerate(session, 1))
        (frames_dir / f"{name}_records").write_bytes(b"\x01" + records)
        (frames_dir / f"{name}_raw").write_bytes(b"\x00" + raw)
        count += 2
    return count


if __name__ == "__main__":
    main(Path(sys.argv[1]))
