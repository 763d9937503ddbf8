"""deploy/celery/hdp_celery_config.py: Airflow's Celery defaults plus the workers' library preload."""

from __future__ import annotations

import importlib
import logging
import sys

import pytest

from hdp.settings import REPO_ROOT


@pytest.fixture
def config_module(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "deploy" / "celery"))
    sys.modules.pop("hdp_celery_config", None)
    module = importlib.import_module("hdp_celery_config")
    yield module
    sys.modules.pop("hdp_celery_config", None)


def test_config_is_airflows_default_and_preloads_on_worker_init(config_module):
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
    from celery.signals import worker_init

    assert config_module.CELERY_CONFIG is DEFAULT_CELERY_CONFIG
    assert config_module.CELERY_CONFIG["task_acks_late"] is True  # a killed worker's task is not lost
    assert config_module.preload_task_libraries in worker_init._live_receivers(None)
    # Only third-party libraries: a worker must run the DAG code of the task it is given.
    assert not {m.split(".")[0] for m in config_module.PRELOAD} & {"hdp", "pipelines", "governance", "dags"}


def test_preload_imports_each_library_and_logs_only_names(config_module, monkeypatch, caplog):
    monkeypatch.setattr(config_module, "PRELOAD", ("colorsys", "json"))
    sys.modules.pop("colorsys", None)
    with caplog.at_level(logging.INFO, logger="hdp_celery_config"):
        config_module.preload_task_libraries(sender=None)
    assert "colorsys" in sys.modules
    assert "preloaded colorsys, json in" in caplog.text
