"""EQ-5D scoring over Arrow: health profile, level sum, EQ VAS and value-set indices.

Pure and vectorised: the input is an Arrow table (or record batch) holding the five dimension
columns and, optionally, EQ VAS; the output is a table of the same length, row for row:

* ``eq5d_profile`` - the health profile as a string (``21341``: MO, SC, UA, PD, AD), dictionary
  encoded over all ``levels ** 5`` states, so 10 M rows carry no 10 M strings;
* ``eq5d_level_sum`` - the sum of the five levels (5-25 for 5L, 5-15 for 3L);
* ``eq5d_vas`` - EQ VAS as given (an integer 0-100), NULL when missing or invalid;
* ``eq5d_index_<value set id>`` - one float64 column per value set asked for.

A dimension that is NULL (``eq5d.dimension_missing``) or not a level of the instrument
(``eq5d.dimension_invalid``: out of range, not an integer, not a number) makes the profile,
the level sum and every index of that row NULL. Nothing is imputed. Each row not scored is
counted under exactly one reason: ``eq5d.dimension_missing`` when any dimension is NULL, else
``eq5d.dimension_invalid``; so ``scored`` + both counts = rows. EQ VAS is independent of the
dimensions: ``eq5d.vas_missing`` / ``eq5d.vas_invalid`` null only ``eq5d_vas``.

The value set is configuration (an id under schemas/valuesets/ or a :class:`ValueSet`), and the
index is a gather from the value set expanded over every state, so the formula's cost does not
depend on the number of rows. Batches are scored on a thread pool (numpy releases the GIL).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.outcomes.valuesets import DIMENSIONS, ValueSet, load_value_set, state_levels

PROFILE = "eq5d_profile"
LEVEL_SUM = "eq5d_level_sum"
VAS = "eq5d_vas"
INDEX_PREFIX = "eq5d_index_"

DIMENSION_MISSING = "eq5d.dimension_missing"
DIMENSION_INVALID = "eq5d.dimension_invalid"
VAS_MISSING = "eq5d.vas_missing"
VAS_INVALID = "eq5d.vas_invalid"
REASONS = (DIMENSION_MISSING, DIMENSION_INVALID, VAS_MISSING, VAS_INVALID)

VAS_MIN, VAS_MAX = 0, 100
_BATCH_ROWS = 1 << 16


@dataclass(frozen=True)
class EQ5DColumns:
    """Where the five dimensions (profile order) and EQ VAS are in the input."""

    mobility: str = "eq5d_mobility"
    self_care: str = "eq5d_self_care"
    usual_activities: str = "eq5d_usual_activities"
    pain_discomfort: str = "eq5d_pain_discomfort"
    anxiety_depression: str = "eq5d_anxiety_depression"
    vas: str | None = "eq_vas"

    @property
    def dimensions(self) -> tuple[str, str, str, str, str]:
        return (
            self.mobility,
            self.self_care,
            self.usual_activities,
            self.pain_discomfort,
            self.anxiety_depression,
        )


#: research table ``prom_response`` (register CSV path)
PROM_RESPONSE = EQ5DColumns()
#: research table ``eq5d_response`` (FHIR QuestionnaireResponse path)
EQ5D_RESPONSE = EQ5DColumns(
    "mobility", "self_care", "usual_activities", "pain_discomfort", "anxiety_depression"
)


@dataclass(frozen=True)
class EQ5DScores:
    table: pa.Table
    counts: dict[str, int]  # every code of REASONS, 0 when none
    rows: int
    scored: int
    value_sets: tuple[str, ...]


def index_column(value_set: ValueSet | str) -> str:
    return INDEX_PREFIX + (value_set.id if isinstance(value_set, ValueSet) else value_set)


@cache
def profile_dictionary(levels: int) -> pa.Array:
    """Every profile string of an instrument, by state code (built from bytes: no Python strings)."""
    grid = state_levels(levels)
    chars = (grid.astype(np.uint8) + ord("0")).tobytes()  # row-major: five ASCII digits per state
    offsets = np.arange(0, grid.size + 1, grid.shape[1], dtype=np.int32)
    return pa.Array.from_buffers(
        pa.string(), grid.shape[0], [None, pa.py_buffer(offsets), pa.py_buffer(chars)]
    )


@cache
def _level_sums(levels: int) -> np.ndarray:
    sums = state_levels(levels).sum(axis=1, dtype=np.int8)
    sums.setflags(write=False)
    return sums


# -- reading one column --------------------------------------------------------------------------


def _validity(arr: pa.Array) -> np.ndarray | None:
    """The validity of ``arr`` as a bool array, or None when it has no NULL."""
    if arr.null_count == 0:
        return None
    if arr.null_count == len(arr):
        return np.zeros(len(arr), dtype=bool)
    start, shift = divmod(arr.offset, 8)
    bits = np.frombuffer(arr.buffers()[0], dtype=np.uint8)[start : start + (shift + len(arr) + 7) // 8]
    return np.unpackbits(bits, count=shift + len(arr), bitorder="little")[shift:].view(bool)


def _integers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(values, validity, not_integral) of a column; values are garbage where invalid or NULL.

    Integer columns are read in place (no copy). Floats: a non-integral value or NaN is
    ``not_integral``. Strings: surrounding blanks are ignored, an empty string is NULL, anything
    but digits is ``not_integral``.
    """
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.dictionary_decode()
        t = arr.type
    if pa.types.is_null(t):
        return np.zeros(len(arr), np.int64), np.zeros(len(arr), dtype=bool), None
    if pa.types.is_integer(t):
        values = np.frombuffer(arr.buffers()[1], dtype=t.to_pandas_dtype(), count=arr.offset + len(arr))
        return values[arr.offset :], _validity(arr), None
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        floats = arr.cast(pa.float64()) if not pa.types.is_float64(t) else arr
        raw = floats.to_numpy(zero_copy_only=False)
        validity = _validity(floats)
        with np.errstate(invalid="ignore"):
            not_integral = ~(raw == np.trunc(raw))  # NaN and +-inf too
            values = np.where(not_integral, 0, np.clip(np.nan_to_num(raw), -(2**31), 2**31 - 1)).astype(
                np.int64
            )
        if validity is not None:
            not_integral &= validity
        return values, validity, not_integral
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        text = pc.utf8_trim_whitespace(arr)
        text = pc.if_else(pc.equal(text, ""), pa.scalar(None, text.type), text)
        digits = pc.match_substring_regex(text, r"^[0-9]{1,9}$")
        numbers = pc.cast(pc.if_else(digits, text, pa.scalar(None, text.type)), pa.int64())
        validity = _validity(text)
        not_integral = np.asarray(pc.fill_null(pc.invert(digits), False))
        values = np.asarray(pc.fill_null(numbers, 0))
        return values, validity, not_integral
    raise TypeError(f"an EQ-5D column must be integer, floating, decimal or string, not {t}")


