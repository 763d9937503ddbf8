from __future__ import annotations

import json
import logging

import pytest

from pipelines.monitoring import alerts
from pipelines.monitoring.figures import TaskIdentity, figures_from_counts

from .webhook import webhook_server

IDENT = TaskIdentity("ingest__region_skane", "scheduled__2026-11-21", "ingest_fhir", -1, 3)


def test_payload_has_ids_and_counts_only():
    alert = alerts.build_alert(
        IDENT,
        error_type="QualityGateFailed",
        figures=figures_from_counts(
            {"rows_in": 50, "rows_out": 40, "quarantined": {"fhir.invalid": 10}, "checks_failed": ["a", "b"]}
        ),
    )
    payload = json.loads(alert.to_json())
    assert payload == {
        "event": "hdp.task_failed",
        "dag_id": "ingest__region_skane",
        "task_id": "ingest_fhir",
        "run_id": "scheduled__2026-11-21",
        "map_index": -1,
        "try_number": 3,
        "holder": "region_skane",
        "source": "fhir",
        "error_type": "QualityGateFailed",
        "counts": {"rows_in": 50, "rows_out": 40, "rows_quarantined": 10, "checks_failed": 2},
        "quarantined_by_reason": {"fhir.invalid": 10},
    }


def test_alert_is_logged_and_posted(monkeypatch, caplog):
    with webhook_server() as (url, received):
        monkeypatch.setenv("HDP_ALERT_WEBHOOK", url)
        with caplog.at_level(logging.ERROR, logger="pipelines.monitoring.alerts"):
            assert alerts.send_alert(alerts.build_alert(IDENT, error_type="OSError"))
    assert received[0]["task_id"] == "ingest_fhir" and received[0]["error_type"] == "OSError"
    assert any("ALERT" in r.message and "ingest__region_skane" in r.message for r in caplog.records)


def test_no_webhook_means_log_only(monkeypatch):
    monkeypatch.delenv("HDP_ALERT_WEBHOOK", raising=False)
    assert alerts.send_alert(alerts.build_alert(IDENT, error_type=None))


def test_unreachable_or_failing_webhook_is_logged_not_raised(monkeypatch, caplog):
    with webhook_server(status=500) as (url, received):
        assert not alerts.send_alert(alerts.build_alert(IDENT, error_type="X"), url=url)
    assert len(received) == 1
    with caplog.at_level(logging.ERROR, logger="pipelines.monitoring.alerts"):
        assert not alerts.send_alert(alerts.build_alert(IDENT, error_type="X"), url=url)  # server gone
    # the URL's path (which may hold a token) never reaches the log
    assert all("secret-token" not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("bad", ["file:///etc/passwd", "ftp://host/x", "not a url"])
def test_webhook_must_be_http(monkeypatch, bad):
    monkeypatch.setenv("HDP_ALERT_WEBHOOK", bad)
    with pytest.raises(alerts.AlertConfigError):
        alerts.webhook_url()
    assert not alerts.send_alert(alerts.build_alert(IDENT, error_type="X"))
