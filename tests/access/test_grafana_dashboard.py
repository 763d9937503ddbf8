"""The Grafana dashboard and the example alert rules in deploy/grafana/ name only metrics that
the access layer's /metrics exposes (a renamed metric would leave an empty panel)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import yaml
from access_support import auth
from prometheus_client.parser import text_string_to_metric_families

from governance.store import dispose_all, upgrade
from hdp.settings import REPO_ROOT

GRAFANA = REPO_ROOT / "deploy" / "grafana"
#: PromQL words that are neither functions (followed by "(") nor metrics.
KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
}
#: Sample names a family of each type exposes.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values: never names
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # range durations ($__rate_interval, 5m)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)  # grouping labels
    names = set()
    for m in re.finditer(r"(?<![A-Za-z0-9_:.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", e):
        if m.group(2) is None and m.group(1) not in KEYWORDS:
            names.add(m.group(1))
    return names


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    def walk(panels):
        for p in panels:
            yield from walk(p.get("panels", []))
            for t in p.get("targets", []):
                yield p["title"], t["expr"]

    yield from walk(json.loads((GRAFANA / "hdp-dashboard.json").read_text(encoding="utf-8"))["panels"])


def alert_exprs() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load((GRAFANA / "hdp-alerts.yml").read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            yield rule["alert"], rule["expr"]


def test_metric_names_are_read_from_promql():
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(hdp_x_bucket{route="/a/{id}"}[$__rate_interval])))'
        " / clamp_min(sum(rate(hdp_y_total[5m])), 1e-9) > 0 and on (dag_id) hdp_z"
    )
    assert metric_names(expr) == {"hdp_x_bucket", "hdp_y_total", "hdp_z"}


def test_every_metric_the_dashboard_and_alerts_use_is_exposed(world, client, hdp_home):
    upgrade(hdp_home.governance_url)  # the governance families come from the store
    try:
        client.get("/health")
        r = client.get("/metrics", headers=auth(world.olga))
    finally:
        dispose_all()
    assert r.status_code == 200
    exposed: set[str] = set()
    for family in text_string_to_metric_families(r.text):
        exposed |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    up = [
        s
        for f in text_string_to_metric_families(r.text)
        if f.name == "hdp_metrics_source_up"
        for s in f.samples
    ]
    assert {s.labels["source"]: s.value for s in up} == {"pipeline": 1.0, "governance": 1.0}

    used: dict[str, set[str]] = {}
    exprs = [*dashboard_exprs(), *alert_exprs()]
    assert len(exprs) > 20
    for where, expr in exprs:
        for name in metric_names(expr):
            used.setdefault(name, set()).add(where)
    missing = {name: sorted(where) for name, where in used.items() if name not in exposed}
    assert not missing, missing
    # The dashboard covers every area: requests, latency, refusals, governance, pipeline.
    for name in (
        "hdp_http_requests_total",
        "hdp_http_request_duration_seconds_bucket",
        "hdp_access_refusals_total",
        "hdp_reviews_overdue",
        "hdp_permits",
        "hdp_dag_run_failed",
        "hdp_task_rows_quarantined",
    ):
        assert name in used, name


def test_dashboard_is_importable_and_scrape_config_names_the_rules():
    dash = json.loads((GRAFANA / "hdp-dashboard.json").read_text(encoding="utf-8"))
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert dash["uid"] and dash["__inputs"][0]["pluginId"] == "prometheus"
    assert all(
        t["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in dash["panels"] for t in p.get("targets", [])
    )
    config = yaml.safe_load((GRAFANA / "prometheus.yml").read_text(encoding="utf-8"))
    assert config["rule_files"] == ["hdp-alerts.yml"]
    for job in config["scrape_configs"]:
        assert job["metrics_path"] == "/metrics"
        assert job["authorization"]["type"] == "Bearer" and "credentials_file" in job["authorization"]
