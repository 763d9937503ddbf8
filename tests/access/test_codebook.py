"""A release's codebook and sanitised manifest: the pure builder, the API (permit-checked like
the schema), ``Client.describe`` and the web page; the slow part on the demo release built in
this process."""

from __future__ import annotations

import json
import re

import pytest
from access_support import auth
from hdp_client import Client, NotPermitted
from outputs_support import browser

from access.codebook import (
    STRUCTURAL,
    build_codebook,
    holder_gates,
    load_data,
    public_manifest,
)
from governance.catalogue import load_catalogue
from hdp.settings import holders

MANIFEST = {
    "release_id": "rel-00042",
    "request": {
        "request_id": 42,
        "project": "P",
        "purpose": "scientific_research",
        "holders": ["ndr", "region_skane"],
        "variables": ["register_visit.visit_date", "register_visit.hba1c_mmol_mol"],
        "output_tier": "record",
        "period": ["2022-01-01", None],
        "cohort_criteria": {},
        "applicant_email": "anna@example.se",  # not allow-listed: never shown
    },
    "approvals": [
        {
            "holder_id": "ndr",
            "reviewer": "stina.ndr",
            "decided_at": "2026-01-02T10:00:00+00:00",
            "justification": "ok",
        }
    ],
    "rows": {"register_visit": 100},
    "persons": 40,
    "excluded": {
        "persons_by_consent": 3,
        "persons_consent_unverifiable": 1,
        "rows_without_linkable_person": 2,
    },
    "files": {"register_visit.parquet": {"sha256": "ab" * 32, "bytes": 10}},
    "disclosure": {
        "register_visit": {"k": 5, "quasi_identifiers": ["sex"], "persons_suppressed": 4, "rows_dropped": 0}
    },
    "code_version": "0123456789abcdef0123",
    "policy": {
        "policy_file": "/srv/hdp/schemas/policies/release.json",
        "rules": [{"variable": "*.visit_date", "action": "shift", "max_days": 14}],
    },
    "quality": {
        "passed": True,
        "checks": {"evaluated": 9, "passed": 8, "warned": 1, "failed": 0, "skipped": 3},
        "failed": [],
        "warned": [{"id": "reg.hba1c.range"}],
        "variables": {"register_visit.hba1c_mmol_mol": {"completeness": 0.97}},
    },
    "built_at": "2026-01-03T12:00:00+00:00",
    "cell_key_secret": "00ff",  # a field the builder never writes; if it ever did, it stays hidden
}
SCHEMA = {
    "output_tier": "record",
    "tables": {
        "register_visit": [
            {"name": "person_id", "type": "VARCHAR"},
            {"name": "holder", "type": "VARCHAR"},
            {"name": "visit_date", "type": "DATE"},
            {"name": "hba1c_mmol_mol", "type": "DOUBLE"},
        ]
    },
}


def _gate_rows(zone, started, run_id, verdicts):
    return [
        {
            "zone": zone,
            "started_at": started,
            "run_id": run_id,
            "check_id": f"c{i}",
            "verdict": v,
            "severity": "blocking",
        }
        for i, v in enumerate(verdicts)
    ]


def test_every_catalogue_column_has_a_label_in_both_languages():
    data = load_data()
    missing = []
    for name in [*load_catalogue(), *(f"any.{c}" for c in STRUCTURAL)]:
        table, column = name.split(".")
        label = data.entry(table, column).get("label") or {}
        if not (label.get("sv") or "").strip() or not (label.get("en") or "").strip():
            missing.append(name)
    assert missing == []


def test_holder_gates_take_the_latest_run_before_the_build_and_no_run_id():
    history = (
        _gate_rows("research", "2026-01-01T09:00:00+00:00", "manual__old", ["fail"])
        + _gate_rows("research", "2026-01-02T09:00:00+00:00", "manual__used", ["pass", "warn", "skipped"])
        + _gate_rows("research", "2026-01-05T09:00:00+00:00", "manual__after", ["fail"])
        + _gate_rows("raw", "2026-01-02T08:00:00+00:00", "manual__raw", ["pass"])
    )
    gates = holder_gates(history, "2026-01-03T12:00:00+00:00")
    assert gates == [
        {"zone": "raw", "date": "2026-01-02", "passed": True, "checks": 1, "failed": [], "warned": []},
        {
            "zone": "research",
            "date": "2026-01-02",
            "passed": True,
            "checks": 2,
            "failed": [],
            "warned": ["c1"],
        },
    ]
    assert "manual__" not in json.dumps(gates)


