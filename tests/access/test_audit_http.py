"""Every HTTP request to the access app is audited (404, 422, 401, 403, 500 included), and no
error body or audit entry echoes what was submitted."""

from __future__ import annotations

import json

import pytest
from access_support import auth
from pydantic import BaseModel, ConfigDict

PNR = "19121212-1212"
PNR_FORMS = (PNR, "191212121212", "121212-1212")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: int


def _entries(world):
    return [json.loads(x) for x in world.settings.audit_path.read_text().splitlines()]


def _new_entries(world, before):
    return _entries(world)[before:]


def _count(world):
    p = world.settings.audit_path
    return len(p.read_text().splitlines()) if p.exists() else 0


def _no_pnr(text: str) -> None:
    for form in PNR_FORMS:
        assert form not in text


def test_unknown_route_is_audited_without_its_path(client, world):
    before = _count(world)
    r = client.get(f"/patients/{PNR}?name=Tolvan")
    assert r.status_code == 404
    (entry,) = _new_entries(world, before)
    assert entry["event"] == "access.http" and entry["status"] == 404 and entry["reason"] == "route.not_found"
    assert entry["route"] is None and entry["method"] == "GET"
    assert entry["path_hmac"] == client.app.state.service.audit.text_mac(f"/patients/{PNR}")
    _no_pnr(world.settings.audit_path.read_text())
    assert "Tolvan" not in world.settings.audit_path.read_text()


@pytest.mark.parametrize(
    "body",
    [
        {"sql": "SELECT 1", "format": PNR},  # a value FastAPI would echo
        {"sql": f"SELECT '{PNR}' " + "x" * 100_000},  # too long: the whole text echoed
        {"sql": ["SELECT", PNR]},  # wrong type
        b'{"sql": "SELECT \'' + PNR.encode() + b"'",  # not JSON
    ],
)
def test_422_has_reason_and_locations_but_no_submitted_value(client, world, body):
    before = _count(world)
    kw = (
        {"content": body, "headers": {**auth(world.alice), "content-type": "application/json"}}
        if isinstance(body, bytes)
        else {"json": body, "headers": auth(world.alice)}
    )
    r = client.post("/releases/r_rec/query", **kw)
    assert r.status_code == 422
    _no_pnr(r.text)
    out = r.json()
    assert out["error"] == "request.invalid" and out["fields"]
    for f in out["fields"]:
        assert set(f) == {"loc", "msg", "type"} and f["loc"][0] == "body"
    (entry,) = _new_entries(world, before)
    assert entry["event"] == "access.http" and entry["status"] == 422 and entry["reason"] == "request.invalid"
    assert entry["route"] == "/releases/{release_id}/query" and entry["fields"][0].startswith("body")
    _no_pnr(world.settings.audit_path.read_text())


def test_422_never_echoes_a_submitted_key():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from access.audit_http import RequestValidationError, request_validation_handler

    app = FastAPI()
    app.add_exception_handler(RequestValidationError, request_validation_handler)

    @app.post("/x")
    def x(body: Strict) -> dict:
        return {}

    r = TestClient(app).post("/x", json={"a": 1, "191212121212": "y", "colour": PNR})
    assert r.status_code == 422
    _no_pnr(r.text)
    assert {tuple(f["loc"]) for f in r.json()["fields"]} == {("body", "<key>"), ("body", "colour")}


def test_server_error_is_json_without_traceback_and_audited(client, world, monkeypatch, caplog):
    svc = client.app.state.service

    def broken(user):
        raise RuntimeError(f"internal state holding {PNR}")

    monkeypatch.setattr(svc, "my_releases", broken)
    before = _count(world)
    r = client.get("/releases", headers=auth(world.alice))
    assert r.status_code == 500
    out = r.json()
    assert out["error"] == "server.error" and isinstance(out["ref"], int)
    assert "Traceback" not in r.text and "RuntimeError" not in r.text
    _no_pnr(r.text)
    (entry,) = _new_entries(world, before)
    assert entry["seq"] == out["ref"] and entry["status"] == 500 and entry["reason"] == "server.error"
    assert (
        entry["error_type"] == "RuntimeError" and entry["user"] == "alice" and entry["route"] == "/releases"
    )
    _no_pnr(world.settings.audit_path.read_text())
    _no_pnr(caplog.text)  # the server log has the stack, not the exception's message


@pytest.mark.parametrize(
    "headers,reason", [({}, "auth.missing_token"), ({"Authorization": "Bearer nope"}, "auth.invalid_token")]
)
def test_authentication_failures_are_audited(client, world, headers, reason):
    before = _count(world)
    r = client.get("/me", headers=headers)
    assert r.status_code == 401
    (entry,) = _new_entries(world, before)
    assert entry["event"] == "access.auth" and entry["reason"] == reason


def test_refusals_outside_the_service_are_audited_with_their_reason(client, world):
    before = _count(world)
    assert client.get("/audit/report", headers=auth(world.alice)).status_code == 403
    (entry,) = _new_entries(world, before)
    assert (
        entry["event"] == "access.http"
        and entry["reason"] == "role.not_operator"
        and entry["user"] == "alice"
    )


def test_plain_requests_are_audited_too(client, world):
    before = _count(world)
    assert client.get("/health").status_code == 200
    assert client.get("/me", headers=auth(world.bob)).status_code == 200
    health, me = _new_entries(world, before)
    assert (health["route"], health["decision"], health.get("user")) == ("/health", "allowed", None)
    assert (me["route"], me["user"], me["status"]) == ("/me", "bob", 200)


def test_a_query_writes_one_entry_not_two(client, world):
    before = _count(world)
    r = client.post(
        "/releases/r_rec/query", json={"sql": "SELECT count(*) AS n FROM patient"}, headers=auth(world.alice)
    )
    assert r.status_code == 200
    (entry,) = _new_entries(world, before)
    assert entry["event"] == "access.query"


def test_refused_query_keeps_a_keyed_digest_of_its_text(world):
    from access.errors import Refusal
    from access.ports import User
    from hdp import audit
    from privacy import audit_key

    before_source = audit.key_source()
    audit_key.configure()
    try:
        alice = User("alice", frozenset({"researcher"}))
        sql = f"SELECT * FROM patient WHERE person_id = '{PNR}'"
        with pytest.raises(Refusal):  # refused before the text is parsed or masked
            world.service.query(alice, "r_rec", sql, "xml")
        last = _entries(world)[-1]
        assert last["decision"] == "refused" and last["reason"] == "format.unknown"
        assert last["query_sha256"] is None and last["query_masked"] is None
        assert last["query_text_hmac"] == world.service.audit.text_mac(sql)
        _no_pnr(world.settings.audit_path.read_text())
        assert world.service.audit.verify().ok
    finally:
        audit.set_key_source(before_source)
