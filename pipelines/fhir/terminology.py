"""Terminology check: codes keep their system; known systems are checked against schemas/codes/.

A coding whose system is ICD-10-SE, ATC, KVÅ, LOINC or NPU and whose code is not in the
shipped subset is flagged ``code.unknown`` (with the element path, never the code).
"""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path
from typing import Any

from hdp.settings import SCHEMAS_DIR

ICD10SE = "http://hl7.org/fhir/sid/icd-10-se"
ATC = "http://www.whocc.no/atc"
KVA = "urn:oid:1.2.752.116.1.3.2.1.4"
LOINC = "http://loinc.org"
NPU = "http://www.npu-terminology.org"

CODES_DIR = SCHEMAS_DIR / "codes"

# Where each resource type carries the codes the check covers (JSON keys, choice types resolved).
_CODED_PATHS: dict[str, tuple[str, ...]] = {
    "Condition": ("code",),
    "Observation": ("code",),
    "Procedure": ("code",),
    "MedicationRequest": ("medicationCodeableConcept",),
}


@cache
def code_lists(directory: Path = CODES_DIR) -> dict[str, frozenset[str]]:
    """System URI -> the codes shipped for it."""
    lists: dict[str, set[str]] = {ICD10SE: set(), ATC: set(), KVA: set(), LOINC: set(), NPU: set()}
    for name, system in (("icd10se.csv", ICD10SE), ("atc.csv", ATC), ("kva.csv", KVA)):
        with open(directory / name, encoding="utf-8", newline="") as f:
            lists[system].update(row["code"].strip() for row in csv.DictReader(f))
    with open(directory / "laboratory.csv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            lists.setdefault(row["system"].strip(), set()).add(row["code"].strip())
    return {k: frozenset(v) for k, v in lists.items()}


def unknown_code_paths(resource: dict[str, Any], lists: dict[str, frozenset[str]] | None = None) -> list[str]:
    """Element paths of codings with a checked system and a code outside its list."""
    rtype = resource.get("resourceType")
    keys = _CODED_PATHS.get(rtype)  # type: ignore[arg-type]
    if not keys:
        return []
    lists = lists if lists is not None else code_lists()
    out: list[str] = []
    for key in keys:
        cc = resource.get(key)
        if type(cc) is not dict:
            continue
        codings = cc.get("coding")
        if type(codings) is not list:
            continue
        for i, c in enumerate(codings):
            if type(c) is not dict:
                continue
            known = lists.get(c.get("system"))  # type: ignore[arg-type]
            if known is not None and c.get("code") not in known:
                out.append(f"{rtype}.{key}.coding[{i}]")
    return out
