"""PROM key figures per holder and period, every cell under the holder's disclosure rule.

Pure over Arrow (no database, no I/O): the input is a research-zone response table
(``prom_response`` from the register, ``eq5d_response`` from FHIR) with its scored columns, and
optionally a denominator table (e.g. ``register_visit``). Per period (calendar ``year`` or
``quarter``, labelled ``2024`` / ``2024-Q1``) the figures are:

* ``responses`` - response rows dated in the period; ``persons`` - distinct persons among them;
* ``response_rate`` - responders among the denominator's persons of the period (responders who
  are also in the denominator / the denominator's persons). Without a denominator table the
  figure is omitted with a reason (:data:`NO_DENOMINATOR`), never estimated;
* ``mean_index`` and ``mean_vas`` - the mean over persons (each person's first response of the
  period with a value counts once, so the t-based 95 % interval rests on independent values:
  mean ± t(0.975, n - 1) · s / √n, s the sample standard deviation); an interval needs n ≥ 2;
* ``improved_share`` - among persons with a baseline/follow-up pair (``pair_changes`` with a
  configurable :class:`~pipelines.outcomes.change.PairingRule`, year on year by default) whose
  follow-up falls in the period, the share who improved (:class:`Improvement`: index or VAS change
  above ``min_change``, or the Paretian classification ``improve``). A person counts once per
  period (their first pair by follow-up date).

Disclosure control - the rule of the aggregate tier (``access.aggregate``: a cell with fewer
persons than the holder's ``min_cell_count`` is withheld whole; an unknown holder gets
:data:`DEFAULT_THRESHOLD`, failing closed) applied to each figure on its own:

* a count, mean or interval is withheld when fewer than ``threshold`` persons are behind it;
* a share (response rate, improved share) is withheld unless both the persons counted and the
  persons not counted reach the threshold (a share of 18/20 would otherwise tell that 2 persons
  did not improve, a small cell by subtraction).

A withheld :class:`Figure` carries no value, no interval and no count, only the reason; the
reasons are codes (:data:`REASONS`) a page translates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats

from pipelines.outcomes.change import YEAR_ON_YEAR, ChangeColumns, PairingRule, pair_changes

#: A holder with no threshold of its own (not declared): the aggregate tier's default, fail closed.
DEFAULT_THRESHOLD = 10

TOO_FEW_PERSONS = "keyfigures.too_few_persons"
SMALL_COMPLEMENT = "keyfigures.small_complement"  # the share's "other side" is a small cell
NO_DENOMINATOR = "keyfigures.no_denominator"
NO_VALUES = "keyfigures.no_values"
#: A node cannot vouch for this cell against its earlier publications (its differencing guard's
#: state is missing or damaged, see :mod:`pipelines.outcomes.differencing`): nothing new leaves.
GUARD_UNAVAILABLE = "keyfigures.guard_unavailable"
REASONS = (TOO_FEW_PERSONS, SMALL_COMPLEMENT, NO_DENOMINATOR, NO_VALUES, GUARD_UNAVAILABLE)

Period = Literal["year", "quarter"]


@dataclass(frozen=True)
class KeyFigureColumns:
    """Where person, date and scores are in the response table."""

    person: str = "person_id"
    date: str = "visit_date"
    index: str = "eq5d_index_se_5l_tto_2020"
    vas: str | None = "eq_vas"
    profile: str | None = "eq5d_profile"


#: research table ``prom_response`` (register)
PROM_COLUMNS = KeyFigureColumns()
#: research table ``eq5d_response`` (FHIR; ``authored`` is an ISO dateTime text)
EQ5D_COLUMNS = KeyFigureColumns(date="authored")


@dataclass(frozen=True)
class Improvement:
    """What counts as improved between a baseline and its follow-up."""

    measure: Literal["index", "vas", "pchc"] = "index"
    min_change: float = 0.0  # improved when the change is greater than this (index / vas)

    def __post_init__(self) -> None:
        if self.measure not in ("index", "vas", "pchc"):
            raise ValueError(f"unknown improvement measure {self.measure!r}")
        if not math.isfinite(self.min_change) or self.min_change < 0:
            raise ValueError("min_change must be a finite number >= 0")


@dataclass(frozen=True)
class Figure:
    """One published cell: a value (and interval) or the reason it is withheld."""

    value: float | None = None
    low: float | None = None
    high: float | None = None
    persons: int | None = None  # persons behind the value (denominator persons for a share)
    withheld: str | None = None  # a code of REASONS

    @property
    def shown(self) -> bool:
        return self.withheld is None

    @staticmethod
    def withhold(reason: str) -> Figure:
        return Figure(withheld=reason)


@dataclass(frozen=True)
class PeriodFigures:
    period: str
    responses: Figure
    persons: Figure
    response_rate: Figure
    mean_index: Figure
    mean_vas: Figure
    improved_share: Figure

    def figures(self) -> dict[str, Figure]:
        return {
            "responses": self.responses,
            "persons": self.persons,
            "response_rate": self.response_rate,
            "mean_index": self.mean_index,
            "mean_vas": self.mean_vas,
            "improved_share": self.improved_share,
        }


@dataclass(frozen=True)
class Contributions:
    """What each person adds to one period's figures: the figures are computed from exactly this,
    and a node's differencing guard (:mod:`pipelines.outcomes.differencing`) audits exactly this.
    Keys are the research zone's person pseudonyms; this never leaves the node."""

    responders: Mapping[Any, int]  # person -> response rows dated in the period
    denominator: frozenset[Any] | None  # the denominator's persons of the period; None: no denominator
    index: Mapping[Any, float]  # person -> the index value the mean counts (first of the period)
    vas: Mapping[Any, float]  # person -> the VAS value the mean counts
    improved: Mapping[Any, bool]  # paired person (follow-up in the period) -> improved


