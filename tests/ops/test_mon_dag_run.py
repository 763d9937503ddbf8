"""The callbacks through Airflow's real task runner: one ingest DAG via ``dag.test()``."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_ingest_dag_run_records_its_figures(hdp_home, metrics_sqlite, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    from hdp.settings import REPO_ROOT

    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(REPO_ROOT / "dags"))
    from edge import orchestrate
    from pipelines.monitoring import store
    from synthetic_data.generate import generate

    generate(persons=150, seed=3)
    orchestrate.migrate_metadata_db()
    (outcome,) = orchestrate.run_dags(["ingest__ndr"], raise_on_failure=False)

    (run,) = store.latest_runs()
    assert (run.dag_id, run.run_id) == ("ingest__ndr", outcome.run_id)
    tasks = {t.task_id: t for t in run.tasks}
    assert {"ingest_register", "ingest_prom", "validate_raw"} <= set(tasks)
    for source in ("register", "prom"):
        t = tasks[f"ingest_{source}"]
        assert (t.state, t.holder, t.source) == ("success", "ndr", source)
        assert t.rows_in > t.rows_out > 0 and t.duration_s > 0
    # generate() injects defects at its default rate: some rows must be quarantined, per reason
    reasons = [
        r for r in store.quarantine_by_reason("ingest__ndr", outcome.run_id) if r[0].startswith("ingest_")
    ]
    assert sum(n for *_, n in reasons) == sum(
        tasks[f"ingest_{s}"].rows_quarantined or 0 for s in ("register", "prom")
    )
    assert all(r.startswith(("csv.", "file.", "encoding.")) for _, _, r, _ in reasons)
    assert tasks["validate_raw"].state == outcome.state or outcome.state != "success"
