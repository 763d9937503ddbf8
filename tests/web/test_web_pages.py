"""Route tests for the /web pages with FastAPI's TestClient (fast, no browser)."""

from __future__ import annotations

from webtest_helpers import csrf_of, login


def test_smoke_login_and_queue(client, world):
    r = login(client, world.tokens["s-ndr"])
    assert r.status_code == 200, r.text
    assert "Granskningskö" in r.text
    r = client.get(f"/web/requests/{world.request_id}")
    assert r.status_code == 200, r.text
    csrf = csrf_of(r.text)
    r = client.post(f"/web/requests/{world.request_id}/decide", data={
        "csrf_token": csrf, "holder_id": "ndr", "decision": "approve",
        "justification": "Ethics approval and variables are proportionate."}, follow_redirects=True)
    assert r.status_code == 200, r.text
    assert "godkänd" in r.text
