"""The governance router over HTTP (FastAPI TestClient), mounted on a minimal app."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from govtest_helpers import request_fields
from sqlalchemy import func, select

from access.routes_governance import make_router
from governance import service
from governance.models import ConsentRow, RequestRow
from governance.store import session_scope


@pytest.fixture
def api(seeded):
    def get_session():
        with session_scope(seeded) as s:
            yield s

    def current_user(request: Request):
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        with session_scope(seeded) as s:
            user = service.authenticate_token(s, token)
        if user is None:
            raise HTTPException(401, "no valid token")
        return user

    app = FastAPI()
    app.include_router(make_router(get_session, current_user))
    client = TestClient(app)
    with session_scope(seeded) as s:
        tokens = {
            n: service.issue_token(s, user_name=n)
            for n in ("alice", "bob", "carol", "s-ndr-1", "s-upp-1", "admin", "dual")
        }

    def call(method, path, who=None, **kw):
        headers = {"Authorization": f"Bearer {tokens[who]}"} if who else {}
        return client.request(method, f"/governance{path}", headers=headers, **kw)

    call.url = seeded
    return call


def _body(**over):
    body = request_fields(**over)
    body["period"] = list(body["period"])
    return body


def _count(url, model):
    with session_scope(url) as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def test_http_workflow(api):
    r = api("POST", "/requests", "alice", json=_body() | {"submit": True})
    assert r.status_code == 201, r.text
    rid = r.json()["request_id"]
    assert api("GET", f"/requests/{rid}", "carol").status_code == 404  # not involved: not visible
    assert api("GET", f"/requests/{rid}", "bob").json()["request"]["status"] == "submitted"
    r = api(
        "POST",
        f"/requests/{rid}/decisions",
        "s-ndr-1",
        json={"holder_id": "ndr", "decision": "approve", "justification": "Fine and proportionate."},
    )
    assert r.status_code == 200 and r.json()["status"] == "under_review"
    r = api(
        "POST",
        f"/requests/{rid}/decisions",
        "s-upp-1",
        json={
            "holder_id": "region_uppsala",
            "decision": "approve",
            "justification": "Fine and proportionate.",
        },
    )
    assert r.json()["status"] == "approved"
    with session_scope(api.url) as s:
        service.record_release(s, request_id=rid, release_id="rel-h", manifest_sha256="0" * 64)
    assert [p["release_id"] for p in api("GET", "/permits", "bob").json()] == ["rel-h"]
    ids = [x["id"] for x in api("GET", "/requests", "s-ndr-1").json()]
    assert ids == [rid]
    r = api(
        "POST",
        f"/requests/{rid}/amendments",
        "alice",
        json={"changes": {"members": ["bob", "carol"]}, "reason": "Carol joins the project."},
    )
    assert r.status_code == 201 and r.json()["separate_request"] is True
    public = api("GET", "/transparency")
    assert public.status_code == 200 and public.json()[0]["status"] == "active"
    assert "alice" not in public.text and "bob" not in public.text
    page = api("GET", "/transparency.html")
    assert "Transparency register" in page.text and "Long-term HbA1c" in page.text
    r = api("POST", f"/requests/{rid}/revoke", "s-upp-1", json={"justification": "Terms of use breached."})
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    assert api("GET", "/permits", "bob").json() == []


def test_http_errors_are_clear_4xx_and_store_nothing(api):
    r = api("POST", "/requests", "alice", json=_body(ethics_ref="12345", purpose="marketing"))
    assert r.status_code == 422
    body = r.json()
    assert body["error"] in {"request.purpose", "request.ethics_ref"}
    assert {p[0] for p in body["problems"]} == {"request.purpose", "request.ethics_ref"}
    assert _count(api.url, RequestRow) == 0
    r = api("POST", "/requests", "alice", json=_body() | {"colour": "red"})
    assert r.status_code == 422 and "colour" in r.text
    assert api("POST", "/requests", "s-ndr-1", json=_body()).status_code == 403
    assert api("POST", "/requests", None, json=_body()).status_code == 401

    rid = api(
        "POST",
        "/requests",
        "dual",
        json=_body(holders=["ndr"], members=[], variables=["register_visit.bmi"]) | {"submit": True},
    ).json()["request_id"]
    r = api(
        "POST",
        f"/requests/{rid}/decisions",
        "dual",
        json={"holder_id": "ndr", "decision": "approve", "justification": "My own request, approved."},
    )
    assert r.status_code == 403 and r.json()["error"] == "decision.self_decision"
    r = api(
        "POST",
        f"/requests/{rid}/decisions",
        "s-ndr-1",
        json={"holder_id": "ndr", "decision": "approve", "justification": "ok"},
    )
    assert r.status_code == 422 and r.json()["error"] == "decision.justification"
    r = api("PATCH", f"/requests/{rid}", "dual", json={"project": "Changed after submission"})
    assert r.status_code == 409 and r.json()["error"] == "transition.submitted.edit"
    r = api("POST", f"/requests/{rid}/submit", "dual")
    assert r.status_code == 409 and "cannot submit" in r.json()["message"]
    assert api("GET", "/requests/9999", "admin").status_code == 404
    with session_scope(api.url) as s:
        assert service.get_request(s, request_id=rid).decisions == ()


def test_http_consent_and_staff_reports(api):
    key = "c" * 64
    assert (
        api(
            "POST",
            "/consent",
            "alice",
            json={"consent_key": key, "scope": "secondary_use", "choice": "opt_out", "source_ref": "f"},
        ).status_code
        == 403
    )
    r = api(
        "POST",
        "/consent",
        "s-ndr-1",
        json={
            "consent_key": "191212121212",
            "scope": "secondary_use",
            "choice": "opt_out",
            "source_ref": "f",
        },
    )
    assert (
        r.status_code == 422
        and r.json()["error"] == "consent.plain_identifier"
        and "191212121212" not in r.text
    )
    assert _count(api.url, ConsentRow) == 0
    assert (
        api(
            "POST",
            "/consent",
            "s-ndr-1",
            json={"consent_key": key, "scope": "secondary_use", "choice": "opt_out", "source_ref": "f"},
        ).status_code
        == 201
    )
    state = api("GET", f"/consent/{key}", "s-ndr-1").json()["excluded_now"]
    assert all(state.values())
    assert api("GET", "/overdue", "alice").status_code == 403
    assert api("GET", "/overdue", "s-ndr-1").json() == []
    assert api("GET", "/figures?period=year", "admin").status_code == 200
    assert api("GET", "/figures?period=decade", "admin").status_code == 422
    r = api("POST", "/users", "admin", json={"name": "dave", "roles": ["researcher"]})
    assert r.status_code == 201
    tok = api("POST", "/users/dave/tokens", "admin").json()["token"]
    assert tok.startswith("hdp_")
    assert api("POST", "/users", "s-ndr-1", json={"name": "eve", "roles": ["admin"]}).status_code == 403
    assert set(api("GET", "/purposes").json()["purposes"]) >= {"scientific_research", "public_health"}
    assert api("PUT", "/deadline", "admin", json={"days": 10}).json() == {"days": 10, "holder_id": None}
    assert api("PUT", "/deadline", "admin", json={"days": 0}).status_code == 422
    assert api("PUT", "/deadline", "s-ndr-1", json={"days": 10}).status_code == 403
