"""Declarative policies: research-zone pseudonymisation and release quasi-identifier rules.

Files in ``schemas/policies/``:

* ``pseudonymise.json``: raw-zone table -> research-zone table, column by column;
* ``release.json``: per-variable quasi-identifier generalisation applied to every release;
* ``postcode_county.json``: postal-code prefix -> county (län) code.

Loading validates the files (unknown actions, missing fields) so a broken policy stops the
run before any data moves.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from hdp.settings import SCHEMAS_DIR

POLICY_DIR = SCHEMAS_DIR / "policies"

RESEARCH_ACTIONS = frozenset(
    {
        "person_id",
        "birth_year",
        "sex",
        "id_type",
        "county",
        "year",
        "resource_pseudonym",
        "keep",
        "eq5d",
        "survey",
    }
)
#: ``eq5d`` (a score derived from the five EQ-5D dimensions, computed as the research table is
#: written: pipelines.outcomes.sql): the scores, and how many dimensions a rule names (profile
#: order: mobility, self-care, usual activities, pain/discomfort, anxiety/depression). Only the
#: shape is checked here; the value set is resolved (and an unknown one refused) where the
#: expression is compiled, before any data moves.
EQ5D_SCORES = frozenset({"profile", "level_sum", "index"})
EQ5D_DIMENSIONS = 5
_EQ5D_KEYS = frozenset({"score", "value_set", "levels", "dimensions"})
_VALUE_SET_ID = re.compile(r"^[a-z0-9][a-z0-9_]*$")
#: ``survey`` (is one patient-survey answer positive: 1, 0 or NULL, pipelines.outcomes.sql): the
#: survey's id under schemas/surveys/, its dimension, and the raw answer column ('from'). The
#: survey and dimension are resolved (an unknown one refused) where the expression is compiled.
_SURVEY_KEYS = frozenset({"survey", "dimension"})
RELEASE_ACTIONS = frozenset({"keep", "drop", "year", "band5", "month", "shift", "top_code", "county"})


class PolicyError(ValueError):
    """A policy file that cannot be applied safely."""


# --------------------------------------------------------------------------------------
# Research zone
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnRule:
    name: str
    action: str
    source: str | None = None  # raw column read ('from'); defaults to name for keep
    resource_type: str | None = None
    #: birth_year / sex: the raw column read when the person's identifier carries none (only
    #: national numbers do): a date (its year) or a FHIR gender code ('fallback_from')
    fallback: str | None = None
    #: eq5d: which score ('profile', 'level_sum', 'index'), its value set (index only), the
    #: instrument's levels (3 or 5; None: 5, or the value set's) and the five raw dimension columns
    score: str | None = None
    value_set: str | None = None
    levels: int | None = None
    dimensions: tuple[str, ...] = ()
    #: survey: the survey id (schemas/surveys/), its dimension, and the raw answer column
    survey: str | None = None
    dimension: str | None = None
    answer: str | None = None


@dataclass(frozen=True)
class TableRule:
    name: str  # research table
    source: str  # raw table
    source_name: str  # 'register', 'prom', 'fhir' (quarantine 'source')
    identifier: str | None  # raw identifier column (direct person tables)
    via_patient: str | None  # raw patient reference column (FHIR tables)
    record_key: tuple[str, str] | None  # (resource_type, id column) for quarantine record keys
    columns: tuple[ColumnRule, ...]
    drop: frozenset[str]
    #: the FHIR Patient table: its column holding the Patient's logical id. The person is then
    #: chosen among all the Patient's identifiers (privacy.identifiers), 'identifier' (the
    #: national number) first, and the other FHIR tables resolve their 'via_patient' through it.
    patient_key: str | None = None

    def used_source_columns(self) -> set[str]:
        used = {c.source for c in self.columns if c.source}
        used |= {c.fallback for c in self.columns if c.fallback}
        used |= {d for c in self.columns for d in c.dimensions}
        used |= {c.answer for c in self.columns if c.answer}
        used |= {x for x in (self.identifier, self.via_patient, self.patient_key) if x}
        if self.record_key:
            used.add(self.record_key[1])
        return used


@dataclass(frozen=True)
class PseudonymisePolicy:
    version: int
    tables: tuple[TableRule, ...]
    path: str


def _eq5d_col(raw: dict[str, Any], table: str) -> ColumnRule:
    where = f"table {table}: column {raw.get('name')!r} (eq5d)"
    if "from" in raw or "fallback_from" in raw:
        raise PolicyError(f"{where} reads 'dimensions', not 'from'")
    score = raw.get("score")
    if score not in EQ5D_SCORES:
        raise PolicyError(f"{where}: unknown score {score!r}; one of {sorted(EQ5D_SCORES)}")
    dims = raw.get("dimensions")
    if (
        not isinstance(dims, list)
        or len(dims) != EQ5D_DIMENSIONS
        or not all(isinstance(d, str) and d for d in dims)
        or len(set(dims)) != len(dims)
    ):
        raise PolicyError(f"{where}: 'dimensions' must name {EQ5D_DIMENSIONS} distinct raw columns")
    value_set = raw.get("value_set")
    if score == "index":
        if not isinstance(value_set, str) or not _VALUE_SET_ID.match(value_set):
            raise PolicyError(f"{where}: an index needs 'value_set', the id of a value set")
    elif value_set is not None:
        raise PolicyError(f"{where}: the {score} takes no 'value_set'")
    levels = raw.get("levels")
    if levels is not None and (isinstance(levels, bool) or levels not in (3, 5)):
        raise PolicyError(f"{where}: 'levels' must be 3 (EQ-5D-3L) or 5 (EQ-5D-5L)")
    return ColumnRule(
        name=raw["name"],
        action="eq5d",
        score=score,
        value_set=value_set,
        levels=levels,
        dimensions=tuple(dims),
    )


def _survey_col(raw: dict[str, Any], table: str) -> ColumnRule:
    where = f"table {table}: column {raw.get('name')!r} (survey)"
    survey, dimension, answer = raw.get("survey"), raw.get("dimension"), raw.get("from")
    if not isinstance(survey, str) or not _VALUE_SET_ID.match(survey):
        raise PolicyError(f"{where}: 'survey' must be the id of a survey under schemas/surveys/")
    if not isinstance(dimension, str) or not dimension:
        raise PolicyError(f"{where}: needs 'dimension', one of the survey's dimensions")
    if not isinstance(answer, str) or not answer:
        raise PolicyError(f"{where}: needs 'from', the raw answer column")
    return ColumnRule(name=raw["name"], action="survey", survey=survey, dimension=dimension, answer=answer)


#: the keys only one action takes
_ACTION_KEYS = {"eq5d": _EQ5D_KEYS, "survey": _SURVEY_KEYS}


def _col(raw: dict[str, Any], table: str) -> ColumnRule:
    action = raw.get("action")
    if action not in RESEARCH_ACTIONS:
        raise PolicyError(f"table {table}: column {raw.get('name')!r} has unknown action {action!r}")
    for owner, keys in _ACTION_KEYS.items():
        stray = sorted(keys & set(raw)) if action != owner else []
        if stray:
            raise PolicyError(f"table {table}: column {raw.get('name')!r}: {stray} belong to action {owner}")
    if action == "eq5d":
        return _eq5d_col(raw, table)
    if action == "survey":
        return _survey_col(raw, table)
    source = raw.get("from")
    if action in ("keep", "resource_pseudonym") and source is None:
        source = raw["name"]
    if action in ("county", "year") and source is None:
        raise PolicyError(f"table {table}: column {raw['name']!r} ({action}) needs 'from'")
    if action == "resource_pseudonym" and not raw.get("resource_type"):
        raise PolicyError(f"table {table}: column {raw['name']!r} needs 'resource_type'")
    fallback = raw.get("fallback_from")
    if fallback is not None and action not in ("birth_year", "sex"):
        raise PolicyError(
            f"table {table}: column {raw['name']!r}: only birth_year and sex have 'fallback_from'"
        )
    return ColumnRule(
        name=raw["name"],
        action=action,
        source=source,
        resource_type=raw.get("resource_type"),
        fallback=fallback,
    )


def load_pseudonymise_policy(path: Path | None = None) -> PseudonymisePolicy:
    path = path or POLICY_DIR / "pseudonymise.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    tables = []
    for name, spec in doc["tables"].items():
        identifier, via = spec.get("identifier"), spec.get("via_patient")
        if (identifier is None) == (via is None):
            raise PolicyError(f"table {name}: give exactly one of 'identifier' or 'via_patient'")
        cols = tuple(_col(c, name) for c in spec["columns"])
        if not any(c.action == "person_id" for c in cols):
            raise PolicyError(f"table {name}: no person_id column")
        if via and any(c.action in ("birth_year", "sex", "id_type") for c in cols):
            raise PolicyError(f"table {name}: identifier-derived columns need 'identifier'")
        patient_key = spec.get("patient_key")
        if patient_key is not None and identifier is None:
            raise PolicyError(f"table {name}: 'patient_key' (the FHIR Patient table) needs 'identifier'")
        rk = spec.get("record_key")
        tables.append(
            TableRule(
                name=name,
                source=spec["source"],
                source_name=spec["source_name"],
                identifier=identifier,
                via_patient=via,
                record_key=(rk["resource_type"], rk["column"]) if rk else None,
                columns=cols,
                drop=frozenset(spec.get("drop", ())),
                patient_key=patient_key,
            )
        )
    if sum(t.patient_key is not None for t in tables) > 1:
        raise PolicyError("more than one table declares 'patient_key' (there is one FHIR Patient table)")
    return PseudonymisePolicy(version=int(doc["version"]), tables=tuple(tables), path=str(path))


# --------------------------------------------------------------------------------------
# Postal code -> county
# --------------------------------------------------------------------------------------


@cache
def county_prefixes(path: Path | None = None) -> dict[str, str]:
    """Every three-digit postal prefix with a known county -> county code."""
    doc = json.loads((path or POLICY_DIR / "postcode_county.json").read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    for p2, county in doc["prefix2"].items():
        for d in "0123456789":
            out[p2 + d] = county
    out.update(doc["prefix3"])
    unknown = set(out.values()) - set(doc["counties"])
    if unknown:
        raise PolicyError(f"postcode_county.json maps to unknown county codes {sorted(unknown)}")
    return out


def postcode_to_county(postal_code: str | None) -> str | None:
    """County (län) code of a Swedish postal code, or None when unknown.

    >>> postcode_to_county("751 05"), postcode_to_county("21119"), postcode_to_county("x")
    ('03', '12', None)
    """
    if postal_code is None:
        return None
    digits = postal_code.replace(" ", "")
    if len(digits) != 5 or not digits.isascii() or not digits.isdigit():
        return None
    return county_prefixes().get(digits[:3])


# --------------------------------------------------------------------------------------
# Release policy
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseRule:
    """One variable's rule: ``table.column`` (or ``*.column``) -> action and parameters."""

    variable: str
    action: str
    params: tuple[tuple[str, Any], ...] = ()

    def param(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)


