"""Failure alerts: a log line always, and a JSON POST to ``HDP_ALERT_WEBHOOK`` when set.

The payload carries ids and counts only (dag/task/run ids, holder, source, try number,
exception class, rows in/out/quarantined, checks failed). Never an exception *message*:
a library's message can quote the value that broke it (a date, an identifier).
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

from hdp.settings import get_settings
from pipelines.monitoring.figures import TaskFigures, TaskIdentity

log = logging.getLogger(__name__)

WEBHOOK_ENV = "HDP_ALERT_WEBHOOK"
#: A webhook that hangs must not hold the worker slot; alerts are small.
WEBHOOK_TIMEOUT_S = 5.0


class AlertConfigError(ValueError):
    """HDP_ALERT_WEBHOOK is not an http(s) URL."""


@dataclass(frozen=True)
class Alert:
    event: str
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    try_number: int
    holder: str | None
    source: str | None
    error_type: str | None
    counts: Mapping[str, int | None] = field(default_factory=dict)
    quarantined_by_reason: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=dict)


def build_alert(
    ident: TaskIdentity,
    *,
    error_type: str | None,
    figures: TaskFigures | None = None,
    event: str = "hdp.task_failed",
) -> Alert:
    """Pure: the alert for a failed task run."""
    figures = figures or TaskFigures()
    return Alert(
        event=event,
        dag_id=ident.dag_id,
        task_id=ident.task_id,
        run_id=ident.run_id,
        map_index=ident.map_index,
        try_number=ident.try_number,
        holder=figures.holder or ident.dag_holder,
        source=figures.source or ident.task_source,
        error_type=error_type,
        counts={
            "rows_in": figures.rows_in,
            "rows_out": figures.rows_out,
            "rows_quarantined": figures.rows_quarantined,
            "checks_failed": figures.checks_failed,
        },
        quarantined_by_reason=dict(figures.quarantined),
    )


def webhook_url() -> str | None:
    configured = get_settings().alert_webhook
    url = configured.get_secret_value().strip() if configured is not None else ""
    if not url:
        return None
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise AlertConfigError(f"{WEBHOOK_ENV} must be an http(s) URL")
    return url


def send_alert(alert: Alert, *, url: str | None = None) -> bool:
    """Log the alert; POST it to the webhook if one is configured. True if delivered (or no
    webhook is set). A failed delivery is logged as an error, never raised: the task has
    already failed and Airflow's own state is the record of that."""
    body = alert.to_json()
    log.error("ALERT %s", body)
    try:
        target = url or webhook_url()
    except AlertConfigError as exc:
        log.error("alert not sent: %s", exc)
        return False
    if target is None:
        return True
    request = urllib.request.Request(
        target,
        data=body.encode("utf-8"),
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "hdp-alert/1"},
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:  # noqa: S310 (scheme checked)
            ok = 200 <= response.status < 300
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        # The URL may carry a token in its path: log its host only.
        log.error("alert webhook %s unreachable: %s", urlsplit(target).netloc, type(exc).__name__)
        return False
    if not ok:
        log.error("alert webhook %s answered %s", urlsplit(target).netloc, response.status)
    return ok
