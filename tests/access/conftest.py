"""Fixtures for the access layer: a synthetic release, in-memory governance, a service."""

from __future__ import annotations

import pytest

# Helpers live in a module of their own: test modules import them by a name no other test
# directory uses (``from conftest import ...`` picks whichever conftest was loaded last).
from access_support import World


@pytest.fixture
def world(hdp_home):
    w = World(hdp_home.home)
    yield w
    w.service.close()


def _client(world):
    from fastapi.testclient import TestClient

    from access.app import create_app

    app = create_app(world.settings, world.gov)
    with TestClient(app) as c:
        yield c
    app.state.service.close()


@pytest.fixture
def client(world):
    yield from _client(world)


@pytest.fixture(scope="module")
def shared_world(tmp_path_factory):
    """One world for a whole module of read-only tests (building releases takes a second).
    All paths are explicit and under a temporary directory, never the checkout's var/."""
    w = World(tmp_path_factory.mktemp("access_home"))
    yield w
    w.service.close()


@pytest.fixture(scope="module")
def shared_client(shared_world):
    yield from _client(shared_world)
