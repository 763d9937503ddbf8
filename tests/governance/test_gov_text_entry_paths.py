"""Free-text rules through every entry path: the service (file, edit, amend, decide, revoke), the
HTTP API, the CLI; the public register shows text stored before the rule display-safe."""

from __future__ import annotations

import unicodedata

import pytest
from click.testing import CliRunner
from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from govtest_helpers import request_fields
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from access.routes_governance import make_router
from governance import service
from governance.errors import InvalidRequest
from governance.models import DecisionRow, RequestRow
from governance.store import session_scope
from governance.text import FORBIDDEN_CATEGORIES

RLO, NUL, LRI, PDI, ZWSP = "\u202e", "\x00", "\u2066", "\u2069", "\u200b"
OK = "Proportionate, covered by the ethics approval."


def _problem_codes(exc: InvalidRequest) -> set[str]:
    return {c for c, _ in exc.problems}


def _approve(s, rid, holders=("ndr", "region_uppsala")):
    stewards = {"ndr": "s-ndr-1", "region_uppsala": "s-upp-1"}
    for h in holders:
        service.decide(
            s, request_id=rid, holder_id=h, reviewer=stewards[h], decision="approve", justification=OK
        )


@pytest.mark.parametrize(
    "title",
    [
        f"Studie{NUL}",
        f"Studie av {RLO}cod.exe",
        f"{LRI}HbA1c{PDI} och PROM",
        f"Noll{ZWSP}bredd",
        "Rad\nbrytning",
        "Tabb\tinne",
    ],
)
def test_file_request_refuses_forbidden_characters_in_the_title(seeded, title):
    with session_scope(seeded) as s:
        with pytest.raises(InvalidRequest) as exc:
            service.file_request(s, applicant="alice", **request_fields(project=title))
    assert exc.value.code == "request.project.forbidden_character"
    assert exc.value.http_status == 422
    assert title not in str(exc.value)


def test_every_request_text_field_and_action_is_checked(seeded):
    with session_scope(seeded) as s:
        with pytest.raises(InvalidRequest) as exc:
            service.file_request(
                s,
                applicant="alice",
                **request_fields(
                    data_form="pseudonymised",
                    output_tier="record",
                    pseudonymisation_justification=f"Linkage across holders is needed {RLO} for follow-up.",
                ),
            )
        assert _problem_codes(exc.value) == {"request.pseudonymisation_justification.forbidden_character"}
        rid = service.file_request(s, applicant="alice", **request_fields())
        with pytest.raises(InvalidRequest) as exc:
            service.update_draft(s, request_id=rid, actor="alice", project=f"Ny titel{ZWSP}")
        assert exc.value.code == "request.project.forbidden_character"
        service.submit_request(s, request_id=rid, actor="alice")
        with pytest.raises(InvalidRequest) as exc:
            service.decide(
                s,
                request_id=rid,
                holder_id="ndr",
                reviewer="s-ndr-1",
                decision="approve",
                justification=f"Looks fine {RLO}to me overall.",
            )
        assert exc.value.code == "decision.justification.forbidden_character"
        with pytest.raises(InvalidRequest) as exc:
            service.amend_request(
                s,
                request_id=rid,
                actor="alice",
                changes={"access_days": 200},
                reason=f"Shorter access{NUL} is enough.",
            )
        assert exc.value.code == "amendment.reason.forbidden_character"
        with pytest.raises(InvalidRequest) as exc:
            service.amend_request(
                s,
                request_id=rid,
                actor="alice",
                changes={"project": f"{LRI}Ny{PDI} titel"},
                reason="The title was unclear to reviewers.",
            )
        assert exc.value.code == "request.project.forbidden_character"
        _approve(s, rid)
        with pytest.raises(InvalidRequest) as exc:
            service.revoke_permit(
                s, request_id=rid, actor="admin", justification=f"Ethics approval{ZWSP} withdrawn."
            )
        assert exc.value.code == "revoke.justification.forbidden_character"
        # multi-line text from a web form (CRLF) is fine and stored with \n
        service.revoke_permit(
            s, request_id=rid, actor="admin", justification="Ethics approval withdrawn.\r\nSee case 12."
        )
        assert service.get_request(s, request_id=rid).status == "revoked"


def test_swedish_multiline_justification_is_kept(seeded):
    with session_scope(seeded) as s:
        rid = service.file_request(
            s,
            applicant="alice",
            **request_fields(holders=["ndr"], members=[], variables=["register_visit.hba1c_mmol_mol"]),
        )
        service.submit_request(s, request_id=rid, actor="alice")
        text = "Godkänd: ändamålet är förenligt med etikprövningen.\r\n– Dataförvaltare, Örebro"
        service.decide(
            s, request_id=rid, holder_id="ndr", reviewer="s-ndr-1", decision="approve", justification=text
        )
        [d] = service.get_request(s, request_id=rid).decisions
        assert d.justification == text.replace("\r\n", "\n")


