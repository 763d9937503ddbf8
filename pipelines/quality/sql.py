"""Compile checks to DuckDB SQL (pure string building, no connection).

Row-level checks become one boolean "this row fails" expression each, so that all row-level
checks of a table are counted in a single scan (``count_if`` per check): the gate's cost follows
the number of tables, not the number of checks. Set-level checks (uniqueness, references,
cross-source windows) are one query each.

Identifiers were validated by the catalog (plain lower-case names) and are double-quoted
here; literal values are escaped. Placeholders ``{extract_date}`` and ``{extract_year}`` in
library SQL are replaced with literals of the run's extract date.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from pipelines.quality.catalog import Check, code_list

#: Personnummer-shaped text anywhere in a value: YYMMDD[-+]NNNN or YYYYMMDDNNNN, not inside a
#: longer run of letters/digits (so hex pseudonyms and OIDs do not match).
IDENTIFIER_PATTERN = r"(^|[^0-9A-Za-z])([0-9]{2})?[0-9]{6}[-+]?[0-9]{4}([^0-9A-Za-z]|$)"

# Luhn over the 10 right-most digits of n, in integer arithmetic (vectorised; far faster than
# per-character string functions). Digit k counted from the right has weight 2 when k is odd; a doubled
# digit x contributes 2x - 9 when x >= 5, i.e. 2x - 9 * (x // 5).
_LUHN_TERMS = " + ".join(
    (f"(2 * ((n // {10**k}) % 10) - 9 * (((n // {10**k}) % 10) // 5))" if k % 2 else f"((n // {10**k}) % 10)")
    for k in range(10)
)
_Y, _M, _D = "(n // 100000000)", "((n // 1000000) % 100)", "(((n // 10000) % 100) % 60)"

#: Temporary macros every check may use. Defined per connection; they write nothing to the file.
#: Cheap string functions (replace, substr) rather than regular expressions wherever the shape has
#: already been checked: personnummer validation runs on every row of the largest tables.
MACROS: tuple[str, ...] = (
    # the date part of a DATE, TIMESTAMP or ISO-8601 string (FHIR dateTimes may be partial)
    "CREATE OR REPLACE TEMP MACRO hdp_date(x) AS TRY_CAST(left(CAST(x AS VARCHAR), 10) AS DATE)",
    "CREATE OR REPLACE TEMP MACRO hdp_pnr_digits(s) AS replace(replace(s, '-', ''), '+', '')",
    # canonical 12 digits (YYYYMMDDNNNC) of a well-shaped identifier as a number, else NULL. 10-digit forms
    # take the latest year <= ref_year ending in YY, minus 100 when the separator is '+' (aged 100 or more)
    "CREATE OR REPLACE TEMP MACRO hdp_pnr_num(s, ref_year) AS CASE "
    "WHEN NOT regexp_full_match(s, '([0-9]{6}|[0-9]{8})[-+]?[0-9]{4}') THEN NULL "
    "WHEN length(hdp_pnr_digits(s)) = 12 THEN TRY_CAST(hdp_pnr_digits(s) AS BIGINT) "
    "ELSE (ref_year - ((ref_year - CAST(left(s, 2) AS BIGINT)) % 100) - CASE WHEN contains(s, '+') THEN 100 ELSE 0 END) "
    "* 100000000 + CAST(right(hdp_pnr_digits(s), 8) AS BIGINT) END",
    f"CREATE OR REPLACE TEMP MACRO hdp_luhn_num(n) AS ({_LUHN_TERMS}) % 10 = 0",
    # a real calendar date; samordningsnummer carry day + 60, so the day is taken modulo 60
    f"CREATE OR REPLACE TEMP MACRO hdp_pnr_num_date_ok(n) AS {_M} BETWEEN 1 AND 12 AND {_D} BETWEEN 1 AND CASE "
    f"WHEN {_M} IN (4, 6, 9, 11) THEN 30 WHEN {_M} = 2 THEN CASE WHEN ({_Y} % 4 = 0 AND {_Y} % 100 <> 0) "
    f"OR {_Y} % 400 = 0 THEN 29 ELSE 28 END ELSE 31 END",
    # serial number (NNN) 000 is never issued (identifier.invalid_serial in privacy.personnummer)
    "CREATE OR REPLACE TEMP MACRO hdp_pnr_num_valid(n, ref_year) AS n IS NOT NULL AND hdp_luhn_num(n) "
    f"AND hdp_pnr_num_date_ok(n) AND {_Y} <= ref_year AND (n // 10) % 1000 <> 0",
    f"CREATE OR REPLACE TEMP MACRO hdp_pnr_num_birth(n) AS CASE WHEN hdp_pnr_num_date_ok(n) "
    f"THEN make_date(CAST({_Y} AS INTEGER), CAST({_M} AS INTEGER), CAST({_D} AS INTEGER)) END",
    "CREATE OR REPLACE TEMP MACRO hdp_pnr_birth_date(s, ref_year) AS hdp_pnr_num_birth(hdp_pnr_num(s, ref_year))",
    "CREATE OR REPLACE TEMP MACRO hdp_pnr_valid(s, ref_year) AS hdp_pnr_num_valid(hdp_pnr_num(s, ref_year), ref_year)",
)

NUMERIC_TYPES = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "FLOAT",
    "DOUBLE",
    "DECIMAL",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
)


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: Any) -> str:
    """A SQL literal for a value from the check library."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


