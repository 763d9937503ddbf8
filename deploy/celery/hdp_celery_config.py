"""Celery configuration for the platform's Airflow workers: Airflow's defaults, plus a preload
of the libraries every pipeline task imports.

Airflow 3 runs each task in a process forked from the worker (Celery's prefork pool child,
then the task supervisor's fork), so a library the worker has already imported costs a task
nothing. Without this, every quality-gate task imports Great Expectations afresh: about 5 s
of CPU on an idle 2-core machine and 15-25 s on a loaded one, half of all task time in the
integration test (tests/ops/test_celery_integration.py). Only third-party libraries are
preloaded, never the platform's own modules, so a worker always runs the DAG code of the
task it was given; none of them starts threads or opens files at import, so forking after
the import is safe (the integration test runs the whole pipeline this way).

Wiring (docker-compose.yml and the integration test):
``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=hdp_celery_config.CELERY_CONFIG`` with this directory
on ``PYTHONPATH``. The scheduler imports this module too (the CeleryExecutor builds the same
Celery app) but never fires ``worker_init``, so it preloads nothing.
"""

from __future__ import annotations

import importlib
import logging
import os
import time

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_init

log = logging.getLogger(__name__)

#: Imported once in the worker's main process, before the pool forks.
PRELOAD = ("pyarrow", "duckdb", "pandas", "great_expectations")

CELERY_CONFIG = DEFAULT_CELERY_CONFIG


@worker_init.connect
def preload_task_libraries(**_: object) -> None:
    """Import ``PRELOAD`` in the worker's main process (Celery's ``worker_init`` signal)."""
    # Great Expectations reads this at import; the compose file and the image set it too.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # Its import logs one INFO line per decorated function (hundreds): noise in the worker log.
    logging.getLogger("great_expectations._docs_decorators").setLevel(logging.WARNING)
    started = time.perf_counter()
    for name in PRELOAD:
        importlib.import_module(name)
    log.info("preloaded %s in %.1f s", ", ".join(PRELOAD), time.perf_counter() - started)
