"""The query ledger: every distinct aggregate query a permit asks, the cells it published, and
the permit's query budget.

Cell-key perturbation (``privacy.cellkey``) makes each differencing attempt noisy; the ledger
makes the attempts visible and bounded. The access layer records each distinct aggregate query
of a permit before its result leaves; a permit's budget (set by a steward of its holders,
``set_query_budget``) caps how many distinct queries it may ask; and the operator's follow-up
(``follow_up``) flags pairs of queries that look like an attack on one cell:

* **complementary**: the same table shape (sources and group keys) with opposite filters
  (``P`` and ``NOT P``): the total minus one gives the other;
* **differencing**: the same shape, one filter is the other plus one more condition;
* **near-duplicate**: the same shape, filters that differ in one condition's literal only
  (``hba1c < 50`` and ``hba1c < 51``: slicing one value off at a time).

Nothing here can carry a literal the researcher wrote (it might be an identifier): the access
layer stores keyed digests of the fingerprint, the shape and each filter term, so equal terms
compare equal and nothing can be read back. Repeating a query costs no budget: it gives the
same answer.

Concurrency: two workers admitting two new queries of one permit at the same moment may both
pass the last unit of budget (the budget can be exceeded by at most the number of workers
minus one); a repeated query and its ledger row are idempotent (unique per permit, fingerprint
and result).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from governance import auditing
from governance.errors import InvalidRequest, NotFound, PermissionDenied
from governance.models import PermitRow, QueryBudgetRow, QueryLedgerRow, UserRow

#: Distinct aggregate queries per permit when no steward has set a budget. A study's tables
#: are tens to a few hundred queries; a scripted slicing attack is thousands.
DEFAULT_BUDGET = 500
MAX_BUDGET = 100_000


@dataclass(frozen=True)
class Term:
    """One top-level AND-part of a query's filter, as two keyed digests: of its form with the
    literals masked (``skeleton``) and of its full text (``value``)."""

    skeleton: str
    value: str


@dataclass(frozen=True)
class LedgerEntry:
    fingerprint: str  # keyed digest of the query's canonical text
    shape: str  # keyed digest of its sources and group keys
    terms: tuple[Term, ...]
    negates: tuple[Term, ...] | None  # the terms inside, when the whole filter is NOT (...)
    measures: tuple[str, ...]  # measure kinds (persons, rows, mean, ...): no literals
    result_sha256: str
    cells_published: int
    cells_withheld: int
    cells: tuple[tuple[Any, ...], ...] = ()  # the published rows (already disclosure-controlled)


@dataclass(frozen=True)
class Admission:
    admitted: bool
    used: int  # distinct queries recorded for the permit (this one included when admitted)
    budget: int
    new: bool  # the first time this permit asked this query


@dataclass(frozen=True)
class Recorded:
    id: int
    permit_id: int
    entry: LedgerEntry
    asked_by: str
    asked_at: datetime


@dataclass(frozen=True)
class Flag:
    kind: str  # complementary | differencing | near_duplicate
    permit_id: int
    first_id: int
    second_id: int
    asked_by: str
    asked_at: datetime


def _now(at: datetime | None) -> datetime:
    return at or datetime.now(UTC)


def admission(fingerprints: set[str] | frozenset[str], fingerprint: str, budget: int) -> Admission:
    """The budget rule, given the distinct queries the permit has asked: a query asked before
    is always admitted (it gives the same answer), a new one while budget is left."""
    seen = fingerprint in fingerprints
    if not seen and len(fingerprints) >= budget:
        return Admission(False, len(fingerprints), budget, new=True)
    return Admission(True, len(fingerprints) + (0 if seen else 1), budget, new=not seen)


def query_budget(session: Session, *, permit_id: int, default: int = DEFAULT_BUDGET) -> int:
    row = session.get(QueryBudgetRow, permit_id)
    return row.budget if row is not None else default


def set_query_budget(
    session: Session,
    *,
    permit_id: int,
    budget: int,
    actor: str,
    justification: str,
    at: datetime | None = None,
) -> int:
    """A steward of a holder in the permit (or an admin) sets its budget of distinct queries."""
    permit = session.get(PermitRow, permit_id)
    if permit is None:
        raise NotFound(f"permit {permit_id} does not exist", code="permit.not_found")
    user = session.execute(select(UserRow).where(UserRow.name == actor)).scalar_one_or_none()
    allowed = (
        user is not None
        and user.disabled_at is None
        and (
            "admin" in user.roles or ("steward" in user.roles and set(user.holder_ids) & set(permit.holders))
        )
    )
    if not allowed:
        raise PermissionDenied(
            f"{actor!r} is not a steward of a holder in permit {permit_id}", code="budget.not_steward"
        )
    problems = []
    if not isinstance(budget, int) or isinstance(budget, bool) or not 0 <= budget <= MAX_BUDGET:
        problems.append(("budget.value", f"the budget is a whole number of queries, 0..{MAX_BUDGET}"))
    if len((justification or "").strip()) < 10:
        problems.append(("budget.justification", "say why (at least 10 characters)"))
    if problems:
        raise InvalidRequest(problems)
    row = session.get(QueryBudgetRow, permit_id)
    previous = row.budget if row is not None else None
    if row is None:
        row = QueryBudgetRow(
            permit_id=permit_id,
            budget=budget,
            set_by=actor,
            justification=justification.strip(),
            set_at=_now(at),
        )
        session.add(row)
    else:
        row.budget, row.set_by, row.justification, row.set_at = budget, actor, justification.strip(), _now(at)
    auditing.queue(
        session,
        event="governance.query_budget_set",
        permit_id=permit_id,
        budget=budget,
        previous=previous,
        actor=actor,
    )
    return budget


def record_query(
    session: Session,
    *,
    permit_id: int,
    entry: LedgerEntry,
    asked_by: str,
    at: datetime | None = None,
    default_budget: int = DEFAULT_BUDGET,
) -> Admission:
    """Admit a query against the permit's budget and record it with the cells it published.

    A query this permit asked before is always admitted (it gives the same answer); a new one
    only while the permit has budget left. Nothing is recorded for a refused one.
    """
    budget = query_budget(session, permit_id=permit_id, default=default_budget)
    fingerprints = set(
        session.execute(
            select(QueryLedgerRow.fingerprint).where(QueryLedgerRow.permit_id == permit_id).distinct()
        ).scalars()
    )
    verdict = admission(fingerprints, entry.fingerprint, budget)
    if not verdict.admitted:
        return verdict
    exists = (
        session.execute(
            select(QueryLedgerRow.id).where(
                QueryLedgerRow.permit_id == permit_id,
                QueryLedgerRow.fingerprint == entry.fingerprint,
                QueryLedgerRow.result_sha256 == entry.result_sha256,
            )
        ).first()
        is not None
    )
    if not exists:
        try:
            with session.begin_nested():
                session.add(
                    QueryLedgerRow(
                        permit_id=permit_id,
                        fingerprint=entry.fingerprint,
                        shape=entry.shape,
                        terms=[[t.skeleton, t.value] for t in entry.terms],
                        negates=None
                        if entry.negates is None
                        else [[t.skeleton, t.value] for t in entry.negates],
                        measures=list(entry.measures),
                        result_sha256=entry.result_sha256,
                        cells_published=entry.cells_published,
                        cells_withheld=entry.cells_withheld,
                        cells=[list(c) for c in entry.cells],
                        asked_by=asked_by,
                        asked_at=_now(at),
                    )
                )
        except IntegrityError:
            pass  # another worker recorded the same query and result a moment ago
    return verdict


def entries(
    session: Session, *, permit_id: int | None = None, since: datetime | None = None
) -> list[Recorded]:
    q = select(QueryLedgerRow).order_by(QueryLedgerRow.id)
    if permit_id is not None:
        q = q.where(QueryLedgerRow.permit_id == permit_id)
    if since is not None:
        q = q.where(QueryLedgerRow.asked_at >= since)
    return [_recorded(r) for r in session.execute(q).scalars()]


def _recorded(r: QueryLedgerRow) -> Recorded:
    entry = LedgerEntry(
        fingerprint=r.fingerprint,
        shape=r.shape,
        terms=tuple(Term(*t) for t in r.terms),
        negates=None if r.negates is None else tuple(Term(*t) for t in r.negates),
        measures=tuple(r.measures),
        result_sha256=r.result_sha256,
        cells_published=r.cells_published,
        cells_withheld=r.cells_withheld,
        cells=tuple(tuple(c) for c in r.cells),
    )
    return Recorded(r.id, r.permit_id, entry, r.asked_by, r.asked_at)


def flag_relations(recorded: Sequence[Recorded]) -> list[Flag]:
    """Pairs of one permit's queries that together may single out a cell (module docstring).

    Pure: compares keyed digests only. Each pair is reported once, attributed to the later query.
    """
    by_shape: dict[tuple[int, str], list[Recorded]] = defaultdict(list)
    for r in recorded:
        by_shape[(r.permit_id, r.entry.shape)].append(r)
    flags: list[Flag] = []
    for group in by_shape.values():
        distinct = {r.entry.fingerprint: r for r in group}  # one per query, however often asked
        for a, b in itertools.combinations(sorted(distinct.values(), key=lambda r: r.id), 2):
            kind = _relation(a.entry, b.entry)
            if kind is not None:
                flags.append(Flag(kind, b.permit_id, a.id, b.id, b.asked_by, b.asked_at))
    return flags


def _relation(a: LedgerEntry, b: LedgerEntry) -> str | None:
    ta, tb = {t.value for t in a.terms}, {t.value for t in b.terms}
    for x, y in ((a, b), (b, a)):
        if y.negates is not None and {t.value for t in y.negates} == {t.value for t in x.terms} and x.terms:
            return "complementary"
    only_a, only_b = ta - tb, tb - ta
    if (not only_a and len(only_b) == 1) or (not only_b and len(only_a) == 1):
        return "differencing"
    if len(only_a) == 1 and len(only_b) == 1:
        (va,), (vb,) = only_a, only_b
        sa = next(t.skeleton for t in a.terms if t.value == va)
        sb = next(t.skeleton for t in b.terms if t.value == vb)
        if sa == sb:
            return "near_duplicate"
    return None


def follow_up(
    session: Session, *, since: datetime | None = None, default_budget: int = DEFAULT_BUDGET
) -> dict[str, Any]:
    """The operator's follow-up of aggregate queries: per permit, queries asked against its
    budget, and the flagged pairs (ids of ledger rows, never query text)."""
    recorded = entries(session, since=since)
    flags = flag_relations(recorded)
    permits: dict[int, dict[str, Any]] = {}
    for r in recorded:
        p = permits.setdefault(
            r.permit_id,
            {
                "permit_id": r.permit_id,
                "queries": set(),
                "askers": set(),
                "cells_published": 0,
                "cells_withheld": 0,
            },
        )
        p["queries"].add(r.entry.fingerprint)
        p["askers"].add(r.asked_by)
        p["cells_published"] += r.entry.cells_published
        p["cells_withheld"] += r.entry.cells_withheld
    out = []
    for pid, p in sorted(permits.items()):
        mine = [f for f in flags if f.permit_id == pid]
        out.append(
            {
                "permit_id": pid,
                "distinct_queries": len(p["queries"]),
                "budget": query_budget(session, permit_id=pid, default=default_budget),
                "askers": sorted(p["askers"]),
                "cells_published": p["cells_published"],
                "cells_withheld": p["cells_withheld"],
                "flags": {
                    k: sum(1 for f in mine if f.kind == k)
                    for k in ("complementary", "differencing", "near_duplicate")
                },
            }
        )
    return {
        "permits": out,
        "flagged_pairs": [
            {
                "kind": f.kind,
                "permit_id": f.permit_id,
                "ledger_ids": [f.first_id, f.second_id],
                "asked_by": f.asked_by,
                "asked_at": f.asked_at.isoformat(),
            }
            for f in flags
        ],
    }
