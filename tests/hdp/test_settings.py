"""hdp.settings.Settings: every HDP_* variable typed, checked and described in one place."""

from __future__ import annotations

import re

import pytest
from pydantic import SecretStr

from hdp.settings import (
    ENV_PREFIX,
    REPO_ROOT,
    Settings,
    SettingsError,
    env_name,
    get_settings,
    load_settings,
)

ENV_EXAMPLE = REPO_ROOT / "deploy" / "hdp.env.example"
POSTGRES = "postgresql+psycopg://hdp:pw@db/hdp_governance"


def test_defaults_are_development_with_stores_under_the_home(tmp_path):
    s = load_settings({"HDP_HOME": str(tmp_path)})
    assert s.home == tmp_path.resolve() and s.environment == "development" and not s.is_production
    assert s.governance_url == f"sqlite:///{tmp_path.resolve() / 'governance.sqlite'}"
    assert (s.kek, s.kek_file, s.metrics_url, s.alert_webhook, s.token) == (None, None, None, None, None)
    assert (s.access_threads, s.access_max_rows, s.audit_checkpoint_every) == (2, 1_000_000, 100)


def test_values_are_typed_and_an_empty_variable_is_unset(tmp_path):
    s = load_settings(
        {
            "HDP_ACCESS_TIMEOUT_S": "2.5",
            "HDP_ACCESS_PREVIEW_FORMATS": "json, csv,",
            "HDP_ACCESS_PREVIEW_ROWS": "0",
            "HDP_AUDIT_ANCHOR_DIR": str(tmp_path / "anchors"),
            "HDP_QUALITY_MEMORY_LIMIT": "512MiB",
            "HDP_METRICS_URL": "",
            "HDP_ENV": "",
        }
    )
    assert s.access_timeout_s == 2.5 and s.access_preview_rows == 0
    assert s.access_preview_formats == frozenset({"json", "csv"})
    assert s.audit_anchor_dir == tmp_path / "anchors" and s.quality_memory_limit == "512MiB"
    assert s.metrics_url is None and s.environment == "development"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HDP_ENV", "prod"),
        ("HDP_ACCESS_THREADS", "0"),
        ("HDP_ACCESS_TIMEOUT_S", "soon"),
        ("HDP_ACCESS_MAX_ROWS", "-1"),
        ("HDP_ACCESS_WORKERS", "two"),
        ("HDP_ACCESS_PREVIEW_ROWS", "many"),
        ("HDP_AUDIT_CHECKPOINT_EVERY", "0"),
        ("HDP_QUALITY_MEMORY_LIMIT", "2GB'; DROP TABLE x; --"),
        ("HDP_PSEUDONYMISE_MEMORY_LIMIT", "lots"),
        ("HDP_OIDC_JWKS_URL", "file:///etc/passwd"),
    ],
)
def test_a_bad_value_is_a_settings_error_naming_the_variable(variable, value):
    with pytest.raises(SettingsError, match=rf"^{variable}: ") as err:
        load_settings({variable: value})
    assert repr(value) in str(err.value)  # not a secret: the value is shown, to find the typo


def test_every_bad_variable_is_named_at_once():
    with pytest.raises(SettingsError) as err:
        load_settings({"HDP_ACCESS_THREADS": "0", "HDP_ENV": "staging"})
    assert "HDP_ACCESS_THREADS: " in str(err.value) and "HDP_ENV: " in str(err.value)


def test_production_needs_a_postgres_governance_store_and_never_echoes_the_url():
    with pytest.raises(SettingsError, match="HDP_GOVERNANCE_URL: production needs a Postgres URL"):
        load_settings({"HDP_ENV": "production"})
    secret_url = "sqlite:////srv/s3cret-path/gov.sqlite"
    with pytest.raises(SettingsError) as err:
        load_settings({"HDP_ENV": "production", "HDP_GOVERNANCE_URL": secret_url})
    assert "s3cret" not in str(err.value)
    assert load_settings({"HDP_ENV": "production", "HDP_GOVERNANCE_URL": POSTGRES}).is_production


def test_secrets_stay_out_of_repr():
    s = load_settings(
        {
            "HDP_KEK": "a2V5LWtleS1rZXkta2V5LWtleS1rZXkta2V5LWtleS0=",
            "HDP_TOKEN": "researcher-token-123",
            "HDP_GOVERNANCE_URL": POSTGRES,
            "HDP_METRICS_URL": POSTGRES.replace("governance", "monitoring"),
            "HDP_ALERT_WEBHOOK": "https://hooks.example/T0/secret-path",
        }
    )
    shown = repr(s) + str(s)
    for secret in ("a2V5", "researcher-token", ":pw@", "secret-path"):
        assert secret not in shown
    assert isinstance(s.kek, SecretStr) and s.kek.get_secret_value().startswith("a2V5")
    assert s.token is not None and s.token.get_secret_value() == "researcher-token-123"


def test_constructor_values_win_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HDP_ENV", "production")
    monkeypatch.setenv("HDP_GOVERNANCE_URL", POSTGRES)
    s = Settings(home=tmp_path, environment="development", governance_url="sqlite:///x.sqlite")
    assert s.environment == "development" and s.governance_url == "sqlite:///x.sqlite"


def test_get_settings_is_cached_per_environment(hdp_home, monkeypatch):
    assert get_settings() is get_settings() is hdp_home
    monkeypatch.setenv("HDP_ACCESS_THREADS", "3")  # seen at the next call, no cache_clear needed
    assert get_settings().access_threads == 3 and get_settings() is get_settings()
    monkeypatch.delenv("HDP_ACCESS_THREADS")
    assert get_settings() is hdp_home
    get_settings.cache_clear()
    assert get_settings() == hdp_home and get_settings() is not hdp_home
    monkeypatch.setenv("HDP_ENV", "nonsense")
    with pytest.raises(SettingsError, match="HDP_ENV"):
        get_settings()


def test_every_setting_is_described_and_listed_for_deployments():
    listed = set(re.findall(r"^#?\s*(HDP_[A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    for field, info in Settings.model_fields.items():
        assert info.description and len(info.description) > 20, field
        assert env_name(field).startswith(ENV_PREFIX)
        assert env_name(field) in listed, f"{env_name(field)} is missing from {ENV_EXAMPLE.name}"
    assert env_name("environment") == "HDP_ENV" and env_name("home") == "HDP_HOME"
