"""Defect injection: turns clean rows/resources into delivered lines with known, recorded defects.

Every defect class of docs/ARCHITECTURE.md ("Injected defects") is injected at least once when
``defect_rate > 0`` and never when it is 0. Per file, each applicable class gets
``max(1, round(defect_rate * lines / classes_in_file))`` defects, so about ``defect_rate`` of
the lines carry one. Targets within a file are disjoint (one defect per line) and chosen from a
seeded stream, so the manifest is deterministic.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from synthetic_data import codes as cs
from synthetic_data import identifiers as ids
from synthetic_data.csv_sources import CsvRow, SourceSchema, dcct_percent, decimal_comma, render

DEFECT_CLASSES: tuple[str, ...] = (
    "identifier.bad_checksum",
    "identifier.impossible_date",
    "value.out_of_range",
    "value.wrong_unit",
    "row.duplicate",
    "field.missing_required",
    "json.malformed_line",
    "file.not_utf8",
    "file.truncated",
    "fhir.wrong_resource_type",
    "fhir.invalid",
    "fhir.dangling_reference",
    "code.unknown",
)


@dataclass(frozen=True)
class Tag:
    """What is wrong with one delivered line (file and line number are added by the writer)."""

    defect_class: str
    column: str | None = None
    record_key: str | None = None


#: A delivered line (without newline) and its defect, if any.
Line = tuple[str, Tag | None]


def per_class_count(rate: float, lines: int, classes: int) -> int:
    if rate <= 0 or lines <= 0:
        return 0
    return min(max(1, round(rate * lines / classes)), max(lines // (classes + 1), 1))


def bad_checksum(number: str, rng: random.Random) -> str:
    """Same number with a wrong Luhn digit (the date stays valid)."""
    return number[:11] + str((int(number[11]) + rng.randint(1, 9)) % 10)


def impossible_date(number: str, rng: random.Random) -> str:
    """A number whose date cannot exist (month 13/00 or day 32), with a *correct* Luhn digit,
    so that the defect is the date alone."""
    samordning = ids.is_samordningsnummer(number)
    variant = rng.randrange(3)
    if variant == 0:
        body = number[:4] + "13" + number[6:11]
    elif variant == 1:
        body = number[:4] + "00" + number[6:11]
    else:
        body = number[:6] + ("92" if samordning else "32") + number[8:11]
    return ids.with_check_digit(body)


class _Picker:
    """Draws disjoint line indexes from the eligible ones."""

    def __init__(self, n: int, rng: random.Random, reserved: Sequence[int] = ()) -> None:
        self._rng = rng
        self._order = [i for i in range(n) if i not in set(reserved)]
        rng.shuffle(self._order)
        self._used: set[int] = set(reserved)

    def take(self, k: int, eligible: Callable[[int], bool] = lambda i: True) -> list[int]:
        out: list[int] = []
        for i in self._order:
            if len(out) >= k:
                break
            if i not in self._used and eligible(i):
                out.append(i)
        self._used.update(out)
        return sorted(out)


def _place_copies(
    n: int, originals: list[int], rng: random.Random, last_allowed: int
) -> dict[int, list[int]]:
    """For each original index, a later index after which its copy is delivered."""
    after: dict[int, list[int]] = {}
    for i in originals:
        j = min(last_allowed, i + rng.randint(0, 200))
        after.setdefault(max(j, i), []).append(i)
    return after


# --------------------------------------------------------------------------------------------
# CSV


def csv_lines(
    schema: SourceSchema,
    rows: list[CsvRow],
    *,
    rate: float,
    rng: random.Random,
    extract_date: date,
    truncate: bool,
) -> list[Line]:
    """Data lines (no header) of a register or PROM CSV with defects injected."""
    raw = schema.raws
    col = {name: i for i, name in enumerate(raw)}
    n = len(rows)
    reserved = [n - 1] if truncate and n else []
    picker = _Picker(n, rng, reserved)
    tags: dict[int, Tag] = {}

    plan: tuple[str, ...]
    if schema.source == "register":
        plan = (
            "identifier.bad_checksum",
            "identifier.impossible_date",
            "value.out_of_range",
            "value.wrong_unit",
            "row.duplicate",
            "field.missing_required",
        )
    else:
        plan = ("value.out_of_range", "row.duplicate", "field.missing_required")
    k = per_class_count(rate, n, len(plan) + (1 if truncate else 0))

    fields = [list(r.fields) for r in rows]
    duplicates: list[int] = []
    for defect in plan:
        if defect == "identifier.bad_checksum":
            for i in picker.take(k):
                bad = bad_checksum(rows[i].number, rng)
                fields[i][col["personnummer"]] = ids.format_number(bad, rows[i].form, on=extract_date)
                tags[i] = Tag(defect, "personnummer")
        elif defect == "identifier.impossible_date":
            for i in picker.take(k):
                bad = impossible_date(rows[i].number, rng)
                fields[i][col["personnummer"]] = ids.format_number(bad, rows[i].form, on=extract_date)
                tags[i] = Tag(defect, "personnummer")
        elif defect == "value.out_of_range":
            for n_i, i in enumerate(picker.take(k)):
                if schema.source == "register":
                    column, value = (("hba1c_mmol_mol", "900"), ("bmi", "3,0"), ("systolic_bp", "400"))[
                        n_i % 3
                    ]
                else:
                    column, value = (
                        ("eq5d_mobility", "7"),
                        ("eq_vas", "150"),
                        ("eq5d_pain_discomfort", "9"),
                    )[n_i % 3]
                fields[i][col[column]] = value
                tags[i] = Tag(defect, column)
        elif defect == "value.wrong_unit":
            for i in picker.take(k):
                fields[i][col["hba1c_mmol_mol"]] = decimal_comma(dcct_percent(rows[i].visit.hba1c))
                tags[i] = Tag(defect, "hba1c_mmol_mol")
        elif defect == "field.missing_required":
            choices = ("visit_date", "diabetes_type") if schema.source == "register" else ("visit_date",)
            for n_i, i in enumerate(picker.take(k)):
                column = choices[n_i % len(choices)]
                fields[i][col[column]] = ""
                tags[i] = Tag(defect, column)
        elif defect == "row.duplicate":
            duplicates = picker.take(k)

    after = _place_copies(n, duplicates, rng, last_allowed=n - 2 if truncate else n - 1)
    out: list[Line] = []
    for i in range(n):
        out.append((render(schema, fields[i]), tags.get(i)))
        for orig in after.get(i, ()):
            out.append((render(schema, fields[orig]), Tag("row.duplicate")))
    if truncate and n:
        text = out[-1][0]
        # cut inside the fourth field: fewer columns than the header, no trailing newline
        cut = _nth(text, schema.delimiter, 3) + 2
        out[-1] = (text[:cut], Tag("file.truncated"))
    return out


def _nth(text: str, sep: str, k: int) -> int:
    pos = -1
    for _ in range(k):
        pos = text.index(sep, pos + 1)
    return pos


# --------------------------------------------------------------------------------------------
# FHIR

Resource = dict[str, Any]

FHIR_PLAN: dict[str, tuple[str, ...]] = {
    "Patient": ("identifier.bad_checksum", "identifier.impossible_date", "row.duplicate"),
    "Encounter": ("row.duplicate",),
    "Condition": (
        "code.unknown",
        "fhir.dangling_reference",
        "json.malformed_line",
        "fhir.wrong_resource_type",
    ),
    "Observation": (
        "value.out_of_range",
        "value.wrong_unit",
        "field.missing_required",
        "fhir.invalid",
        "json.malformed_line",
        "fhir.dangling_reference",
        "row.duplicate",
        "fhir.wrong_resource_type",
    ),
    "MedicationRequest": ("code.unknown", "field.missing_required", "fhir.invalid"),
    "Procedure": ("fhir.dangling_reference", "json.malformed_line"),
    "QuestionnaireResponse": ("value.out_of_range",),
}

_HBA1C_CODES = {cs.HBA1C_NPU[0], cs.HBA1C_LOINC[0]}
_OUT_OF_RANGE_CODES = _HBA1C_CODES | {cs.BMI_LOINC[0]}


# one encoder for all lines: json.dumps with non-default options builds a new one per call
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(resource: Resource) -> str:
    """One NDJSON line: compact, UTF-8, key order as built."""
    return _ENCODER.encode(resource)


def _obs_code(r: Resource) -> str:
    return r["code"]["coding"][0]["code"]


def _record_key(r: Resource) -> str:
    return f"{r['resourceType']}/{r['id']}"


@dataclass
class _FhirInjection:
    """One NDJSON file while its defects are injected: the resources (changed in place), which
    lines carry which defect, and what is delivered beside them."""

    resource_type: str
    resources: list[Resource]
    rng: random.Random
    new_id: Callable[..., str]
    misplaced: Callable[[str, str], Resource]
    picker: _Picker
    #: defects per class in this file
    per_class: int
    tags: dict[int, Tag] = field(default_factory=dict)
    #: lines cut short (not valid JSON)
    malformed: set[int] = field(default_factory=set)
    #: lines delivered twice (the copy a little later)
    duplicates: list[int] = field(default_factory=list)
    #: line -> resources of another type delivered right after it
    inserts: dict[int, list[tuple[Resource, Tag]]] = field(default_factory=dict)

    def take(self, eligible: Callable[[int], bool] = lambda i: True) -> list[int]:
        """This class's lines, disjoint from every other class's."""
        return self.picker.take(self.per_class, eligible)

    def tag(self, i: int, defect: str, column: str | None) -> None:
        self.tags[i] = Tag(defect, column, _record_key(self.resources[i]))


def _inject_identifier(f: _FhirInjection, defect: str) -> None:
    mutate = bad_checksum if defect == "identifier.bad_checksum" else impossible_date
    for i in f.take():
        ident = f.resources[i]["identifier"][0]
        ident["value"] = mutate(ident["value"], f.rng)
        f.tag(i, defect, "personnummer")


def _inject_duplicate(f: _FhirInjection, defect: str) -> None:
    f.duplicates = f.take()


def _inject_malformed(f: _FhirInjection, defect: str) -> None:
    for i in f.take():
        f.malformed.add(i)
        f.tag(i, defect, None)


def _inject_dangling_reference(f: _FhirInjection, defect: str) -> None:
    for i in f.take():
        f.resources[i]["subject"] = {
            "reference": f"Patient/{f.new_id('Patient', 'dangling', f.resource_type, i)}"
        }
        f.tag(i, defect, "patient_id")


def _inject_unknown_code(f: _FhirInjection, defect: str) -> None:
    for n_i, i in enumerate(f.take()):
        r = f.resources[i]
        if f.resource_type == "Condition":
            unknown = cs.UNKNOWN_ICD10SE[n_i % len(cs.UNKNOWN_ICD10SE)]
            r["code"] = {"coding": [{"system": cs.ICD10SE_SYSTEM, "code": unknown}]}
            f.tag(i, defect, "code")
        else:
            unknown = cs.UNKNOWN_ATC[n_i % len(cs.UNKNOWN_ATC)]
            r["medicationCodeableConcept"] = {"coding": [{"system": cs.ATC_SYSTEM, "code": unknown}]}
            f.tag(i, defect, "atc_code")


def _inject_out_of_range(f: _FhirInjection, defect: str) -> None:
    if f.resource_type == "QuestionnaireResponse":
        for n_i, i in enumerate(f.take()):
            r = f.resources[i]
            if n_i % 2 == 0:
                r["item"][0]["answer"][0]["valueCoding"]["code"] = "7"
                f.tag(i, defect, "mobility")
            else:
                r["item"][5]["answer"][0]["valueInteger"] = 150
                f.tag(i, defect, "eq_vas")
        return
    for i in f.take(lambda i: _obs_code(f.resources[i]) in _OUT_OF_RANGE_CODES):
        r = f.resources[i]
        r["valueQuantity"]["value"] = 900 if _obs_code(r) in _HBA1C_CODES else 3
        f.tag(i, defect, "value")


def _inject_wrong_unit(f: _FhirInjection, defect: str) -> None:
    for i in f.take(lambda i: _obs_code(f.resources[i]) in _HBA1C_CODES):
        q = f.resources[i]["valueQuantity"]
        q.update(value=round(dcct_percent(q["value"]), 1), unit="%", code="%")
        f.tag(i, defect, "value")


def _inject_missing_required(f: _FhirInjection, defect: str) -> None:
    for i in f.take():
        del f.resources[i]["status"]
        f.tag(i, defect, "status")


def _inject_invalid(f: _FhirInjection, defect: str) -> None:
    for n_i, i in enumerate(f.take()):
        r = f.resources[i]
        if f.resource_type == "MedicationRequest":
            r["authoredOn"] = r["authoredOn"][:5] + "13" + r["authoredOn"][7:]
            f.tag(i, defect, "authored_on")
        elif n_i % 3 == 0:
            r["effectiveDateTime"] = r["effectiveDateTime"][:5] + "02-30" + r["effectiveDateTime"][10:]
            f.tag(i, defect, "effective_time")
        elif n_i % 3 == 1:
            r["valueQuantity"]["value"] = str(r["valueQuantity"]["value"]).replace(".", ",") + ",0"
            f.tag(i, defect, "value")
        else:
            r["varde"] = r["valueQuantity"]["value"]  # element unknown to FHIR
            f.tag(i, defect, None)


def _inject_wrong_resource_type(f: _FhirInjection, defect: str) -> None:
    for n_i, i in enumerate(f.take()):
        pid = f.resources[i]["subject"]["reference"].split("/", 1)[1]
        other = f.misplaced(pid, f"{f.resource_type}:{n_i}")
        f.inserts.setdefault(i, []).append((other, Tag(defect, None, _record_key(other))))


#: The injector of each defect class that FHIR_PLAN uses (kept in step with it by tests).
_FHIR_INJECTORS: dict[str, Callable[[_FhirInjection, str], None]] = {
    "identifier.bad_checksum": _inject_identifier,
    "identifier.impossible_date": _inject_identifier,
    "row.duplicate": _inject_duplicate,
    "json.malformed_line": _inject_malformed,
    "fhir.dangling_reference": _inject_dangling_reference,
    "code.unknown": _inject_unknown_code,
    "value.out_of_range": _inject_out_of_range,
    "value.wrong_unit": _inject_wrong_unit,
    "field.missing_required": _inject_missing_required,
    "fhir.invalid": _inject_invalid,
    "fhir.wrong_resource_type": _inject_wrong_resource_type,
}


def _delivered_lines(f: _FhirInjection) -> list[Line]:
    """The file's lines: each resource (cut short if malformed), then what is delivered after it."""
    after = _place_copies(len(f.resources), f.duplicates, f.rng, last_allowed=len(f.resources) - 1)
    out: list[Line] = []
    for i, r in enumerate(f.resources):
        text = dumps(r)
        if i in f.malformed:
            text = text[: max(20, int(len(text) * 0.6))]
        out.append((text, f.tags.get(i)))
        for extra, tag in f.inserts.get(i, ()):
            out.append((dumps(extra), tag))
        for orig in after.get(i, ()):
            out.append((dumps(f.resources[orig]), Tag("row.duplicate", None, _record_key(f.resources[orig]))))
    return out


def fhir_lines(
    resource_type: str,
    resources: list[Resource],
    *,
    rate: float,
    rng: random.Random,
    new_id: Callable[..., str],
    misplaced: Callable[[str, str], Resource],
) -> list[Line]:
    """NDJSON lines of one type's file with defects injected.

    ``new_id`` makes deterministic ids for dangling targets; ``misplaced(pid, tag)`` builds a
    valid resource of *another* type for patient ``pid`` (the wrong-resource-type defect).
    """
    plan = FHIR_PLAN[resource_type] if rate > 0 else ()
    n = len(resources)
    injection = _FhirInjection(
        resource_type,
        resources,
        rng,
        new_id,
        misplaced,
        picker=_Picker(n, rng),
        per_class=per_class_count(rate, n, max(len(plan), 1)),
    )
    for defect in plan:
        injector = _FHIR_INJECTORS.get(defect)
        if injector is None:  # pragma: no cover - plan and injectors are kept in step by tests
            raise AssertionError(f"no FHIR injector for {defect}")
        injector(injection, defect)
    return _delivered_lines(injection)
