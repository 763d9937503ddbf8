from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.monitoring.figures import (
    TaskIdentity,
    figures_from_counts,
    identity_from_context,
    is_code,
)

INGEST = {
    "holder": "ndr",
    "source": "register",
    "files": 2,
    "lines_read": 1003,
    "rows_loaded": 990,
    "quarantined": {"csv.bad_date": 3, "csv.duplicate": 8},
}


def test_ingest_counts_map_to_headline_figures():
    f = figures_from_counts(INGEST)
    assert (f.holder, f.source, f.rows_in, f.rows_out) == ("ndr", "register", 1003, 990)
    assert f.quarantined == {"csv.bad_date": 3, "csv.duplicate": 8}
    assert f.rows_quarantined == 11
    assert f.checks_failed is None
    assert f.extra == {("files", ""): 2.0}


def test_checks_failed_as_list_counts_items_and_nested_numbers_are_kept():
    f = figures_from_counts(
        {
            "checks_failed": ["plausibility.hba1c", "unit.hba1c"],
            "rows_checked": 50,
            "by_table": {"register_visit": 40, "prom_response": 10},
            "passed": True,
        }
    )
    assert f.checks_failed == 2 and f.rows_in == 50
    assert f.extra == {("by_table", "register_visit"): 40.0, ("by_table", "prom_response"): 10.0}


def test_plain_quarantine_total_and_non_dict_results():
    assert figures_from_counts({"quarantined": 4}).quarantined == {"unspecified": 4}
    assert figures_from_counts({"quarantined": 0}).rows_quarantined is None
    assert figures_from_counts([1, 2, 3]) == figures_from_counts(None) == figures_from_counts("x")


def test_identifiers_and_values_never_become_ids_or_labels():
    f = figures_from_counts(
        {
            "holder": "19121212-1212",
            "source": "Tolvan Tolvansson",
            "quarantined": {"Tolvan": 1, "csv.bad_date": 2},
            "by_person": {"191212121212": 1},
            "name": "Anna",
        }
    )
    assert f.holder is None and f.source is None
    assert f.quarantined == {"other": 1, "csv.bad_date": 2}
    assert f.extra == {}


_text = st.text(max_size=30)
_leaf = st.one_of(st.integers(-(10**9), 10**9), st.floats(allow_nan=True), _text, st.booleans(), st.none())
_counts = st.recursive(
    st.dictionaries(_text, _leaf, max_size=6),
    lambda inner: st.dictionaries(_text, st.one_of(_leaf, inner), max_size=5),
    max_leaves=25,
)


@given(_counts)
def test_only_codes_and_finite_numbers_survive_any_input(counts):
    f = figures_from_counts(counts)
    for value in (f.holder, f.source):
        assert value is None or is_code(value)
    for label in f.quarantined:
        assert label in ("other", "unspecified") or is_code(label)
    for (name, label), value in f.extra.items():
        assert all(is_code(part) for part in name.split(".")) and (label == "" or is_code(label))
        assert isinstance(value, float) and value == value and abs(value) != float("inf")
    for n in (f.rows_in, f.rows_out, f.checks_failed, *f.quarantined.values()):
        assert n is None or isinstance(n, int)


def test_identity_from_airflow_like_context():
    ti = SimpleNamespace(
        dag_id="ingest__ndr", run_id="manual__1", task_id="ingest_register", map_index=-1, try_number=2
    )
    ident = identity_from_context({"ti": ti})
    assert ident == TaskIdentity("ingest__ndr", "manual__1", "ingest_register", -1, 2)
    assert (ident.stage, ident.dag_holder, ident.task_source) == ("ingest", "ndr", "register")
    release = TaskIdentity("release", "r", "build_release", 0)
    assert (release.stage, release.dag_holder, release.task_source) == ("release", None, None)
    with pytest.raises(ValueError, match="task instance"):
        identity_from_context({})


def test_quality_gate_summary():
    f = figures_from_counts(
        {
            "run_id": "r",
            "zone": "raw",
            "scope": "ndr",
            "passed": False,
            "checks": {"pass": 50, "warn": 2, "fail": 1, "skipped": 0, "error": 0},
            "failed": ["plausibility.hba1c"],
            "warned": ["a", "b"],
            "errored": [],
            "quarantined_rows": 17,
            "docs_path": "/x/index.html",
            "duration_s": 0.2,
        }
    )
    assert f.checks_failed == 1 and f.quarantined == {"unspecified": 17}
    assert f.extra[("checks", "pass")] == 50 and f.extra[("warned", "")] == 2
    assert f.extra[("duration_s", "")] == 0.2 and ("docs_path", "") not in f.extra
