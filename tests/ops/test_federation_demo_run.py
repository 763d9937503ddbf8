"""One real, small ``hdp federation-demo`` run (what ``make demo`` runs) with its output captured as
CI sees it (not a terminal): the story fits in 60 lines, shows its tables, leaks no log line and no
token, and the commands it prints work."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

BIN = Path(sys.executable).parent
LOG_LINE = re.compile(
    r"\[(debug|info|warning|error)\s*\]|^(DEBUG|INFO|WARNING|ERROR)[: ]|great_expectations|airflow\."
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HDP_", "AIRFLOW_"))}
    env |= {"HDP_HOME": str(root / "var"), "HDP_KEK_DIR": str(root / "kek")}
    done = subprocess.run(
        [
            str(BIN / "hdp"),
            "federation-demo",
            "--persons",
            "300",
            "--summary-json",
            str(root / "summary.json"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1400,
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    return root, env, done, json.loads((root / "summary.json").read_text())


def test_the_story_fits_in_60_lines_with_its_tables_and_no_log_line(demo):
    _, _, done, _ = demo
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) <= 60, "\n".join(lines)
    steps = [line for line in lines if line.startswith("✓ ")]
    assert len(steps) >= 13 and not any(line.startswith("✗") for line in lines)
    assert all(re.search(r"\(\d+\.\d s\)$", step) for step in steps)
    for title in ("Each node's pipelines", "Approvals per steward", "Releases and permits", "Next steps"):
        assert any(line.startswith(title) for line in lines), title
    assert not [line for line in lines if LOG_LINE.search(line)]
    assert done.stderr.strip() == ""


def test_the_tables_carry_each_node_s_figures_approvals_and_the_release(demo):
    _, _, done, summary = demo
    rows = {(r["holder"], r["stage"]): r for r in summary["pipelines"]}
    assert len(rows) == 8 and all(r["gate"].startswith("passed") for r in rows.values())
    assert all(r["rows_in"] and r["rows_out"] for r in rows.values())  # FHIR ingest too (resources)
    # the injected defects show up with their reason codes, never as "unspecified"
    assert sum(r["quarantined"] for r in rows.values()) > 0
    assert all("unspecified" not in r["reasons"] for r in rows.values())
    assert set(summary["approvals"]) == {
        "stina.ndr",
        "ulf.uppsala",
        "olga.orebro",
        "oskar.orebro",
        "sara.skane",
    }
    (release, permit) = summary["releases"]
    assert release["release"] == summary["release_id"] and int(release["persons"].replace(" ", "")) > 0
    assert release["release"] in done.stdout and "oskar.orebro" in done.stdout


def test_no_token_on_the_console_credentials_owner_only(demo):
    root, _, done, summary = demo
    assert "hdp_" not in done.stdout + done.stderr and "researcher_token" not in summary
    credentials = Path(summary["credentials"])
    assert credentials.parent == root / "var" and stat.S_IMODE(credentials.stat().st_mode) == 0o600
    users = {u["name"]: u for u in json.loads(credentials.read_text())["users"]}
    assert users["anna.forskare"]["token"].startswith("hdp_") and str(credentials) in done.stdout


def test_logs_go_to_the_data_home_and_task_logs_have_content(demo):
    root, _, done, summary = demo
    logs = Path(summary["logs"])
    assert logs == root / "var" / "logs" and str(logs) in done.stdout
    ndr = (logs / "ndr.log").read_text()
    assert "[DAG TEST]" in ndr and "great_expectations" in ndr and "hdp_" not in ndr
    task_logs = list((root / "var" / "nodes" / "ndr" / "airflow" / "logs").rglob("attempt=1.log"))
    assert task_logs and all(p.stat().st_size > 0 for p in task_logs)


def test_the_printed_commands_work(demo):
    root, env, _, summary = demo
    clean = {k: v for k, v in env.items() if not k.startswith("HDP_")}
    runs = subprocess.run(
        summary["next"]["node status"], shell=True, env=clean, capture_output=True, text=True
    )
    assert runs.returncode == 0 and "ingest__ndr" in runs.stdout and "pseudonymise__ndr" in runs.stdout
    airflow = subprocess.run(
        summary["next"]["airflow"] + " --print-env", shell=True, env=clean, capture_output=True, text=True
    )
    assert airflow.returncode == 0, airflow.stderr
    assert f"AIRFLOW_HOME={root / 'var' / 'nodes' / 'ndr' / 'airflow'}" in airflow.stdout.splitlines()
