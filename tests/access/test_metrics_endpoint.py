"""/metrics serves the pipeline's run figures to operators only."""

from __future__ import annotations

from fastapi.testclient import TestClient

from access.app import create_app
from access.ports import InMemoryGovernance


def test_metrics_needs_an_operator_token_and_serves_prometheus_text(hdp_home, monkeypatch):
    monkeypatch.setenv("HDP_METRICS_URL", f"sqlite:///{hdp_home.home / 'metrics.sqlite'}")
    gov = InMemoryGovernance()
    gov.add_user("olle.operator", roles={"operator"})
    gov.add_user("rita.researcher", roles={"researcher"})
    op, researcher = gov.issue_token("olle.operator"), gov.issue_token("rita.researcher")
    client = TestClient(create_app(governance=gov))
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {researcher}"}).status_code == 403
    ok = client.get("/metrics", headers={"Authorization": f"Bearer {op}"})
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("text/plain")
