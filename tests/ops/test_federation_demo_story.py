"""The federated demo's closing: tables from what the nodes report, next steps that can be pasted,
no token on the console, credentials owner-only. Pure parts, fast (the real run: test_federation_demo_run)."""

from __future__ import annotations

import io
import os
import shlex
import stat
from pathlib import Path

from rich.console import Console

from edge.federation_demo import (
    Story,
    gate_verdict,
    next_steps,
    pipeline_rows,
    print_closing,
    reasons_text,
    write_credentials,
)
from edge.federation_local import LocalFederation


def _task(task_id, state="success", rows_in=None, rows_out=None, checks=None, checks_failed=None):
    return {
        "task_id": task_id,
        "state": state,
        "rows_in": rows_in,
        "rows_out": rows_out,
        "checks": checks or {},
        "checks_failed": checks_failed,
    }


RUNS = [
    {
        "dag_id": "pseudonymise__ndr",
        "state": "failed",
        "tasks": [
            _task("pseudonymise", rows_in=990, rows_out=983),
            _task("validate_research", "failed", checks={"pass": 40, "fail": 2}, checks_failed=2),
        ],
        "quarantined_by_reason": [
            {"task_id": "pseudonymise", "holder": "ndr", "reason_code": "person.unresolved", "rows": 7}
        ],
        "files_converted": [],
    },
    {
        "dag_id": "ingest__ndr",
        "state": "success",
        "tasks": [
            _task("ingest_register", rows_in=800, rows_out=790),
            _task("ingest_prom", rows_in=200, rows_out=200),
            _task("validate_raw", checks={"pass": 50, "warn": 2}),
        ],
        "quarantined_by_reason": [
            {"task_id": "ingest_register", "holder": "ndr", "reason_code": "csv.bad_date", "rows": 6},
            {"task_id": "ingest_register", "holder": "ndr", "reason_code": "csv.duplicate", "rows": 4},
            {"task_id": "validate_raw", "holder": "ndr", "reason_code": "register.bmi.range", "rows": 2},
        ],
        "files_converted": [{"task_id": "ingest_prom", "holder": "ndr", "notice_code": "x", "files": 1}],
    },
]


def test_pipeline_rows_per_stage_sum_the_stage_tasks_and_name_reasons_and_the_gate():
    ingest, pseudonymise = pipeline_rows("ndr", RUNS)
    assert (ingest["stage"], ingest["rows_in"], ingest["rows_out"]) == ("ingest", 1000, 990)
    assert ingest["reasons"] == {"csv.bad_date": 6, "csv.duplicate": 4, "register.bmi.range": 2}
    assert ingest["quarantined"] == 12 and ingest["files_converted"] == 1
    assert ingest["gate"] == "passed, 2 warned"
    assert pseudonymise["gate"] == "BLOCKED, 2 failed" and pseudonymise["state"] == "failed"
    assert pipeline_rows("region_skane", RUNS)[0] == {
        "holder": "region_skane",
        "stage": "ingest",
        "state": "not run",
    }
    assert gate_verdict(None) == "-"
    assert reasons_text({"a": 1, "b": 5, "c": 3}) == "5 b, 3 c +1 more"


def _summary(tmp_path: Path) -> tuple[LocalFederation, dict]:
    fed = LocalFederation(tmp_path / "var", kek_root=tmp_path / "kek" / "federation", port=8700)
    summary = {
        "hub": fed.hub_url,
        "logs": str(fed.logs_dir),
        "credentials": str(tmp_path / "var" / "demo-credentials.json"),
        "applications": {"record": 1, "aggregate": 2},
        "pipelines": pipeline_rows("ndr", RUNS),
        "approvals": {"stina.ndr": {"holder": "ndr", "applications": ["1 (record)", "2 (aggregate)"]}},
        "releases": [
            {"release": "rel-00001", "tier": "record", "holders": ["ndr"], "persons": "972", "rows": "14 617"}
        ],
    }
    summary["next"] = next_steps(fed, summary, tmp_path / "kek" / "federation")
    return fed, summary


def test_closing_prints_the_tables_and_next_steps_without_a_token(tmp_path):
    _, summary = _summary(tmp_path)
    out = io.StringIO()
    print_closing(Console(file=out, width=160, no_color=True), summary)
    text = out.getvalue()
    for title in ("Each node's pipelines", "Approvals per steward", "Releases and permits", "Next steps"):
        assert title in text
    assert "12: 6 csv.bad_date, 4 csv.duplicate +1 more" in text and "BLOCKED, 2 failed" in text
    assert "demo-credentials.json" in text and "logs/<party>.log" in text and "hdp_" not in text
    assert len(text.splitlines()) <= 30


def test_next_step_commands_are_well_formed_and_name_existing_programs(tmp_path):
    fed, summary = _summary(tmp_path)
    for what in ("hub", "node", "node status", "airflow", "demo"):
        argv = shlex.split(summary["next"][what])
        if argv[0] == "env":
            assignments = [a for a in argv[1:] if "=" in a and not a.startswith("/")]
            assert all(a.split("=", 1)[0].isidentifier() for a in assignments), what
            argv = argv[1 + len(assignments) :]
        assert os.access(argv[0], os.X_OK), (what, argv[0])
    node = dict(a.split("=", 1) for a in shlex.split(summary["next"]["node"])[1:] if "=" in a)
    assert node["HDP_HOME"] == str(fed.node_home("ndr")) and node["HDP_NODE_HOLDER"] == "ndr"
    assert node["HDP_KEK_DIR"] == str(tmp_path / "kek" / "federation" / "ndr")
    curl = shlex.split(summary["next"]["federated query"])
    assert curl[0] == "curl" and curl[-1] == "http://127.0.0.1:8700/federation/v1/permits/2/query"


def test_credentials_are_owner_only(tmp_path):
    path = write_credentials(tmp_path / "c.json", "http://h", [{"name": "a", "token": "hdp_x"}])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and "hdp_x" in path.read_text()


def test_story_prints_one_line_per_step_with_its_seconds_and_a_cross_on_failure():
    out = io.StringIO()
    story = Story(Console(file=out, width=120, no_color=True))
    assert story.step("did it", lambda: 41 + 1, lambda r: f": {r}") == 42
    try:
        story.step("broke", lambda: 1 / 0)
    except ZeroDivisionError:
        pass
    first, second = out.getvalue().splitlines()
    assert first.startswith("✓ did it: 42 (") and first.endswith(" s)")
    assert second.startswith("✗ broke (")


def test_on_a_terminal_a_spinner_runs_while_the_step_does():
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=True)
    shown = []
    spinner = console.status

    def status(text, **kw):
        shown.append(text)
        return spinner(text, **kw)

    console.status = status  # type: ignore[method-assign]
    Story(console).step("working", lambda: 1)
    assert shown == ["working"] and "✓" in out.getvalue() and "working" in out.getvalue()
    plain = Console(file=io.StringIO(), width=100)  # not a terminal (CI logs): no spinner
    plain.status = status  # type: ignore[method-assign]
    Story(plain).step("plain", lambda: 1)
    assert shown == ["working"]
