"""``hdp run`` (``dag.test()`` in this process) leaves each task's log where the Airflow UI reads
it: ``$AIRFLOW_HOME/logs/dag_id=…/run_id=…/task_id=…/attempt=N.log``, as JSON lines, with the
stage's own log lines and, for a failed task, its traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

DAG = """
import logging
from datetime import datetime

from airflow.sdk import dag, task

@task(retries=0)
def say():
    logging.getLogger("pipelines.example").info("stage says hello: 42 rows")
    return {"rows": 42}

@task(retries=0)
def fail(value):
    raise ValueError("broken on purpose")

@dag(dag_id="logs_example", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def logs_example():
    fail(say())

logs_example()
"""

RUN = """
from pathlib import Path
from edge import orchestrate
orchestrate.migrate_metadata_db()
(outcome,) = orchestrate.run_dags(["logs_example"], raise_on_failure=False, dag_folder=Path({folder!r}))
print("STATE", outcome.state, ",".join(outcome.failed_tasks))
"""


def test_a_dag_run_leaves_readable_task_logs_for_the_airflow_ui(tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "logs_example.py").write_text(textwrap.dedent(DAG))
    airflow_home = tmp_path / "airflow"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "HDP_"))}
    env |= {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "HDP_HOME": str(tmp_path / "home"),
        "HDP_KEK_DIR": str(tmp_path / "kek"),
    }
    done = subprocess.run(
        [sys.executable, "-c", RUN.format(folder=str(dags))],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "STATE failed fail" in done.stdout

    logs = airflow_home / "logs" / "dag_id=logs_example"
    (say_log,) = logs.glob("run_id=*/task_id=say/attempt=1.log")
    (fail_log,) = logs.glob("run_id=*/task_id=fail/attempt=1.log")
    said = [json.loads(line) for line in say_log.read_text().splitlines()]
    assert {"timestamp", "level", "event"} <= set(said[0])
    assert any(e["event"] == "stage says hello: 42 rows" and e["logger"] == "pipelines.example" for e in said)
    assert any("Done. Returned value was" in e["event"] for e in said)
    failed = "\n".join(json.loads(line)["event"] for line in fail_log.read_text().splitlines())
    assert "ValueError" in failed and "broken on purpose" in failed and "Traceback" in failed
    # Airflow's own log reader (what the UI's log endpoint uses) parses every line as structured
    from airflow.utils.log.file_task_handler import StructuredLogMessage

    for line in fail_log.read_text().splitlines():
        assert StructuredLogMessage.model_validate_json(line).event
