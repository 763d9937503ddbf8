"""Service behaviour against SQLite and Postgres (same tests, parametrised backend)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from govtest_helpers import request_fields
from sqlalchemy import func, select, text

from governance import service
from governance.errors import (
    AlreadyReleased,
    DuplicateDecision,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    SelfDecision,
)
from governance.models import RequestRow
from governance.store import session_scope

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
SHA = "a" * 64
J = "Meets the purpose; variables are proportionate."


def _file_and_submit(url, applicant="alice", now=T0, **over) -> int:
    with session_scope(url) as s:
        rid = service.file_request(s, applicant=applicant, now=now, **request_fields(**over))
        service.submit_request(s, request_id=rid, actor=applicant, now=now)
    return rid


def _approve_all(url, rid, now=T0 + timedelta(days=2)) -> str:
    reviewers = {
        "ndr": ["s-ndr-1"],
        "region_uppsala": ["s-upp-1"],
        "region_orebro": ["s-ore-1", "s-ore-2"],
        "region_skane": ["s-ska-1"],
    }
    status = ""
    with session_scope(url) as s:
        holders = service.get_request(s, request_id=rid).holders
    for h in holders:
        for r in reviewers[h]:
            with session_scope(url) as s:
                status = service.decide(
                    s, request_id=rid, holder_id=h, reviewer=r, decision="approve", justification=J, now=now
                )
    return status


def test_full_workflow_to_access(seeded):
    rid = _file_and_submit(seeded)
    with session_scope(seeded) as s:
        assert service.get_request(s, request_id=rid).status == "submitted"
        assert (
            service.decide(
                s,
                request_id=rid,
                holder_id="ndr",
                reviewer="s-ndr-1",
                decision="approve",
                justification=J,
                now=T0 + timedelta(days=1),
            )
            == "under_review"
        )
        # Not released while one holder has not approved.
        assert service.requests_ready_for_release(s, at=T0 + timedelta(days=3)) == []
        assert service.permit_for_request(s, request_id=rid) is None
        assert (
            service.decide(
                s,
                request_id=rid,
                holder_id="region_uppsala",
                reviewer="s-upp-1",
                decision="approve",
                justification=J,
                now=T0 + timedelta(days=2),
            )
            == "approved"
        )
    with session_scope(seeded) as s:
        ready = service.requests_ready_for_release(s, at=T0 + timedelta(days=3))
        assert [r.request_id for r in ready] == [rid]
        a = ready[0]
        assert a.holders == ("ndr", "region_uppsala") and a.purpose == "scientific_research"
        assert set(a.variables) == set(request_fields()["variables"]) and a.output_tier == "aggregate"
        assert {x["holder_id"] for x in a.approvals} == {"ndr", "region_uppsala"}
        assert str(a.period[0]) == "2015-01-01"
        permit = service.record_release(
            s, request_id=rid, release_id="rel-1", manifest_sha256=SHA, now=T0 + timedelta(days=3)
        )
    assert permit.users == frozenset({"alice", "bob"}) and permit.release_id == "rel-1"
    assert permit.expires_at == T0 + timedelta(days=2 + 365)
    at = T0 + timedelta(days=10)
    with session_scope(seeded) as s:
        assert service.get_request(s, request_id=rid).status == "released"
        assert service.requests_ready_for_release(s, at=T0 + timedelta(days=3)) == []
        assert service.active_permit(s, user_name="alice", release_id="rel-1", at=at).id == permit.id
        assert service.active_permit(s, user_name="bob", release_id="rel-1", at=at) is not None
        assert service.active_permit(s, user_name="carol", release_id="rel-1", at=at) is None
        assert service.active_permit(s, user_name="alice", release_id="rel-2", at=at) is None
        assert [(p.release_id, p.project) for p in service.releases_for_user(s, user_name="bob", at=at)] == [
            ("rel-1", request_fields()["project"])
        ]
        with pytest.raises(AlreadyReleased):
            service.record_release(s, request_id=rid, release_id="rel-1b", manifest_sha256=SHA)
        history = [e["action"] for e in service.request_history(s, request_id=rid)]
    assert history == ["file", "submit", "decide", "decide", "release"]


def test_no_self_approval_and_only_own_holder(seeded):
    rid = _file_and_submit(
        seeded, applicant="dual", holders=["ndr"], members=[], variables=["register_visit.bmi"]
    )
    with session_scope(seeded) as s:
        with pytest.raises(SelfDecision):
            service.decide(
                s, request_id=rid, holder_id="ndr", reviewer="dual", decision="approve", justification=J
            )
    rid2 = _file_and_submit(seeded)
    with session_scope(seeded) as s:
        with pytest.raises(PermissionDenied, match="not a steward of 'region_uppsala'"):
            service.decide(
                s,
                request_id=rid2,
                holder_id="region_uppsala",
                reviewer="s-ndr-1",
                decision="approve",
                justification=J,
            )
        with pytest.raises(PermissionDenied):
            service.decide(
                s, request_id=rid2, holder_id="ndr", reviewer="bob", decision="approve", justification=J
            )
        with pytest.raises(InvalidRequest, match="not in scope"):
            service.decide(
                s,
                request_id=rid2,
                holder_id="region_skane",
                reviewer="s-ska-1",
                decision="approve",
                justification=J,
            )


def test_member_who_is_steward_cannot_decide(seeded):
    rid = _file_and_submit(seeded, members=["dual"])
    with session_scope(seeded) as s, pytest.raises(SelfDecision):
        service.decide(
            s, request_id=rid, holder_id="ndr", reviewer="dual", decision="approve", justification=J
        )


def test_two_reviewers_required(seeded):
    rid = _file_and_submit(seeded, holders=["region_orebro"], variables=["observation.value"])
    with session_scope(seeded) as s:
        assert (
            service.decide(
                s,
                request_id=rid,
                holder_id="region_orebro",
                reviewer="s-ore-1",
                decision="approve",
                justification=J,
            )
            == "under_review"
        )
    with session_scope(seeded) as s, pytest.raises(DuplicateDecision):
        service.decide(
            s,
            request_id=rid,
            holder_id="region_orebro",
            reviewer="s-ore-1",
            decision="approve",
            justification=J,
        )
    with session_scope(seeded) as s:
        assert service.permit_for_request(s, request_id=rid) is None
        assert (
            service.decide(
                s,
                request_id=rid,
                holder_id="region_orebro",
                reviewer="s-ore-2",
                decision="approve",
                justification=J,
            )
            == "approved"
        )


def test_reject_is_final_and_justification_required(seeded):
    rid = _file_and_submit(seeded)
    with session_scope(seeded) as s:
        with pytest.raises(InvalidRequest, match="justification"):
            service.decide(
                s, request_id=rid, holder_id="ndr", reviewer="s-ndr-1", decision="approve", justification="ok"
            )
        with pytest.raises(InvalidRequest, match="decision must be"):
            service.decide(
                s, request_id=rid, holder_id="ndr", reviewer="s-ndr-1", decision="maybe", justification=J
            )
        assert (
            service.decide(
                s,
                request_id=rid,
                holder_id="ndr",
                reviewer="s-ndr-1",
                decision="reject",
                justification="Purpose not covered by the ethics approval.",
            )
            == "rejected"
        )
    with session_scope(seeded) as s, pytest.raises(InvalidTransition, match="rejected"):
        service.decide(
            s,
            request_id=rid,
            holder_id="region_uppsala",
            reviewer="s-upp-1",
            decision="approve",
            justification=J,
        )
    with session_scope(seeded) as s:
        assert service.permit_for_request(s, request_id=rid) is None


def test_return_edit_resubmit_starts_new_round(seeded):
    rid = _file_and_submit(seeded)
    with session_scope(seeded) as s:
        service.decide(
            s, request_id=rid, holder_id="ndr", reviewer="s-ndr-1", decision="approve", justification=J
        )
        assert (
            service.decide(
                s,
                request_id=rid,
                holder_id="region_uppsala",
                reviewer="s-upp-1",
                decision="return",
                justification="Narrow the period to what the question needs.",
            )
            == "returned"
        )
    with session_scope(seeded) as s:
        with pytest.raises(PermissionDenied):
            service.update_draft(s, request_id=rid, actor="bob", period=("2020-01-01", "2024-12-31"))
        view = service.update_draft(s, request_id=rid, actor="alice", period=("2020-01-01", "2024-12-31"))
        assert view.status == "returned" and str(view.period[0]) == "2020-01-01"
        service.submit_request(s, request_id=rid, actor="alice")
    with session_scope(seeded) as s:
        v = service.get_request(s, request_id=rid)
        assert v.status == "submitted" and v.review_round == 2
        # The round-1 approval of ndr does not carry over: one approval is not enough.
        assert (
            service.decide(
                s,
                request_id=rid,
                holder_id="region_uppsala",
                reviewer="s-upp-1",
                decision="approve",
                justification=J,
            )
            == "under_review"
        )
        assert (
            service.decide(
                s, request_id=rid, holder_id="ndr", reviewer="s-ndr-1", decision="approve", justification=J
            )
            == "approved"
        )


def test_malformed_request_lists_problems_and_stores_nothing(seeded):
    bad = request_fields(
        purpose="marketing",
        ethics_ref="2024-1234-1",
        variables=["register_visit.nope"],
        holders=["ndr", "region_mars"],
        members=["ghost"],
        period=("2024-01-01", "2023-01-01"),
        access_days=0,
    )
    with session_scope(seeded) as s:
        with pytest.raises(InvalidRequest) as exc:
            service.file_request(s, applicant="alice", **bad)
        codes = {c for c, _ in exc.value.problems}
        assert {
            "request.purpose",
            "request.ethics_ref",
            "request.variables",
            "request.holders",
            "request.unknown_user",
            "request.period",
            "request.access_days",
        } <= codes
        assert "2024-01234-01" in str(exc.value)  # the message shows the expected format
        with pytest.raises(InvalidRequest, match="unknown_field|cannot change"):
            service.file_request(s, applicant="alice", **request_fields(colour="red"))
    with session_scope(seeded) as s:
        assert s.execute(select(func.count()).select_from(RequestRow)).scalar_one() == 0


@pytest.mark.parametrize(
    "over, code",
    [
        (
            {"variables": ["register_visit.person_id", "register_visit.bmi"]},
            "request.pseudonym_needs_justification",
        ),
        (
            {"data_form": "pseudonymised", "pseudonymisation_justification": "short"},
            "request.pseudonymisation_justification",
        ),
        ({"holders": ["region_skane"]}, "request.variable_not_held"),
        (
            {
                "holders": ["ndr", "region_uppsala", "region_skane"],
                "variables": ["register_visit.bmi", "observation.value"],
            },
            None,
        ),
        ({"variables": ["register_visit.bmi"]}, "request.holder_without_variables"),
        ({"ethics_ref": "1899-01234-01"}, "request.ethics_ref"),
        ({"cohort_criteria": {"nonsense": 1}}, "request.cohort_criteria"),
        ({"cohort_criteria": {"register_visit.bmi": {"like": "%"}}}, "request.cohort_criteria"),
        ({"cohort_criteria": {"register_visit.bmi": {"between": [20]}}}, "request.cohort_criteria"),
        ({"cohort_criteria": {"register_visit.bmi": {"between": [20, 30]}}}, None),
        ({"applicant_is": None}, "request.unknown_field"),
        ({"output_tier": "record"}, "request.record_needs_pseudonymised"),
        (
            {
                "output_tier": "record",
                "data_form": "pseudonymised",
                "pseudonymisation_justification": "Repeated measures per person need a stable linkage key.",
            },
            None,
        ),
    ],
)
def test_request_validation(seeded, over, code):
    with session_scope(seeded) as s:
        if code is None:
            assert service.file_request(s, applicant="alice", **request_fields(**over)) > 0
            return
        with pytest.raises(InvalidRequest) as exc:
            service.file_request(s, applicant="alice", **request_fields(**over))
        assert code in {c for c, _ in exc.value.problems}


def test_pseudonymised_with_justification_accepted(seeded):
    with session_scope(seeded) as s:
        rid = service.file_request(
            s,
            applicant="alice",
            **request_fields(
                variables=["register_visit.person_id", "register_visit.hba1c_mmol_mol"],
                holders=["ndr"],
                data_form="pseudonymised",
                pseudonymisation_justification="Repeated measures per person need a stable linkage key.",
            ),
        )
        assert service.get_request(s, request_id=rid).data_form == "pseudonymised"


def test_submitted_request_is_immutable_except_by_amendment(seeded):
    rid = _file_and_submit(seeded)
    with session_scope(seeded) as s:
        service.decide(
            s, request_id=rid, holder_id="ndr", reviewer="s-ndr-1", decision="approve", justification=J
        )
    with session_scope(seeded) as s, pytest.raises(InvalidTransition, match="cannot edit"):
        service.update_draft(s, request_id=rid, actor="alice", project="Something else entirely")
    with session_scope(seeded) as s:
        with pytest.raises(InvalidRequest, match="reason"):
            service.amend_request(
                s, request_id=rid, actor="alice", changes={"members": ["bob", "carol"]}, reason=""
            )
        assert (
            service.amend_request(
                s,
                request_id=rid,
                actor="alice",
                changes={"members": ["bob", "carol"]},
                reason="Carol joins as statistician.",
            )
            == rid
        )
    with session_scope(seeded) as s:
        v = service.get_request(s, request_id=rid)
        assert v.status == "submitted" and v.review_round == 2 and v.members == ("bob", "carol")
        amend = [e for e in service.request_history(s, request_id=rid) if e["action"] == "amend"]
        assert amend and amend[0]["detail"]["fields"] == ["members"]


def test_amendment_of_released_permit_goes_through_review(seeded):
    rid = _file_and_submit(seeded)
    _approve_all(seeded, rid)
    with session_scope(seeded) as s:
        service.record_release(
            s, request_id=rid, release_id="rel-a", manifest_sha256=SHA, now=T0 + timedelta(days=3)
        )
        with pytest.raises(InvalidRequest, match="new request"):
            service.amend_request(
                s,
                request_id=rid,
                actor="alice",
                changes={"variables": ["register_visit.bmi"]},
                reason="Need BMI as well for the model.",
            )
        child = service.amend_request(
            s,
            request_id=rid,
            actor="alice",
            changes={"members": ["bob", "carol"], "access_days": 730},
            reason="New statistician and a one-year extension.",
            now=T0 + timedelta(days=5),
        )
    assert child != rid
    at = T0 + timedelta(days=6)
    with session_scope(seeded) as s:
        service.submit_request(s, request_id=child, actor="alice", now=at)
        # Not applied before approval.
        assert service.active_permit(s, user_name="carol", release_id="rel-a", at=at) is None
        assert [r.request_id for r in service.requests_ready_for_release(s, at=T0 + timedelta(days=3))] == []
    assert _approve_all(seeded, child, now=at) == "approved"
    with session_scope(seeded) as s:
        p = service.active_permit(s, user_name="carol", release_id="rel-a", at=at)
        assert p is not None and p.expires_at == T0 + timedelta(days=2 + 730)
        assert (
            service.requests_ready_for_release(s, at=T0 + timedelta(days=3)) == []
        )  # an amendment is not a new release
        assert service.get_request(s, request_id=rid).status == "released"


def test_expiry_and_revocation_cut_access(seeded):
    rid = _file_and_submit(seeded, access_days=30)
    _approve_all(seeded, rid)
    issued = T0 + timedelta(days=2)
    with session_scope(seeded) as s:
        service.record_release(s, request_id=rid, release_id="rel-e", manifest_sha256=SHA, now=issued)
    end = issued + timedelta(days=30)
    with session_scope(seeded) as s:
        assert service.active_permit(s, user_name="alice", release_id="rel-e", at=end - timedelta(seconds=1))
        # No sweep has run yet: access ends at expires_at anyway.
        assert service.active_permit(s, user_name="alice", release_id="rel-e", at=end) is None
        assert service.releases_for_user(s, user_name="alice", at=end) == []
        assert [p.release_id for p in service.releases_due_for_deletion(s, at=end)] == ["rel-e"]
        assert service.expire_permits(s, at=end) == [rid]
        assert service.get_request(s, request_id=rid).status == "expired"
        with pytest.raises(InvalidTransition):
            service.amend_request(
                s,
                request_id=rid,
                actor="alice",
                changes={"access_days": 60},
                reason="Extension needed after expiry.",
            )
        service.mark_release_deleted(s, release_id="rel-e", now=end)
        assert service.releases_due_for_deletion(s, at=end) == []

    rid2 = _file_and_submit(seeded)
    _approve_all(seeded, rid2)
    with session_scope(seeded) as s:
        service.record_release(s, request_id=rid2, release_id="rel-r", manifest_sha256=SHA, now=issued)
        with pytest.raises(PermissionDenied):
            service.revoke_permit(s, request_id=rid2, actor="s-ska-1", justification="Not my holder at all.")
        with pytest.raises(InvalidTransition, match="in force"):
            service.mark_release_deleted(s, release_id="rel-r", now=issued)
        p = service.revoke_permit(
            s,
            request_id=rid2,
            actor="s-upp-1",
            justification="Breach of the data use terms.",
            now=issued + timedelta(days=1),
        )
        assert p.status == "revoked"
    with session_scope(seeded) as s:
        assert (
            service.active_permit(s, user_name="alice", release_id="rel-r", at=issued + timedelta(days=1))
            is None
        )
        assert "rel-r" in [
            p.release_id for p in service.releases_due_for_deletion(s, at=issued + timedelta(days=1))
        ]
        with pytest.raises(InvalidTransition):
            service.revoke_permit(
                s, request_id=rid2, actor="admin", justification="Second revocation attempt."
            )


def test_release_needs_approval_and_valid_input(seeded):
    rid = _file_and_submit(seeded)
    with session_scope(seeded) as s:
        with pytest.raises(InvalidTransition):
            service.record_release(s, request_id=rid, release_id="rel-x", manifest_sha256=SHA)
        with pytest.raises(InvalidRequest):
            service.record_release(s, request_id=rid, release_id="../etc", manifest_sha256="nothex")
        with pytest.raises(NotFound):
            service.record_release(s, request_id=999, release_id="rel-x", manifest_sha256=SHA)


def test_users_tokens_roles(seeded):
    with session_scope(seeded) as s:
        token = service.issue_token(s, user_name="alice")
        assert token.startswith("hdp_") and len(token) > 40
        assert service.authenticate_token(s, token).name == "alice"
        assert service.authenticate_token(s, token + "x") is None
        assert service.authenticate_token(s, "") is None
        stored = s.execute(text("SELECT token_sha256 FROM gov_api_token")).scalars().all()
        assert token not in stored and len(stored) == 1 and len(stored[0]) == 64
        assert service.has_role(s, "s-ndr-1", "steward") and not service.has_role(s, "alice", "steward")
        assert not service.has_role(s, "nobody", "researcher")
        with pytest.raises(InvalidRequest, match="steward"):
            service.create_user(s, name="stew", roles=["steward"])
        with pytest.raises(InvalidRequest, match="unknown role"):
            service.create_user(s, name="x1", roles=["superuser"])
        with pytest.raises(InvalidRequest, match="already exists"):
            service.create_user(s, name="alice", roles=["researcher"])
        assert service.create_user(s, name="tc", roles=["reid_approver"]).roles == frozenset(
            {"reid_approver"}
        )
        assert service.revoke_tokens(s, user_name="alice") == 1
        assert service.authenticate_token(s, token) is None
        bob_token = service.issue_token(s, user_name="bob")
        service.disable_user(s, name="bob", actor="admin")
        assert service.authenticate_token(s, bob_token) is None and not service.has_role(
            s, "bob", "researcher"
        )


def test_overdue_and_deadlines(seeded):
    with session_scope(seeded) as s:
        service.set_decision_deadline(s, days=5)
        service.set_decision_deadline(s, days=10, holder_id="region_uppsala")
        with pytest.raises(InvalidRequest):
            service.set_decision_deadline(s, days=0)
    rid = _file_and_submit(seeded)
    with session_scope(seeded) as s:
        assert service.overdue_reviews(s, at=T0 + timedelta(days=4)) == []
        over = service.overdue_reviews(s, at=T0 + timedelta(days=6))
        assert [(o.request_id, o.holder_id) for o in over] == [(rid, "ndr")]
        assert over[0].days_overdue == pytest.approx(1.0)
        assert {o.holder_id for o in service.overdue_reviews(s, at=T0 + timedelta(days=11))} == {
            "ndr",
            "region_uppsala",
        }
        service.decide(
            s,
            request_id=rid,
            holder_id="ndr",
            reviewer="s-ndr-1",
            decision="approve",
            justification=J,
            now=T0 + timedelta(days=7),
        )
        assert [o.holder_id for o in service.overdue_reviews(s, at=T0 + timedelta(days=11))] == [
            "region_uppsala"
        ]


def test_key_figures(seeded):
    r1 = _file_and_submit(seeded)
    _approve_all(seeded, r1, now=T0 + timedelta(days=2))
    r2 = _file_and_submit(seeded)
    with session_scope(seeded) as s:
        service.record_release(
            s, request_id=r1, release_id="rel-k", manifest_sha256=SHA, now=T0 + timedelta(days=6)
        )
        service.decide(
            s,
            request_id=r2,
            holder_id="ndr",
            reviewer="s-ndr-1",
            decision="reject",
            justification="Not proportionate to the aim.",
            now=T0 + timedelta(days=4),
        )
        figs = {(f.holder_id, f.period): f for f in service.key_figures(s, period="month")}
        ndr = figs[("ndr", "2025-03")]
        assert (ndr.submitted, ndr.decided, ndr.approved, ndr.rejected, ndr.released) == (2, 2, 1, 1, 1)
        assert ndr.median_days_to_decision == pytest.approx(3.0)
        assert ndr.median_days_decision_to_release == pytest.approx(4.0)
        upp = figs[("region_uppsala", "2025-03")]
        assert (upp.submitted, upp.decided) == (2, 1)
        assert [f.period for f in service.key_figures(s, period="quarter")][0] == "2025-Q1"


def test_transparency_register_has_no_personal_data(seeded):
    rid = _file_and_submit(seeded)
    _approve_all(seeded, rid)
    with session_scope(seeded) as s:
        service.record_release(
            s, request_id=rid, release_id="rel-t", manifest_sha256=SHA, now=T0 + timedelta(days=3)
        )
        entries = service.transparency_register(s, at=T0 + timedelta(days=4))
    assert (
        len(entries) == 1
        and entries[0].status == "active"
        and entries[0].holders == ("ndr", "region_uppsala")
    )
    blob = json.dumps([e.__dict__ for e in entries], default=str)
    for name in ("alice", "bob", "s-ndr-1", "s-upp-1", "2024-01234-01"):
        assert name not in blob


def test_audit_log_records_decisions_without_consent_keys(seeded, hdp_home):
    from hdp.audit import AuditLog

    rid = _file_and_submit(seeded)
    _approve_all(seeded, rid)
    key = "k" * 64
    with session_scope(seeded) as s:
        service.record_consent(
            s, consent_key=key, scope="secondary_use", choice="opt_out", source_ref="form-1", actor="s-ndr-1"
        )
    with pytest.raises(InvalidRequest), session_scope(seeded) as s:  # rolled back: no audit entry
        service.decide(
            s, request_id=rid, holder_id="ndr", reviewer="s-ndr-1", decision="approve", justification="x"
        )
    log = AuditLog(hdp_home.audit_dir / "audit.jsonl")
    assert log.verify().ok
    entries = list(log.entries())
    decisions = [e for e in entries if e.get("event") == "governance.request.decide"]
    assert [(e["request_id"], e["holder_id"], e["decision"]) for e in decisions] == [
        (rid, "ndr", "approve"),
        (rid, "region_uppsala", "approve"),
    ]
    assert any(e.get("event") == "governance.permit_issued" for e in entries)
    with session_scope(seeded) as s:
        service.revoke_permit(s, request_id=rid, actor="admin", justification="Free-text reason XYZZY here.")
    text_ = (hdp_home.audit_dir / "audit.jsonl").read_text()
    assert key not in text_ and "XYZZY" not in text_ and J not in text_
    assert any(
        e.get("event") == "governance.request.revoke"
        for e in AuditLog(hdp_home.audit_dir / "audit.jsonl").entries()
    )
