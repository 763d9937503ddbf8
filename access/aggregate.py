"""Aggregate-only output tier: compile a checked ``AggregateQuery`` into the layer's own SQL,
then publish its cells through disclosure control and cell-key perturbation.

The researcher's SQL never runs. ``compile_query`` writes one *statistics* query over the
keyed views (``hdp_ck.<table>``: the permitted rows plus each row's record key, person
number, person key, person bit and holder bit) that returns, per cell, everything disclosure
control needs with cheap aggregates only:

* rows and the sum of their record keys (the row cell key);
* a 64-bit *person signature* (the OR of each person's bit): its population count is a lower
  bound on the distinct persons, so a cell whose signature already has ``threshold`` bits
  certainly has enough persons without counting them exactly;
* the OR of the holders' bits (each holder's own threshold applies to the cells it is in);
* per measured column: values, sum, extremes, variance and that column's own signature.

Counting distinct persons exactly, and the per-person contributions behind the dominance rule,
need a per-person grouping that costs several times the query itself (measured on the
1,000,000-row benchmark release: 30-40 ms against 5-8 ms). So the exact query (``exact_sql``)
runs only when some cell cannot be certified from the cheap figures: a signature with fewer
bits than the threshold, or a sum that one person *might* dominate (the largest value times
the most rows one person has in the tables exceeds the dominance share of the total). It then
runs together with the statistics query, in one snapshot.

Publishing (``publish``), per cell:

1. withheld whole (keys included) when it has fewer persons than the strictest threshold of
   the holders in it, or a sum dominated by its top ``dominance_n`` persons (in a join, the
   row count too: joining a table to itself squares one person's rows);
2. counts are perturbed with the release's ptable (``privacy.cellkey``): rows with the row cell
   key, persons with the person cell key, count(column) with the cell key of the rows that
   have a value; a cell whose perturbed rows or persons fall below the threshold is withheld;
3. a mean, sum or variance over a column whose values come from fewer persons than the
   threshold is withheld (NULL) on its own; otherwise it is perturbed consistently with its
   count (``privacy.cellkey``);
4. ORDER BY and LIMIT apply to the published cells (ordering by true values would leak them).

The summary says how many cells were published and withheld and why.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp, parse_one

from access.errors import QueryRefused
from access.grammar import AggregateQuery, ColumnRef, Measure
from privacy import cellkey

MAX_CELLS = 50_000
#: Published means, sums and variances keep this many significant digits (see _measure_value).
SIGNIFICANT_DIGITS = 10
COUNT_KINDS = ("rows", "persons", "count")
#: Measures whose value is a magnitude: the dominance rule applies to their column.
MAGNITUDE_KINDS = ("sum", "mean", "variance", "variance_pop", "stddev", "stddev_pop")


@dataclass(frozen=True)
class DisclosureSettings:
    thresholds: Mapping[str, int]  # holder id -> min persons per cell
    perturbation: cellkey.PerturbationSettings  # the release's (strictest of its holders)
    ptable: Mapping[tuple[int, int], int]
    default_threshold: int = 10  # a holder not in the map, or an unknown one (fail closed)
    dominance_n: int = 2
    dominance_k: float = 0.9


@dataclass(frozen=True)
class CompiledQuery:
    query: AggregateQuery
    stats_sql: str
    exact_sql: str
    value_columns: tuple[ColumnRef, ...]  # measured columns, in __v<j> order
    magnitude_columns: frozenset[int]  # indexes into value_columns the dominance rule covers
    persons_in_stats: bool  # count(DISTINCT person_id) asked: exact persons come with the stats
    #: a join and a row count: one person's rows multiply in a join (a self-join squares them),
    #: so the dominance rule covers the per-person row counts too
    rows_dominance: bool
    holder_of_bit: Mapping[int, str]
    max_rows_per_person: int


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def width_bucket_free(sql: str) -> str:
    """DuckDB has no ``width_bucket``: rewrite it (SQL standard semantics) as a CASE."""
    if "WIDTH_BUCKET" not in sql.upper():
        return sql

    def lower(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.WidthBucket):
            x = node.this.sql(dialect="duckdb")
            lo = node.args["min_value"].sql(dialect="duckdb")
            hi = node.args["max_value"].sql(dialect="duckdb")
            n = node.args["num_buckets"].sql(dialect="duckdb")
            return parse_one(
                f"CASE WHEN {x} IS NULL THEN NULL WHEN {x} < {lo} THEN 0 WHEN {x} >= {hi} THEN {n} + 1 "
                f"ELSE CAST(floor(({x} - {lo}) * {n} / ({hi} - {lo})) AS BIGINT) + 1 END",
                read="duckdb",
            )
        return node

    return parse_one(sql, read="duckdb").transform(lower).sql(dialect="duckdb")


@dataclass(frozen=True)
class MeasuredColumns:
    """The columns the measures read (``__v<j>`` order) and what each needs."""

    columns: tuple[ColumnRef, ...]
    magnitude: frozenset[int]  # indexes the dominance rule covers
    counted: frozenset[int]  # indexes whose count or sum is perturbed with their own cell key
    variances: Mapping[int, frozenset[str]]  # index -> var_samp and/or var_pop


def measured_columns(measures: tuple[Measure, ...]) -> MeasuredColumns:
    columns: list[ColumnRef] = []
    magnitude: set[int] = set()
    counted: set[int] = set()
    variances: dict[int, set[str]] = {}
    for m in measures:
        if m.column is None:
            continue
        if m.column not in columns:
            columns.append(m.column)
        j = columns.index(m.column)
        if m.kind in MAGNITUDE_KINDS:
            magnitude.add(j)
        if m.kind in ("count", "sum"):
            counted.add(j)
        if m.kind in ("variance", "stddev"):
            variances.setdefault(j, set()).add("var_samp")
        if m.kind in ("variance_pop", "stddev_pop"):
            variances.setdefault(j, set()).add("var_pop")
    return MeasuredColumns(
        tuple(columns),
        frozenset(magnitude),
        frozenset(counted),
        {j: frozenset(fns) for j, fns in variances.items()},
    )


@dataclass(frozen=True)
class QueryFrame:
    """The parts the statistics and the exact query share."""

    from_sql: str  # FROM ... JOIN ... over the keyed views
    where: str  # " WHERE ..." or ""
    person_table: str  # the first table's alias, quoted: joins are on its person_id
    keys: tuple[str, ...]  # the grouping expressions, as DuckDB SQL
    group: str  # " GROUP BY __g0, ..." or ""

    @property
    def key_outputs(self) -> list[str]:
        return [f"{k} AS __g{i}" for i, k in enumerate(self.keys)]

    @property
    def key_names(self) -> list[str]:
        return [f"__g{i}" for i in range(len(self.keys))]


def query_frame(query: AggregateQuery, keyed_schema: str) -> QueryFrame:
    first = query.sources[0]
    froms = [f"{keyed_schema}.{_q(first.table)} AS {_q(first.alias)}"]
    for s in query.sources[1:]:
        side = "LEFT JOIN" if s.join == "left" else "JOIN"
        froms.append(
            f"{side} {keyed_schema}.{_q(s.table)} AS {_q(s.alias)} "
            f"ON {_q(s.alias)}.person_id = {_q(first.alias)}.person_id"
        )
    keys = tuple(width_bucket_free(k.sql) for k in query.keys)
    return QueryFrame(
        from_sql=" ".join(froms),
        where=f" WHERE {width_bucket_free(query.where)}" if query.where else "",
        person_table=_q(first.alias),
        keys=keys,
        group=f" GROUP BY {', '.join(f'__g{i}' for i in range(len(keys)))}" if keys else "",
    )


def _stats_sql(
    query: AggregateQuery,
    frame: QueryFrame,
    measured: MeasuredColumns,
    complete: Mapping[str, frozenset[str]],
    persons_in_stats: bool,
) -> str:
    """One cheap pass: per cell the counts, cell keys, signatures and per-column figures."""
    a = frame.person_table
    # A joined row's record key is the sum of its parts' (a LEFT join's missing part adds 0);
    # its person (and person key, bit) is the first table's: joins are on person_id. A single
    # table needs no arithmetic (measured: the casts alone cost 2 ms per million rows).
    if len(query.sources) == 1:
        rk, hb = f"{a}.__rk", f"{a}.__hb"
    else:
        rk = " + ".join(f"coalesce({_q(s.alias)}.__rk::INTEGER, 0)" for s in query.sources)
        hb = " | ".join(f"coalesce({_q(s.alias)}.__hb, 0)" for s in query.sources)
    optional = {s.alias for s in query.sources if s.join == "left"}
    stats = [
        *frame.key_outputs,
        "count(*) AS __rows",
        f"sum({rk}) AS __ck_rows",
        f"bit_or({a}.__pb) AS __sig",
        f"bit_or({hb}) AS __hbits",
    ]
    if persons_in_stats:
        stats += [f"count(DISTINCT {a}.__pnk) AS __persons", f"sum(DISTINCT {a}.__pnk) AS __ck_persons"]
    for j, col in enumerate(measured.columns):
        v = f"{_q(col.alias)}.{_q(col.name)}"
        stats += [
            f"count({v}) AS __n{j}",
            f"sum({v}) AS __s{j}",
            f"max({v}) AS __max{j}",
            f"min({v}) AS __min{j}",
        ]
        # Values from fewer persons than the cell has: only where the column can be NULL (the
        # FILTER costs about as much as the rest of the statistics).
        if col.name in complete.get(col.table, frozenset()) and col.alias not in optional:
            stats.append(f"bit_or({a}.__pb) AS __sig{j}")
        else:
            stats.append(f"bit_or({a}.__pb) FILTER (WHERE {v} IS NOT NULL) AS __sig{j}")
        if j in measured.counted:
            stats.append(f"sum({rk}) FILTER (WHERE {v} IS NOT NULL) AS __ck{j}")
        for fn in sorted(measured.variances.get(j, ())):
            stats.append(f"{fn}({v}) AS __{fn}{j}")
    return f"SELECT {', '.join(stats)} FROM {frame.from_sql}{frame.where}{frame.group}"


def _exact_sql(frame: QueryFrame, measured: MeasuredColumns) -> str:
    """Per cell, grouped by person first: exact persons and each person's contributions."""
    a = frame.person_table
    inner = [
        *frame.key_outputs,
        f"{a}.__pn AS __person",
        f"any_value({a}.__pk) AS __pkey",
        "count(*) AS __prows",
    ]
    outer = [
        *frame.key_names,
        "count(*) AS __persons",
        "sum(__pkey) AS __ck_persons",
        "sum(__prows) AS __totrows",
        "list_sort(list(__prows), 'DESC')[1:8] AS __toprows",
    ]
    for j, col in enumerate(measured.columns):
        v = f"{_q(col.alias)}.{_q(col.name)}"
        inner.append(f"sum({v}) AS __p{j}")
        outer += [
            f"count(__p{j}) AS __pp{j}",
            f"sum(abs(__p{j})) AS __tot{j}",
            f"list_sort(list(abs(__p{j})) FILTER (WHERE __p{j} IS NOT NULL), 'DESC')[1:8] AS __top{j}",
        ]
    inner_group = f" GROUP BY {', '.join([*frame.key_names, '__person'])}"
    return (
        f"SELECT {', '.join(outer)} FROM (SELECT {', '.join(inner)} FROM {frame.from_sql}{frame.where}"
        f"{inner_group})" + frame.group
    )


