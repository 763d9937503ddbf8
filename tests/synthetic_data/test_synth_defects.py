"""The defect manifest is exact: every entry names a file/line that really has that defect,
and everything not named is clean. FHIR resources validate with fhir.resources R4B."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict

import pytest
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError
from synth_helpers import REGIONS, file_lines, identifier_ok, normalise

from hdp.settings import SCHEMAS_DIR
from synthetic_data import codes as cs
from synthetic_data import identifiers as ids
from synthetic_data.csv_sources import source_schema
from synthetic_data.defects import DEFECT_CLASSES, FHIR_PLAN
from synthetic_data.generate import generate

HBA1C = {cs.HBA1C_NPU[0], cs.HBA1C_LOINC[0]}


def r4b_valid(resource: dict) -> bool:
    try:
        get_fhir_model_class(resource["resourceType"]).model_validate_json(json.dumps(resource))
    except (ValidationError, KeyError, ValueError):
        return False
    return True


def plausible(source: str) -> dict[str, tuple[float, float]]:
    spec = json.loads((SCHEMAS_DIR / "sources" / f"{source}.json").read_text(encoding="utf-8"))
    return {c["raw"]: tuple(c["plausible"]) for c in spec["columns"] if "plausible" in c}


def test_every_class_is_injected(defective):
    delivery, summary = defective
    manifest = delivery.manifest()
    assert {m["defect_class"] for m in manifest} == set(DEFECT_CLASSES)
    assert [m["defect_id"] for m in manifest] == list(range(1, len(manifest) + 1))
    for m in manifest:
        assert list(m) == [
            "defect_id",
            "defect_class",
            "holder",
            "source",
            "file",
            "line",
            "record_key",
            "column",
        ]
        assert m["source"] in ("register", "prom", "fhir")
        assert (m["line"] is None) == (m["defect_class"] == "file.not_utf8")
    # roughly the requested share of lines is defective
    lines = summary.records()
    assert 0.01 * lines < len(manifest) < 0.04 * lines


def test_csv_manifest_entries_are_exact(defective):
    delivery, _ = defective
    entries = [m for m in delivery.manifest() if m["source"] in ("register", "prom")]
    assert entries
    for m in entries:
        path = delivery.landing(m["holder"]) / m["file"]
        cls = m["defect_class"]
        if cls == "file.not_utf8":
            raw = path.read_bytes()
            with pytest.raises(UnicodeDecodeError):
                raw.decode("utf-8")
            text = raw.decode("cp1252")
            assert re.search("[åäöÅÄÖé]", text)
            assert text.splitlines()[0] == source_schema("register").header
            continue
        schema = source_schema(m["source"])
        lines = file_lines(path)
        line = lines[m["line"] - 1]
        values = line.split(";")
        if cls == "file.truncated":
            assert m["line"] == len(lines)
            assert not path.read_bytes().endswith(b"\n")
            assert len(values) < len(schema.names)
            continue
        assert len(values) == len(schema.names)
        record = dict(zip(schema.raws, values, strict=True))
        if cls in ("identifier.bad_checksum", "identifier.impossible_date"):
            number = normalise(record["personnummer"])
            assert number is not None and m["column"] == "personnummer"
            assert ids.is_valid_luhn(number) == (cls == "identifier.impossible_date")
            try:
                ids.birth_date(number)
                date_ok = True
            except ValueError:
                date_ok = False
            assert date_ok == (cls == "identifier.bad_checksum")
        elif cls == "value.out_of_range":
            lo, hi = plausible(m["source"])[m["column"]]
            assert not lo <= float(record[m["column"]].replace(",", ".")) <= hi
        elif cls == "value.wrong_unit":
            assert m["column"] == "hba1c_mmol_mol"
            assert 4 <= float(record["hba1c_mmol_mol"].replace(",", ".")) <= 16  # a DCCT %, not mmol/mol
        elif cls == "field.missing_required":
            assert record[m["column"]] == ""
        elif cls == "row.duplicate":
            assert line in lines[1 : m["line"] - 1]
        else:
            pytest.fail(f"unexpected CSV defect {cls}")


def test_fhir_manifest_entries_are_exact(defective):
    delivery, _ = defective
    by_file = defaultdict(dict)
    for m in delivery.manifest():
        if m["source"] == "fhir":
            by_file[(m["holder"], m["file"])][m["line"]] = m
    assert by_file
    for region in REGIONS:
        patient_ids = set()
        for rtype, _, res, _ in delivery.resources(region):
            if rtype == "Patient" and res:
                patient_ids.add(res["id"])
        for path in delivery.fhir_files(region).values():
            rel = f"fhir/{path.name}"
            entries = by_file.get((region, rel), {})
            file_type = path.name.split(".")[0]
            seen = set()
            lines = file_lines(path)
            assert all(n <= len(lines) for n in entries)  # every manifest line exists
            for n, line in enumerate(lines, start=1):
                m = entries.get(n)
                try:
                    res = json.loads(line)
                except json.JSONDecodeError:
                    assert m is not None and m["defect_class"] == "json.malformed_line", (rel, n)
                    assert line.startswith('{"resourceType":"' + m["record_key"].split("/")[0])
                    continue
                key = f"{res['resourceType']}/{res['id']}"
                if m is None:
                    # not in the manifest: clean
                    assert res["resourceType"] == file_type
                    assert key not in seen, (rel, n)
                    ref = res.get("subject", {}).get("reference")
                    assert ref is None or ref.split("/")[1] in patient_ids
                    seen.add(key)
                    continue
                cls = m["defect_class"]
                assert m["record_key"] == key
                if cls == "row.duplicate":
                    assert key in seen
                    continue
                seen.add(key)
                if cls == "fhir.wrong_resource_type":
                    assert res["resourceType"] != file_type and r4b_valid(res)
                elif cls in ("fhir.invalid", "field.missing_required"):
                    assert not r4b_valid(res)
                    if cls == "field.missing_required":
                        assert m["column"] not in res
                elif cls == "fhir.dangling_reference":
                    assert res["subject"]["reference"].split("/")[1] not in patient_ids
                    assert r4b_valid(res)
                elif cls == "code.unknown":
                    codes = cs.ICD10SE if file_type == "Condition" else cs.ATC
                    concept = res["code"] if file_type == "Condition" else res["medicationCodeableConcept"]
                    assert concept["coding"][0]["code"] not in codes
                elif cls == "value.out_of_range":
                    if file_type == "QuestionnaireResponse":
                        answers = {i["linkId"]: i["answer"][0] for i in res["item"]}
                        assert (
                            answers["mobility"]["valueCoding"]["code"] == "7"
                            or answers["eq-vas"]["valueInteger"] > 100
                        )
                    else:
                        v = res["valueQuantity"]["value"]
                        code = res["code"]["coding"][0]["code"]
                        assert (code in HBA1C and v > 200) or (code == cs.BMI_LOINC[0] and v < 12)
                elif cls == "value.wrong_unit":
                    assert res["valueQuantity"]["unit"] == "%" and res["valueQuantity"]["value"] < 20
                elif cls in ("identifier.bad_checksum", "identifier.impossible_date"):
                    assert not identifier_ok(res["identifier"][0]["value"])
                else:
                    pytest.fail(f"unexpected FHIR defect {cls}")


def test_each_fhir_class_in_its_planned_files(defective):
    delivery, _ = defective
    seen = Counter(
        (m["file"].split("/")[1].split(".")[0], m["defect_class"])
        for m in delivery.manifest()
        if m["source"] == "fhir"
    )
    for rtype, classes in FHIR_PLAN.items():
        for cls in classes:
            assert seen[(rtype, cls)] >= 3, (rtype, cls)  # at least once per region


def test_clean_run_has_no_defects(clean):
    delivery, summary = clean
    assert delivery.manifest() == []
    assert summary.total_defects == 0
    assert not (delivery.landing("ndr") / "register" / "ndr_visits_tillagg.csv").exists()
    for source in ("register", "prom"):
        path = delivery.landing("ndr") / source_schema(source).file
        assert path.read_bytes().endswith(b"\n")
        lines = file_lines(path)
        assert len(set(lines)) == len(lines)
        for line in lines[1:]:
            values = line.split(";")
            assert len(values) == len(source_schema(source).names)
            assert identifier_ok(normalise(values[0]))
    for region in REGIONS:
        ids_seen = set()
        patients = set()
        refs = []
        for rtype, _, res, _ in delivery.resources(region):
            assert res is not None and res["resourceType"] == rtype
            assert res["id"] not in ids_seen
            ids_seen.add(res["id"])
            if rtype == "Patient":
                patients.add(res["id"])
                assert identifier_ok(res["identifier"][0]["value"])
            else:
                refs.append(res["subject"]["reference"].split("/")[1])
            if rtype == "Condition":
                assert res["code"]["coding"][0]["code"] in cs.ICD10SE
            if rtype == "MedicationRequest":
                assert res["medicationCodeableConcept"]["coding"][0]["code"] in cs.ATC
        assert set(refs) <= patients


def test_fhir_resources_validate_with_r4b(defective):
    """A sample of every resource type in every region (plus all Bundles) validates with R4B."""
    delivery, _ = defective
    bad_lines = {(m["holder"], m["file"], m["line"]) for m in delivery.manifest()}
    per_type = Counter()
    for region in REGIONS:
        for path in delivery.fhir_files(region).values():
            rel = f"fhir/{path.name}"
            for n, line in enumerate(file_lines(path), start=1):
                if (region, rel, n) in bad_lines or n % 7:
                    continue
                res = json.loads(line)
                if per_type[res["resourceType"]] >= 150 * (REGIONS.index(region) + 1):
                    break
                assert r4b_valid(res), (rel, n)
                per_type[res["resourceType"]] += 1
        for bundle_path in sorted((delivery.landing(region) / "fhir" / "bundles").glob("*.json")):
            bundle = json.loads(bundle_path.read_text(encoding="utf-8"))
            assert r4b_valid(bundle), bundle_path.name
            for entry in bundle["entry"]:
                assert r4b_valid(entry["resource"])
    assert set(per_type) == {
        "Patient",
        "Encounter",
        "Condition",
        "Observation",
        "MedicationRequest",
        "Procedure",
        "QuestionnaireResponse",
    }


def test_bundles_reference_existing_patients_and_have_their_own_ids(defective):
    delivery, _ = defective
    for region in REGIONS:
        ndjson_ids = set()
        patients = set()
        for rtype, _, res, _ in delivery.resources(region):
            if res:
                ndjson_ids.add(res["id"])
                if rtype == "Patient":
                    patients.add(res["id"])
        kinds = set()
        for bundle_path in sorted((delivery.landing(region) / "fhir" / "bundles").glob("*.json")):
            bundle = json.loads(bundle_path.read_text(encoding="utf-8"))
            kinds.add(bundle["type"])
            for entry in bundle["entry"]:
                res = entry["resource"]
                assert res["id"] not in ndjson_ids
                assert res["subject"]["reference"].split("/")[1] in patients
                if bundle["type"] == "transaction":
                    assert entry["request"] == {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}
                    assert entry["fullUrl"] == f"urn:uuid:{res['id']}"
                if bundle["type"] == "searchset":
                    assert entry["search"]["mode"] in ("match", "include")
        assert kinds == {"collection", "transaction", "searchset"}


def test_tiny_population_still_gets_every_class(hdp_home):
    summary = generate(seed=1, persons=8, defect_rate=0.01)
    assert all(n >= 1 for n in summary.defects.values())
