"""Federated aggregate queries: one query in the aggregate grammar, answered by every node in
scope, merged at the hub and put through disclosure control again.

``plan_federated_query`` parses the researcher's SQL with the node's own checks (the sandbox,
then ``access.grammar``) and writes ``node_sql``, the text every node runs through its
aggregate tier. It is the researcher's query with three changes, each because a node's
published table must be mergeable *exactly*:

* ORDER BY and LIMIT are removed: a node-side LIMIT would drop cells that another node has, and
  the merged table would be partial. Both apply to the merged cells.
* ``round(measure, n)`` is removed (the output keeps its name): rounding before pooling would
  bias the merged value. The digits are applied after the merge.
* Hidden companion measures are added (outputs named ``__fed_*``): per measured column its
  ``count(column)`` (a mean is pooled by it, and every merged measure is checked against it),
  its ``avg(column)`` when a variance or standard deviation needs it (the pooled variance of
  parts (n_i, mean_i, var_i) is exact), and ``count(*)`` when the researcher asked neither rows
  nor persons (the merged threshold needs a cell size).

``merge_node_results`` outer-merges the nodes' published tables by their group keys (NULL is a
key value like any other), sums counts and sums, pools means and variances, and then withholds
every merged cell whose persons or rows (or, when neither was asked, the companion row count)
fall below the strictest threshold of all nodes; a measure whose merged value count is below it
is withheld (NULL) on its own, as at a node. A measure any contributing node withheld is NULL in
the merge: a sum without one node's part would pass for the total. The column ``nodes_in_cell``
says how many nodes stood behind each cell, so a total is never silently partial.

**Persons are summed, not linked.** For an aggregate query the nodes never share row-level
data, so a person known at two holders is counted once at each: the merged ``persons`` is the
sum of the nodes' counts, an upper bound on the distinct persons. Linking persons across
holders is what the federated release (a project pseudonym from every node) is for.

The merged values combine the nodes' published, already perturbed values; the hub adds no noise
of its own, and it never sees a cell a node withheld. Pure: Arrow tables in, Arrow tables out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

from access import sandbox
from access.aggregate import order_and_limit
from access.errors import QueryRefused
from access.grammar import AggregateQuery, ColumnRef, parse

#: Output names that start with this are the hub's companions; a researcher may not use it.
COMPANION_PREFIX = "__fed_"
#: Measure kinds the hub merges by summing the nodes' published values.
SUMMED_COUNTS = ("rows", "persons", "count")
#: How each measure kind of the grammar is merged (every kind must have a rule).
MERGE_RULES = {
    "rows": "sum of the nodes' counts",
    "persons": "sum of the nodes' counts (a person at two holders counts twice)",
    "count": "sum of the nodes' counts",
    "sum": "sum of the nodes' sums",
    "mean": "mean of the nodes' means weighted by count(column)",
    "variance": "pooled from (count, mean, variance) of each node",
    "variance_pop": "pooled from (count, mean, variance) of each node",
    "stddev": "root of the variance pooled from (count, mean, stddev^2) of each node",
    "stddev_pop": "root of the variance pooled from (count, mean, stddev^2) of each node",
}
_NEEDS_MEAN = ("variance", "variance_pop", "stddev", "stddev_pop")
NODES_IN_CELL = "nodes_in_cell"


@dataclass(frozen=True)
class PlannedOutput:
    """One column of the researcher's result and where its parts are in a node's table
    (positions into ``FederatedPlan.node_outputs``)."""

    name: str
    position: int
    key: int | None  # index of the group key it shows, or None for a measure
    kind: str | None  # the measure's kind (a key of access.grammar.MEASURES)
    digits: int | None  # round(..., digits), applied after the merge
    count_position: int | None  # companion count(column) for a measure over a column
    mean_position: int | None  # companion avg(column) for a variance or standard deviation


@dataclass(frozen=True)
class FederatedPlan:
    query: AggregateQuery  # the researcher's query, as the grammar reads it
    node_sql: str  # what every node runs
    node_outputs: tuple[str, ...]  # the columns a node publishes for node_sql, in order
    outputs: tuple[PlannedOutput, ...]  # the researcher's columns, in order
    key_positions: tuple[int, ...]  # per group key, the node column that shows it
    #: node columns the merged cell-size threshold applies to: persons and rows outputs, or
    #: the companion count(*) when neither was asked
    size_positions: tuple[int, ...]


@dataclass(frozen=True)
class MergeSummary:
    cells: int  # distinct cells over all nodes, before the hub's disclosure control
    published: int  # cells past the hub's threshold (before LIMIT)
    withheld_threshold: int  # cells withheld whole at the hub
    cells_missing_at_some_node: int  # cells that not every answering node published
    nodes: tuple[str, ...]  # the nodes whose results were merged, sorted
    measures_withheld: int = 0  # measures NULL in published cells (a node withheld, or too few values)


def _refuse(reason: str, message: str) -> QueryRefused:
    return QueryRefused(f"federation.{reason}", message)


# -- the plan -------------------------------------------------------------------------------


def _checked_query(
    sql: str, views: Mapping[str, Sequence[tuple[str, str]]]
) -> tuple[exp.Select, AggregateQuery]:
    """The sandbox and the grammar, as a node applies them: the same refusals, earlier."""
    checked = sandbox.validate(sql, tables={t: [c for c, _ in cols] for t, cols in views.items()})
    query = parse(checked.tree, views)
    if not isinstance(checked.tree, exp.Select):  # parse refuses anything else
        raise _refuse("not_mergeable", "only one SELECT can be sent to the nodes")
    return checked.tree, query


def _column_sql(ref: ColumnRef) -> exp.Column:
    return exp.column(ref.name, table=ref.alias, quoted=True)


def plan_federated_query(sql: str, views: Mapping[str, Sequence[tuple[str, str]]]) -> FederatedPlan:
    """Parse the researcher's query and write what every node runs (see the module docstring).

    ``views`` maps each permitted table to its (column, DuckDB type) pairs, as for
    ``access.grammar.parse``. Refusals are ``QueryRefused`` (``sql.*``, ``aggregate.*``,
    ``federation.*``).
    """
    tree, query = _checked_query(sql, views)
    for out in query.outputs:
        if out.name.lower().startswith(COMPANION_PREFIX) or out.name.lower() == NODES_IN_CELL:
            raise _refuse(
                "reserved_name",
                f"the output names {NODES_IN_CELL} and {COMPANION_PREFIX}... are the hub's. Hint: rename it",
            )
    for m in query.measures:
        if m.kind not in MERGE_RULES:
            raise _refuse("not_mergeable", f"the measure {m.kind} cannot be merged across nodes")

    node_tree = tree.copy()
    node_tree.set("order", None)
    node_tree.set("limit", None)
    items = node_tree.expressions
    for out, item in zip(query.outputs, items, strict=True):
        if out.measure is None or query.measures[out.measure].digits is None:
            continue
        rounded = item.this if isinstance(item, exp.Alias) else item
        if not isinstance(rounded, exp.Round):  # the grammar's only source of digits
            raise _refuse("not_mergeable", "a rounded measure could not be moved to the hub")
        if isinstance(item, exp.Alias):
            item.set("this", rounded.this)
        else:  # keep the output name the researcher's text gave it
            item.replace(exp.alias_(rounded.this, out.name, quoted=True))

    node_outputs = [out.name for out in query.outputs]

    def companion(name: str, measure: exp.Expression) -> int:
        node_tree.append("expressions", exp.alias_(measure, COMPANION_PREFIX + name, quoted=True))
        node_outputs.append(COMPANION_PREFIX + name)
        return len(node_outputs) - 1

    columns: list[ColumnRef] = []
    for m in query.measures:
        if m.column is not None and m.column not in columns:
            columns.append(m.column)
    count_at: dict[ColumnRef, int] = {}
    mean_at: dict[ColumnRef, int] = {}
    for j, ref in enumerate(columns):
        count_at[ref] = companion(f"count_{j}", exp.Count(this=_column_sql(ref)))
        if any(m.column == ref and m.kind in _NEEDS_MEAN for m in query.measures):
            mean_at[ref] = companion(f"mean_{j}", exp.Avg(this=_column_sql(ref)))

    size_positions = tuple(
        i
        for i, out in enumerate(query.outputs)
        if out.measure is not None and query.measures[out.measure].kind in ("persons", "rows")
    )
    if not size_positions:
        size_positions = (companion("rows", exp.Count(this=exp.Star())),)

    outputs = []
    for i, out in enumerate(query.outputs):
        shown = query.measures[out.measure] if out.measure is not None else None
        column = shown.column if shown else None
        outputs.append(
            PlannedOutput(
                name=out.name,
                position=i,
                key=out.key,
                kind=shown.kind if shown else None,
                digits=shown.digits if shown else None,
                count_position=count_at[column] if column else None,
                mean_position=mean_at.get(column) if column else None,
            )
        )
    key_positions = tuple(
        next(i for i, out in enumerate(query.outputs) if out.key == k) for k in range(len(query.keys))
    )
    node_sql = node_tree.sql(dialect="duckdb")
    _check_node_sql(node_sql, views, query, tuple(node_outputs))
    return FederatedPlan(
        query=query,
        node_sql=node_sql,
        node_outputs=tuple(node_outputs),
        outputs=tuple(outputs),
        key_positions=key_positions,
        size_positions=size_positions,
    )


def _check_node_sql(
    node_sql: str,
    views: Mapping[str, Sequence[tuple[str, str]]],
    query: AggregateQuery,
    node_outputs: tuple[str, ...],
) -> None:
    """The rewritten text must read, at a node, as the same table plus the companions."""
    _, node_query = _checked_query(node_sql, views)
    same = (
        tuple(o.name for o in node_query.outputs) == node_outputs
        and node_query.keys == query.keys
        and node_query.sources == query.sources
        and node_query.where == query.where
        and not node_query.order
        and node_query.limit is None
    )
    if not same:
        raise _refuse("not_mergeable", "the query could not be rewritten for the nodes without changing it")


# -- the merge ------------------------------------------------------------------------------


def _cell_key(value: object) -> object:
    # NaN != NaN would split one cell in two; give it a stable stand-in.
    if isinstance(value, float) and math.isnan(value):
        return ("nan",)
    return value


def _summed(values: Sequence[object]) -> int | None:
    """The sum of the nodes' counts, or None when any node withheld its count."""
    if any(v is None for v in values):
        return None
    return sum(_whole(v) or 0 for v in values)