def compile_query(
    query: AggregateQuery,
    *,
    keyed_schema: str,
    holder_bits: Mapping[str, int],
    max_rows_per_person: Mapping[str, int],
    complete_columns: Mapping[str, frozenset[str]] | None = None,
) -> CompiledQuery:
    """The statistics and exact SQL for ``query`` over the engine's keyed views."""
    frame = query_frame(query, keyed_schema)
    measured = measured_columns(query.measures)
    persons_in_stats = any(m.kind == "persons" for m in query.measures)
    rows_per_person = 1
    for s in query.sources:
        rows_per_person *= max(1, int(max_rows_per_person.get(s.table, 1)))
    return CompiledQuery(
        query=query,
        stats_sql=_stats_sql(query, frame, measured, complete_columns or {}, persons_in_stats),
        exact_sql=_exact_sql(frame, measured),
        value_columns=measured.columns,
        magnitude_columns=measured.magnitude,
        persons_in_stats=persons_in_stats,
        rows_dominance=len(query.sources) > 1 and any(m.kind in ("rows", "count") for m in query.measures),
        holder_of_bit={bit: h for h, bit in holder_bits.items()},
        max_rows_per_person=rows_per_person,
    )


def _norm(v: object) -> object:
    # NaN != NaN would leave a cell unmatched; give it a stable stand-in.
    if isinstance(v, float) and math.isnan(v):
        return ("nan",)
    return v


