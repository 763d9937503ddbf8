"""docker-compose.yml: valid (``docker-compose config``), complete, and free of secrets."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from hdp.settings import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / "deploy" / "hdp.env.example"
AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|_KEY$|KEK", re.I)


def _example_env(tmp_path) -> dict[str, str]:
    env = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    kek, pw = tmp_path / "kek", tmp_path / "pw.json"
    kek.write_bytes(b"k"), pw.write_text("{}")
    # Fill the placeholders with throw-away values, as an operator would with real ones.
    env = {k: ("dummy-" + k.lower() if v.startswith("<") else v) for k, v in env.items()}
    env.update(HDP_KEK_FILE_HOST=str(kek), AIRFLOW_UI_PASSWORDS_FILE_HOST=str(pw))
    return env


def _compose(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed (CI installs Debian's docker-compose)")
        pytest.skip("docker-compose not installed: apt-get install docker-compose")
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [exe, "-f", str(COMPOSE), "--project-directory", str(REPO_ROOT), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_config_is_valid_and_has_the_production_shape(tmp_path):
    env = _example_env(tmp_path)
    result = _compose(["config"], env)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) >= {"postgres", "redis", "airflow-init", "access-api", *AIRFLOW_SERVICES}
    for name in AIRFLOW_SERVICES:
        e = services[name]["environment"]
        assert e["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert e["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://airflow:dummy-")
        assert e["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert e["AIRFLOW__API_AUTH__JWT_SECRET"] == "dummy-airflow_jwt_secret"  # one key everywhere
        assert e["HDP_METRICS_URL"].startswith("postgresql+psycopg://") and e["HDP_ENV"] == "production"
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        # The workers' Celery config (library preload); the scheduler builds the same Celery app.
        assert e["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] == "hdp_celery_config.CELERY_CONFIG"
        assert (REPO_ROOT / "deploy" / "celery" / "hdp_celery_config.py").is_file()
        assert e["PYTHONPATH"] == "/opt/hdp/deploy/celery"
    worker = services["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker  # scalable with --scale
    assert {s["source"] for s in worker["secrets"]} >= {"hdp_kek"}
    assert worker["environment"]["HDP_KEK_FILE"] == "/run/secrets/hdp_kek"
    access = services["access-api"]
    # the access layer's audit key and web session key are wrapped under the KEK (privacy.audit_key,
    # access.web.sessions): without it every audited request and every sign-in would fail
    assert {s["source"] for s in access["secrets"]} == {"hdp_kek"}
    assert access["environment"]["HDP_KEK_FILE"] == "/run/secrets/hdp_kek"
    assert not any(k.startswith("AIRFLOW__") for k in access["environment"])


def test_compose_refuses_to_start_without_secrets(tmp_path):
    env = _example_env(tmp_path)
    del env["AIRFLOW_JWT_SECRET"]
    result = _compose(["config", "-q"], env)
    assert result.returncode != 0 and "AIRFLOW_JWT_SECRET" in result.stderr


def _environment_values(doc) -> list[tuple[str, str]]:
    out = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key == "environment" and isinstance(value, dict):
                out += [(k, str(v)) for k, v in value.items()]
            else:
                out += _environment_values(value)
    elif isinstance(doc, list):
        for item in doc:
            out += _environment_values(item)
    return out


def test_no_secret_is_written_in_the_compose_file_or_the_example():
    doc = yaml.safe_load(COMPOSE.read_text())
    for name, value in _environment_values(doc):
        if SECRET_NAME.search(name) or "://" in value and "@" in value:
            # a secret may only arrive by reference: a required variable or a secrets file
            assert re.search(r"\$\{[A-Z_]+:\?", value) or value.startswith("/run/secrets/"), (name, value)
    for line in ENV_EXAMPLE.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#") and SECRET_NAME.search(name) and not name.endswith("_HOST"):
            assert value.startswith("<"), f"{name} in the example env must be a placeholder"
