"""Property-based sequences of workflow actions (Hypothesis RuleBasedStateMachine).

Any interleaving of filing, submitting, deciding (by anyone, for any holder), amending, releasing,
revoking, expiring, consent changes and clock advances must keep these laws:

* no permit (hence no release) unless every holder in scope approved in the current round with its
  required number of distinct reviewers, all stewards of that holder;
* nobody decides on a request they applied for or are a member of;
* an expired or revoked permit gives no access, at once (no sweep needed);
* at most one permit per request and one per release;
* a withdrawn consent key is in ``excluded_consent_keys`` for every purpose at every later time
  (until the person records a new choice).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from govtest_helpers import RESEARCHERS, STEWARDS, fresh_store, request_fields, seed_users
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import select

from governance import service
from governance.errors import GovernanceError
from governance.models import DecisionRow, PermitRow, RequestRow
from governance.purposes import PURPOSES
from governance.store import session_scope
from hdp.settings import holder as holder_settings

T0 = datetime(2025, 1, 1, tzinfo=UTC)
HOLDERS = ("ndr", "region_uppsala", "region_orebro")
VARS = {
    "ndr": "register_visit.bmi",
    "region_uppsala": "observation.value",
    "region_orebro": "observation.value",
}
ALL_USERS = (*RESEARCHERS, *STEWARDS, "dual", "admin")
APPLICANTS = (*RESEARCHERS, "dual")
KEYS = tuple(f"{c}" * 64 for c in "abcd")
J = "Justified for the stated purpose."


def make_machine(new_url):
    class GovernanceMachine(RuleBasedStateMachine):
        requests = Bundle("requests")

        def __init__(self) -> None:
            super().__init__()
            self.url = new_url()
            seed_users(self.url)
            self.now = T0
            self.n_release = 0
            self.withdrawn: dict[str, datetime] = {}

        def _try(self, fn, **kw):
            try:
                with session_scope(self.url) as s:
                    return fn(s, now=self.now, **kw) if "now" in fn.__code__.co_varnames else fn(s, **kw)
            except GovernanceError:
                return None

        @rule(
            target=requests,
            applicant=st.sampled_from(APPLICANTS),
            holders=st.sets(st.sampled_from(HOLDERS), min_size=1, max_size=3),
            members=st.sets(st.sampled_from(APPLICANTS), max_size=2),
            days=st.integers(5, 120),
        )
        def file(self, applicant, holders, members, days):
            rid = self._try(
                service.file_request,
                applicant=applicant,
                **request_fields(
                    holders=sorted(holders),
                    variables=sorted({VARS[h] for h in holders}),
                    members=sorted(members),
                    access_days=days,
                ),
            )
            return rid if rid is not None else 0

        def _applicant(self, rid):
            with session_scope(self.url) as s:
                row = s.get(RequestRow, rid) if rid else None
                return row.applicant if row else "alice"

        @rule(
            target=requests,
            applicant=st.sampled_from(APPLICANTS),
            holders=st.sets(st.sampled_from(HOLDERS), min_size=1, max_size=3),
            release=st.booleans(),
        )
        def fast_track(self, applicant, holders, release):
            """File, submit and have every steward approve (optionally release) in one step, to reach
            the permit states often; later steps then revoke, expire, amend or release again."""
            rid = self.file(applicant, holders, set(), 30)
            self._try(service.submit_request, request_id=rid, actor=applicant)
            self.approve_everything(rid)
            if release:
                self.release(rid)
            return rid

        @rule(rid=requests, own=st.booleans(), other=st.sampled_from(APPLICANTS))
        def submit(self, rid, own, other):
            self._try(service.submit_request, request_id=rid, actor=self._applicant(rid) if own else other)

        @rule(
            rid=requests,
            holder=st.sampled_from(HOLDERS),
            pick=st.integers(0, 14),
            decision=st.sampled_from(["approve", "approve", "approve", "approve", "reject", "return"]),
        )
        def decide(self, rid, holder, pick, decision):
            # Mostly a steward of that holder (so requests do get approved), sometimes anyone at all.
            own = [u for u, hs in STEWARDS.items() if holder in hs] + (["dual"] if holder == "ndr" else [])
            reviewer = own[pick % len(own)] if pick < 10 else ALL_USERS[pick % len(ALL_USERS)]
            self._try(
                service.decide,
                request_id=rid,
                holder_id=holder,
                reviewer=reviewer,
                decision=decision,
                justification=J,
            )

        @rule(rid=requests)
        def approve_everything(self, rid):
            for holder in HOLDERS:
                # "dual" (researcher + ndr steward) tries first: it must be refused on its own requests.
                for reviewer in (["dual"] if holder == "ndr" else []) + [
                    u for u, hs in STEWARDS.items() if holder in hs
                ]:
                    self._try(
                        service.decide,
                        request_id=rid,
                        holder_id=holder,
                        reviewer=reviewer,
                        decision="approve",
                        justification=J,
                    )

        @rule(rid=requests, new_member=st.sampled_from(RESEARCHERS), days=st.integers(5, 200))
        def amend(self, rid, new_member, days):
            with session_scope(self.url) as s:
                row = s.get(RequestRow, rid) if rid else None
                if row is None:
                    return
                applicant, members = row.applicant, set(row.members)
            self._try(
                service.amend_request,
                request_id=rid,
                actor=applicant,
                changes={"members": sorted(members | {new_member}), "access_days": days},
                reason="Team change and extension.",
            )

        @rule(rid=requests)
        def edit_resubmit(self, rid):
            applicant = self._applicant(rid)
            self._try(service.update_draft, request_id=rid, actor=applicant, project="Edited project title")
            self._try(service.submit_request, request_id=rid, actor=applicant)

        @rule(rid=requests)
        def release(self, rid):
            self.n_release += 1
            self._try(
                service.record_release,
                request_id=rid,
                release_id=f"rel-{self.n_release}",
                manifest_sha256="f" * 64,
            )

        @rule(rid=requests, actor=st.sampled_from(["admin", "s-ndr-1", "s-upp-1", "alice"]))
        def revoke(self, rid, actor):
            self._try(
                service.revoke_permit, request_id=rid, actor=actor, justification="Terms of use breached."
            )

        @rule(days=st.integers(1, 90))
        def tick(self, days):
            self.now += timedelta(days=days)

        @rule()
        def sweep(self):
            with session_scope(self.url) as s:
                service.expire_permits(s, at=self.now)

        @rule(
            key=st.sampled_from(KEYS),
            purpose=st.sampled_from(["secondary_use", *PURPOSES]),
            choice=st.sampled_from(["opt_in", "opt_out"]),
        )
        def consent(self, key, purpose, choice):
            with session_scope(self.url) as s:
                service.record_consent(
                    s,
                    consent_key=key,
                    scope=purpose,
                    choice=choice,
                    source_ref="form",
                    actor="s-ndr-1",
                    valid_from=self.now,
                    now=self.now,
                )
            if choice == "opt_in":
                self.withdrawn.pop(key, None)  # a new choice after the withdrawal

        @rule(key=st.sampled_from(KEYS))
        def withdraw(self, key):
            with session_scope(self.url) as s:
                service.withdraw_consent(
                    s, consent_key=key, source_ref="withdrawal", actor="s-ndr-1", at=self.now
                )
            self.withdrawn.setdefault(key, self.now)

        # ----------------------------------------------------------------- laws

        @invariant()
        def permits_need_every_holder(self):
            with session_scope(self.url) as s:
                permits = s.execute(select(PermitRow)).scalars().all()
                assert len({p.request_id for p in permits}) == len(permits)
                rel = [p.release_id for p in permits if p.release_id]
                assert len(set(rel)) == len(rel)
                for p in permits:
                    req = s.get(RequestRow, p.request_id)
                    assert req.parent_id is None
                    assert req.status in {"approved", "released", "expired", "revoked"}
                    decisions = (
                        s.execute(
                            select(DecisionRow).where(
                                DecisionRow.request_id == req.id, DecisionRow.review_round == req.review_round
                            )
                        )
                        .scalars()
                        .all()
                    )
                    for h in req.holders:
                        approvers = {
                            d.reviewer for d in decisions if d.holder_id == h and d.decision == "approve"
                        }
                        assert len(approvers) >= holder_settings(h).reviewers_required, (req.id, h)
                        assert all(h in STEWARDS.get(r, ("ndr",) if r == "dual" else ()) for r in approvers)
                    assert not any(d.decision != "approve" for d in decisions)

        @invariant()
        def no_self_decision(self):
            with session_scope(self.url) as s:
                for d, req in s.execute(
                    select(DecisionRow, RequestRow).join(RequestRow, RequestRow.id == DecisionRow.request_id)
                ):
                    if req.parent_id is None and d.review_round == req.review_round:
                        assert d.reviewer != req.applicant and d.reviewer not in req.members
                    assert d.reviewer != req.applicant

        @invariant()
        def ended_permits_give_no_access(self):
            with session_scope(self.url) as s:
                for p in s.execute(select(PermitRow)).scalars().all():
                    if p.release_id is None:
                        continue
                    for user in RESEARCHERS + ("dual",):
                        got = service.active_permit(s, user_name=user, release_id=p.release_id, at=self.now)
                        should = user in p.users and p.revoked_at is None and self.now < p.expires_at
                        assert (got is not None) == should, (p.id, user)

        @invariant()
        def withdrawn_stay_excluded(self):
            with session_scope(self.url) as s:
                for key, since in self.withdrawn.items():
                    for later in (self.now, self.now + timedelta(days=365)):
                        assert later >= since
                        for purpose in ("scientific_research", "education"):
                            assert key in service.excluded_consent_keys(s, purpose=purpose, at=later)

    return GovernanceMachine


@pytest.mark.slow
def test_workflow_laws(backend, request, tmp_path, hdp_home):
    examples = 20 if backend == "sqlite" else 10
    machine = make_machine(lambda: fresh_store(backend, request, tmp_path))
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
