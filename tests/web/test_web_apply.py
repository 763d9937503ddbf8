"""The application form on the real app and governance store: file a draft, edit it, submit it,
answer a return for changes; governance's problems beside their fields; CSRF; who may edit."""

from __future__ import annotations

import re

import pytest
from webtest_helpers import csrf_of, login

from access.web.apply import PROBLEM_FIELDS, Shown, explain, field_of, problems_by_field, variable_groups

VARIABLES = ["register_visit.hba1c_mmol_mol", "register_visit.sex", "register_visit.birth_year"]
RETURN_REASON = "Please narrow the period to the years the ethics approval covers."


def form(**over):
    data = {
        "project": "Glucose control after 2015",
        "purpose": "scientific_research",
        "legal_basis": "gdpr_6_1_e__9_2_j",
        "ethics_ref": "2024-01234-01",
        "holders": ["ndr"],
        "variables": VARIABLES,
        "members": "bob",
        "period_start": "2015-01-01",
        "period_end": "2024-12-31",
        "cohort_criteria": "",
        "data_form": "anonymised",
        "pseudonymisation_justification": "",
        "output_tier": "aggregate",
        "access_days": "365",
        "action": "save",
    }
    data.update(over)
    return data


def post(client, path, data, *, csrf=None):
    token = csrf if csrf is not None else csrf_of(client.get(path).text)
    return client.post(path, data={**data, "csrf_token": token}, follow_redirects=False)


def stored(world, request_id):
    from governance import service
    from governance.store import session_scope

    with session_scope(world.url) as s:
        return service.get_request(s, request_id=request_id)


def new_id(response) -> int:
    assert response.status_code == 303, response.text[:2000]
    return int(re.search(r"/(?:apply|requests)/(\d+)$", response.headers["location"]).group(1))


