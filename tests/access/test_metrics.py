"""Request metrics of the access layer: route templates, bounded labels, one registry per app,
governance gauges, and a store that cannot be read reported rather than failing the scrape."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from access_support import auth
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from access import metrics
from access.app import create_app
from hdp.settings import REPO_ROOT

PNR = "19121212-1212"


def parse(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    return {
        f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)
    }


def sample(families, family: str, name: str, **labels: str) -> float | None:
    for n, lab, value in families.get(family, []):
        if n == name and all(lab.get(k) == v for k, v in labels.items()):
            return value
    return None


def scrape(client, token) -> tuple[str, dict]:
    r = client.get("/metrics", headers=auth(token))
    assert r.status_code == 200, r.text
    return r.text, parse(r.text)


def test_requests_are_counted_by_route_template_never_by_raw_path(world, client):
    for _ in range(3):
        assert client.get("/releases", headers=auth(world.alice)).status_code == 200
    ok = client.post(
        "/releases/r_rec/query",
        json={"sql": "SELECT count(*) FROM register_visit"},
        headers=auth(world.alice),
    )
    assert ok.status_code == 200
    # A path value that could be a personnummer: refused, counted under its template only.
    assert client.get(f"/releases/{PNR}/schema", headers=auth(world.alice)).status_code == 403
    assert client.get(f"/no/such/{PNR}").status_code == 404
    assert client.get("/releases").status_code == 401
    assert client.request("BREW", "/releases", headers=auth(world.alice)).status_code == 405
    bad = client.post(
        "/releases/r_rec/query", json={"sql": "DROP TABLE register_visit"}, headers=auth(world.alice)
    )
    assert bad.status_code == 400 and bad.json()["error"] == "sql.not_select"

    text, m = scrape(client, world.olga)
    assert PNR not in text and "19121212" not in text
    req = "hdp_http_requests_total"
    assert sample(m, "hdp_http_requests", req, route="/releases", method="GET", status_class="2xx") == 3
    assert sample(m, "hdp_http_requests", req, route="/releases", method="GET", status_class="4xx") == 1
    assert (
        sample(
            m,
            "hdp_http_requests",
            req,
            route="/releases/{release_id}/query",
            method="POST",
            status_class="2xx",
        )
        == 1
    )
    assert (
        sample(
            m,
            "hdp_http_requests",
            req,
            route="/releases/{release_id}/schema",
            method="GET",
            status_class="4xx",
        )
        == 1
    )
    assert sample(m, "hdp_http_requests", req, route="(unmatched)", method="GET", status_class="4xx") == 1
    assert sample(m, "hdp_http_requests", req, route="/releases", method="OTHER", status_class="4xx") == 1
    routes = {lab["route"] for _, lab, _ in m["hdp_http_requests"]}
    assert all(r == "(unmatched)" or r.startswith("/") for r in routes)
    # Latency: one histogram per route template and method, every observation counted.
    count = "hdp_http_request_duration_seconds_count"
    assert sample(m, "hdp_http_request_duration_seconds", count, route="/releases", method="GET") == 4
    query_sum = sample(
        m,
        "hdp_http_request_duration_seconds",
        "hdp_http_request_duration_seconds_sum",
        route="/releases/{release_id}/query",
        method="POST",
    )
    assert query_sum is not None and query_sum > 0
    # Refusals by the reason code the caller got.
    ref = "hdp_access_refusals_total"
    assert sample(m, "hdp_access_refusals", ref, reason="permit.none") == 1
    assert sample(m, "hdp_access_refusals", ref, reason="auth.missing_token") == 1
    assert sample(m, "hdp_access_refusals", ref, reason="route.not_found") == 1
    assert sample(m, "hdp_access_refusals", ref, reason="sql.not_select") == 1
    assert sample(m, "hdp_access_refusals", ref, reason="http.405") == 1
    # The pipeline's figures are in the same scrape.
    assert "hdp_task_rows_in" in m and "hdp_dag_run_failed" in m


def test_each_app_has_its_own_registry(world):
    """Two apps in one process (tests, the hub beside an access app) never share series."""
    first, second = create_app(world.settings, world.gov), create_app(world.settings, world.gov)
    with TestClient(first) as a, TestClient(second) as b:
        for _ in range(2):
            a.get("/health")
        _, ma = scrape(a, world.olga)
        _, mb = scrape(b, world.olga)
    health = {"route": "/health", "method": "GET", "status_class": "2xx"}
    assert sample(ma, "hdp_http_requests", "hdp_http_requests_total", **health) == 2
    assert sample(mb, "hdp_http_requests", "hdp_http_requests_total", **health) is None
    first.state.service.close()
    second.state.service.close()


def test_an_unreadable_store_is_reported_not_fatal(world, client, monkeypatch):
    monkeypatch.setenv("HDP_METRICS_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert client.get("/health").status_code == 200
    _, m = scrape(client, world.olga)
    up = {lab["source"]: v for _, lab, v in m["hdp_metrics_source_up"]}
    assert up["pipeline"] == 0.0
    assert "hdp_task_rows_in" not in m
    assert sample(m, "hdp_http_requests", "hdp_http_requests_total", route="/health") == 1


def test_metrics_is_for_operators_only(world, client):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=auth(world.alice)).status_code == 403


@pytest.mark.parametrize(
    ("reason", "status", "matched", "label"),
    [
        ("permit.expired", 403, True, "permit.expired"),
        ("aggregate.join", 400, True, "aggregate.join"),
        (f"sql.{PNR}", 400, True, "other"),  # never a code the label set does not know
        ("x" * 500, 400, True, "other"),
        (None, 404, False, "route.not_found"),
        (None, 404, True, "http.404"),
        (None, 503, True, "http.503"),
        (None, 200, True, "other"),
    ],
)
def test_reason_label_is_bounded(reason, status, matched, label):
    assert metrics.reason_label(reason, status, matched=matched) == label


_RAISED = (
    re.compile(
        r'(?:Refusal|Unauthenticated|Forbidden|NotFound|QueryRefused|QueryCutOff)\(\s*"([a-z_]+\.[a-z_.]+)"'
    ),
    re.compile(r'code="([a-z_]+\.[a-z_.]+)"'),
    re.compile(r'reason="([a-z_]+\.[a-z_.]+)"'),
    re.compile(r'"reason":\s*"([a-z_]+\.[a-z_.]+)"'),
)
_AGGREGATE = re.compile(r'\brefuse\(\s*"([a-z_]+)"')


def test_every_reason_code_the_access_layer_raises_is_a_label_value():
    """A new reason code must be named in access.metrics.REASON_CODES to be counted as itself."""
    found: set[str] = set()
    for path in Path(REPO_ROOT, "access").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for pattern in _RAISED:
            found |= set(pattern.findall(text))
        found |= {f"aggregate.{r}" for r in _AGGREGATE.findall(text)}
    assert len(found) > 40  # the scan sees the codes (a broken pattern would find none)
    assert found <= metrics.REASON_CODES, sorted(found - metrics.REASON_CODES)


def test_governance_gauges_count_overdue_reviews_and_permits(hdp_home):
    from governance import service
    from governance.store import dispose_all, session_scope, upgrade

    url = hdp_home.governance_url
    upgrade(url)
    long_ago = datetime.now(UTC) - timedelta(days=90)
    with session_scope(url) as s:
        service.create_user(s, name="alice", roles=["researcher"])
        rid = service.file_request(
            s,
            applicant="alice",
            now=long_ago,
            project="Overdue review",
            purpose="scientific_research",
            legal_basis="gdpr_6_1_e__9_2_j",
            ethics_ref="2024-01234-01",
            variables=["register_visit.sex"],
            holders=["ndr"],
            members=[],
            cohort_criteria={},
            period=(None, None),
            output_tier="aggregate",
            access_days=30,
        )
        service.submit_request(s, request_id=rid, actor="alice", now=long_ago)
    families = {f.name: f for f in metrics.GovernanceCollector(lambda: url).collect()}
    dispose_all()
    overdue = {s.labels["holder"]: s.value for s in families["hdp_reviews_overdue"].samples}
    assert overdue["ndr"] == 1 and overdue["region_skane"] == 0
    late = {s.labels["holder"]: s.value for s in families["hdp_reviews_overdue_max_days"].samples}
    assert late["ndr"] > 30
    assert families["hdp_permits"].samples == []  # nothing approved yet


def test_the_hub_counts_its_federation_routes_with_the_same_middleware(hdp_home, monkeypatch):
    """The hub is built on the access app (hub/app.py): its own routes are counted by template too."""
    from governance.store import dispose_all, upgrade
    from hdp.settings import get_settings

    monkeypatch.setenv("HDP_FEDERATION_ROLE", "hub")
    monkeypatch.setenv("HDP_HUB_URL", "http://127.0.0.1:8700")
    get_settings.cache_clear()
    upgrade(get_settings().governance_url)
    from hub.app import create_hub_app

    app = create_hub_app()
    client = TestClient(app)  # no start-up: no routing loop
    try:
        client.get(
            "/federation/v1/permits/4711/status"
        )  # an unknown permit: whatever it answers, it is counted
        assert client.get("/federation/v1/identity").status_code == 200
        m = parse(app.state.metrics.exposition()[0].decode())
    finally:
        app.state.service.close()
        dispose_all()
        get_settings.cache_clear()
    req = "hdp_http_requests_total"
    assert (
        sample(m, "hdp_http_requests", req, route="/federation/v1/identity", method="GET", status_class="2xx")
        == 1
    )
    routes = {lab["route"] for _, lab, _ in m["hdp_http_requests"]}
    assert "/federation/v1/permits/{permit_id}/status" in routes and not any("4711" in r for r in routes)
