"""Steward decision aids in the store: organisation, decision checklist, overlapping permits, comments."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from govtest_helpers import request_fields

from governance import service
from governance.errors import InvalidRequest, NotFound
from governance.store import session_scope

NDR_VARS = ["register_visit.hba1c_mmol_mol", "register_visit.birth_year"]


def _approved(url, **over) -> int:
    """A request of alice's approved by every holder (its permit issued)."""
    with session_scope(url) as s:
        rid = service.file_request(s, applicant="alice", **request_fields(**over))
        service.submit_request(s, request_id=rid, actor="alice")
        holders = service.get_request(s, request_id=rid).holders
    steward = {"ndr": "s-ndr-1", "region_uppsala": "s-upp-1", "region_skane": "s-ska-1"}
    for h in holders:
        with session_scope(url) as s:
            service.decide(
                s,
                request_id=rid,
                holder_id=h,
                reviewer=steward[h],
                decision="approve",
                justification="Purpose and variables are proportionate.",
            )
    return rid


def test_organisation_is_stored_checked_and_cleared(seeded):
    with session_scope(seeded) as s:
        service.create_user(s, name="erik", roles=["researcher"], organisation="  Uppsala universitet ")
        assert service.user_organisation(s, "erik") == "Uppsala universitet"
        assert service.user_organisation(s, "alice") is None
        assert service.user_organisation(s, "nobody") is None
    with session_scope(seeded) as s, pytest.raises(InvalidRequest) as exc:
        service.set_organisation(s, name="alice", organisation="Karolinska\u202einstitutet", actor="admin")
    assert exc.value.problems[0][0] == "user.organisation.forbidden_character"
    with session_scope(seeded) as s, pytest.raises(InvalidRequest):
        service.set_organisation(s, name="alice", organisation="x" * 201, actor="admin")
    with session_scope(seeded) as s:
        service.set_organisation(s, name="alice", organisation="Karolinska institutet", actor="admin")
    with session_scope(seeded) as s:
        assert service.user_organisation(s, "alice") == "Karolinska institutet"
        service.set_organisation(s, name="alice", organisation="  ", actor="admin")
    with session_scope(seeded) as s:
        assert service.user_organisation(s, "alice") is None


def test_checklist_is_stored_with_the_decision_and_in_history(seeded):
    with session_scope(seeded) as s:
        rid = service.file_request(
            s, applicant="alice", **request_fields(holders=["ndr"], variables=NDR_VARS)
        )
        service.submit_request(s, request_id=rid, actor="alice")
    with session_scope(seeded) as s, pytest.raises(InvalidRequest):
        service.decide(
            s,
            request_id=rid,
            holder_id="ndr",
            reviewer="s-ndr-1",
            decision="approve",
            justification="Proportionate and ethically approved.",
            checklist={"safe_pizza": True},
        )
    with session_scope(seeded) as s:
        service.decide(
            s,
            request_id=rid,
            holder_id="ndr",
            reviewer="s-ndr-1",
            decision="approve",
            justification="Proportionate and ethically approved.",
            checklist={"projects": True, "people": True, "data": False, "at_risk_acknowledged": True},
        )
    with session_scope(seeded) as s:
        (d,) = service.get_request(s, request_id=rid).decisions
        assert d.checklist == {
            "projects": True,
            "people": True,
            "settings": False,
            "data": False,
            "outputs": False,
            "at_risk_acknowledged": True,
        }
        decided = [e for e in service.request_history(s, request_id=rid) if e["action"] == "decide"]
        assert decided[0]["detail"]["checklist"] == ["at_risk_acknowledged", "people", "projects"]


def test_decision_without_checklist_records_none(seeded):
    with session_scope(seeded) as s:
        rid = service.file_request(
            s, applicant="alice", **request_fields(holders=["ndr"], variables=NDR_VARS)
        )
        service.submit_request(s, request_id=rid, actor="alice")
        service.decide(
            s,
            request_id=rid,
            holder_id="ndr",
            reviewer="s-ndr-1",
            decision="reject",
            justification="The variables are not needed for the purpose.",
        )
        assert service.get_request(s, request_id=rid).decisions[0].checklist is None


