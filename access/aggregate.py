"""Aggregate-only output tier: accept grouped aggregates, compute per-cell statistics, and
publish the result through disclosure control.

An aggregate-only permit accepts one shape of query, so that every output row is a cell and
every cell's contributors can be counted::

    SELECT <group keys>, <COUNT/SUM/AVG/STDDEV/VARIANCE aggregates> FROM <view> [JOIN <view> ...]
    [WHERE ...] GROUP BY <group keys> [ORDER BY ...]

Every grouping key must be selected (otherwise two cells would look alike). MIN, MAX,
MEDIAN, MODE, quantiles and list aggregates are refused: each publishes one person's value.
HAVING, LIMIT, DISTINCT, window functions, ROLLUP/CUBE and CTEs are refused: each either
hides cells from the suppression pass or publishes values that are not cells.

Next to the researcher's query the layer runs a statistics query in the same snapshot: per
cell the number of distinct persons (``person_id`` of the first table in FROM), the holders
contributing (each holder's own ``min_cell_count`` applies) and, for every SUM/AVG, the
per-person contributions for the dominance rule.

Suppressed cells (primary and secondary) are left out of the published table entirely, keys
and all; the summary (JSON ``meta.disclosure`` and the ``X-HDP-Cells-Suppressed`` header)
says how many.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

from access.disclosure import Cell, DisclosureTooComplex, is_dominated, round_to_base, suppress
from access.errors import QueryRefused

COUNT_AGGS = (exp.Count, exp.CountIf)
SUM_AGGS = (exp.Sum, exp.Avg)
OTHER_AGGS = (exp.Stddev, exp.StddevSamp, exp.StddevPop, exp.Variance, exp.VariancePop)
MAX_CELLS = 50_000


@dataclass(frozen=True)
class DisclosureSettings:
    thresholds: Mapping[str, int]  # holder id -> min_cell_count
    default_threshold: int = 10  # for a holder not in the map (fail closed: strict)
    dominance_n: int = 2
    dominance_k: float = 0.9
    rounding_base: int = 0


@dataclass(frozen=True)
class AggregatePlan:
    result_sql: str
    stats_sql: str
    n_keys: int
    n_outputs: int
    count_positions: tuple[int, ...]
    n_dominance: int


def _refuse(reason: str, message: str) -> QueryRefused:
    return QueryRefused(reason, message)


def _agg_kind(node: exp.Expression) -> str | None:
    """'count', 'sum' or 'other' for an allowed aggregate (optionally in ROUND/FILTER)."""
    if isinstance(node, exp.Round):
        node = node.this
    if isinstance(node, exp.Filter):
        node = node.this
    if isinstance(node, COUNT_AGGS):
        return "count"
    if isinstance(node, SUM_AGGS):
        return "sum"
    if isinstance(node, OTHER_AGGS):
        return "other"
    return None


def _contribution(node: exp.Expression) -> exp.Expression:
    """The per-person SUM behind a SUM/AVG select item (ROUND stripped, AVG -> SUM)."""
    if isinstance(node, exp.Round):
        node = node.this
    node = node.copy()
    if isinstance(node, exp.Filter):
        inner = node.this
        node.set("this", exp.Sum(this=inner.this.copy()))
        return node
    return exp.Sum(this=node.this.copy())


def plan(tree: exp.Expression, *, dominance_n: int = 2) -> AggregatePlan:
    """Check the aggregate-only shape and build the result and statistics queries."""
    if not isinstance(tree, exp.Select):
        raise _refuse("aggregate.shape", "aggregate-only permits accept one SELECT ... GROUP BY query")
    for arg, what in (
        ("with_", "CTEs"), ("having", "HAVING"), ("limit", "LIMIT"), ("offset", "OFFSET"),
        ("qualify", "QUALIFY"), ("distinct", "SELECT DISTINCT"),
    ):
        if tree.args.get(arg) or tree.args.get(arg.rstrip("_")):
            raise _refuse("aggregate.shape", f"{what} is not allowed with an aggregate-only permit")
    if any(True for _ in tree.find_all(exp.Window)):
        raise _refuse("aggregate.shape", "window functions are not allowed with an aggregate-only permit")
    from_ = tree.args.get("from_") or tree.args.get("from")
    if not isinstance(from_, exp.From) or not isinstance(from_.this, exp.Table):
        raise _refuse("aggregate.shape", "FROM must name one of your release's tables")
    for join in tree.args.get("joins") or []:
        if not isinstance(join.this, exp.Table):
            raise _refuse("aggregate.shape", "only your release's tables may be joined")
    unit = from_.this.alias_or_name

    group = tree.args.get("group")
    if group is not None and any(group.args.get(k) for k in ("rollup", "cube", "grouping_sets")):
        raise _refuse("aggregate.shape", "ROLLUP, CUBE and GROUPING SETS are not allowed")
    selects = list(tree.expressions)
    aliases = {s.alias.lower(): s.this for s in selects if isinstance(s, exp.Alias) and s.alias}
    keys: list[exp.Expression] = []
    for g in group.expressions if group is not None else []:
        if isinstance(g, exp.Literal) and not g.is_string:
            idx = int(g.this) - 1
            if not 0 <= idx < len(selects):
                raise _refuse("aggregate.shape", "GROUP BY position out of range")
            s = selects[idx]
            keys.append((s.this if isinstance(s, exp.Alias) else s).copy())
        elif isinstance(g, exp.Column) and not g.table and g.name.lower() in aliases:
            keys.append(aliases[g.name.lower()].copy())
        else:
            keys.append(g.copy())
    key_sql = [k.sql(dialect="duckdb") for k in keys]

    count_pos: list[int] = []
    measure_pos: list[int] = []
    dominance: list[exp.Expression] = []
    selected_keys: set[str] = set()
    for pos, s in enumerate(selects):
        inner = s.this if isinstance(s, exp.Alias) else s
        if isinstance(inner, exp.Star):
            raise _refuse("aggregate.shape", "SELECT * is not allowed with an aggregate-only permit")
        text = inner.sql(dialect="duckdb")
        if text in key_sql:
            selected_keys.add(text)
            continue
        kind = _agg_kind(inner)
        if kind is None:
            raise _refuse(
                "aggregate.unsupported_expression",
                f"output column {pos + 1} is neither a GROUP BY key nor COUNT/SUM/AVG/STDDEV/VARIANCE "
                "(MIN, MAX, MEDIAN and the like publish one person's value)",
            )
        if any(_agg_kind(a) is None for a in inner.find_all(exp.AggFunc) if a is not inner):
            raise _refuse("aggregate.unsupported_expression", f"output column {pos + 1} nests aggregates")
        measure_pos.append(pos)
        if kind == "count":
            count_pos.append(pos)
        elif kind == "sum":
            dominance.append(_contribution(inner))
    if set(key_sql) - selected_keys:
        raise _refuse("aggregate.group_not_selected", "every GROUP BY key must also be selected")
    if not measure_pos:
        raise _refuse("aggregate.not_aggregate", "an aggregate-only permit needs at least one aggregate")
    if not keys and group is None and any(isinstance(s, exp.Column) for s in selects):
        raise _refuse("aggregate.not_aggregate", "columns need a GROUP BY")

    result = tree.copy()
    for i, k in enumerate(keys):
        result.append("expressions", exp.alias_(k.copy(), f"__hdp_g{i}"))

    pid = exp.column("person_id", table=unit)
    holder = exp.column("holder", table=unit)
    inner_q = tree.copy()
    for arg in ("order", "group"):
        inner_q.set(arg, None)
    inner_exprs = [exp.alias_(k.copy(), f"__hdp_g{i}") for i, k in enumerate(keys)]
    inner_exprs.append(exp.alias_(pid.copy(), "__hdp_pid"))
    inner_exprs.append(exp.alias_(exp.Anonymous(this="list", expressions=[exp.Distinct(expressions=[holder])]),
                                  "__hdp_hs"))
    for j, c in enumerate(dominance):
        inner_exprs.append(exp.alias_(c, f"__hdp_c{j}"))
    inner_q.set("expressions", inner_exprs)
    inner_q.set("group", exp.Group(expressions=[k.copy() for k in keys] + [pid.copy()]))
    gcols = ", ".join(f"__hdp_g{i}" for i in range(len(keys)))
    outer = [gcols] if keys else []
    outer += ["count(*) AS __hdp_n", "list_distinct(flatten(list(__hdp_hs))) AS __hdp_holders"]
    for j in range(len(dominance)):
        outer.append(f"sum(abs(__hdp_c{j})) AS __hdp_tot{j}")
        outer.append(
            f"list_sum(list_slice(list_sort(list(abs(__hdp_c{j})) FILTER (WHERE __hdp_c{j} IS NOT NULL), "
            f"'DESC'), 1, {int(dominance_n)})) AS __hdp_top{j}"
        )
    stats = f"SELECT {', '.join(outer)} FROM ({inner_q.sql(dialect='duckdb')}) AS __hdp_cells"
    if keys:
        stats += f" GROUP BY {gcols}"
    return AggregatePlan(
        result_sql=result.sql(dialect="duckdb"),
        stats_sql=stats,
        n_keys=len(keys),
        n_outputs=len(selects),
        count_positions=tuple(count_pos),
        n_dominance=len(dominance),
    )


def _norm(v: object) -> object:
    # NaN != NaN would make a cell unmatched (and so suppressed); give it a stable stand-in.
    if isinstance(v, float) and math.isnan(v):
        return ("nan",)
    return v


def apply(plan_: AggregatePlan, result: pa.Table, stats: pa.Table, settings: DisclosureSettings) -> tuple[pa.Table, dict]:
    """Suppress, round and strip helper columns; returns (published table, summary counts)."""
    if result.num_rows > MAX_CELLS:
        raise QueryRefused("disclosure.too_many_cells", f"more than {MAX_CELLS} cells; group more coarsely")
    key_names = [f"__hdp_g{i}" for i in range(plan_.n_keys)]
    by_key: dict[tuple, dict] = {}
    for row in stats.to_pylist():
        by_key[tuple(_norm(row[k]) for k in key_names)] = row
    # Columns by position: the researcher's output may repeat a column name.
    data = [result.column(i).to_pylist() for i in range(result.num_columns)]
    key_cols = data[plan_.n_outputs : plan_.n_outputs + plan_.n_keys]
    n_rows = result.num_rows
    cells: list[Cell] = []
    unmatched = 0
    for r in range(n_rows):
        key = tuple(_norm(col[r]) for col in key_cols)
        st = by_key.get(key)
        if st is None:
            unmatched += 1  # cannot evaluate: publish nothing for it
            cells.append(Cell(key, 0, 1))
            continue
        holders = st["__hdp_holders"] or []
        threshold = max(
            [settings.thresholds.get(h, settings.default_threshold) for h in holders]
            or [settings.default_threshold]
        )
        dominated = any(
            is_dominated(st[f"__hdp_tot{j}"], st[f"__hdp_top{j}"], k=settings.dominance_k)
            for j in range(plan_.n_dominance)
        )
        cells.append(Cell(key, int(st["__hdp_n"]), threshold, dominated))
    try:
        sup = suppress(cells)
    except DisclosureTooComplex as err:
        raise QueryRefused("disclosure.too_complex", f"{err}; group more coarsely") from None
    if sup.unprotected:
        raise QueryRefused(
            "disclosure.unprotectable",
            f"{len(sup.unprotected)} small cells cannot be protected in this table; group more coarsely",
        )
    # A suppressed cell is withheld whole, its keys included: the keys are whatever the
    # researcher grouped by, and grouping by a pseudonym, a date and a lab value would make
    # every key a record (each such cell is below threshold, so nulling its count alone
    # would publish the microdata it protects).
    published = [r for r in range(n_rows) if r not in sup.all]
    arrays = []
    fields = []
    for pos in range(plan_.n_outputs):
        values = [data[pos][r] for r in published]
        if pos in plan_.count_positions:
            values = [round_to_base(v, settings.rounding_base) for v in values]
        field = result.schema.field(pos)
        arrays.append(pa.array(values, type=field.type))
        fields.append(field)
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    summary = {
        "cells": n_rows,
        "published": len(published),
        "suppressed_primary": len(sup.primary),
        "suppressed_secondary": len(sup.secondary),
        "unmatched": unmatched,
    }
    return table, summary
