"""Real-shaped FHIR lines for the tests, and where a real Synthea bulk sample lies.

``LINES`` holds one NDJSON line per resource type of a small export from the project's
real-shaped generator (:mod:`synthetic_data.fhir_real`: Synthea's shapes, every value the
project's own), picked at import and the same on every run (the generator is seeded):

* ``LINES[<type>]``: the first resource of each of the generator's 21 types, except
  ``LINES["MedicationRequest"]``: the first request coded in RxNorm (a ``medicationCodeableConcept``)
  whose code ``schemas/codes/mappings/rxnorm_to_atc.csv`` maps to an ATC code;
* ``LINES["DiagnosticReport.note"]``: the first report that carries its note (``presentedForm``);
* ``LINES["Observation.survey"]``: the first survey answer (a ``valueCodeableConcept``).

Real generator output (a Synthea bulk export, e.g. a branch of the public
smart-on-fhir/sample-bulk-fhir-datasets) is third-party data: it is never committed here, only
read from beside the repository (:func:`sample_dir`).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from synthetic_data.fhir_real import RESOURCE_TYPES, RXNORM, iter_real_resources

REPO = Path(__file__).resolve().parents[2]
RXNORM_TO_ATC_CSV = REPO / "schemas" / "codes" / "mappings" / "rxnorm_to_atc.csv"

#: The generator's arguments: small, and every resource type comes out at least once.
SEED, PATIENTS, ENCOUNTERS, PROVIDERS = 5, 4, 12, 3


def sample_dir() -> Path | None:
    """The real Synthea sample: ``$HDP_SYNTHEA_SAMPLE``, else ``../shared/testdata/synthea-bulk/``
    beside the repository; None when neither is a directory (the tests that need it skip)."""
    candidates = [
        Path(os.environ["HDP_SYNTHEA_SAMPLE"]) if os.environ.get("HDP_SYNTHEA_SAMPLE") else None,
        REPO.parent / "shared" / "testdata" / "synthea-bulk",
    ]
    return next((p for p in candidates if p is not None and p.is_dir()), None)


def sample_files(directory: Path) -> list[tuple[str, Path]]:
    """(resource type, file) of a bulk export's ``<ResourceType>[.n].ndjson`` files. Other
    ``*.ndjson`` files hold no resources: the public samples carry the exporter's own
    ``log.ndjson`` beside them."""
    from fhir.resources import get_fhir_model_class

    files = []
    for path in sorted(directory.glob("*.ndjson")):
        rtype = path.name.split(".", 1)[0]
        try:
            get_fhir_model_class(rtype)
        except ValueError:
            continue
        files.append((rtype, path))
    return files


def sample_resources(directory: Path) -> Iterator[dict[str, Any]]:
    """Every resource of every non-blank line of a bulk export's resource files."""
    for _, path in sample_files(directory):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def generated() -> list[dict[str, Any]]:
    return list(iter_real_resources(SEED, PATIENTS, encounters=ENCOUNTERS, providers=PROVIDERS))


def rxnorm_to_atc() -> dict[str, str]:
    """The RxNorm -> ATC mapping table, read as a plain CSV (independent of the code under test)."""
    with open(RXNORM_TO_ATC_CSV, encoding="utf-8", newline="") as f:
        return {row["source_code"].strip(): row["target_code"].strip() for row in csv.DictReader(f)}


def _line(resource: dict[str, Any]) -> str:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":"))


def _pick() -> tuple[dict[str, str], dict[str, str]]:
    resources = generated()
    firsts: dict[str, dict[str, Any]] = {}
    by_reference: dict[str, str] = {}
    for r in resources:
        firsts.setdefault(r["resourceType"], r)
        by_reference.setdefault(f"{r['resourceType']}/{r['id']}", _line(r))
    missing = set(RESOURCE_TYPES) - set(firsts)
    assert not missing, f"the generator gave no {sorted(missing)}: pick other arguments"
    mapped = rxnorm_to_atc()
    picks = {
        "MedicationRequest": next(
            r
            for r in resources
            if r["resourceType"] == "MedicationRequest"
            and "medicationCodeableConcept" in r
            and r["medicationCodeableConcept"]["coding"][0]["system"] == RXNORM
            and r["medicationCodeableConcept"]["coding"][0]["code"] in mapped
        ),
        "DiagnosticReport.note": next(
            r for r in resources if r["resourceType"] == "DiagnosticReport" and "presentedForm" in r
        ),
        "Observation.survey": next(
            r for r in resources if r["resourceType"] == "Observation" and "valueCodeableConcept" in r
        ),
    }
    lines = {rtype: _line(r) for rtype, r in firsts.items()}
    lines.update({key: _line(r) for key, r in picks.items()})
    return lines, by_reference


LINES, _BY_REFERENCE = _pick()


def line_of(reference: str) -> str:
    """The generated line a literal reference (``Patient/<id>``) points at."""
    return _BY_REFERENCE[reference]
