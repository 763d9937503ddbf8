"""The query ledger in the governance store (SQLite and Postgres): budgets set by stewards,
admission of distinct queries, idempotent records, and the operators' follow-up flags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from govtest_helpers import request_fields

from governance import ledger, service
from governance.errors import InvalidRequest, PermissionDenied
from governance.ledger import LedgerEntry, Term
from governance.store import session_scope

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
J = "Meets the purpose; variables are proportionate."


@pytest.fixture
def permit_id(seeded):
    url = seeded
    with session_scope(url) as s:
        rid = service.file_request(s, applicant="alice", now=T0, **request_fields())
        service.submit_request(s, request_id=rid, actor="alice", now=T0)
    for holder, steward in (("ndr", "s-ndr-1"), ("region_uppsala", "s-upp-1")):
        with session_scope(url) as s:
            service.decide(
                s,
                request_id=rid,
                holder_id=holder,
                reviewer=steward,
                decision="approve",
                justification=J,
                now=T0,
            )
    with session_scope(url) as s:
        return service.record_release(
            s, request_id=rid, release_id="rel_ledger", manifest_sha256="c" * 64, now=T0
        ).id


def entry(fp: str, *, shape="shape-a", terms=(), negates=None, result="r" * 64) -> LedgerEntry:
    return LedgerEntry(
        fingerprint=fp.ljust(64, "0"),
        shape=shape,
        terms=tuple(terms),
        negates=negates,
        measures=("rows",),
        result_sha256=result,
        cells_published=2,
        cells_withheld=1,
        cells=(("F", 120), ("M", 110)),
    )


def test_budget_admits_distinct_queries_and_repeats_are_free(seeded, permit_id):
    url = seeded
    with session_scope(url) as s:
        ledger.set_query_budget(
            s,
            permit_id=permit_id,
            budget=2,
            actor="s-ndr-1",
            justification="A small table plan: two tables only.",
        )

    def ask(fp, result="r" * 64):
        with session_scope(url) as s:
            return ledger.record_query(
                s, permit_id=permit_id, entry=entry(fp, result=result), asked_by="alice", at=T0
            )

    assert ask("a") == ledger.Admission(True, 1, 2, new=True)
    assert ask("b").admitted
    refused = ask("c")
    assert not refused.admitted and refused.used == 2 and refused.budget == 2
    assert ask("a").admitted and not ask("a").new  # a repeat gives the same answer: free
    assert ask("a", result="s" * 64).admitted  # the same query after a consent change: recorded, still free
    with session_scope(url) as s:
        rows = ledger.entries(s, permit_id=permit_id)
    assert [(r.entry.fingerprint[0], r.entry.result_sha256[0]) for r in rows] == [
        ("a", "r"),
        ("b", "r"),
        ("a", "s"),
    ]
    assert rows[0].entry.cells == (("F", 120), ("M", 110))


def test_only_a_steward_of_the_permits_holders_sets_the_budget(seeded, permit_id):
    url = seeded
    for actor in ("alice", "s-ska-1", "nobody"):
        with pytest.raises(PermissionDenied), session_scope(url) as s:
            ledger.set_query_budget(
                s, permit_id=permit_id, budget=10, actor=actor, justification="Because I say so."
            )
    with pytest.raises(InvalidRequest), session_scope(url) as s:
        ledger.set_query_budget(s, permit_id=permit_id, budget=-1, actor="s-upp-1", justification="short")
    with session_scope(url) as s:
        assert (
            ledger.set_query_budget(
                s,
                permit_id=permit_id,
                budget=50,
                actor="admin",
                justification="Raised after the review of the table plan.",
            )
            == 50
        )
        assert ledger.query_budget(s, permit_id=permit_id) == 50


def test_follow_up_flags_complementary_differencing_and_near_duplicates(seeded, permit_id):
    url = seeded
    young = Term("form:birth_year < ?", "birth_year < 1950")
    female = Term("form:sex = ?", "sex = 'F'")
    younger = Term("form:birth_year < ?", "birth_year < 1951")
    queries = [
        entry("total"),
        entry("filtered", terms=[young, female]),
        entry("opposite", terms=[Term("form:NOT", "NOT (young AND female)")], negates=(young, female)),
        entry("one-more", terms=[young]),
        entry("slice", terms=[younger]),
        entry("other-table", shape="shape-b", terms=[young]),
    ]
    for e in queries:
        with session_scope(url) as s:
            assert ledger.record_query(s, permit_id=permit_id, entry=e, asked_by="alice", at=T0).admitted
    with session_scope(url) as s:
        report = ledger.follow_up(s)
    kinds = {(p["kind"], tuple(p["ledger_ids"])) for p in report["flagged_pairs"]}
    assert ("complementary", (2, 3)) in kinds  # filtered and its opposite
    assert ("differencing", (1, 4)) in kinds  # total and total-with-one-condition
    assert ("differencing", (2, 4)) in kinds  # one condition more
    assert ("near_duplicate", (4, 5)) in kinds  # the same condition, the literal moved by one
    assert not any(6 in ids for _, ids in kinds)  # another table is not compared
    (p,) = report["permits"]
    assert p["distinct_queries"] == 6 and p["budget"] == ledger.DEFAULT_BUDGET and p["askers"] == ["alice"]
    assert p["flags"]["complementary"] == 1