def _bits(mask: int | None) -> int:
    return int(mask or 0).bit_count()


def _threshold(mask: int | None, cq: CompiledQuery, settings: DisclosureSettings) -> int:
    """The strictest threshold of the holders in a cell (the default one for an unknown bit)."""
    mask = int(mask or 0)
    found = [
        settings.thresholds.get(h, settings.default_threshold)
        for bit, h in cq.holder_of_bit.items()
        if mask >> bit & 1
    ]
    if not found or mask & ~sum(1 << b for b in cq.holder_of_bit):
        found.append(settings.default_threshold)
    return max(found)


def _largest(row: Mapping, j: int) -> float:
    lo, hi = row[f"__min{j}"], row[f"__max{j}"]
    return max(abs(float(lo)), abs(float(hi))) if lo is not None and hi is not None else 0.0


def needs_exact(cq: CompiledQuery, stats: pa.Table, settings: DisclosureSettings) -> bool:
    """Can every cell's persons and dominance be settled from the cheap statistics alone?"""
    n, k = settings.dominance_n, settings.dominance_k
    for row in stats.to_pylist():
        t = _threshold(row["__hbits"], cq, settings)
        persons = row["__persons"] if cq.persons_in_stats else None
        if (persons if persons is not None else _bits(row["__sig"])) < t and row["__rows"] >= t:
            return True
        if cq.rows_dominance and not _rows_bound_settles(row, cq, n, k):
            return True
        for j in range(len(cq.value_columns)):
            if row[f"__n{j}"] and _bits(row[f"__sig{j}"]) < t:
                return True
            if j in cq.magnitude_columns and row[f"__n{j}"] and not _sum_bound_settles(row, j, cq, n, k):
                return True
    return False