@dataclass(frozen=True)
class ReleaseCombination:
    """Columns of one table that together single a person out, and are protected together.

    Each column may be harmless alone, but released side by side (or one being a function of the
    others, as an EQ-5D index is of the five dimensions) they spell out a combination. A release
    row whose combination of the carried columns is held by fewer than ``min_count`` distinct
    persons has every one of them suppressed: ``label`` for a column whose own rule is a
    ``top_code`` with that label, NULL for the rest."""

    name: str
    table: str
    columns: tuple[str, ...]
    min_count: int

    def describe(self) -> dict[str, Any]:
        return {
            "combination": f"{self.table}.{self.name}",
            "columns": list(self.columns),
            "min_count": self.min_count,
        }


@dataclass(frozen=True)
class ReleasePolicy:
    version: int
    default_action: str
    rules: tuple[ReleaseRule, ...]
    path: str
    combinations: tuple[ReleaseCombination, ...] = ()

    def rule_for(self, table: str, column: str) -> ReleaseRule:
        exact = {r.variable: r for r in self.rules}
        return (
            exact.get(f"{table}.{column}")
            or exact.get(f"*.{column}")
            or ReleaseRule(variable=f"{table}.{column}", action=self.default_action)
        )

    def combinations_for(self, table: str) -> tuple[ReleaseCombination, ...]:
        return tuple(c for c in self.combinations if c.table == table)

    def describe(self) -> dict[str, Any]:
        """JSON-able description for the release manifest."""
        return {
            "policy_file": Path(self.path).name,
            "version": self.version,
            "default_action": self.default_action,
            "rules": [{"variable": r.variable, "action": r.action, **dict(r.params)} for r in self.rules],
            "combinations": [c.describe() for c in self.combinations],
        }