def _whole(value: object) -> int | None:
    """A published count (Arrow gives Python ints; anything else is a node's error)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _refuse("node_result", "a node returned a count that is not a whole number")


def _number(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _refuse("node_result", "a node returned a measure that is not a number")
    return float(value)


@dataclass(frozen=True)
class _Part:
    """One node's published figures for one measured column in one cell."""

    n: int | None
    value: float | None  # the measure itself: a sum, mean, variance or standard deviation
    mean: float | None


def _pooled_sum(parts: Sequence[_Part]) -> float | None:
    if any(p.n is None or (p.n > 0 and p.value is None) for p in parts):
        return None
    present = [float(p.value) for p in parts if p.n and p.value is not None]
    return math.fsum(present) if present else None


def _pooled_mean(parts: Sequence[_Part]) -> float | None:
    if any(p.n is None or (p.n > 0 and p.value is None) for p in parts):
        return None
    present = [(p.n, float(p.value)) for p in parts if p.n and p.value is not None]
    total = sum(n for n, _ in present)
    return math.fsum(n * mean for n, mean in present) / total if total else None


def _pooled_variance(parts: Sequence[_Part], kind: str) -> float | None:
    """Exact pooled variance: the total sum of squares about the pooled mean is the nodes'
    within sums of squares plus n_i (mean_i - mean)^2; sample or population form by ``kind``."""
    sample = kind in ("variance", "stddev")
    present: list[tuple[int, float, float]] = []
    for p in parts:
        if p.n is None:
            return None
        if p.n == 0:
            continue  # no values at this node: nothing to pool
        if p.mean is None:
            return None
        if p.value is None:
            if sample and p.n == 1:  # var_samp of one value is NULL, its sum of squares 0
                present.append((1, float(p.mean), 0.0))
                continue
            return None
        var = float(p.value) ** 2 if kind in ("stddev", "stddev_pop") else float(p.value)
        within = var * (p.n - 1 if sample else p.n)
        present.append((p.n, float(p.mean), within))
    total = sum(n for n, _, _ in present)
    if total == 0 or (sample and total < 2):
        return None
    mean = math.fsum(n * m for n, m, _ in present) / total
    squares = math.fsum(within for _, _, within in present) + math.fsum(
        n * (m - mean) ** 2 for n, m, _ in present
    )
    variance = max(squares, 0.0) / (total - 1 if sample else total)
    return math.sqrt(variance) if kind in ("stddev", "stddev_pop") else variance


