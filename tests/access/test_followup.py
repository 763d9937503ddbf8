"""Access follow-up (logguppföljning): the pure report over audit entries, and the API and CLI
over a real governance store and the access layer's real, keyed audit logs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from access_support import auth
from click.testing import CliRunner

from governance.followup import FollowUpError, ReleaseFacts, follow_up, parse_since
from hdp.audit import ReportThresholds

PNR = "19121212-1212"
# A Tuesday, 10:00 and 23:30 in Stockholm (UTC+1 in winter), and a Saturday noon.
TUE_10 = datetime(2026, 11, 17, 9, 0, tzinfo=UTC)
TUE_2330 = datetime(2026, 11, 17, 22, 30, tzinfo=UTC)
SAT_12 = datetime(2026, 11, 21, 11, 0, tzinfo=UTC)

RELEASES = {
    "rel_a": ReleaseFacts(
        "rel_a", 1, ("ndr",), frozenset({"alice", "bob"}), TUE_10 + timedelta(days=10), "active"
    ),
    "rel_old": ReleaseFacts("rel_old", 2, ("ndr", "region_skane"), frozenset({"carol"}), TUE_10, "expired"),
    "rel_skane": ReleaseFacts("rel_skane", 3, ("region_skane",), frozenset({"alice"}), SAT_12, "active"),
}


def e(ts: datetime, event: str, **fields) -> dict:
    return {"ts": ts.isoformat(), "event": event, **fields}


def entries() -> list[dict]:
    q = {"query_masked": f"SELECT * FROM t WHERE pnr = '{PNR}'", "query_sha256": "f" * 64}
    return [
        e(
            TUE_10,
            "access.query",
            user="alice",
            release_id="rel_a",
            permit_id=1,
            decision="allowed",
            rows=12,
            **q,
        ),
        e(
            TUE_10,
            "access.query",
            user="alice",
            release_id="rel_a",
            permit_id=1,
            decision="allowed",
            rows=None,
        ),
        e(
            TUE_10,
            "access.query_end",
            user="alice",
            release_id="rel_a",
            permit_id=1,
            rows=150_000,
            completed=True,
        ),
        e(TUE_10, "access.schema", user="alice", release_id="rel_a", permit_id=1, decision="allowed"),
        e(
            TUE_2330,
            "access.query",
            user="bob",
            release_id="rel_a",
            permit_id=1,
            decision="allowed",
            rows=3,
            **q,
        ),
        *(
            e(
                SAT_12,
                "access.query",
                user="bob",
                release_id="rel_a",
                decision="refused",
                reason=r,
                query_text_hmac="a" * 64,
            )
            for r in ("sql.syntax", "sql.syntax", "aggregate.join")
        ),
        # Someone the permit does not name tries the release, and the old one after it ended.
        e(
            TUE_10,
            "access.schema",
            user="mallory",
            release_id="rel_a",
            decision="refused",
            reason="permit.none",
        ),
        e(
            TUE_10 + timedelta(hours=1),
            "access.query",
            user="carol",
            release_id="rel_old",
            decision="refused",
            reason="permit.expired",
        ),
        # Outputs: filed (governance log), requested (access log), approved by the second check, downloaded.
        e(TUE_10, "governance.output.filed", output_id=7, permit_id=1, release_id="rel_a", actor="alice"),
        e(
            TUE_10,
            "access.output_request",
            user="alice",
            release_id="rel_a",
            permit_id=1,
            decision="allowed",
            output_id=7,
        ),
        e(
            TUE_10,
            "access.output_preview",
            user="steward1",
            output_id=7,
            permit_id=1,
            decision="allowed",
            rows=20,
        ),
        e(TUE_10, "governance.output.checked", output_id=7, permit_id=1, actor="s1", to_status="in_check"),
        e(TUE_10, "governance.output.checked", output_id=7, permit_id=1, actor="s2", to_status="approved"),
        e(
            TUE_10,
            "access.output_download",
            user="alice",
            output_id=7,
            permit_id=1,
            release_id="rel_a",
            decision="allowed",
        ),
        # Another holder's release, an id no permit has (a typed path), and the period's edges.
        e(TUE_10, "access.query", user="alice", release_id="rel_skane", decision="allowed", rows=1),
        e(TUE_10, "access.schema", user="alice", release_id=PNR, decision="refused", reason="permit.none"),
        e(
            TUE_10 - timedelta(days=40),
            "access.query",
            user="alice",
            release_id="rel_a",
            decision="allowed",
            rows=1,
        ),
        e(TUE_10, "access.http", user="alice", route="/releases", status=200, decision="allowed"),
    ]


def report(**kw):
    args = {"holder": "ndr", "since": TUE_10 - timedelta(days=30), "until": TUE_10 + timedelta(days=30)}
    return follow_up(entries(), RELEASES, **{**args, **kw})


def row(rep, user, release="rel_a"):
    return next(a for a in rep["activity"] if a["user"] == user and a["release_id"] == release)


def test_counts_per_user_and_release_in_the_period():
    rep = report()
    assert [r["release_id"] for r in rep["releases"]] == ["rel_a", "rel_old"]  # not region_skane's own
    alice = row(rep, "alice")
    assert alice["queries"] == 2 and alice["rows"] == 150_012  # a streamed query's rows from its end
    assert alice["schema_views"] == 1 and alice["downloads"] == 1
    assert alice["outputs_requested"] == 1 and alice["outputs_approved"] == 1
    assert alice["refused"] == 0 and alice["off_hours"] == 0
    bob = row(rep, "bob")
    assert bob["queries"] == 1 and bob["refused"] == 3 and bob["off_hours"] == 4
    assert bob["refusal_reasons"] == {"aggregate.join": 1, "sql.syntax": 2}
    assert row(rep, "steward1")["previews"] == 1
    assert {(a["user"], a["release_id"]) for a in rep["activity"]} == {
        ("alice", "rel_a"),
        ("bob", "rel_a"),
        ("mallory", "rel_a"),
        ("steward1", "rel_a"),
        ("carol", "rel_old"),
    }
    assert rep["totals"]["entries_for_unknown_releases"] == 1
    assert rep["totals"]["queries"] == 3 and rep["totals"]["refused"] == 5


def test_findings_name_what_to_follow_up():
    kinds = {(f["kind"], f["user"], f["release_id"]) for f in report()["findings"]}
    assert ("refusals", "bob", "rel_a") in kinds
    assert ("off_hours", "bob", "rel_a") in kinds
    assert ("not_on_permit", "mallory", "rel_a") in kinds
    assert ("after_permit_end", "carol", "rel_old") in kinds
    assert ("volume", "alice", "rel_a") in kinds  # 150,012 rows against a median of 3 per user
    assert not any(k[1] == "steward1" for k in kinds)  # a checker's preview is their work
    quiet = report(thresholds=ReportThresholds(work_start_hour=0, work_end_hour=24, min_refusals=10))
    assert not any(f["kind"] == "refusals" for f in quiet["findings"])
    assert row(quiet, "bob")["off_hours"] == 3  # all day counts as office hours now; a Saturday does not


def test_the_report_holds_no_query_text_and_no_typed_release_id():
    text = json.dumps(report())
    for forbidden in (PNR, "19121212", "SELECT", "query_masked", "query_text_hmac", "f" * 64, "a" * 64):
        assert forbidden not in text


def test_one_release_and_its_holder():
    rep = report(release="rel_old")
    assert [a["user"] for a in rep["activity"]] == ["carol"]
    with pytest.raises(FollowUpError) as err:
        report(release="rel_skane")  # region_skane's, not ndr's
    assert "rel_skane" not in str(err.value)


def test_since_accepts_durations_and_dates():
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    assert parse_since("30d", now=now) == now - timedelta(days=30)
    assert parse_since("12h", now=now) == now - timedelta(hours=12)
    assert parse_since("2w", now=now) == now - timedelta(weeks=2)
    assert parse_since("2026-11-01", now=now) == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(FollowUpError):
        parse_since("last tuesday", now=now)


# -- over the real store, logs, API and CLI -------------------------------------------------


@pytest.fixture
def live(hdp_home):
    """A released request (ndr) in a real governance store, its users, and the access app."""
    from fastapi.testclient import TestClient
    from test_access_governance_integration import RELEASE, GovWorld

    from access.app import create_app
    from governance import service
    from governance.store import dispose_all, session_scope
    from hdp import audit
    from privacy import audit_key

    before = audit.key_source()
    audit_key.configure()  # every log keyed from its first entry, as in a deployment
    try:
        world = GovWorld(hdp_home.home)
        with session_scope(world.url) as s:
            service.create_user(s, name="s-skane", roles=["steward"], holder_ids=["region_skane"])
            service.create_user(s, name="olle", roles=["operator"])
            world.tokens |= {n: service.issue_token(s, user_name=n) for n in ("s-skane", "olle")}
        app = create_app(world.access_settings)
        with TestClient(app) as client:
            yield world, client, RELEASE
        app.state.service.close()
    finally:
        dispose_all()
        audit.set_key_source(before)
        audit_key.forget()


def test_stewards_see_their_holder_operators_every_holder(live):
    world, client, release = live
    t = world.tokens
    ok = client.post(
        f"/releases/{release}/query",
        json={"sql": "SELECT count(*) FROM register_visit"},
        headers=auth(t["alice"]),
    )
    assert ok.status_code == 200
    for _ in range(3):
        bad = client.post(
            f"/releases/{release}/query", json={"sql": f"SELEC '{PNR}'"}, headers=auth(t["bob"])
        )
        assert bad.status_code == 400
    assert client.get(f"/releases/{release}/schema", headers=auth(t["carol"])).status_code == 403  # not named
    assert client.get(f"/releases/{PNR}/schema", headers=auth(t["alice"])).status_code == 403

    url = "/audit/follow-up?holder=ndr&since=1d"
    r = client.get(url, headers=auth(t["s-ndr"]))
    assert r.status_code == 200, r.text
    rep = r.json()
    assert PNR not in r.text and "SELEC" not in r.text
    assert all(log["verified"] for log in rep["logs"]) and {log["log"] for log in rep["logs"]} == {
        "access.jsonl",
        "audit.jsonl",
    }
    assert [x["release_id"] for x in rep["releases"]] == [release]
    users = {a["user"]: a for a in rep["activity"]}
    assert users["alice"]["queries"] == 1 and users["alice"]["rows"] == 1
    assert users["bob"]["refused"] == 3 and users["bob"]["refusal_reasons"] == {"sql.syntax": 3}
    assert "carol" in users and ("not_on_permit", "carol") in {
        (f["kind"], f["user"]) for f in rep["findings"]
    }
    assert rep["totals"]["entries_for_unknown_releases"] == 1

    assert client.get(url, headers=auth(t["olle"])).json()["activity"] == rep["activity"]
    assert client.get(url, headers=auth(t["s-skane"])).json()["error"] == "role.not_holder_steward"
    assert client.get(url, headers=auth(t["alice"])).status_code == 403
    assert client.get(url).status_code == 401
    assert client.get(url.replace("ndr", "nowhere"), headers=auth(t["olle"])).status_code == 404
    other = client.get(f"{url}&release=someone_elses", headers=auth(t["s-ndr"]))
    assert other.status_code == 400 and other.json()["error"] == "followup.invalid"
    assert "someone_elses" not in other.text
    skane = client.get("/audit/follow-up?holder=region_skane", headers=auth(t["s-skane"])).json()
    assert skane["activity"] == [] and skane["releases"] == []
    # The same permit in the metrics: one release in force for ndr.
    m = client.get("/metrics", headers=auth(t["olle"])).text
    assert 'hdp_permits{holder="ndr",status="active"} 1.0' in m


def test_cli_prints_the_same_report(live):
    from edge.commands.followup import follow_up as command

    world, client, release = live
    client.post(
        f"/releases/{release}/query",
        json={"sql": "SELECT count(*) FROM register_visit"},
        headers=auth(world.tokens["bob"]),
    )
    runner = CliRunner()
    as_json = runner.invoke(command, ["--holder", "ndr", "--since", "1d", "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    rep = json.loads(as_json.output)
    assert [(a["user"], a["queries"]) for a in rep["activity"]] == [("bob", 1)]
    table = runner.invoke(command, ["--holder", "ndr", "--since", "1d", "--release", release])
    assert table.exit_code == 0, table.output
    assert "Access follow-up ndr" in table.output and "bob" in table.output and "verified" in table.output
    assert runner.invoke(command, ["--holder", "nowhere"]).exit_code != 0
    assert runner.invoke(command, ["--holder", "ndr", "--since", "yesterday-ish"]).exit_code != 0
