"""The access follow-up (logguppföljning) page for stewards, on the real app over a real store and
the access layer's real audit log: the same report as ``GET /audit/follow-up``, the same rule
for who may see which holder, the period as the API reads it, and the steward's menu link."""

from __future__ import annotations

import html
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "access"))  # outputs_support
from outputs_support import CSRF, airlock_world, browser  # noqa: E402

from access.web.followup import FINDING_KEYS, page_report  # noqa: E402

PNR = "19121212-1212"
RELEASE = "rel_fu_0001"


@pytest.fixture
def airlock(hdp_home):
    from governance.store import dispose_all, upgrade
    from hdp import audit
    from privacy import audit_key

    before = audit.key_source()
    audit_key.configure()  # every log keyed from its first entry, as in a deployment
    upgrade(hdp_home.governance_url)
    try:
        yield airlock_world(hdp_home.governance_url, hdp_home.releases_dir, release_id=RELEASE)
    finally:
        dispose_all()
        audit.set_key_source(before)
        audit_key.forget()


@pytest.fixture
def app(airlock):
    from access.app import create_app

    application = create_app()
    yield application
    application.state.service.close()


def query(c, sql: str):
    token = CSRF.search(c.get(f"/web/workspace/{RELEASE}").text).group(1)
    return c.post(f"/web/workspace/{RELEASE}", data={"csrf_token": token, "sql": sql})


def activity(page: str) -> dict[str, dict[str, str]]:
    """User -> the counted columns of both activity tables (use, and refusals and times)."""
    out: dict[str, dict[str, str]] = {}
    for testid in ("followup-activity", "followup-signals"):
        table = re.search(rf'data-testid="{testid}">(.*?)</table>', page, re.S).group(1)
        for user, cells in re.findall(r'<tr data-user="([^"]+)">(.*?)</tr>', table, re.S):
            out.setdefault(user, {}).update(re.findall(r'data-col="(\w+)">(\d+)', cells))
    return out


def test_stewards_follow_up_shows_the_apis_report(app, airlock):
    alice, carol = browser(app, airlock.tokens["alice"]), browser(app, airlock.tokens["carol"])
    assert query(alice, "SELECT sex, count(*) AS n FROM register_visit GROUP BY sex").status_code == 200
    for _ in range(3):  # refused three times, with a personnummer in the text
        assert query(alice, f"SELECT * FROM patient WHERE pnr = '{PNR}'").status_code in (400, 403)
    assert carol.get(f"/web/workspace/{RELEASE}").status_code == 403  # not on the permit

    steward = browser(app, airlock.tokens["s-ndr"])
    home = steward.get("/web/steward")
    assert 'href="/web/follow-up"' in home.text and "Access follow-up" in home.text
    page = steward.get("/web/follow-up")  # the steward's own holder, the last 30 days
    assert page.status_code == 200
    assert '<option value="ndr" selected>' in page.text and page.text.count("<option ") == 1
    assert PNR not in page.text and "SELECT" not in page.text  # never query text
    logs = re.search(r'data-testid="followup-logs">(.*?)</ul>', page.text, re.S).group(1)
    assert "access.jsonl" in logs and "chain verified" in logs and "NOT verify" not in logs
    rows = activity(page.text)
    assert rows["alice"]["queries"] == "1" and rows["alice"]["rows"] == "2"
    assert rows["alice"]["refused"] == "3" and "carol" in rows
    findings = re.search(r'data-testid="followup-findings">(.*?)</table>', page.text, re.S).group(1)
    shown = set(re.findall(r'<tr data-kind="(\w+)"><td>[^<]*</td><td>([\w-]+)</td>', findings))
    assert {("not_on_permit", "carol"), ("refusals", "alice")} <= shown
    assert "User not named on the permit" in findings
    releases = re.search(r'data-testid="followup-releases">(.*?)</table>', page.text, re.S).group(1)
    assert f"<code>{RELEASE}</code>" in releases

    # The API gives the same report to the same steward.
    from fastapi.testclient import TestClient

    r = TestClient(app).get(
        "/audit/follow-up?holder=ndr&since=30d",
        headers={"Authorization": f"Bearer {airlock.tokens['s-ndr']}"},
    )
    assert r.status_code == 200
    rep = r.json()
    assert {a["user"]: str(a["queries"]) for a in rep["activity"]} == {
        u: v["queries"] for u, v in rows.items()
    }
    assert {(f["kind"], f["user"]) for f in rep["findings"]} == shown

    # In Swedish: the labels, not the data, change.
    sv = browser(app, airlock.tokens["s-ndr"], lang="sv").get("/web/follow-up")
    assert "Logguppföljning" in sv.text and "Användare som inte står i tillståndet" in sv.text


