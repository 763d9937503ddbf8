"""Patient-survey (PREM) dimensions: the share of positive answers, "not applicable" left out.

Nationell Patientenkät style: each dimension is reported as the share of respondents who gave a
positive answer, among those for whom the question applied. Which answers are positive, which
mean "not applicable" and which are valid at all is configuration (:class:`SurveyConfig`, which
:meth:`SurveyConfig.from_mapping` builds from plain data), not code. A survey's configuration is a
data file ``schemas/surveys/<id>.json`` (:func:`load_survey`); :data:`PREM_DEFAULT` is
``schemas/surveys/prem.json``, the project's PREM columns of ``prom_response`` (Likert 1-5 as
text, 5 the most positive, and ``ej aktuellt``), with 4 and 5 counted as positive. The same file
drives the research zone's per-answer columns (:func:`pipelines.outcomes.sql.survey_positive_sql`,
1 positive / 0 not / NULL otherwise), whose mean per group is this module's ``share_positive``.

Per dimension (and per group, with ``by``) the result counts:

* ``n_positive`` - positive answers;
* ``n_denominator`` - valid answers that are not "not applicable" (the share's denominator);
* ``n_not_applicable`` - left out of the denominator;
* ``n_missing`` - NULL or blank: no answer, left out too;
* ``n_invalid`` - an answer the configuration does not know: left out, and counted so it is seen;
* ``share_positive`` - ``n_positive / n_denominator``, NULL when the denominator is 0.

Answers, and the configured answers, are compared after trimming blanks and lower-casing
(pyarrow's ``utf8_trim_whitespace`` and ``utf8_lower``); integer columns are read as their
decimal text. Disclosure control of small groups is the caller's (the aggregate tier's) job.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from hdp.settings import SCHEMAS_DIR

SURVEYS_DIR = SCHEMAS_DIR / "surveys"
_SURVEY_ID = re.compile(r"[a-z0-9][a-z0-9_]*")
#: keys of a survey file that describe it for people and are not part of the rule
_DESCRIPTIVE_KEYS = frozenset({"id", "title", "note", "source"})


class SurveyError(ValueError):
    """A survey configuration that cannot be applied (unknown survey or dimension, bad file)."""


@dataclass(frozen=True)
class SurveyDimension:
    name: str
    column: str
    positive: frozenset[str] | None = None  # overrides the survey-wide positive answers


@dataclass(frozen=True)
class SurveyConfig:
    dimensions: tuple[SurveyDimension, ...]
    answers: frozenset[str]  # every valid answer except "not applicable"
    positive: frozenset[str]  # subset of answers
    not_applicable: frozenset[str]

    def __post_init__(self) -> None:
        if not self.dimensions:
            raise ValueError("a survey configuration needs at least one dimension")
        if len({d.name for d in self.dimensions}) != len(self.dimensions):
            raise ValueError("dimension names must be unique")
        if "" in self.answers | self.not_applicable:
            raise ValueError("a blank answer is a missing answer, not a configured one")
        if self.answers & self.not_applicable:
            raise ValueError(
                f"answers both valid and not applicable: {sorted(self.answers & self.not_applicable)}"
            )
        for dim in self.dimensions:
            positive = self.positive_of(dim)
            if not positive or not positive <= self.answers:
                raise ValueError(
                    f"{dim.name}: positive answers must be a non-empty subset of the valid answers"
                )

    def dimension(self, name: str) -> SurveyDimension:
        """The dimension called ``name``; :class:`SurveyError` if the survey has none (fail closed)."""
        for dim in self.dimensions:
            if dim.name == name:
                return dim
        raise SurveyError(
            f"unknown survey dimension {name!r}; one of {', '.join(d.name for d in self.dimensions)}"
        )

    def only(self, *names: str) -> SurveyConfig:
        """The same survey with only the dimensions ``names`` (a table that carries only some)."""
        return replace(self, dimensions=tuple(self.dimension(n) for n in names))

    def positive_of(self, dim: SurveyDimension) -> frozenset[str]:
        """The answers that count as positive for ``dim`` (its own list, else the survey's)."""
        return self.positive if dim.positive is None else dim.positive

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> SurveyConfig:
        """Build from data::

        {"answers": ["1", ..., "5"], "positive": ["4", "5"], "not_applicable": ["ej aktuellt"],
         "dimensions": [{"name": "respect", "column": "prem_respect"}, ...]}
        """
        unknown = set(raw) - {"answers", "positive", "not_applicable", "dimensions"} - _DESCRIPTIVE_KEYS
        if unknown:
            raise ValueError(f"unknown survey configuration keys: {sorted(unknown)}")
        dims = []
        for d in raw["dimensions"]:
            if set(d) - {"name", "column", "positive"}:
                raise ValueError(f"a dimension takes name, column, positive: {d!r}")
            pos = d.get("positive")
            dims.append(
                SurveyDimension(str(d["name"]), str(d["column"]), None if pos is None else _norm_set(pos))
            )
        return cls(
            dimensions=tuple(dims),
            answers=_norm_set(raw["answers"]),
            positive=_norm_set(raw["positive"]),
            not_applicable=_norm_set(raw.get("not_applicable", ())),
        )


def _norm_set(values: Iterable[Any]) -> frozenset[str]:
    """Configured answers normalised exactly as the data are (:func:`_normalised`), so that a
    configured answer is always found: ``str.casefold`` would turn ``ß`` into ``ss``, which no
    lower-cased answer ever is."""
    if isinstance(values, str):
        raise ValueError("expected a list of answers, not one string")
    text = pa.array([str(v) for v in values], pa.string())
    return frozenset(pc.utf8_lower(pc.utf8_trim_whitespace(text)).to_pylist())


@cache
def load_survey(survey_id: str) -> SurveyConfig:
    """``schemas/surveys/<survey_id>.json`` as a :class:`SurveyConfig` (validated; read once).

    An id that is not a plain name, a missing file, a file whose ``id`` is another, or a
    configuration :class:`SurveyConfig` refuses raises :class:`SurveyError`.
    """
    if not isinstance(survey_id, str) or not _SURVEY_ID.fullmatch(survey_id):
        raise SurveyError(f"not a survey id: {survey_id!r}")
    path = SURVEYS_DIR / f"{survey_id}.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SurveyError(f"unknown survey {survey_id!r} (no schemas/surveys/{survey_id}.json)") from None
    if raw.get("id") != survey_id:
        raise SurveyError(f"schemas/surveys/{survey_id}.json says it is survey {raw.get('id')!r}")
    try:
        return SurveyConfig.from_mapping(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise SurveyError(f"survey {survey_id}: {exc}") from exc


#: The project's PREM columns (``prom_response``; the research names of schemas/sources/prom.json).
PREM_DEFAULT = load_survey("prem")

COUNT_COLUMNS = ("n_positive", "n_denominator", "n_not_applicable", "n_missing", "n_invalid")


def _normalised(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if pa.types.is_integer(col.type):
        col = col.cast(pa.string())
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_null(col.type)):
        raise TypeError(f"a survey column must be text or integer, not {col.type}")
    if pa.types.is_null(col.type):
        return col.cast(pa.string())
    return pc.utf8_lower(pc.utf8_trim_whitespace(col))


def _flags(col: pa.ChunkedArray, dim: SurveyDimension, config: SurveyConfig) -> dict[str, pa.ChunkedArray]:
    text = _normalised(col)
    positive = config.positive_of(dim)
    blank = pc.fill_null(pc.equal(text, ""), True)  # NULL or empty: no answer
    is_na = pc.fill_null(
        pc.is_in(text, value_set=pa.array(sorted(config.not_applicable), pa.string())), False
    )
    is_valid = pc.fill_null(pc.is_in(text, value_set=pa.array(sorted(config.answers), pa.string())), False)
    is_pos = pc.fill_null(pc.is_in(text, value_set=pa.array(sorted(positive), pa.string())), False)
    invalid = pc.and_(pc.invert(blank), pc.invert(pc.or_(is_na, is_valid)))
    return {
        "n_positive": is_pos,
        "n_denominator": is_valid,
        "n_not_applicable": is_na,
        "n_missing": blank,
        "n_invalid": invalid,
    }


def survey_shares(data: pa.Table, config: SurveyConfig = PREM_DEFAULT, *, by: Sequence[str] = ()) -> pa.Table:
    """One row per (group of ``by``, dimension) with the counts and share described above."""
    needed = [d.column for d in config.dimensions]
    absent = [c for c in [*by, *needed] if c not in data.column_names]
    if absent:
        raise KeyError(f"missing columns: {absent}")
    parts = []
    for dim in config.dimensions:
        flags = _flags(data.column(dim.column), dim, config)
        counts = pa.table({k: pc.cast(v, pa.int64()) for k, v in flags.items()})
        if by:
            for name in by:
                counts = counts.append_column(name, data.column(name))
            agg = counts.group_by(list(by), use_threads=False).aggregate([(c, "sum") for c in COUNT_COLUMNS])
            sums = {f"{c}_sum": c for c in COUNT_COLUMNS}
            agg = agg.rename_columns([sums.get(c, c) for c in agg.column_names])
        else:
            agg = pa.table({c: [pc.sum(counts.column(c)).as_py() or 0] for c in COUNT_COLUMNS})
        agg = agg.append_column("dimension", pa.array([dim.name] * agg.num_rows, pa.string()))
        parts.append(agg.select([*by, "dimension", *COUNT_COLUMNS]))
    out = pa.concat_tables(parts)
    denominator = out.column("n_denominator")
    share = pc.if_else(
        pc.equal(denominator, 0),
        pa.scalar(None, pa.float64()),
        pc.divide(pc.cast(out.column("n_positive"), pa.float64()), pc.cast(denominator, pa.float64())),
    )
    return out.append_column("share_positive", share)
