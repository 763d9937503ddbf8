"""EQ-5D scores and patient-survey answers as DuckDB SQL: the profile, level sum and value-set
indices of :mod:`scoring`, compiled to one expression each over given dimension column
expressions, and per survey dimension whether an answer is positive (:func:`survey_positive_sql`,
the rule of :mod:`pipelines.outcomes.survey`; see there).

This is how derived scores reach a table written by SQL (the research zone: the pseudonymisation
policy's ``eq5d`` action) without a round trip through Arrow. The rule is
:func:`pipelines.outcomes.scoring.score_eq5d`'s, value for value (a property test holds them
together): a dimension that is NULL, out of range, not an integer (3.5, NaN, ``'3.0'``, ``'x'``)
or an empty/blank string makes the profile, the level sum and every index of the row NULL.
Nothing is imputed. Integer, floating and decimal columns are read by value; strings are read
as digits with surrounding Unicode blanks ignored (``' 3 '`` and ``'003'`` are level 3), exactly
as :func:`score_eq5d` reads them. Any other column type (boolean, date, ...) raises a DuckDB
error when a row is read, as :func:`score_eq5d` raises ``TypeError``: never a silent NULL.

The index is the value set's model written out (constant minus one decrement per dimension,
minus each term whose condition holds), subtracting in the same order as
:meth:`ValueSet.state_values`, so the SQL and the Arrow result agree to the last bit in
practice (the test asks 1e-9). The value set is read from ``schemas/valuesets/`` when the
expression is compiled: an unknown id, or a value set for another instrument than the one
asked for, raises :class:`ValueSetError` / ``ValueError`` then, before any data moves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.outcomes.survey import SurveyConfig, load_survey
from pipelines.outcomes.valuesets import DIMENSIONS, ValueSet, load_value_set

#: the scores a policy may ask for, and the DuckDB type of each
SCORES = ("profile", "level_sum", "index")
SQL_TYPES = {"profile": "VARCHAR", "level_sum": "INTEGER", "index": "DOUBLE"}

#: the code points pyarrow's ``utf8_trim_whitespace`` removes (what :func:`score_eq5d` ignores
#: around a string level); a test checks this list against pyarrow over all of Unicode
TRIMMED_WHITESPACE: tuple[int, ...] = (
    0x09,
    0x0A,
    0x0B,
    0x0C,
    0x0D,
    0x1C,
    0x1D,
    0x1E,
    0x1F,
    0x20,
    0x85,
    0xA0,
    0x1680,
    *range(0x2000, 0x200B),
    0x2028,
    0x2029,
    0x202F,
    0x205F,
    0x3000,
)
_BLANK = "[" + "".join(f"\\x{{{cp:X}}}" for cp in TRIMMED_WHITESPACE) + "]"

_INTEGER_TYPES = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
)
_NUMERIC_TYPES = (*_INTEGER_TYPES, "FLOAT", "DOUBLE")


def _str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _double(value: float) -> str:
    # repr() is the shortest string that reads back as the same float64
    return f"CAST({_str(repr(float(value)))} AS DOUBLE)"


def _check_levels(levels: int) -> None:
    if levels not in (3, 5):
        raise ValueError("levels must be 3 (EQ-5D-3L) or 5 (EQ-5D-5L)")


def _check_dimensions(dimensions: Sequence[str]) -> tuple[str, ...]:
    dims = tuple(dimensions)
    if len(dims) != len(DIMENSIONS) or not all(isinstance(d, str) and d for d in dims):
        raise ValueError(
            f"give the {len(DIMENSIONS)} dimension expressions in profile order ({', '.join(DIMENSIONS)})"
        )
    return dims


def level_sql(expr: str, levels: int = 5) -> str:
    """SQL for one dimension as an INTEGER level 1..``levels``, NULL when missing or not a level.

    ``expr`` is any SQL expression (e.g. ``r."eq5d_mobility"``); its type picks the branch
    (``typeof`` is folded to a constant when the query is planned).
    """
    _check_levels(levels)
    x = f"({expr})"
    allowed = ", ".join(str(lv) for lv in range(1, levels + 1))
    numeric = ", ".join(_str(t) for t in _NUMERIC_TYPES)
    text = f"CAST({x} AS VARCHAR)"
    pattern = _str(f"^{_BLANK}*0{{0,8}}([1-{levels}]){_BLANK}*$")
    return (
        f"(CASE WHEN typeof({x}) IN ({numeric}) OR typeof({x}) LIKE 'DECIMAL(%' "
        f"THEN CASE WHEN {x} IN ({allowed}) THEN CAST({x} AS INTEGER) END "
        f"WHEN typeof({x}) = 'VARCHAR' "
        f"THEN CAST(nullif(regexp_extract({text}, {pattern}, 1), '') AS INTEGER) "
        f"WHEN typeof({x}) = '\"NULL\"' THEN CAST(NULL AS INTEGER) "
        f"ELSE CAST(error('an EQ-5D dimension must be integer, floating, decimal or string, not ' "
        f"|| typeof({x})) AS INTEGER) END)"
    )


def _levels(dimensions: Sequence[str], levels: int) -> list[str]:
    return [level_sql(d, levels) for d in _check_dimensions(dimensions)]


def profile_sql(dimensions: Sequence[str], levels: int = 5) -> str:
    """SQL for the health profile (``'21341'``, VARCHAR), NULL unless all five are levels."""
    lv = _levels(dimensions, levels)
    n = len(lv)
    digits = " + ".join(f"{lv[d]} * {10 ** (n - 1 - d)}" for d in range(n))
    return f"CAST({digits} AS VARCHAR)"


def level_sum_sql(dimensions: Sequence[str], levels: int = 5) -> str:
    """SQL for the sum of the five levels (INTEGER), NULL unless all five are levels."""
    return f"CAST({' + '.join(_levels(dimensions, levels))} AS INTEGER)"


def index_sql(dimensions: Sequence[str], value_set: ValueSet | str, *, levels: int | None = None) -> str:
    """SQL for the value set's index (DOUBLE), NULL unless all five dimensions are levels.

    ``value_set``: a :class:`ValueSet` or an id under schemas/valuesets/ (loaded and validated
    here). ``levels``, when given, must be the value set's instrument.
    """
    vs = value_set if isinstance(value_set, ValueSet) else load_value_set(value_set)
    if levels is not None and levels != vs.levels:
        raise ValueError(f"value set {vs.id} is for {vs.instrument}, not EQ-5D-{levels}L")
    lv = _levels(dimensions, vs.levels)
    expr = _double(vs.constant)
    for d, level in enumerate(lv):
        table = ", ".join(_double(v) for v in vs.decrements[d])
        expr = f"({expr} - [{table}][{level}])"  # 1-based; a NULL level gives NULL
    if vs.terms:
        worst = f"greatest({', '.join(lv)})"
        for term in vs.terms:
            expr = (
                f"({expr} - CASE WHEN {worst} >= {term.at_least} THEN {_double(term.decrement)} ELSE 0.0 END)"
            )
    return expr


def score_sql(
    score: str, dimensions: Sequence[str], *, value_set: str | None = None, levels: int | None = None
) -> str:
    """One score by name (``profile``, ``level_sum``, ``index``), as a policy declares it.

    ``index`` needs ``value_set``; the other two refuse one. ``levels`` defaults to 5 for the
    profile and level sum and to the value set's instrument for an index.
    """
    if score not in SCORES:
        raise ValueError(f"unknown EQ-5D score {score!r}; one of {', '.join(SCORES)}")
    if score == "index":
        if not value_set:
            raise ValueError("an EQ-5D index needs a value set")
        return index_sql(dimensions, value_set, levels=levels)
    if value_set is not None:
        raise ValueError(f"the EQ-5D {score} takes no value set")
    if score == "profile":
        return profile_sql(dimensions, 5 if levels is None else levels)
    return level_sum_sql(dimensions, 5 if levels is None else levels)


# -- patient-survey answers ---------------------------------------------------------------------

#: DuckDB type of a survey answer column: 1 positive, 0 a valid answer that is not, NULL otherwise
SURVEY_SQL_TYPE = "INTEGER"


@cache
def _lowered_codepoints() -> np.ndarray:
    """``utf8_lower`` of every Unicode scalar value, as a code point per code point (index = input).

    :func:`survey_shares` lower-cases answers with pyarrow's ``utf8_lower``, which maps code point
    by code point; DuckDB's ``lower`` uses another Unicode version (they differ on some 75 code
    points of recent scripts), so the SQL never calls it: it matches the exact set of code points
    that pyarrow lower-cases to each character of an answer, read from pyarrow itself here.
    """
    points = np.concatenate([np.arange(0xD800), np.arange(0xE000, 0x110000)]).astype("<u4")
    utf8_lengths = np.select([points < 0x80, points < 0x800, points < 0x10000], [1, 2, 3], 4)
    offsets = np.concatenate([[0], np.cumsum(utf8_lengths)]).astype(np.int32)
    data = points.tobytes().decode("utf-32-le").encode("utf-8")
    chars = pa.StringArray.from_buffers(len(points), pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))
    lowered = pc.utf8_lower(chars)
    if pc.max(pc.utf8_length(lowered)).as_py() != 1 or pc.min(pc.utf8_length(lowered)).as_py() != 1:
        # a one-to-many mapping would break the per-position match below: refuse, never guess
        raise RuntimeError("this pyarrow's utf8_lower does not map code point to code point")
    # one code point per input, in order: the UTF-8 data buffer decoded as a whole
    lowered_offsets = np.frombuffer(
        lowered.buffers()[1], dtype=np.int32, count=len(lowered) + 1, offset=lowered.offset * 4
    )
    utf8 = lowered.buffers()[2].to_pybytes()[lowered_offsets[0] : lowered_offsets[-1]]
    table = np.full(0x110000, 0xD800, dtype="<u4")  # surrogates: never a lower-case image
    table[points] = np.frombuffer(utf8.decode("utf-8").encode("utf-32-le"), dtype="<u4")
    return table


@cache
def _changed_by_lower() -> dict[int, frozenset[int]]:
    """Lower-case image -> the code points other than itself that lower-case to it."""
    lowered = _lowered_codepoints()
    moved = np.flatnonzero((lowered != np.arange(0x110000)) & (lowered != 0xD800))
    out: dict[int, set[int]] = {}
    for source, image in zip(moved.tolist(), lowered[moved].tolist(), strict=True):
        out.setdefault(image, set()).add(source)
    return {image: frozenset(sources) for image, sources in out.items()}


@cache
def lower_preimage(char: str) -> frozenset[int]:
    """The code points that pyarrow's ``utf8_lower`` maps to ``char`` (itself among them unless
    it has a lower case of its own)."""
    point = ord(char)
    itself = {point} if _lowered_codepoints()[point] == point else set()
    return frozenset(itself | _changed_by_lower().get(point, frozenset()))


def _class(points: Iterable[int]) -> str | None:
    listed = sorted(points)
    return "[" + "".join(f"\\x{{{p:X}}}" for p in listed) + "]" if listed else None


@cache
def _answer_regex(value: str) -> str | None:
    """RE2 for the core of a string whose ``utf8_lower(utf8_trim_whitespace(.))`` is ``value``:
    each position one of the code points pyarrow lower-cases to ``value``'s character there, the
    first and last never a trimmed blank (those would have been trimmed). None: no string is."""
    blanks = set(TRIMMED_WHITESPACE)
    classes = []
    for i, char in enumerate(value):
        points = lower_preimage(char)
        if i in (0, len(value) - 1):
            points -= blanks
        cls = _class(points)
        if cls is None:
            return None
        classes.append(cls)
    return "".join(classes)


@cache
def _is_normal(value: str) -> bool:
    """True when ``value`` is its own ``utf8_lower(utf8_trim_whitespace(.))`` (then plain equality
    finds it): no blank at either end, and every character its own lower case."""
    blanks = {chr(p) for p in TRIMMED_WHITESPACE}
    lowered = _lowered_codepoints()
    return (
        value[:1] not in blanks and value[-1:] not in blanks and all(lowered[ord(c)] == ord(c) for c in value)
    )


def _pattern(text: str, values: Iterable[str]) -> str | None:
    """SQL: ``text`` trimmed and lower-cased (pyarrow's way) is one of ``values``; None: never."""
    cores = [c for c in (_answer_regex(v) for v in sorted(values)) if c is not None]
    if not cores:
        return None
    blank = f"{_BLANK}*"
    return f"regexp_full_match({text}, {_str(blank + '(?:' + '|'.join(cores) + ')' + blank)})"


def survey_positive_sql(expr: str, dimension: str, survey: SurveyConfig | str) -> str:
    """SQL (INTEGER) for one answer of survey ``dimension``: 1 when it is a positive answer, 0 when
    it is another valid answer, NULL when it is "not applicable", missing, blank or unknown.

    The mean of the column over a group is :func:`pipelines.outcomes.survey.survey_shares`'
    ``share_positive`` (NULL answers are out of both the mean's numerator and its denominator;
    a property test holds the two together); its count is ``n_denominator``, its sum
    ``n_positive``. ``survey``: a :class:`SurveyConfig` or an id under schemas/surveys/. An
    unknown survey or dimension raises :class:`SurveyError` here, before any data moves. Answers
    are read as :func:`survey_shares` reads them: text, or integers as their decimal text;
    blanks trimmed and lower-cased. Any other column type raises a DuckDB error when a row is read.
    """
    config = survey if isinstance(survey, SurveyConfig) else load_survey(survey)
    dim = config.dimension(dimension)
    positive = config.positive_of(dim)
    other = config.answers - positive
    x = f"({expr})"
    text = f"CAST({x} AS VARCHAR)"
    # A well-formed answer is settled by one comparison with a constant (a simple CASE, measured
    # 30% cheaper than IN lists): every configured value that is its own trimmed lower case, and
    # the empty string. Anything else (other case, blanks around, unknown) goes to the exact
    # patterns; NULL goes there too and stays NULL.
    settled = [
        *((v, "1") for v in sorted(positive) if _is_normal(v)),
        *((v, "0") for v in sorted(other) if _is_normal(v)),
        *((v, "NULL") for v in sorted(config.not_applicable) if _is_normal(v)),
        ("", "NULL"),
    ]
    patterns = [(c, flag) for c, flag in ((_pattern(text, positive), 1), (_pattern(text, other), 0)) if c]
    slow = f"CASE {' '.join(f'WHEN {c} THEN {flag}' for c, flag in patterns)} END" if patterns else "NULL"
    answer = f"CASE {text} {' '.join(f'WHEN {_str(v)} THEN {flag}' for v, flag in settled)} ELSE {slow} END"
    readable = ", ".join(_str(t) for t in (*_INTEGER_TYPES, "VARCHAR"))
    return (
        f"(CASE WHEN typeof({x}) IN ({readable}) OR typeof({x}) LIKE 'ENUM(%' "
        f"THEN CAST({answer} AS INTEGER) "
        f"WHEN typeof({x}) = '\"NULL\"' THEN CAST(NULL AS INTEGER) "
        f"ELSE CAST(error('a survey answer must be text or integer, not ' || typeof({x})) AS INTEGER) END)"
    )


__all__ = [
    "SCORES",
    "SQL_TYPES",
    "SURVEY_SQL_TYPE",
    "TRIMMED_WHITESPACE",
    "index_sql",
    "level_sql",
    "level_sum_sql",
    "profile_sql",
    "score_sql",
    "survey_positive_sql",
]
