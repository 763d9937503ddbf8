"""Hand-built zone databases following docs/ARCHITECTURE.md, with known defects at known rows.

Every identifier here is from Skatteverket's published test personnummer list or fails the
checksum on purpose; values are chosen to be distinctive so leak tests can search for them.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb

from pipelines import quarantine
from pipelines.fhir.ingest import VIEWS_DIR
from pipelines.fhir.viewdef import load_view
from pipelines.outcomes.sql import score_sql, survey_positive_sql
from privacy.policy import load_pseudonymise_policy

EXTRACT = date(2024, 6, 30)
GOOD_PNR = ["19121212-1212", "195001182046", "460911-3307", "19400125-3456", "8802022010"]


def luhn_ok(ten: str) -> bool:
    total = 0
    for i, ch in enumerate(ten):
        x = int(ch) * (2 if i % 2 == 0 else 1)
        total += x // 10 + x % 10
    return total % 10 == 0


def valid_pnrs(n: int) -> list[str]:
    """n distinct valid 12-digit personnummer (generated: date + serial + Luhn digit)."""
    out = []
    day = date(1940, 1, 1)
    serial = 0
    while len(out) < n:
        serial = (serial + 7) % 1000
        if serial == 0:  # never issued (identifier.invalid_serial)
            day += timedelta(days=1)
            continue
        stem = day.strftime("%y%m%d") + f"{serial:03d}"
        check = next(d for d in range(10) if luhn_ok(stem + str(d)))
        out.append(day.strftime("%Y") + stem[2:] + str(check))
        day += timedelta(days=3)
    return out


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: list) -> None:
    """Bulk insert (DuckDB's executemany is row by row and slow)."""
    import pyarrow as pa

    if not rows:
        return
    cols = [
        c
        for (c,) in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index", [table]
        ).fetchall()
    ]
    types = [
        t
        for (t,) in con.execute(
            "SELECT data_type FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index", [table]
        ).fetchall()
    ]
    data = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
    tmp = pa.table(
        {
            c: pa.array(v, from_pandas=True) if any(x is not None for x in v) else pa.nulls(len(v))
            for c, v in data.items()
        }
    )
    con.register("_rows", tmp)
    casts = ", ".join(f'CAST("{c}" AS {t})' for c, t in zip(cols, types, strict=True))
    con.execute(f"INSERT INTO {table} SELECT {casts} FROM _rows")
    con.unregister("_rows")


def write_delivery(landing: Path, holder: str) -> None:
    landing.mkdir(parents=True, exist_ok=True)
    (landing / "delivery.json").write_text(
        json.dumps({"holder": holder, "extract_date": EXTRACT.isoformat(), "files": []})
    )


