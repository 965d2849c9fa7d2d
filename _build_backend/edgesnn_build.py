"""In-tree PEP 517 backend: build the native Zig engine, then let setuptools build the package.

`pip install .` and `pip install -e .` call this backend (pyproject.toml: build-backend /
backend-path). It runs `python -m ziglang build -Doptimize=ReleaseFast` in native/ with the pinned
`ziglang` from the build requirements (no system Zig, nothing downloaded), copies the shared library
into edgesnn/_lib/ (package data), and marks the wheel as platform-specific.

Environment:
  EDGESNN_NATIVE_OPTIMIZE  Zig optimize mode (default ReleaseFast; Debug / ReleaseSafe for checks)
  EDGESNN_NATIVE_CPU       -Dcpu value (default: the build machine's, `native`; `baseline` for a
                           wheel that runs on any CPU of the architecture)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import setuptools.dist
from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (every other hook unchanged)

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native"
LIB_DIR = ROOT / "edgesnn" / "_lib"
LIBRARY_NAMES = ("libedgesnn.so", "libedgesnn.dylib", "edgesnn.dll")
RUNNER_NAME = "edgesnn-runner"


def build_native(optimize: str | None = None, destination: Path = LIB_DIR, cpu: str | None = None,
                 step: str = "install") -> Path:
    """Build native/ and copy the shared library into `destination` (edgesnn/_lib/); return its path.

    The tests call this too (tests/conftest.py engine_build), with optimize="ReleaseSafe", a temporary
    destination, cpu="baseline" to cover the portable kernels next to this machine's (e.g. AVX-512
    VNNI) ones, and step="shared" (the shared library only, not the static one and the runner).
    """
    optimize = optimize or os.environ.get("EDGESNN_NATIVE_OPTIMIZE", "ReleaseFast")
    cpu = cpu or os.environ.get("EDGESNN_NATIVE_CPU", "native")
    destination = Path(destination)
    with tempfile.TemporaryDirectory(prefix="edgesnn-zig-") as prefix:
        command = [sys.executable, "-m", "ziglang", "build", step, f"-Doptimize={optimize}", f"-Dcpu={cpu}",
                   "--prefix", prefix]
        print(f"edgesnn: building the native engine: {' '.join(command)} (in {NATIVE})", flush=True)
        result = subprocess.run(command, cwd=NATIVE)
        if result.returncode != 0:
            raise RuntimeError(f"edgesnn: `{' '.join(command)}` failed with exit status {result.returncode} "
                               f"(in {NATIVE}); the native engine could not be built")
        built = _find_library(Path(prefix))
        destination.mkdir(parents=True, exist_ok=True)
        target = destination / built.name
        # copy beside the target, then rename over it: a process that has the old library mapped keeps
        # its (now unlinked) file instead of seeing it rewritten under its feet, which crashes it
        staging = destination / f".{built.name}.{os.getpid()}.tmp"
        shutil.copyfile(built, staging)
        os.replace(staging, target)
        _copy_runner(Path(prefix), destination)
    print(f"edgesnn: native engine {target} ({target.stat().st_size:,} bytes)", flush=True)
    return target


def _copy_runner(prefix: Path, destination: Path) -> None:
    """bin/edgesnn-runner (the device runner, built on Linux) beside the library: the `remote` device's default."""
    runner = prefix / "bin" / RUNNER_NAME
    if runner.is_file():
        staging = destination / f".{RUNNER_NAME}.{os.getpid()}.tmp"
        shutil.copyfile(runner, staging)
        staging.chmod(0o755)
        os.replace(staging, destination / RUNNER_NAME)


def _find_library(prefix: Path) -> Path:
    for folder in ("lib", "bin"):
        for name in LIBRARY_NAMES:
            if (prefix / folder / name).is_file():
                return prefix / folder / name
    raise RuntimeError(f"edgesnn: zig build finished but no shared library ({', '.join(LIBRARY_NAMES)}) "
                       f"is under {prefix}")


def _platform_wheel() -> None:
    """The wheel carries a native library: give it a platform tag, not py3-none-any."""
    setuptools.dist.Distribution.has_ext_modules = lambda self: True


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    build_native()
    _platform_wheel()
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    build_native()
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
