"""Web page test fixtures: a fresh data home and governance store per test, the real app."""

from __future__ import annotations

import pytest
from webtest_helpers import seed


@pytest.fixture
def world(hdp_home):
    from governance.store import dispose_all

    w = seed(hdp_home.governance_url)
    yield w
    dispose_all()


@pytest.fixture
def client(world):
    from fastapi.testclient import TestClient

    from access.app import create_app

    with TestClient(create_app(), base_url="http://testserver") as c:
        yield c
