"""deploy/celery/hdp_celery_config.py: Airflow's Celery defaults plus the workers' library preload.

The module imports Airflow, which configures itself once per process from ``AIRFLOW_HOME``;
importing it here would fix that configuration for every later test in this pytest process
(e.g. ``test_mon_dag_run`` points Airflow at its own home). So each check runs in a child
interpreter, the way a worker imports it: from ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from hdp.settings import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "deploy" / "celery"

PROBE = """
import json, logging, sys
import hdp_celery_config as m
logged = []
handler = logging.Handler()
handler.emit = lambda record: logged.append(record.getMessage())
logging.getLogger("hdp_celery_config").addHandler(handler)
logging.getLogger("hdp_celery_config").setLevel(logging.INFO)
from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_init
m.PRELOAD = ("wave", "json")
before = "wave" in sys.modules
for receiver in worker_init._live_receivers(None):
    receiver(sender=None)
print(json.dumps({
    "is_default": m.CELERY_CONFIG is DEFAULT_CELERY_CONFIG,
    "acks_late": m.CELERY_CONFIG["task_acks_late"],
    "preload_is_receiver": m.preload_task_libraries in worker_init._live_receivers(None),
    "imported_by_signal": not before and "wave" in sys.modules,
    "logged": logged,
    "shipped_preload": list(__import__("importlib").reload(m).PRELOAD),
}))
"""


def test_config_is_airflows_default_and_preloads_on_worker_init(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": str(CONFIG_DIR),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "GX_ANALYTICS_ENABLED": "false",
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["is_default"] and found["acks_late"] is True  # a killed worker's task is not lost
    assert found["preload_is_receiver"] and found["imported_by_signal"]
    assert [line.rsplit(" in ", 1)[0] for line in found["logged"]] == ["preloaded wave, json"]
    # Only third-party libraries: a worker must run the DAG code of the task it is given.
    assert "great_expectations" in found["shipped_preload"]
    assert not {m.split(".")[0] for m in found["shipped_preload"]} & {
        "hdp",
        "pipelines",
        "governance",
        "dags",
    }
