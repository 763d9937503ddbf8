"""The official SQL on FHIR v2 suite (copy in tests/fixtures/sql-on-fhir-v2, see SOURCE.md)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from edge.commands.fhir import fhir
from pipelines.fhir.conformance import report, run_suite, summary

SUITE = Path(__file__).resolve().parents[1] / "fixtures" / "sql-on-fhir-v2" / "tests"


def test_every_test_of_the_suite_passes():
    outcomes = run_suite(SUITE)
    failed = [(o.file, o.name, o.error) for o in outcomes if not o.passed]
    assert failed == []
    s = summary(outcomes)
    assert s == {"tests": 134, "passed": 134, "shareable": 123, "shareable_passed": 123}


def test_report_has_the_suite_format():
    rep = report(run_suite(SUITE))
    assert len(rep) == 22
    for file, body in rep.items():
        assert file.endswith(".json") and set(body) == {"tests"} and body["tests"]
        for t in body["tests"]:
            assert set(t) == {"name", "result"} and isinstance(t["result"]["passed"], bool)


def test_cli_writes_report(tmp_path):
    out = tmp_path / "report.json"
    r = CliRunner().invoke(fhir, ["conformance", str(SUITE), "--report", str(out)])
    assert r.exit_code == 0, r.output
    assert "134/134" in r.output
    assert json.loads(out.read_text())["fn_join.json"]["tests"][0]["result"] == {"passed": True}


def test_a_failing_test_is_named_with_its_reason(tmp_path):
    broken = json.loads((SUITE / "fn_first.json").read_text())
    broken["tests"][0]["expect"] = [{"nope": 1}]
    (tmp_path / "fn_first.json").write_text(json.dumps(broken))
    rep = report(run_suite(tmp_path))
    first = rep["fn_first.json"]["tests"][0]["result"]
    assert first["passed"] is False and "rows differ" in first["error"]


def test_cli_validate_reports_paths_not_values(tmp_path):
    p = tmp_path / "Patient.ndjson"
    p.write_text(
        '{"resourceType":"Patient","id":"a","gender":"bogus"}\n{"resourceType":"Patient","id":"b"}\n'
    )
    r = CliRunner().invoke(fhir, ["validate", str(p)])
    assert r.exit_code == 1
    assert "line 1: fhir.invalid: Patient.gender: not a permitted code" in r.output
    assert "bogus" not in r.output


def test_cli_validate_reads_a_utf16_file_with_one_file_level_notice(tmp_path):
    p = tmp_path / "Patient.ndjson"
    p.write_bytes('{"resourceType":"Patient","id":"b","gender":"female"}\n'.encode("utf-16"))
    r = CliRunner().invoke(fhir, ["validate", str(p)])
    assert r.exit_code == 0, r.output
    notices = [line for line in r.output.splitlines() if line.startswith("file: ")]
    assert len(notices) == 1 and "encoding.converted_from_utf16" in notices[0]
    assert "valid=1" in r.output and "json.malformed" not in r.output
