"""In a real browser, the whole airlock: a researcher asks for an output from a query, two
output checkers decide on it, and the download works only afterwards (refused before).

The app runs under uvicorn against a seeded SQLite governance store (``conftest.live``); a
record-level release is bound to a permit the way the release DAG does it. Screenshots of
every step go to test-artifacts/browser/.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "access"))  # outputs_support

SQL = "SELECT sex, diabetes_type, count(*) AS n FROM register_visit GROUP BY sex, diabetes_type ORDER BY ALL"
CONTEXT = "Counts of visits by sex and diabetes type; four cells, the smallest holds more than 40 visits."


def test_whole_airlock_in_a_browser(live, browser, shot):
    from browser_support import check_output, login
    from outputs_support import airlock_world

    from access.client import AccessError, Client

    url, settings = live["url"], live["settings"]
    world = airlock_world(settings.governance_url, settings.releases_dir, release_id="rel-airlock-browser")

    # A record-level file does not leave directly: the API refuses it and says how.
    with Client(url, world.tokens["alice"], release=world.release_id) as client:
        with pytest.raises(AccessError) as err:
            client.raw(SQL, format="csv")
        assert err.value.reason == "output.review_required" and "/outputs" in err.value.message
        preview = client.query("SELECT sex, count(*) AS n FROM register_visit GROUP BY sex ORDER BY sex")
        assert preview.num_rows == 2  # a small preview may be looked at inside the environment

    # 1. The researcher files an output request from a query, with context.
    researcher, page = login(browser, url, world.tokens["alice"])
    page.get_by_role("link", name="My outputs").click()
    page.wait_for_url(f"{url}/web/outputs")
    page.get_by_label("Release (record-level permit)").select_option(world.release_id)
    page.get_by_label("SQL query").fill(SQL)
    page.get_by_label("File format").select_option("csv")
    page.get_by_label("What is it? (title, 3-200 characters)").fill("Visits by sex and diabetes type")
    page.get_by_label("Why does it not disclose anyone? (at least 20 characters)").fill(CONTEXT)
    shot(page, "request-form")
    page.get_by_role("button", name="Send for checking").click()
    page.wait_for_url(f"{url}/web/outputs/*")
    oid = int(page.url.rsplit("/", 1)[1])
    assert page.get_by_test_id("output-status").inner_text() == "submitted"
    assert page.get_by_role("button", name="Download the output").is_disabled()
    sha = page.get_by_test_id("output-sha256").inner_text()
    shot(page, "submitted")
    # The download is refused before any check, even when the URL is typed in.
    refused = page.goto(f"{url}/web/outputs/{oid}/download")
    assert refused.status == 409 and "2 output checkers" in page.inner_text("main")
    shot(page, "download-refused")
    # The requester is offered no check, and cannot check her own output.
    page.goto(f"{url}/web/outputs/{oid}")
    assert page.locator("#check-form").count() == 0

    # 2. The first checker (Swedish pages) approves: one approval is not enough.
    checker1, cpage = login(
        browser, url, world.tokens["oc-1"], locale="sv-SE", label="API-nyckel", button="Logga in"
    )
    assert cpage.url == f"{url}/web/checking"
    assert f"#{oid}" in cpage.get_by_test_id("check-queue").inner_text()
    shot(cpage, "checker-queue")
    check_output(
        cpage,
        url,
        oid,
        "Öppna utdata",
        "Godkänn",
        "Kommentar (krävs, minst 10 tecken)",
        "Fyra celler, alla med fler än 40 besök; inga pseudonymer.",
        "Registrera granskning",
    )
    assert cpage.get_by_test_id("output-status").inner_text() == "under granskning"
    shot(cpage, "first-approval")
    checker1.close()
    page.goto(f"{url}/web/outputs/{oid}")
    assert page.get_by_role("button", name="Download the output").is_disabled()
    assert page.goto(f"{url}/web/outputs/{oid}/download").status == 409

    # 3. A second, different checker approves: now it may leave.
    checker2, cpage = login(browser, url, world.tokens["oc-2"])
    check_output(
        cpage,
        url,
        oid,
        "Open output",
        "Approve",
        "Comment (required, at least 10 characters)",
        "Four cells, each above 40 visits; nothing identifies anyone.",
        "Record check",
    )
    assert cpage.get_by_test_id("output-status").inner_text() == "approved"
    shot(cpage, "second-approval")
    checker2.close()

    # 4. Only now does the download button work, for the requester, with the checked bytes.
    page.goto(f"{url}/web/outputs/{oid}")
    button = page.get_by_role("button", name="Download the output")
    assert button.is_enabled()
    shot(page, "approved")
    with page.expect_download() as info:
        button.click()
    body = Path(info.value.path()).read_bytes()
    assert hashlib.sha256(body).hexdigest() == sha
    assert body.decode().splitlines()[0] == '"sex","diabetes_type","n"'
    researcher.close()

    # Every step is in the access audit log.
    entries = [json.loads(line) for line in (settings.audit_dir / "access.jsonl").read_text().splitlines()]
    steps = [
        (e["event"], e["decision"])
        for e in entries
        if e.get("event", "").startswith("access.output_") and e.get("output_id") == oid
    ]
    assert ("access.output_request", "allowed") in [
        (e["event"], e["decision"]) for e in entries if e.get("event") == "access.output_request"
    ]
    assert steps.count(("access.output_check", "allowed")) == 2
    assert steps.count(("access.output_download", "refused")) == 2
    assert steps[-1] == ("access.output_download", "allowed")