@dataclass(frozen=True)
class KeyFigures:
    holder: str
    threshold: int
    period: Period
    rows: tuple[PeriodFigures, ...]
    improvement: Improvement
    rule: PairingRule
    notes: tuple[str, ...] = field(default_factory=tuple)  # reason codes about the whole table

    @property
    def withheld_cells(self) -> int:
        return sum(1 for r in self.rows for f in r.figures().values() if not f.shown)


def threshold_for(holder_id: str, thresholds: Mapping[str, int] | None = None) -> int:
    """The holder's ``min_cell_count`` (schemas/holders.json); :data:`DEFAULT_THRESHOLD` if unknown."""
    if thresholds is None:
        from hdp.settings import holders

        thresholds = {h.id: h.min_cell_count for h in holders()}
    value = thresholds.get(holder_id)
    return max(int(value), 1) if value is not None else DEFAULT_THRESHOLD


# -- small helpers -----------------------------------------------------------------------------


def _as_date(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Dates of a date, timestamp or ISO text column (a dateTime's own calendar day)."""
    t = col.type
    if pa.types.is_date32(t):
        return col
    if pa.types.is_date64(t) or pa.types.is_timestamp(t):
        return pc.cast(col, pa.date32())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        head = pc.utf8_slice_codeunits(col, 0, 10)
        ok = pc.match_substring_regex(head, r"^\d{4}-\d{2}-\d{2}$")
        return pc.cast(pc.if_else(ok, head, pa.scalar(None, pa.string())), pa.date32())
    raise TypeError(f"the date column must be a date, timestamp or ISO text, not {t}")


def _period_labels(dates: pa.ChunkedArray | pa.Array, period: Period) -> np.ndarray:
    days = np.asarray(pc.cast(dates, pa.int32()).to_numpy(zero_copy_only=False), dtype="float64")
    out = np.full(len(days), None, dtype=object)
    ok = ~np.isnan(days)
    d = days[ok].astype("int64").astype("datetime64[D]")
    years = d.astype("datetime64[Y]").astype(np.int64) + 1970
    if period == "year":
        out[ok] = [str(y) for y in years]
    else:
        months = d.astype("datetime64[M]").astype(np.int64) % 12
        out[ok] = [f"{y}-Q{m // 3 + 1}" for y, m in zip(years, months, strict=True)]
    return out


def _count_figure(n: int, threshold: int) -> Figure:
    return Figure(value=float(n), persons=n) if n >= threshold else Figure.withhold(TOO_FEW_PERSONS)


def _share_figure(part: int, whole: int, threshold: int) -> Figure:
    if whole == 0:
        return Figure.withhold(NO_VALUES)
    if whole < threshold or part < threshold:
        return Figure.withhold(TOO_FEW_PERSONS)
    if whole - part < threshold:
        return Figure.withhold(SMALL_COMPLEMENT)
    return Figure(value=part / whole, persons=whole)


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float | None, float | None]:
    """Mean and t-based confidence interval (None, None for fewer than two values)."""
    x = np.asarray(list(values), dtype="float64")
    if len(x) == 0:
        raise ValueError("no values")
    m = float(x.mean())
    if len(x) < 2:
        return m, None, None
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1)) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return m, m - half, m + half


def _mean_figure(values: np.ndarray, threshold: int, confidence: float) -> Figure:
    if len(values) == 0:
        return Figure.withhold(NO_VALUES)
    if len(values) < threshold:
        return Figure.withhold(TOO_FEW_PERSONS)
    m, lo, hi = mean_ci(values, confidence)
    return Figure(value=m, low=lo, high=hi, persons=len(values))


