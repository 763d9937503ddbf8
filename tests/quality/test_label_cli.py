"""Quality label for the manifest, approval summary, and the ``hdp quality`` commands."""

from __future__ import annotations

import json

from click.testing import CliRunner

from edge.commands.quality import quality
from pipelines.quality.gate import run_gate
from pipelines.quality.label import approval_summary, quality_label


def test_label_is_json_serialisable_deterministic_and_value_free(zones):
    label = quality_label(zones["release_dir"])
    assert json.loads(json.dumps(label)) == label
    assert quality_label(zones["release_dir"]) == label
    run_gate("release", release_dir=zones["release_dir"], run_id="lbl", render_docs=False)
    assert sorted(p.name for p in zones["release_dir"].iterdir()) == ["release.duckdb"]  # nothing left behind
    assert label["release_id"] == "rel-test"
    assert label["passed"] is False  # the region's HbA1c unit defect blocks
    assert "fhir.observation.hba1c.unit" in {f["id"] for f in label["failed"]}
    assert "fhir.condition.code.known" in {w["id"] for w in label["warned"]}
    hba1c = label["variables"]["register_visit.hba1c_mmol_mol"]
    assert hba1c["rows"] == 400 and hba1c["completeness"] == 1.0
    assert hba1c["plausibility_pass_rate"] == 0.995  # 2 of 400 fail range/unit
    assert "register.hba1c_mmol_mol.range" in hba1c["checks"]
    cov = {(c["table"], c["holder"]) for c in label["coverage"]}
    assert ("register_visit", "ndr") in cov and ("encounter", "region_uppsala") in cov
    periods = [c["period"] for c in label["coverage"] if c["table"] == "register_visit"]
    assert periods == sorted(periods) and "2015" in periods
    text = json.dumps(label)
    assert "913.37" not in text and "19121212" not in text


def test_label_on_a_staging_dir_names_the_release(zones):
    staging = zones["release_dir"].parent / ".staging-rel-9"
    zones["release_dir"].rename(staging)
    assert quality_label(staging)["release_id"] == "rel-9"
    assert run_gate("release", release_dir=staging, run_id="s", render_docs=False).scope == "rel-9"


def test_approval_summary_uses_the_latest_research_run(zones):
    run_gate("research", holder_id="ndr", run_id="old", render_docs=False)
    run_gate("research", holder_id="ndr", run_id="new", render_docs=False)
    run_gate("research", holder_id="region_uppsala", run_id="new", render_docs=False)
    summary = approval_summary(["ndr", "region_uppsala", "region_skane"])
    assert summary["ndr"]["run_id"] == "new" and summary["ndr"]["passed"] is True
    assert summary["region_uppsala"]["passed"] is False
    assert "fhir.observation.hba1c.unit" in summary["region_uppsala"]["failed"]
    assert summary["region_skane"] is None
    assert json.dumps(summary)


def test_cli_checks_lists_the_library(hdp_home):
    out = CliRunner().invoke(quality, ["checks", "--zone", "raw"])
    assert out.exit_code == 0, out.output
    assert "register.hba1c_mmol_mol.range" in out.output and "quarantine" in out.output
    assert "prom.person_id.format" not in out.output  # research/release only


def test_cli_history_shows_drift_and_docs_prints_the_path(zones):
    import duckdb

    s = zones["settings"]
    run_gate("raw", holder_id="ndr", run_id="d1")
    with duckdb.connect(str(s.raw_db("ndr"))) as con:
        con.execute("UPDATE register_visit SET hba1c_mmol_mol = 999 WHERE _line_no BETWEEN 20 AND 29")
    run_gate("raw", holder_id="ndr", run_id="d2", render_docs=False)
    out = CliRunner().invoke(
        quality, ["history", "--check", "register.hba1c_mmol_mol.range", "--holder", "ndr"]
    )
    assert out.exit_code == 0, out.output
    lines = [ln for ln in out.output.splitlines() if "register.hba1c_mmol_mol.range" in ln]
    assert len(lines) == 2
    assert "2/400" in lines[0] and "12/400" in lines[1] and "+2.50pp" in lines[1]
    assert "999" not in out.output.replace("12/400", "")
    docs = CliRunner().invoke(quality, ["docs", "d1"])
    assert docs.exit_code == 0 and docs.output.strip().endswith("quality/docs/d1/index.html")
    missing = CliRunner().invoke(quality, ["docs", "never"])
    assert missing.exit_code != 0 and "no Data Docs" in missing.output


def test_cli_gate_exits_nonzero_when_blocked(zones):
    ok = CliRunner().invoke(quality, ["gate", "raw", "--holder", "ndr", "--run-id", "c1"])
    assert ok.exit_code == 0, ok.output
    blocked = CliRunner().invoke(quality, ["gate", "raw", "--holder", "region_uppsala", "--run-id", "c1"])
    assert (
        blocked.exit_code == 1
        and "BLOCKED" in blocked.output
        and "fhir.observation.hba1c.unit" in blocked.output
    )
