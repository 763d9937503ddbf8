from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from pipelines.monitoring import prometheus, store
from pipelines.monitoring.figures import TaskIdentity, figures_from_counts
from pipelines.monitoring.prometheus import MetricFamily, MetricFormatError, Sample, render_exposition


def _parse(text: str) -> dict[str, list]:
    return {
        f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)
    }


def test_render_escapes_and_spells_values():
    text = render_exposition(
        [
            MetricFamily(
                "hdp_x",
                "help with \\ and\nnewline",
                samples=[
                    Sample({"b": 'quote " back \\ nl \n', "a": "1"}, 3),
                    Sample({"a": "2", "b": ""}, math.inf),
                ],
            ),
            MetricFamily("hdp_a", "first", "counter", samples=[Sample({}, 0.25)]),
        ]
    )
    assert text.splitlines()[0:3] == ["# HELP hdp_a first", "# TYPE hdp_a counter", "hdp_a 0.25"]
    assert "# HELP hdp_x help with \\\\ and\\nnewline" in text
    assert 'hdp_x{a="1",b="quote \\" back \\\\ nl \\n"} 3' in text
    assert 'hdp_x{a="2",b=""} +Inf' in text
    assert text.endswith("\n") and render_exposition([]) == ""


def test_invalid_names_are_refused():
    with pytest.raises(MetricFormatError):
        MetricFamily("hdp-bad", "x")
    with pytest.raises(MetricFormatError):
        MetricFamily("hdp_ok", "x", samples=[Sample({"bad-label": "v"}, 1)])
    with pytest.raises(MetricFormatError):
        MetricFamily("hdp_ok", "x", type="histogram")


@given(
    st.lists(
        st.tuples(st.text(max_size=20), st.floats(allow_nan=False, allow_infinity=True)),
        min_size=1,
        max_size=5,
        unique_by=lambda t: t[0],
    ),
    st.text(max_size=40),
)
def test_any_label_value_and_number_round_trips_through_the_reference_parser(samples, help_text):
    fam = MetricFamily("hdp_prop", help_text, samples=[Sample({"v": v}, x) for v, x in samples])
    parsed = _parse(render_exposition([fam]))["hdp_prop"]
    assert sorted((labels["v"], value) for _, labels, value in parsed) == sorted(samples)


T0 = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)


def test_metrics_payload_exposes_the_store(metrics_url):
    ident = TaskIdentity("ingest__ndr", "scheduled__1", "ingest_register")
    store.record(
        ident,
        state="success",
        started_at=T0,
        ended_at=T0 + timedelta(seconds=12),
        figures=figures_from_counts(
            {
                "holder": "ndr",
                "source": "register",
                "lines_read": 100,
                "rows_loaded": 90,
                "quarantined": {"csv.bad_date": 10},
            }
        ),
    )
    store.record(
        TaskIdentity("ingest__ndr", "scheduled__1", "validate_raw"),
        state="failed",
        error_type="QualityGateFailed",
        started_at=T0,
        ended_at=T0 + timedelta(seconds=14),
        figures=figures_from_counts({"checks_failed": 2}),
    )
    body, ctype = prometheus.metrics_payload()
    assert ctype.startswith("text/plain; version=0.0.4")
    m = _parse(body.decode())
    task = {"dag_id": "ingest__ndr", "task_id": "ingest_register", "holder": "ndr", "source": "register"}
    assert ("hdp_task_rows_in", task, 100.0) in m["hdp_task_rows_in"]
    assert ("hdp_task_rows_out", task, 90.0) in m["hdp_task_rows_out"]
    assert ("hdp_task_duration_seconds", task, 12.0) in m["hdp_task_duration_seconds"]
    assert m["hdp_task_rows_quarantined"] == [
        (
            "hdp_task_rows_quarantined",
            {
                "dag_id": "ingest__ndr",
                "task_id": "ingest_register",
                "holder": "ndr",
                "reason_code": "csv.bad_date",
            },
            10.0,
        )
    ]
    assert m["hdp_task_checks_failed"][0][2] == 2.0
    assert m["hdp_dag_run_failed"] == [("hdp_dag_run_failed", {"dag_id": "ingest__ndr"}, 1.0)]
    assert m["hdp_dag_run_info"][0][1] == {
        "dag_id": "ingest__ndr",
        "run_id": "scheduled__1",
        "state": "failed",
    }
    assert m["hdp_dag_run_duration_seconds"][0][2] == 14.0

    seen = {}
    out = prometheus.wsgi_app(
        {"REQUEST_METHOD": "GET"}, lambda status, headers: seen.update(s=status, h=headers)
    )
    assert seen["s"] == "200 OK" and b"".join(out) == body
    prometheus.wsgi_app({"REQUEST_METHOD": "POST"}, lambda status, headers: seen.update(s=status))
    assert seen["s"].startswith("405")


def test_empty_store_gives_valid_exposition(metrics_sqlite):
    body, _ = prometheus.metrics_payload()
    assert _parse(body.decode())["hdp_task_rows_in"] == []
