"""Change over time: pair each person's baseline with a follow-up and give the change in index and VAS.

Pure and vectorised over an Arrow table with one row per response: person, date, index, EQ VAS
and, optionally, an event marker (a boolean column: True on the baseline response of a
procedure or visit). The pairing rule is configuration (:class:`PairingRule`):

* ``mode="window"`` - each baseline is paired with a follow-up of the same person dated
  ``min_days`` to ``max_days`` after it (both edges included). Baselines are the rows whose
  ``event`` marker is True, or every row when the rule names no marker. Among the responses in
  the window, ``pick`` chooses the ``first``, the ``last`` or the ``nearest`` to
  ``target_days`` (ties to the earlier). With a marker, a response that is itself a baseline is
  not a follow-up unless ``follow_up_may_be_baseline``. Before-and-after a procedure: marker on
  the pre-operative response, window e.g. 300-450 days, pick nearest 365.
* ``mode="calendar_year"`` - year on year: each person's first response of a calendar year is
  paired with their first response of the next calendar year (no pair across a gap year).

Several follow-ups in the window give one pair (the one ``pick`` chooses); a person without any
follow-up gives no pair (or, with ``keep_unpaired``, a row whose follow-up side is NULL), and is
counted. The changes are follow-up minus baseline; NULL when either side is NULL. Nothing is
imputed. With ``ChangeColumns.profile`` the pair carries both EQ-5D profiles and their Paretian
classification (``pchc``: improve / worsen / mixed / no_change), which needs no value set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.outcomes.scoring import split_profiles


@dataclass(frozen=True)
class ChangeColumns:
    person: str = "person_id"
    date: str = "visit_date"
    index: str = "eq5d_index_se_5l_tto_2020"
    vas: str | None = "eq5d_vas"
    event: str | None = None  # boolean marker of baseline responses (mode "window")
    profile: str | None = None  # EQ-5D profile (e.g. eq5d_profile): adds the Paretian classification
    levels: int = 5  # of the profile: 5 for EQ-5D-5L, 3 for EQ-5D-3L


@dataclass(frozen=True)
class PairingRule:
    mode: Literal["window", "calendar_year"] = "window"
    min_days: int = 1
    max_days: int = 365
    pick: Literal["first", "last", "nearest"] = "first"
    target_days: int | None = None  # for pick="nearest"
    follow_up_may_be_baseline: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("window", "calendar_year"):
            raise ValueError(f"unknown pairing mode {self.mode!r}")
        if self.pick not in ("first", "last", "nearest"):
            raise ValueError(f"unknown pick {self.pick!r}")
        if self.mode == "window":
            if self.min_days < 1 or self.max_days < self.min_days:
                raise ValueError("a window needs 1 <= min_days <= max_days")
            if self.pick == "nearest" and (
                self.target_days is None or not self.min_days <= self.target_days <= self.max_days
            ):
                raise ValueError("pick='nearest' needs target_days within the window")


#: Year on year by calendar year.
YEAR_ON_YEAR = PairingRule(mode="calendar_year")


@dataclass(frozen=True)
class ChangeResult:
    pairs: pa.Table
    baselines: int
    paired: int
    persons: int
    persons_paired: int

    @property
    def unpaired(self) -> int:
        return self.baselines - self.paired


PCHC_CATEGORIES = ("no_change", "improve", "worsen", "mixed")


def paretian_classification(
    baseline: pa.Array | pa.ChunkedArray, follow_up: pa.Array | pa.ChunkedArray, levels: int = 5
) -> pa.Array:
    """The Paretian classification of health change between two EQ-5D profiles, row by row.

    ``improve``: better in at least one dimension and worse in none; ``worsen``: the reverse;
    ``mixed``: better in some, worse in others; ``no_change``: the same profile. NULL when either
    profile is NULL. (The classification of Devlin, Parkin and Browne, Health Economics 2010, for
    before-and-after EQ-5D data; it needs no value set.)
    """
    before = split_profiles(baseline, levels)
    after = split_profiles(follow_up, levels)
    n = before.num_rows
    if n == 0:
        return pa.array([], pa.string())
    b = np.stack(
        [np.asarray(c.to_numpy(zero_copy_only=False), dtype=np.float64) for c in before.columns], axis=1
    )
    a = np.stack(
        [np.asarray(c.to_numpy(zero_copy_only=False), dtype=np.float64) for c in after.columns], axis=1
    )
    known = ~(np.isnan(b).any(axis=1) | np.isnan(a).any(axis=1))
    with np.errstate(invalid="ignore"):
        better = (a < b).any(axis=1)
        worse = (a > b).any(axis=1)
    category = np.where(better & worse, 3, np.where(better, 1, np.where(worse, 2, 0))).astype(np.int8)
    return pc.take(pa.array(PCHC_CATEGORIES, pa.string()), pa.array(category, mask=~known))


def _days(col: pa.ChunkedArray) -> np.ndarray:
    t = col.type
    if pa.types.is_timestamp(t):
        col = pc.cast(col, pa.date32())
    elif not pa.types.is_date32(t):
        if pa.types.is_date64(t):
            col = pc.cast(col, pa.date32())
        else:
            raise TypeError(f"the date column must be a date or timestamp, not {t}")
    return np.asarray(pc.cast(col, pa.int32()).to_numpy(zero_copy_only=False), dtype=np.int64)


def _years(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970


def _float(col: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def pair_changes(
    data: pa.Table,
    rule: PairingRule = PairingRule(),
    *,
    columns: ChangeColumns = ChangeColumns(),
    keep_unpaired: bool = False,
) -> ChangeResult:
    """Pair baselines with follow-ups by ``rule``; see the module docstring."""
    needed = [columns.person, columns.date, columns.index] + [c for c in (columns.vas, columns.event) if c]
    absent = [c for c in needed if c not in data.column_names]
    if absent:
        raise KeyError(f"missing columns: {absent}")
    if rule.mode == "calendar_year" and columns.event:
        raise ValueError("calendar_year pairing uses no event marker")

    # Rows without a person or a date cannot be placed in time: they take no part.
    usable = pc.and_(pc.is_valid(data.column(columns.person)), pc.is_valid(data.column(columns.date)))
    table = data.filter(usable) if pc.sum(pc.invert(usable)).as_py() else data
    order = pc.sort_indices(table, [(columns.person, "ascending"), (columns.date, "ascending")])
    table = table.take(order)
    n = table.num_rows
    # rows are sorted by person: number the persons by run (0, 0, 1, 2, 2, ...)
    person = np.zeros(n, dtype=np.int64)
    if n > 1:
        ids = table.column(columns.person)
        starts = pc.not_equal(ids.slice(1), ids.slice(0, n - 1)).to_numpy(zero_copy_only=False)
        person[1:] = np.cumsum(np.asarray(starts, dtype=np.int64))
    days = _days(table.column(columns.date))

    if rule.mode == "calendar_year":
        years = _years(days)
        first = np.ones(n, dtype=bool)
        if n:
            first[1:] = (person[1:] != person[:-1]) | (years[1:] != years[:-1])
        idx = np.flatnonzero(first)
        base_rows = idx
        follow = np.full(len(idx), -1, dtype=np.int64)
        if len(idx) > 1:
            nxt = (person[idx[1:]] == person[idx[:-1]]) & (years[idx[1:]] == years[idx[:-1]] + 1)
            follow[:-1] = np.where(nxt, idx[1:], -1)
    else:
        if columns.event:
            marker = pc.fill_null(table.column(columns.event), False)
            is_base = np.asarray(marker.to_numpy(zero_copy_only=False), dtype=bool)
        else:
            is_base = np.ones(n, dtype=bool)
        base_rows = np.flatnonzero(is_base)
        cand_rows = (
            np.arange(n)
            if (not columns.event or rule.follow_up_may_be_baseline)
            else np.flatnonzero(~is_base)
        )
        # one sortable key per row: person first, then date (rows are already in this order)
        span = int(days.max() - days.min()) + rule.max_days + 2 if n else 1
        key = person * span + (days - (days.min() if n else 0))
        ckey = key[cand_rows]
        bkey = key[base_rows]
        lo = np.searchsorted(ckey, bkey + rule.min_days, side="left")
        hi = np.searchsorted(ckey, bkey + rule.max_days, side="right")  # window is ckey[lo:hi]
        has = hi > lo
        if rule.pick == "first":
            choice = lo
        elif rule.pick == "last":
            choice = hi - 1
        else:
            assert rule.target_days is not None
            at = np.searchsorted(ckey, bkey + rule.target_days, side="left")
            after = np.clip(at, lo, np.maximum(hi - 1, lo))  # first at/after the target, inside the window
            before = np.clip(at - 1, lo, np.maximum(hi - 1, lo))  # last before the target, inside
            safe_after = np.minimum(after, len(ckey) - 1) if len(ckey) else after
            safe_before = np.minimum(before, len(ckey) - 1) if len(ckey) else before
            target = bkey + rule.target_days
            d_after = np.abs(ckey[safe_after] - target) if len(ckey) else np.zeros(0, np.int64)
            d_before = np.abs(ckey[safe_before] - target) if len(ckey) else np.zeros(0, np.int64)
            choice = np.where(d_before <= d_after, safe_before, safe_after)
        follow = np.where(
            has, cand_rows[np.minimum(choice, max(len(cand_rows) - 1, 0))] if len(cand_rows) else -1, -1
        )

    paired_mask = follow >= 0
    keep = np.ones(len(base_rows), dtype=bool) if keep_unpaired else paired_mask
    b = base_rows[keep]
    f = follow[keep]
    has_f = f >= 0
    f_safe = np.where(has_f, f, 0)
    person_col = table.column(columns.person).take(pa.array(b))
    date_col = table.column(columns.date)
    f_take = pa.array(f_safe, mask=~has_f)
    index_b = _float(table.column(columns.index))
    out = {
        columns.person: person_col,
        "baseline_date": date_col.take(pa.array(b)),
        "follow_up_date": date_col.take(f_take),
        "days": pa.array(np.where(has_f, days[f_safe] - days[b], 0), pa.int32(), mask=~has_f),
        "baseline_index": pa.array(index_b[b], pa.float64(), from_pandas=True),
        "follow_up_index": pa.array(np.where(has_f, index_b[f_safe], np.nan), pa.float64(), from_pandas=True),
    }
    out["index_change"] = pc.subtract(out["follow_up_index"], out["baseline_index"])
    if columns.vas:
        vas = _float(table.column(columns.vas))
        out["baseline_vas"] = pa.array(vas[b], pa.float64(), from_pandas=True)
        out["follow_up_vas"] = pa.array(np.where(has_f, vas[f_safe], np.nan), pa.float64(), from_pandas=True)
        out["vas_change"] = pc.subtract(out["follow_up_vas"], out["baseline_vas"])
    if columns.profile:
        profiles = table.column(columns.profile)
        out["baseline_profile"] = profiles.take(pa.array(b))
        out["follow_up_profile"] = profiles.take(f_take)
        out["pchc"] = paretian_classification(
            out["baseline_profile"], out["follow_up_profile"], columns.levels
        )
    pairs = pa.table(out)
    persons = int(person.max()) + 1 if n else 0
    persons_paired = len(np.unique(person[base_rows[paired_mask]])) if n else 0
    return ChangeResult(
        pairs=pairs,
        baselines=len(base_rows),
        paired=int(np.count_nonzero(paired_mask)),
        persons=persons,
        persons_paired=persons_paired,
    )