def test_the_codebook_joins_variables_and_provenance():
    book = build_codebook(
        "rel-00042",
        schema=SCHEMA,
        manifest=MANIFEST,
        data=load_data(),
        holder_registry={h.id: h for h in holders()},
        extract_dates={},
        gates={
            "ndr": holder_gates(_gate_rows("raw", "2026-01-02T08:00:00+00:00", "manual__x", ["pass"]), None)
        },
    )
    by_name = {v["name"]: v for v in book["variables"]}
    hba1c = by_name["register_visit.hba1c_mmol_mol"]
    assert hba1c["label"] == {"sv": "HbA1c (IFCC)", "en": "HbA1c (IFCC)"}
    assert (hba1c["type"], hba1c["unit"], hba1c["range"]) == ("DOUBLE", "mmol/mol", [20, 200])
    assert hba1c["disclosure_class"] == "health" and hba1c["completeness"] == 0.97
    visit = by_name["register_visit.visit_date"]
    assert visit["disclosure_class"] == "quasi_identifier"
    assert visit["release_rule"] == {"action": "shift", "max_days": 14}
    assert by_name["register_visit.person_id"]["disclosure_class"] == "pseudonym"
    prov = book["provenance"]
    assert [(h["id"], h["name"], h["extract_date"]) for h in prov["holders"]] == [
        ("ndr", "Nationella diabetesregistret (NDR)", None),
        ("region_skane", "Region Skåne", None),
    ]
    assert prov["holders"][0]["quality_gates"][0]["zone"] == "raw"
    assert {e["reason"]: e["count"] for e in prov["exclusions"]} == {
        "consent.opted_out": 3,
        "consent.unverifiable": 1,
        "person.unlinkable": 2,
        "k_anonymity.suppressed": 4,
        "k_anonymity.rows_dropped": 0,
    }
    assert all(e["label"]["sv"] and e["label"]["en"] for e in prov["exclusions"])
    assert prov["disclosure"] == {
        "output_tier": "record",
        "k_anonymity": {"register_visit": 5},
        "quasi_identifiers": {"register_visit": ["sex"]},
        "min_cell_count": {"ndr": 5, "region_skane": 10},
    }
    assert prov["quality"]["passed"] and prov["quality"]["warned"] == ["reg.hba1c.range"]
    text = json.dumps(book)
    assert "stina" not in text and "anna@" not in text and "00ff" not in text


def test_the_public_manifest_keeps_only_allow_listed_fields():
    m = public_manifest(MANIFEST)
    assert m["approvals"] == [{"holder_id": "ndr", "decided_at": "2026-01-02T10:00:00+00:00"}]
    assert "applicant_email" not in m["request"] and "cell_key_secret" not in m
    assert m["policy"]["policy_file"] == "(withheld)"  # an absolute path
    assert m["files"] == MANIFEST["files"]
    assert "stina" not in json.dumps(m)


# -- the API, the client and permits (synthetic releases) ----------------------------------------


def test_codebook_and_manifest_are_permit_checked_like_the_schema(client, world):
    r = client.get("/releases/r_rec/codebook", headers=auth(world.alice))
    assert r.status_code == 200, r.text
    book = r.json()
    assert book["release_id"] == "r_rec" and book["output_tier"] == "record"
    names = {v["name"] for v in book["variables"]}
    assert (
        "register_visit.hba1c_mmol_mol" in names and "register_visit.smoking" not in names
    )  # permit's columns
    assert all(v["type"] and v["label"]["sv"] and v["label"]["en"] for v in book["variables"])
    for path in ("/releases/r_bob/codebook", "/releases/r_bob/manifest"):
        r = client.get(path, headers=auth(world.alice))
        assert r.status_code == 403 and r.json()["error"] == "permit.none"
    assert client.get("/releases/r_rec/codebook").status_code == 401
    m = client.get("/releases/r_rec/manifest", headers=auth(world.alice)).json()
    assert m["release_id"] == "r_rec" and set(m) <= {"release_id", "tables", "holders", "synthetic"}


def test_client_describe_returns_the_codebook(client, world):
    with Client("http://testserver", world.alice, release="r_agg", transport=client._transport) as c:
        book = c.describe()
        assert book["release_id"] == "r_agg"
        assert book["provenance"]["disclosure"]["aggregate"]["thresholds"]  # the aggregate tier's settings
        assert c.manifest()["release_id"] == "r_agg"
        with pytest.raises(NotPermitted) as err:
            c.describe("r_bob")
        assert str(err.value) == "403 permit.none: you have no active permit for this release"


