"""Disclosure pre-check shown to a steward before deciding: counts only, never a value.

Four parts:

* ``classify_variables``: each requested "table.column" with its sensitivity from
  schemas/variables.json (pseudonym, quasi-identifier, health, administrative).
* the thresholds of each holder in scope (schemas/holders.json: min_cell_count, k_anonymity);
* ``group_sizes``: for each holder in scope and each requested table it holds, the persons per
  combination of the requested quasi-identifiers in ``research/<holder>.duckdb`` (opened
  read-only): number of groups, the smallest group, and how many groups (and persons) fall
  below the holder's k. A smallest group of 1 means the requested combination singles someone
  out. Only aggregate counts leave the database; no group key is ever read into Python.

* ``cohort_sizes``: per holder, the persons who meet the request's cohort criteria, published
  as the holder publishes counts: "< min_cell_count" below its threshold, else rounded.

The group sizes are counted before cohort selection and before the release's generalisation,
so the figures are a guide, not the release's final risk (the page says so).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb

from governance import cohort
from governance.errors import InvalidRequest
from governance.requests import AT_RISK_ACKNOWLEDGED
from governance.values import RequestView
from pipelines.dataset_summary import publishable_count

PSEUDONYM, QUASI, HEALTH, ADMIN, UNKNOWN = (
    "pseudonym",
    "quasi_identifier",
    "health",
    "administrative",
    "unknown",
)
OK, AT_RISK, NO_QUASI, NO_DATA, UNAVAILABLE = "ok", "at_risk", "no_quasi", "no_data", "unavailable"
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class VariableRisk:
    name: str
    table: str
    column: str
    sensitivity: str


@dataclass(frozen=True)
class HolderThresholds:
    holder_id: str
    name: str
    min_cell_count: int
    k_anonymity: int
    rounding_base: int = 1  # the holder's published counts are rounded to this (its perturbation)


@dataclass(frozen=True)
class GroupRisk:
    """Group sizes of one table at one holder over the requested quasi-identifiers."""

    holder_id: str
    table: str
    quasi_identifiers: tuple[str, ...]
    k: int
    status: str  # ok | at_risk | no_quasi | no_data | unavailable
    persons: int | None = None
    groups: int | None = None
    smallest_group: int | None = None
    groups_below_k: int | None = None
    persons_below_k: int | None = None
    reason: str = ""  # why unavailable: an exception type or a missing column name, never a value


@dataclass(frozen=True)
class CohortSize:
    """Persons of one holder who meet the request's cohort criteria, as a steward may see it.

    Only the published form is kept: ``below`` (fewer than the holder's ``min_cell_count``,
    shown as "< min_cell_count") or ``persons`` rounded by the holder's own rule
    (``pipelines.dataset_summary.publishable_count``). The exact count never leaves this module.
    """

    holder_id: str
    status: str  # ok | no_data | unavailable
    min_cell_count: int
    persons: int | None = None  # publishable count (None when below or not computed)
    below: bool = False  # fewer persons than min_cell_count
    not_applied: tuple[str, ...] = ()  # criteria tables this holder does not hold (not applied here)
    reason: str = ""

    @property
    def shown(self) -> str:
        """The figure as the page shows it: "< 5", "1,040" or "" when there is none."""
        if self.below:
            return f"< {self.min_cell_count}"
        return f"{self.persons:,}" if self.persons is not None else ""


@dataclass(frozen=True)
class PreCheck:
    variables: tuple[VariableRisk, ...]
    thresholds: tuple[HolderThresholds, ...]
    groups: tuple[GroupRisk, ...]
    cohort: tuple[CohortSize, ...] = ()

    @property
    def at_risk(self) -> tuple[GroupRisk, ...]:
        """The tables with groups below k: approving needs an explicit acknowledgement."""
        return tuple(g for g in self.groups if g.status == AT_RISK)

    @property
    def quasi_identifiers(self) -> tuple[VariableRisk, ...]:
        return tuple(v for v in self.variables if v.sensitivity == QUASI)

    @property
    def pseudonyms(self) -> tuple[VariableRisk, ...]:
        return tuple(v for v in self.variables if v.sensitivity == PSEUDONYM)


def classify_variables(
    variables: Iterable[str], catalogue: Mapping[str, Mapping[str, str]]
) -> tuple[VariableRisk, ...]:
    """Each requested variable with its sensitivity; variables missing from the catalogue are ``unknown``."""
    out = []
    for name in sorted(set(variables)):
        entry = catalogue.get(name)
        if entry is None:
            table, _, column = name.partition(".")
            out.append(VariableRisk(name, table, column, UNKNOWN))
        else:
            out.append(VariableRisk(name, entry["table"], entry["column"], entry["sensitivity"]))
    return tuple(out)


def _quote(name: str) -> str:
    # Names come from the catalogue, but the SQL is built from them: accept plain identifiers only.
    if not _IDENT.match(name):
        raise ValueError(f"not a plain identifier: {name!r}")
    return f'"{name}"'


def group_size_sql(table: str, quasi_identifiers: tuple[str, ...], k: int) -> str:
    """One aggregate query: persons, groups, smallest group, groups and persons below ``k``.

    Persons are counted as distinct ``person_id`` per group (a person with many visits is still
    one person); NULL quasi-identifier values form their own group, as they would in a release.
    "Persons below k" counts each person once, however many small groups they fall in: with an
    event-level quasi-identifier (a visit date) one person spreads over many groups, and summing
    the groups' sizes counted person-group pairs (12,012 "persons" in a table of 1,040).

    >>> "GROUP BY \\"sex\\", \\"county\\"" in group_size_sql("patient", ("sex", "county"), 5)
    True
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError("k must be a positive integer")
    cols = ", ".join(_quote(c) for c in quasi_identifiers)
    match = " AND ".join(f"r.{_quote(c)} IS NOT DISTINCT FROM g.{_quote(c)}" for c in quasi_identifiers)
    return (
        f"WITH r AS (SELECT person_id, {cols} FROM {_quote(table)}), "
        f"g AS (SELECT {cols}, count(DISTINCT person_id) AS n FROM r GROUP BY {cols}) "
        f"SELECT (SELECT count(DISTINCT person_id) FROM r), count(*), min(n), "
        f"count(*) FILTER (WHERE n < {k}), "
        f"(SELECT count(DISTINCT r.person_id) FROM r JOIN g ON {match} WHERE g.n < {k}) FROM g"
    )


