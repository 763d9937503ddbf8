"""Route tests for the /web pages with FastAPI's TestClient against the real app and a SQLite store."""

from __future__ import annotations

import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from webtest_helpers import csrf_of, login, request_fields, write_research_zone

JUSTIFICATION = "Ethics approval covers it; the variables are proportionate to the aim."


def decide(client, request_id, *, holder="ndr", decision="approve", justification=JUSTIFICATION, csrf=None):
    page = client.get(f"/web/requests/{request_id}")
    token = csrf if csrf is not None else csrf_of(page.text)
    return client.post(
        f"/web/requests/{request_id}/decide",
        data={
            "csrf_token": token,
            "holder_id": holder,
            "decision": decision,
            "justification": justification,
        },
        follow_redirects=True,
    )


def governance_request(world, request_id):
    from governance import service
    from governance.store import session_scope

    with session_scope(world.url) as s:
        return service.get_request(s, request_id=request_id)


def release(world, request_id, release_id="rel-web-000001"):
    from governance import service
    from governance.store import session_scope

    with session_scope(world.url) as s:
        return service.record_release(
            s,
            request_id=request_id,
            release_id=release_id,
            manifest_sha256=hashlib.sha256(b"manifest").hexdigest(),
        )


# ------------------------------------------------------------------ login, sessions, CSRF


