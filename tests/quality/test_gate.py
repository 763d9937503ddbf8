"""The gate over hand-built zones: verdicts, quarantine, fail-closed behaviour, history."""

from __future__ import annotations

import duckdb
import pytest

from pipelines.quality import catalog, store
from pipelines.quality.gate import GateInputMissing, run_gate
from pipelines.quality.quarantine_rows import not_quarantined_sql
from pipelines.quality.results import QualityGateFailed, raise_for_blocking


def by_id(result):
    return {c.id: c for c in result.checks}


def test_clean_zones_pass_everywhere_without_warnings(clean_zones):
    s = clean_zones["settings"]
    results = [
        run_gate(z, holder_id=h, run_id="clean", render_docs=False)
        for z in ("raw", "research")
        for h in ("ndr", "region_uppsala")
    ]
    results.append(
        run_gate("release", release_dir=clean_zones["release_dir"], run_id="clean", render_docs=False)
    )
    for r in results:
        bad = [c.describe() for c in r.checks if c.verdict != "pass"]
        assert r.passed and not bad, (r.zone, r.scope, bad)
    assert not store.history(s.quality_dir, run_id="nope")
    assert len({(r["zone"], r["scope"]) for r in store.history(s.quality_dir, run_id="clean")}) == 5


def test_raw_gate_catches_defects_and_quarantines_rows_with_check_ids(zones):
    s = zones["settings"]
    result = run_gate("raw", holder_id="ndr", run_id="r1", render_docs=False)
    checks = by_id(result)
    assert checks["register.hba1c_mmol_mol.range"].failed_rows == 2  # 913.37 and the DCCT 6.837
    assert checks["register.hba1c_mmol_mol.unit"].failed_rows == 1
    assert checks["register.personnummer.valid"].failed_rows == 2  # bad Luhn digit, month 13
    assert checks["prom.eq5d_mobility.range"].failed_rows == 1
    assert checks["prom.eq_vas.range"].failed_rows == 1
    assert checks["ingest.register.duplicate"].failed_rows == 1
    assert checks["ingest.register.encoding"].verdict == "warn"
    assert result.passed  # all within the tolerated shares
    with duckdb.connect(str(s.raw_db("ndr")), read_only=True) as con:
        rows = con.execute(
            "SELECT check_id, reason_code, source_file, line_no, detail, original FROM quarantine "
            "WHERE stage = 'quality'"
        ).fetchall()
    got = {(r[0], r[3]) for r in rows}
    lines = zones["ndr_lines"]
    assert ("register.hba1c_mmol_mol.range", lines["value.out_of_range"][0]) in got
    assert ("register.hba1c_mmol_mol.unit", lines["value.wrong_unit"][0]) in got
    assert ("register.personnummer.valid", lines["identifier.bad_checksum"][0]) in got
    assert ("register.personnummer.valid", lines["identifier.impossible_date"][0]) in got
    for check_id, reason, source_file, _line, detail, original in rows:
        assert reason == f"check.{check_id}" and source_file and original  # original kept for the operator
        assert "913" not in detail and "6.837" not in detail
    assert result.quarantined_rows == len(rows)


def test_raw_gate_rerun_gives_the_same_result(zones):
    s = zones["settings"]
    first = run_gate("raw", holder_id="region_uppsala", run_id="a", render_docs=False)
    second = run_gate("raw", holder_id="region_uppsala", run_id="b", render_docs=False)
    strip = [(c.id, c.failed_rows, c.total_rows, c.verdict, c.quarantined_rows) for c in first.checks]
    assert strip == [
        (c.id, c.failed_rows, c.total_rows, c.verdict, c.quarantined_rows) for c in second.checks
    ]
    with duckdb.connect(str(s.raw_db("region_uppsala")), read_only=True) as con:
        n = con.execute("SELECT count(*) FROM quarantine WHERE stage = 'quality'").fetchone()[0]
        keys = {
            r[0] for r in con.execute("SELECT record_key FROM quarantine WHERE stage = 'quality'").fetchall()
        }
    assert n == second.quarantined_rows
    for k in zones["region_keys"]["value.wrong_unit"]:  # blocking checks quarantine
        assert k in keys
    # warnings count but never exclude rows: a dangling reference and an unknown code stay
    by_id = {c.id: c for c in second.checks}
    assert by_id["fhir.encounter.patient_ref"].failed_rows == 1
    assert by_id["fhir.medication_request.atc.known"].failed_rows == 1
    for k in zones["region_keys"]["fhir.dangling_reference"] + zones["region_keys"]["code.unknown"]:
        assert k not in keys


def test_blocking_failure_raises_with_ids_and_counts_only(zones):
    result = run_gate("raw", holder_id="region_uppsala", run_id="r2", render_docs=False)
    assert not result.passed
    failing = {c.id for c in result.blocking_failures}
    assert {"fhir.observation.hba1c.unit", "fhir.eq5d_response.eq_vas.range"} <= failing
    with pytest.raises(QualityGateFailed) as info:
        raise_for_blocking(result)
    msg = str(info.value)
    assert "fhir.observation.hba1c.unit" in msg and "4/" in msg
    for value in ("7.137", "157", "ghost", "E19.9", "C99ZZ01"):
        assert value not in msg
    assert info.value.result.summary()["failed"]


def test_summary_is_small_and_value_free(zones):
    summary = run_gate("raw", holder_id="ndr", run_id="r3", render_docs=False).summary()
    assert summary["passed"] is True and summary["checks"]["pass"] > 40
    assert "913.37" not in repr(summary)


