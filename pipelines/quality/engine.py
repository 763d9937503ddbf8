"""Evaluate checks on one DuckDB database: pushdown, one scan per table for row-level checks.

``evaluate`` never raises for a broken check: a check whose table or column is missing is
``skipped`` (release zone, where tables and columns depend on the request) or ``error``
(raw/research zones, where the contract says they exist), and a check whose SQL fails is
``error`` with the exception *type* only, because DuckDB messages can quote values.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from duckdb.func import ARROW

from pipelines.encoding import CONVERTED_PREFIX
from pipelines.quality import sql
from pipelines.quality.catalog import Check, CheckLibraryError
from pipelines.quality.results import ERROR, FAIL, PASS, SKIPPED, WARN, CheckResult
from pipelines.warehouse import single_row
from privacy.identifiers import IdentifierScheme, classify_values

log = logging.getLogger(__name__)

QUARANTINE_TABLE = "quarantine"
#: Written by FHIR ingestion: (resource_type, resource_key, flag_code, path) per flagged resource.
FLAG_TABLE = "fhir_flag"
#: Tables that are bookkeeping, not data: never scanned by table "*" checks.
INTERNAL_TABLES = frozenset({QUARANTINE_TABLE, "person_link", "fhir_flag"})


@dataclass(frozen=True)
class Schema:
    """Tables and column types of the database being checked."""

    tables: Mapping[str, Mapping[str, str]]

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection) -> Schema:
        rows = con.execute(
            "SELECT table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE schema_name = 'main' AND NOT internal ORDER BY table_name, column_index"
        ).fetchall()
        tables: dict[str, dict[str, str]] = defaultdict(dict)
        for table, column, typ in rows:
            tables[table][column] = typ
        return cls({t: dict(c) for t, c in tables.items()})

    def has(self, table: str, columns: Iterable[str] = ()) -> bool:
        return table in self.tables and all(c in self.tables[table] for c in columns)


@dataclass
class Evaluation:
    results: list[CheckResult]
    #: (table, column) -> rows failing any row-level plausibility/conformance check on that column
    column_failures: dict[tuple[str, str], int] = field(default_factory=dict)
    #: (table, column) -> rows those checks looked at
    column_totals: dict[tuple[str, str], int] = field(default_factory=dict)


def install_macros(con: duckdb.DuckDBPyConnection) -> None:
    for macro in sql.MACROS:
        con.execute(macro)


def install_identifier_function(
    con: duckdb.DuckDBPyConnection, scheme: IdentifierScheme, reference_date: date
) -> None:
    """``hdp_holder_identifier_ok(value)``: TRUE when pseudonymisation would link ``value`` to a
    person at this holder (:func:`privacy.identifiers.classify_values`: a national number, one of
    the holder's reserve formats, an interim number when accepted). The raw gate's ``personnummer``
    checks then count and quarantine exactly the rows pseudonymisation would refuse."""

    def usable(values: pa.Array) -> pa.Array:
        reasons = classify_values(values, scheme, reference_date=reference_date)["reason_code"]
        return pc.is_null(reasons)

    con.create_function(
        "hdp_holder_identifier_ok", usable, ["varchar"], "boolean", type=ARROW, side_effects=False
    )


def _sql_columns(predicate: str) -> list[str]:
    """Column names an SQL predicate reads ({placeholders} stand for run constants)."""
    # sqlglot takes about a second to import: only runs that compile checks pay for it
    import sqlglot
    from sqlglot import exp

    tree = sqlglot.parse_one(re.sub(r"\{\w+\}", "NULL", predicate), read="duckdb")
    return sorted({c.name for c in tree.find_all(exp.Column)})


def _columns_needed(check: Check) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(columns of check.table, [(ref_table, ref columns)]) the check reads."""
    p = check.params
    own: list[str] = []
    refs: list[tuple[str, list[str]]] = []
    for key in ("column", "person_column", "date_column"):
        if key in p:
            own.append(p[key])
    if "columns" in p and check.kind != "columns_absent":
        own.extend(p["columns"])
    if "where" in p:  # a release may hold the checked column but not the one the filter reads
        own.extend(c for c in _sql_columns(p["where"]) if c not in own)
    if check.kind == "foreign_key":
        refs.append((p["ref_table"], list(p["ref_columns"])))
    elif check.kind == "join_predicate":
        refs.append((p["ref_table"], list(p["ref_columns"])))
    elif check.kind == "match_within":
        refs.append((p["ref_table"], [p["ref_person_column"], p["ref_date_column"]]))
    return own, refs


def _verdict(check: Check, failed: int, total: int) -> str:
    if check.threshold.allows(failed, total):
        return PASS
    return FAIL if check.severity == "blocking" else WARN


def _result(
    check: Check, zone: str, failed: int, total: int, verdict: str | None = None, reason: str = ""
) -> CheckResult:
    return CheckResult(
        id=check.id,
        zone=zone,
        table=check.table,
        column=check.column,
        kind=check.kind,
        category=check.category,
        subcategory=check.subcategory,
        severity=check.severity,
        failed_rows=int(failed),
        total_rows=int(total),
        max_failed_share=check.threshold.max_failed_share,
        max_failed_count=check.threshold.max_failed_count,
        verdict=verdict or _verdict(check, failed, total),
        reason=reason,
    )


def _error_reason(exc: BaseException) -> str:
    # The type only: DuckDB's messages may quote the offending value.
    return f"query failed ({type(exc).__name__})"


def evaluate(
    con: duckdb.DuckDBPyConnection,
    checks: Sequence[Check],
    *,
    zone: str,
    ctx: sql.RunContext,
    missing_is_error: bool,
    source_tables: Mapping[str, str] | None = None,
    column_unions: bool = False,
) -> Evaluation:
    """Run ``checks`` (already resolved for ``zone``) against ``con``; results in library order.

    ``missing_is_error``: a missing table/column fails closed (raw, research) or is skipped
    (release, where the request decides which tables and columns exist).
    ``source_tables``: source -> loaded table, for quarantine_reason denominators.
    ``column_unions``: also count, per column, rows failing any of its value checks (the quality
    label's plausibility pass rate); off for the gate, where it would only add work to the scan.
    """
    install_macros(con)
    schema = Schema.read(con)
    out: dict[str, CheckResult] = {}
    row_checks: dict[str, list[Check]] = defaultdict(list)
    set_checks: list[Check] = []
    for check in checks:
        if check.kind in ("quarantine_reason", "flag_count", "columns_absent", "no_identifier_values"):
            set_checks.append(check)
            continue
        own, refs = _columns_needed(check)
        missing = (
            [f"table {check.table}"]
            if check.table not in schema.tables
            else [f"column {check.table}.{c}" for c in own if c not in schema.tables[check.table]]
        )
        for ref_table, ref_cols in refs:
            if ref_table not in schema.tables:
                missing.append(f"table {ref_table}")
            else:
                missing.extend(
                    f"column {ref_table}.{c}" for c in ref_cols if c not in schema.tables[ref_table]
                )
        if missing:
            verdict = ERROR if missing_is_error else SKIPPED
            out[check.id] = _result(check, zone, 0, 0, verdict, "missing: " + ", ".join(missing))
            continue
        (row_checks[check.table] if check.row_level else set_checks).append(check)

    evaluation = Evaluation(results=[])
    for table, table_checks in row_checks.items():
        _evaluate_row_checks(con, table, table_checks, zone, ctx, schema, out, evaluation, column_unions)
    for check in set_checks:
        out[check.id] = _evaluate_set_check(con, check, zone, ctx, schema, source_tables or {})
    evaluation.results = [out[c.id] for c in checks]
    return evaluation


def _evaluate_row_checks(
    con: duckdb.DuckDBPyConnection,
    table: str,
    checks: list[Check],
    zone: str,
    ctx: sql.RunContext,
    schema: Schema,
    out: dict[str, CheckResult],
    evaluation: Evaluation,
    column_unions: bool,
) -> None:
    types = schema.tables[table]
    items: list[tuple[str, str]] = []
    compiled: dict[str, tuple[str, str]] = {}
    derived: dict[str, str] = {}
    for i, check in enumerate(checks):
        try:
            fail, scope = sql.row_fail_expr(check, ctx, types), sql.row_scope_expr(check, ctx)
            derived.update(sql.row_derived(check, ctx))
        except CheckLibraryError as exc:  # e.g. a code list that is not shipped
            out[check.id] = _result(check, zone, 0, 0, ERROR, str(exc).split(":")[0] + ": code list missing")
            continue
        compiled[check.id] = (fail, scope)
        items.append((f"f{i}", fail))
        if scope != "TRUE":
            items.append((f"s{i}", scope))
    # Per-column union of value checks: the label's plausibility pass rate per variable.
    by_column: dict[str, list[str]] = defaultdict(list)
    for check in checks:
        if check.id in compiled and check.column and check.category in ("plausibility", "conformance"):
            by_column[check.column].append(compiled[check.id][0])
    union_items = (
        [(f"u_{col}", " OR ".join(exprs)) for col, exprs in by_column.items()] if column_unions else []
    )
    try:
        row = single_row(con, sql.table_scan_sql(table, items + union_items, derived))
        names = ["__total"] + [a for a, _ in items + union_items]
        values = dict(zip(names, row, strict=True))
    except duckdb.Error:
        # One bad expression must not hide the others: fall back to one scan per check.
        log.warning("combined scan of %s failed; evaluating its %d checks one by one", table, len(compiled))
        values = {}
        union_items = []
        for i, check in enumerate(checks):
            if check.id not in compiled:
                continue
            fail, scope = compiled[check.id]
            try:
                r = single_row(
                    con, sql.table_scan_sql(table, [("f", fail), ("s", scope)], sql.row_derived(check, ctx))
                )
                values["__total"], values[f"f{i}"], values[f"s{i}"] = r[0], r[1], r[2]
            except duckdb.Error as exc:
                out[check.id] = _result(check, zone, 0, 0, ERROR, _error_reason(exc))
                log.warning("check %s could not run: %s", check.id, type(exc).__name__)
    total = int(values.get("__total") or 0)
    for i, check in enumerate(checks):
        if check.id in out or check.id not in compiled:
            continue
        denom = int(values.get(f"s{i}", total) or 0) if compiled[check.id][1] != "TRUE" else total
        out[check.id] = _result(check, zone, int(values[f"f{i}"] or 0), denom)
    for alias, _ in union_items:
        col = alias[2:]
        evaluation.column_failures[(table, col)] = int(values[alias] or 0)
        evaluation.column_totals[(table, col)] = total


def _evaluate_set_check(
    con: duckdb.DuckDBPyConnection,
    check: Check,
    zone: str,
    ctx: sql.RunContext,
    schema: Schema,
    source_tables: Mapping[str, str],
) -> CheckResult:
    try:
        if check.kind == "quarantine_reason":
            failed, total = _quarantine_counts(con, check, schema, source_tables)
            return _result(check, zone, failed, total)
        if check.kind == "flag_count":
            total = (
                single_row(con, f"SELECT count(*) FROM {sql.ident(check.table)}")[0]
                if check.table in schema.tables
                else 0
            )
            failed = 0
            if FLAG_TABLE in schema.tables:
                codes = list(check.params["flag_codes"])
                marks = ", ".join("?" for _ in codes)
                failed = single_row(
                    con, f"SELECT count(*) FROM {FLAG_TABLE} WHERE flag_code IN ({marks})", codes
                )[0]
            return _result(check, zone, int(failed), int(total))
        if check.kind == "columns_absent":
            forbidden = set(check.params["columns"])
            failed = total = 0
            offending: list[str] = []
            for table in _data_tables(schema):
                n = single_row(con, f"SELECT count(*) FROM {sql.ident(table)}")[0]
                total += n
                bad = sorted(forbidden & set(schema.tables[table]))
                if bad:
                    failed += n
                    offending.extend(f"{table}.{c}" for c in bad)
            reason = ("columns present: " + ", ".join(offending)) if offending else ""
            verdict = None if not offending else (FAIL if check.severity == "blocking" else WARN)
            return _result(check, zone, failed, total, verdict, reason)
        if check.kind == "no_identifier_values":
            exclude = set(check.params.get("exclude_columns", ()))
            failed = total = 0
            for table in _data_tables(schema):
                cols = [
                    c
                    for c, t in schema.tables[table].items()
                    if t.upper().startswith("VARCHAR") and c not in exclude
                ]
                f, n = single_row(con, sql.identifier_scan_sql(table, cols))
                failed, total = failed + int(f), total + int(n)
            return _result(check, zone, failed, total)
        failed, total = single_row(con, sql.set_fail_sql(check, ctx))
        return _result(check, zone, int(failed or 0), int(total or 0))
    except duckdb.Error as exc:
        log.warning("check %s could not run: %s", check.id, type(exc).__name__)
        return _result(check, zone, 0, 0, ERROR, _error_reason(exc))


def _data_tables(schema: Schema) -> list[str]:
    return sorted(t for t in schema.tables if t not in INTERNAL_TABLES and not t.startswith("_"))


def _quarantine_counts(
    con: duckdb.DuckDBPyConnection, check: Check, schema: Schema, source_tables: Mapping[str, str]
) -> tuple[int, int]:
    table = source_tables.get(check.source, check.table)
    loaded = single_row(con, f"SELECT count(*) FROM {sql.ident(table)}")[0] if table in schema.tables else 0
    if QUARANTINE_TABLE not in schema.tables:
        return 0, int(loaded)
    # Earlier quality-stage records are this gate's own output, not ingestion's verdict.
    base = "FROM quarantine WHERE source = ? AND stage <> 'quality'"
    # A conversion notice (encoding.converted_from_*) marks a file whose rows were loaded: it is
    # counted only by a check that names it, never as a rejection.
    notice = f"reason_code LIKE '{CONVERTED_PREFIX}%'"
    rejected = single_row(con, f"SELECT count(*) {base} AND NOT {notice}", [check.source])[0]
    codes = list(check.params["reason_codes"])
    if codes == ["*"]:
        failed = rejected
    else:
        marks = ", ".join("?" for _ in codes)
        failed = single_row(
            con, f"SELECT count(*) {base} AND reason_code IN ({marks})", [check.source, *codes]
        )[0]
    return int(failed), int(loaded) + int(rejected)


def failing_rows_sql(check: Check, ctx: sql.RunContext, schema: Schema) -> str:
    """WHERE clause (alias t) selecting the rows of check.table that fail ``check``."""
    return sql.failing_rows_predicate(check, ctx, schema.tables.get(check.table, {}))


__all__ = [
    "Evaluation",
    "Schema",
    "evaluate",
    "install_macros",
    "failing_rows_sql",
    "PASS",
    "WARN",
    "FAIL",
    "SKIPPED",
    "ERROR",
]