def load_release_policy(path: Path | None = None) -> ReleasePolicy:
    path = path or POLICY_DIR / "release.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    default = doc.get("default_action", "keep")
    if default not in RELEASE_ACTIONS:
        raise PolicyError(f"release policy: unknown default_action {default!r}")
    rules = []
    for variable, spec in doc["variables"].items():
        action = spec.get("action")
        if action not in RELEASE_ACTIONS:
            raise PolicyError(f"release policy: {variable} has unknown action {action!r}")
        if "." not in variable:
            raise PolicyError(f"release policy: variable {variable!r} must be 'table.column' or '*.column'")
        params = tuple(sorted((k, v) for k, v in spec.items() if k != "action"))
        if action == "top_code" and "min_count" not in dict(params):
            raise PolicyError(f"release policy: {variable} top_code needs min_count")
        if action == "shift" and int(dict(params).get("max_days", 0)) <= 0:
            raise PolicyError(f"release policy: {variable} shift needs max_days > 0")
        rules.append(ReleaseRule(variable=variable, action=action, params=params))
    ranges = {int(r.param("max_days")) for r in rules if r.action == "shift"}
    if len(ranges) > 1:
        # One offset per person keeps the intervals between *all* of a person's dates, in
        # every table of the release; several ranges would give one person several offsets.
        raise PolicyError(f"release policy uses several shift ranges {sorted(ranges)}; use one max_days")
    return ReleasePolicy(
        version=int(doc["version"]),
        default_action=default,
        rules=tuple(rules),
        path=str(path),
        combinations=tuple(_release_combination(k, v) for k, v in doc.get("combinations", {}).items()),
    )


def _release_combination(key: str, spec: dict[str, Any]) -> ReleaseCombination:
    table, _, name = key.partition(".")
    columns = spec.get("columns")
    if not table or not name or "*" in table:
        raise PolicyError(f"release policy: combination {key!r} must be 'table.name'")
    if not isinstance(columns, list) or len(columns) < 2 or not all(isinstance(c, str) for c in columns):
        raise PolicyError(f"release policy: combination {key} needs two or more columns")
    if not isinstance(spec.get("min_count"), int) or spec["min_count"] < 2:
        raise PolicyError(f"release policy: combination {key} needs min_count >= 2")
    return ReleaseCombination(name=name, table=table, columns=tuple(columns), min_count=spec["min_count"])
