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
from pipelines.warehouse import single_row

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
    "fhir_immunization": ("Immunization", "immunization_id"),
    "fhir_allergy_intolerance": ("AllergyIntolerance", "allergy_intolerance_id"),
    "fhir_diagnostic_report": ("DiagnosticReport", "diagnostic_report_id"),
    "fhir_document_reference": ("DocumentReference", "document_reference_id"),
    "fhir_organization": ("Organization", "organization_id"),
    "fhir_practitioner": ("Practitioner", "practitioner_id"),
}


def _detail(check: Check) -> str:
    return f"failed quality check {check.id}" + (f" (column {check.column})" if check.column else "")


def _key_and_origin(table: str, schema: Schema) -> tuple[str, str, str, str]:
    """(record_key, source_file, line_no, original) expressions over alias t and optional join fr."""
    cols = schema.tables[table]
    if table in FHIR_TABLES:
        rtype, id_col = FHIR_TABLES[table]
        key = f"{sql.literal(rtype + '/')} || t.{sql.ident(id_col)}"
        if _has_resources(schema):
            return (
                key,
                "fr._source_file",
                "fr._line_no",
                "encode(CAST(coalesce(fr.resource, to_json(t)) AS VARCHAR))",
            )
        return key, "NULL", "NULL", "encode(CAST(to_json(t) AS VARCHAR))"
    src = "t._source_file" if "_source_file" in cols else "NULL"
    line = "t._line_no" if "_line_no" in cols else "NULL"
    return "NULL", src, line, "encode(CAST(to_json(t) AS VARCHAR))"


def _has_resources(schema: Schema) -> bool:
    return "fhir_resource" in schema.tables and {
        "_source_file",
        "_line_no",
        "resource",
        "id",
        "resource_type",
    } <= set(schema.tables["fhir_resource"])


def _resource_join(table: str, schema: Schema) -> str:
    if table not in FHIR_TABLES or not _has_resources(schema):
        return ""
    rtype, id_col = FHIR_TABLES[table]
    # the delivered resource and where it came from
    return (
        " LEFT JOIN (SELECT id, any_value(_source_file) AS _source_file, min(_line_no) AS _line_no, "
        "any_value(resource) AS resource FROM fhir_resource "
        f"WHERE resource_type = {sql.literal(rtype)} GROUP BY id) AS fr ON fr.id = t.{sql.ident(id_col)}"
    )


def _insert_head(holder: str, source: str) -> str:
    return (
        f"INSERT INTO quarantine SELECT {sql.literal(STAGE)}, {sql.literal(holder)}, {sql.literal(source)}, "
    )


def _quarantine_row_checks(
    con: duckdb.DuckDBPyConnection,
    table: str,
    checks: list[Check],
    schema: Schema,
    holder: str,
    ctx: sql.RunContext,
) -> dict[str, int]:
    """One scan finds every failing (row, check) pair of the table; one join copies them."""
    types = schema.tables[table]
    derived: dict[str, str] = {}
    flags = []
    for check in checks:
        derived.update(sql.row_derived(check, ctx))
        flags.append(
            f"CASE WHEN {sql.failing_rows_predicate(check, ctx, types)} THEN {sql.literal(check.id)} END"
        )
    ids = f"list_filter([{', '.join(flags)}], lambda x: x IS NOT NULL)"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE __hdp_qfail AS SELECT __rid, unnest(ids) AS check_id FROM "
        f"(SELECT __rid, {ids} AS ids FROM {sql.derived_from(table, derived, rowid=True)}) WHERE len(ids) > 0"
    )
    meta = [(c.id, f"check.{c.id}", _detail(c), c.source) for c in checks]
    con.execute(
        "CREATE OR REPLACE TEMP TABLE __hdp_qmeta (check_id VARCHAR, reason_code VARCHAR, detail VARCHAR, "
        "source VARCHAR)"
    )
    con.executemany("INSERT INTO __hdp_qmeta VALUES (?, ?, ?, ?)", meta)
    key, src, line, original = _key_and_origin(table, schema)
    con.execute(
        f"INSERT INTO quarantine SELECT {sql.literal(STAGE)}, {sql.literal(holder)}, m.source, {src}, {line}, {key}, "
        f"m.reason_code, m.detail, m.check_id, {original}, NULL "
        f"FROM {sql.ident(table)} AS t JOIN __hdp_qfail AS q ON t.rowid = q.__rid "
        f"JOIN __hdp_qmeta AS m ON m.check_id = q.check_id{_resource_join(table, schema)}"
    )
    counts = dict(con.execute("SELECT check_id, count(*) FROM __hdp_qfail GROUP BY check_id").fetchall())
    con.execute("DROP TABLE __hdp_qfail")
    con.execute("DROP TABLE __hdp_qmeta")
    return {c.id: int(counts.get(c.id, 0)) for c in checks}