def _merged_measure(out: PlannedOutput, rows: Sequence[Sequence[object]]) -> object:
    if out.kind in SUMMED_COUNTS:
        return _summed([r[out.position] for r in rows])
    assert out.count_position is not None
    parts = [
        _Part(
            n=_whole(r[out.count_position]),
            value=_number(r[out.position]),
            mean=_number(r[out.mean_position]) if out.mean_position is not None else None,
        )
        for r in rows
    ]
    if out.kind == "sum":
        return _pooled_sum(parts)
    if out.kind == "mean":
        return _pooled_mean(parts)
    return _pooled_variance(parts, str(out.kind))


def _check_result(plan: FederatedPlan, node: str, table: pa.Table) -> None:
    if tuple(table.column_names) != plan.node_outputs:
        raise _refuse("node_result", f"node {node!r} returned columns that do not match the query")
    for out in plan.outputs:
        typ = table.schema.field(out.position).type
        if out.kind is not None and not (
            pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_null(typ)
        ):
            raise _refuse("node_result", f"node {node!r} returned a measure that is not a number")


def _key_type(plan: FederatedPlan, position: int, tables: Sequence[pa.Table]) -> pa.DataType:
    """One type for a key column that the nodes may have typed differently (int32 and int64)."""
    schemas = [pa.schema([pa.field("k", t.schema.field(position).type)]) for t in tables]
    return pa.unify_schemas(schemas, promote_options="permissive").field("k").type if schemas else pa.null()


