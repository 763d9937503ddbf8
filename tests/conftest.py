"""Shared fixtures: every test gets its own data home, never the checkout's var/."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

#: The modules whose fixtures take minutes (real processes: a whole federation demo, a federation of
#: hub and nodes, an Airflow stack with Celery), longest first, as measured in `make test`.
_LONGEST_MODULES = (
    "tests/ops/test_federation_demo_run.py",
    "tests/federation/test_federation_processes.py",
    "tests/ops/test_celery_integration.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With several test processes (``make test``: pytest-xdist, whole modules per process), hand out
    the longest modules first, then the other slow ones: started last, a module of minutes would
    leave the other processes idle while it runs. A run in one process keeps the file order."""
    if not hasattr(config, "workerinput"):  # set in xdist's worker processes, which collect
        return

    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        if path in _LONGEST_MODULES:
            return _LONGEST_MODULES.index(path)
        return len(_LONGEST_MODULES) + (0 if item.get_closest_marker("slow") else 1)

    items.sort(key=rank)  # stable: the order within each rank stays the file order


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