def _table_groups(
    con: duckdb.DuckDBPyConnection, holder_id: str, table: str, qis: tuple[str, ...], k: int
) -> GroupRisk:
    present = {
        r[0]
        for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main' AND table_name = ?", [table]
        ).fetchall()
    }
    if not present:
        return GroupRisk(holder_id, table, qis, k, NO_DATA, reason=f"table {table} missing")
    missing = [c for c in (*qis, "person_id") if c not in present]
    if missing:
        return GroupRisk(
            holder_id, table, qis, k, UNAVAILABLE, reason=f"column(s) missing: {', '.join(missing)}"
        )
    figures = con.execute(group_size_sql(table, qis, k)).fetchone()
    assert figures is not None  # an aggregate without GROUP BY always has one row
    persons, groups, smallest, below, persons_below = figures
    if not groups:
        return GroupRisk(holder_id, table, qis, k, NO_DATA, persons=0, groups=0, reason="table is empty")
    return GroupRisk(
        holder_id,
        table,
        qis,
        k,
        AT_RISK if below else OK,
        persons=int(persons),
        groups=int(groups),
        smallest_group=int(smallest),
        groups_below_k=int(below),
        persons_below_k=int(persons_below),
    )


#: Group sizes per (research file version, table, quasi-identifiers, k). A research zone changes
#: only when a pseudonymise run rewrites it (new mtime/size), while stewards reload request pages
#: often; caching keeps a page view from re-scanning a large table. Bounded, thread-safe.
_CACHE: OrderedDict[tuple, GroupRisk] = OrderedDict()
_CACHE_MAX = 256
_CACHE_LOCK = threading.Lock()


