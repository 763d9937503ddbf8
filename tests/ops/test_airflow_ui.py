"""``hdp airflow-ui`` / ``make airflow``: Airflow's UI with the venv's bin on PATH, the platform's
DAGs and the data home's own AIRFLOW_HOME (a federation node's with --node)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from edge.commands.airflow_ui import airflow_ui, venv_bin
from edge.federation_local import free_port
from hdp.settings import REPO_ROOT


def _env(*args: str) -> dict[str, str]:
    result = CliRunner().invoke(airflow_ui, [*args, "--print-env"])
    assert result.exit_code == 0, result.output
    *assignments, command = result.output.strip().splitlines()
    env = dict(line.split("=", 1) for line in assignments)
    env["__command__"] = command
    return env


def _executable(command: str) -> None:
    program, *args = command.split()
    assert os.access(program, os.X_OK) and args == ["standalone"]


def test_single_home_gets_its_airflow_home_the_dags_and_the_venv_on_path(hdp_home, monkeypatch):
    monkeypatch.delenv("AIRFLOW_HOME", raising=False)
    env = _env("--port", "8085")
    assert env["AIRFLOW_HOME"] == str(hdp_home.home / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO_ROOT / "dags")
    assert (Path(env["AIRFLOW__CORE__DAGS_FOLDER"]) / "hdp_pipeline.py").exists()
    assert env["PATH"].split(os.pathsep)[0] == str(venv_bin())
    # what `airflow standalone` spawns by name must be found on that PATH
    assert os.access(venv_bin() / "airflow", os.X_OK)
    assert env["AIRFLOW__API__PORT"] == "8085" and env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    _executable(env["__command__"])


def test_a_federation_node_gets_its_own_airflow_and_environment(hdp_home, monkeypatch):
    for holder in ("ndr", "region_skane"):
        (hdp_home.home / "nodes" / holder).mkdir(parents=True)
    env = _env("--node", "ndr")
    node = hdp_home.home / "nodes" / "ndr"
    assert env["AIRFLOW_HOME"] == str(node / "airflow") and env["HDP_HOME"] == str(node)
    assert env["HDP_FEDERATION_ROLE"] == "node" and env["HDP_NODE_HOLDER"] == "ndr"
    assert env["HDP_KEK_DIR"] == str(hdp_home.kek_dir / "federation" / "ndr")
    assert env["PATH"].split(os.pathsep)[0] == str(venv_bin())
    _executable(env["__command__"])

    # no node chosen where the data home is a federation: say which nodes there are
    refused = CliRunner().invoke(airflow_ui, ["--print-env"])
    assert refused.exit_code != 0 and "--node" in refused.output and "region_skane" in refused.output
    unknown = CliRunner().invoke(airflow_ui, ["--node", "nowhere", "--print-env"])
    assert unknown.exit_code != 0 and "ndr, region_skane" in unknown.output


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_ui_really_starts_and_answers_on_loopback(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "HDP_"))}
    env |= {"HDP_HOME": str(tmp_path / "home"), "HDP_KEK_DIR": str(tmp_path / "kek")}
    log = open(tmp_path / "airflow.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [str(venv_bin() / "hdp"), "airflow-ui", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline, answered = time.monotonic() + 120, None
        while time.monotonic() < deadline and answered is None:
            assert process.poll() is None, (tmp_path / "airflow.log").read_text()[-3000:]
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2)
                if response.status_code == 200:
                    answered = response.json()
            except httpx.HTTPError:
                time.sleep(1)
        assert answered is not None, (tmp_path / "airflow.log").read_text()[-3000:]
        assert answered["metadatabase"]["status"] == "healthy"
        assert (tmp_path / "home" / "airflow" / "airflow.db").exists()
    finally:
        _stop_group(process)
        log.close()


def _stop_group(process: subprocess.Popen) -> None:
    """Stop standalone and every component it started (one process group), leaving none behind."""
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