def _sum_bound_settles(row: Mapping, j: int, cq: CompiledQuery, n: int, k: float) -> bool:
    """The top ``n`` persons cannot hold more than ``k`` of column ``j``'s sum in this cell:
    each holds at most (most rows of one person) x (largest value), and the sum of absolute
    per-person contributions is at least the absolute sum."""
    return n * cq.max_rows_per_person * _largest(row, j) <= k * abs(float(row[f"__s{j}"] or 0.0))


def _rows_bound_settles(row: Mapping, cq: CompiledQuery, n: int, k: float) -> bool:
    """The top ``n`` persons cannot hold more than ``k`` of a joined cell's rows."""
    return n * cq.max_rows_per_person <= k * int(row["__rows"])


def publish(
    cq: CompiledQuery, stats: pa.Table, exact: pa.Table | None, settings: DisclosureSettings
) -> tuple[pa.Table, dict[str, int]]:
    """The published table (withheld cells left out whole) and the summary counts."""
    if stats.num_rows > MAX_CELLS:
        raise QueryRefused("disclosure.too_many_cells", f"more than {MAX_CELLS} cells; group more coarsely")
    q = cq.query
    key_names = [f"__g{i}" for i in range(len(q.keys))]
    for name in key_names:
        typ = stats.schema.field(name).type
        if pa.types.is_nested(typ) or pa.types.is_dictionary(typ):
            raise QueryRefused(
                "aggregate.key_type",
                "a group key gives lists or structures, not plain values. "
                "Hint: group by a plain column or a date part of it",
            )
    exact_by_key = {}
    if exact is not None:
        exact_by_key = {tuple(_norm(r[k]) for k in key_names): r for r in exact.to_pylist()}
    ptable, pert = settings.ptable, settings.perturbation
    summary = {
        "cells": stats.num_rows,
        "published": 0,
        "suppressed_persons": 0,
        "suppressed_dominance": 0,
        "suppressed_after_perturbation": 0,
        "measures_withheld": 0,
        "exact_check": int(exact is not None),
    }
    columns: list[list] = [[] for _ in q.outputs]
    for row in stats.to_pylist():
        t = _threshold(row["__hbits"], cq, settings)
        ex = exact_by_key.get(tuple(_norm(row[k]) for k in key_names)) if exact is not None else None
        if exact is not None and ex is None:
            summary["suppressed_persons"] += 1  # cannot evaluate: publish nothing for it (fail closed)
            continue
        # Exact persons when known, else the signature's certified lower bound (``needs_exact``
        # ran the exact query whenever that bound could not settle the threshold): either way
        # the verdict is the same, so a cell never depends on which path ran.
        if cq.persons_in_stats:
            persons = int(row["__persons"])
        elif ex is not None:
            persons = int(ex["__persons"])
        else:
            persons = _bits(row["__sig"])
        if persons < t:
            summary["suppressed_persons"] += 1
            continue
        if any(_dominated(row, ex, j, cq, settings) for j in cq.magnitude_columns if row[f"__n{j}"]) or (
            cq.rows_dominance and _rows_dominated(row, ex, cq, settings)
        ):
            summary["suppressed_dominance"] += 1
            continue
        rows_p = cellkey.perturb_count(
            int(row["__rows"]), int(row["__ck_rows"] or 0) % cellkey.KEY_RANGE, ptable
        )
        persons_p = (
            cellkey.perturb_count(persons, int(row["__ck_persons"] or 0) % cellkey.KEY_RANGE, ptable)
            if cq.persons_in_stats
            else None
        )
        if rows_p < t or (persons_p is not None and persons_p < t):
            summary["suppressed_after_perturbation"] += 1
            continue
        values: list[object] = []
        for out in q.outputs:
            if out.key is not None:
                values.append(row[f"__g{out.key}"])
                continue
            measure = q.measure_of(out)
            value = _measure_value(measure, row, ex, cq, t, rows_p, persons_p, pert, ptable)
            if value is None and measure.kind != "persons":
                summary["measures_withheld"] += 1
            values.append(value)
        for col, v in zip(columns, values, strict=True):
            col.append(v)
        summary["published"] += 1

    fields, arrays = [], []
    for i, out in enumerate(q.outputs):
        if out.key is not None:
            typ = stats.schema.field(f"__g{out.key}").type
        else:
            typ = pa.int64() if q.measure_of(out).kind in COUNT_KINDS else pa.float64()
        arrays.append(pa.array(columns[i], type=typ))
        fields.append(pa.field(out.name, typ))
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    return order_and_limit(table, q), summary


