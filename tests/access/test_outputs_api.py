"""The airlock over HTTP (in-memory governance): where a result becomes an export, output
requests, two independent checks, downloads only afterwards, row-level exceptions, audit."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import stat

import pytest
from access_support import auth

from access.demo_release import person_id

J = "Two cells by sex, each with more than 100 persons; no pseudonyms, no dates."
C = "Checked: two cells, smallest has 140 persons; nothing personal."
EXC = "The linkage with the national cancer register needs these rows; the register links and deletes."
AGG_SQL = "SELECT sex, count(*) AS n FROM register_visit GROUP BY sex ORDER BY sex"


@pytest.fixture
def people(world):
    """Two output checkers and a steward of ndr (a holder of alice's record-level permit)."""
    g = world.gov
    g.add_user("oc1", {"output_checker"})
    g.add_user("oc2", {"output_checker"})
    g.add_user("s-ndr", {"steward"}, ("ndr",))
    g.add_user("s-none", {"steward"}, ("nowhere",))
    return {n: g.issue_token(n) for n in ("oc1", "oc2", "s-ndr", "s-none")} | {
        "alice": world.alice,
        "bob": world.bob,
    }


def q(client, token, release, sql, fmt="json"):
    return client.post(f"/releases/{release}/query", json={"sql": sql, "format": fmt}, headers=auth(token))


def create(client, token, sql=AGG_SQL, fmt="csv", release="r_rec", title="Visits by sex", context=J):
    return client.post(
        f"/releases/{release}/outputs",
        headers=auth(token),
        json={"sql": sql, "format": fmt, "title": title, "context": context},
    )


def check(client, token, oid, decision="approve", comment=C):
    return client.post(
        f"/outputs/{oid}/checks", headers=auth(token), json={"decision": decision, "comment": comment}
    )


def audit(world, event):
    return [
        json.loads(line)
        for line in world.settings.audit_path.read_text().splitlines()
        if json.loads(line).get("event") == event
    ]


def stored(world, o):
    return world.settings.releases_dir.parent / "restricted" / "outputs" / o["release_id"]


def test_record_results_are_previews_only(client, world):
    ok = q(client, world.alice, "r_rec", "SELECT person_id, hba1c_mmol_mol FROM register_visit LIMIT 100")
    assert ok.status_code == 200 and ok.json()["row_count"] == 100  # inside the environment: a preview
    for fmt, sql in (
        ("csv", AGG_SQL),
        ("parquet", AGG_SQL),
        ("json", "SELECT * FROM register_visit"),
        ("arrow", "SELECT * FROM register_visit LIMIT 101"),
    ):
        r = q(client, world.alice, "r_rec", sql, fmt)
        assert r.status_code == 403, (fmt, sql)
        assert r.json()["error"] == "output.review_required"
        assert "/releases/r_rec/outputs" in r.json()["message"]
    refused = [e for e in audit(world, "access.query") if e["decision"] == "refused"]
    assert len(refused) == 4 and {e["reason"] for e in refused} == {"output.review_required"}
    assert all(len(e["query_sha256"]) == 64 for e in refused)
    # Aggregate-tier results are disclosure-controlled: they leave directly, files included.
    assert q(client, world.alice, "r_agg", AGG_SQL, "csv").status_code == 200


def test_whole_airlock_two_checkers_then_download(client, world, people):
    r = create(client, people["alice"])
    assert r.status_code == 201, r.text
    o = r.json()
    assert (o["status"], o["round"], o["row_level"], o["columns"], o["rows"]) == (
        "submitted",
        1,
        False,
        ["sex", "n"],
        2,
    )
    path = stored(world, o)
    [f] = list(path.iterdir())
    assert stat.S_IMODE(path.stat().st_mode) == 0o700 and stat.S_IMODE(f.stat().st_mode) == 0o600
    assert hashlib.sha256(f.read_bytes()).hexdigest() == o["sha256"]
    oid = o["id"]
    dl = f"/outputs/{oid}/download"

    r = client.get(dl, headers=auth(people["alice"]))
    assert r.status_code == 409 and r.json()["error"] == "output.not_approved"
    assert check(client, people["alice"], oid).json()["error"] == "output.self_check"
    assert check(client, people["bob"], oid).status_code == 403  # not a checker
    assert check(client, people["s-none"], oid).json()["error"] == "output.not_checker"
    assert [x["id"] for x in client.get("/outputs/check", headers=auth(people["oc1"])).json()] == [oid]
    assert client.get("/outputs/check", headers=auth(people["alice"])).json() == []
    preview = client.get(f"/outputs/{oid}/preview", headers=auth(people["oc1"])).json()
    assert [row[0] for row in preview["rows"]] == ["F", "M"]

    r = check(client, people["oc1"], oid)
    assert r.json()["status"] == "under_review" and r.json()["approvals"] == ["oc1"]
    assert client.get(dl, headers=auth(people["alice"])).status_code == 409
    assert check(client, people["oc1"], oid).json()["error"] == "output.duplicate_check"
    assert client.get("/outputs/check", headers=auth(people["oc1"])).json() == []
    r = check(client, people["s-ndr"], oid)  # a steward of a holder in the permit checks too
    assert r.json()["status"] == "approved" and r.json()["approvals"] == ["oc1", "s-ndr"]

    assert client.get(dl, headers=auth(people["bob"])).status_code == 404  # not his, not his to check
    assert client.get(dl, headers=auth(people["oc1"])).json()["error"] == "output.not_requester"
    r = client.get(dl, headers=auth(people["alice"]))
    assert r.status_code == 200 and r.headers["X-HDP-Output-SHA256"] == o["sha256"]
    assert hashlib.sha256(r.content).hexdigest() == o["sha256"]
    assert 'filename="output-' in r.headers["content-disposition"]
    assert [row[0] for row in csv.reader(io.StringIO(r.text))] == ["sex", "F", "M"]
    mine = client.get("/outputs", headers=auth(people["alice"])).json()
    assert mine[0]["downloads"] == 1 and mine[0]["downloadable"] is True

    events = [json.loads(x) for x in world.settings.audit_path.read_text().splitlines()]
    steps = [
        (e["event"], e["decision"])
        for e in events
        if e["event"].startswith("access.output_") and e["event"] != "access.output_preview"
    ]
    assert steps[0] == ("access.output_request", "allowed")
    assert ("access.output_check", "refused") in steps and steps.count(
        ("access.output_check", "allowed")
    ) == 2
    assert steps.count(("access.output_download", "refused")) == 4 and steps[-1] == (
        "access.output_download",
        "allowed",
    )
    assert "Visits by sex" not in world.settings.audit_path.read_text()  # free text stays out of the log


def test_tampered_file_is_not_served(client, world, people):
    o = create(client, people["alice"]).json()
    for who in ("oc1", "oc2"):
        check(client, people[who], o["id"])
    [f] = list(stored(world, o).iterdir())
    f.write_bytes(f.read_bytes() + b'"X",1\n')
    r = client.get(f"/outputs/{o['id']}/download", headers=auth(people["alice"]))
    assert r.status_code == 409 and r.json()["error"] == "output.integrity"


def test_row_level_needs_a_stewards_exception(client, world, people):
    sql = "SELECT person_id, visit_date, hba1c_mmol_mol FROM register_visit WHERE bmi > 30"
    r = create(client, people["alice"], sql=sql, fmt="parquet")
    assert r.status_code == 403 and r.json()["error"] == "output.row_level_needs_exception"
    # A pseudonym smuggled out under another name is caught in the data.
    hidden = "SELECT x, count(*) AS n FROM (SELECT person_id AS x FROM register_visit) s GROUP BY x"
    r = create(client, people["alice"], sql=hidden)
    assert r.status_code == 403 and r.json()["error"] == "output.row_level_needs_exception"
    assert not any(stored(world, {"release_id": "r_rec"}).glob("*"))  # refused files are not kept
    # Only a steward of a holder in the permit may record the exception, with a justification.
    exc_url = "/permits/1/output-exceptions"
    for who, code in (
        ("oc1", "exception.not_steward"),
        ("s-none", "exception.not_steward"),
        ("alice", "exception.project_member"),
    ):
        r = client.post(exc_url, headers=auth(people[who]), json={"justification": EXC})
        assert r.status_code == 403 and r.json()["error"] == code, who
    assert (
        client.post(exc_url, headers=auth(people["s-ndr"]), json={"justification": "short"}).status_code
        == 422
    )
    e = client.post(exc_url, headers=auth(people["s-ndr"]), json={"justification": EXC})
    assert e.status_code == 201 and e.json()["holder_id"] == "ndr"
    # Visible to checkers and to the permit's users, not to others.
    assert client.get(exc_url, headers=auth(people["oc1"])).json()[0]["justification"] == EXC
    assert client.get(exc_url, headers=auth(people["bob"])).status_code == 404
    o = create(client, people["alice"], sql=sql, fmt="parquet").json()
    assert (
        o["row_level"]
        and "pseudonym_selected" in o["row_level_reasons"]
        and o["exception_id"] == e.json()["id"]
    )
    for who in ("oc1", "oc2"):
        check(client, people[who], o["id"])
    assert client.get(f"/outputs/{o['id']}/download", headers=auth(people["alice"])).status_code == 200
    w = client.post(f"/output-exceptions/{e.json()['id']}/withdraw", headers=auth(people["s-ndr"]))
    assert w.status_code == 200 and w.json()["withdrawn_by"] == "s-ndr"
    r = client.get(f"/outputs/{o['id']}/download", headers=auth(people["alice"]))
    assert r.status_code == 403 and r.json()["error"] == "output.exception_withdrawn"


def test_withdrawn_person_is_not_in_a_row_level_download(client, world, people):
    from datetime import timedelta

    from access.demo_release import consent_key

    client.post("/permits/1/output-exceptions", headers=auth(people["s-ndr"]), json={"justification": EXC})
    o = create(client, people["alice"], sql="SELECT person_id FROM patient", fmt="json").json()
    for who in ("oc1", "oc2"):
        check(client, people[who], o["id"])
    world.gov.opt_out(consent_key(0, seed=1), at=world.now - timedelta(seconds=1))
    r = client.get(f"/outputs/{o['id']}/download", headers=auth(people["alice"]))
    assert r.status_code == 409 and r.json()["error"] == "output.consent_changed"
    again = create(client, people["alice"], sql="SELECT person_id FROM patient", fmt="json").json()
    [f] = [
        p
        for p in stored(world, again).iterdir()
        if hashlib.sha256(p.read_bytes()).hexdigest() == again["sha256"]
    ]
    assert person_id(0, seed=1) not in f.read_text() and person_id(1, seed=1) in f.read_text()


def test_return_resubmit_with_a_new_query_then_reject(client, world, people):
    o = create(client, people["alice"]).json()
    check(client, people["oc1"], o["id"])
    r = check(client, people["oc2"], o["id"], "return", "Please band the counts; add the diabetes type.")
    assert r.json()["status"] == "returned"
    assert client.get(f"/outputs/{o['id']}/download", headers=auth(people["alice"])).status_code == 409
    r = client.post(f"/outputs/{o['id']}/resubmit", headers=auth(people["bob"]), json={"context": J})
    assert r.status_code == 404  # not his
    new_sql = "SELECT sex, diabetes_type, count(*) AS n FROM register_visit GROUP BY ALL ORDER BY ALL"
    r = client.post(
        f"/outputs/{o['id']}/resubmit",
        headers=auth(people["alice"]),
        json={"context": J + " Now by diabetes type too.", "sql": new_sql},
    )
    new = r.json()
    assert (new["status"], new["round"], new["approvals"]) == ("submitted", 2, [])
    assert new["sha256"] != o["sha256"] and new["rows"] == 4
    files = list(stored(world, o).iterdir())
    assert [hashlib.sha256(f.read_bytes()).hexdigest() for f in files] == [new["sha256"]]  # old file gone
    assert check(client, people["oc1"], o["id"]).json()["status"] == "under_review"  # a new round
    assert (
        check(client, people["oc2"], o["id"], "reject", "Too fine for this purpose.").json()["status"]
        == "rejected"
    )
    assert list(stored(world, o).iterdir()) == []  # nothing will leave: no copy kept
    assert client.post(f"/outputs/{o['id']}/withdraw", headers=auth(people["alice"])).status_code == 409


def test_withdraw_and_visibility(client, world, people):
    o = create(client, people["alice"]).json()
    assert client.get(f"/outputs/{o['id']}", headers=auth(people["bob"])).status_code == 404
    assert client.get(f"/outputs/{o['id']}/preview", headers=auth(people["bob"])).status_code == 404
    assert client.get(f"/outputs/{o['id']}", headers=auth(people["oc2"])).status_code == 200
    assert client.post(f"/outputs/{o['id']}/withdraw", headers=auth(people["oc1"])).status_code == 403
    assert (
        client.post(f"/outputs/{o['id']}/withdraw", headers=auth(people["alice"])).json()["status"]
        == "withdrawn"
    )
    assert check(client, people["oc1"], o["id"]).status_code == 409


def test_aggregate_tier_needs_no_output_request_and_bad_input_is_refused(client, world, people):
    r = create(client, people["alice"], release="r_agg")
    assert r.status_code == 400 and r.json()["error"] == "output.not_needed"
    r = create(client, people["alice"], title="x\u202etxt.exe")
    assert r.status_code == 422 and r.json()["error"] == "output.title.forbidden_character"
    r = create(client, people["alice"], sql="SELECT * FROM read_csv('/etc/passwd')")
    assert r.status_code == 400
    r = create(client, people["bob"], release="r_rec")
    assert r.status_code == 403 and r.json()["error"] == "permit.none"


def test_revoked_permit_stops_the_download(client, world, people):
    o = create(client, people["alice"]).json()
    for who in ("oc1", "oc2"):
        check(client, people[who], o["id"])
    world.gov.revoke(1)
    r = client.get(f"/outputs/{o['id']}/download", headers=auth(people["alice"]))
    assert r.status_code == 403


def test_export_rule_configuration(monkeypatch):
    from access.errors import Refusal
    from access.outputs import ExportRule

    assert ExportRule.from_env({}) == ExportRule(100, frozenset({"json", "arrow"}))
    production = {"HDP_ENV": "production", "HDP_GOVERNANCE_URL": "postgresql+psycopg://gov@db/gov"}
    assert ExportRule.from_env({"HDP_ACCESS_PREVIEW_ROWS": "10", **production}).preview_rows == 10
    for env in (
        {"HDP_ACCESS_PREVIEW_ROWS": "5000", **production},
        {"HDP_ACCESS_PREVIEW_FORMATS": "json,csv", **production},
        {"HDP_ACCESS_PREVIEW_ROWS": "many"},
        {"HDP_ACCESS_PREVIEW_FORMATS": "xlsx"},
    ):
        with pytest.raises(Refusal) as err:
            ExportRule.from_env(env)
        assert err.value.reason == "output.rule_invalid" and err.value.status == 503
    assert "HDP_ACCESS_PREVIEW_ROWS" not in os.environ


def test_client_methods(client, world, people):
    from access.client import AccessError, Client

    def c(token):
        return Client("http://testserver", token, release="r_rec", transport=client._transport)

    with c(people["alice"]) as alice, c(people["oc1"]) as oc1, c(people["oc2"]) as oc2:
        with pytest.raises(AccessError) as err:
            alice.raw(AGG_SQL, format="csv")
        assert err.value.reason == "output.review_required"
        o = alice.request_output(AGG_SQL, title="Visits by sex", context=J)
        with pytest.raises(AccessError) as err:
            alice.download_output(o["id"])
        assert err.value.reason == "output.not_approved"
        assert [x["id"] for x in oc1.output_queue()] == [o["id"]]
        assert oc1.output_preview(o["id"])["row_count"] == 2
        oc1.check_output(o["id"], "approve", C)
        assert oc2.check_output(o["id"], "approve", C)["status"] == "approved"
        body = alice.download_output(o["id"])
        assert hashlib.sha256(body).hexdigest() == o["sha256"] == alice.output(o["id"])["sha256"]
        assert alice.outputs()[0]["downloads"] == 1
