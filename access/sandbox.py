"""SQL sandbox: accept only a single read-only SELECT over the caller's own release views.

Two parsers look at every query, and both must agree that it is one SELECT:

1. DuckDB's own parser (``extract_statements``) counts statements and gives their type, so a
   trick that fools sqlglot (comments, odd separators) cannot smuggle a second statement past
   the engine that will run it.
2. sqlglot parses the query into a tree that is checked against allow-lists: the statement
   kind, every table reference (only the caller's views and the query's own CTEs, never a
   qualified name, file path or table function) and every function (an explicit allow-list;
   anything unknown is refused).

The SQL that is finally executed is regenerated from the checked sqlglot tree, so what runs is
exactly what was checked. DuckDB itself also runs with external access disabled and its
configuration locked (see ``access.engine``); this module is the layer that keeps the
consent filter and the system tables out of reach, which DuckDB's settings alone do not.

Nothing here logs the query: it may contain a literal identifier or health value.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, TokenError

from access import sqlnames
from access.errors import QueryRefused

# sqlglot logs unsupported syntax *with the query text*; the query may hold an identifier.
logging.getLogger("sqlglot").setLevel(logging.CRITICAL)

MAX_SQL_LENGTH = 20_000

#: Functions a researcher may call (lower-case sqlglot names; typed functions use their
#: ``sql_name()``, DuckDB-specific ones parse as Anonymous and use their own name). Anything
#: not listed is refused: file readers, ``query()``, catalog functions, ``getenv`` and
#: whatever a future DuckDB adds are out by default.
ALLOWED_FUNCTIONS: frozenset[str] = frozenset(
    {
        # aggregates
        "count",
        "count_if",
        "sum",
        "avg",
        "mean",
        "min",
        "max",
        "median",
        "mode",
        "stddev",
        "stddev_samp",
        "stddev_pop",
        "variance",
        "var_samp",
        "var_pop",
        "variance_pop",
        "corr",
        "covar_samp",
        "covar_pop",
        "approx_distinct",
        "percentile_cont",
        "percentile_disc",
        "quantile_cont",
        "quantile_disc",
        "quantile",
        "bool_and",
        "bool_or",
        "logical_and",
        "logical_or",
        "regr_slope",
        "regr_intercept",
        "regr_r2",
        "string_agg",
        "group_concat",
        "array_agg",
        "list",
        "any_value",
        "first",
        "last",
        # window
        "row_number",
        "rank",
        "dense_rank",
        "percent_rank",
        "cume_dist",
        "ntile",
        "lag",
        "lead",
        "first_value",
        "last_value",
        "nth_value",
        # conditional / casts
        "case",
        "if",
        "coalesce",
        "nullif",
        "ifnull",
        "greatest",
        "least",
        "cast",
        "try_cast",
        # numeric
        "abs",
        "round",
        "width_bucket",
        "floor",
        "ceil",
        "ceiling",
        "sqrt",
        "power",
        "pow",
        "exp",
        "ln",
        "log",
        "log10",
        "log2",
        "sign",
        "trunc",
        "mod",
        "div",
        # text
        "lower",
        "upper",
        "length",
        "substring",
        "substr",
        "left",
        "right",
        "trim",
        "ltrim",
        "rtrim",
        "concat",
        "concat_ws",
        "replace",
        "starts_with",
        "ends_with",
        "str_position",
        "strpos",
        "contains",
        "regexp_like",
        "regexp_matches",
        "regexp_extract",
        "lpad",
        "rpad",
        "split_part",
        "reverse",
        "initcap",
        # dates
        "current_date",
        "current_timestamp",
        "now",
        "extract",
        "date_part",
        "datepart",
        "date_trunc",
        "timestamp_trunc",
        "datetrunc",
        "year",
        "month",
        "day",
        "quarter",
        "week",
        "weekofyear",
        "dayofweek",
        "day_of_week",
        "dayofyear",
        "day_of_year",
        "dayofmonth",
        "day_of_month",
        "date_diff",
        "datediff",
        "date_add",
        "dateadd",
        "date_sub",
        "age",
        "make_date",
        "date_from_parts",
        "strftime",
        "time_to_str",
        "str_to_time",
        "strptime",
        "to_date",
        "date",
        "ts_or_ds_to_date",
        "epoch",
        "time_to_unix",
        "last_day",
        "yearweek",
        "isodow",
        "week_of_year",
        "dayofweek_iso",
        "year_of_week",
        # misc
        "typeof",
        "struct",
        "unnest",
        "array",
        "exists",
        "list_value",
    }
)

#: Statement/clause node types that never belong in a read-only query.
_FORBIDDEN_NODES: tuple[type[exp.Expression], ...] = tuple(
    t
    for t in (
        getattr(exp, name, None)
        for name in (
            "Into",
            "Insert",
            "Update",
            "Delete",
            "Merge",
            "Create",
            "Drop",
            "Alter",
            "Command",
            "Pragma",
            "Set",
            "Copy",
            "Attach",
            "Detach",
            "Install",
            "Use",
            "Describe",
            "Summarize",
            "Show",
            "Placeholder",
            "Parameter",
            "SessionParameter",
            "Transaction",
            "Commit",
            "Rollback",
            "LoadData",
            "Export",
        )
    )
    if isinstance(t, type)
)

_SET_OPS = (exp.Union, exp.Except, exp.Intersect)
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# DuckDB's parser is thread-safe per connection only; one tiny in-memory connection serves as
# the statement splitter. It never holds data.
_splitter = duckdb.connect(":memory:")
_splitter_lock = threading.Lock()


@dataclass(frozen=True)
class ValidatedQuery:
    """A query that passed the sandbox."""

    sql: str  # regenerated from the checked tree: this is what runs
    masked: str  # literals and unknown identifiers masked: this is what the audit log keeps
    masked_sha256: str
    tables: frozenset[str]  # views referenced
    tree: exp.Expr


def echo_name(name: str) -> str:
    """A name the caller wrote, echoed only if it looks like a plain identifier."""
    low = name.lower()
    return repr(low) if _NAME_RE.match(low) else "(a name with unusual characters)"


def check_characters(sql: str) -> None:
    """Refuse control and invisible formatting characters (zero-width, bidi overrides).

    They are the usual way to make a query look different to a reviewer than to the parser.
    Letters outside ASCII are fine (Swedish text in string literals).
    """
    for ch in sql:
        if ch in "\t\n\r":
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            raise QueryRefused(
                "sql.invalid_characters",
                f"the query contains an invisible or control character (U+{ord(ch):04X}); retype it",
            )


def _duckdb_statement_check(sql: str) -> None:
    with _splitter_lock:
        try:
            statements = _splitter.extract_statements(sql)
        except duckdb.Error:
            raise QueryRefused("sql.syntax", "DuckDB cannot parse the query") from None
    if len(statements) != 1:
        raise QueryRefused(
            "sql.multiple_statements",
            f"exactly one statement is allowed, found {len(statements)}",
        )
    if statements[0].type != duckdb.StatementType.SELECT:
        raise QueryRefused("sql.not_select", "only SELECT queries are allowed")


def function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return node.sql_name().lower()


def _ctes_in_scope(node: exp.Expr) -> set[str]:
    """CTE names visible at ``node``: those of the WITH clauses of its enclosing queries.

    Scope matters: a CTE defined in a subquery is not visible outside it, and there an
    unqualified name would resolve to DuckDB's catalog instead, so it must pass the allow-list.
    """
    names: set[str] = set()
    child, parent = node, node.parent
    while parent is not None:
        if isinstance(parent, exp.With):
            # Inside a (non-recursive) CTE body only the CTEs defined before it are visible.
            for cte in parent.expressions:
                if cte is child:
                    break
                names.add(cte.alias_or_name.lower())
        else:
            with_ = parent.args.get("with") or parent.args.get("with_")
            if isinstance(with_, exp.With) and with_ is not child:
                names.update(cte.alias_or_name.lower() for cte in with_.expressions)
        child, parent = parent, parent.parent
    return names


def _check_tree(tree: exp.Expr, allowed: frozenset[str]) -> frozenset[str]:
    if not isinstance(tree, exp.Select | exp.Union | exp.Except | exp.Intersect):
        raise QueryRefused("sql.not_select", "only SELECT queries are allowed")

    for with_ in tree.find_all(exp.With):
        if with_.args.get("recursive"):
            raise QueryRefused("sql.recursive_cte", "recursive CTEs are not allowed")

    used: set[str] = set()
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN_NODES):
            raise QueryRefused(
                "sql.forbidden_construct", f"{type(node).__name__.upper()} is not allowed in a query"
            )
        if isinstance(node, exp.From | exp.Join):
            source = node.this
            if not isinstance(source, exp.Table | exp.Subquery | exp.Values):
                raise QueryRefused("sql.table_function", "only your release's tables may appear in FROM")
        if isinstance(node, exp.Table):
            if not isinstance(node.this, exp.Identifier):
                raise QueryRefused(
                    "sql.table_function", "table functions (file readers and the like) are not allowed"
                )
            if node.args.get("db") or node.args.get("catalog"):
                raise QueryRefused(
                    "sql.table_not_allowed",
                    "qualified table names are not allowed; use your release's table names as listed "
                    "by GET /releases/{id}/schema",
                )
            name = node.name.lower()
            if name in _ctes_in_scope(node):
                continue
            if name not in allowed:
                raise QueryRefused(
                    "sql.table_not_allowed",
                    f"table {echo_name(node.name)}{sqlnames.where_node(node.this)} is not part of your "
                    f"permit for this release{sqlnames.did_you_mean(node.name, sorted(allowed))}",
                )
            used.add(name)
        # Operators (AND, OR, ||, ->>, ...) are Func subclasses in sqlglot; they call nothing.
        if isinstance(node, exp.Func) and not isinstance(node, exp.Binary | exp.Unary | exp.Connector):
            fname = function_name(node)
            if fname not in ALLOWED_FUNCTIONS:
                raise QueryRefused(
                    "sql.function_not_allowed",
                    f"function {echo_name(fname)}{sqlnames.where_node(node)} is not allowed"
                    # a near-miss of an allowed function is likely a typo (a file reader is not)
                    f"{sqlnames.did_you_mean(fname, sorted(ALLOWED_FUNCTIONS), cutoff=0.75)}",
                )
    return frozenset(used)


def mask(tree: exp.Expr, known_names: frozenset[str]) -> str:
    """The query with every literal replaced by ``?``, every comment dropped and every
    identifier that is not a known table or column name replaced by ``_n``.

    This is what the audit log keeps: a literal (a personnummer, a value) or a quoted alias
    could carry an identifier, so neither survives.
    """
    aliases: dict[str, str] = {}

    def repl(node: exp.Expression) -> exp.Expression:
        node.comments = None
        if isinstance(node, exp.Literal):
            return exp.Placeholder()
        if isinstance(node, exp.Identifier):
            name = str(node.this)
            if name.lower() in known_names:
                return exp.to_identifier(name.lower())
            return exp.to_identifier(aliases.setdefault(name, f"_{len(aliases) + 1}"))
        return node

    return tree.copy().transform(repl).sql(dialect="duckdb")


def validate(
    sql: str,
    *,
    tables: Mapping[str, Sequence[str]],
    max_length: int = MAX_SQL_LENGTH,
) -> ValidatedQuery:
    """Check ``sql`` against the sandbox rules; raise ``QueryRefused`` naming the reason.

    ``tables`` maps each view the caller may read to its column names.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise QueryRefused("sql.empty", "the query is empty")
    if len(sql) > max_length:
        raise QueryRefused("sql.too_long", f"the query is longer than {max_length} characters")
    check_characters(sql)
    _duckdb_statement_check(sql)
    try:
        parsed = sqlglot.parse(sql, read="duckdb", error_level=ErrorLevel.RAISE)
    except (ParseError, TokenError):
        raise QueryRefused("sql.syntax", "the query could not be parsed") from None
    statements = [s for s in parsed if s is not None]
    if len(statements) != 1:
        raise QueryRefused(
            "sql.multiple_statements", f"exactly one statement is allowed, found {len(statements)}"
        )
    tree = statements[0]
    allowed = frozenset(t.lower() for t in tables)
    used = _check_tree(tree, allowed)
    # Comments are dropped before regenerating: sqlglot re-emits a line comment as a block
    # comment, and a crafted comment text could otherwise change what DuckDB sees.
    for node in tree.walk():
        node.comments = None
    known = allowed | frozenset(c.lower() for cols in tables.values() for c in cols)
    masked = mask(tree, known)  # the audit keeps what the caller wrote, before aliasing
    # Unaliased results get readable names (count, sum_x), in both tiers (access.sqlnames).
    sqlnames.alias_projections(tree, reserved=known)
    regenerated = tree.sql(dialect="duckdb")
    # What runs must still be exactly one SELECT to DuckDB's own parser.
    _duckdb_statement_check(regenerated)
    sqlnames.remember_source(regenerated, sql)  # engine errors point into the caller's text
    return ValidatedQuery(
        sql=regenerated,
        masked=masked,
        masked_sha256=hashlib.sha256(masked.encode()).hexdigest(),
        tables=used,
        tree=tree,
    )
