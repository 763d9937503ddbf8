"""The airlock's web pages on the real governance store: a researcher files an output from a
query, two checkers decide on the queue and decision page, the download works only afterwards;
stewards record exceptions; CSRF, visibility, both languages, labelled forms."""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser

import pytest
from outputs_support import CSRF, airlock_world, browser

from governance.store import dispose_all, upgrade

SQL = "SELECT sex, count(*) AS n FROM register_visit GROUP BY sex ORDER BY sex"
CONTEXT = "Two cells by sex, each with more than 100 persons; no pseudonyms, no dates."
COMMENT = "Checked: two cells, smallest has over 100 persons."


@pytest.fixture
def airlock(hdp_home):
    upgrade(hdp_home.governance_url)
    w = airlock_world(hdp_home.governance_url, hdp_home.releases_dir)
    yield w
    dispose_all()


@pytest.fixture
def app(airlock):

    from access.app import create_app

    application = create_app()
    yield application
    application.state.service.close()


def csrf(c, path: str) -> str:
    return CSRF.search(c.get(path).text).group(1)


def file_output(c, release_id: str, sql: str = SQL, fmt: str = "csv"):
    return c.post(
        "/web/outputs",
        data={
            "csrf_token": csrf(c, "/web/outputs"),
            "release_id": release_id,
            "sql": sql,
            "format": fmt,
            "title": "Visits by sex",
            "context": CONTEXT,
        },
        follow_redirects=False,
    )


def check(c, oid: int, decision: str = "approve", comment: str = COMMENT):
    return c.post(
        f"/web/outputs/{oid}/check",
        data={"csrf_token": csrf(c, f"/web/outputs/{oid}"), "decision": decision, "comment": comment},
        follow_redirects=True,
    )


def test_whole_airlock_in_the_pages(app, airlock):
    alice = browser(app, airlock.tokens["alice"])
    page = alice.get("/web/outputs")
    assert page.status_code == 200 and airlock.release_id in page.text and 'id="submit-output"' in page.text
    r = file_output(alice, airlock.release_id)
    assert r.status_code == 303
    oid = int(r.headers["location"].rsplit("/", 1)[1])
    page = alice.get(f"/web/outputs/{oid}")
    assert 'data-testid="output-status">submitted<' in page.text
    assert re.search(r'id="download-output" disabled', page.text)  # the button does not work yet
    assert 'id="check-form"' not in page.text  # the requester never checks
    refused = alice.get(f"/web/outputs/{oid}/download")
    assert refused.status_code == 409 and "2 output checkers have approved it" in refused.text
    assert "attachment" not in refused.headers.get("content-disposition", "")

    bob = browser(app, airlock.tokens["bob"])  # on the project: neither checker nor requester
    assert bob.get(f"/web/outputs/{oid}").status_code == 404
    assert bob.get(f"/web/outputs/{oid}/download").status_code == 404

    oc1 = browser(app, airlock.tokens["oc-1"])
    assert oc1.get("/web/").url.path == "/web/checking"  # a checker lands on the queue
    queue = oc1.get("/web/checking").text
    assert f'href="/web/outputs/{oid}"' in queue
    page = oc1.get(f"/web/outputs/{oid}").text
    assert 'data-testid="output-preview"' in page and "<td>F</td>" in page and 'id="check-form"' in page
    assert 'id="download-output"' not in page
    assert "status: under review" in check(oc1, oid).text.lower()
    assert 'id="check-form"' not in oc1.get(f"/web/outputs/{oid}").text  # once per round
    assert alice.get(f"/web/outputs/{oid}/download").status_code == 409

    oc2 = browser(app, airlock.tokens["oc-2"], lang="sv")
    done = check(oc2, oid)
    assert "Status: godkänd" in done.text

    page = alice.get(f"/web/outputs/{oid}").text
    assert 'id="download-output">' in page and 'data-testid="output-approvals">2<' in page
    d = alice.get(f"/web/outputs/{oid}/download")
    assert d.status_code == 200 and d.headers["content-disposition"].startswith("attachment")
    assert hashlib.sha256(d.content).hexdigest() == d.headers["X-HDP-Output-SHA256"]
    assert d.text.splitlines()[0] == '"sex","n"'
    assert d.headers["Cache-Control"] == "no-store"


