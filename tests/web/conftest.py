"""Web page test fixtures: a fresh data home and governance store per test, the real app."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

# The helpers module sits beside this file; make it importable under any --import-mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from webtest_helpers import seed  # noqa: E402


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory):
    """A migrated SQLite governance store that each test copies (migrating once is faster)."""
    from governance.store import dispose_all, upgrade

    path = tmp_path_factory.mktemp("web_gov") / "template.sqlite"
    upgrade(f"sqlite:///{path}")
    dispose_all()
    return path


@pytest.fixture
def world(hdp_home, migrated_store):
    from governance.store import dispose_all

    assert hdp_home.governance_url == f"sqlite:///{hdp_home.home / 'governance.sqlite'}"
    shutil.copy(migrated_store, hdp_home.home / "governance.sqlite")
    w = seed(hdp_home.governance_url, migrate=False)
    yield w
    dispose_all()


@pytest.fixture
def client(world):
    from fastapi.testclient import TestClient

    from access.app import create_app

    with TestClient(create_app(), base_url="http://testserver") as c:
        yield c