def _quarantine_set_check(
    con: duckdb.DuckDBPyConnection, check: Check, schema: Schema, holder: str, ctx: sql.RunContext
) -> int:
    where = sql.failing_rows_predicate(check, ctx, schema.tables[check.table])
    key, src, line, original = _key_and_origin(check.table, schema)
    before = single_row(con, "SELECT count(*) FROM quarantine")[0]
    con.execute(
        _insert_head(holder, check.source) + f"{src}, {line}, {key}, {sql.literal('check.' + check.id)}, "
        f"{sql.literal(_detail(check))}, {sql.literal(check.id)}, {original}, NULL "
        f"FROM {sql.ident(check.table)} AS t{_resource_join(check.table, schema)} WHERE {where}"
    )
    return single_row(con, "SELECT count(*) FROM quarantine")[0] - before


def quarantine_failures(
    con: duckdb.DuckDBPyConnection,
    checks: Iterable[Check],
    results: dict[str, CheckResult],
    *,
    holder: str,
    ctx: sql.RunContext,
    sources: Iterable[str],
) -> dict[str, int]:
    """Replace this stage's quarantine records for ``sources``; returns check id -> rows copied."""
    quarantine.ensure_table(con)
    for source in sorted(set(sources)):
        quarantine.reset(con, stage=STAGE, source=source)
    schema = Schema.read(con)
    copied: dict[str, int] = {}
    by_table: dict[str, list[Check]] = {}
    for check in checks:
        res = results.get(check.id)
        if not check.quarantine or res is None or res.failed_rows == 0 or res.verdict in ("skipped", "error"):
            continue
        if check.severity != "blocking":  # the library refuses it; a hand-made Check must not slip by
            raise ValueError(f"check {check.id}: a warning never excludes rows, it cannot quarantine")
        if check.row_level:
            by_table.setdefault(check.table, []).append(check)
        else:
            copied[check.id] = _quarantine_set_check(con, check, schema, holder, ctx)
    for table, table_checks in by_table.items():
        copied.update(_quarantine_row_checks(con, table, table_checks, schema, holder, ctx))
    return copied


def not_quarantined_sql(table: str, alias: str = "t") -> str:
    """SQL condition over ``alias`` (a row of raw ``table``): the gate did not quarantine this row.

    For the pseudonymisation stage, so that rows a quality check quarantined do not flow into the
    research zone (docs/ARCHITECTURE.md, "Quality thresholds")::

        SELECT ... FROM register_visit AS t WHERE {not_quarantined_sql("register_visit")}

    CSV rows are matched by (file, line), FHIR rows by resource key. Needs the ``quarantine`` table
    (``pipelines.quarantine.ensure_table``).
    """
    a = sql.ident(alias)
    if table in FHIR_TABLES:
        rtype, id_col = FHIR_TABLES[table]
        match = f"q.record_key = {sql.literal(rtype + '/')} || {a}.{sql.ident(id_col)}"
    else:
        match = f"q.source_file = {a}._source_file AND q.line_no = {a}._line_no"
    return f"NOT EXISTS (SELECT 1 FROM quarantine AS q WHERE q.stage = {sql.literal(STAGE)} AND {match})"
