"""In a real browser: a steward logs in and approves; the researcher then sees the release.

One path is driven with the keyboard only (Tab / Space / Enter), to prove the pages work
without a mouse; screenshots of every step go to test-artifacts/browser/.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

JUSTIFICATION = "Ethics approval 2024-01234-01 covers these variables; aggregate output only."


def status_of(live, request_id: int) -> str:
    from governance import service
    from governance.store import session_scope

    with session_scope(live["settings"].governance_url) as s:
        return service.get_request(s, request_id=request_id).status


def test_steward_approves_and_researcher_sees_release(live, browser, shot):
    world, url = live["world"], live["url"]
    steward = browser.new_context(locale="sv-SE")
    page = steward.new_page()
    page.goto(f"{url}/web/steward")
    assert page.url.startswith(f"{url}/web/login")  # not logged in: sent to the login form
    page.get_by_label("API-nyckel").fill(world.tokens["s-ndr"])
    shot(page, "login")
    page.get_by_role("button", name="Logga in").click()
    page.wait_for_url(f"{url}/web/steward")
    assert page.locator("html").get_attribute("lang") == "sv"
    shot(page, "queue")
    # The session cookie is opaque and HttpOnly, never the token.
    [cookie] = [c for c in steward.cookies() if c["name"] == "hdp_session"]
    assert (
        cookie["httpOnly"] and cookie["sameSite"] == "Strict" and world.tokens["s-ndr"] not in cookie["value"]
    )

    page.get_by_role("link", name=f"Öppna ansökan {world.request_id}").click()
    page.wait_for_url(f"{url}/web/requests/{world.request_id}")
    assert page.get_by_role("heading", name="Röjandekontroll i förväg").is_visible()
    assert page.locator("[data-testid=precheck-groups] tr.risk-at_risk").count() == 1
    page.get_by_label("Godkänn").check()
    for box in page.locator(
        "#decision-form input[type=checkbox]"
    ).all():  # the checklist, if the page has one
        box.check()
    page.get_by_label("Motivering (krävs, minst 10 tecken)").fill(JUSTIFICATION)
    shot(page, "decision-form")
    page.get_by_role("button", name="Registrera beslut").click()
    page.wait_for_url(f"{url}/web/requests/{world.request_id}")
    assert "Ansökans status: godkänd" in page.get_by_role("status").inner_text()
    assert page.get_by_test_id("request-status").inner_text() == "godkänd"
    shot(page, "approved")
    assert status_of(live, world.request_id) == "approved"
    steward.close()

    from browser_support import record_release

    settings = live["settings"]
    record_release(settings.governance_url, settings.releases_dir, world.request_id, "rel-browser-000001")

    researcher = browser.new_context(locale="en-GB")
    page = researcher.new_page()
    page.goto(f"{url}/web/login")
    assert page.locator("html").get_attribute("lang") == "en"  # from Accept-Language
    page.get_by_label("API token").fill(world.tokens["alice"])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{url}/web/researcher")
    releases = page.get_by_test_id("my-releases")
    assert "rel-browser-000001" in releases.inner_text()
    assert "HbA1c trajectories in type 1 diabetes" in releases.inner_text()
    assert "released" in page.get_by_test_id("my-requests").inner_text()
    assert "/releases/rel-browser-000001/query" in page.content()
    shot(page, "researcher-release")
    # The how-to on the page works: the Python client it shows queries the release.
    from access.client import Client

    assert 'Client("' + url + '", os.environ["HDP_TOKEN"], release="rel-browser-000001")' in page.inner_text(
        "main"
    )
    with Client(url, world.tokens["alice"], release="rel-browser-000001") as client:
        table = client.query("SELECT sex, count(*) AS n FROM register_visit GROUP BY sex ORDER BY sex")
    assert table.column_names[:2] == ["sex", "n"] and table.num_rows == 2
    # Switch to Swedish and back with the language links.
    page.get_by_role("link", name="Svenska").click()
    assert page.locator("html").get_attribute("lang") == "sv"
    assert page.get_by_role("heading", name="Mina uttag (1)").is_visible()
    shot(page, "researcher-sv")
    # The web workspace serves the aggregate-only permit too (in Swedish now): its example
    # query runs under disclosure control, with the summary shown and no output request.
    page.get_by_role("link", name="Arbetsyta").click()
    page.wait_for_url(f"{url}/web/workspace")
    assert "endast aggregat" in page.get_by_test_id("workspace-releases").inner_text()
    page.get_by_role("link", name="Öppna arbetsytan för rel-browser-000001").click()
    page.wait_for_url(f"{url}/web/workspace/rel-browser-000001")
    assert "ndr: 5" in page.get_by_test_id("workspace-disclosure").inner_text()
    page.get_by_role("button", name="Kör frågan").click()
    page.get_by_test_id("result-table").wait_for()
    rows = page.get_by_test_id("result-table").locator("tbody tr").count()
    assert rows >= 1 and page.get_by_test_id("summary-published").inner_text() == str(rows)
    assert page.locator("#output-form").count() == 0
    shot(page, "workspace-aggregate")
    researcher.close()

    public = browser.new_context()
    page = public.new_page()
    page.goto(f"{url}/web/transparency")
    assert (
        "HbA1c trajectories in type 1 diabetes" in page.get_by_test_id("transparency-register").inner_text()
    )
    assert "alice" not in page.content()
    shot(page, "transparency")
    public.close()


def _tab_to(page, predicate_js: str, *, limit: int = 80, backwards: bool = False) -> None:
    """Press Tab (or Shift+Tab) until the focused element satisfies ``predicate_js`` (a JS function)."""
    for _ in range(limit):
        page.keyboard.press("Shift+Tab" if backwards else "Tab")
        if page.evaluate(f"({predicate_js})(document.activeElement)"):
            return
    raise AssertionError(f"focus never reached an element matching {predicate_js}")


def _focus_is_visible(page) -> bool:
    return page.evaluate("""() => {
        const s = getComputedStyle(document.activeElement);
        return s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0;
    }""")


def test_keyboard_only_approval(live, browser, shot):
    """Skip link, login, queue, request, decision: Tab, Space, Enter and typing only (English)."""
    from webtest_helpers import request_fields

    from governance import service
    from governance.store import session_scope

    world, url = live["world"], live["url"]
    with session_scope(live["settings"].governance_url) as s:
        rid = service.file_request(
            s, applicant="carol", **request_fields(project="Keyboard-reviewed PROM study", members=[])
        )
        service.submit_request(s, request_id=rid, actor="carol")

    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(f"{url}/web/transparency?lang=en")
    # The skip link is the first Tab stop, becomes visible on focus and moves focus to <main>.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Skip to content"
    assert page.locator(".skip-link").bounding_box()["y"] >= 0 and _focus_is_visible(page)
    shot(page, "skip-link")
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # Back up into the navigation and follow "Log in".
    _tab_to(page, "el => el.tagName === 'A' && el.getAttribute('href') === '/web/login'", backwards=True)
    assert _focus_is_visible(page)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{url}/web/login")
    if page.evaluate("document.activeElement.id") != "token":  # the field has autofocus
        _tab_to(page, "el => el.id === 'token'")
    assert _focus_is_visible(page)
    page.keyboard.type(world.tokens["s-ndr"])
    page.keyboard.press("Enter")
    page.wait_for_url(f"{url}/web/steward")
    assert page.locator("html").get_attribute("lang") == "en"

    _tab_to(page, f"el => el.tagName === 'A' && el.getAttribute('href') === '/web/requests/{rid}'")
    assert _focus_is_visible(page)
    shot(page, "queue-link-focused")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{url}/web/requests/{rid}")
    _tab_to(page, "el => el.id === 'holder_id'")
    _tab_to(page, "el => el.name === 'decision'")
    # Arrow keys move within the radio group; make sure "approve" is the one that gets checked.
    while page.evaluate("document.activeElement.value") != "approve":
        page.keyboard.press("ArrowUp")
    page.keyboard.press("Space")
    assert page.locator("#decision-approve").is_checked()
    # The checklist, where the page has one: Tab to each box and tick it with Space.
    boxes = page.locator("#decision-form input[type=checkbox]").count()
    for _ in range(boxes):
        _tab_to(page, "el => el.type === 'checkbox' && !el.checked")
        page.keyboard.press("Space")
    assert page.locator("#decision-form input[type=checkbox]:checked").count() == boxes
    _tab_to(page, "el => el.id === 'justification'")
    page.keyboard.type(JUSTIFICATION)
    _tab_to(page, "el => el.id === 'submit-decision'")
    assert _focus_is_visible(page)
    shot(page, "keyboard-decision")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{url}/web/requests/{rid}")
    assert "Request status: approved" in page.get_by_role("status").inner_text()
    shot(page, "keyboard-approved")
    assert status_of(live, rid) == "approved"
    ctx.close()


def test_self_decision_error_is_shown(live, browser, shot):
    world, url = live["world"], live["url"]
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(f"{url}/web/login?lang=en")
    page.get_by_label("API token").fill(world.tokens["dual"])
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{url}/web/requests/{world.dual_request_id}")
    page.get_by_label("Reject").check()
    page.get_by_label("Justification (required, at least 10 characters)").fill(JUSTIFICATION)
    page.get_by_role("button", name="Record decision").click()
    alert = page.locator("#decision-error")
    assert "may not decide on it" in alert.inner_text()
    shot(page, "self-decision-refused")
    assert status_of(live, world.dual_request_id) == "submitted"
    ctx.close()
