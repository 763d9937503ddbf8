"""The airlock's pure state machine (governance.outputs): rules and laws.

The law, checked with Hypothesis over any sequence of checks, returns, resubmissions and
withdrawals by anyone (requester, project member, strangers, stewards of other holders,
checkers): an output is downloadable only by its requester, and only when, in its current
round, at least two distinct eligible checkers (never the requester, never a permit user)
approved and nobody objected.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance import outputs as out
from governance.errors import GovernanceError, InvalidRequest, InvalidTransition, PermissionDenied

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
C = "Checked: every cell above 10 persons, no pseudonyms."
USERS = {
    "rita": out.Party("rita", frozenset({"researcher"})),  # the requester
    "max": out.Party("max", frozenset({"researcher"})),  # project member on the permit
    "oc1": out.Party("oc1", frozenset({"output_checker"})),
    "oc2": out.Party("oc2", frozenset({"output_checker"})),
    "oc3": out.Party("oc3", frozenset({"output_checker"})),
    "s-ndr": out.Party("s-ndr", frozenset({"steward"}), frozenset({"ndr"})),  # holder in scope
    "s-upp": out.Party("s-upp", frozenset({"steward"}), frozenset({"region_uppsala"})),  # holder not in scope
    "oc-max": out.Party("max", frozenset({"researcher", "output_checker"})),  # member who is also a checker
    "dual": out.Party("rita", frozenset({"researcher", "output_checker"})),  # requester who is also a checker
    "eve": out.Party("eve", frozenset({"researcher"})),
}
PERMIT_USERS = frozenset({"rita", "max"})
PERMIT_HOLDERS = frozenset({"ndr"})
ELIGIBLE = {"oc1", "oc2", "oc3", "s-ndr"}


def new_output(**over) -> out.OutputRequest:
    fields = dict(
        id=1,
        permit_id=7,
        release_id="rel_x",
        requester="rita",
        status="submitted",
        round=1,
        title="Mean HbA1c by sex",
        context="Two cells, each above 40 persons; no pseudonyms.",
        query_masked="SELECT sex, avg(hba1c_mmol_mol) FROM register_visit GROUP BY sex",
        query_sha256="b" * 64,
        format="csv",
        file_name="f.csv",
        sha256="a" * 64,
        size_bytes=40,
        rows=2,
        columns=("sex", "mean"),
        row_level=False,
        row_level_reasons=(),
        exception_id=None,
        consent_sha256="0" * 64,
        created_at=T0,
        updated_at=T0,
    )
    fields.update(over)
    return out.OutputRequest(**fields)


def decide(o, who, decision="approve", at=T0):
    return out.decide(
        o, USERS[who], decision, C, permit_users=PERMIT_USERS, permit_holders=PERMIT_HOLDERS, at=at
    )


def test_two_distinct_checkers_approve_then_only_the_requester_downloads():
    o = new_output()
    assert out.download_refusal(o, "rita").code == "output.not_approved"
    o = decide(o, "oc1")
    assert o.status == "under_review" and not o.downloadable
    assert out.download_refusal(o, "rita").code == "output.not_approved"
    o = decide(o, "s-ndr")  # a steward of a holder in scope is a checker too
    assert o.status == "approved" and o.approvers == {"oc1", "s-ndr"} and o.downloadable
    assert out.download_refusal(o, "rita") is None
    for other in ("max", "oc1", "s-ndr", "eve"):
        assert out.download_refusal(o, other).code == "output.not_requester"
    with pytest.raises(InvalidTransition):
        decide(o, "oc2")  # approved: no more checks


@pytest.mark.parametrize(
    ("who", "code"),
    [
        ("dual", "output.self_check"),
        ("oc-max", "output.project_member"),
        ("max", "output.project_member"),
        ("eve", "output.not_checker"),
        ("s-upp", "output.not_checker"),
    ],
)
def test_who_may_not_check(who, code):
    with pytest.raises(PermissionDenied) as err:
        decide(new_output(), who)
    assert err.value.code == code


def test_same_checker_cannot_count_twice():
    o = decide(new_output(), "oc1")
    with pytest.raises(GovernanceError) as err:
        decide(o, "oc1")
    assert err.value.code == "output.duplicate_check"


def test_one_objection_decides_and_resubmission_starts_a_new_round():
    o = decide(decide(new_output(), "oc1"), "oc2", "return")
    assert o.status == "returned" and not o.downloadable
    with pytest.raises(PermissionDenied):
        out.resubmit(o, "max", "New context: cells are now banded by decade.", at=T0)
    o = out.resubmit(
        o,
        "rita",
        "New context: cells are now banded by decade.",
        at=T0 + timedelta(hours=1),
        sha256="c" * 64,
        file_name="g.csv",
    )
    assert (o.status, o.round, o.sha256, o.approvers) == ("submitted", 2, "c" * 64, frozenset())
    o = decide(o, "oc1")  # oc1 may check again in the new round; the old approval does not count
    assert o.status == "under_review"
    o = decide(o, "oc3", "reject")
    assert o.status == "rejected"
    for action in (
        lambda: decide(o, "oc2"),
        lambda: out.withdraw(o, "rita", at=T0),
        lambda: out.resubmit(o, "rita", "x" * 30, at=T0),
    ):
        with pytest.raises(InvalidTransition):
            action()


def test_withdraw_only_by_requester_and_only_before_a_final_state():
    o = decide(new_output(), "oc1")
    with pytest.raises(PermissionDenied):
        out.withdraw(o, "oc1", at=T0)
    w = out.withdraw(o, "rita", at=T0)
    assert w.status == "withdrawn" and not w.downloadable
    approved = decide(o, "oc2")
    with pytest.raises(InvalidTransition):
        out.withdraw(approved, "rita", at=T0)


@pytest.mark.parametrize(
    "bad", ["", "too short", "ok\u202eevil comment text", "nul \x00 in the comment text"]
)
def test_comments_are_required_and_clean(bad):
    with pytest.raises(InvalidRequest):
        out.decide(
            new_output(),
            USERS["oc1"],
            "approve",
            bad,
            permit_users=PERMIT_USERS,
            permit_holders=PERMIT_HOLDERS,
            at=T0,
        )


def test_unknown_decision_refused():
    with pytest.raises(InvalidRequest):
        decide(new_output(), "oc1", "maybe")


def test_exception_rules():
    s = USERS["s-ndr"]
    assert (
        out.exception_refusal(s, holder_id="ndr", permit_users=PERMIT_USERS, permit_holders=PERMIT_HOLDERS)
        is None
    )
    assert (
        out.exception_refusal(
            USERS["s-upp"],
            holder_id="region_uppsala",
            permit_users=PERMIT_USERS,
            permit_holders=PERMIT_HOLDERS,
        ).code
        == "exception.holder_not_in_scope"
    )
    assert (
        out.exception_refusal(
            USERS["oc1"], holder_id="ndr", permit_users=PERMIT_USERS, permit_holders=PERMIT_HOLDERS
        ).code
        == "exception.not_steward"
    )
    member_steward = out.Party("max", frozenset({"steward", "researcher"}), frozenset({"ndr"}))
    assert (
        out.exception_refusal(
            member_steward, holder_id="ndr", permit_users=PERMIT_USERS, permit_holders=PERMIT_HOLDERS
        ).code
        == "exception.project_member"
    )
    e = out.OutputException(1, 7, "s-ndr", "ndr", "j" * 40, recorded_at=T0)
    assert e.in_force(T0) and not e.in_force(T0 - timedelta(seconds=1))
    assert not replace(e, withdrawn_at=T0 + timedelta(days=1)).in_force(T0 + timedelta(days=1))


# --------------------------------------------------------------------------- the law, for any sequence

ACTORS = sorted(USERS)
STEP = st.one_of(
    st.tuples(
        st.just("check"), st.sampled_from(ACTORS), st.sampled_from(["approve", "approve", "reject", "return"])
    ),
    st.tuples(st.just("resubmit"), st.sampled_from(["rita", "max", "oc1"]), st.just("")),
    st.tuples(st.just("withdraw"), st.sampled_from(["rita", "oc1"]), st.just("")),
)


def _law_holds(o: out.OutputRequest) -> None:
    current = [c for c in o.checks if c.round == o.round]
    eligible_approvers = {c.checker for c in current if c.decision == "approve"}
    objection = any(c.decision != "approve" for c in current)
    for user in {"rita", "max", "oc1", "oc2", "s-ndr", "eve"}:
        if out.download_refusal(o, user) is None:
            assert user == o.requester
            assert o.status == "approved" and not objection
            assert len(eligible_approvers) >= out.APPROVALS_REQUIRED
            assert not eligible_approvers & PERMIT_USERS
    # Every recorded check came from an eligible checker, each at most once per round.
    per_round = [(c.round, c.checker) for c in o.checks]
    assert len(per_round) == len(set(per_round))
    assert {c.checker for c in o.checks} <= {USERS[u].name for u in ELIGIBLE}
    # The status is exactly what the current round's checks say (or a requester's action).
    if o.status in ("submitted", "under_review", "approved", "returned", "rejected"):
        expected = out.round_outcome(current, requester=o.requester)
        assert o.status == expected


@settings(max_examples=400, deadline=None)
@given(st.lists(STEP, max_size=14))
def test_no_download_without_two_distinct_eligible_approvals(steps):
    o = new_output()
    at = T0
    for kind, who, decision in steps:
        at += timedelta(minutes=1)
        before = o
        try:
            if kind == "check":
                o = decide(o, who, decision, at=at)
            elif kind == "resubmit":
                o = out.resubmit(
                    o, who, "Answered: cells banded by decade, all above 10.", at=at, sha256="d" * 64
                )
            else:
                o = out.withdraw(o, who, at=at)
        except GovernanceError:
            assert o is before  # a refused step changes nothing
        _law_holds(o)
    # Once approved, the output stays downloadable by its requester; final states stay final.
    if o.status in ("rejected", "withdrawn"):
        assert not o.downloadable