def build_ndr_raw(db: Path, *, n: int = 400, defects: bool = True) -> dict[str, list[int]]:
    """register_visit + prom_response (+ quarantine); returns defect kind -> line numbers."""
    pnrs = valid_pnrs(n)
    rows = []
    lines: dict[str, list[int]] = {}
    for i, pnr in enumerate(pnrs):
        line = i + 2
        visit = date(2015, 1, 1) + timedelta(days=i * 5)
        rows.append(
            [
                pnr,
                "Anna",
                "Svensson",
                "752 37",
                visit,
                "typ2",
                52.0 + i % 30,
                27.5,
                135,
                82,
                "aldrig",
                "tabletter",
                "register/ndr_visits.csv",
                line,
            ]
        )
    if defects:
        rows[5][6] = 913.37  # HbA1c out of range
        lines["value.out_of_range"] = [rows[5][13]]
        rows[7][6] = 6.837  # HbA1c in DCCT %
        lines["value.wrong_unit"] = [rows[7][13]]
        rows[9][0] = rows[9][0][:-1] + str((int(rows[9][0][-1]) + 1) % 10)  # Luhn digit wrong
        lines["identifier.bad_checksum"] = [rows[9][13]]
        rows[11][0] = rows[11][0][:4] + "13" + rows[11][0][6:]  # month 13
        lines["identifier.impossible_date"] = [rows[11][13]]
    con = duckdb.connect(str(db))
    con.execute("""CREATE OR REPLACE TABLE register_visit (personnummer VARCHAR, first_name VARCHAR,
        family_name VARCHAR, postal_code VARCHAR, visit_date DATE, diabetes_type VARCHAR, hba1c_mmol_mol DOUBLE,
        bmi DOUBLE, systolic_bp INTEGER, diastolic_bp INTEGER, smoking VARCHAR, treatment VARCHAR,
        _source_file VARCHAR, _line_no BIGINT)""")
    _insert(con, "register_visit", rows)
    con.execute("""CREATE OR REPLACE TABLE prom_response (personnummer VARCHAR, visit_date DATE,
        eq5d_mobility INTEGER, eq5d_self_care INTEGER, eq5d_usual_activities INTEGER, eq5d_pain_discomfort INTEGER,
        eq5d_anxiety_depression INTEGER, eq_vas INTEGER, prem_respect VARCHAR, prem_involvement VARCHAR,
        prem_information VARCHAR, prem_accessibility VARCHAR, prem_overall VARCHAR, _source_file VARCHAR, _line_no BIGINT)""")
    prom = []
    for i in range(0, n, 2):
        prom.append(
            [
                rows[i][0],
                rows[i][4],
                1,
                2,
                1,
                3,
                1,
                80,
                "5",
                "4",
                "ej aktuellt",
                "3",
                "5",
                "prom/prom_visits.csv",
                i // 2 + 2,
            ]
        )
    if defects:
        prom[4][2] = 7  # EQ-5D level 7
        prom[6][7] = 151  # VAS 151
        lines["prom.out_of_range"] = [prom[4][14], prom[6][14]]
    _insert(con, "prom_response", prom)
    quarantine.ensure_table(con)
    con.execute("DELETE FROM quarantine")
    if defects:
        quarantine.add(
            con,
            [
                quarantine.QuarantineRecord(
                    stage="ingest",
                    holder="ndr",
                    source="register",
                    reason_code="csv.duplicate",
                    source_file="register/ndr_visits.csv",
                    line_no=n + 2,
                    original=b"x",
                ),
                quarantine.QuarantineRecord(
                    stage="ingest",
                    holder="ndr",
                    source="register",
                    reason_code="encoding.not_utf8",
                    source_file="register/extra.csv",
                    original_path="q/extra.csv",
                ),
            ],
        )
    con.close()
    return lines


def pseudonym(text: str) -> str:
    return hashlib.sha256(b"test-key" + text.encode()).hexdigest()


#: Flattened FHIR tables the region builder creates empty, with their view's columns (ingestion
#: creates every view's table, whether or not the delivery has that resource type).
_VIEW_ONLY_TABLES = (
    "fhir_immunization",
    "fhir_allergy_intolerance",
    "fhir_diagnostic_report",
    "fhir_document_reference",
    "fhir_organization",
    "fhir_practitioner",
)


