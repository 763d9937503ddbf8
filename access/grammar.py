"""The aggregate tier's query language: a closed grammar over SQL.

An aggregate-only permit does not run the researcher's SQL. The query is parsed (the sandbox
has already checked tables and functions) into an ``AggregateQuery``, a small model the layer
understands completely, and anything outside the grammar is refused with a reason code that
names the broken rule and a hint on how to rewrite it. The layer then compiles its own SQL
from the model (``access.aggregate``), so what runs is what was reasoned about.

The grammar (``access/README.md`` has examples)::

    query      := SELECT item, ... FROM source [join ...] [WHERE predicate]
                  [GROUP BY key, ... | GROUP BY ALL] [ORDER BY output [ASC|DESC], ...] [LIMIT n]
    source     := <release table> [[AS] alias]
    join       := [INNER | LEFT] JOIN source ON a.person_id = b.person_id | USING (person_id)
    item       := key [[AS] name] | measure [[AS] name]
    key        := column | f(key, literal, ...)        -- one column, allow-listed f (KEY_FUNCTIONS)
                | CASE WHEN cond THEN literal ... [ELSE literal] END   -- conditions on that column
    measure    := count(*) | count(column) | count(DISTINCT person_id)
                | sum | avg | mean | variance | var_samp | var_pop | stddev | stddev_samp
                  | stddev_pop (column) | round(measure, n)
    predicate  := cond | predicate AND predicate | predicate OR predicate | NOT predicate
    cond       := key op literal | key [NOT] IN (literal, ...) | key [NOT] BETWEEN literal AND literal
                | key IS [NOT] NULL | key [NOT] [I]LIKE 'pattern'

The pseudonym (``person_id``) appears only inside ``count(DISTINCT person_id)`` and in join
conditions. There is no subquery, CTE, set operation, window, LATERAL or table function
anywhere. MIN, MAX, MEDIAN, MODE and quantiles are refused: each publishes one person's
value (the maximum of a cell *is* someone's measurement), and rounding it or asking for more
persons does not change that; banded counts (``width_bucket``, ``CASE``) describe the same
distribution without naming anyone.

Pure: sqlglot trees in, frozen values out; no DuckDB, no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sqlglot import exp

from access import sqlnames
from access.errors import QueryRefused
from access.sandbox import echo_name

PSEUDONYM = "person_id"

#: Scalar functions a group key (or a condition's left side) may apply to its one column.
#: Every argument but the column must be a literal.
KEY_FUNCTIONS: tuple[type[exp.Expression], ...] = tuple(
    t
    for t in (
        getattr(exp, name, None)
        for name in (
            "Year",
            "Month",
            "Quarter",
            "Day",
            "Week",
            "WeekOfYear",
            "DayOfWeek",
            "DayOfWeekIso",
            "DayOfMonth",
            "DayOfYear",
            "YearOfWeek",
            "Extract",
            "DateTrunc",
            "TimestampTrunc",
            "WidthBucket",
            "Floor",
            "Ceil",
            "Round",
            "Abs",
            "Substring",
            "Left",
            "Upper",
            "Lower",
            "Trim",
            "Length",
            "Cast",
            "TryCast",
            "Coalesce",
            "Greatest",
            "Least",
            "Add",
            "Sub",
            "Mul",
            "Div",
            "IntDiv",
            "Mod",
            "Neg",
            "Paren",
        )
    )
    if isinstance(t, type)
)
#: DuckDB functions that sqlglot parses as anonymous calls; same rule as above.
KEY_FUNCTION_NAMES = frozenset(
    {"date_part", "datepart", "yearweek", "isodow", "isoyear", "date_trunc", "century"}
)

_CONDITIONS = (exp.EQ, exp.NEQ, exp.LT, exp.LTE, exp.GT, exp.GTE, exp.NullSafeEQ, exp.NullSafeNEQ)
_PATTERNS = (exp.Like, exp.ILike)
_SCALAR_TYPES = (
    "BOOLEAN",
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "FLOAT",
    "DOUBLE",
    "REAL",
    "DATE",
    "TIMESTAMP",
    "TIMESTAMP WITH TIME ZONE",
    "VARCHAR",
    "TIME",
    "INTERVAL",
)
NUMERIC_TYPES = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "FLOAT",
    "DOUBLE",
    "REAL",
)

#: Measures: name in the model -> what it is (for messages and the README).
MEASURES = {
    "persons": "count(DISTINCT person_id)",
    "rows": "count(*)",
    "count": "count(column): rows where the column has a value",
    "sum": "sum(column)",
    "mean": "avg(column)",
    "variance": "var_samp(column)",
    "variance_pop": "var_pop(column)",
    "stddev": "stddev_samp(column)",
    "stddev_pop": "stddev_pop(column)",
}
_MEASURE_NODES: dict[type[exp.Expression], str] = {
    exp.Sum: "sum",
    exp.Avg: "mean",
    exp.Variance: "variance",
    exp.VariancePop: "variance_pop",
    exp.Stddev: "stddev",
    exp.StddevSamp: "stddev",
    exp.StddevPop: "stddev_pop",
}
_REFUSED_AGGREGATES: dict[str, str] = {
    "min": "publishes one person's value",
    "max": "publishes one person's value",
    "median": "publishes one person's value in a cell with an odd count",
    "mode": "publishes a value that may be one person's",
    "quantile": "publishes one person's value",
    "quantile_cont": "publishes one person's value",
    "quantile_disc": "publishes one person's value",
    "percentile_cont": "publishes one person's value",
    "percentile_disc": "publishes one person's value",
    "approx_quantile": "publishes one person's value",
    "arg_min": "publishes one person's value",
    "arg_max": "publishes one person's value",
    "any_value": "publishes one person's value",
    "first": "publishes one person's value",
    "last": "publishes one person's value",
    "list": "publishes records",
    "array_agg": "publishes records",
    "string_agg": "publishes records",
    "group_concat": "publishes records",
    "count_if": "counts a condition inside a cell (put the condition in WHERE or a CASE group key)",
    "corr": "is not in the allow-list",
    "covar_samp": "is not in the allow-list",
    "covar_pop": "is not in the allow-list",
    "approx_distinct": "is not exact, so not checkable",
    "bool_and": "publishes one person's value",
    "bool_or": "publishes one person's value",
    "logical_and": "publishes one person's value",
    "logical_or": "publishes one person's value",
}
HINT_MEASURES = (
    "use count(*), count(column), count(DISTINCT person_id), sum, avg, var_samp, var_pop, "
    "stddev_samp or stddev_pop of one column, optionally inside round(..., n)"
)


@dataclass(frozen=True)
class Source:
    table: str
    alias: str
    join: str  # "from", "inner" or "left"


@dataclass(frozen=True)
class ColumnRef:
    alias: str  # the source's alias
    table: str
    name: str


@dataclass(frozen=True)
class Key:
    sql: str  # DuckDB SQL over qualified columns ("alias"."column")
    column: ColumnRef


@dataclass(frozen=True)
class Measure:
    kind: str  # a key of MEASURES
    column: ColumnRef | None  # None for persons and rows
    digits: int | None = None  # round(measure, digits)


@dataclass(frozen=True)
class Output:
    name: str
    key: int | None = None  # index into keys
    measure: int | None = None  # index into measures


@dataclass(frozen=True)
class OrderItem:
    output: int
    descending: bool


@dataclass(frozen=True)
class AggregateQuery:
    sources: tuple[Source, ...]
    keys: tuple[Key, ...]
    measures: tuple[Measure, ...]
    outputs: tuple[Output, ...]
    where: str | None  # DuckDB SQL over qualified columns
    order: tuple[OrderItem, ...]
    limit: int | None
    #: the top-level AND parts of WHERE, each canonical SQL
    conjuncts: tuple[str, ...]
    #: the same parts as (form with literals masked, full text), for the ledger
    terms: tuple[tuple[str, str], ...] = ()
    #: when the whole filter is NOT (...): the parts inside, likewise (complementary queries)
    negates: tuple[tuple[str, str], ...] | None = None

    def measure_of(self, output: Output) -> Measure:
        """The measure an output shows (an output is a grouping key or a measure)."""
        if output.measure is None:
            raise ValueError(f"output {output.name!r} is a grouping key, not a measure")
        return self.measures[output.measure]

    @property
    def shape(self) -> str:
        """The table a query asks for (its sources and group keys), whatever it filters."""
        return (
            "FROM "
            + " ".join(f"{s.join}:{s.table}" for s in self.sources)
            + "\nKEYS "
            + " | ".join(k.sql for k in self.keys)
        )

    @property
    def canonical(self) -> str:
        """One text for one query, whatever its spelling (aliases, positions, order of output
        names aside): what the ledger fingerprints."""
        measures = " | ".join(
            f"{m.kind}({m.column.table + '.' + m.column.name if m.column else ''})" for m in self.measures
        )
        return f"{self.shape}\nMEASURES {measures}\nWHERE {' AND '.join(sorted(self.conjuncts))}"

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.canonical.encode()).hexdigest()


def refuse(reason: str, message: str, hint: str) -> QueryRefused:
    return QueryRefused(f"aggregate.{reason}", f"{message}. Hint: {hint}")


class _Parser:
    """Turns one sandbox-checked SELECT into an ``AggregateQuery`` or refuses it."""

    def __init__(self, views: Mapping[str, Sequence[tuple[str, str]]]) -> None:
        # table -> column -> type
        self.views = {t.lower(): {c.lower(): ty.upper() for c, ty in cols} for t, cols in views.items()}
        self.sources: list[Source] = []

    # -- sources ----------------------------------------------------------------
    def parse_sources(self, tree: exp.Select) -> None:
        from_ = tree.args.get("from_") or tree.args.get("from")
        if not isinstance(from_, exp.From) or not isinstance(from_.this, exp.Table):
            raise refuse(
                "from",
                "FROM must name one of your release's tables",
                "write FROM register_visit, or join tables on person_id",
            )
        if from_.args.get("expressions"):
            raise refuse("join", "comma joins are not allowed", "use JOIN ... ON a.person_id = b.person_id")
        self._add_source(from_.this, "from")
        for join in tree.args.get("joins") or []:
            self._parse_join(join)

    def _add_source(self, table: exp.Table, join: str) -> Source:
        name = table.name.lower()
        if name not in self.views:
            raise refuse(
                "from", f"table {echo_name(name)} is not part of your permit", "see GET /releases/{id}/schema"
            )
        alias = (table.alias or name).lower()
        if any(s.alias == alias for s in self.sources):
            raise refuse(
                "join", f"the name {echo_name(alias)} is used twice", "give each joined table its own alias"
            )
        source = Source(name, alias, join)
        self.sources.append(source)
        return source

    def _parse_join(self, join: exp.Join) -> None:
        hint = "join only on the pseudonym: JOIN t2 ON t1.person_id = t2.person_id (INNER or LEFT)"
        if not isinstance(join.this, exp.Table):
            raise refuse("join", "only your release's tables may be joined", hint)
        side = (join.args.get("side") or "").upper()
        kind = (join.args.get("kind") or "").upper()
        if join.args.get("method") or kind not in ("", "INNER", "OUTER") or side not in ("", "LEFT"):
            raise refuse("join", f"{' '.join(x for x in (side, kind, 'JOIN') if x)} is not allowed", hint)
        if kind == "OUTER" and side != "LEFT":
            raise refuse("join", "only INNER and LEFT joins are allowed", hint)
        source = self._add_source(join.this, "left" if side == "LEFT" else "inner")
        using = join.args.get("using")
        on = join.args.get("on")
        if using:
            if [u.name.lower() for u in using] != [PSEUDONYM]:
                raise refuse("join", "USING may name person_id only", hint)
            return
        if not isinstance(on, exp.EQ):
            raise refuse("join", "the join condition must be one person_id equality", hint)
        sides = [on.this, on.expression]
        if not all(isinstance(c, exp.Column) and c.name.lower() == PSEUDONYM for c in sides):
            raise refuse("join", "the join condition must compare person_id with person_id", hint)
        aliases = {self.resolve(c).alias for c in sides}
        if source.alias not in aliases or len(aliases) != 2:
            raise refuse("join", "the join condition must link the joined table to an earlier one", hint)

    # -- columns ------------------------------------------------------------------
    def resolve(self, column: exp.Column) -> ColumnRef:
        name = column.name.lower()
        qualifier = column.table.lower() if column.table else None
        if column.args.get("db") or column.args.get("catalog"):
            raise refuse(
                "column", "qualified names beyond table.column are not allowed", "write alias.column"
            )
        if qualifier:
            matches = [s for s in self.sources if s.alias == qualifier]
            if not matches:
                raise refuse(
                    "column",
                    f"{echo_name(qualifier)} is not a table of this query",
                    "use a FROM or JOIN alias",
                )
        else:
            matches = [s for s in self.sources if name in self.views[s.table]]
            if len(matches) > 1:
                raise refuse(
                    "column",
                    f"column {echo_name(name)} is in more than one joined table",
                    "qualify it: alias.column",
                )
        if not matches or name not in self.views[matches[0].table]:
            known = [c for s in (matches or self.sources) for c in self.views[s.table]]
            raise refuse(
                "column",
                f"unknown column {echo_name(name)}{sqlnames.where_node(column)}"
                f"{sqlnames.did_you_mean(name, known)}",
                "the permitted columns of each table: GET /releases/{id}/schema",
            )
        return ColumnRef(matches[0].alias, matches[0].table, name)

    def column_type(self, ref: ColumnRef) -> str:
        return self.views[ref.table][ref.name]

    def _qualified(self, node: exp.Expression) -> tuple[exp.Expression, ColumnRef]:
        """A copy of a one-column expression with its column qualified, and that column."""
        refs: list[ColumnRef] = []

        def qualify(n: exp.Expression) -> exp.Expression:
            if isinstance(n, exp.Column):
                ref = self.resolve(n)
                refs.append(ref)
                return exp.column(ref.name, table=ref.alias, quoted=True)
            return n

        out = node.copy().transform(qualify)
        return out, refs[0]

    # -- keys and conditions --------------------------------------------------------
    def key(self, node: exp.Expression, *, what: str) -> Key:
        """A group key (or a condition's subject): one column under allow-listed functions."""
        hint = (
            "group by a column, or by one column under date parts, date_trunc, width_bucket, "
            "arithmetic with literals, or CASE WHEN <condition on that column> THEN <literal>"
        )
        columns = list(node.find_all(exp.Column))
        if not columns:
            raise refuse("group_key", f"{what} has no column", hint)
        if len({self.resolve(c) for c in columns}) != 1:
            raise refuse("group_key", f"{what} uses more than one column", hint)
        self._check_key_node(node, hint, what)
        qualified, ref = self._qualified(node)
        if ref.name == PSEUDONYM:
            raise refuse(
                "pseudonym",
                f"{what} uses person_id",
                "person_id may appear only in count(DISTINCT person_id) and in join conditions",
            )
        return Key(qualified.sql(dialect="duckdb"), ref)

    def _check_key_node(self, node: exp.Expression, hint: str, what: str) -> None:
        if isinstance(node, exp.Column):
            return
        if _is_literal(node):
            return
        if isinstance(node, exp.Case):
            self._check_case(node, hint, what)
            return
        if isinstance(node, exp.Anonymous) and str(node.name).lower() in KEY_FUNCTION_NAMES:
            pass
        elif not isinstance(node, KEY_FUNCTIONS):
            raise refuse(
                "group_key", f"{what} uses {_describe(node)}, which the grammar does not allow", hint
            )
        if isinstance(node, exp.Cast | exp.TryCast):
            to = node.args.get("to")
            if to is None or to.sql(dialect="duckdb").upper() not in _SCALAR_TYPES:
                raise refuse("group_key", f"{what} casts to a type that is not a plain value", hint)
        arguments = list(node.iter_expressions())
        with_column = [a for a in arguments if any(True for _ in a.find_all(exp.Column))]
        if len(with_column) != 1:
            raise refuse("group_key", f"{what} must apply functions to exactly one column", hint)
        for arg in arguments:
            if arg is with_column[0]:
                self._check_key_node(arg, hint, what)
            elif not (_is_literal(arg) or isinstance(arg, exp.Var | exp.DataType)):
                raise refuse("group_key", f"{what}: every argument but the column must be a literal", hint)

    def _check_case(self, node: exp.Case, hint: str, what: str) -> None:
        if node.this is not None:  # CASE col WHEN lit THEN lit ...
            self._check_key_node(node.this, hint, what)
        for branch in node.args.get("ifs") or []:
            cond, result = branch.this, branch.args.get("true")
            if node.this is not None:
                if not _is_literal(cond):
                    raise refuse("group_key", f"{what}: CASE x WHEN must compare with literals", hint)
            else:
                self.condition(cond)
            if not _is_literal(result):
                raise refuse("group_key", f"{what}: CASE results must be literals", hint)
        default = node.args.get("default")
        if default is not None and not _is_literal(default):
            raise refuse("group_key", f"{what}: CASE results must be literals", hint)

    def condition(self, node: exp.Expression) -> None:
        """Check a WHERE predicate (or a CASE condition) against the grammar."""
        hint = (
            "compare one column (or a date part of it) with literals: =, <>, <, <=, >, >=, IN (...), "
            "BETWEEN, IS [NOT] NULL, LIKE, joined by AND, OR, NOT"
        )
        if isinstance(node, exp.Paren):
            self.condition(node.this)
        elif isinstance(node, exp.And | exp.Or):
            self.condition(node.this)
            self.condition(node.expression)
        elif isinstance(node, exp.Not):
            self.condition(node.this)
        elif isinstance(node, _CONDITIONS):
            left, right = node.this, node.expression
            if _is_literal(left) and not _is_literal(right):
                left, right = right, left
            if not _is_literal(right):
                raise refuse("predicate", "a condition compares something other than a literal", hint)
            self.key(left, what="a condition")
        elif isinstance(node, exp.In):
            if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
                raise refuse("subquery", "IN takes a list of literals here", hint)
            if not node.expressions or not all(_is_literal(e) for e in node.expressions):
                raise refuse("predicate", "IN takes a list of literals", hint)
            self.key(node.this, what="a condition")
        elif isinstance(node, exp.Between):
            if not (_is_literal(node.args["low"]) and _is_literal(node.args["high"])):
                raise refuse("predicate", "BETWEEN takes literals", hint)
            self.key(node.this, what="a condition")
        elif isinstance(node, exp.Is):
            if not isinstance(node.expression, exp.Null | exp.Boolean):
                raise refuse("predicate", "IS takes NULL, TRUE or FALSE", hint)
            self.key(node.this, what="a condition")
        elif isinstance(node, _PATTERNS):
            if not (_is_literal(node.expression) and not node.args.get("escape")):
                raise refuse("predicate", "LIKE takes a literal pattern", hint)
            self.key(node.this, what="a condition")
        else:
            raise refuse("predicate", f"the condition uses {_describe(node)}", hint)

    # -- measures -------------------------------------------------------------------
    def measure(self, node: exp.Expression, position: int) -> Measure | None:
        """The measure of a select item, or None when it is not an aggregate at all."""
        digits = None
        if isinstance(node, exp.Round) and _contains_aggregate(node.this):
            dec = node.args.get("decimals")
            if dec is not None and not (isinstance(dec, exp.Literal) and not dec.is_string):
                raise refuse(
                    "measure", f"output column {position}: round(..., n) takes a literal n", HINT_MEASURES
                )
            digits = int(dec.this) if dec is not None else 0
            node = node.this
        if not _contains_aggregate(node):
            return None
        where = f"output column {position}"
        if isinstance(node, exp.Filter):
            raise refuse(
                "measure",
                f"{where}: FILTER (WHERE ...) is not allowed",
                "move the condition to WHERE, or to a CASE group key",
            )
        if not isinstance(node, exp.AggFunc):
            raise refuse(
                "measure", f"{where} computes with aggregates", "compute from the published cells yourself"
            )
        name = _function_name(node)
        if name in _REFUSED_AGGREGATES:
            raise refuse(
                "aggregate_not_allowed", f"{where}: {name} {_REFUSED_AGGREGATES[name]}", HINT_MEASURES
            )
        arg = node.this
        if isinstance(node, exp.Count):
            if isinstance(arg, exp.Star):
                return Measure("rows", None, digits)
            if isinstance(arg, exp.Distinct):
                inner = arg.expressions
                if (
                    len(inner) == 1
                    and isinstance(inner[0], exp.Column)
                    and inner[0].name.lower() == PSEUDONYM
                ):
                    self.resolve(inner[0])
                    return Measure("persons", None, digits)
                raise refuse(
                    "measure",
                    f"{where}: count(DISTINCT ...) counts persons only",
                    "write count(DISTINCT person_id)",
                )
            if isinstance(arg, exp.Column):
                ref = self._measure_column(arg, where, numeric=False)
                return Measure("count", ref, digits)
            raise refuse(
                "measure_argument", f"{where}: count takes *, a column or DISTINCT person_id", HINT_MEASURES
            )
        kind = _MEASURE_NODES.get(type(node)) or {"mean": "mean"}.get(name)
        if kind is None:
            raise refuse("aggregate_not_allowed", f"{where}: {name} is not in the allow-list", HINT_MEASURES)
        if len(node.expressions) or isinstance(arg, exp.Distinct) or not isinstance(arg, exp.Column):
            raise refuse(
                "measure_argument",
                f"{where}: {name} takes one plain column",
                "aggregate a column; put conditions in WHERE or a CASE group key",
            )
        return Measure(kind, self._measure_column(arg, where, numeric=True), digits)

    def _measure_column(self, column: exp.Column, where: str, *, numeric: bool) -> ColumnRef:
        ref = self.resolve(column)
        if ref.name == PSEUDONYM:
            raise refuse(
                "pseudonym",
                f"{where} aggregates person_id",
                "person_id may appear only in count(DISTINCT person_id)",
            )
        if numeric and self.column_type(ref) not in NUMERIC_TYPES:
            raise refuse(
                "measure_argument", f"{where}: {ref.name} is not numeric", "sum and average numbers only"
            )
        return ref


class SelectItem(NamedTuple):
    """One item of the SELECT list: its output name and its expression (alias removed)."""

    name: str
    node: exp.Expression


@dataclass(frozen=True)
class Filter:
    """The WHERE clause, qualified, with its top-level parts for the ledger."""

    sql: str | None = None
    conjuncts: tuple[str, ...] = ()
    terms: tuple[tuple[str, str], ...] = ()
    negates: tuple[tuple[str, str], ...] | None = None


_CLAUSES_REFUSED = (
    ("having", "HAVING"),
    ("qualify", "QUALIFY"),
    ("offset", "OFFSET"),
    ("distinct", "DISTINCT"),
    ("sample", "SAMPLE"),
    ("prewhere", "PREWHERE"),
    ("connect", "CONNECT BY"),
    ("into", "INTO"),
)


def parse(tree: exp.Expr, views: Mapping[str, Sequence[tuple[str, str]]]) -> AggregateQuery:
    """Check ``tree`` (already through ``access.sandbox``) against the grammar.

    ``views`` maps each permitted table to its (column, DuckDB type) pairs.
    """
    select = _one_plain_select(tree)
    p = _Parser(views)
    p.parse_sources(select)
    where = _filter(p, select.args.get("where"))
    items = _select_items(select)
    measures_by_item = {
        i: m for i, item in enumerate(items) if (m := p.measure(item.node, i + 1)) is not None
    }
    if not measures_by_item:
        raise refuse("not_aggregate", "an aggregate-only permit needs at least one measure", HINT_MEASURES)
    keys = _keys(p, _group_key_nodes(p, select, items, measures_by_item))
    outputs, measures = _outputs(p, items, measures_by_item, keys)
    return AggregateQuery(
        tuple(p.sources),
        tuple(keys),
        tuple(measures),
        tuple(outputs),
        where.sql,
        tuple(_order(select, items, outputs, keys, p)),
        _limit(select),
        where.conjuncts,
        where.terms,
        where.negates,
    )


def _one_plain_select(tree: exp.Expr) -> exp.Select:
    """``tree`` if it is one SELECT without a clause the grammar refuses."""
    if isinstance(tree, exp.Union | exp.Except | exp.Intersect):
        raise refuse(
            "set_operation", "UNION, EXCEPT and INTERSECT are not allowed", "ask each part separately"
        )
    if not isinstance(tree, exp.Select):
        raise refuse("shape", "an aggregate-only permit accepts one SELECT ... GROUP BY query", HINT_MEASURES)
    _refuse_anywhere(tree)
    for arg, what in _CLAUSES_REFUSED:
        if tree.args.get(arg):
            raise refuse(
                "clause",
                f"{what} is not allowed with an aggregate-only permit",
                "filter rows with WHERE; filter published cells in your own code",
            )
    return tree


def _filter(p: _Parser, where_node: exp.Expression | None) -> Filter:
    if where_node is None:
        return Filter()
    p.condition(where_node.this)
    qualified = _qualify_all(p, where_node.this)
    terms = _terms(qualified)
    inner = _unparen(qualified)
    return Filter(
        sql=qualified.sql(dialect="duckdb"),
        conjuncts=tuple(full for _, full in terms),
        terms=terms,
        negates=_terms(inner.this) if isinstance(inner, exp.Not) else None,
    )


def _select_items(tree: exp.Select) -> list[SelectItem]:
    selects = list(tree.expressions)
    if any(
        isinstance(s, exp.Star) or (isinstance(s, exp.Column) and isinstance(s.this, exp.Star))
        for s in selects
    ):
        raise refuse(
            "shape", "SELECT * is not allowed with an aggregate-only permit", "name group keys and measures"
        )
    items = []
    for s in selects:
        inner = s.this if isinstance(s, exp.Alias) else s
        items.append(SelectItem(s.alias_or_name if isinstance(s, exp.Alias) else _default_name(inner), inner))
    return items


def _group_key_nodes(
    p: _Parser, tree: exp.Select, items: list[SelectItem], measures_by_item: Mapping[int, Measure]
) -> list[exp.Expression]:
    """The GROUP BY expressions, positions and output aliases resolved to the items they name."""
    group = tree.args.get("group")
    if group is None:
        return []
    if any(group.args.get(k) for k in ("rollup", "cube", "grouping_sets", "totals")):
        raise refuse(
            "clause", "ROLLUP, CUBE and GROUPING SETS are not allowed", "ask for each margin separately"
        )
    if group.args.get("all"):
        return [item.node for i, item in enumerate(items) if i not in measures_by_item]
    key_nodes: list[exp.Expression] = []
    aliases = {item.name.lower(): item.node for item in items}
    for g in group.expressions:
        if isinstance(g, exp.Literal) and not g.is_string:
            idx = int(g.this) - 1
            if not 0 <= idx < len(items):
                raise refuse("group_key", "GROUP BY position out of range", "count select items from 1")
            key_nodes.append(items[idx].node)
        elif (
            isinstance(g, exp.Column)
            and not g.table
            and g.name.lower() in aliases
            and not _is_view_column(p, g)
        ):
            key_nodes.append(aliases[g.name.lower()])
        else:
            key_nodes.append(g)
    return key_nodes


def _keys(p: _Parser, key_nodes: list[exp.Expression]) -> list[Key]:
    """The distinct group keys (the same expression twice is one key)."""
    keys: list[Key] = []
    for node in key_nodes:
        if _contains_aggregate(node):
            raise refuse("group_key", "a group key contains an aggregate", "group by columns")
        key = p.key(node, what="a group key")
        if all(key.sql != k.sql for k in keys):
            keys.append(key)
    return keys


def _outputs(
    p: _Parser, items: list[SelectItem], measures_by_item: Mapping[int, Measure], keys: list[Key]
) -> tuple[list[Output], list[Measure]]:
    """Each output column as a measure or a group key; every key must be selected."""
    outputs: list[Output] = []
    measures: list[Measure] = []
    selected_keys: set[int] = set()
    for i, (name, inner) in enumerate(items):
        if i in measures_by_item:
            measures.append(measures_by_item[i])
            outputs.append(Output(name, measure=len(measures) - 1))
            continue
        key = p.key(inner, what=f"output column {i + 1}")
        match = next((j for j, k in enumerate(keys) if k.sql == key.sql), None)
        if match is None:
            raise refuse(
                "not_aggregate",
                f"output column {i + 1} is neither a group key nor a measure",
                "add it to GROUP BY, or aggregate it",
            )
        selected_keys.add(match)
        outputs.append(Output(name, key=match))
    if len(selected_keys) != len(keys):
        raise refuse(
            "group_not_selected",
            "every GROUP BY key must also be selected",
            "select each key, so that two cells never look alike",
        )
    return outputs, measures


def _unparen(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def _terms(node: exp.Expr) -> tuple[tuple[str, str], ...]:
    """(masked form, full text) of each top-level AND part of a filter."""
    node = _unparen(node)
    parts = list(node.flatten()) if isinstance(node, exp.And) else [node]
    out = []
    for part in parts:
        part = _unparen(part)
        masked = part.copy().transform(lambda n: exp.Placeholder() if _is_literal(n) else n)
        out.append((masked.sql(dialect="duckdb"), part.sql(dialect="duckdb")))
    return tuple(out)


def _order(tree: exp.Select, items, outputs, keys, p: _Parser) -> list[OrderItem]:
    order = tree.args.get("order")
    if order is None:
        return []
    hint = "order by an output column: its name, its position, or the same expression"
    out: list[OrderItem] = []
    names = {name.lower(): i for i, (name, _) in enumerate(items)}
    texts = {inner.sql(dialect="duckdb"): i for i, (_, inner) in enumerate(items)}
    for o in order.expressions:
        node = o.this
        idx = None
        if isinstance(node, exp.Literal) and not node.is_string:
            idx = int(node.this) - 1
            if not 0 <= idx < len(items):
                raise refuse("order", "ORDER BY position out of range", hint)
        elif isinstance(node, exp.Column) and not node.table and node.name.lower() in names:
            idx = names[node.name.lower()]
        elif node.sql(dialect="duckdb") in texts:
            idx = texts[node.sql(dialect="duckdb")]
        elif not _contains_aggregate(node):
            try:
                key = p.key(node, what="ORDER BY")
            except QueryRefused:
                raise refuse("order", "ORDER BY names something that is not an output column", hint) from None
            idx = next(
                (
                    i
                    for i, out_ in enumerate(outputs)
                    if out_.key is not None and keys[out_.key].sql == key.sql
                ),
                None,
            )
        if idx is None:
            raise refuse("order", "ORDER BY names something that is not an output column", hint)
        out.append(OrderItem(idx, bool(o.args.get("desc"))))
    return out


def _limit(tree: exp.Select) -> int | None:
    limit = tree.args.get("limit")
    if limit is None:
        return None
    value = limit.expression if isinstance(limit, exp.Limit) else None
    if not (isinstance(value, exp.Literal) and not value.is_string and str(value.this).isdigit()):
        raise refuse("clause", "LIMIT takes a whole number", "write LIMIT 10")
    return int(value.this)


def _refuse_anywhere(tree: exp.Expr) -> None:
    """Constructs that are refused wherever they appear, with the reason that fits."""
    for node in tree.walk():
        if isinstance(node, exp.With):
            raise refuse(
                "cte", "WITH (CTEs) is not allowed with an aggregate-only permit", "write one SELECT"
            )
        if isinstance(node, exp.Subquery | exp.Exists) or (isinstance(node, exp.Select) and node is not tree):
            raise refuse(
                "subquery",
                "subqueries are not allowed with an aggregate-only permit",
                "write one SELECT; combine published results in your own code",
            )
        if isinstance(node, exp.Union | exp.Except | exp.Intersect):
            raise refuse(
                "set_operation", "UNION, EXCEPT and INTERSECT are not allowed", "ask each part separately"
            )
        if isinstance(node, exp.Window):
            raise refuse(
                "window",
                "window functions are not allowed with an aggregate-only permit",
                "compute ranks and running totals from the published cells",
            )
        if isinstance(node, exp.Rollup | exp.Cube | exp.GroupingSets):
            raise refuse(
                "clause", "ROLLUP, CUBE and GROUPING SETS are not allowed", "ask for each margin separately"
            )
        if isinstance(node, exp.Lateral | exp.Unnest | exp.Pivot | exp.TableSample):
            raise refuse(
                "shape",
                f"{type(node).__name__.upper()} is not allowed with an aggregate-only permit",
                "write one SELECT over your release's tables",
            )


def _qualify_all(p: _Parser, node: exp.Expression) -> exp.Expression:
    def qualify(n: exp.Expression) -> exp.Expression:
        if isinstance(n, exp.Column):
            ref = p.resolve(n)
            return exp.column(ref.name, table=ref.alias, quoted=True)
        return n

    return node.copy().transform(qualify)


def _is_view_column(p: _Parser, column: exp.Column) -> bool:
    name = column.name.lower()
    return any(name in p.views[s.table] for s in p.sources)


def _is_literal(node: exp.Expression | None) -> bool:
    if node is None:
        return False
    if isinstance(node, exp.Literal | exp.Null | exp.Boolean):
        return True
    if isinstance(node, exp.Neg | exp.Paren):
        return _is_literal(node.this)
    if isinstance(node, exp.Cast):  # DATE '2020-01-01'
        return _is_literal(node.this)
    return False


def _contains_aggregate(node: exp.Expression) -> bool:
    return isinstance(node, exp.AggFunc) or any(True for _ in node.find_all(exp.AggFunc))


def _function_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return node.sql_name().lower() if isinstance(node, exp.Func) else type(node).__name__.lower()


def _describe(node: exp.Expression) -> str:
    if isinstance(node, exp.Func) and not isinstance(node, exp.Binary | exp.Unary | exp.Connector):
        return f"function {_function_name(node)}"
    return type(node).__name__.upper()


def _default_name(node: exp.Expression) -> str:
    """The output name of a select item without an alias: its column's name, else a readable
    one (``count``, ``sum_x``; the sandbox has aliased the items of a checked tree the same way)."""
    return sqlnames.readable_name(node)
