"""The whole journey in a real browser, every step on the web pages:

1. a researcher files an application (a refused first try shows the problem beside its field);
2. the stewards of both holders in it decide;
3. the researcher queries the release in the web workspace and requests an output of a result;
4. two output checkers approve it;
5. the researcher downloads it, byte for byte the file that was checked.

Between 2 and 3 the release is bound to the permit the way the release DAG does it. The
``no_external_requests`` fixture (conftest) fails the test if any page asks for a URL outside
the machine. Screenshots of every step go to test-artifacts/browser/.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from browser_support import check_output, login, record_release

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RELEASE = "rel-journey-000001"
PROJECT = "Glucose control and visits, record level"
VARIABLES = [
    "register_visit.person_id",
    "register_visit.sex",
    "register_visit.birth_year",
    "register_visit.visit_date",
    "register_visit.hba1c_mmol_mol",
    "patient.person_id",
    "patient.sex",
    "patient.birth_year",
]
SQL = "SELECT sex, count(*) AS visits FROM register_visit GROUP BY sex ORDER BY sex"
CONTEXT = "Visits by sex: two cells, each with hundreds of visits; no pseudonyms, no dates."


def _checkers(live) -> dict[str, str]:
    """Two output checkers (accounts an administrator creates; not part of the journey)."""
    from governance import service
    from governance.store import session_scope

    with session_scope(live["settings"].governance_url) as s:
        for name in ("oc-1", "oc-2"):
            service.create_user(s, name=name, roles=["output_checker"])
        return {name: service.issue_token(s, user_name=name) for name in ("oc-1", "oc-2")}


# The application form is long: its buttons are pressed with the keyboard (focus, Enter), which
# does not depend on where a mouse click lands while the page scrolls to them.


def _decide(page, url: str, rid: int, *, open_link: str, approve: str, justification_label: str, button: str):
    page.goto(f"{url}/web/steward")
    page.get_by_role("link", name=f"{open_link} {rid}").click()
    page.wait_for_url(f"{url}/web/requests/{rid}")
    page.get_by_label(approve, exact=True).check()
    form = page.locator("#decision-form")
    for box in form.locator("input[type=checkbox]").all():  # a checklist, where the page has one
        box.check()
    page.get_by_label(justification_label).fill(
        "Ethics approval 2024-01234-01 covers these variables and the linkage."
    )
    page.get_by_role("button", name=button).click()
    page.wait_for_url(f"{url}/web/requests/{rid}")


def test_apply_decide_query_check_download(live, browser, shot, no_external_requests):
    url, world, settings = live["url"], live["world"], live["settings"]
    checker_tokens = _checkers(live)

    # 1. The researcher files an application on the web.
    researcher, page = login(browser, url, world.tokens["alice"])
    page.get_by_role("link", name="New application").click()
    page.wait_for_url(f"{url}/web/apply")
    page.get_by_label("Project title (3-200 characters)").fill(PROJECT)
    page.get_by_label("Purpose").select_option("scientific_research")
    page.get_by_label("Legal basis").select_option("gdpr_6_1_e__9_2_j")
    page.get_by_label("Nationella diabetesregistret (NDR) (ndr)").check()
    page.get_by_label("Region Uppsala (region_uppsala)").check()
    for table in ("register_visit", "patient"):
        page.get_by_test_id(f"table-{table}").locator("summary").click()
    for name in VARIABLES:
        page.get_by_label(name, exact=True).check()
    page.get_by_label("Project members (user names)").fill("bob")
    page.get_by_label("pseudonymised", exact=True).check()
    page.get_by_label("Justification for pseudonymised data").fill(
        "Visits of one person must be linked over time to follow glucose control."
    )
    page.get_by_label("record level", exact=True).check()
    page.get_by_label("Length of the permit in days from the decision").fill("90")
    shot(page, "application-form")
    page.get_by_role("button", name="Save draft").press("Enter")  # the ethics reference is missing
    error = page.locator("#err-ethics_ref")
    assert "ethics approval reference must look like 2024-01234-01" in error.inner_text()
    assert page.get_by_label("Ethics approval (reference)").get_attribute("aria-invalid") == "true"
    shot(page, "application-problem")
    page.get_by_label("Ethics approval (reference)").fill("2024-01234-01")
    page.get_by_role("button", name="Save draft").press("Enter")
    page.wait_for_url(re.compile(rf"{url}/web/apply/\d+$"))
    rid = int(page.url.rsplit("/", 1)[1])
    assert page.get_by_test_id("request-status").inner_text() == "draft"
    page.get_by_role("button", name="Submit the application").press("Enter")
    page.wait_for_url(f"{url}/web/requests/{rid}")
    assert page.get_by_test_id("request-status").inner_text() == "submitted"
    shot(page, "application-submitted")

    # 2. The stewards of both holders decide on the web (one in Swedish, one in English).
    steward, spage = login(
        browser, url, world.tokens["s-ndr"], locale="sv-SE", label="API-nyckel", button="Logga in"
    )
    _decide(
        spage,
        url,
        rid,
        open_link="Öppna ansökan",
        approve="Godkänn",
        justification_label="Motivering (krävs, minst 10 tecken)",
        button="Registrera beslut",
    )
    assert spage.get_by_test_id("request-status").inner_text() == "under granskning"  # one holder left
    shot(spage, "first-steward")
    steward.close()
    steward, spage = login(browser, url, world.tokens["s-upp"])
    _decide(
        spage,
        url,
        rid,
        open_link="Open request",
        approve="Approve",
        justification_label="Justification (required, at least 10 characters)",
        button="Record decision",
    )
    assert spage.get_by_test_id("request-status").inner_text() == "approved"
    shot(spage, "second-steward")
    steward.close()

    record_release(settings.governance_url, settings.releases_dir, rid, RELEASE)  # the release DAG's step

    # 3. The researcher queries in the web workspace and requests an output of the result.
    page.get_by_role("link", name="Workspace").click()
    page.wait_for_url(f"{url}/web/workspace")
    page.get_by_role("link", name=f"Open the workspace for {RELEASE}").click()
    page.wait_for_url(f"{url}/web/workspace/{RELEASE}")
    assert "register_visit" in page.get_by_test_id("workspace-tables").inner_text()
    assert "At most 100 rows are shown here" in page.get_by_test_id("row-limit").inner_text()
    page.get_by_role("textbox", name="SQL query").fill(SQL)
    page.get_by_role("button", name="Run the query").click()
    result = page.get_by_test_id("result-table")
    result.wait_for()
    rows = [[c.inner_text() for c in r.locator("td").all()] for r in result.locator("tbody tr").all()]
    assert [r[0] for r in rows] == ["F", "M"] and sum(int(r[1]) for r in rows) == 800  # every visit
    assert page.get_by_test_id("result-chart").locator("rect").count() == 2
    shot(page, "workspace-result")
    page.get_by_label("File format").select_option("csv")
    page.get_by_label("What is it? (title, 3-200 characters)").fill("Visits by sex")
    page.get_by_label("Why does it not disclose anyone? (at least 20 characters)").fill(CONTEXT)
    page.get_by_role("button", name="Request output").click()
    page.wait_for_url(re.compile(rf"{url}/web/outputs/\d+$"))
    oid = int(page.url.rsplit("/", 1)[1])
    assert page.get_by_test_id("output-status").inner_text() == "submitted"
    assert page.get_by_role("button", name="Download the output").is_disabled()
    sha = page.get_by_test_id("output-sha256").inner_text()
    shot(page, "output-requested")

    # 4. Two output checkers approve.
    for name, comment in (
        ("oc-1", "Two cells by sex, hundreds each."),
        ("oc-2", "Agreed: nothing identifies anyone."),
    ):
        checker, cpage = login(browser, url, checker_tokens[name])
        check_output(
            cpage,
            url,
            oid,
            "Open output",
            "Approve",
            "Comment (required, at least 10 characters)",
            comment,
            "Record check",
        )
        shot(cpage, f"check-{name}")
        checker.close()

    # 5. The researcher downloads it: the bytes the checkers approved.
    page.goto(f"{url}/web/outputs/{oid}")
    assert page.get_by_test_id("output-status").inner_text() == "approved"
    with page.expect_download() as info:
        page.get_by_role("button", name="Download the output").click()
    body = info.value.path().read_bytes()
    assert hashlib.sha256(body).hexdigest() == sha
    lines = body.decode().splitlines()
    assert lines[0] == '"sex","visits"' and [line.split(",")[0] for line in lines[1:]] == ['"F"', '"M"']
    shot(page, "downloaded")
    researcher.close()

    # The workspace's query and the output went through the access service's audit.
    entries = [json.loads(line) for line in (settings.audit_dir / "access.jsonl").read_text().splitlines()]
    assert any(
        e.get("event") == "access.query" and e.get("user") == "alice" and e.get("release_id") == RELEASE
        and e["decision"] == "allowed"
        for e in entries
    )  # fmt: skip
    assert [e["decision"] for e in entries if e.get("event") == "access.output_download"] == ["allowed"]
    assert no_external_requests.seen and not no_external_requests.external


def test_answer_a_return_for_changes(live, browser, shot, no_external_requests):
    """A steward returns an application on the web; the applicant reads why, edits it and submits it again."""
    from webtest_helpers import request_fields

    from governance import service
    from governance.store import session_scope

    url, world = live["url"], live["world"]
    with session_scope(live["settings"].governance_url) as s:
        rid = service.file_request(
            s, applicant="carol", **request_fields(project="PROM answers by county", members=[])
        )
        service.submit_request(s, request_id=rid, actor="carol")
    reason = "Please narrow the period to the years the ethics approval covers (2018 on)."

    steward, spage = login(browser, url, world.tokens["s-ndr"])
    spage.goto(f"{url}/web/requests/{rid}")
    spage.get_by_label("Return for changes", exact=True).check()
    spage.get_by_label("Justification (required, at least 10 characters)").fill(reason)
    spage.get_by_role("button", name="Record decision").click()
    spage.wait_for_url(f"{url}/web/requests/{rid}")
    assert spage.get_by_test_id("request-status").inner_text() == "returned for changes"
    steward.close()

    applicant, page = login(browser, url, world.tokens["carol"])
    page.get_by_role("link", name="New application").click()
    page.get_by_role("link", name=f"Edit application {rid}").click()  # listed among those to finish
    page.wait_for_url(f"{url}/web/apply/{rid}")
    assert reason in page.get_by_test_id("return-reasons").inner_text()
    assert page.get_by_label("Project title (3-200 characters)").input_value() == "PROM answers by county"
    page.get_by_label("From", exact=True).fill("2018-01-01")
    shot(page, "returned-application")
    page.get_by_role("button", name="Submit again").press("Enter")
    page.wait_for_url(f"{url}/web/requests/{rid}")
    assert page.get_by_test_id("request-status").inner_text() == "submitted"
    applicant.close()
    with session_scope(live["settings"].governance_url) as s:
        r = service.get_request(s, request_id=rid)
    assert (r.status, r.review_round, str(r.period[0])) == ("submitted", 2, "2018-01-01")
