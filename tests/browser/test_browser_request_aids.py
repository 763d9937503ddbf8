"""In a real browser: a steward opens a request whose disclosure pre-check flags groups at risk,
tries to approve without ticking "I have seen the groups at risk" (the server refuses, with the
reason), then approves with it (accepted). Also posts on the request's comment thread.
Screenshots go to test-artifacts/browser/."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

JUSTIFICATION = "Ethics approval 2024-01234-01 covers these variables; aggregate output only."


def stored(live, request_id: int):
    from governance import service
    from governance.store import session_scope

    with session_scope(live["settings"].governance_url) as s:
        return service.get_request(s, request_id=request_id)


def test_approval_with_groups_at_risk_needs_the_acknowledgement(live, browser, shot):
    world, url = live["world"], live["url"]
    ctx = browser.new_context(locale="en-GB")
    page = ctx.new_page()
    page.goto(f"{url}/web/login")
    page.get_by_label("API token").fill(world.tokens["s-ndr"])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{url}/web/steward")
    page.goto(f"{url}/web/requests/{world.request_id}")
    # the research zone holds one person alone in a group: the pre-check flags it
    assert page.locator("[data-testid=precheck-groups] tr.risk-at_risk").count() == 1
    assert page.get_by_test_id("cohort-ndr").inner_text().strip() == "60"
    ack = page.get_by_label("I have seen the groups at risk")
    assert ack.is_visible() and not ack.is_checked()
    page.get_by_label("Approve").check()
    page.get_by_label("Safe projects").check()
    page.get_by_label("Safe data").check()
    page.get_by_label("Justification (required, at least 10 characters)").fill(JUSTIFICATION)
    shot(page, "without-acknowledgement")
    with page.expect_response(lambda r: r.url.endswith("/decide")) as answer:
        page.get_by_role("button", name="Record decision").click()
    assert answer.value.status == 422
    alert = page.locator("#decision-error")
    assert "confirm that you have seen the groups at risk" in alert.inner_text()
    shot(page, "refused")
    assert stored(live, world.request_id).decisions == ()
    # the form keeps what was entered; now tick the acknowledgement and approve again
    assert page.get_by_label("Safe projects").is_checked()
    assert (
        page.get_by_label("Justification (required, at least 10 characters)").input_value() == JUSTIFICATION
    )
    page.get_by_label("I have seen the groups at risk").check()
    page.get_by_role("button", name="Record decision").click()
    page.wait_for_url(f"{url}/web/requests/{world.request_id}")
    assert "Request status: approved" in page.get_by_role("status").inner_text()
    shot(page, "accepted")
    r = stored(live, world.request_id)
    assert r.status == "approved"
    (d,) = r.decisions
    assert d.checklist == {
        "projects": True, "people": False, "settings": False, "data": True, "outputs": False,
        "at_risk_acknowledged": True,
    }  # fmt: skip
    # the comment thread: plain text, shown escaped
    page.get_by_label("New comment").fill("Approved; <b>note</b> the one small group.")
    page.get_by_role("button", name="Post comment").click()
    page.wait_for_url(f"{url}/web/requests/{world.request_id}#comments")
    thread = page.get_by_test_id("comments").inner_text()
    assert "s-ndr" in thread and "<b>note</b>" in thread  # shown as typed, not as markup
    shot(page, "comment")
    ctx.close()