def test_the_period_is_read_as_the_api_reads_it(app, airlock):
    steward = browser(app, airlock.tokens["s-ndr"])
    query(browser(app, airlock.tokens["alice"]), "SELECT count(*) AS n FROM register_visit")
    assert "alice" in activity(steward.get("/web/follow-up?holder=ndr&since=2w").text)
    # A period that ended before the query: nothing in it.
    empty = steward.get("/web/follow-up?holder=ndr&since=2020-01-01&until=2020-02-01")
    assert empty.status_code == 200 and 'data-testid="followup-no-activity"' in empty.text
    assert "Period: 2020-01-01 00:00 UTC – 2020-02-01 00:00 UTC" in empty.text
    bad = steward.get("/web/follow-up?holder=ndr&since=yesterday-ish")
    assert bad.status_code == 422 and "give a duration such as 30m, 24h, 7d" in bad.text
    assert 'value="yesterday-ish"' in bad.text and 'data-testid="followup-report"' not in bad.text
    other = steward.get("/web/follow-up?holder=ndr&release=someone_elses")
    assert other.status_code == 422 and "not one of the holder&#39;s releases" in other.text
    assert steward.get(f"/web/follow-up?holder=ndr&since={'9' * 41}").status_code == 422
    for days in (7, 30, 90, 365):  # the quick choices
        assert f'href="/web/follow-up?holder=ndr&amp;since={days}d"' in bad.text


def test_who_may_see_which_holder(app, airlock):
    from fastapi.testclient import TestClient

    steward = browser(app, airlock.tokens["s-ndr"])
    r = steward.get("/web/follow-up?holder=region_skane")  # not the steward's holder
    assert r.status_code == 403 and "for its stewards, operators and admins" in r.text
    assert 'data-testid="followup-report"' not in r.text
    researcher = browser(app, airlock.tokens["alice"])
    assert researcher.get("/web/follow-up").status_code == 403
    assert 'href="/web/follow-up"' not in researcher.get("/web/researcher").text
    assert browser(app, airlock.tokens["oc-1"]).get("/web/follow-up").status_code == 403
    r = TestClient(app, base_url="http://testserver").get("/web/follow-up", follow_redirects=False)
    assert r.status_code == 303 and "/web/login" in r.headers["location"]


def test_page_report_labels_findings_and_reads_times():
    from access.web.i18n import STRINGS, translator

    assert all(key in STRINGS for key in FINDING_KEYS.values())
    report = {
        "since": "2026-11-01T00:00:00+00:00",
        "until": "2026-12-01T00:00:00+00:00",
        "generated_at": "2026-12-01T00:00:00+00:00",
        "releases": [{"release_id": "r", "permit_ends": "2026-12-24T00:00:00+00:00"}],
        "activity": [{"user": "u", "first": "2026-11-02T10:00:00+00:00", "last": None}],
        "findings": [
            {"kind": "off_hours", "user": "u", "release_id": "r", "detail": "2 of 3"},
            {"kind": "new_kind", "user": "u", "release_id": "r", "detail": "x"},
        ],
    }
    shown = page_report(report, translator("sv"), "sv")
    assert shown["since"].year == 2026 and shown["activity"][0]["last"] is None
    assert shown["releases"][0]["permit_ends"].day == 24
    assert [f.label for f in shown["findings"]] == ["Åtkomst utanför kontorstid", "new_kind"]