# -- the demo release, built here (slow) ----------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from tests.access.built_release import demo_release

    with demo_release(tmp_path_factory.mktemp("codebook_demo")) as built:
        from access.app import create_app

        app = create_app()
        yield built, app
        app.state.service.close()


@pytest.mark.slow
def test_every_released_column_of_the_demo_release_has_labels_and_a_type(demo):
    from fastapi.testclient import TestClient

    from edge.demo import DEMO_REQUEST, RESEARCHER

    built, app = demo
    with (
        TestClient(app) as http,
        Client("http://testserver", built.tokens[RESEARCHER], transport=http._transport) as c,
    ):
        book = c.describe(built.release_id)
        manifest = c.manifest(built.release_id)
    released = {v["name"]: v for v in book["variables"]}
    requested = set(DEMO_REQUEST["variables"])
    assert requested <= set(released)
    for v in released.values():
        assert v["label"]["sv"].strip() and v["label"]["en"].strip(), v["name"]
        assert v["type"], v["name"]
        assert v["disclosure_class"] != "unclassified", v["name"]
    assert released["condition.recorded_date"]["type"] == "DATE"
    assert released["condition.code"]["code_system"]["id"] == "icd10se"
    assert released["prom_response.eq5d_index_se_5l_tto_2020"]["value_set"]["id"] == "se_5l_tto_2020"
    prem = released["prom_response.prem_overall_positive"]  # a derived PREM dimension (issue 17)
    assert prem["type"] == "INTEGER" and [v["code"] for v in prem["values"]] == ["1", "0"]
    assert prem["disclosure_class"] == "health" and prem["release_rule"] == {"action": "keep"}
    prov = book["provenance"]
    assert sorted(h["id"] for h in prov["holders"]) == sorted(DEMO_REQUEST["holders"])
    assert all(h["extract_date"] for h in prov["holders"])  # from each delivery, before the build
    # recorded in the manifest at build time, so a later delivery cannot change them
    assert manifest["extract_dates"] == {h["id"]: h["extract_date"] for h in prov["holders"]}
    assert all({g["zone"] for g in h["quality_gates"]} == {"raw", "research"} for h in prov["holders"])
    assert prov["quality"]["passed"] is True
    assert prov["disclosure"]["output_tier"] == "record" and prov["disclosure"]["min_cell_count"]
    text = json.dumps([book, manifest])
    assert "test-research" not in text and "test-raw" not in text  # no run ids
    assert "reviewer" not in text and "justification" not in text
    assert str(built.home) not in text  # no internal path


@pytest.mark.slow
def test_the_demo_release_carries_the_prem_share_as_a_column_mean(demo):
    """The released PREM flag's mean is the share of positive answers that survey_shares gives
    for the released answers themselves, "not applicable" left out (issue 17, item 3)."""
    import duckdb

    from hdp.settings import get_settings
    from pipelines.outcomes.survey import PREM_DEFAULT, survey_shares

    built, _ = demo
    path = get_settings().releases_dir / built.release_id / "prom_response.parquet"
    released = (
        duckdb.connect().sql(f"SELECT prem_overall, prem_overall_positive FROM '{path}'").to_arrow_table()
    )
    flags = released["prem_overall_positive"].to_pylist()
    assert set(flags) <= {0, 1, None} and 0 in flags and 1 in flags
    answers = released["prem_overall"].to_pylist()
    assert any(a == "ej aktuellt" for a in answers)  # the synthetic answers include "not applicable"
    assert all(f is None for a, f in zip(answers, flags, strict=True) if a == "ej aktuellt")
    shares = survey_shares(released, PREM_DEFAULT.only("overall"))
    applicable = [f for f in flags if f is not None]
    assert shares["share_positive"].to_pylist() == [sum(applicable) / len(applicable)]
    assert shares["n_denominator"].to_pylist() == [len(applicable)]


@pytest.mark.slow
def test_the_codebook_page_in_both_languages_for_the_release_researchers_only(demo):
    from edge.demo import OTHER_RESEARCHER, RESEARCHER

    built, app = demo
    path = f"/web/releases/{built.release_id}/codebook"
    for lang, label, heading in (
        ("sv", "Diagnos (ICD-10-SE)", "Ursprung"),
        ("en", "Diagnosis (ICD-10-SE)", "Provenance"),
    ):
        page = browser(app, built.tokens[RESEARCHER], lang).get(path)
        assert page.status_code == 200
        assert label in page.text and heading in page.text and "condition.recorded_date" in page.text
        assert not re.search(r'(src|href)="(https?:)?//', page.text)  # nothing from outside the machine
    assert browser(app, built.tokens[OTHER_RESEARCHER], "en").get(path).status_code == 404
