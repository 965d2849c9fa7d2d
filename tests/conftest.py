"""Fixtures shared by several test files."""

from __future__ import annotations

import pytest

from edgesnn import plugins


@pytest.fixture
def fresh_registry(monkeypatch):
    """The test starts and ends with an unloaded plugin registry and no plugin env vars
    (test files that register plugins use it for every test: `pytestmark`)."""
    monkeypatch.delenv(plugins.ONLY_PLUGINS_ENV, raising=False)
    monkeypatch.delenv(plugins.TRACE_HOOKS_ENV, raising=False)
    plugins.reset()
    yield
    plugins.reset()
