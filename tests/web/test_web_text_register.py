"""The public transparency register (HTML and JSON) and the steward's request page, with a project
title and a justification stored before the free-text rule: no bidi control or NUL reaches a reader."""

from __future__ import annotations

from sqlalchemy import update
from webtest_helpers import csrf_of, login

RLO, LRI, ESC = "\u202e", "\u2066", "\x1b"
FORBIDDEN = (RLO, LRI, ESC, "\x00")


def _approve(client, world):
    login(client, world.tokens["s-ndr"])
    page = client.get(f"/web/requests/{world.request_id}")
    r = client.post(
        f"/web/requests/{world.request_id}/decide",
        data={
            "csrf_token": csrf_of(page.text),
            "holder_id": "ndr",
            "decision": "approve",
            "justification": "Proportionate and covered by the ethics approval.",
        },
        follow_redirects=True,
    )
    assert r.status_code == 200


def test_register_shows_stored_control_characters_replaced(client, world):
    from governance.models import DecisionRow, RequestRow
    from governance.store import session_scope

    _approve(client, world)
    with session_scope(world.url) as s:
        s.execute(
            update(RequestRow)
            .where(RequestRow.id == world.request_id)
            .values(project=f"HbA1c {RLO}exe.yduts{ESC} {LRI}x")
        )
        s.execute(
            update(DecisionRow)
            .where(DecisionRow.request_id == world.request_id)
            .values(justification=f"Fine{RLO} by us.")
        )
    page = client.get(f"/web/requests/{world.request_id}")
    assert page.status_code == 200
    assert not any(ch in page.text for ch in FORBIDDEN)
    client.cookies.clear()
    r = client.get("/web/transparency?lang=en")
    assert r.status_code == 200
    assert not any(ch in r.text for ch in FORBIDDEN)
    assert "<bdi>HbA1c \ufffdexe.yduts\ufffd \ufffdx</bdi>" in r.text
    data = client.get("/web/transparency.json").json()
    [entry] = data["permits"]
    assert entry["project"] == "HbA1c \ufffdexe.yduts\ufffd \ufffdx"


def test_web_decision_with_a_bidi_override_is_refused(client, world):
    login(client, world.tokens["s-ndr"])
    page = client.get(f"/web/requests/{world.request_id}")
    r = client.post(
        f"/web/requests/{world.request_id}/decide",
        data={
            "csrf_token": csrf_of(page.text),
            "holder_id": "ndr",
            "decision": "approve",
            "justification": f"Proportionate {RLO}and covered.",
        },
        follow_redirects=True,
    )
    # the steward's own text comes back in the form to be corrected; the error names the code point
    assert "U+202E" in r.text
    from governance import service
    from governance.store import session_scope

    with session_scope(world.url) as s:
        assert service.get_request(s, request_id=world.request_id).decisions == ()
