"""Large Arrow results are streamed batch by batch, audited at start and end, and cut off
(not silently shortened) past the row limit."""

from __future__ import annotations

import dataclasses
import hashlib
import io

import pyarrow.ipc as ipc
import pytest
from access_support import World, auth

import access.engine as engine_mod
import access.service as service_mod
from access.engine import Limits
from access.errors import QueryCutOff
from access.service import AccessService, StreamedResult

SQL = "SELECT person_id, visit_date, hba1c_mmol_mol FROM register_visit ORDER BY person_id, visit_date"


@pytest.fixture(autouse=True)
def _exports_allowed(monkeypatch):
    """Streaming is about the engine: record-level files and results beyond the preview bound
    (which otherwise leave only as checked outputs, access.outputs) are allowed here, as a
    development setting may; production refuses such a rule."""
    monkeypatch.setenv("HDP_ACCESS_PREVIEW_ROWS", "10000000")
    monkeypatch.setenv("HDP_ACCESS_PREVIEW_FORMATS", "json,arrow,csv,parquet")


@pytest.fixture
def small_batches(monkeypatch):
    # Tiny batches and threshold, so a few thousand rows exercise the streaming path.
    monkeypatch.setattr(engine_mod, "FETCH_BATCH_ROWS", 100)
    monkeypatch.setattr(service_mod, "STREAM_AFTER_ROWS", 500)


@pytest.fixture
def big_world(hdp_home):
    w = World(hdp_home.home, persons=300, visits=6_000)
    yield w
    w.service.close()


def _entries(service, event):
    return [e for e in service.audit.entries() if e.get("event") == event]


def test_streamed_result_equals_whole_result_and_is_audited(big_world, small_batches):
    from fastapi.testclient import TestClient

    from access.app import create_app

    app = create_app(big_world.settings, big_world.gov)
    with TestClient(app) as client:
        r = client.post(
            "/releases/r_rec/query", json={"sql": SQL, "format": "arrow"}, headers=auth(big_world.alice)
        )
        assert r.status_code == 200 and r.headers.get("X-HDP-Streamed") == "1"
        assert "X-HDP-Rows" not in r.headers  # unknown until the end: it is in the audit log
        streamed = ipc.open_stream(io.BytesIO(r.content)).read_all()
        whole = client.post(
            "/releases/r_rec/query", json={"sql": SQL, "format": "parquet"}, headers=auth(big_world.alice)
        )
        import pyarrow.parquet as pq

        assert streamed.equals(pq.read_table(io.BytesIO(whole.content)))
        assert streamed.num_rows > 5_000
        # A small result is still sent whole, with its row count and hash.
        small = client.post(
            "/releases/r_rec/query",
            json={"sql": "SELECT count(*) AS n FROM register_visit", "format": "arrow"},
            headers=auth(big_world.alice),
        )
        assert "X-HDP-Streamed" not in small.headers and small.headers["X-HDP-Rows"] == "1"
        svc = app.state.service
        end = _entries(svc, "access.query_end")[-1]
        assert end["completed"] is True and end["rows"] == streamed.num_rows
        assert end["result_sha256"] == hashlib.sha256(r.content).hexdigest()
        start = [e for e in _entries(svc, "access.query") if e.get("streamed")]
        assert len(start) == 1 and start[0]["query_sha256"] == end["query_sha256"]
        assert all(e.leases == 0 for e in svc.engines._engines.values())
        assert svc.audit.verify().ok
    app.state.service.close()


def test_stream_past_row_limit_is_cut_off_and_logged(big_world, small_batches):
    settings = dataclasses.replace(
        big_world.settings, limits=Limits(timeout_s=5, max_rows=1_000, memory_limit="256MB", threads=1)
    )
    svc = AccessService(settings, big_world.gov)
    try:
        result = svc.query(big_world.gov.users["alice"], "r_rec", SQL, "arrow", stream=True)
        assert isinstance(result, StreamedResult)
        sent = []
        with pytest.raises(QueryCutOff) as err:
            for chunk in result.chunks:
                sent.append(chunk)
        assert err.value.reason == "limit.rows"
        end = _entries(svc, "access.query_end")[-1]
        assert end["completed"] is False and end["reason"] == "limit.rows" and end["rows"] > 1_000
        # What was sent holds at most the limit and no end-of-stream marker was written.
        partial = ipc.open_stream(io.BytesIO(b"".join(sent))).read_all()
        assert partial.num_rows <= 1_000
        assert all(e.leases == 0 for e in svc.engines._engines.values())
    finally:
        svc.close()


def test_abandoned_stream_releases_its_engine(big_world, small_batches):
    svc = big_world.service
    result = svc.query(big_world.gov.users["alice"], "r_rec", SQL, "arrow", stream=True)
    assert isinstance(result, StreamedResult)
    next(result.chunks)
    (engine,) = [e for k, e in svc.engines._engines.items() if k[0] == "r_rec"]
    assert engine.leases == 1
    result.chunks.close()  # the client went away
    assert engine.leases == 0
    end = _entries(svc, "access.query_end")[-1]
    assert end["completed"] is False and end["reason"] == "stream.client_gone"


def test_row_limit_below_stream_threshold_still_applies(big_world, monkeypatch):
    monkeypatch.setattr(service_mod, "STREAM_AFTER_ROWS", 100_000)  # everything fits the prefetch
    settings = dataclasses.replace(
        big_world.settings, limits=Limits(timeout_s=5, max_rows=1_000, memory_limit="256MB", threads=1)
    )
    svc = AccessService(settings, big_world.gov)
    try:
        with pytest.raises(QueryCutOff) as err:
            svc.query(big_world.gov.users["alice"], "r_rec", SQL, "arrow", stream=True)
        assert err.value.reason == "limit.rows"
        assert _entries(svc, "access.query")[-1]["decision"] == "refused"
    finally:
        svc.close()


def test_stream_dropped_before_first_chunk_releases_its_engine(big_world, small_batches):
    svc = big_world.service
    result = svc.query(big_world.gov.users["alice"], "r_rec", SQL, "arrow", stream=True)
    (engine,) = [e for k, e in svc.engines._engines.items() if k[0] == "r_rec"]
    assert engine.leases == 1
    del result  # never iterated
    import gc

    gc.collect()
    assert engine.leases == 0