titles = st.text(min_size=3, max_size=60).filter(lambda t: 3 <= len(t.strip()))
swedish = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzåäöéABCDEFGHIJKLMNOPQRSTUVWXYZÅÄÖÉ .,;:!?-–()/&%'0123456789",
    min_size=3,
    max_size=200,
).filter(lambda t: len(t.strip()) >= 3)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.just(None))
def test_accepted_titles_never_contain_forbidden_characters(seeded, _):
    """Property through the service and the store: random titles (any code point) and random
    Swedish titles; whatever is accepted and read back holds no forbidden character, and every
    Swedish title is accepted as typed (after strip)."""

    @settings(max_examples=120, deadline=None)
    @given(title=titles)
    def any_title(title):
        with session_scope(seeded) as s:
            try:
                rid = service.file_request(s, applicant="alice", **request_fields(project=title))
            except InvalidRequest as exc:
                assert exc.code in {"request.project.forbidden_character", "request.project"}
                assert exc.code == "request.project" or any(
                    unicodedata.category(c) in FORBIDDEN_CATEGORIES for c in title.strip()
                )
                return
            stored = service.get_request(s, request_id=rid).project
        assert not [c for c in stored if unicodedata.category(c) in FORBIDDEN_CATEGORIES]

    @settings(max_examples=80, deadline=None)
    @given(title=swedish)
    def swedish_title(title):
        with session_scope(seeded) as s:
            rid = service.file_request(s, applicant="alice", **request_fields(project=title))
            assert service.get_request(s, request_id=rid).project == title.strip()

    any_title()
    swedish_title()


def test_text_stored_before_the_rule_is_shown_display_safe(seeded):
    """Rows written before this rule (or behind the service's back) cannot put a bidi override or NUL
    on the public register, the request views or the permits."""
    with session_scope(seeded) as s:
        rid = service.file_request(s, applicant="alice", **request_fields())
        service.submit_request(s, request_id=rid, actor="alice")
        _approve(s, rid)
        service.record_release(s, request_id=rid, release_id="rel-text", manifest_sha256="0" * 64)
    with session_scope(seeded) as s:
        s.execute(update(RequestRow).where(RequestRow.id == rid).values(project=f"Studie {RLO}exe.fdp\x1b"))
        s.execute(
            update(DecisionRow).where(DecisionRow.request_id == rid).values(justification=f"OK{LRI} fine")
        )
    with session_scope(seeded) as s:
        [entry] = service.transparency_register(s)
        assert entry.project == "Studie \ufffdexe.fdp\ufffd"
        view = service.get_request(s, request_id=rid)
        assert view.project == entry.project
        assert {d.justification for d in view.decisions} == {"OK\ufffd fine"}
        [permit] = service.releases_for_user(s, user_name="alice", at=view.released_at)
        assert permit.project == entry.project


# ------------------------------------------------------------------ HTTP and CLI entry paths


@pytest.fixture
def http(seeded):
    def get_session():
        with session_scope(seeded) as s:
            yield s

    def current_user(request: Request):
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        with session_scope(seeded) as s:
            user = service.authenticate_token(s, token)
        if user is None:
            raise HTTPException(401, "no valid token")
        return user

    app = FastAPI()
    app.include_router(make_router(get_session, current_user))
    client = TestClient(app)
    with session_scope(seeded) as s:
        token = service.issue_token(s, user_name="alice")
    return client, {"Authorization": f"Bearer {token}"}


def test_http_refuses_a_bidi_title_and_the_register_stays_clean(http, seeded):
    client, headers = http
    body = request_fields(project=f"Diabetes {RLO}gnikcart")
    body["period"] = list(body["period"])
    r = client.post("/governance/requests", json=body, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "request.project.forbidden_character"
    assert RLO not in r.text and "gnikcart" not in r.text
    with session_scope(seeded) as s:
        assert service.list_requests(s) == []
    body = request_fields(project="Diabetes och fötter – en uppföljning")
    body["period"] = list(body["period"])
    assert client.post("/governance/requests", json=body, headers=headers).status_code == 201


def test_cli_refuses_a_title_with_a_zero_width_space(hdp_home):
    from edge.cli import main

    runner = CliRunner()

    def run(*args, token=""):
        return runner.invoke(main, list(args), env={"HDP_TOKEN": token}, catch_exceptions=False)

    assert run("governance", "upgrade").exit_code == 0
    assert run("user", "add", "alice", "--role", "researcher").exit_code == 0
    token = run("user", "token", "alice").output.strip()
    args = [
        "request",
        "file",
        "--purpose",
        "scientific_research",
        "--legal-basis",
        "gdpr_6_1_e__9_2_j",
        "--ethics-ref",
        "2024-01234-01",
        "--variable",
        "register_visit.hba1c_mmol_mol",
        "--holder",
        "ndr",
    ]
    result = run(*args, "--project", f"HbA1c{ZWSP} trajectories", token=token)
    assert result.exit_code != 0
    assert "request.project.forbidden_character" in result.output and "U+200B" in result.output
    result = run(*args, "--project", "HbA1c-förlopp i Örebro län", token=token)
    assert result.exit_code == 0, result.output
    assert "request 1 filed as draft" in result.output