def test_return_and_resubmit_then_withdraw(app, airlock):
    alice = browser(app, airlock.tokens["alice"])
    oid = int(file_output(alice, airlock.release_id).headers["location"].rsplit("/", 1)[1])
    oc1 = browser(app, airlock.tokens["oc-1"])
    assert "returned for changes" in check(oc1, oid, "return", "Please add the diabetes type.").text
    page = alice.get(f"/web/outputs/{oid}").text
    assert 'id="resubmit-form"' in page and "Please add the diabetes type." in page
    r = alice.post(
        f"/web/outputs/{oid}/resubmit",
        follow_redirects=True,
        data={
            "csrf_token": csrf(alice, f"/web/outputs/{oid}"),
            "context": CONTEXT + " By diabetes type now.",
            "sql": "SELECT sex, diabetes_type, count(*) AS n FROM register_visit GROUP BY ALL ORDER BY ALL",
        },
    )
    assert "Sent for a new round of checking." in r.text and "submitted" in r.text
    r = alice.post(
        f"/web/outputs/{oid}/withdraw",
        data={"csrf_token": csrf(alice, f"/web/outputs/{oid}")},
        follow_redirects=True,
    )
    assert 'data-testid="output-status">withdrawn<' in r.text


def test_row_level_needs_exception_recorded_on_the_steward_page(app, airlock):
    alice = browser(app, airlock.tokens["alice"])
    row_sql = "SELECT person_id, hba1c_mmol_mol FROM register_visit WHERE hba1c_mmol_mol > 60"
    r = file_output(alice, airlock.release_id, sql=row_sql, fmt="parquet")
    assert r.status_code == 403 and "row-level" in r.text and 'id="output-error"' in r.text
    steward = browser(app, airlock.tokens["s-ndr"])
    url = f"/web/permits/{airlock.permit_id}/output-exceptions"
    r = steward.post(url, data={"csrf_token": csrf(steward, url), "justification": "too short"})
    assert r.status_code == 422
    r = steward.post(
        url,
        follow_redirects=True,
        data={
            "csrf_token": csrf(steward, url),
            "justification": "The register links these rows to the cancer register and deletes them after.",
        },
    )
    assert "The exception is recorded." in r.text and 'data-testid="output-exceptions"' in r.text
    r = file_output(alice, airlock.release_id, sql=row_sql, fmt="parquet")
    assert r.status_code == 303
    oid = int(r.headers["location"].rsplit("/", 1)[1])
    page = browser(app, airlock.tokens["oc-2"]).get(f"/web/outputs/{oid}").text
    assert "pseudonym_selected" in page and "cancer register" in page  # the exception is visible to checkers


def test_csrf_and_login_are_required(app, airlock):
    from fastapi.testclient import TestClient

    anonymous = TestClient(app, base_url="http://testserver")
    assert anonymous.get("/web/outputs", follow_redirects=False).headers["location"].startswith("/web/login")
    alice = browser(app, airlock.tokens["alice"])
    r = alice.post(
        "/web/outputs",
        data={
            "csrf_token": "forged",
            "release_id": airlock.release_id,
            "sql": SQL,
            "format": "csv",
            "title": "Visits by sex",
            "context": CONTEXT,
        },
    )
    assert r.status_code == 403
    assert browser(app, airlock.tokens["alice"]).get("/web/checking").status_code == 403


class _Audit(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict] = []
        self.labels: set[str] = set()
        self.h1 = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append(a)
        if tag == "label" and a.get("for"):
            self.labels.add(a["for"])
        self.h1 += tag == "h1"


@pytest.mark.parametrize("lang", ["sv", "en"])
def test_pages_are_translated_labelled_and_structured(app, airlock, lang):
    alice = browser(app, airlock.tokens["alice"], lang=lang)
    oid = int(file_output(alice, airlock.release_id).headers["location"].rsplit("/", 1)[1])
    oc1 = browser(app, airlock.tokens["oc-1"], lang=lang)
    steward = browser(app, airlock.tokens["s-ndr"], lang=lang)
    pages = [
        alice.get("/web/outputs").text,
        alice.get(f"/web/outputs/{oid}").text,
        oc1.get("/web/checking").text,
        oc1.get(f"/web/outputs/{oid}").text,
        steward.get(f"/web/permits/{airlock.permit_id}/output-exceptions").text,
    ]
    for html in pages:
        assert f'<html lang="{lang}">' in html
        audit = _Audit()
        audit.feed(html)
        assert audit.h1 == 1
        for control in audit.controls:
            assert control.get("id") in audit.labels or control.get("aria-label"), control
    assert ("Mina utdata" if lang == "sv" else "My outputs") in pages[0]
    assert ("Utdatagranskning" if lang == "sv" else "Output checking") in pages[2]
