"""The governance API's decision aids: checklist with a decision, the at-risk acknowledgement
(enforced as on the request page), and the comment thread."""

from __future__ import annotations

import sys
from pathlib import Path

from govtest_helpers import request_fields

from governance import service
from governance.store import session_scope

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "web"))
from webtest_helpers import write_research_zone  # noqa: E402

pytest_plugins = ["test_gov_http"]  # the ``api`` fixture: the router on a minimal app

WHY = "Fine and proportionate to the aim."
VARIABLES = ["register_visit.hba1c_mmol_mol", "register_visit.birth_year", "register_visit.sex"]


def _submitted(api) -> int:
    body = request_fields(holders=["ndr"], variables=VARIABLES) | {"submit": True}
    body["period"] = list(body["period"])
    r = api("POST", "/requests", "alice", json=body)
    assert r.status_code == 201, r.text
    return r.json()["request_id"]


def test_approval_with_groups_at_risk_needs_the_acknowledgement(api, hdp_home):
    write_research_zone(hdp_home.research_db("ndr"))  # one person alone in a group
    rid = _submitted(api)
    approve = {"holder_id": "ndr", "decision": "approve", "justification": WHY}
    r = api("POST", f"/requests/{rid}/decisions", "s-ndr-1", json=approve)
    assert r.status_code == 422
    assert r.json()["problems"][0][0] == "decision.at_risk_not_acknowledged"
    r = api(
        "POST",
        f"/requests/{rid}/decisions",
        "s-ndr-1",
        json=approve | {"checklist": {"at_risk_acknowledged": True, "projects": True}},
    )
    assert r.status_code == 200 and r.json()["status"] == "approved"
    with session_scope(api.url) as s:
        (d,) = service.get_request(s, request_id=rid).decisions
    assert d.checklist["at_risk_acknowledged"] and d.checklist["projects"] and not d.checklist["data"]


def test_rejection_and_approval_without_risk_need_no_acknowledgement(api, hdp_home):
    rid = _submitted(api)  # no research zone: nothing at risk
    r = api(
        "POST", f"/requests/{rid}/decisions", "s-ndr-1",
        json={"holder_id": "ndr", "decision": "approve", "justification": WHY, "checklist": {"bogus": True}},
    )  # fmt: skip
    assert r.status_code == 422 and r.json()["problems"][0][0] == "decision.checklist"
    r = api(
        "POST", f"/requests/{rid}/decisions", "s-ndr-1",
        json={"holder_id": "ndr", "decision": "approve", "justification": WHY},
    )  # fmt: skip
    assert r.status_code == 200


def test_comments_over_http(api):
    rid = _submitted(api)
    r = api("POST", f"/requests/{rid}/comments", "s-ndr-1", json={"body": "Why birth year?"})
    assert r.status_code == 201 and r.json()["author"] == "s-ndr-1"
    assert (
        api("POST", f"/requests/{rid}/comments", "bob", json={"body": "For age groups."}).status_code == 201
    )
    assert api("POST", f"/requests/{rid}/comments", "carol", json={"body": "hi there"}).status_code == 404
    assert api("POST", f"/requests/{rid}/comments", "s-upp-1", json={"body": "hi there"}).status_code == 404
    assert api("GET", f"/requests/{rid}/comments", "carol").status_code == 404
    r = api("POST", f"/requests/{rid}/comments", "alice", json={"body": ""})
    assert r.status_code == 422 and r.json()["problems"][0][0] == "comment.empty"
    thread = api("GET", f"/requests/{rid}/comments", "alice").json()
    assert [(c["author"], c["body"]) for c in thread] == [
        ("s-ndr-1", "Why birth year?"),
        ("bob", "For age groups."),
    ]


def test_admin_records_an_organisation(api):
    r = api(
        "POST", "/users", "admin",
        json={"name": "erik", "roles": ["researcher"], "organisation": "Uppsala universitet"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    with session_scope(api.url) as s:
        assert service.user_organisation(s, "erik") == "Uppsala universitet"
    assert api("PUT", "/users/alice/organisation", "alice", json={"organisation": "Mine"}).status_code == 403
    r = api("PUT", "/users/alice/organisation", "admin", json={"organisation": "Karolinska institutet"})
    assert r.status_code == 200 and r.json() == {"user": "alice", "organisation": "Karolinska institutet"}
    r = api("PUT", "/users/alice/organisation", "admin", json={"organisation": "x\u202ey"})
    assert r.status_code == 422 and r.json()["problems"][0][0] == "user.organisation.forbidden_character"
    assert api("PUT", "/users/nobody/organisation", "admin", json={"organisation": "X"}).status_code == 404
    r = api("PUT", "/users/alice/organisation", "admin", json={"organisation": None})
    assert r.json()["organisation"] is None