def test_file_a_draft_edit_it_and_submit(client, world):
    from governance import service
    from governance.store import session_scope

    login(client, world.tokens["alice"])
    page = client.get("/web/apply?lang=en")
    assert page.status_code == 200
    assert "not recorded on your account" in page.text
    with session_scope(world.url) as s:
        service.set_organisation(s, name="alice", organisation="Uppsala universitet", actor="admin")
    page = client.get("/web/apply?lang=sv")
    assert "Uppsala universitet" in page.text
    assert "Vetenskaplig forskning med anknytning" in page.text  # purposes in the page's language
    page = client.get("/web/apply?lang=en")
    # Every catalogue table is offered, with its variables' disclosure classes and holders.
    assert 'data-testid="table-register_visit"' in page.text and "delivered by ndr" in page.text
    assert 'value="register_visit.person_id"' in page.text and "pseudonym (linkage key)" in page.text
    assert 'value="scientific_research"' in page.text and 'value="gdpr_6_1_e__9_2_j"' in page.text

    rid = new_id(post(client, "/web/apply", form()))
    r = stored(world, rid)
    assert (r.status, r.applicant, r.members) == ("draft", "alice", ("bob",))
    assert set(r.variables) == set(VARIABLES) and r.holders == ("ndr",) and r.access_days == 365
    assert str(r.period[0]) == "2015-01-01"
    page = client.get(f"/web/apply/{rid}")
    assert "Utkastet till ansökan" in page.text or "draft of application" in page.text
    researcher = client.get("/web/researcher").text  # the draft is reachable from "my requests"
    assert f'href="/web/apply/{rid}" data-testid="edit-{rid}"' in researcher
    assert 'value="Glucose control after 2015"' in page.text
    assert 'id="var-register_visit.sex" name="variables" value="register_visit.sex" checked' in page.text

    changed = form(project="Glucose control 2015-2024", access_days="200", action="submit")
    assert new_id(post(client, f"/web/apply/{rid}", changed)) == rid
    r = stored(world, rid)
    assert (r.status, r.project, r.access_days, r.review_round) == (
        "submitted",
        "Glucose control 2015-2024",
        200,
        1,
    )
    # Submitted: no longer editable here; the form sends the applicant to the request page.
    again = client.get(f"/web/apply/{rid}", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == f"/web/requests/{rid}"


def test_problems_are_shown_next_to_their_fields_and_nothing_is_stored(client, world):
    from governance import service
    from governance.store import session_scope

    login(client, world.tokens["alice"])
    with session_scope(world.url) as s:
        before = len(service.list_requests(s, applicant="alice"))
    bad = form(
        project="x",
        purpose="marketing",
        ethics_ref="12345",
        variables=["register_visit.person_id", "register_visit.sex"],
        access_days="forever",
        cohort_criteria="{not json",
        period_start="2024-01-01",
        period_end="2015-01-01",
    )
    r = post(client, "/web/apply?lang=en", bad)
    assert r.status_code == 422
    html = r.text
    for field in (
        "project",
        "purpose",
        "ethics_ref",
        "access_days",
        "cohort_criteria",
        "period",
        "data_form",
    ):
        assert f'id="err-{field}"' in html, field
    # The message is governance's, beside the field, and the field points at it.
    assert re.search(
        r'id="ethics_ref"[^>]*aria-describedby="ethics-help err-ethics_ref"[^>]*aria-invalid="true"', html
    )
    assert "ethics approval reference must look like 2024-01234-01" in html
    assert "linkage keys" in html  # a pseudonym needs pseudonymised data
    assert "access period must be 1-3650 days" in html
    # What was typed is kept (escaped), so the applicant corrects rather than retypes.
    assert 'value="12345"' in html and "{not json" in html
    assert 'value="register_visit.person_id" checked' in html
    with session_scope(world.url) as s:
        assert len(service.list_requests(s, applicant="alice")) == before
    # The Swedish page says what to fix in Swedish, with governance's words after it.
    html = post(client, "/web/apply?lang=sv", bad).text
    assert "Diarienumret ska se ut som 2024-01234-01" in html
    assert '<span class="detail" lang="en">(ethics approval reference must look like' in html


def test_answer_a_return_for_changes(client, world):
    from governance import service
    from governance.store import session_scope

    login(client, world.tokens["alice"])
    rid = new_id(post(client, "/web/apply", form(action="submit")))
    assert stored(world, rid).status == "submitted"
    with session_scope(world.url) as s:
        service.decide(
            s,
            request_id=rid,
            holder_id="ndr",
            reviewer="s-ndr",
            decision="return",
            justification=RETURN_REASON,
        )
    page = client.get("/web/apply?lang=en")
    assert f'href="/web/apply/{rid}"' in page.text  # listed among the applications to finish
    page = client.get(f"/web/apply/{rid}")
    assert page.status_code == 200 and 'data-testid="return-reasons"' in page.text
    assert RETURN_REASON in page.text and "Submit again" in page.text
    resubmit = form(period_start="2018-01-01", action="submit")
    assert new_id(post(client, f"/web/apply/{rid}", resubmit)) == rid
    r = stored(world, rid)
    assert (r.status, r.review_round, str(r.period[0])) == ("submitted", 2, "2018-01-01")


def test_csrf_role_and_ownership(client, world):
    login(client, world.tokens["alice"])
    rid = new_id(post(client, "/web/apply", form()))
    # A missing or wrong CSRF token is refused and nothing changes.
    assert post(client, "/web/apply", form(), csrf="forged").status_code == 403
    assert (
        post(client, f"/web/apply/{rid}", form(project="Changed by a forged form"), csrf="").status_code
        == 403
    )
    assert stored(world, rid).project == "Glucose control after 2015"
    # An unknown action is refused.
    assert post(client, f"/web/apply/{rid}", form(action="approve")).status_code == 400
    # Over-long text is refused before it reaches the store.
    assert post(client, f"/web/apply/{rid}", form(project="x" * 6000)).status_code == 422

    client.post("/web/logout", data={"csrf_token": csrf_of(client.get("/web/researcher").text)})
    login(client, world.tokens["bob"])  # a member, not the applicant: the draft is not his to edit
    assert client.get(f"/web/apply/{rid}").status_code == 404
    assert post(client, f"/web/apply/{rid}", form(project="Bob's edit")).status_code == 404
    assert stored(world, rid).project == "Glucose control after 2015"

    client.post("/web/logout", data={"csrf_token": csrf_of(client.get("/web/researcher").text)})
    login(client, world.tokens["s-ndr"])  # stewards do not file applications
    assert client.get("/web/apply").status_code == 403


def test_anonymous_is_sent_to_login(client):
    r = client.get("/web/apply", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/web/login?next=/web/apply")


@pytest.mark.parametrize("lang", ["sv", "en"])
def test_form_in_both_languages_is_labelled(client, world, lang):
    from html.parser import HTMLParser

    login(client, world.tokens["alice"])
    html = client.get(f"/web/apply?lang={lang}").text
    assert f'<html lang="{lang}">' in html
    assert ("Ny ansökan om data" if lang == "sv" else "New data application") in html

    class Fields(HTMLParser):
        def __init__(self):
            super().__init__()
            self.ids, self.labels = [], set()

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag in ("input", "select", "textarea") and a.get("type") != "hidden":
                self.ids.append(a.get("id"))
            if tag == "label":
                self.labels.add(a.get("for"))

    f = Fields()
    f.feed(html)
    assert f.ids and all(i in f.labels for i in f.ids)


def test_problem_codes_map_to_fields():
    assert field_of("request.project.forbidden_character") == "project"
    assert field_of("request.pseudonymisation_justification.forbidden_character") == (
        "pseudonymisation_justification"
    )
    assert field_of("request.id_taken") is None
    by_field, general = problems_by_field((("request.period", "p"), ("amendment.field", "a")))
    assert by_field == {"period": [("request.period", "p")]} and general == [("amendment.field", "a")]
    # English pages show governance's message; Swedish ones say what to fix first, then the message.
    assert explain(("request.period", "p"), "en") == Shown("p")
    assert explain(("request.period", "p"), "sv") == Shown(
        "Perioden ska vara två datum där början inte ligger efter slutet.", "p"
    )
    assert explain(("request.project.forbidden_character", "U+202E at 3"), "sv").detail == "U+202E at 3"
    assert explain(("amendment.field", "a"), "sv") == Shown("a")  # no Swedish text for it: as it is
    assert set(PROBLEM_FIELDS.values()) <= {
        "project", "purpose", "legal_basis", "ethics_ref", "holders", "variables", "members",
        "cohort_criteria", "period", "data_form", "pseudonymisation_justification", "output_tier", "access_days",
    }  # fmt: skip


def test_variable_groups_follow_the_catalogue():
    from governance.catalogue import load_catalogue, table_holders

    groups = variable_groups(load_catalogue(), table_holders())
    assert sum(len(g.variables) for g in groups) == len(load_catalogue())
    visits = next(g for g in groups if g.table == "register_visit")
    assert visits.holders == ("ndr",)
    assert {v.sensitivity for v in visits.variables} >= {"pseudonym", "quasi_identifier", "health"}
