"""Generated deliveries -> real ingestion -> pseudonymisation: every injected identifier defect is
quarantined at its file and line (or record key), and nothing else."""

from __future__ import annotations

import json

import duckdb
import pytest


@pytest.mark.slow
def test_identifier_defects_match_the_defect_manifest(hdp_home, kek_env):
    from click.testing import CliRunner

    from edge import stages
    from edge.commands.generate import generate

    out = CliRunner().invoke(generate, ["--persons", "300", "--seed", "11", "--defect-rate", "0.03"])
    assert out.exit_code == 0, out.output
    defects = [json.loads(line) for line in hdp_home.defect_manifest.read_text().splitlines() if line.strip()]
    for holder, sources in (("ndr", ("register", "prom")), ("region_orebro", ("fhir",))):
        for source in sources:
            stages.ingest_source(holder, source)
        result = stages.pseudonymise(holder)
        expected = {
            (d["defect_class"], d["file"], d["line"], d["record_key"])
            for d in defects
            if d["holder"] == holder and d["defect_class"].startswith("identifier.")
        }
        con = duckdb.connect(str(hdp_home.raw_db(holder)), read_only=True)
        try:
            records = con.execute(
                "SELECT reason_code, source_file, line_no, record_key FROM quarantine WHERE stage = 'pseudonymise'"
            ).fetchall()
        finally:
            con.close()
        got = {tuple(r) for r in records if r[0].startswith("identifier.")}
        assert expected and got == expected
        # the resources of a quarantined Patient follow it (never written without a person)
        assert {r[0] for r in records} - {r[0] for r in got} <= {
            "person.patient_quarantined",
            "person.unresolved",
        }
        assert result["quarantined"] == len(records) == len(expected) + result["unresolved_person_rows"]
        assert result["rows_out"] == result["rows_in"] - result["quarantined"]


@pytest.mark.slow
def test_quality_gate_then_pseudonymise_accounts_for_every_row(hdp_home, kek_env):
    """Generated deliveries -> ingestion -> raw quality gate -> pseudonymisation: every raw row is written,
    quarantined for its identifier, or excluded because the gate quarantined it; never two of these."""
    from click.testing import CliRunner

    from edge import stages
    from edge.commands.generate import generate
    from pipelines.quality.gate import run_gate

    out = CliRunner().invoke(generate, ["--persons", "300", "--seed", "12", "--defect-rate", "0.03"])
    assert out.exit_code == 0, out.output
    for holder, sources in (("ndr", ("register", "prom")), ("region_orebro", ("fhir",))):
        for source in sources:
            stages.ingest_source(holder, source)
        run_gate("raw", holder_id=holder, run_id=f"it-{holder}", render_docs=False)
        result = stages.pseudonymise(holder)
        con = duckdb.connect(str(hdp_home.raw_db(holder)), read_only=True)
        try:
            gated = con.execute("SELECT count(*) FROM quarantine WHERE stage = 'quality'").fetchall()[0][0]
        finally:
            con.close()
        assert gated > 0 and sum(result["excluded_by_quality"].values()) > 0, holder
        assert result["rows_in"] == (
            result["rows_out"] + result["quarantined"] + sum(result["excluded_by_quality"].values())
        ), holder
        research = duckdb.connect(str(hdp_home.research_db(holder)), read_only=True)
        try:
            for table, written in result["tables"].items():
                assert research.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0] == written
        finally:
            research.close()
