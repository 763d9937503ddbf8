"""Every defect class the synthetic generator injects is caught by a named check.

The real chain: ``synthetic_data.generate`` → CSV and FHIR ingestion → the raw-zone gate.
Each defect in ``restricted/synthetic/defects.jsonl`` maps to check ids (``expected_checks``);
the test asserts that those checks counted failures in that holder's raw gate, and that the
defect's own record is the one that was caught: in the quarantine with the check id (rows
the gate quarantined) or with one of the check's reason codes (records ingestion rejected).
A clean delivery (defect_rate 0) passes every zone's gate with no blocking failure.
"""

from __future__ import annotations

import json
from collections import defaultdict

import duckdb
import pytest

from hdp.settings import holders

pytest.importorskip("synthetic_data.generate", reason="synthetic_data.generate has not landed yet")
pytest.importorskip("pipelines.ingest", reason="pipelines.ingest (CSV ingestion) has not landed yet")
pytest.importorskip("pipelines.fhir.ingest", reason="pipelines.fhir.ingest has not landed yet")

FHIR_TABLE = {
    "Patient": "patient",
    "Encounter": "encounter",
    "Condition": "condition",
    "Observation": "observation",
    "MedicationRequest": "medication_request",
    "Procedure": "procedure",
    "QuestionnaireResponse": "eq5d_response",
}
OBSERVATION_RANGES = {
    f"fhir.observation.{n}.range" for n in ("hba1c", "bmi", "systolic_bp", "diastolic_bp", "body_weight")
}


def expected_checks(d: dict) -> set[str]:
    """The check ids that must catch one defect of the manifest."""
    cls, src, col = d["defect_class"], d["source"], d["column"]
    rtype = (d.get("record_key") or "/").split("/")[0]
    if cls in ("identifier.bad_checksum", "identifier.impossible_date"):
        return {"fhir.patient.personnummer.valid"} if src == "fhir" else {f"{src}.personnummer.valid"}
    if cls == "value.out_of_range":
        if src != "fhir":
            return {f"{src}.{col}.range"}
        return OBSERVATION_RANGES if rtype == "Observation" else {f"fhir.{FHIR_TABLE[rtype]}.{col}.range"}
    if cls == "value.wrong_unit":
        return {"fhir.observation.hba1c.unit"} if src == "fhir" else {"register.hba1c_mmol_mol.unit"}
    if cls == "row.duplicate":
        return {f"ingest.{src}.duplicate"}
    if cls == "field.missing_required":
        return {"ingest.fhir.invalid"} if src == "fhir" else {f"ingest.{src}.missing_required"}
    if cls == "fhir.dangling_reference":
        return {f"fhir.{FHIR_TABLE[rtype]}.patient_ref", "fhir.flag.dangling_reference"}
    if cls == "code.unknown":
        return {
            f"fhir.{FHIR_TABLE[rtype]}.{'atc' if col == 'atc_code' else 'code'}.known",
            "fhir.flag.code_unknown",
        }
    return {
        {
            "json.malformed_line": "ingest.fhir.json_malformed",
            "file.not_utf8": f"ingest.{src}.encoding",
            "file.truncated": f"ingest.{src}.truncated",
            "fhir.wrong_resource_type": "ingest.fhir.wrong_resource_type",
            "fhir.invalid": "ingest.fhir.invalid",
        }[cls]
    }


def _deliver(settings, *, defect_rate: float) -> None:
    from edge.stages import ingest_source
    from synthetic_data.generate import generate

    generate(settings, seed=11, persons=160, defect_rate=defect_rate)
    for h in holders():
        for source in h.sources:
            ingest_source(h.id, source)


@pytest.mark.slow
def test_every_injected_defect_is_caught_by_a_named_check(hdp_home):
    from pipelines.quality import catalog
    from pipelines.quality.gate import run_gate

    _deliver(hdp_home, defect_rate=0.05)
    defects = [json.loads(line) for line in hdp_home.defect_manifest.read_text().splitlines() if line.strip()]
    from synthetic_data.defects import DEFECT_CLASSES

    assert {d["defect_class"] for d in defects} == set(DEFECT_CLASSES), (
        "the generator should inject every class"
    )
    results = {
        h.id: {c.id: c for c in run_gate("raw", holder_id=h.id, run_id="defects", render_docs=False).checks}
        for h in holders()
    }
    library = {c.id: c for c in catalog.library()}
    quarantined: dict[str, list[tuple]] = {}
    for h in holders():
        with duckdb.connect(str(hdp_home.raw_db(h.id)), read_only=True) as con:
            quarantined[h.id] = con.execute(
                "SELECT stage, source_file, line_no, record_key, reason_code, check_id FROM quarantine"
            ).fetchall()

    caught_by_class: dict[str, set[str]] = defaultdict(set)
    missed = []
    for d in defects:
        ids = expected_checks(d)
        assert ids <= set(library), f"mapping names unknown checks: {ids - set(library)}"
        counted = {i for i in ids if results[d["holder"]][i].failed_rows > 0}
        located = False
        for stage, source_file, line_no, record_key, reason, check_id in quarantined[d["holder"]]:
            if stage == "quality":
                hit = check_id in ids and (
                    (d["record_key"] is not None and record_key == d["record_key"])
                    or (d["source"] != "fhir" and source_file == d["file"] and line_no == d["line"])
                )
            else:
                codes = {
                    code
                    for i in ids
                    if library[i].kind == "quarantine_reason"
                    for code in library[i].params["reason_codes"]
                }
                hit = reason in codes and source_file == d["file"] and line_no == d["line"]
            if hit:
                located = True
                break
        flag_only = any(library[i].kind == "flag_count" for i in counted)
        if counted and (located or flag_only):
            caught_by_class[d["defect_class"]] |= counted
        else:
            missed.append(
                (d["defect_class"], d["holder"], d["file"], d["line"], d["record_key"], sorted(ids))
            )
    assert not missed, missed[:10]
    assert set(caught_by_class) == set(DEFECT_CLASSES)


@pytest.mark.slow
def test_clean_delivery_passes_every_zone_without_blocking_failures(hdp_home, kek_env):
    from edge.stages import pseudonymise
    from pipelines.quality.gate import run_gate

    _deliver(hdp_home, defect_rate=0.0)
    for h in holders():
        for zone in ("raw", "research"):
            if zone == "research":
                pseudonymise(h.id)
            result = run_gate(zone, holder_id=h.id, run_id="clean", render_docs=False)
            blocking = [c.describe() for c in result.blocking_failures]
            assert result.passed and not blocking, (zone, h.id, blocking)
            assert not [c.id for c in result.checks if c.verdict == "error"], (zone, h.id)
            # Warnings are allowed: the generator's clipped blood pressures occasionally put diastolic
            # at or above systolic, which register.blood_pressure.order rightly reports.
