"""The access follow-up (logguppföljning) page for stewards, on the real app over a real store and
the access layer's real audit log: the same report as ``GET /audit/follow-up``, the same rule
for who may see which holder, the period as the API reads it, and the steward's menu link."""

from __future__ import annotations

import re
import sys
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
    shown = page_report(report, translator("sv"))
    assert shown["since"].year == 2026 and shown["activity"][0]["last"] is None
    assert shown["releases"][0]["permit_ends"].day == 24
    assert [f.label for f in shown["findings"]] == ["Åtkomst utanför kontorstid", "new_kind"]
