"""The pure state machine: transitions and how holders' decisions combine."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from governance.errors import InvalidTransition
from governance.workflow import (
    FINAL,
    TRANSITIONS,
    Action,
    Decision,
    HolderVerdict,
    ReviewDecision,
    Status,
    holder_outcome,
    next_status,
    request_outcome,
)


def test_final_states_allow_nothing():
    for status in FINAL:
        for action in Action:
            with pytest.raises(InvalidTransition, match="final state"):
                next_status(status, action)


def test_release_only_from_approved():
    assert {s for (s, a) in TRANSITIONS if a is Action.RELEASE} == {Status.APPROVED}
    # The only way into "approved" is the last holder's approval of a request in review
    # (an amendment of an approved request leaves the parent as it is).
    into = {(s, a) for (s, a), t in TRANSITIONS.items() if t is Status.APPROVED and s is not Status.APPROVED}
    assert into == {(Status.SUBMITTED, Action.APPROVE), (Status.UNDER_REVIEW, Action.APPROVE)}
    with pytest.raises(InvalidTransition) as exc:
        next_status("draft", "release")
    assert exc.value.code == "transition.draft.release" and "allowed: edit, submit" in str(exc.value)


_decisions = st.lists(
    st.tuples(st.sampled_from(["r1", "r2", "r3"]), st.sampled_from(list(Decision))), max_size=6
)


@given(_decisions, st.integers(1, 3))
def test_holder_outcome_law(decisions, required):
    verdict = holder_outcome([ReviewDecision(r, d) for r, d in decisions], required)
    kinds = [d for _, d in decisions]
    approvers = {r for r, d in decisions if d is Decision.APPROVE}
    if verdict is HolderVerdict.APPROVED:
        assert len(approvers) >= required and set(kinds) == {Decision.APPROVE}
    if Decision.REJECT in kinds or Decision.RETURN in kinds:
        assert verdict in (HolderVerdict.REJECTED, HolderVerdict.RETURNED)


@given(
    st.dictionaries(st.sampled_from(["ndr", "a", "b", "c"]), st.sampled_from(list(HolderVerdict)), min_size=1)
)
def test_request_approved_only_when_every_holder_approved(verdicts):
    action = request_outcome(verdicts)
    assert (action is Action.APPROVE) == all(v is HolderVerdict.APPROVED for v in verdicts.values())
    if HolderVerdict.REJECTED in verdicts.values():
        assert action is Action.REJECT


def test_no_holders_is_an_error():
    with pytest.raises(ValueError):
        request_outcome({})
