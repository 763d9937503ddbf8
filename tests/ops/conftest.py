"""Fixtures for the operations tests: metrics stores on SQLite and on a throw-away Postgres database."""

from __future__ import annotations

import pytest

from .services import postgres_reachable, temporary_postgres_database


@pytest.fixture
def metrics_sqlite(hdp_home, monkeypatch):
    """The default store: SQLite under the test's $HDP_HOME."""
    from pipelines.monitoring import store

    monkeypatch.delenv("HDP_METRICS_URL", raising=False)
    url = store.metrics_url()
    yield url
    store.dispose_all()


@pytest.fixture
def metrics_postgres(hdp_home, monkeypatch):
    """A fresh Postgres database (dropped afterwards) as the metrics store."""
    from pipelines.monitoring import store

    reason = postgres_reachable()
    if reason:
        pytest.skip(reason)
    with temporary_postgres_database() as url:
        monkeypatch.setenv("HDP_METRICS_URL", url)
        yield url
        store.dispose_all()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def metrics_url(request):
    """Run a store test on both back ends."""
    return request.getfixturevalue(f"metrics_{request.param}")
