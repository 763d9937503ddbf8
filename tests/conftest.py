"""Shared fixtures: every test gets its own data home, never the checkout's var/."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@pytest.fixture
def hdp_home(tmp_path, monkeypatch):
    """A fresh $HDP_HOME for one test; settings re-read from the environment."""
    from hdp.settings import get_settings

    home = tmp_path / "hdp_home"
    home.mkdir()
    monkeypatch.setenv("HDP_HOME", str(home))
    monkeypatch.setenv("HDP_KEK_DIR", str(tmp_path / "kek"))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()