def _dominated(
    row: Mapping, ex: Mapping | None, j: int, cq: CompiledQuery, settings: DisclosureSettings
) -> bool:
    """(n, k) dominance of a magnitude column's per-person contributions in one cell: exact
    when the exact query ran, else the certified bound (which ``needs_exact`` guarantees)."""
    n, k = settings.dominance_n, settings.dominance_k
    if ex is not None:
        total, top = ex[f"__tot{j}"], ex[f"__top{j}"]
        if total is None or top is None:
            return True  # cannot evaluate: fail closed
        return float(total) > 0 and sum(top[:n]) / float(total) > k
    return not _sum_bound_settles(row, j, cq, n, k)


def _rows_dominated(
    row: Mapping, ex: Mapping | None, cq: CompiledQuery, settings: DisclosureSettings
) -> bool:
    """(n, k) dominance of the per-person row counts of a joined cell (see ``rows_dominance``)."""
    n, k = settings.dominance_n, settings.dominance_k
    if ex is not None:
        return sum(ex["__toprows"][:n]) > k * int(ex["__totrows"])
    return not _rows_bound_settles(row, cq, n, k)


def _salt(m: Measure) -> int:
    """Which noise a measure gets, from what it measures, never from where it stands in the
    SELECT: otherwise asking the same mean in ten positions would give ten noisy copies to
    average. A sum is its mean times its count, a standard deviation the root of its variance,
    so each pair shares one noise."""
    family = {"sum": "mean", "stddev": "variance", "stddev_pop": "variance_pop"}.get(m.kind, m.kind)
    return zlib.crc32(f"{family}:{m.column.table}.{m.column.name}".encode()) if m.column else 0