def build_region_raw(db: Path, *, n: int = 60, defects: bool = True) -> dict[str, list[str]]:
    """fhir_* tables of one region; returns defect kind -> record keys."""
    pnrs = valid_pnrs(n)
    con = duckdb.connect(str(db))
    con.execute("""CREATE OR REPLACE TABLE fhir_resource (resource_type VARCHAR, id VARCHAR, resource JSON,
        _source_file VARCHAR, _line_no BIGINT)""")
    con.execute("""CREATE OR REPLACE TABLE fhir_patient (patient_id VARCHAR, identifier_system VARCHAR,
        personnummer VARCHAR, family_name VARCHAR, given_name VARCHAR, gender VARCHAR, birth_date DATE,
        postal_code VARCHAR, deceased_date DATE)""")
    con.execute("""CREATE OR REPLACE TABLE fhir_encounter (encounter_id VARCHAR, patient_id VARCHAR, status VARCHAR,
        class_code VARCHAR, start_time TIMESTAMP, end_time TIMESTAMP)""")
    con.execute("""CREATE OR REPLACE TABLE fhir_condition (condition_id VARCHAR, patient_id VARCHAR, encounter_id VARCHAR,
        code_system VARCHAR, code VARCHAR, recorded_date DATE)""")
    con.execute("""CREATE OR REPLACE TABLE fhir_observation (observation_id VARCHAR, patient_id VARCHAR,
        encounter_id VARCHAR, code_system VARCHAR, code VARCHAR, value DOUBLE, unit VARCHAR, effective_time TIMESTAMP)""")
    con.execute("""CREATE OR REPLACE TABLE fhir_medication_request (medication_request_id VARCHAR, patient_id VARCHAR,
        encounter_id VARCHAR, code_system VARCHAR, code VARCHAR, atc_code VARCHAR, authored_on DATE, status VARCHAR)""")
    con.execute("""CREATE OR REPLACE TABLE fhir_procedure (procedure_id VARCHAR, patient_id VARCHAR, encounter_id VARCHAR,
        code_system VARCHAR, code VARCHAR, performed_date DATE)""")
    con.execute("""CREATE OR REPLACE TABLE fhir_eq5d_response (questionnaire_response_id VARCHAR, patient_id VARCHAR,
        encounter_id VARCHAR, authored DATE, mobility INTEGER, self_care INTEGER, usual_activities INTEGER,
        pain_discomfort INTEGER, anxiety_depression INTEGER, eq_vas INTEGER)""")
    for name in _VIEW_ONLY_TABLES:
        cols = ", ".join(f'"{c.name}" VARCHAR' for c in load_view(VIEWS_DIR / f"{name}.json")[1].columns)
        con.execute(f"CREATE OR REPLACE TABLE {name} ({cols})")
    keys: dict[str, list[str]] = {}
    acc: dict[str, list] = {
        t: []
        for t in (
            "fhir_patient",
            "fhir_resource",
            "fhir_encounter",
            "fhir_condition",
            "fhir_observation",
            "fhir_medication_request",
            "fhir_procedure",
            "fhir_eq5d_response",
        )
    }
    for i, pnr in enumerate(pnrs):
        pid = f"p{i}"
        birth = date(int(pnr[:4]), int(pnr[4:6]), int(pnr[6:8]))
        acc["fhir_patient"].append(
            (
                pid,
                "http://electronichealth.se/identifier/personnummer",
                pnr,
                "Svensson",
                "Anna",
                "female",
                birth,
                "752 37",
                None,
            )
        )
        acc["fhir_resource"].append(
            ("Patient", pid, json.dumps({"resourceType": "Patient", "id": pid}), "fhir/Patient.ndjson", i + 1)
        )
        start = datetime(2018, 1, 1) + timedelta(days=i * 7)
        acc["fhir_encounter"].append((f"e{i}", pid, "finished", "AMB", start, start + timedelta(hours=1)))
        acc["fhir_resource"].append(("Encounter", f"e{i}", "{}", "fhir/Encounter.ndjson", i + 1))
        acc["fhir_condition"].append(
            (f"c{i}", pid, f"e{i}", "http://hl7.org/fhir/sid/icd-10-se", "E11.9", start.date())
        )
        acc["fhir_observation"].append(
            (
                f"o{i}",
                pid,
                f"e{i}",
                "http://www.npu-terminology.org",
                "NPU27300",
                48.0 + i % 20,
                "mmol/mol",
                start,
            )
        )
        acc["fhir_medication_request"].append(
            (f"m{i}", pid, f"e{i}", "http://www.whocc.no/atc", "A10BA02", "A10BA02", start.date(), "active")
        )
        acc["fhir_procedure"].append(
            (f"x{i}", pid, f"e{i}", "urn:oid:1.2.752.116.1.3.2.1.4", "AF037", start.date())
        )
        acc["fhir_eq5d_response"].append((f"q{i}", pid, f"e{i}", start.date(), 1, 1, 2, 2, 1, 75))
    for table, rows in acc.items():
        _insert(con, table, rows)
    if defects:
        con.execute("UPDATE fhir_encounter SET patient_id = 'ghost' WHERE encounter_id = 'e3'")
        keys["fhir.dangling_reference"] = ["Encounter/e3"]
        con.execute("UPDATE fhir_condition SET code = 'E19.9' WHERE condition_id = 'c4'")
        con.execute(
            "UPDATE fhir_medication_request SET code = 'C99ZZ01', atc_code = 'C99ZZ01' WHERE medication_request_id = 'm5'"
        )
        keys["code.unknown"] = ["Condition/c4", "MedicationRequest/m5"]
        # Checks that quarantine their failing rows block only on a systemic share (> 5 %), so the
        # unit and VAS errors hit 4 of 60 rows: enough to block, as a switched unit would.
        wrong_unit, bad_vas = ["o6", "o10", "o11", "o12"], ["q7", "q20", "q21", "q22"]
        con.execute(
            f"UPDATE fhir_observation SET value = 7.137, unit = '%' WHERE observation_id IN {tuple(wrong_unit)}"
        )
        keys["value.wrong_unit"] = [f"Observation/{k}" for k in wrong_unit]
        con.execute(
            f"UPDATE fhir_eq5d_response SET eq_vas = 157 WHERE questionnaire_response_id IN {tuple(bad_vas)}"
        )
        keys["value.out_of_range"] = [f"QuestionnaireResponse/{k}" for k in bad_vas]
    quarantine.ensure_table(con)
    con.execute("DELETE FROM quarantine")
    if defects:
        quarantine.add(
            con,
            [
                quarantine.QuarantineRecord(
                    stage="ingest",
                    holder="region_uppsala",
                    source="fhir",
                    reason_code="json.malformed",
                    source_file="fhir/Observation.ndjson",
                    line_no=9,
                ),
            ],
        )
    con.close()
    return keys


