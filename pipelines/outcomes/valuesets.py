"""EQ-5D value sets as declarative data: load, validate, and expand to a table over every state.

A value set lives in ``schemas/valuesets/<id>.json`` (see the Swedish sets there for the shape):
its source is cited in the file, and its model is data, not code::

    index = constant - sum(decrements[dim][level - 1] for each dimension)
                     - sum(term.decrement for each term whose condition holds)

A term's condition is ``any_dimension_at_least: x`` (at least one dimension at level x or worse:
N3 in a 3L set, N2/N3/N4/N5 in a 5L set, "not full health" when x = 2). That is every form the
shipped sets need; a file asking for anything else is refused when loaded, never half-applied.

Scoring never evaluates the formula per row: :meth:`ValueSet.state_values` expands it once over
all ``levels ** 5`` states (243 or 3125), and scoring is a gather by state code.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from hdp.settings import SCHEMAS_DIR

VALUESETS_DIR = SCHEMAS_DIR / "valuesets"

#: The EQ-5D dimensions in profile order: mobility, self-care, usual activities,
#: pain/discomfort, anxiety/depression.
DIMENSIONS: tuple[str, ...] = ("MO", "SC", "UA", "PD", "AD")
INSTRUMENT_LEVELS = {"EQ-5D-3L": 3, "EQ-5D-5L": 5}
_KNOWN_KEYS = {
    "id",
    "title",
    "instrument",
    "levels",
    "method",
    "country",
    "basis",
    "scale",
    "source",
    "transcribed_from",
    "model",
    "examples",
    "notes",
}
_REQUIRED_SOURCE = ("authors", "year", "title", "journal")


class ValueSetError(ValueError):
    """A value-set file that does not describe a model this module can apply exactly."""


@dataclass(frozen=True)
class Term:
    """A decrement applied when at least one dimension is at ``at_least`` or worse."""

    name: str
    at_least: int
    decrement: float


@dataclass(frozen=True)
class Example:
    """A published (profile, value) pair with the number of decimals it was published with."""

    profile: str
    value: float
    decimals: int
    source: str


@dataclass(frozen=True, eq=False)
class ValueSet:
    id: str
    title: str
    instrument: str
    levels: int
    method: str
    constant: float
    decrements: tuple[tuple[float, ...], ...]  # per dimension (DIMENSIONS order), per level 1..L
    terms: tuple[Term, ...]
    examples: tuple[Example, ...]
    source: dict[str, Any]
    _values: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def states(self) -> int:
        return int(self.levels ** len(DIMENSIONS))

    def value(self, levels: tuple[int, ...] | list[int]) -> float:
        """The index of one state given as five levels (1-based); the scalar reference form."""
        if len(levels) != len(DIMENSIONS) or any(not 1 <= lv <= self.levels for lv in levels):
            raise ValueError(f"not an {self.instrument} state: {levels!r}")
        total = self.constant - sum(self.decrements[d][lv - 1] for d, lv in enumerate(levels))
        worst = max(levels)
        return total - sum(t.decrement for t in self.terms if worst >= t.at_least)

    def state_values(self) -> np.ndarray:
        """The index of every state, indexed by state code (see :func:`state_code`), float64."""
        if not self._values:
            self._values.append(_state_values(self))
        return self._values[0]


def _state_values(vs: ValueSet) -> np.ndarray:
    grid = state_levels(vs.levels)  # (states, 5), 1-based
    values = np.full(grid.shape[0], vs.constant, dtype=np.float64)
    for d in range(len(DIMENSIONS)):
        values -= np.asarray(vs.decrements[d], dtype=np.float64)[grid[:, d] - 1]
    worst = grid.max(axis=1)
    for term in vs.terms:
        values -= np.where(worst >= term.at_least, term.decrement, 0.0)
    values.setflags(write=False)
    return values


@cache
def state_levels(levels: int) -> np.ndarray:
    """All ``levels ** 5`` states as a (states, 5) int8 array of 1-based levels, by state code.

    The state code is the profile read as a base-``levels`` number of (level - 1) digits, so code
    order is profile order (11111, 11112, ...).
    """
    n = levels ** len(DIMENSIONS)
    codes = np.arange(n)
    grid = np.empty((n, len(DIMENSIONS)), dtype=np.int8)
    for d in range(len(DIMENSIONS)):
        grid[:, d] = codes // levels ** (len(DIMENSIONS) - 1 - d) % levels + 1
    grid.setflags(write=False)
    return grid


def state_code(levels_of_state: tuple[int, ...] | list[int], levels: int) -> int:
    code = 0
    for lv in levels_of_state:
        code = code * levels + (lv - 1)
    return code


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueSetError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def parse_value_set(raw: dict[str, Any], *, origin: str = "<value set>") -> ValueSet:
    """Validate a decoded value-set document; raise :class:`ValueSetError` on anything unexpected."""
    if not isinstance(raw, dict):
        raise ValueSetError(f"{origin}: a value set is a JSON object")
    unknown = set(raw) - _KNOWN_KEYS
    if unknown:
        raise ValueSetError(f"{origin}: unknown keys {sorted(unknown)}")
    for key in ("id", "title", "instrument", "levels", "method", "source", "model"):
        if key not in raw:
            raise ValueSetError(f"{origin}: missing {key!r}")
    instrument = raw["instrument"]
    if instrument not in INSTRUMENT_LEVELS:
        raise ValueSetError(f"{origin}: instrument must be one of {sorted(INSTRUMENT_LEVELS)}")
    levels = raw["levels"]
    if levels != INSTRUMENT_LEVELS[instrument]:
        raise ValueSetError(
            f"{origin}: {instrument} has {INSTRUMENT_LEVELS[instrument]} levels, not {levels!r}"
        )
    source = raw["source"]
    if not isinstance(source, dict) or any(not source.get(k) for k in _REQUIRED_SOURCE):
        raise ValueSetError(f"{origin}: source must name {', '.join(_REQUIRED_SOURCE)}")

    model = raw["model"]
    if not isinstance(model, dict) or set(model) - {"form", "constant", "decrements", "terms"}:
        raise ValueSetError(f"{origin}: model takes form, constant, decrements, terms")
    if model.get("form", "additive") != "additive":
        raise ValueSetError(f"{origin}: only the additive model form is supported, not {model.get('form')!r}")
    constant = _number(model.get("constant"), f"{origin}: model.constant")
    decrements_raw = model.get("decrements")
    if not isinstance(decrements_raw, dict) or set(decrements_raw) != set(DIMENSIONS):
        raise ValueSetError(f"{origin}: model.decrements must give exactly {', '.join(DIMENSIONS)}")
    decrements = []
    for dim in DIMENSIONS:
        row = decrements_raw[dim]
        if not isinstance(row, list) or len(row) != levels:
            raise ValueSetError(f"{origin}: decrements.{dim} must list {levels} values (level 1 first)")
        values = tuple(_number(v, f"{origin}: decrements.{dim}") for v in row)
        if values[0] != 0.0:
            raise ValueSetError(f"{origin}: decrements.{dim} must be 0 at level 1 (the reference level)")
        decrements.append(values)
    terms = []
    names = set()
    for i, term in enumerate(model.get("terms", [])):
        where = f"{origin}: model.terms[{i}]"
        if not isinstance(term, dict) or set(term) - {
            "name",
            "description",
            "any_dimension_at_least",
            "decrement",
        }:
            raise ValueSetError(f"{where}: a term takes name, description, any_dimension_at_least, decrement")
        at_least = term.get("any_dimension_at_least")
        if isinstance(at_least, bool) or not isinstance(at_least, int) or not 2 <= at_least <= levels:
            raise ValueSetError(f"{where}: any_dimension_at_least must be a level from 2 to {levels}")
        name = str(term.get("name") or f"N{at_least}")
        if name in names:
            raise ValueSetError(f"{where}: duplicate term {name!r}")
        names.add(name)
        terms.append(Term(name, at_least, _number(term.get("decrement"), f"{where}.decrement")))
    examples = []
    for i, ex in enumerate(raw.get("examples", [])):
        where = f"{origin}: examples[{i}]"
        profile = str(ex.get("profile", "")) if isinstance(ex, dict) else ""
        if len(profile) != len(DIMENSIONS) or any(c not in "123456789"[:levels] for c in profile):
            raise ValueSetError(f"{where}: profile {profile!r} is not an {instrument} state")
        decimals = ex.get("decimals")
        if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 9:
            raise ValueSetError(f"{where}: decimals must be an integer 0..9")
        if not ex.get("source"):
            raise ValueSetError(f"{where}: every example names its source")
        examples.append(
            Example(profile, _number(ex.get("value"), f"{where}.value"), decimals, str(ex["source"]))
        )
    return ValueSet(
        id=str(raw["id"]),
        title=str(raw["title"]),
        instrument=instrument,
        levels=levels,
        method=str(raw["method"]),
        constant=constant,
        decrements=tuple(decrements),
        terms=tuple(terms),
        examples=tuple(examples),
        source=dict(source),
    )


def load_value_set(ref: str | Path) -> ValueSet:
    """Load a value set by id (``se_5l_tto_2020`` -> schemas/valuesets/se_5l_tto_2020.json) or path."""
    path = Path(ref) if isinstance(ref, Path) or str(ref).endswith(".json") else VALUESETS_DIR / f"{ref}.json"
    return _load(path.resolve())


@cache
def _load(path: Path) -> ValueSet:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueSetError(f"no value set at {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueSetError(f"{path}: not JSON ({exc})") from None
    vs = parse_value_set(raw, origin=str(path))
    if path.parent == VALUESETS_DIR.resolve() and vs.id != path.stem:
        raise ValueSetError(f"{path}: id {vs.id!r} differs from the file name")
    return vs


def available_value_sets() -> list[str]:
    """Ids of the value sets shipped in schemas/valuesets/."""
    return sorted(p.stem for p in VALUESETS_DIR.glob("*.json"))
