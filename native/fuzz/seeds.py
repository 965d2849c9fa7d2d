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
    print(f"{len(files) * 2} load seeds in {load_dir}, {len(models) * 4} run seeds in {run_dir}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