@dataclass(frozen=True)
class RunContext:
    """Run-wide values library SQL may refer to."""

    extract_date: date
    #: the connection has ``hdp_holder_identifier_ok`` (engine.install_identifier_function): a value
    #: that is no valid national number passes the ``personnummer`` kind when it is one of the
    #: holder's usable identifiers (a reserve number, an accepted interim number)
    holder_identifiers: bool = False

    def render(self, sql: str) -> str:
        return sql.replace("{extract_date}", literal(self.extract_date)).replace(
            "{extract_year}", str(self.extract_date.year)
        )


def _is_numeric(col_type: str | None) -> bool:
    return col_type is not None and col_type.upper().split("(")[0] in NUMERIC_TYPES


def row_fail_expr(check: Check, ctx: RunContext, col_types: Mapping[str, str]) -> str:
    """Boolean SQL: TRUE when the row fails ``check`` (never NULL)."""
    p = check.params
    kind = check.kind
    col = ident(p["column"]) if "column" in p else None
    if kind == "not_null":
        typ = col_types.get(p["column"], "")
        blank = f" OR trim({col}) = ''" if typ.upper().startswith("VARCHAR") else ""
        expr = f"{col} IS NULL{blank}"
    elif kind in ("in_set", "code_list"):
        values = sorted(code_list(p["code_list"])) if kind == "code_list" else p["values"]
        as_text = _is_numeric(col_types.get(p["column"])) or not all(isinstance(v, str) for v in values)
        if as_text:
            values = [str(v) for v in values]
        target = f"CAST({col} AS VARCHAR)" if as_text else col
        expr = f"{col} IS NOT NULL AND {target} NOT IN ({', '.join(literal(v) for v in values)})"
    elif kind == "range":
        val = col if _is_numeric(col_types.get(p["column"])) else f"TRY_CAST({col} AS DOUBLE)"
        expr = f"{col} IS NOT NULL AND ({val} < {literal(p['min'])} OR {val} > {literal(p['max'])})"
    elif kind == "regex":
        expr = f"{col} IS NOT NULL AND NOT regexp_full_match(CAST({col} AS VARCHAR), {literal(p['pattern'])})"
    elif kind == "personnummer":
        # __pnr_<col> is computed once per row in the scan's inner projection (row_derived)
        national = (
            f"coalesce(hdp_pnr_num_valid({ident('__pnr_' + p['column'])}, {ctx.extract_date.year}), FALSE)"
        )
        if ctx.holder_identifiers:
            # CASE, so that only the rare values that are no national number reach the function
            expr = (
                f"CASE WHEN {col} IS NULL OR {national} THEN FALSE "
                f"ELSE NOT coalesce(hdp_holder_identifier_ok(CAST({col} AS VARCHAR)), FALSE) END"
            )
        else:
            expr = f"{col} IS NOT NULL AND NOT {national}"
    elif kind == "predicate":
        expr = ctx.render(p["fail_when"])
    else:
        raise ValueError(f"{check.id}: kind {kind} is not row-level")
    if "where" in p:
        expr = f"({ctx.render(p['where'])}) AND ({expr})"
    return f"coalesce(({expr}), FALSE)"


def row_derived(check: Check, ctx: RunContext) -> dict[str, str]:
    """Per-row values a row-level check needs, computed once per row in the scan (alias -> SQL)."""
    if check.kind == "personnummer":
        col = check.params["column"]
        return {f"__pnr_{col}": f"hdp_pnr_num({ident(col)}, {ctx.extract_date.year})"}
    return {}


def derived_from(table: str, derived: Mapping[str, str], *, rowid: bool = False) -> str:
    """FROM-clause source: the table, plus the derived per-row columns when there are any."""
    if not derived and not rowid:
        return ident(table)
    extra = ", ".join(f"{expr} AS {ident(alias)}" for alias, expr in derived.items())
    head = "rowid AS __rid, *" if rowid else "*"
    return f"(SELECT {head}{', ' + extra if extra else ''} FROM {ident(table)})"