def _measure_value(
    m: Measure,
    row: Mapping,
    ex: Mapping | None,
    cq: CompiledQuery,
    t: int,
    rows_p: int,
    persons_p: int | None,
    pert: cellkey.PerturbationSettings,
    ptable: Mapping[tuple[int, int], int],
) -> object:
    if m.kind == "rows":
        return rows_p
    if m.kind == "persons":
        return persons_p
    j = cq.value_columns.index(m.column)
    n = int(row[f"__n{j}"] or 0)
    value_persons = int(ex[f"__pp{j}"]) if ex is not None else _bits(row[f"__sig{j}"])
    if n == 0 or value_persons < t:
        return None  # values from too few persons: withheld on their own
    if m.kind == "count":
        return cellkey.perturb_count(n, int(row[f"__ck{j}"] or 0) % cellkey.KEY_RANGE, ptable)
    ck = int(row["__ck_rows"] or 0) % cellkey.KEY_RANGE
    largest = _largest(row, j)
    mean = float(row[f"__s{j}"]) / n
    if m.kind in ("mean", "sum"):
        value = cellkey.perturb_mean(mean, n, largest, ck, _salt(m), pert.magnitude)
        if m.kind == "sum":
            value *= cellkey.perturb_count(n, int(row[f"__ck{j}"] or 0) % cellkey.KEY_RANGE, ptable)
    else:
        fn = "var_samp" if m.kind in ("variance", "stddev") else "var_pop"
        var = row[f"__{fn}{j}"]
        if var is None:
            return None
        spread = max((float(row[f"__max{j}"]) - mean) ** 2, (float(row[f"__min{j}"]) - mean) ** 2)
        value = cellkey.perturb_variance(float(var), n, spread, ck, _salt(m), pert.magnitude)
        if m.kind in ("stddev", "stddev_pop"):
            value = math.sqrt(value)
    # Parallel summation makes the last bits of a double vary from run to run; the same query
    # must give the same answer, and the noise is many orders of magnitude above this.
    value = _significant(value, SIGNIFICANT_DIGITS)
    return round(value, m.digits) if m.digits is not None else value


def _significant(value: float, digits: int) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def order_and_limit(table: pa.Table, q: AggregateQuery) -> pa.Table:
    """The researcher's ORDER BY, then the group keys: cells come out of a parallel GROUP BY in
    any order, and the same query must give the same answer, byte for byte."""
    order = [(o.output, o.descending) for o in q.order]
    order += [(i, False) for i, out in enumerate(q.outputs) if out.key is not None]
    if order and table.num_rows > 1:
        # Positional names: the researcher's output may repeat a name.
        renamed = table.rename_columns([f"c{i}" for i in range(table.num_columns)])
        keys = [(f"c{i}", "descending" if desc else "ascending", "at_end") for i, desc in order]
        table = table.take(pc.sort_indices(renamed, sort_keys=keys))
    if q.limit is not None:
        table = table.slice(0, q.limit)
    return table