# A report with every kind of finding, from the pure report over audit entries (counts above a
# thousand, so that the locale's digit grouping shows): a Tuesday 10:00 and 23:30 in Stockholm,
# a Saturday noon, and a Thursday after the old permit ended.
TUE_10 = datetime(2026, 11, 17, 9, 0, tzinfo=UTC)
TUE_2330 = datetime(2026, 11, 17, 22, 30, tzinfo=UTC)
SAT_12 = datetime(2026, 11, 21, 11, 0, tzinfo=UTC)
OLD = "rel_fu_old"


def every_kind_report() -> dict:
    from governance.followup import ReleaseFacts, follow_up

    releases = {
        RELEASE: ReleaseFacts(
            RELEASE, 1, ("ndr",), frozenset({"alice", "bob"}), TUE_10 + timedelta(days=30), "active"
        ),
        OLD: ReleaseFacts(OLD, 2, ("ndr",), frozenset({"dave"}), TUE_10 + timedelta(hours=20), "expired"),
    }

    def e(ts, event, user, release=RELEASE, decision="allowed", **fields):
        return {
            "ts": ts.isoformat(),
            "event": event,
            "user": user,
            "release_id": release,
            "decision": decision,
            **fields,
        }

    entries = [
        e(TUE_10, "access.query", "alice", rows=150_012),  # far above the others' rows
        e(TUE_2330, "access.query", "bob", rows=3),
        *(
            e(SAT_12, "access.query", "bob", decision="refused", reason="aggregate.cell_too_small")
            for _ in range(1_200)
        ),
        *(e(SAT_12, "access.query", "bob", decision="refused", reason="sql.syntax") for _ in range(300)),
        *(e(TUE_10, "access.schema", "carol", decision="refused", reason="permit.none") for _ in range(2)),
        *(e(TUE_10 + timedelta(days=2), "access.query", "dave", OLD, rows=1) for _ in range(3)),
    ]
    report = follow_up(
        entries, releases, holder="ndr", since=TUE_10 - timedelta(days=1), until=TUE_10 + timedelta(days=7)
    )
    return {"generated_at": TUE_10.isoformat(), "logs": [], **report}


#: The English detail the API and the CLI print, as they printed it before the page worded it.
ENGLISH = {
    "not_on_permit": "2 requests for data by a user the permit does not name",
    "after_permit_end": "3 requests at or after the permit ended (2026-11-18)",
    "refusals": "1500 of 1501 requests refused (aggregate.cell_too_small x1200, sql.syntax x300)",
    "off_hours": "1501 of 1501 requests outside 07-19 local time or at weekends",
    "volume": "150012 rows vs median 3 per user and release",
}
SWEDISH = {
    "not_on_permit": "2 förfrågningar om data av en användare som tillståndet inte nämner",
    "after_permit_end": "3 förfrågningar vid eller efter att tillståndet upphörde (2026-11-18)",
    "refusals": "1 500 av 1 501 förfrågningar avvisades (aggregate.cell_too_small × 1 200, sql.syntax × 300)",
    "off_hours": "1 501 av 1 501 förfrågningar utanför 07–19 lokal tid eller på helger",
    "volume": "150 012 rader mot median 3 per användare och uttag",
}
ENGLISH_PAGE = {
    "not_on_permit": "2 requests for data by a user the permit does not name",
    "after_permit_end": "3 requests at or after the permit ended (2026-11-18)",
    "refusals": "1,500 of 1,501 requests refused (aggregate.cell_too_small × 1,200, sql.syntax × 300)",
    "off_hours": "1,501 of 1,501 requests outside 07–19 local time or at weekends",
    "volume": "150,012 rows vs median 3 per user and release",
}


