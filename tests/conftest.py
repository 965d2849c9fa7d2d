"""Fixtures shared by several test files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgesnn import plugins

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fresh_registry(monkeypatch):
    """The test starts and ends with an unloaded plugin registry and no plugin env vars
    (test files that register plugins use it for every test: `pytestmark`)."""
    monkeypatch.delenv(plugins.ONLY_PLUGINS_ENV, raising=False)
    monkeypatch.delenv(plugins.TRACE_HOOKS_ENV, raising=False)
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture(scope="session")
def engine_build(tmp_path_factory):
    """``engine_build(cpu="native", optimize="ReleaseSafe")`` -> the path of the shared library built from
    this tree by the install's own build function (_build_backend/edgesnn_build.py, its ``shared``
    step: the .so only), once per (optimize, cpu) in the session, whichever test files ask for it
    (test_native, test_native_bitexact, test_c_embedding, test_cross, test_fuzz_regressions)."""
    sys.path.insert(0, str(ROOT / "_build_backend"))
    try:
        import edgesnn_build
    finally:
        sys.path.remove(str(ROOT / "_build_backend"))
    built: dict[tuple[str, str], Path] = {}

    def build(cpu: str = "native", optimize: str = "ReleaseSafe") -> Path:
        if (optimize, cpu) not in built:
            folder = tmp_path_factory.mktemp(f"engine-{optimize}-{cpu}")
            built[optimize, cpu] = edgesnn_build.build_native(optimize, folder, cpu, step="shared")
        return built[optimize, cpu]

    return build