def test_login_sets_opaque_httponly_strict_cookie_never_the_token(client, world):
    token = world.tokens["s-ndr"]
    form = client.get("/web/login")
    r = client.post(
        "/web/login",
        data={"token": token, "csrf_token": csrf_of(form.text), "next": ""},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/web/steward"
    cookie = r.headers["set-cookie"]
    assert (
        "hdp_session=" in cookie
        and "HttpOnly" in cookie
        and "SameSite=strict" in cookie.replace("Strict", "strict")
    )
    assert token not in cookie and hashlib.sha256(token.encode()).hexdigest() not in cookie
    # The anonymous (pre-login) session is replaced: session fixation is useless.
    assert form.cookies.get("hdp_session") != r.cookies.get("hdp_session")


def test_wrong_token_is_refused_with_reason(client, world):
    form = client.get("/web/login")
    r = client.post("/web/login", data={"token": "hdp_not-a-real-token", "csrf_token": csrf_of(form.text)})
    assert r.status_code == 401
    assert "Inloggningen misslyckades" in r.text
    assert "hdp_not-a-real-token" not in r.text  # never echoed


def test_login_without_csrf_token_is_refused(client, world):
    client.get("/web/login")
    r = client.post("/web/login", data={"token": world.tokens["s-ndr"], "csrf_token": "forged"})
    assert r.status_code == 403
    assert client.get("/web/steward", follow_redirects=False).status_code == 303  # still not logged in


def test_pages_need_login_and_redirect_back(client, world):
    r = client.get(f"/web/requests/{world.request_id}", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == f"/web/login?next=/web/requests/{world.request_id}"
    form = client.get(r.headers["location"])
    r = client.post(
        "/web/login",
        data={
            "token": world.tokens["s-ndr"],
            "csrf_token": csrf_of(form.text),
            "next": f"/web/requests/{world.request_id}",
        },
        follow_redirects=False,
    )
    assert r.headers["location"] == f"/web/requests/{world.request_id}"


def test_next_cannot_redirect_off_site(client, world):
    form = client.get("/web/login")
    r = client.post(
        "/web/login",
        data={
            "token": world.tokens["alice"],
            "csrf_token": csrf_of(form.text),
            "next": "//evil.example/web/x",
        },
        follow_redirects=False,
    )
    assert r.headers["location"] == "/web/researcher"


def test_logout_needs_csrf_and_ends_the_session(client, world):
    page = login(client, world.tokens["alice"])
    assert client.post("/web/logout", data={"csrf_token": "wrong"}).status_code == 403
    assert client.get("/web/researcher", follow_redirects=False).status_code == 200
    r = client.post("/web/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=True)
    assert "Du är utloggad" in r.text
    assert client.get("/web/researcher", follow_redirects=False).status_code == 303


def test_revoked_token_ends_the_web_session_at_once(client, world):
    from governance import service
    from governance.store import session_scope

    login(client, world.tokens["s-ndr"])
    assert client.get("/web/steward").status_code == 200
    with session_scope(world.url) as s:
        service.revoke_tokens(s, user_name="s-ndr")
    r = client.get("/web/steward", follow_redirects=True)
    assert "sessionen har gått ut" in r.text or "session har gått ut" in r.text
    assert client.get("/web/steward", follow_redirects=False).status_code == 303


def test_security_headers_and_no_store(client, world):
    login(client, world.tokens["s-ndr"])
    r = client.get("/web/steward")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert "script-src" not in r.headers["content-security-policy"]  # no script at all
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-frame-options"] == "DENY"


# ------------------------------------------------------------------ steward pages


def test_queue_shows_only_requests_of_the_stewards_holders(client, world):
    login(client, world.tokens["s-ndr"])
    r = client.get("/web/steward")
    assert f'href="/web/requests/{world.request_id}"' in r.text
    client.cookies.clear()
    login(client, world.tokens["s-upp"])
    r = client.get("/web/steward")
    assert f'href="/web/requests/{world.request_id}"' not in r.text
    assert "Inga ansökningar väntar" in r.text
    # Not visible at all (404, not 403: existence is not revealed).
    assert client.get(f"/web/requests/{world.request_id}").status_code == 404
    assert client.post(
        f"/web/requests/{world.request_id}/decide",
        data={
            "csrf_token": "x",
            "holder_id": "ndr",
            "decision": "approve",
            "justification": JUSTIFICATION,
        },
    ).status_code in (403, 404)
    assert governance_request(world, world.request_id).decisions == ()


def test_researcher_cannot_open_the_review_queue(client, world):
    login(client, world.tokens["carol"])
    assert client.get("/web/steward").status_code == 403
    assert client.get(f"/web/requests/{world.request_id}").status_code == 404  # not applicant, not member


def test_request_page_shows_request_precheck_and_decision_form(client, world, hdp_home):
    write_research_zone(hdp_home.research_db("ndr"))
    login(client, world.tokens["s-ndr"])
    r = client.get(f"/web/requests/{world.request_id}")
    assert r.status_code == 200
    html = r.text
    assert "HbA1c trajectories in type 1 diabetes" in html and "2024-01234-01" in html
    # Sensitivity of the requested variables
    assert re.search(r"register_visit\.birth_year</code></td><td>indirekt identifierande", html)
    assert re.search(r"register_visit\.hba1c_mmol_mol</code></td><td>hälsouppgift", html)
    # Thresholds of the holder in scope and the computed group sizes (the lonely 1931 person).
    assert "Nationella diabetesregistret (NDR)</td><td>5</td><td>5" in html
    row = re.search(
        r'<tr class="risk-at_risk"><td>ndr</td><td>register_visit</td>(.*?)</tr>', html, re.S
    ).group(1)
    cells = re.findall(r"<td>(.*?)</td>", row, re.S)
    assert cells[0] == "birth_year, county, sex"
    assert cells[1:4] == ["61", "7", "1"]  # persons, groups, smallest group
    # No pseudonym or value from the research zone on the page.
    assert hashlib.sha256(b"web-test-lonely").hexdigest() not in html and "1931" not in html
    assert 'id="decision-form"' in html and "Inga kvalitetsresultat ännu." in html


def test_approve_then_researcher_sees_request_and_release(client, world, hdp_home):
    login(client, world.tokens["s-ndr"])
    r = decide(client, world.request_id)
    assert r.status_code == 200
    assert "Beslutet är registrerat. Ansökans status: godkänd." in r.text
    assert governance_request(world, world.request_id).status == "approved"
    assert 'id="decision-form"' not in r.text  # nothing left to decide

    client.cookies.clear()
    page = login(client, world.tokens["alice"])
    assert "godkänd" in page.text and "Du har inga aktiva uttag." in page.text
    permit = release(world, world.request_id)
    page = client.get("/web/researcher").text
    rows = re.search(r'data-testid="my-releases">(.*?)</table>', page, re.S).group(1)
    assert "rel-web-000001" in rows and "HbA1c trajectories" in rows
    assert '/web/releases/rel-web-000001/codebook"' in rows  # each release links its codebook
    assert f"<td>{permit.expires_at.date().isoformat()}</td>" in rows  # valid until
    assert "/releases/rel-web-000001/query" in page  # the how-to uses the real release id
    # bob is a member: sees it too; carol does not.
    client.cookies.clear()
    assert "rel-web-000001" in login(client, world.tokens["bob"]).text
    client.cookies.clear()
    assert "rel-web-000001" not in login(client, world.tokens["carol"]).text


def test_every_decision_needs_a_justification(client, world):
    login(client, world.tokens["s-ndr"])
    r = decide(client, world.request_id, justification="ok")
    assert r.status_code == 422
    assert "decision.justification" in r.text and 'role="alert"' in r.text
    assert governance_request(world, world.request_id).status == "submitted"


@pytest.mark.parametrize("decision,status", [("reject", "rejected"), ("return", "returned")])
def test_reject_and_return(client, world, decision, status):
    login(client, world.tokens["s-ndr"])
    r = decide(client, world.request_id, decision=decision)
    assert r.status_code == 200
    assert governance_request(world, world.request_id).status == status
    assert JUSTIFICATION in r.text  # the decision and its justification are listed


def test_decision_without_csrf_is_refused(client, world):
    login(client, world.tokens["s-ndr"])
    r = decide(client, world.request_id, csrf="not-the-token")
    assert r.status_code == 403
    assert governance_request(world, world.request_id).decisions == ()


def test_steward_cannot_decide_on_own_request_and_sees_why(client, world):
    login(client, world.tokens["dual"])
    r = decide(client, world.dual_request_id)
    assert r.status_code == 403
    assert "may not decide on it" in r.text
    assert governance_request(world, world.dual_request_id).decisions == ()


def test_quality_results_and_release_label_are_shown(client, world, hdp_home):
    from pipelines.quality.results import CheckResult, GateResult
    from pipelines.quality.store import write_result

    checks = (
        CheckResult(
            "ndr.hba1c.range",
            "research",
            "register_visit",
            "hba1c_mmol_mol",
            "range",
            "plausibility",
            "atemporal",
            "warning",
            3,
            120,
            0.01,
            None,
            "warn",
        ),
        CheckResult(
            "ndr.person.not_null",
            "research",
            "register_visit",
            "person_id",
            "not_null",
            "completeness",
            "presence",
            "blocking",
            0,
            120,
            0.0,
            None,
            "pass",
        ),
    )
    write_result(
        hdp_home.quality_dir,
        GateResult("run-42", "research", "ndr", True, checks, "2026-01-01T00:00:00+00:00", 0.1, "lib-1"),
    )
    login(client, world.tokens["s-ndr"])
    html = client.get(f"/web/requests/{world.request_id}").text
    assert "run-42" in html and "1 godkända, 1 varningar, 0 underkända" in html
    assert "ndr.hba1c.range" in html and "3 / 120" in html
    decide(client, world.request_id)
    release(world, world.request_id, "rel-web-label")
    rel = hdp_home.releases_dir / "rel-web-label"
    rel.mkdir(parents=True)
    (rel / "manifest.json").write_text(json.dumps({"quality": {"label": "green", "checks": {"fail": 0}}}))
    html = client.get(f"/web/requests/{world.request_id}").text
    assert "Kvalitetsetikett för utlämnandet" in html
    assert '<th scope="row">label</th><td>green</td>' in html


# ------------------------------------------------------------------ researcher, register, language, escaping


def test_researcher_page_how_to_query(client, world):
    html = login(client, world.tokens["alice"]).text
    assert "Mina ansökningar" in html and "HbA1c trajectories" in html
    assert "Authorization: Bearer $HDP_TOKEN" in html and "from hdp_client import" in html
    assert world.tokens["alice"] not in html  # the token itself is never shown


def test_transparency_register_is_public_and_has_no_personal_data(client, world):
    from datetime import datetime, timedelta

    assert "Inga tillstånd har utfärdats ännu." in client.get("/web/transparency").text
    login(client, world.tokens["s-ndr"])
    decide(client, world.request_id)
    client.cookies.clear()
    r = client.get("/web/transparency")
    assert r.status_code == 200
    assert "HbA1c trajectories" in r.text and "scientific_research" in r.text
    assert '<dt id="purpose-scientific_research">' in r.text and "Vetenskaplig forskning med" in r.text
    for name in ("alice", "bob", "s-ndr"):
        assert name not in r.text
    assert 'href="/web/transparency.json"' in r.text
    data = client.get("/web/transparency.json").json()
    [entry] = data["permits"]
    assert entry["project"] == "HbA1c trajectories in type 1 diabetes" and entry["status"] == "approved"
    assert entry["holders"] == ["ndr"]
    issued = datetime.fromisoformat(entry["issued_on"])
    assert datetime.fromisoformat(entry["expires_on"]) - issued == timedelta(days=365)
    assert "alice" not in json.dumps(data)


def test_language_switch_and_html_lang(client, world):
    r = client.get("/web/transparency")
    assert '<html lang="sv">' in r.text and "Offentligt register" in r.text
    r = client.get("/web/transparency?lang=en")
    assert '<html lang="en">' in r.text and "Public register of data permits" in r.text
    assert "hdp_lang=en" in r.headers["set-cookie"]
    r = client.get("/web/transparency")  # remembered by the cookie
    assert '<html lang="en">' in r.text
    client.cookies.clear()
    r = client.get("/web/transparency", headers={"Accept-Language": "en-GB,en;q=0.8"})
    assert '<html lang="en">' in r.text


def test_output_is_escaped(client, world):
    from governance import service
    from governance.store import session_scope

    with session_scope(world.url) as s:
        rid = service.file_request(
            s, applicant="alice", **request_fields(project='<script>alert("x")</script> & co')
        )
        service.submit_request(s, request_id=rid, actor="alice")
    login(client, world.tokens["s-ndr"])
    for url in ("/web/steward", f"/web/requests/{rid}"):
        html = client.get(url).text
        assert "<script>" not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; co" in html


class _FormAudit(HTMLParser):
    """Collects visible form controls and the ids that a <label for> names."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, str | None]] = []
        self.label_for: set[str] = set()
        self.headings: list[str] = []
        self.skip_link = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append(a)
        if tag == "label" and a.get("for"):
            self.label_for.add(a["for"])
        if tag in ("h1", "h2", "h3"):
            self.headings.append(tag)
        if tag == "a" and a.get("href") == "#main":
            self.skip_link = True


@pytest.mark.parametrize("lang", ["sv", "en"])
def test_every_page_is_labelled_and_structured(client, world, hdp_home, lang):
    write_research_zone(hdp_home.research_db("ndr"))
    pages = ["/web/login", "/web/transparency"]
    html_pages = [client.get(p + f"?lang={lang}").text for p in pages]
    login(client, world.tokens["s-ndr"])
    for p in ("/web/steward", f"/web/requests/{world.request_id}"):
        html_pages.append(client.get(p).text)
    client.cookies.clear()
    login(client, world.tokens["alice"])
    client.get(f"/web/researcher?lang={lang}")
    html_pages.append(client.get("/web/researcher").text)
    for html in html_pages:
        audit = _FormAudit()
        audit.feed(html)
        assert audit.skip_link and 'id="main"' in html
        assert audit.headings.count("h1") == 1 and audit.headings[0] == "h1"
        for control in audit.controls:
            assert control.get("id") in audit.label_for or control.get("aria-label"), control
    assert any('id="justification"' in h and "required" in h for h in html_pages)


def test_stylesheet_has_visible_focus_and_skip_link(client):
    css = client.get("/web/static/style.css")
    assert css.headers["content-type"].startswith("text/css")
    assert ":focus-visible" in css.text and ".skip-link:focus" in css.text


def test_templates_use_only_known_strings():
    from access.web.i18n import LANGUAGES, STRINGS

    for key, texts in STRINGS.items():
        assert set(texts) == set(LANGUAGES), key
        assert all(texts[lang].strip() for lang in LANGUAGES), key
    used = set()
    for path in (Path(__file__).resolve().parents[2] / "access" / "web" / "templates").glob("*.html"):
        used |= set(re.findall(r"\bt\('([a-z_]+)'", path.read_text(encoding="utf-8")))
    prefixes = {k for k in used if k.endswith("_")}
    assert used and not (used - prefixes - set(STRINGS)), sorted(used - prefixes - set(STRINGS))
    # Keys built from a value ('status_' ~ r.status): every value the store can hold has a text.
    from access.web import precheck
    from governance.catalogue import SENSITIVITY_LEVELS
    from governance.service import DATA_FORMS, FIVE_SAFES, OUTPUT_TIERS
    from governance.workflow import Decision, HolderVerdict, Status

    values = {
        "status_": {*Status, *HolderVerdict, "active", "approved", "expired", "revoked"},
        "decision_": set(Decision),
        "past_": set(Decision),
        "risk_": {precheck.OK, precheck.AT_RISK, precheck.NO_QUASI, precheck.NO_DATA, precheck.UNAVAILABLE},
        "sens_": {*SENSITIVITY_LEVELS, precheck.UNKNOWN},
        "data_form_": set(DATA_FORMS),
        "tier_": set(OUTPUT_TIERS),
        # steward decision aids (request page)
        "safe_": set(FIVE_SAFES),
        "safe_settings_facts_": set(OUTPUT_TIERS),
        "safe_outputs_facts_": set(OUTPUT_TIERS),
        "quality_verdict_": {"pass", "warn", "fail"},
    }
    assert prefixes == set(values)
    missing = [p + str(v) for p, vs in values.items() for v in vs if p + str(v) not in STRINGS]
    assert not missing, missing