def test_overlapping_permits_share_holders_or_variables(seeded):
    first = _approved(seeded, holders=["ndr"], variables=["register_visit.hba1c_mmol_mol"])
    other_holder = _approved(
        seeded, holders=["region_skane"], variables=["observation.value"], cohort_criteria={}
    )
    with session_scope(seeded) as s:
        bobs = service.file_request(
            s, applicant="bob", **request_fields(holders=["ndr"], variables=NDR_VARS, members=[])
        )
        service.submit_request(s, request_id=bobs, actor="bob")
        new = service.file_request(
            s,
            applicant="alice",
            **request_fields(
                holders=["ndr", "region_uppsala"],
                variables=["register_visit.birth_year", "condition.code"],
            ),
        )
        service.submit_request(s, request_id=new, actor="alice")
        found = service.overlapping_permits(s, request_id=new)
    assert [o.request_id for o in found] == [first]  # skane shares nothing; bob's is not alice's
    assert found[0].shared_holders == ("ndr",) and found[0].shared_variables == ()
    assert found[0].status == "approved"
    # an expired or revoked permit is no longer in force: not an overlap
    with session_scope(seeded) as s:
        later = datetime.now(UTC) + timedelta(days=400)
        assert service.overlapping_permits(s, request_id=new, at=later) == []
        service.revoke_permit(
            s, request_id=first, actor="s-ndr-1", justification="Ethics approval withdrawn."
        )
    with session_scope(seeded) as s:
        assert service.overlapping_permits(s, request_id=new) == []
        assert other_holder not in [
            o.request_id for o in service.overlapping_permits(s, request_id=other_holder)
        ]
        with pytest.raises(NotFound):
            service.overlapping_permits(s, request_id=9999)


def test_comment_thread_participants_and_audit(seeded, hdp_home):
    with session_scope(seeded) as s:
        rid = service.file_request(
            s, applicant="alice", **request_fields(holders=["ndr"], variables=NDR_VARS)
        )
    # a draft is not the holders' business yet
    with session_scope(seeded) as s, pytest.raises(NotFound):
        service.post_comment(s, request_id=rid, author="s-ndr-1", body="Early question")
    with session_scope(seeded) as s:
        service.submit_request(s, request_id=rid, actor="alice")
    with session_scope(seeded) as s:
        service.post_comment(s, request_id=rid, author="s-ndr-1", body="Why county?\r\nPlease explain.")
        service.post_comment(s, request_id=rid, author="bob", body="For regional comparison.")
        service.post_comment(s, request_id=rid, author="alice", body="<b>thanks</b>")
    for outsider in ("carol", "s-upp-1", "nobody"):
        with session_scope(seeded) as s, pytest.raises(NotFound):
            service.post_comment(s, request_id=rid, author=outsider, body="hello there")
        with session_scope(seeded) as s:
            assert not service.may_take_part(s, request_id=rid, user_name=outsider)
            with pytest.raises(NotFound):
                service.list_comments(s, request_id=rid, reader=outsider)
    for bad in ("   ", "x" * 4001, "hidden\u200bword"):
        with session_scope(seeded) as s, pytest.raises(InvalidRequest):
            service.post_comment(s, request_id=rid, author="alice", body=bad)
    with session_scope(seeded) as s:
        thread = service.list_comments(s, request_id=rid, reader="s-ndr-1")
        assert [(c.author, c.body) for c in thread] == [
            ("s-ndr-1", "Why county?\nPlease explain."),
            ("bob", "For regional comparison."),
            ("alice", "<b>thanks</b>"),  # stored as typed; pages escape it
        ]
        events = [e for e in service.request_history(s, request_id=rid) if e["action"] == "comment"]
        assert [e["actor"] for e in events] == ["s-ndr-1", "bob", "alice"]
        assert events[0]["detail"] == {
            "comment_id": thread[0].id,
            "chars": len("Why county?\nPlease explain."),
        }
    audit = [json.loads(line) for line in (hdp_home.audit_dir / "audit.jsonl").read_text().splitlines()]
    posted = [e for e in audit if e.get("event") == "governance.request.comment"]
    assert len(posted) == 3 and all("body" not in e and "Why county" not in json.dumps(e) for e in posted)
