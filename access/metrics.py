"""Metrics of the web applications (access layer, hub) for Prometheus, with bounded labels.

* :class:`RequestMetrics` — ASGI middleware, one for every FastAPI app of the platform: the
  access layer mounts it in ``create_app`` and the hub, built on that app, has it too (the
  node agent serves no web app: it polls the hub). It
  counts requests by route *template* (``/releases/{release_id}/query``, never the raw path,
  which can hold a personnummer), method and status class, times them per route template, and
  counts refusals by reason code.
* :class:`GovernanceCollector` — at every scrape: overdue holder reviews and permits by status
  per holder, read from the governance store (``governance.reporting``).
* :class:`AccessMetrics` — one per app, on a dedicated ``CollectorRegistry`` (never the
  process-global one, so apps and tests do not share series); :meth:`AccessMetrics.exposition`
  is the body of ``GET /metrics`` with the pipeline's run figures
  (``pipelines.monitoring.prometheus.PipelineCollector``) beside the request figures.

Every label value is from a bounded set: route templates are the app's own, methods outside
the standard ones are ``OTHER``, reason codes outside :data:`REASON_CODES` are ``other``, an
unmatched path is ``(unmatched)``. A source that cannot be read at a scrape (the governance or
metrics store) shows as ``hdp_metrics_source_up{source=...} 0`` instead of failing the scrape.

**Several workers.** ``hdp serve`` runs two uvicorn worker processes; each counts what it
serves. With more than one worker ``hdp serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at an
owner-only directory under the data home, emptied at each start (:func:`prepare_multiprocess_dir`),
before the workers start; prometheus_client then keeps every worker's counters and histograms
in files there and any worker's ``/metrics`` sums them all. The mode is what prometheus_client
chose when it was imported (:func:`multiprocess_mode`), so a single process never reads a
directory its own metrics do not write to. No request metric is a gauge, so a restarted
worker's files need no clean-up: counters of a dead worker still count what it served.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from access.audit_http import REASON
from governance.reporting import overdue_reviews, permit_counts
from governance.store import session_scope
from hdp.settings import ensure_private_dir, holders
from pipelines.monitoring.prometheus import PipelineCollector

log = logging.getLogger(__name__)

#: prometheus_client's own variable: where worker processes keep their values.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "(unmatched)"
#: Seconds: a page or lookup takes milliseconds, a query up to the time limit (default 30 s).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: The reason codes the access layer refuses with (access/*.py, the aggregate grammar's
#: ``aggregate.*``, ``access.audit_http``): the values the ``reason`` label may take, besides
#: ``http.<4xx|5xx>`` (a refusal that carried no code) and ``other``. tests/access/test_metrics.py
#: checks that every code the access layer's sources raise is named here.
REASON_CODES = frozenset(
    {
        *(
            f"aggregate.{r}"
            for r in (
                "aggregate_not_allowed clause column cte from group_key group_not_selected join key_type "
                "measure measure_argument not_aggregate order predicate pseudonym set_operation shape "
                "subquery window"
            ).split()
        ),
        "auth.invalid_token",
        "auth.missing_token",
        "disclosure.too_many_cells",
        "engine.busy",
        "exception.not_found",
        "exception.not_steward",
        "format.unknown",
        "followup.invalid",
        "governance.unavailable",
        "holder.unknown",
        "ledger.budget_exhausted",
        "limit.memory",
        "limit.rows",
        "limit.time",
        *(
            f"output.{r}"
            for r in (
                "consent_changed exception_withdrawn file_missing integrity not_found not_needed "
                "not_requester permit_inactive review_required row_level_needs_exception rule_invalid "
                "unavailable"
            ).split()
        ),
        "permit.expired",
        "permit.mismatch",
        "permit.none",
        "permit.not_found",
        "permit.unknown_tier",
        "release.no_cell_keys",
        "release.no_consent_link",
        "release.no_manifest",
        "release.too_many_holders",
        "request.bad_status",
        "request.invalid",
        "request.not_found",
        "role.not_holder_steward",
        "role.not_operator",
        "role.not_researcher",
        "route.not_found",
        "server.error",
        *(
            f"sql.{r}"
            for r in (
                "empty forbidden_construct function_not_allowed invalid invalid_characters "
                "multiple_statements not_select recursive_cte runtime_error syntax table_function "
                "table_not_allowed too_long unknown_column"
            ).split()
        ),
        "stream.aborted",
        "stream.client_gone",
    }
)
OTHER = "other"


def reason_label(reason: object, status: int, *, matched: bool = True) -> str:
    """The ``reason`` label of a refused request: its code if a known one, else bounded."""
    if reason is None:
        if status == 404 and not matched:
            return "route.not_found"
        return f"http.{status}" if 400 <= status <= 599 else OTHER
    text = str(reason)
    return text if text in REASON_CODES else OTHER


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else OTHER


def multiprocess_mode() -> bool:
    """Whether prometheus_client keeps values in files shared by worker processes (it decides
    once, at import, from ``PROMETHEUS_MULTIPROC_DIR``)."""
    return values.ValueClass is not values.MutexValue


def prepare_multiprocess_dir(path: Path) -> Path:
    """An owner-only, empty directory for the workers' values, named in the environment the
    workers inherit; the parent calls this before it starts them."""
    ensure_private_dir(path)
    for stale in path.glob("*.db"):  # a previous server's values: counters restart with it
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    return path


class Sources(Collector):
    """Collectors over the stores, read at every scrape. One that fails leaves out its families
    and shows as ``hdp_metrics_source_up{source} 0`` rather than failing the whole scrape (the
    other figures are still worth having)."""

    def __init__(self, sources: Iterable[tuple[str, Collector]]) -> None:
        self.sources = tuple(sources)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "hdp_metrics_source_up", "1 if the source was read at this scrape, 0 if not.", labels=["source"]
        )
        for name, collector in self.sources:
            try:
                families = list(collector.collect())
            except Exception as exc:  # noqa: BLE001 - any store failure: report it as a metric
                log.warning("metrics source %s could not be read: %s", name, type(exc).__name__)
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            yield from families
        yield up


class GovernanceCollector(Collector):
    """Overdue holder reviews and permits by status, per holder, from the governance store."""

    def __init__(self, url: Callable[[], str]) -> None:
        self.url = url

    def collect(self) -> Iterator[Metric]:
        with session_scope(self.url(), readonly=True) as session:
            overdue = overdue_reviews(session)
            permits = permit_counts(session)
        known = [h.id for h in holders()]
        count = Tally(o.holder_id for o in overdue)
        oldest: dict[str, float] = {}
        for o in overdue:
            oldest[o.holder_id] = max(oldest.get(o.holder_id, 0.0), o.days_overdue)
        reviews = GaugeMetricFamily(
            "hdp_reviews_overdue", "Holder reviews pending past their deadline.", labels=["holder"]
        )
        days = GaugeMetricFamily(
            "hdp_reviews_overdue_max_days", "Days the most overdue pending review is late.", labels=["holder"]
        )
        for h in sorted({*known, *count}):
            reviews.add_metric([h], count.get(h, 0))
            days.add_metric([h], oldest.get(h, 0.0))
        by_status = GaugeMetricFamily(
            "hdp_permits",
            "Permits per holder and status (active: bound to a release in force; approved: not yet released).",
            labels=["holder", "status"],
        )
        for (h, status), n in sorted(permits.items()):
            by_status.add_metric([h, status], n)
        yield from (reviews, days, by_status)


class AccessMetrics:
    """The request metrics of one app and the scrape that serves them with the store figures."""

    def __init__(self, sources: Iterable[tuple[str, Collector]] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "hdp_http_requests",
            "HTTP requests by route template, method and status class.",
            ["route", "method", "status_class"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "hdp_http_request_duration_seconds",
            "Time from receiving a request to its last response byte, by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.refusals = Counter(
            "hdp_access_refusals",
            "Refused requests (status 4xx/5xx) by reason code.",
            ["reason"],
            registry=self.registry,
        )
        self.sources = Sources(sources)

    def observe(self, scope: dict[str, Any], status: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or UNMATCHED
        method = str(scope.get("method", "")).upper()
        method = method if method in METHODS else "OTHER"
        self.requests.labels(template, method, status_class(status)).inc()
        self.latency.labels(template, method).observe(seconds)
        if status >= 400:
            self.refusals.labels(reason_label(scope.get(REASON), status, matched=route is not None)).inc()

    def exposition(self) -> tuple[bytes, str]:
        """``(body, content_type)`` of ``GET /metrics``: every worker's request figures (in
        multiprocess mode), then the sources read now."""
        scrape = CollectorRegistry()
        if multiprocess_mode():
            MultiProcessCollector(scrape)
        else:
            scrape.register(self.registry)
        scrape.register(self.sources)
        return generate_latest(scrape), CONTENT_TYPE_LATEST


def platform_sources(governance_url: Callable[[], str]) -> list[tuple[str, Collector]]:
    """The store figures every app's ``/metrics`` serves: pipeline runs and governance."""
    return [("pipeline", PipelineCollector()), ("governance", GovernanceCollector(governance_url))]


class RequestMetrics:
    """ASGI middleware: every HTTP request into ``metrics`` (see the module docstring). Mount it
    outermost, so the 500s the inner middleware makes of errors are counted as such."""

    def __init__(self, app: Any, metrics: AccessMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app fails before it answers, the server answers 500

        async def send_counted(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            self.metrics.observe(scope, status, time.perf_counter() - started)