def _file_version(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size)


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def group_sizes(
    *,
    variables: tuple[VariableRisk, ...],
    thresholds: tuple[HolderThresholds, ...],
    table_holders: Mapping[str, Iterable[str]],
    research_db: Callable[[str], Path],
) -> tuple[GroupRisk, ...]:
    """Group sizes for each (holder in scope, requested table the holder delivers).

    ``research_db(holder_id) -> Path`` locates the research zone (``Settings.research_db``).
    A database that is missing gives ``no_data``; one that cannot be opened (a writer holds the
    lock, a corrupt file) gives ``unavailable`` with the exception type only.
    """
    by_table: dict[str, list[VariableRisk]] = {}
    for v in variables:
        if v.sensitivity != UNKNOWN:
            by_table.setdefault(v.table, []).append(v)
    out: list[GroupRisk] = []
    for th in thresholds:
        tables = [t for t in sorted(by_table) if th.holder_id in set(table_holders.get(t, ()))]
        if not tables:
            continue
        path: Path = research_db(th.holder_id)
        qis_of = {t: tuple(v.column for v in by_table[t] if v.sensitivity == QUASI) for t in tables}
        if not path.exists():
            out.extend(
                GroupRisk(th.holder_id, t, qis_of[t], th.k_anonymity, NO_DATA if qis_of[t] else NO_QUASI)
                for t in tables
            )
            continue
        version = _file_version(path)
        results: dict[str, GroupRisk] = {}
        todo = []
        for t in tables:
            if not qis_of[t]:
                results[t] = GroupRisk(th.holder_id, t, (), th.k_anonymity, NO_QUASI)
                continue
            with _CACHE_LOCK:
                hit = _CACHE.get((version, t, qis_of[t], th.k_anonymity))
            if hit is not None:
                results[t] = replace(hit, holder_id=th.holder_id)
            else:
                todo.append(t)
        if todo:
            try:
                con = duckdb.connect(str(path), read_only=True)
            except duckdb.Error as exc:
                # A writer holds the lock, or the file is damaged: the type only, never the message.
                for t in todo:
                    results[t] = GroupRisk(
                        th.holder_id, t, qis_of[t], th.k_anonymity, UNAVAILABLE, reason=type(exc).__name__
                    )
                todo = []
            try:
                for t in todo:
                    try:
                        risk = _table_groups(con, th.holder_id, t, qis_of[t], th.k_anonymity)
                    except duckdb.Error as exc:
                        # The type only: DuckDB messages can quote values.
                        results[t] = GroupRisk(
                            th.holder_id, t, qis_of[t], th.k_anonymity, UNAVAILABLE, reason=type(exc).__name__
                        )
                        continue
                    results[t] = risk
                    with _CACHE_LOCK:
                        _CACHE[(version, t, qis_of[t], th.k_anonymity)] = risk
                        while len(_CACHE) > _CACHE_MAX:
                            _CACHE.popitem(last=False)
            finally:
                if todo:
                    con.close()
        out.extend(results[t] for t in tables)
    return tuple(out)


def _cohort_count_sql(tables: list[str], conditions: Mapping[str, list[cohort.Condition]]) -> str:
    """Distinct persons over ``tables`` who, in every table of ``conditions``, have a row meeting
    all of that table's conditions (the release's rule, ``pipelines.release``); values are ``?``."""
    population = " UNION ".join(f"SELECT person_id FROM {_quote(t)}" for t in tables)
    where = [
        f"person_id IN (SELECT t.person_id FROM {_quote(table)} t WHERE "
        + " AND ".join(c.sql("t") for c in conds)
        + ")"
        for table, conds in sorted(conditions.items())
    ]
    return f"SELECT count(DISTINCT person_id) FROM ({population}) p" + (
        " WHERE " + " AND ".join(where) if where else ""
    )


def cohort_sizes(
    *,
    criteria: Mapping[str, object] | None,
    variables: tuple[VariableRisk, ...],
    thresholds: tuple[HolderThresholds, ...],
    table_holders: Mapping[str, Iterable[str]],
    research_db: Callable[[str], Path],
) -> tuple[CohortSize, ...]:
    """Per holder in scope: the persons in its research zone who meet the cohort criteria.

    The population is the persons in the holder's requested tables (and its criteria tables);
    criteria on a table the holder does not hold cannot be applied at that holder (the release
    links persons across holders) and are listed in ``not_applied``. Counts below the holder's
    ``min_cell_count`` are shown as "< n", others rounded by the holder's rounding base.
    """
    try:
        conditions = cohort.by_table(cohort.parse(criteria))
    except cohort.InvalidCriteria as exc:
        return tuple(
            CohortSize(th.holder_id, UNAVAILABLE, th.min_cell_count, reason=str(exc)) for th in thresholds
        )
    wanted = {v.table for v in variables if v.sensitivity != UNKNOWN}
    out = []
    for th in thresholds:
        holds = {t for t, hs in table_holders.items() if th.holder_id in set(hs)}
        tables = sorted((wanted | set(conditions)) & holds)
        not_applied = tuple(sorted(set(conditions) - holds))
        path = research_db(th.holder_id)
        if not tables or not path.exists():
            out.append(CohortSize(th.holder_id, NO_DATA, th.min_cell_count, not_applied=not_applied))
            continue
        try:
            con = duckdb.connect(str(path), read_only=True)
        except duckdb.Error as exc:
            out.append(CohortSize(th.holder_id, UNAVAILABLE, th.min_cell_count, reason=type(exc).__name__))
            continue
        try:
            present: dict[str, set[str]] = {}
            for table, column in con.execute(
                "SELECT table_name, column_name FROM duckdb_columns() WHERE schema_name = 'main'"
            ).fetchall():
                present.setdefault(table, set()).add(column)
            tables = [t for t in tables if "person_id" in present.get(t, set())]
            applied = {t: c for t, c in conditions.items() if t in holds}
            missing = sorted(
                f"{t}.{c.column}"
                for t, conds in applied.items()
                for c in conds
                if c.column not in present.get(t, set())
            )
            if missing or not tables:
                reason = f"column(s) missing: {', '.join(missing)}" if missing else "no table with persons"
                out.append(
                    CohortSize(
                        th.holder_id, UNAVAILABLE, th.min_cell_count, not_applied=not_applied, reason=reason
                    )
                )
                continue
            params = [
                v
                for conds in (applied[t] for t in sorted(applied))
                for c in conds
                if c.op != "is_null"
                for v in c.operands
            ]
            try:
                row = con.execute(_cohort_count_sql(tables, applied), params).fetchone()
            except (duckdb.Error, ValueError) as exc:
                # The type only: DuckDB messages can quote values.
                out.append(
                    CohortSize(th.holder_id, UNAVAILABLE, th.min_cell_count, reason=type(exc).__name__)
                )
                continue
        finally:
            con.close()
        n = int(row[0]) if row else 0
        if n < th.min_cell_count:
            out.append(CohortSize(th.holder_id, OK, th.min_cell_count, below=True, not_applied=not_applied))
        else:
            shown = publishable_count(n, rounding_base=th.rounding_base, min_cell_count=th.min_cell_count)
            out.append(
                CohortSize(th.holder_id, OK, th.min_cell_count, persons=shown, not_applied=not_applied)
            )
    return tuple(out)