def add_derived_columns(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """(Re)compute research ``table``'s derived columns (policy actions ``eq5d`` and ``survey``)
    from its kept columns with the project's own SQL (pipelines.outcomes.sql), appended in policy
    order as pseudonymisation writes them; the kept columns have their raw names."""
    rule = next(r for r in load_pseudonymise_policy().tables if r.name == table)
    derived = {}
    for c in rule.columns:
        if c.action == "eq5d":
            dims = [f'"{d}"' for d in c.dimensions]
            derived[c.name] = score_sql(c.score or "", dims, value_set=c.value_set, levels=c.levels)
        elif c.action == "survey":
            derived[c.name] = survey_positive_sql(f'"{c.answer}"', c.dimension or "", c.survey or "")
    kept = [
        f'"{c}"'
        for (c,) in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND database_name = current_database() "
            "ORDER BY column_index",
            [table],
        ).fetchall()
        if c not in derived
    ]
    exprs = ", ".join(f'{sql} AS "{name}"' for name, sql in derived.items())
    con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT {', '.join(kept)}, {exprs} FROM {table}")


def build_research(db: Path, raw_db: Path) -> None:
    """A research zone from a raw zone, the way pseudonymisation would shape it."""
    db.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(db))
    con.execute(f"ATTACH '{raw_db}' AS raw (READ_ONLY)")
    con.create_function("pseud", pseudonym, ["VARCHAR"], "VARCHAR")
    tables = {
        t
        for (t,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'raw'"
        ).fetchall()
    }
    if "register_visit" in tables:
        con.execute("""CREATE OR REPLACE TABLE register_visit AS SELECT pseud(personnummer) AS person_id,
            CAST(left(personnummer, 4) AS INTEGER) AS birth_year, 'K' AS sex, 'personnummer' AS id_type, '03' AS county,
            visit_date, diabetes_type, hba1c_mmol_mol, bmi, systolic_bp, diastolic_bp, smoking, treatment
            FROM raw.register_visit""")
        con.execute("""CREATE OR REPLACE TABLE prom_response AS SELECT pseud(personnummer) AS person_id,
            CAST(left(personnummer, 4) AS INTEGER) AS birth_year, 'K' AS sex, 'personnummer' AS id_type, visit_date,
            eq5d_mobility, eq5d_self_care, eq5d_usual_activities, eq5d_pain_discomfort, eq5d_anxiety_depression,
            eq_vas, prem_respect, prem_involvement, prem_information, prem_accessibility, prem_overall
            FROM raw.prom_response""")
        add_derived_columns(con, "prom_response")
    if "fhir_patient" in tables:
        con.execute("""CREATE OR REPLACE TABLE patient AS SELECT pseud(personnummer) AS person_id,
            year(birth_date) AS birth_year, 'K' AS sex, 'personnummer' AS id_type, '03' AS county,
            year(deceased_date) AS deceased_year FROM raw.fhir_patient""")
        pid = "(SELECT pseud(p.personnummer) FROM raw.fhir_patient p WHERE p.patient_id = t.patient_id)"
        con.execute(f"""CREATE OR REPLACE TABLE encounter AS SELECT {pid} AS person_id, pseud(encounter_id) AS encounter_id,
            status, class_code, start_time, end_time FROM raw.fhir_encounter t""")
        con.execute(f"""CREATE OR REPLACE TABLE condition AS SELECT {pid} AS person_id, pseud(encounter_id) AS encounter_id,
            code_system, code, recorded_date FROM raw.fhir_condition t""")
        con.execute(f"""CREATE OR REPLACE TABLE observation AS SELECT {pid} AS person_id,
            pseud(encounter_id) AS encounter_id, code_system, code, value, unit, effective_time FROM raw.fhir_observation t""")
        con.execute(f"""CREATE OR REPLACE TABLE medication_request AS SELECT {pid} AS person_id,
            pseud(encounter_id) AS encounter_id, code_system, code, atc_code, authored_on, status FROM raw.fhir_medication_request t""")
        con.execute(f"""CREATE OR REPLACE TABLE procedure AS SELECT {pid} AS person_id, pseud(encounter_id) AS encounter_id,
            code_system, code, performed_date FROM raw.fhir_procedure t""")
        con.execute(f"""CREATE OR REPLACE TABLE eq5d_response AS SELECT {pid} AS person_id,
            pseud(encounter_id) AS encounter_id, authored, mobility, self_care, usual_activities, pain_discomfort,
            anxiety_depression, eq_vas FROM raw.fhir_eq5d_response t""")
        add_derived_columns(con, "eq5d_response")
        for rule in load_pseudonymise_policy().tables:
            if rule.source in _VIEW_ONLY_TABLES and rule.source in tables:
                kept = ", ".join(c.name for c in rule.columns if c.action == "keep")
                con.execute(f"""CREATE OR REPLACE TABLE {rule.name} AS SELECT {pid} AS person_id,
                    pseud(encounter_id) AS encounter_id, {kept} FROM raw.{rule.source} t""")
    con.close()


def build_release(release_dir: Path, research: dict[str, Path]) -> Path:
    """release.duckdb: every research table of the holders, with a holder column."""
    release_dir.mkdir(parents=True, exist_ok=True)
    db = release_dir / "release.duckdb"
    con = duckdb.connect(str(db))
    by_table: dict[str, list[str]] = {}
    for holder_id, path in research.items():
        con.execute(f"ATTACH '{path}' AS {holder_id} (READ_ONLY)")
        for (t,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [holder_id]
        ).fetchall():
            by_table.setdefault(t, []).append(holder_id)
    for table, hs in by_table.items():
        union = " UNION ALL ".join(f"SELECT '{h}' AS holder, * FROM {h}.{table}" for h in hs)
        con.execute(f"CREATE TABLE {table} AS {union}")
    con.close()
    return db