def shown_details(page: str) -> dict[str, str]:
    """Finding kind -> its detail cell on the page (Babel groups Swedish digits with a no-break space)."""
    table = re.search(r'data-testid="followup-findings">(.*?)</table>', page, re.S).group(1)
    cells = re.findall(r'<tr data-kind="(\w+)">.*?<td data-col="detail">([^<]*)</td></tr>', table, re.S)
    return {kind: html.unescape(text).replace("\u00a0", " ") for kind, text in cells}


def test_the_report_keeps_its_english_detail_and_carries_the_params():
    report = every_kind_report()
    assert {f["kind"]: f["detail"] for f in report["findings"]} == ENGLISH
    params = {f["kind"]: f["params"] for f in report["findings"]}
    assert params["refusals"] == {
        "refused": 1_500,
        "requests": 1_501,
        "reasons": [["aggregate.cell_too_small", 1_200], ["sql.syntax", 300]],
    }
    assert params["after_permit_end"] == {"requests": 3, "permit_ends": "2026-11-18"}
    assert params["off_hours"] == {"off_hours": 1_501, "requests": 1_501, "start_hour": 7, "end_hour": 19}
    assert params["volume"] == {"rows": 150_012, "median_rows": 3}
    assert params["not_on_permit"] == {"requests": 2}
    assert json.loads(json.dumps(report)) == report  # what the API and the CLI's --format json send


def test_the_cli_table_prints_the_english_detail(monkeypatch, capsys):
    from edge.commands.followup import print_report

    monkeypatch.setenv("COLUMNS", "400")  # one line per finding
    print_report(every_kind_report())
    out = capsys.readouterr().out
    for detail in ENGLISH.values():
        assert detail in out
    assert "förfrågningar" not in out and "×" not in out


@pytest.mark.parametrize(("lang", "expected"), [("sv", SWEDISH), ("en", ENGLISH_PAGE)])
def test_the_page_words_each_finding_in_its_language(app, airlock, monkeypatch, lang, expected):
    import access.web.followup as page_module

    monkeypatch.setattr(page_module, "holder_follow_up", lambda *args, **kw: every_kind_report())
    page = browser(app, airlock.tokens["s-ndr"], lang=lang).get("/web/follow-up")
    assert page.status_code == 200
    assert shown_details(page.text) == expected


def test_the_page_words_the_real_reports_findings(app, airlock):
    """Over the real audit log and API: the API's detail stays English, the Swedish page words the
    same numbers in Swedish."""
    from fastapi.testclient import TestClient

    alice, carol = browser(app, airlock.tokens["alice"]), browser(app, airlock.tokens["carol"])
    for _ in range(3):
        assert query(alice, f"SELECT * FROM patient WHERE pnr = '{PNR}'").status_code in (400, 403)
    assert carol.get(f"/web/workspace/{RELEASE}").status_code == 403
    r = TestClient(app).get(
        "/audit/follow-up?holder=ndr&since=30d",
        headers={"Authorization": f"Bearer {airlock.tokens['s-ndr']}"},
    )
    api = {(f["kind"], f["user"]): f for f in r.json()["findings"]}
    assert api["not_on_permit", "carol"]["detail"] == "1 requests for data by a user the permit does not name"
    refused = api["refusals", "alice"]
    ((code, count),) = refused["params"]["reasons"]
    total = refused["params"]["requests"]
    assert count == 3 and refused["detail"] == f"3 of {total} requests refused ({code} x3)"
    sv = shown_details(browser(app, airlock.tokens["s-ndr"], lang="sv").get("/web/follow-up").text)
    assert sv["not_on_permit"] == "1 förfrågningar om data av en användare som tillståndet inte nämner"
    assert sv["refusals"] == f"3 av {total} förfrågningar avvisades ({code} × 3)"