def merge_node_results(
    plan: FederatedPlan, results: Mapping[str, pa.Table], *, thresholds: Mapping[str, int]
) -> tuple[pa.Table, MergeSummary]:
    """Merge the nodes' published tables for ``plan.node_sql`` and publish the merged cells.

    ``results`` maps each answering node to its published table; ``thresholds`` maps every node
    in scope (answering or not) to its minimum cell size, and the strictest applies to every
    merged cell. The result has the researcher's columns and ``nodes_in_cell``.
    """
    if not results:
        raise _refuse("no_results", "no node answered; there is nothing to merge")
    missing = sorted(set(results) - set(thresholds))
    if missing or not thresholds:
        raise _refuse("threshold_missing", "every node merged needs its disclosure threshold")
    threshold = max(int(t) for t in thresholds.values())
    nodes = tuple(sorted(results))
    tables = [results[n] for n in nodes]
    for node, table in zip(nodes, tables, strict=True):
        _check_result(plan, node, table)

    # cell key -> (key values as published, one row per node that has the cell)
    cells: dict[tuple[object, ...], tuple[tuple[object, ...], list[tuple[object, ...]]]] = {}
    for node, table in zip(nodes, tables, strict=True):
        columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
        seen: set[tuple[object, ...]] = set()
        for row in zip(*columns, strict=True) if columns else ():
            values = tuple(row[p] for p in plan.key_positions)
            key = tuple(_cell_key(v) for v in values)
            if key in seen:
                raise _refuse("node_result", f"node {node!r} returned one cell twice")
            seen.add(key)
            cells.setdefault(key, (values, []))[1].append(row)

    published: list[list[object]] = []
    withheld = missing_somewhere = measures_withheld = 0
    for values, rows in cells.values():
        if len(rows) < len(nodes):
            missing_somewhere += 1
        sizes = [_summed([r[p] for r in rows]) for p in plan.size_positions]
        if any(s is None or s < threshold for s in sizes):
            withheld += 1
            continue
        line: list[object] = []
        for out in plan.outputs:
            if out.key is not None:
                line.append(values[out.key])
                continue
            value = _merged_measure(out, rows)
            if out.count_position is not None:
                values_counted = _summed([r[out.count_position] for r in rows])
                if values_counted is None or values_counted < threshold:
                    value = None  # values from too few: withheld on its own, as at a node
            if value is None and out.kind != "persons":
                measures_withheld += 1
            line.append(value)
        line.append(len(rows))
        published.append(line)

    table = order_and_limit(_table(plan, tables, published), plan.query)
    summary = MergeSummary(
        cells=len(cells),
        published=len(published),
        withheld_threshold=withheld,
        cells_missing_at_some_node=missing_somewhere,
        nodes=nodes,
        measures_withheld=measures_withheld,
    )
    return _rounded(table, plan), summary


def _table(plan: FederatedPlan, tables: Sequence[pa.Table], lines: Sequence[Sequence[object]]) -> pa.Table:
    fields = []
    for out in plan.outputs:
        if out.key is not None:
            typ = _key_type(plan, plan.key_positions[out.key], tables)
        else:
            typ = pa.int64() if out.kind in SUMMED_COUNTS else pa.float64()
        fields.append(pa.field(out.name, typ))
    fields.append(pa.field(NODES_IN_CELL, pa.int64()))
    arrays = [pa.array([line[i] for line in lines], type=f.type) for i, f in enumerate(fields)]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _rounded(table: pa.Table, plan: FederatedPlan) -> pa.Table:
    """round(..., n) on the merged values (counts stay whole numbers, as at a node)."""
    for out in plan.outputs:
        if out.digits is None or out.kind in SUMMED_COUNTS:
            continue
        digits = out.digits
        column = table.column(out.position)
        rounded = [None if v is None else round(v, digits) for v in column.to_pylist()]
        table = table.set_column(
            out.position, table.schema.field(out.position), pa.array(rounded, type=column.type)
        )
    return table
