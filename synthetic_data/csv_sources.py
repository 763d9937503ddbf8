"""NDR register and PROM/PREM CSV rows, rendered from the population exactly per the source schemas.

Header names, column order, ``;`` separator and decimal comma follow
``schemas/sources/register.json`` and ``schemas/sources/prom.json``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import date
from functools import cache

from hdp.settings import SCHEMAS_DIR
from synthetic_data import identifiers as ids
from synthetic_data.population import Person, Population, Visit

#: Identifier forms as they occur in real extracts, with their shares.
ID_FORMS: tuple[str, ...] = ("12", "12-", "10")
ID_FORM_WEIGHTS: tuple[float, ...] = (0.70, 0.15, 0.15)


@dataclass(frozen=True)
class SourceSchema:
    source: str
    file: str
    delimiter: str
    encoding: str
    names: tuple[str, ...]  # delivered header names, in order
    raws: tuple[str, ...]  # raw-table column names, same order

    def index_of_raw(self, raw: str) -> int:
        return self.raws.index(raw)

    @property
    def header(self) -> str:
        return self.delimiter.join(self.names)


@cache
def source_schema(source: str) -> SourceSchema:
    spec = json.loads((SCHEMAS_DIR / "sources" / f"{source}.json").read_text(encoding="utf-8"))
    fmt = spec["format"]
    if fmt["decimal"] != ",":
        raise ValueError(
            f"{source}.json: the generator writes decimal commas, schema says {fmt['decimal']!r}"
        )
    return SourceSchema(
        source=source,
        file=spec["file"],
        delimiter=fmt["delimiter"],
        encoding=fmt["encoding"],
        names=tuple(c["name"] for c in spec["columns"]),
        raws=tuple(c["raw"] for c in spec["columns"]),
    )


@dataclass
class CsvRow:
    """One delivered row plus what it was made from (for defect injection)."""

    fields: list[str]
    number: str  # the person's 12-digit number (before any defect)
    form: str  # identifier form used in this row
    person: Person
    visit: Visit


def decimal_comma(x: float, digits: int = 1) -> str:
    return f"{x:.{digits}f}".replace(".", ",")


def dcct_percent(ifcc_mmol_mol: float) -> float:
    """HbA1c converted from IFCC mmol/mol to DCCT/NGSP % (master equation)."""
    return 0.09148 * ifcc_mmol_mol + 2.152


def _identifier(rng: random.Random, number: str, on: date) -> tuple[str, str]:
    form = rng.choices(ID_FORMS, weights=ID_FORM_WEIGHTS)[0]
    return ids.format_number(number, form, on=on), form


def register_rows(population: Population, *, seed: int, extract_date: date) -> list[CsvRow]:
    """NDR visit rows for every person, ordered by visit date (then person)."""
    schema = source_schema("register")
    rng = random.Random(f"{seed}:register")
    col = {raw: i for i, raw in enumerate(schema.raws)}
    rows: list[CsvRow] = []
    for v_day, index, vi in sorted(
        (v.day, p.index, i) for p in population.persons for i, v in enumerate(p.visits)
    ):
        p = population.persons[index]
        v = p.visits[vi]
        f = [""] * len(schema.raws)
        f[col["personnummer"]], form = _identifier(rng, p.number, extract_date)
        if rng.random() > 0.12:
            f[col["first_name"]] = " ".join(p.given)
            f[col["family_name"]] = p.family
        r = rng.random()
        if r > 0.04:
            pc = p.address.postal_code
            f[col["postal_code"]] = f"{pc[:3]} {pc[3:]}" if r > 0.95 else pc
        f[col["visit_date"]] = v_day.isoformat()
        f[col["diabetes_type"]] = p.diabetes_type
        if rng.random() > 0.05:
            f[col["hba1c_mmol_mol"]] = str(v.hba1c)
        if rng.random() > 0.08:
            f[col["bmi"]] = decimal_comma(v.bmi)
        if rng.random() > 0.05:
            f[col["systolic_bp"]] = str(v.systolic)
            f[col["diastolic_bp"]] = str(v.diastolic)
        if rng.random() > 0.12:
            f[col["smoking"]] = v.smoking
        if rng.random() > 0.03:
            f[col["treatment"]] = v.treatment
        rows.append(CsvRow(fields=f, number=p.number, form=form, person=p, visit=v))
    return rows


def prom_rows(population: Population, *, seed: int, extract_date: date) -> list[CsvRow]:
    """PROM/PREM rows for the visits where the person answered the questionnaire."""
    schema = source_schema("prom")
    rng = random.Random(f"{seed}:prom")
    col = {raw: i for i, raw in enumerate(schema.raws)}
    dims = (
        "eq5d_mobility",
        "eq5d_self_care",
        "eq5d_usual_activities",
        "eq5d_pain_discomfort",
        "eq5d_anxiety_depression",
    )
    prem = ("prem_respect", "prem_involvement", "prem_information", "prem_accessibility", "prem_overall")
    rows: list[CsvRow] = []
    for v_day, index, vi in sorted(
        (v.day, p.index, i) for p in population.persons for i, v in enumerate(p.visits) if v.prom is not None
    ):
        p = population.persons[index]
        v = p.visits[vi]
        assert v.prom is not None
        f = [""] * len(schema.raws)
        f[col["personnummer"]], form = _identifier(rng, p.number, extract_date)
        f[col["visit_date"]] = v_day.isoformat()
        for name, level in zip(dims, v.prom.levels, strict=True):
            if rng.random() > 0.03:
                f[col[name]] = str(level)
        if rng.random() > 0.03:
            f[col["eq_vas"]] = str(v.prom.vas)
        for name, answer in zip(prem, v.prom.prem, strict=True):
            if rng.random() > 0.04:
                f[col[name]] = answer
        rows.append(CsvRow(fields=f, number=p.number, form=form, person=p, visit=v))
    return rows


def render(schema: SourceSchema, fields: list[str]) -> str:
    line = schema.delimiter.join(fields)
    if line.count(schema.delimiter) != len(schema.names) - 1 or "\n" in line or '"' in line:
        # values never contain the separator, quotes or newlines; guard the invariant
        raise ValueError(f"{schema.source}: a generated value would need CSV quoting")
    return line