def row_scope_expr(check: Check, ctx: RunContext) -> str:
    """Boolean SQL: rows the check is about (its denominator)."""
    if "where" in check.params:
        return f"coalesce(({ctx.render(check.params['where'])}), FALSE)"
    return "TRUE"


def table_scan_sql(
    table: str, items: Sequence[tuple[str, str]], derived: Mapping[str, str] | None = None
) -> str:
    """One scan counting every (alias, boolean expression) pair, plus ``__total``."""
    cols = ", ".join(f"count_if({expr}) AS {ident(alias)}" for alias, expr in items)
    return (
        f"SELECT count(*) AS __total{', ' + cols if cols else ''} FROM {derived_from(table, derived or {})}"
    )


def _and_join(left: str, right: str, lcols: Sequence[str], rcols: Sequence[str]) -> str:
    return " AND ".join(f"{left}.{ident(a)} = {right}.{ident(b)}" for a, b in zip(lcols, rcols, strict=True))


def set_fail_sql(check: Check, ctx: RunContext) -> str:
    """SQL returning one row (failed, total) for a set-level check on a single table."""
    p = check.params
    t = ident(check.table)
    if check.kind == "unique":
        cols = ", ".join(ident(c) for c in p["columns"])
        return (
            f"SELECT (SELECT count(*) FROM {t}) - (SELECT count(*) FROM (SELECT DISTINCT {cols} FROM {t})), "
            f"(SELECT count(*) FROM {t})"
        )
    if check.kind == "foreign_key":
        return f"SELECT count_if({_fk_missing(check)}), count(*) FROM {t} AS t"
    if check.kind == "join_predicate":
        cond = _and_join("t", "r", p["join"], p["ref_columns"])
        return (
            f"SELECT count_if(EXISTS (SELECT 1 FROM {ident(p['ref_table'])} AS r WHERE {cond} "
            f"AND coalesce(({ctx.render(p['fail_when'])}), FALSE))), count(*) FROM {t} AS t"
        )
    if check.kind == "match_within":
        lp, ld = ident(p["person_column"]), ident(p["date_column"])
        rp, rd = ident(p["ref_person_column"]), ident(p["ref_date_column"])
        w = int(p["window_days"])
        return (
            f"WITH r AS (SELECT {rp} AS p, hdp_date({rd}) AS d FROM {ident(p['ref_table'])} WHERE {rp} IS NOT NULL), "
            f"l AS (SELECT {lp} AS p, hdp_date({ld}) AS d FROM {t} "
            f"WHERE {lp} IN (SELECT p FROM r) AND hdp_date({ld}) IS NOT NULL) "
            f"SELECT (SELECT count(*) FROM l WHERE NOT EXISTS (SELECT 1 FROM r WHERE r.p = l.p "
            f"AND r.d BETWEEN l.d - INTERVAL {w} DAY AND l.d + INTERVAL {w} DAY)), (SELECT count(*) FROM {t})"
        )
    if check.kind == "row_count_min":
        return f"SELECT CASE WHEN count(*) < {int(p['min_rows'])} THEN 1 ELSE 0 END, count(*) FROM {t}"
    raise ValueError(f"{check.id}: kind {check.kind} has no single-table SQL")


def _fk_missing(check: Check) -> str:
    """Boolean SQL over alias t: the reference is given but matches no row of ref_table."""
    p = check.params
    present = " AND ".join(f"t.{ident(c)} IS NOT NULL" for c in p["columns"])
    cond = _and_join("t", "r", p["columns"], p["ref_columns"])
    return f"({present} AND NOT EXISTS (SELECT 1 FROM {ident(p['ref_table'])} AS r WHERE {cond}))"


def failing_rows_predicate(check: Check, ctx: RunContext, col_types: Mapping[str, str]) -> str:
    """WHERE clause over alias t selecting the rows that fail a quarantinable check."""
    if check.kind == "foreign_key":
        return _fk_missing(check)
    return row_fail_expr(check, ctx, col_types)


def identifier_scan_sql(table: str, columns: Sequence[str]) -> str:
    """Rows of ``table`` where any of the text ``columns`` holds a personnummer-shaped value."""
    if not columns:
        return f"SELECT 0, count(*) FROM {ident(table)}"
    anym = " OR ".join(f"regexp_matches({ident(c)}, {literal(IDENTIFIER_PATTERN)})" for c in columns)
    # count_if over no rows is NULL in DuckDB, not 0
    return f"SELECT coalesce(count_if(coalesce({anym}, FALSE)), 0), count(*) FROM {ident(table)}"
