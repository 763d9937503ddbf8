"""Copy rows that fail a quarantinable check into the raw zone's quarantine, with the check id.

Only in the raw zone: ``restricted/<holder>/raw.duckdb`` is the one database allowed to hold
identifiable rows. The rows stay in their table (the raw zone mirrors the delivery; the
pseudonymisation stage decides what to carry forward, and can anti-join on
``quarantine(stage='quality', source_file, line_no)`` or ``record_key``); the quarantine copy lets an
operator see exactly which rows failed which check. Each record: stage ``quality``, reason code
``check.<check_id>``, the check id, the delivered file and line (CSV) or resource key (FHIR), a
detail naming the check and column (never a value), and ``original`` = the loaded row as JSON
(for FHIR: the delivered resource). A re-run first removes this stage's earlier records, so the
result does not depend on how often the gate ran.
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb

from pipelines import quarantine
from pipelines.quality import sql
from pipelines.quality.catalog import Check
from pipelines.quality.engine import Schema
from pipelines.quality.results import CheckResult

STAGE = "quality"

#: raw FHIR table -> (resource type, id column) per docs/ARCHITECTURE.md
FHIR_TABLES: dict[str, tuple[str, str]] = {
    "fhir_patient": ("Patient", "patient_id"),
    "fhir_encounter": ("Encounter", "encounter_id"),
    "fhir_condition": ("Condition", "condition_id"),
    "fhir_observation": ("Observation", "observation_id"),
    "fhir_medication_request": ("MedicationRequest", "medication_request_id"),
    "fhir_procedure": ("Procedure", "procedure_id"),
    "fhir_eq5d_response": ("QuestionnaireResponse", "questionnaire_response_id"),
}


def _insert_sql(check: Check, where: str, schema: Schema, holder: str) -> str:
    table = check.table
    cols = schema.tables[table]
    detail = f"failed quality check {check.id}" + (f" (column {check.column})" if check.column else "")
    reason = f"check.{check.id}"
    head = (f"INSERT INTO quarantine SELECT {sql.literal(STAGE)}, {sql.literal(holder)}, {sql.literal(check.source)}, ")
    tail = (f"{sql.literal(reason)}, {sql.literal(detail)}, {sql.literal(check.id)}, ")
    if table in FHIR_TABLES:
        rtype, id_col = FHIR_TABLES[table]
        key = f"{sql.literal(rtype + '/')} || t.{sql.ident(id_col)}"
        if "fhir_resource" in schema.tables and {"_source_file", "_line_no", "resource"} <= set(schema.tables["fhir_resource"]):
            # the delivered resource and where it came from
            return (head + "fr._source_file, fr._line_no, " + key + ", " + tail +
                    "encode(CAST(coalesce(fr.resource, to_json(t)) AS VARCHAR)), NULL "
                    f"FROM {sql.ident(table)} AS t LEFT JOIN (SELECT id, any_value(_source_file) AS _source_file, "
                    "min(_line_no) AS _line_no, any_value(resource) AS resource FROM fhir_resource "
                    f"WHERE resource_type = {sql.literal(rtype)} GROUP BY id) AS fr ON fr.id = t.{sql.ident(id_col)} "
                    f"WHERE {where}")
        return (head + "NULL, NULL, " + key + ", " + tail + "encode(CAST(to_json(t) AS VARCHAR)), NULL "
                f"FROM {sql.ident(table)} AS t WHERE {where}")
    src = "t._source_file" if "_source_file" in cols else "NULL"
    line = "t._line_no" if "_line_no" in cols else "NULL"
    return (head + f"{src}, {line}, NULL, " + tail + "encode(CAST(to_json(t) AS VARCHAR)), NULL "
            f"FROM {sql.ident(table)} AS t WHERE {where}")


def quarantine_failures(con: duckdb.DuckDBPyConnection, checks: Iterable[Check], results: dict[str, CheckResult],
                        *, holder: str, ctx: sql.RunContext, sources: Iterable[str]) -> dict[str, int]:
    """Replace this stage's quarantine records for ``sources``; returns check id -> rows copied."""
    quarantine.ensure_table(con)
    for source in sorted(set(sources)):
        quarantine.reset(con, stage=STAGE, source=source)
    schema = Schema.read(con)
    copied: dict[str, int] = {}
    for check in checks:
        res = results.get(check.id)
        if not check.quarantine or res is None or res.failed_rows == 0 or res.verdict in ("skipped", "error"):
            continue
        where = sql.failing_rows_predicate(check, ctx, schema.tables[check.table])
        before = con.execute("SELECT count(*) FROM quarantine").fetchone()[0]
        con.execute(_insert_sql(check, where, schema, holder))
        copied[check.id] = con.execute("SELECT count(*) FROM quarantine").fetchone()[0] - before
    return copied
