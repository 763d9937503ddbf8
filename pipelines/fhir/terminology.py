"""Terminology: codes keep their system; known systems are checked, other systems can be mapped.

* Check: a coding whose system is ICD-10-SE, ATC, KVÅ, LOINC or NPU and whose code is not in the
  shipped subset (``schemas/codes/*.csv``) is flagged ``code.unknown`` (with the element path,
  never the code). A coding of any other system (RxNorm, SNOMED CT, CVX, ...) is not checked and
  never flagged here: it is kept as delivered, with its system; the quality checks
  ``fhir.<table>.code_system.known`` count rows coded in another system than the expected one.
* Mapping: ``schemas/codes/mappings/<from>_to_<to>.csv`` (e.g. ``rxnorm_to_atc.csv``) map codes
  of one system to another. :func:`fill_mapped_columns` fills a flattened column of the target
  system (``MAPPED_COLUMNS``, e.g. ``fhir_medication_request.atc_code``) where the delivery carries
  no code of that system and a mapping row exists for the delivered code. The delivered code and
  system are never changed.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hdp.settings import SCHEMAS_DIR

if TYPE_CHECKING:
    import duckdb

ICD10SE = "http://hl7.org/fhir/sid/icd-10-se"
ATC = "http://www.whocc.no/atc"
KVA = "urn:oid:1.2.752.116.1.3.2.1.4"
LOINC = "http://loinc.org"
NPU = "http://www.npu-terminology.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED_CT = "http://snomed.info/sct"

CODES_DIR = SCHEMAS_DIR / "codes"
MAPPINGS_DIR = CODES_DIR / "mappings"

#: The short names of code systems in mapping file names (``<from>_to_<to>.csv``).
SYSTEM_NAMES: dict[str, str] = {
    "icd10se": ICD10SE,
    "atc": ATC,
    "kva": KVA,
    "loinc": LOINC,
    "npu": NPU,
    "rxnorm": RXNORM,
    "snomedct": SNOMED_CT,
}
_MAPPING_FILE = re.compile(r"^([a-z0-9]+)_to_([a-z0-9]+)\.csv$")

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


class TerminologyError(ValueError):
    """A code list or mapping table in schemas/codes is malformed (file and line in the message)."""


#: (source system URI, target system URI) -> source code -> target code
Mappings = dict[tuple[str, str], dict[str, str]]


@cache
def code_mappings(directory: Path = MAPPINGS_DIR) -> Mappings:
    """Every mapping table of ``directory``: ``<from>_to_<to>.csv`` with header
    ``source_code,target_code`` (more columns, e.g. displays, are ignored). A source code may map
    to one target code only: an ambiguous mapping would pick a code by chance."""
    out: Mappings = {}
    for path in sorted(directory.glob("*.csv")):
        m = _MAPPING_FILE.match(path.name)
        if not m or m.group(1) not in SYSTEM_NAMES or m.group(2) not in SYSTEM_NAMES:
            raise TerminologyError(
                f"{path.name}: mapping files are named <from>_to_<to>.csv with systems from {sorted(SYSTEM_NAMES)}"
            )
        pairs: dict[str, str] = {}
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if not {"source_code", "target_code"} <= set(reader.fieldnames or ()):
                raise TerminologyError(f"{path.name}: header must have source_code and target_code")
            for line_no, row in enumerate(reader, start=2):
                source, target = (row["source_code"] or "").strip(), (row["target_code"] or "").strip()
                if not source or not target:
                    raise TerminologyError(f"{path.name}: line {line_no}: empty source_code or target_code")
                if pairs.setdefault(source, target) != target:
                    raise TerminologyError(f"{path.name}: line {line_no}: source code mapped twice")
        out[(SYSTEM_NAMES[m.group(1)], SYSTEM_NAMES[m.group(2)])] = pairs
    return out


def mapped_code(
    system: str | None, code: str | None, target_system: str, mappings: Mappings | None = None
) -> str | None:
    """The code of ``target_system`` for a delivered (system, code): the code itself when it is
    already of that system, else its mapping, else None."""
    if system is None or code is None:
        return None
    if system == target_system:
        return code
    table = (mappings if mappings is not None else code_mappings()).get((system, target_system))
    return None if table is None else table.get(code)


def _q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


@dataclass(frozen=True)
class MappedColumn:
    """A flattened column of ``target_system`` codes, filled from the row's delivered code."""

    table: str
    column: str
    target_system: str
    system_column: str = "code_system"
    code_column: str = "code"


#: The flattened columns that mappings fill (the views give them the delivered code of their
#: system when there is one; a mapping fills the rest).
MAPPED_COLUMNS: tuple[MappedColumn, ...] = (MappedColumn("fhir_medication_request", "atc_code", ATC),)


def fill_mapped_columns(con: duckdb.DuckDBPyConnection, mappings: Mappings | None = None) -> dict[str, int]:
    """Fill every ``MAPPED_COLUMNS`` column that is NULL from the mapping of the row's delivered
    code system to the column's system. Run after flattening. Returns ``table.column`` -> rows
    filled (counts only). Tables that do not exist are skipped; delivered codes are untouched."""
    mappings = mappings if mappings is not None else code_mappings()
    present = {
        (t, c)
        for t, c in con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() WHERE schema_name = current_schema()"
        ).fetchall()
    }
    filled: dict[str, int] = {}
    targets = [
        mc
        for mc in MAPPED_COLUMNS
        if {(mc.table, mc.column), (mc.table, mc.system_column), (mc.table, mc.code_column)} <= present
    ]
    rows = [
        (src, dst, code, target)
        for (src, dst), pairs in mappings.items()
        if any(mc.target_system == dst for mc in targets)
        for code, target in pairs.items()
    ]
    if not rows:
        return {f"{mc.table}.{mc.column}": 0 for mc in targets}
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _hdp_code_map (source_system VARCHAR, target_system VARCHAR, "
        "source_code VARCHAR, target_code VARCHAR)"
    )
    con.executemany("INSERT INTO _hdp_code_map VALUES (?, ?, ?, ?)", rows)
    try:
        for mc in targets:
            t_col, t_sys, t_code = (_q(mc.column), _q(mc.system_column), _q(mc.code_column))
            n = con.execute(
                f"UPDATE {_q(mc.table)} AS t SET {t_col} = m.target_code FROM _hdp_code_map AS m "
                f"WHERE t.{t_col} IS NULL AND m.target_system = ? "
                f"AND m.source_system = t.{t_sys} AND m.source_code = t.{t_code}",
                [mc.target_system],
            ).fetchall()
            filled[f"{mc.table}.{mc.column}"] = int(n[0][0]) if n else 0
    finally:
        con.execute("DROP TABLE IF EXISTS _hdp_code_map")
    return filled