def _first_per_person(person: np.ndarray, order_key: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row numbers of each person's first row (by ``order_key``) among the rows in ``mask``."""
    rows = np.flatnonzero(mask)
    if len(rows) == 0:
        return rows
    srt = rows[np.lexsort((order_key[rows], person[rows]))]
    first = np.ones(len(srt), dtype=bool)
    first[1:] = person[srt][1:] != person[srt][:-1]
    return np.asarray(srt[first])


def _codes(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Integer codes of a column's values (equal values, equal codes; NULL -> -1)."""
    enc = pc.dictionary_encode(col)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks() if enc.num_chunks != 1 else enc.chunk(0)
    return np.asarray(pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


# -- the computation ---------------------------------------------------------------------------


def key_figures(
    data: pa.Table,
    *,
    holder: str,
    threshold: int | None = None,
    columns: KeyFigureColumns = PROM_COLUMNS,
    period: Period = "year",
    denominator: pa.Table | None = None,
    denominator_columns: tuple[str, str] = ("person_id", "visit_date"),
    rule: PairingRule = YEAR_ON_YEAR,
    improvement: Improvement = Improvement(),
    confidence: float = 0.95,
) -> KeyFigures:
    """Key figures of ``data`` per period; see the module docstring.

    ``threshold`` defaults to the holder's ``min_cell_count`` (:func:`threshold_for`).
    ``denominator`` (person, date columns ``denominator_columns``) gives the response rate.
    """
    return key_figures_and_contributions(
        data,
        holder=holder,
        threshold=threshold,
        columns=columns,
        period=period,
        denominator=denominator,
        denominator_columns=denominator_columns,
        rule=rule,
        improvement=improvement,
        confidence=confidence,
    )[0]


def key_figures_and_contributions(
    data: pa.Table,
    *,
    holder: str,
    threshold: int | None = None,
    columns: KeyFigureColumns = PROM_COLUMNS,
    period: Period = "year",
    denominator: pa.Table | None = None,
    denominator_columns: tuple[str, str] = ("person_id", "visit_date"),
    rule: PairingRule = YEAR_ON_YEAR,
    improvement: Improvement = Improvement(),
    confidence: float = 0.95,
) -> tuple[KeyFigures, dict[str, Contributions]]:
    """:func:`key_figures` and, per period label, the :class:`Contributions` they were computed
    from (what a publishing node's differencing guard needs)."""
    if period not in ("year", "quarter"):
        raise ValueError(f"period must be 'year' or 'quarter', not {period!r}")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    k = threshold_for(holder) if threshold is None else max(int(threshold), 1)
    contributions = period_contributions(
        data,
        columns=columns,
        period=period,
        denominator=denominator,
        denominator_columns=denominator_columns,
        rule=rule,
        improvement=improvement,
    )
    kf = KeyFigures(
        holder=holder,
        threshold=k,
        period=period,
        rows=tuple(figures_of(label, c, k, confidence) for label, c in contributions.items()),
        improvement=improvement,
        rule=rule,
        notes=(NO_DENOMINATOR,) if denominator is None else (),
    )
    return kf, contributions


def figures_of(label: str, c: Contributions, threshold: int, confidence: float = 0.95) -> PeriodFigures:
    """One period's figures from its contributions, each under the disclosure rule."""
    k = threshold
    n = len(c.responders)
    responses = (
        Figure(value=float(sum(c.responders.values())), persons=n)
        if n >= k
        else Figure.withhold(TOO_FEW_PERSONS)
    )
    if c.denominator is None:
        rate = Figure.withhold(NO_DENOMINATOR)
    else:
        rate = _share_figure(sum(1 for p in c.denominator if p in c.responders), len(c.denominator), k)
    return PeriodFigures(
        period=label,
        responses=responses,
        persons=_count_figure(n, k),
        response_rate=rate,
        mean_index=_mean_figure(np.fromiter(c.index.values(), dtype="float64"), k, confidence),
        mean_vas=_mean_figure(np.fromiter(c.vas.values(), dtype="float64"), k, confidence),
        improved_share=_share_figure(sum(c.improved.values()), len(c.improved), k),
    )


def period_contributions(
    data: pa.Table,
    *,
    columns: KeyFigureColumns = PROM_COLUMNS,
    period: Period = "year",
    denominator: pa.Table | None = None,
    denominator_columns: tuple[str, str] = ("person_id", "visit_date"),
    rule: PairingRule = YEAR_ON_YEAR,
    improvement: Improvement = Improvement(),
) -> dict[str, Contributions]:
    """Per period label (sorted), what each person contributes to the figures."""
    if period not in ("year", "quarter"):
        raise ValueError(f"period must be 'year' or 'quarter', not {period!r}")
    needed = [columns.person, columns.date, columns.index] + [c for c in (columns.vas,) if c]
    if improvement.measure == "pchc":
        if not columns.profile:
            raise ValueError("improvement by Paretian classification needs the profile column")
        needed.append(columns.profile)
    if improvement.measure == "vas" and not columns.vas:
        raise ValueError("improvement by VAS needs the VAS column")
    absent = [c for c in needed if c not in data.column_names]
    if absent:
        raise KeyError(f"missing columns: {absent}")

    dates = _as_date(data.column(columns.date))
    person_ok = np.asarray(
        pc.is_valid(data.column(columns.person)).to_numpy(zero_copy_only=False), dtype=bool
    )
    labels = _period_labels(dates, period)
    usable = person_ok & np.array([lab is not None for lab in labels], dtype=bool)
    person = _codes(data.column(columns.person))
    day = np.asarray(
        pc.fill_null(pc.cast(dates, pa.int32()), 0).to_numpy(zero_copy_only=False), dtype=np.int64
    )
    index = np.asarray(
        pc.cast(data.column(columns.index), pa.float64()).to_numpy(zero_copy_only=False), dtype="float64"
    )
    vas = (
        np.asarray(
            pc.cast(data.column(columns.vas), pa.float64()).to_numpy(zero_copy_only=False), dtype="float64"
        )
        if columns.vas
        else np.full(data.num_rows, np.nan)
    )

    # Denominator persons per period.
    denom_persons: dict[str, set[Any]] | None = None
    if denominator is not None:
        dp, dd = denominator_columns
        dlabels = _period_labels(_as_date(denominator.column(dd)), period)
        dids = denominator.column(dp).to_pylist()
        denom_persons = {}
        for lab, pid in zip(dlabels, dids, strict=True):
            if lab is not None and pid is not None:
                denom_persons.setdefault(lab, set()).add(pid)

    # Pairs for the improved share, placed in the period of their follow-up.
    pairs_by_period = _improvement_by_period(data, dates, columns, rule, improvement, period)

    ids = data.column(columns.person).to_pylist()
    periods = sorted({lab for lab, ok in zip(labels, usable, strict=True) if ok} | set(pairs_by_period))
    out: dict[str, Contributions] = {}
    for lab in periods:
        in_period = usable & (labels == lab)
        responders: dict[Any, int] = {}
        for i in np.flatnonzero(in_period):
            responders[ids[i]] = responders.get(ids[i], 0) + 1
        first_index = _first_per_person(person, day, in_period & ~np.isnan(index))
        first_vas = _first_per_person(person, day, in_period & ~np.isnan(vas))
        out[lab] = Contributions(
            responders=responders,
            denominator=None if denom_persons is None else frozenset(denom_persons.get(lab, ())),
            index={ids[i]: float(index[i]) for i in first_index},
            vas={ids[i]: float(vas[i]) for i in first_vas},
            improved=pairs_by_period.get(lab, {}),
        )
    return out


def _improvement_by_period(
    data: pa.Table,
    dates: pa.ChunkedArray | pa.Array,
    columns: KeyFigureColumns,
    rule: PairingRule,
    improvement: Improvement,
    period: Period,
) -> dict[str, dict[Any, bool]]:
    """Per period of the follow-up: each paired person with a known change -> improved."""
    vas_col = columns.vas if improvement.measure == "vas" else None
    profile_col = columns.profile if improvement.measure == "pchc" else None
    keep = [columns.person, columns.index] + [c for c in (vas_col, profile_col) if c]
    table = data.select(keep).append_column("__date", dates)
    result = pair_changes(
        table,
        rule,
        columns=ChangeColumns(
            person=columns.person,
            date="__date",
            index=columns.index,
            vas=vas_col,
            profile=profile_col,
        ),
    )
    pairs = result.pairs
    if pairs.num_rows == 0:
        return {}
    if improvement.measure == "pchc":
        known = pc.is_valid(pairs.column("pchc"))
        better = pc.equal(pairs.column("pchc"), "improve")
    else:
        change = pairs.column("index_change" if improvement.measure == "index" else "vas_change")
        known = pc.is_valid(change)
        better = pc.greater(change, improvement.min_change)
    pairs = pairs.append_column("__known", known).append_column("__better", pc.fill_null(better, False))
    pairs = pairs.filter(pc.field("__known"))
    if pairs.num_rows == 0:
        return {}
    labels = _period_labels(pairs.column("follow_up_date"), period)
    person = _codes(pairs.column(columns.person))
    ids = pairs.column(columns.person).to_pylist()
    day = np.asarray(
        pc.cast(pairs.column("follow_up_date"), pa.int32()).to_numpy(zero_copy_only=False), dtype=np.int64
    )
    better_np = np.asarray(pairs.column("__better").to_numpy(zero_copy_only=False), dtype=bool)
    out: dict[str, dict[Any, bool]] = {}
    for lab in sorted(set(labels)):
        first = _first_per_person(person, day, labels == lab)
        out[lab] = {ids[i]: bool(better_np[i]) for i in first}
    return out