def test_missing_database_fails_with_a_clear_error(hdp_home):
    with pytest.raises(GateInputMissing, match="raw.duckdb does not exist"):
        run_gate("raw", holder_id="ndr", run_id="x")


def test_bad_arguments_are_refused(hdp_home):
    with pytest.raises(ValueError, match="holder_id"):
        run_gate("raw", run_id="x")
    with pytest.raises(ValueError, match="release_dir"):
        run_gate("release", holder_id="ndr", run_id="x")
    with pytest.raises(ValueError, match="zone"):
        run_gate("staging", holder_id="ndr", run_id="x")
    with pytest.raises(KeyError):
        run_gate("raw", holder_id="nobody", run_id="x")


def test_missing_table_in_research_fails_closed(zones):
    s = zones["settings"]
    with duckdb.connect(str(s.research_db("ndr"))) as con:
        con.execute("DROP TABLE prom_response")
    result = run_gate("research", holder_id="ndr", run_id="r4", render_docs=False)
    errors = {c.id: c for c in result.checks if c.verdict == "error"}
    assert (
        "prom.person_id.format" in errors
        and "missing: table prom_response" in errors["prom.person_id.format"].reason
    )
    assert not result.passed


def test_missing_columns_in_a_release_are_skipped(zones):
    with duckdb.connect(str(zones["release_dir"] / "release.duckdb")) as con:
        con.execute("ALTER TABLE register_visit DROP COLUMN bmi")
        con.execute("DROP TABLE eq5d_response")
    result = by_id(run_gate("release", release_dir=zones["release_dir"], run_id="r5", render_docs=False))
    assert result["register.bmi.range"].verdict == "skipped"
    assert result["fhir.eq5d_response.eq_vas.range"].verdict == "skipped"
    assert result["register.hba1c_mmol_mol.range"].verdict == "pass"


def test_identifier_leaking_into_research_blocks(zones):
    s = zones["settings"]
    with duckdb.connect(str(s.research_db("ndr"))) as con:
        con.execute("ALTER TABLE register_visit ADD COLUMN personnummer VARCHAR")
        con.execute(
            "UPDATE register_visit SET treatment = '19121212-1212' WHERE visit_date = (SELECT min(visit_date) "
            "FROM register_visit)"
        )
    result = run_gate("research", holder_id="ndr", run_id="r6", render_docs=False)
    checks = by_id(result)
    assert checks["privacy.no_direct_identifier_columns"].verdict == "fail"
    assert "register_visit.personnummer" in checks["privacy.no_direct_identifier_columns"].reason
    assert checks["privacy.no_identifier_values"].failed_rows == 1
    assert "19121212" not in repr(result.to_dict())


def test_a_check_whose_sql_fails_is_an_error_not_a_crash(zones, monkeypatch):
    broken = catalog.parse_check(
        {
            "id": "test.broken.predicate",
            "kind": "predicate",
            "columns": ["bmi"],
            "fail_when": "CAST(diabetes_type AS INTEGER) > 1",
            "description": "casts text to a number",
            "category": "plausibility",
            "subcategory": "atemporal",
            "source": "register",
            "zones": ["raw"],
            "table": "register_visit",
            "severity": "blocking",
            "threshold": {"max_failed_share": 0},
            "note": "n",
        }
    )
    lib = catalog.library() + (broken,)
    monkeypatch.setattr(catalog, "library", lambda: lib)
    result = by_id(run_gate("raw", holder_id="ndr", run_id="r7", render_docs=False))
    assert result["test.broken.predicate"].verdict == "error"
    assert result["test.broken.predicate"].reason == "query failed (ConversionException)"
    assert "typ2" not in result["test.broken.predicate"].reason
    # the other checks of the same table still ran (fallback to one scan per check)
    assert result["register.hba1c_mmol_mol.range"].failed_rows == 2


def test_history_keeps_every_run(zones):
    s = zones["settings"]
    for run in ("h1", "h2"):
        run_gate("raw", holder_id="ndr", run_id=run, render_docs=False)
    rows = store.history(s.quality_dir, check_id="register.hba1c_mmol_mol.range", scope="ndr")
    assert [r["run_id"] for r in rows] == ["h1", "h2"]
    assert all(r["failed_rows"] == 2 and r["total_rows"] == 400 for r in rows)
    assert store.latest(s.quality_dir, zone="raw", scope="ndr")[0]["run_id"] == "h2"


def test_quarantined_rows_can_be_kept_out_of_the_research_zone(zones):
    s = zones["settings"]
    run_gate("raw", holder_id="ndr", run_id="q1", render_docs=False)
    run_gate("raw", holder_id="region_uppsala", run_id="q1", render_docs=False)
    with duckdb.connect(str(s.raw_db("ndr")), read_only=True) as con:
        quarantined = con.execute(
            "SELECT count(DISTINCT line_no) FROM quarantine WHERE stage = 'quality' AND source = 'register'"
        ).fetchone()[0]
        kept = con.execute(
            f"SELECT count(*), max(hba1c_mmol_mol) FROM register_visit AS t "
            f"WHERE {not_quarantined_sql('register_visit')}"
        ).fetchone()
    assert quarantined >= 4 and kept[0] == 400 - quarantined and kept[1] < 200
    with duckdb.connect(str(s.raw_db("region_uppsala")), read_only=True) as con:
        left = con.execute(
            f"SELECT count(*) FROM fhir_observation AS o WHERE unit = '%' AND "
            f"{not_quarantined_sql('fhir_observation', 'o')}"
        ).fetchone()[0]
    assert left == 0
