"""Variable catalogue: every research-zone column a request may ask for, with its sensitivity.

``schemas/variables.json`` is generated from the research-zone tables in docs/ARCHITECTURE.md
(the contract) and schemas/holders.json (which holder delivers which source)::

    python -m governance.catalogue          # rewrite schemas/variables.json
    python -m governance.catalogue --check  # exit 1 if it is out of date

A test keeps the file in sync. A column whose sensitivity is not classified below makes the
generator fail: a new column must be classified by a person before anyone can request it.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from hdp.settings import REPO_ROOT, SCHEMAS_DIR, get_settings, holders

ARCHITECTURE_MD = REPO_ROOT / "docs" / "ARCHITECTURE.md"
CATALOGUE_PATH = SCHEMAS_DIR / "variables.json"

#: Sensitivity classes, least to most sensitive, with what they mean for review.
SENSITIVITY_LEVELS: Mapping[str, str] = {
    "administrative": "Codes and states describing the record, not the person (low risk).",
    "health": "Health data (GDPR art. 9): measurements, diagnoses, treatments, questionnaire answers.",
    "quasi_identifier": "Can single a person out in combination (year of birth, sex, county, dates).",
    "pseudonym": "Linkage key (keyed pseudonym): row-level linkage; needs pseudonymised-data justification.",
}

#: Which source delivers which research table (see ARCHITECTURE.md "Research zone").
TABLE_SOURCE: Mapping[str, str] = {
    "register_visit": "register",
    "prom_response": "prom",
    "patient": "fhir",
    "encounter": "fhir",
    "condition": "fhir",
    "observation": "fhir",
    "medication_request": "fhir",
    "procedure": "fhir",
    "eq5d_response": "fhir",
    "immunization": "fhir",
    "allergy_intolerance": "fhir",
    "diagnostic_report": "fhir",
    "document_reference": "fhir",
}

_PSEUDONYM = {"person_id", "encounter_id"}
_QUASI = {
    "birth_year",
    "sex",
    "id_type",
    "county",
    "deceased_year",
    "visit_date",
    "start_time",
    "end_time",
    "recorded_date",
    "effective_time",
    "authored_on",
    "performed_date",
    "authored",
    "occurrence_time",
    "onset_time",
    "issued_time",
    "document_time",
    # a rare EQ-5D health profile (3125 states) singles a person out
    "eq5d_profile",
}
_ADMIN = {
    "code_system",
    "status",
    "class_code",
    "unit",
    "clinical_status",
    "verification_status",
    "category_system",
    "content_type",
    "format_system",
    "format_code",
}
_HEALTH = {
    "diabetes_type",
    "hba1c_mmol_mol",
    "bmi",
    "systolic_bp",
    "diastolic_bp",
    "smoking",
    "treatment",
    "eq5d_mobility",
    "eq5d_self_care",
    "eq5d_usual_activities",
    "eq5d_pain_discomfort",
    "eq5d_anxiety_depression",
    "eq_vas",
    "prem_respect",
    "prem_involvement",
    "prem_information",
    "prem_accessibility",
    "prem_overall",
    "code",
    "value",
    "atc_code",
    "category",
    "criticality",
    "mobility",
    "self_care",
    "usual_activities",
    "pain_discomfort",
    "anxiety_depression",
    "eq5d_level_sum",
    "eq5d_index_se_5l_tto_2020",
    "eq5d_index_se_5l_vas_2020",
    # positive or not, one PREM answer each: coarser than the answer (health), no profile of them
    "prem_respect_positive",
    "prem_involvement_positive",
    "prem_information_positive",
    "prem_accessibility_positive",
    "prem_overall_positive",
}


class CatalogueError(RuntimeError):
    """The contract and the catalogue rules disagree (unknown table or unclassified column)."""


def sensitivity_of(column: str) -> str:
    for level, names in (
        ("pseudonym", _PSEUDONYM),
        ("quasi_identifier", _QUASI),
        ("administrative", _ADMIN),
        ("health", _HEALTH),
    ):
        if column in names:
            return level
    raise CatalogueError(
        f"column {column!r} has no sensitivity class; add it to governance/catalogue.py before it can be requested"
    )


def research_tables(architecture_md: str) -> dict[str, list[str]]:
    """Table -> columns, parsed from the "Research zone" section of ARCHITECTURE.md."""
    match = re.search(r"^## Research zone.*?$(.*?)(?=^## )", architecture_md, re.S | re.M)
    if not match:
        raise CatalogueError("docs/ARCHITECTURE.md has no '## Research zone' section")
    tables: dict[str, list[str]] = {}
    for name, cols in re.findall(r"`(\w+)\(([^)`]*)\)`", match.group(1), re.S):
        tables[name] = [c.strip() for c in cols.replace("\n", " ").split(",") if c.strip()]
    if not tables:
        raise CatalogueError("no tables found in the Research zone section")
    return tables


def generate_catalogue(architecture_md: str | None = None) -> dict[str, Any]:
    """The catalogue as a JSON-ready dict (deterministic: same inputs, same bytes)."""
    text = architecture_md if architecture_md is not None else ARCHITECTURE_MD.read_text(encoding="utf-8")
    by_source: dict[str, list[str]] = {}
    for h in holders():
        for s in h.sources:
            by_source.setdefault(s, []).append(h.id)
    tables_out: dict[str, Any] = {}
    variables: list[dict[str, str]] = []
    for table, columns in research_tables(text).items():
        if table not in TABLE_SOURCE:
            raise CatalogueError(f"research table {table!r} has no source in governance/catalogue.py")
        source = TABLE_SOURCE[table]
        tables_out[table] = {"source": source, "holders": sorted(by_source.get(source, []))}
        for col in columns:
            variables.append(
                {
                    "name": f"{table}.{col}",
                    "table": table,
                    "column": col,
                    "source": source,
                    "sensitivity": sensitivity_of(col),
                }
            )
    return {
        "_note": (
            "GENERATED by `python -m governance.catalogue` from docs/ARCHITECTURE.md (research zone) "
            "and schemas/holders.json; do not edit by hand."
        ),
        "sensitivity_levels": dict(SENSITIVITY_LEVELS),
        "tables": tables_out,
        "variables": variables,
    }


def render(catalogue: Mapping[str, Any]) -> str:
    return json.dumps(catalogue, indent=1, ensure_ascii=False) + "\n"


@cache
def load_catalogue(path: Path = CATALOGUE_PATH) -> dict[str, dict[str, str]]:
    """Variable name ("table.column") -> its entry, from schemas/variables.json."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {v["name"]: v for v in data["variables"]}


@cache
def table_holders(path: Path = CATALOGUE_PATH) -> dict[str, frozenset[str]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return {t: frozenset(v["holders"]) for t, v in data["tables"].items()}


def reviewers_required() -> dict[str, int]:
    """Holder id -> how many distinct stewards of that holder must approve a request
    (schemas/holders.json, read at every call: the known holders are exactly its keys).

    At a federation's hub a holder's verdict is its node's, one signed decision: the node's own
    store has already required its number of stewards."""
    if get_settings().federation_role == "hub":
        return {h.id: 1 for h in holders()}
    return {h.id: h.reviewers_required for h in holders()}


def main(argv: list[str]) -> int:
    expected = render(generate_catalogue())
    if "--check" in argv:
        current = CATALOGUE_PATH.read_text(encoding="utf-8") if CATALOGUE_PATH.exists() else ""
        if current != expected:
            print(f"{CATALOGUE_PATH} is out of date: run python -m governance.catalogue", file=sys.stderr)
            return 1
        return 0
    CATALOGUE_PATH.write_text(expected, encoding="utf-8")
    print(f"wrote {CATALOGUE_PATH} ({len(json.loads(expected)['variables'])} variables)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
