"""Concurrent stewards on real connections: no double release, no lost decision.

Each thread has its own session and connection. A short sleep inside the critical section (after
the decisions are read, before they are written) makes the race window wide: without the row lock
(``SELECT ... FOR UPDATE`` on Postgres, ``BEGIN IMMEDIATE`` on SQLite) these tests fail.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from govtest_helpers import request_fields
from sqlalchemy import func, select

from governance import releases, service
from governance import requests as requests_module
from governance.errors import AlreadyReleased, ConcurrencyConflict, DuplicateDecision
from governance.models import DecisionRow, PermitRow
from governance.store import session_scope

J = "Approved: proportionate and lawful."


def _run_together(*calls):
    """Start every call at the same moment in its own thread; return results or exceptions."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def worker(i, fn):
        barrier.wait()
        try:
            results[i] = fn()
        except Exception as exc:  # collected and asserted on by the test
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


@pytest.fixture
def slow_critical_section(monkeypatch):
    real = requests_module.round_reviews

    def slow(session, row):
        out = real(session, row)
        time.sleep(0.05)
        return out

    monkeypatch.setattr(requests_module, "round_reviews", slow)


def _decide(url, rid, holder, reviewer):
    def call():
        with session_scope(url) as s:
            return service.decide(
                s, request_id=rid, holder_id=holder, reviewer=reviewer, decision="approve", justification=J
            )

    return call


def _submitted(url, **over) -> int:
    with session_scope(url) as s:
        rid = service.file_request(s, applicant="alice", **request_fields(**over))
        service.submit_request(s, request_id=rid, actor="alice")
    return rid


def _counts(url, rid):
    with session_scope(url) as s:
        decisions = s.execute(
            select(func.count()).select_from(DecisionRow).where(DecisionRow.request_id == rid)
        ).scalar_one()
        permits = s.execute(
            select(func.count()).select_from(PermitRow).where(PermitRow.request_id == rid)
        ).scalar_one()
        status = service.get_request(s, request_id=rid).status
    return decisions, permits, status


@pytest.mark.parametrize("round_", range(5))
def test_two_holders_approve_at_once(seeded, slow_critical_section, round_):
    rid = _submitted(seeded)
    results = _run_together(
        _decide(seeded, rid, "ndr", "s-ndr-1"), _decide(seeded, rid, "region_uppsala", "s-upp-1")
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(results) == ["approved", "under_review"]
    assert _counts(seeded, rid) == (2, 1, "approved")


def test_two_reviewers_of_one_holder_at_once(seeded, slow_critical_section):
    rid = _submitted(seeded, holders=["region_orebro"], variables=["observation.value"])
    results = _run_together(
        _decide(seeded, rid, "region_orebro", "s-ore-1"), _decide(seeded, rid, "region_orebro", "s-ore-2")
    )
    assert sorted(results) == ["approved", "under_review"], results
    assert _counts(seeded, rid) == (2, 1, "approved")


def test_double_click_counts_once(seeded, slow_critical_section):
    rid = _submitted(seeded, holders=["region_orebro"], variables=["observation.value"])
    results = _run_together(
        _decide(seeded, rid, "region_orebro", "s-ore-1"), _decide(seeded, rid, "region_orebro", "s-ore-1")
    )
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 1 and isinstance(errors[0], DuplicateDecision | ConcurrencyConflict), results
    assert _counts(seeded, rid) == (1, 0, "under_review")


def test_concurrent_release_recorded_once(seeded, monkeypatch):
    rid = _submitted(seeded)
    for holder, reviewer in (("ndr", "s-ndr-1"), ("region_uppsala", "s-upp-1")):
        _decide(seeded, rid, holder, reviewer)()
    real = releases.permit_row

    def slow(session, request_id):
        out = real(session, request_id)
        time.sleep(0.05)
        return out

    monkeypatch.setattr(releases, "permit_row", slow)

    def release(n):
        def call():
            with session_scope(seeded) as s:
                return service.record_release(
                    s, request_id=rid, release_id=f"rel-{n}", manifest_sha256="e" * 64
                )

        return call

    results = _run_together(release(1), release(2), release(3))
    ok = [r for r in results if not isinstance(r, Exception)]
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(ok) == 1 and len(errors) == 2, results
    assert all(isinstance(e, AlreadyReleased | ConcurrencyConflict) for e in errors), errors
    with session_scope(seeded) as s:
        permit = service.permit_for_request(s, request_id=rid)
        assert permit.release_id == ok[0].release_id
        assert service.get_request(s, request_id=rid).status == "released"
        assert len(service.releases_for_user(s, user_name="alice", at=datetime.now(UTC))) == 1
