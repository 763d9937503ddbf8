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

_LUHN_TERMS = " + ".join(
    (f"(2 * (ascii(substr(d, {i}, 1)) - 48) - CASE WHEN ascii(substr(d, {i}, 1)) >= 53 THEN 9 ELSE 0 END)"
     if i % 2 == 1 else f"(ascii(substr(d, {i}, 1)) - 48)")
    for i in range(1, 11)
)

#: Temporary macros every check may use. Defined per connection; they write nothing to the file.
MACROS: tuple[str, ...] = (
    # the date part of a DATE, TIMESTAMP or ISO-8601 string (FHIR dateTimes may be partial)
    "CREATE OR REPLACE TEMP MACRO hdp_date(x) AS TRY_CAST(left(CAST(x AS VARCHAR), 10) AS DATE)",
    "CREATE OR REPLACE TEMP MACRO hdp_pnr_digits(s) AS regexp_replace(s, '[^0-9]', '', 'g')",
    # Luhn over the 10-digit form: weights 2,1,2,...; a doubled digit >= 5 contributes 2x - 9
    f"CREATE OR REPLACE TEMP MACRO hdp_luhn10(d) AS length(d) = 10 AND ({_LUHN_TERMS}) % 10 = 0",
    # the full birth year: 12-digit forms carry it; 10-digit forms take the latest year <= ref_year
    # ending in YY, minus 100 when the separator is '+' (aged 100 or more)
    "CREATE OR REPLACE TEMP MACRO hdp_pnr_year(s, ref_year) AS CASE "
    "WHEN length(hdp_pnr_digits(s)) = 12 THEN TRY_CAST(left(hdp_pnr_digits(s), 4) AS INTEGER) "
    "ELSE ref_year - ((ref_year - TRY_CAST(left(hdp_pnr_digits(s), 2) AS INTEGER)) % 100) "
    "- CASE WHEN contains(s, '+') THEN 100 ELSE 0 END END",
    # birth date; samordningsnummer carry day + 60, so the day is taken modulo 60
    "CREATE OR REPLACE TEMP MACRO hdp_pnr_birth_date(s, ref_year) AS CAST(try_strptime("
    "lpad(CAST(hdp_pnr_year(s, ref_year) AS VARCHAR), 4, '0') || substr(right(hdp_pnr_digits(s), 10), 3, 2) || "
    "lpad(CAST(TRY_CAST(substr(right(hdp_pnr_digits(s), 10), 5, 2) AS INTEGER) % 60 AS VARCHAR), 2, '0'), "
    "'%Y%m%d') AS DATE)",
    "CREATE OR REPLACE TEMP MACRO hdp_pnr_valid(s, ref_year) AS "
    "regexp_full_match(s, '([0-9]{6}|[0-9]{8})[-+]?[0-9]{4}') "
    "AND hdp_luhn10(right(hdp_pnr_digits(s), 10)) "
    "AND hdp_pnr_birth_date(s, ref_year) IS NOT NULL "
    "AND hdp_pnr_birth_date(s, ref_year) <= make_date(ref_year, 12, 31)",
)

NUMERIC_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "DECIMAL",
                 "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")


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

    def render(self, sql: str) -> str:
        return (sql.replace("{extract_date}", literal(self.extract_date))
                   .replace("{extract_year}", str(self.extract_date.year)))


def _is_numeric(col_type: str | None) -> bool:
    return bool(col_type) and col_type.upper().split("(")[0] in NUMERIC_TYPES


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
        if _is_numeric(col_types.get(p["column"])) or not all(isinstance(v, str) for v in values):
            target = f"CAST({col} AS VARCHAR)"
            values = [str(v) for v in values]
        else:
            target = col
        expr = f"{col} IS NOT NULL AND {target} NOT IN ({', '.join(literal(v) for v in values)})"
    elif kind == "range":
        val = col if _is_numeric(col_types.get(p["column"])) else f"TRY_CAST({col} AS DOUBLE)"
        expr = f"{col} IS NOT NULL AND ({val} < {literal(p['min'])} OR {val} > {literal(p['max'])})"
    elif kind == "regex":
        expr = f"{col} IS NOT NULL AND NOT regexp_full_match(CAST({col} AS VARCHAR), {literal(p['pattern'])})"
    elif kind == "personnummer":
        expr = f"{col} IS NOT NULL AND NOT coalesce(hdp_pnr_valid({col}, {ctx.extract_date.year}), FALSE)"
    elif kind == "predicate":
        expr = ctx.render(p["fail_when"])
    else:
        raise ValueError(f"{check.id}: kind {kind} is not row-level")
    if "where" in p:
        expr = f"({ctx.render(p['where'])}) AND ({expr})"
    return f"coalesce(({expr}), FALSE)"


def row_scope_expr(check: Check, ctx: RunContext) -> str:
    """Boolean SQL: rows the check is about (its denominator)."""
    if "where" in check.params:
        return f"coalesce(({ctx.render(check.params['where'])}), FALSE)"
    return "TRUE"


def table_scan_sql(table: str, items: Sequence[tuple[str, str]]) -> str:
    """One scan counting every (alias, boolean expression) pair, plus ``__total``."""
    cols = ", ".join(f"count_if({expr}) AS {ident(alias)}" for alias, expr in items)
    return f"SELECT count(*) AS __total{', ' + cols if cols else ''} FROM {ident(table)}"


def _and_join(left: str, right: str, lcols: Sequence[str], rcols: Sequence[str]) -> str:
    return " AND ".join(f"{left}.{ident(a)} = {right}.{ident(b)}" for a, b in zip(lcols, rcols, strict=True))


def set_fail_sql(check: Check, ctx: RunContext) -> str:
    """SQL returning one row (failed, total) for a set-level check on a single table."""
    p = check.params
    t = ident(check.table)
    if check.kind == "unique":
        cols = ", ".join(ident(c) for c in p["columns"])
        return (f"SELECT (SELECT count(*) FROM {t}) - (SELECT count(*) FROM (SELECT DISTINCT {cols} FROM {t})), "
                f"(SELECT count(*) FROM {t})")
    if check.kind == "foreign_key":
        return f"SELECT count_if({_fk_missing(check)}), count(*) FROM {t} AS t"
    if check.kind == "join_predicate":
        cond = _and_join("t", "r", p["join"], p["ref_columns"])
        return (f"SELECT count_if(EXISTS (SELECT 1 FROM {ident(p['ref_table'])} AS r WHERE {cond} "
                f"AND coalesce(({ctx.render(p['fail_when'])}), FALSE))), count(*) FROM {t} AS t")
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
    return f"SELECT count_if(coalesce({anym}, FALSE)), count(*) FROM {ident(table)}"