def precheck(
    variables: Iterable[str],
    holder_ids: Iterable[str],
    *,
    catalogue: Mapping[str, Mapping[str, str]],
    holders: Iterable[object],
    table_holders: Mapping[str, Iterable[str]],
    research_db: Callable[[str], Path],
    compute_groups: bool = True,
    criteria: Mapping[str, object] | None = None,
) -> PreCheck:
    """The full pre-check for a request (see the module docstring)."""
    wanted = set(holder_ids)
    thresholds = tuple(
        HolderThresholds(
            h.id,  # type: ignore[attr-defined]
            h.name,  # type: ignore[attr-defined]
            h.min_cell_count,  # type: ignore[attr-defined]
            h.k_anonymity,  # type: ignore[attr-defined]
            max(int(dict(getattr(h, "perturbation", ())).get("rounding_base", 1)), 1),
        )
        for h in holders
        if h.id in wanted  # type: ignore[attr-defined]
    )
    classified = classify_variables(variables, catalogue)
    groups = (
        group_sizes(
            variables=classified, thresholds=thresholds, table_holders=table_holders, research_db=research_db
        )
        if compute_groups
        else ()
    )
    sizes = (
        cohort_sizes(
            criteria=criteria,
            variables=classified,
            thresholds=thresholds,
            table_holders=table_holders,
            research_db=research_db,
        )
        if compute_groups
        else ()
    )
    return PreCheck(classified, thresholds, groups, sizes)


def for_request(
    variables: Iterable[str],
    holder_ids: Iterable[str],
    criteria: Mapping[str, object] | None,
    *,
    research_db: Callable[[str], Path],
    compute_groups: bool = True,
) -> PreCheck:
    """:func:`precheck` of a request with the catalogue and holders of this installation (the
    request page and the API's decision endpoint ask the same question)."""
    from governance.catalogue import load_catalogue, table_holders
    from hdp.settings import holders

    return precheck(
        variables,
        holder_ids,
        catalogue=load_catalogue(),
        holders=holders(),
        table_holders=table_holders(),
        research_db=research_db,
        compute_groups=compute_groups,
        criteria=criteria,
    )


def require_at_risk_acknowledged(
    view: RequestView, checklist: Mapping[str, object] | None, *, research_db: Callable[[str], Path]
) -> None:
    """An approval of a request whose disclosure pre-check shows groups below k must carry the
    acknowledgement ``at_risk_acknowledged`` (as on the request page); InvalidRequest otherwise.
    The API and the CLI decide through this one rule; the web form checks the same pre-check."""
    if checklist and checklist.get(AT_RISK_ACKNOWLEDGED) is True:
        return
    check = for_request(view.variables, view.holders, view.cohort_criteria, research_db=research_db)
    if check.at_risk:
        raise InvalidRequest(
            [
                (
                    "decision.at_risk_not_acknowledged",
                    f"the disclosure pre-check shows groups below k in {len(check.at_risk)} table(s); "
                    f'approve with checklist {{"{AT_RISK_ACKNOWLEDGED}": true}} once you have seen them',
                )
            ]
        )
