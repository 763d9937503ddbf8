"""The check library itself: loads, is well-formed, covers the contract's tables and categories."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.quality import catalog
from pipelines.quality.catalog import CheckLibraryError, Threshold, parse_check
from synthetic_data import codes

BASE = {
    "id": "x.y.range",
    "kind": "range",
    "column": "bmi",
    "min": 12,
    "max": 80,
    "category": "plausibility",
    "subcategory": "atemporal",
    "source": "register",
    "zones": ["raw"],
    "table": "register_visit",
    "severity": "blocking",
    "threshold": {"max_failed_share": 0.01},
    "note": "why",
}


def test_library_loads_with_unique_ids_notes_and_thresholds():
    lib = catalog.load_library()
    assert len(lib) > 100
    assert len({c.id for c in lib}) == len(lib)
    for c in lib:
        assert c.note and c.severity in ("blocking", "warning")
        assert 0 <= c.threshold.max_failed_share <= 1


def test_every_zone_and_kahn_category_is_covered():
    lib = catalog.load_library()
    for zone in catalog.ZONES:
        cats = {c.category for c in lib if zone in c.zones}
        assert cats == {"conformance", "completeness", "plausibility"}, zone


@pytest.mark.parametrize(
    "zone,tables",
    [
        (
            "raw",
            {
                "register_visit",
                "prom_response",
                "fhir_patient",
                "fhir_encounter",
                "fhir_condition",
                "fhir_observation",
                "fhir_medication_request",
                "fhir_procedure",
                "fhir_eq5d_response",
                "fhir_resource",
            },
        ),
        (
            "research",
            {
                "register_visit",
                "prom_response",
                "patient",
                "encounter",
                "condition",
                "observation",
                "medication_request",
                "procedure",
                "eq5d_response",
            },
        ),
    ],
)
def test_every_contract_table_has_checks(zone, tables):
    covered = {c.table for c in catalog.checks_for(zone, None)}
    assert tables <= covered


def test_zone_overrides_apply():
    research = {c.id: c for c in catalog.checks_for("research", ["register"])}
    assert research["register.visit.unique"].params["columns"] == ["person_id", "visit_date"]
    raw = {c.id: c for c in catalog.checks_for("raw", ["fhir"])}
    assert raw["fhir.encounter.patient_ref"].table == "fhir_encounter"
    assert {c.id: c for c in catalog.checks_for("research", ["fhir"])}[
        "fhir.encounter.patient_ref"
    ].table == "encounter"
    # only the raw zone may quarantine
    assert not any(c.quarantine for c in catalog.checks_for("research", None))


def test_source_applicability():
    ids_region = {c.id for c in catalog.checks_for("raw", ["fhir"])}
    assert not any(i.startswith(("register.", "prom.")) for i in ids_region)
    ids_ndr = {c.id for c in catalog.checks_for("research", ["register", "prom"])}
    assert "prom.visit.matches_register" in ids_ndr
    assert "prom.visit.matches_register" not in {c.id for c in catalog.checks_for("research", ["prom"])}


@pytest.mark.parametrize(
    "change,message",
    [
        ({"kind": "nonsense"}, "unknown kind"),
        ({"category": "beauty"}, "Kahn"),
        ({"severity": "fatal"}, "severity"),
        ({"threshold": {"max_failed_share": 1.5}}, "max_failed_share"),
        ({"threshold": {"max_failed_share": 0.1, "max_failed_count": -1}}, "max_failed_count"),
        ({"note": " "}, "note"),
        ({"column": "bmi; DROP TABLE x"}, "plain identifier"),
        ({"zones": ["staging"]}, "zones"),
        ({"id": "NoDots"}, "dotted"),
        ({"quarantine": True, "zones": ["research"]}, "quarantine"),
        ({"overrides": {"release": {"severity": "warning"}}}, "override"),
        ({"extra_field": 1}, "unknown fields"),
    ],
)
def test_malformed_checks_are_refused_with_a_reason(change, message):
    raw = {**copy.deepcopy(BASE), **change}
    with pytest.raises(CheckLibraryError, match=message):
        parse_check(raw, "t.json")


def test_duplicate_ids_across_files_are_refused(tmp_path):
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text(json.dumps({"checks": [BASE]}))
    with pytest.raises(CheckLibraryError, match="also defined"):
        catalog.load_library(tmp_path)


def test_code_lists_contain_the_generators_codes_and_not_its_unknown_ones():
    assert set(codes.ICD10SE) <= catalog.code_list("icd10se")
    assert set(codes.ATC) <= catalog.code_list("atc")
    assert set(codes.KVA) <= catalog.code_list("kva")
    assert not set(codes.UNKNOWN_ICD10SE) & catalog.code_list("icd10se")
    assert not set(codes.UNKNOWN_ATC) & catalog.code_list("atc")


def test_library_version_changes_with_content(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"checks": [BASE]}))
    v1 = catalog.library_version(tmp_path)
    (tmp_path / "a.json").write_text(json.dumps({"checks": [{**BASE, "max": 81}]}))
    assert catalog.library_version(tmp_path) != v1


@given(st.floats(0, 1), st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 50))
def test_threshold_is_monotone_in_failures(share, failed, total, extra):
    t = Threshold(share)
    total = max(total, failed)
    if not t.allows(failed, total):
        assert not t.allows(failed + extra, total)  # more failures never turn a failure into a pass
    assert t.allows(0, total)


@given(st.integers(0, 100), st.integers(1, 1000), st.integers(0, 100))
def test_threshold_count_limit(limit, total, failed):
    failed = min(failed, total)
    assert Threshold(1.0, limit).allows(failed, total) == (failed <= limit)


def test_no_shipped_check_lets_a_warning_exclude_rows():
    """Quarantined rows never reach the research zone: only blocking checks may quarantine."""
    lib = catalog.load_library()
    quarantining = [catalog.resolve(c, "raw") for c in lib if "raw" in c.zones and c.quarantine]
    assert quarantining, "the library should still quarantine on blocking checks"
    for c in lib:
        if "raw" in c.zones:
            raw = catalog.resolve(c, "raw")
            assert not raw.quarantine or raw.severity == "blocking", c.id


@pytest.mark.parametrize(
    "change",
    [
        {"severity": "warning", "quarantine": True},
        {"quarantine": True, "overrides": {"raw": {"severity": "warning"}}},
        {"severity": "warning", "overrides": {"raw": {"quarantine": True}}},
    ],
)
def test_a_warning_check_cannot_quarantine(change):
    with pytest.raises(CheckLibraryError, match="a warning never excludes rows"):
        parse_check({**copy.deepcopy(BASE), **change}, "t.json")


def test_a_blocking_check_quarantines_and_a_warning_reports():
    assert parse_check({**BASE, "quarantine": True}).quarantine
    warning = parse_check({**BASE, "severity": "warning"})
    assert warning.severity == "warning" and not warning.quarantine
    # a warning in research/release next to a quarantining blocking raw check is fine
    mixed = parse_check(
        {
            **BASE,
            "quarantine": True,
            "zones": ["raw", "research"],
            "overrides": {"research": {"severity": "warning"}},
        }
    )
    assert catalog.resolve(mixed, "raw").quarantine and not catalog.resolve(mixed, "research").quarantine


def test_quarantine_copy_refuses_a_hand_made_warning_check():
    import dataclasses
    from datetime import date

    import duckdb

    from pipelines.quality.quarantine_rows import quarantine_failures
    from pipelines.quality.results import CheckResult
    from pipelines.quality.sql import RunContext

    check = dataclasses.replace(parse_check({**BASE, "quarantine": True}), severity="warning")
    result = CheckResult(
        check.id, "raw", check.table, "bmi", check.kind, check.category, check.subcategory,
        "warning", 1, 2, 0.01, None, "warn",
    )  # fmt: skip
    con = duckdb.connect()
    con.execute("CREATE TABLE register_visit (bmi DOUBLE, _source_file VARCHAR, _line_no BIGINT)")
    with pytest.raises(ValueError, match="a warning never excludes rows"):
        quarantine_failures(
            con,
            [check],
            {check.id: result},
            holder="h",
            ctx=RunContext(date(2024, 1, 1)),
            sources=["register"],
        )


def test_code_list_checks_only_look_at_codes_of_their_system():
    """A code of another system (RxNorm, SNOMED CT, LOINC where NPU is expected) is not a failure
    of a known-code check: it is counted by the warning fhir.<table>.code_system.known."""
    lib = catalog.load_library()
    for c in lib:
        if c.kind != "code_list" or c.source != "fhir":
            continue
        # atc_code holds ATC codes only (the delivered ATC coding or a mapped code)
        assert c.params["column"] == "atc_code" or "code_system =" in c.params.get("where", ""), c.id
        assert not c.quarantine, c.id
    system_checks = {c.id: c for c in lib if c.id.endswith(".code_system.known")}
    for table in ("condition", "observation", "medication_request", "procedure"):
        check = system_checks[f"fhir.{table}.code_system.known"]
        assert check.severity == "warning" and not check.quarantine