def _level_column(arr: pa.Array, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(level clipped to lo..hi as int16, validity or None, invalid) for one column."""
    values, validity, not_integral = _integers(arr)
    in_range = np.clip(values, lo, hi)
    invalid = in_range != values
    clipped = in_range.astype(np.int16, copy=False)
    if not_integral is not None:
        invalid |= not_integral
    if validity is not None:
        invalid &= validity
    return clipped, validity, invalid


# -- one batch -----------------------------------------------------------------------------------


@dataclass
class _Part:
    columns: list[pa.Array]
    missing: int
    invalid: int
    bad: int
    vas_missing: int
    vas_invalid: int


def _bitmap(valid: np.ndarray) -> pa.Buffer:
    return pa.py_buffer(np.packbits(valid, bitorder="little"))


def _score_batch(
    dims: Sequence[pa.Array], vas: pa.Array | None, levels: int, value_sets: Sequence[ValueSet]
) -> _Part:
    n = len(dims[0])
    code = np.zeros(n, dtype=np.int16)
    all_valid: np.ndarray | None = None
    any_invalid: np.ndarray | None = None
    for arr in dims:
        clipped, validity, invalid = _level_column(arr, 1, levels)
        code *= levels
        code += clipped
        if validity is not None:
            all_valid = (
                validity.copy() if all_valid is None else np.logical_and(all_valid, validity, out=all_valid)
            )
        any_invalid = invalid if any_invalid is None else np.logical_or(any_invalid, invalid, out=any_invalid)
    code -= sum(levels**k for k in range(len(DIMENSIONS)))  # levels are 1-based
    assert any_invalid is not None
    good = ~any_invalid if all_valid is None else np.logical_and(all_valid, ~any_invalid)
    n_missing = 0 if all_valid is None else n - int(np.count_nonzero(all_valid))
    bad = n - int(np.count_nonzero(good))
    n_invalid = bad - n_missing  # rows with every dimension given, one of them not a level
    bitmap = _bitmap(good) if bad else None
    idx = code.astype(np.intp)  # one widening for every gather below
    code_arr = pa.Array.from_buffers(pa.int16(), n, [bitmap, pa.py_buffer(code)], null_count=bad)
    columns: list[pa.Array] = [
        pa.DictionaryArray.from_arrays(code_arr, profile_dictionary(levels)),
        pa.Array.from_buffers(
            pa.int8(), n, [bitmap, pa.py_buffer(np.take(_level_sums(levels), idx))], null_count=bad
        ),
    ]
    vas_missing = vas_invalid = 0
    if vas is not None:
        clipped, validity, invalid_vas = _level_column(vas, VAS_MIN, VAS_MAX)
        vas_good = ~invalid_vas if validity is None else np.logical_and(validity, ~invalid_vas)
        vas_missing = 0 if validity is None else n - int(np.count_nonzero(validity))
        vas_invalid = int(np.count_nonzero(invalid_vas))
        vas_bad = vas_missing + vas_invalid
        columns.append(
            pa.Array.from_buffers(
                pa.int16(),
                n,
                [_bitmap(vas_good) if vas_bad else None, pa.py_buffer(clipped)],
                null_count=vas_bad,
            )
        )
    for vs in value_sets:
        values = np.take(vs.state_values(), idx)
        columns.append(pa.Array.from_buffers(pa.float64(), n, [bitmap, pa.py_buffer(values)], null_count=bad))
    return _Part(columns, n_missing, n_invalid, bad, vas_missing, vas_invalid)


# -- the public entry ----------------------------------------------------------------------------


def _resolve(value_sets: Sequence[ValueSet | str], levels: int) -> tuple[ValueSet, ...]:
    resolved = tuple(vs if isinstance(vs, ValueSet) else load_value_set(vs) for vs in value_sets)
    for vs in resolved:
        if vs.levels != levels:
            raise ValueError(f"value set {vs.id} is for {vs.instrument}, the data are {levels}-level")
    if len({vs.id for vs in resolved}) != len(resolved):
        raise ValueError("a value set is asked for twice")
    return resolved


def score_eq5d(
    data: pa.Table | pa.RecordBatch,
    value_sets: Sequence[ValueSet | str] = (),
    *,
    levels: int = 5,
    columns: EQ5DColumns = PROM_RESPONSE,
    threads: int | None = None,
) -> EQ5DScores:
    """Score every row of ``data``; see the module docstring for the columns and reason codes.

    ``levels`` is the instrument (5 for EQ-5D-5L, 3 for EQ-5D-3L); every value set must be for
    it. ``threads`` caps the worker threads (default: Arrow's CPU count).
    """
    if levels not in (3, 5):
        raise ValueError("levels must be 3 (EQ-5D-3L) or 5 (EQ-5D-5L)")
    sets = _resolve(value_sets, levels)
    table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
    wanted = list(columns.dimensions) + ([columns.vas] if columns.vas else [])
    missing_cols = [c for c in wanted if c not in table.column_names]
    if missing_cols:
        raise KeyError(f"missing EQ-5D columns: {missing_cols}")
    batches = table.select(wanted).to_batches(max_chunksize=_BATCH_ROWS)
    dim_count = len(DIMENSIONS)

    def run(batch: pa.RecordBatch) -> _Part:
        cols = batch.columns
        return _score_batch(cols[:dim_count], cols[dim_count] if columns.vas else None, levels, sets)

    workers = max(1, min(len(batches), threads or pa.cpu_count()))
    if workers == 1:
        parts = [run(b) for b in batches]
    else:
        # one contiguous run of batches per worker: few tasks, row order kept by concatenation
        bounds = np.linspace(0, len(batches), workers + 1).astype(int)

        def run_many(lo_hi: tuple[int, int]) -> list[_Part]:
            return [run(b) for b in batches[lo_hi[0] : lo_hi[1]]]

        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = [
                p for chunk in pool.map(run_many, zip(bounds[:-1], bounds[1:], strict=True)) for p in chunk
            ]

    names = [PROFILE, LEVEL_SUM] + ([VAS] if columns.vas else []) + [index_column(vs) for vs in sets]
    types = [pa.dictionary(pa.int16(), pa.string()), pa.int8()]
    types += [pa.int16()] if columns.vas else []
    types += [pa.float64()] * len(sets)
    out = pa.table(
        [pa.chunked_array([p.columns[i] for p in parts], type=t) for i, t in enumerate(types)],
        names=names,
    )
    counts = {
        DIMENSION_MISSING: sum(p.missing for p in parts),
        DIMENSION_INVALID: sum(p.invalid for p in parts),
        VAS_MISSING: sum(p.vas_missing for p in parts),
        VAS_INVALID: sum(p.vas_invalid for p in parts),
    }
    rows = table.num_rows
    return EQ5DScores(out, counts, rows, rows - sum(p.bad for p in parts), tuple(vs.id for vs in sets))


# -- profiles ------------------------------------------------------------------------------------


def profile_levels(profile: str, levels: int = 5) -> tuple[int, int, int, int, int]:
    """``"21341"`` -> ``(2, 1, 3, 4, 1)``; raises ValueError for anything else."""
    if len(profile) != len(DIMENSIONS) or any(c not in "12345"[:levels] for c in profile):
        raise ValueError(f"not an EQ-5D-{levels}L profile: {profile!r}")
    a, b, c, d, e = (int(ch) for ch in profile)
    return a, b, c, d, e


def split_profiles(profiles: pa.Array | pa.ChunkedArray, levels: int = 5) -> pa.Table:
    """Vectorised inverse of the profile: a table of the five dimension levels (int8, NULL kept)."""
    col = profiles.combine_chunks() if isinstance(profiles, pa.ChunkedArray) else profiles
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise TypeError("profiles must be strings")
    ok = pc.match_substring_regex(col, f"^[1-{levels}]{{5}}$")
    bad = pc.sum(pc.invert(pc.fill_null(ok, True))).as_py() or 0
    if bad:
        raise ValueError(f"{bad} value(s) are not EQ-5D-{levels}L profiles")
    dims = [pc.cast(pc.utf8_slice_codeunits(col, i, i + 1), pa.int8()) for i in range(len(DIMENSIONS))]
    return pa.table(dims, names=list(EQ5D_RESPONSE.dimensions))
