"""generate(): landing layout, CSV schema conformance, linkage, determinism, re-runs."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections import Counter, defaultdict
from datetime import date, timedelta
from pathlib import Path

import pytest
from synth_helpers import REGIONS, Delivery, file_lines, identifier_ok, normalise

from hdp.settings import get_settings
from synthetic_data import geo
from synthetic_data import identifiers as ids
from synthetic_data import population as pop
from synthetic_data.csv_sources import source_schema
from synthetic_data.defects import DEFECT_CLASSES
from synthetic_data.fhir import RESOURCE_TYPES
from synthetic_data.generate import GenerationError, generate


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def clean_lines(delivery: Delivery, holder: str, relative: str) -> list[tuple[int, str]]:
    """(line number, text) of data lines not named in the manifest."""
    bad = {m["line"] for m in delivery.manifest() if m["holder"] == holder and m["file"] == relative}
    path = delivery.landing(holder) / relative
    return [(n, t) for n, t in enumerate(file_lines(path), start=1) if n not in bad]


# -- layout ------------------------------------------------------------------------------------


def test_landing_layout_and_delivery_json(defective):
    delivery, summary = defective
    restricted = delivery.settings.restricted
    assert sorted(p.name for p in restricted.iterdir()) == sorted(["ndr", *REGIONS, "synthetic"])
    for holder in ("ndr", *REGIONS):
        landing = delivery.landing(holder)
        meta = json.loads((landing / "delivery.json").read_text(encoding="utf-8"))
        assert meta["holder"] == holder and meta["extract_date"] == "2026-11-01"
        present = sorted(
            str(p.relative_to(landing))
            for p in landing.rglob("*")
            if p.is_file() and p.name != "delivery.json"
        )
        assert meta["files"] == present
        assert not (landing.parent / "landing.tmp").exists()
    ndr = json.loads((delivery.landing("ndr") / "delivery.json").read_text())["files"]
    assert ndr == ["prom/prom_visits.csv", "register/ndr_visits.csv", "register/ndr_visits_tillagg.csv"]
    for region in REGIONS:
        files = json.loads((delivery.landing(region) / "delivery.json").read_text())["files"]
        types = sorted(f.split("/")[1].split(".")[0] for f in files if not f.startswith("fhir/bundles/"))
        assert types == sorted(RESOURCE_TYPES)
        assert [f for f in files if f.startswith("fhir/bundles/")] == [
            "fhir/bundles/collection.json",
            "fhir/bundles/searchset.json",
            "fhir/bundles/transaction.json",
        ]


def test_some_but_not_all_ndjson_files_are_gzip(defective):
    delivery, summary = defective
    gz = [f for f in summary.files if f.file.endswith(".ndjson.gz")]
    plain = [f for f in summary.files if f.file.endswith(".ndjson")]
    assert gz and len(plain) > len(gz)
    for f in gz:
        raw = (delivery.landing(f.holder) / f.file).read_bytes()
        assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\0\0\0\0"  # gzip, mtime 0 (reproducible)
        assert gzip.decompress(raw).decode("utf-8").count("\n") == f.records


def test_summary_counts_match_files(defective):
    delivery, summary = defective
    for f in summary.files:
        path = delivery.landing(f.holder) / f.file
        if f.file.endswith(".json"):
            assert len(json.loads(path.read_text())["entry"]) == f.records
        elif f.file == "register/ndr_visits_tillagg.csv":
            assert len(path.read_bytes().decode("cp1252").splitlines()) - 1 == f.records
        else:
            lines = file_lines(path)
            header = 1 if f.source in ("register", "prom") else 0
            assert len(lines) - header == f.records
    counts = Counter(m["defect_class"] for m in delivery.manifest())
    assert dict(summary.defects) == {c: counts[c] for c in DEFECT_CLASSES}
    assert summary.persons == 600 and summary.persons_generated_numbers == 0 and summary.note is None


def test_summary_holds_no_identifiers(defective):
    delivery, summary = defective
    text = "\n".join(summary.lines()) + repr(summary)
    assert not re.search(r"\d{8,}", text)
    for name in geo.FAMILY_NAMES:
        assert name not in text


# -- CSV schema conformance ---------------------------------------------------------------------


@pytest.mark.parametrize("source", ["register", "prom"])
def test_csv_header_separator_encoding(defective, source):
    delivery, _ = defective
    schema = source_schema(source)
    spec = json.loads((Path(__file__).parents[2] / "schemas/sources" / f"{source}.json").read_text())
    path = delivery.landing("ndr") / spec["file"]
    raw = path.read_bytes()
    raw.decode("utf-8")  # strict
    assert not raw.startswith(b"\xef\xbb\xbf")
    header = raw.split(b"\n", 1)[0].decode()
    assert header == ";".join(c["name"] for c in spec["columns"])
    assert header == schema.header


@pytest.mark.parametrize("source", ["register", "prom"])
def test_clean_csv_rows_conform(defective, source):
    delivery, _ = defective
    spec = json.loads((Path(__file__).parents[2] / "schemas/sources" / f"{source}.json").read_text())
    columns = spec["columns"]
    rows = clean_lines(delivery, "ndr", spec["file"])[1:]
    assert len(rows) > 1000
    seen_keys = set()
    for _, line in rows:
        values = line.split(";")
        assert len(values) == len(columns)
        record = dict(zip((c["raw"] for c in columns), values, strict=True))
        for c, v in zip(columns, values, strict=True):
            if c["required"]:
                assert v != "", c["raw"]
            if v == "":
                continue
            if c["type"] == "DATE":
                date.fromisoformat(v)
            elif c["type"] == "INTEGER":
                assert re.fullmatch(r"\d+", v), c["raw"]
                lo, hi = c["plausible"]
                assert lo <= int(v) <= hi
            elif c["type"] == "DOUBLE":
                assert re.fullmatch(r"\d+(,\d+)?", v), (c["raw"], "decimal comma")
                lo, hi = c["plausible"]
                assert lo <= float(v.replace(",", ".")) <= hi
            if "allowed" in c:
                assert v in c["allowed"]
        pnr = normalise(record["personnummer"])
        assert pnr is not None and identifier_ok(pnr)
        key = (pnr, record["visit_date"])
        assert key not in seen_keys
        seen_keys.add(key)


def test_register_has_decimal_commas_empty_optionals_and_mixed_forms(defective):
    delivery, _ = defective
    rows = [line.split(";") for _, line in clean_lines(delivery, "ndr", "register/ndr_visits.csv")[1:]]
    bmi = [r[7] for r in rows if r[7]]
    assert bmi and all("," in v and "." not in v for v in bmi)
    assert any(r[6] == "" for r in rows) and any(r[10] == "" for r in rows)
    forms = Counter(
        "12"
        if re.fullmatch(r"\d{12}", r[0])
        else "12-"
        if re.fullmatch(r"\d{8}-\d{4}", r[0])
        else "10-"
        if re.fullmatch(r"\d{6}-\d{4}", r[0])
        else "10+"
        if re.fullmatch(r"\d{6}\+\d{4}", r[0])
        else "other"
        for r in rows
    )
    assert forms["other"] == 0
    assert forms["12"] > forms["12-"] > 0 and forms["10-"] > 0 and forms["10+"] > 0
    # '+' only for persons aged 100 or more at the extract date
    for r in rows:
        if "+" in r[0]:
            assert ids.age_on(normalise(r[0]), date(2026, 11, 1)) >= 100


def test_postal_codes_match_the_home_region(clean):
    delivery, _ = clean
    patients = patients_by_number(delivery)
    checked = 0
    for _, line in clean_lines(delivery, "ndr", "register/ndr_visits.csv")[1:]:
        r = line.split(";")
        if not r[3]:
            continue
        checked += 1
        postal = r[3].replace(" ", "")
        assert re.fullmatch(r"\d{5}", postal)
        regions = {reg for reg, res in patients[normalise(r[0])] if res["address"][0]["postalCode"] == postal}
        assert len(regions) == 1
        lo, hi = geo.POSTAL_RANGES[regions.pop()][0]
        assert lo <= int(postal) <= hi
    assert checked > 1500


# -- linkage -----------------------------------------------------------------------------------


def patients_by_number(delivery: Delivery) -> dict[str, list[tuple[str, dict]]]:
    out: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for region in REGIONS:
        for rtype, _, res, _ in delivery.resources(region):
            if (
                rtype == "Patient"
                and res
                and res["resourceType"] == "Patient"
                and identifier_ok(res["identifier"][0]["value"])
            ):
                out[res["identifier"][0]["value"]].append((region, res))
    return out


def test_same_persons_across_holders(clean):
    delivery, summary = clean
    patients = patients_by_number(delivery)
    register = {
        normalise(line.split(";")[0])
        for _, line in clean_lines(delivery, "ndr", "register/ndr_visits.csv")[1:]
    }
    prom = {
        normalise(line.split(";")[0]) for _, line in clean_lines(delivery, "ndr", "prom/prom_visits.csv")[1:]
    }
    assert len(register) == 300
    assert set(patients) == register  # every NDR person is in a region's journal and vice versa
    assert prom <= register and len(prom) > 100
    in_two = [n for n, v in patients.items() if len({r for r, _ in v}) == 2]
    assert len(in_two) == summary.moved_region > 0
    # same person, same sex, birth date and identifier system in every region
    for number, entries in patients.items():
        for _, res in entries:
            assert res["gender"] == ids.sex(number)
            assert res["birthDate"] == ids.birth_date(number).isoformat()
            system = res["identifier"][0]["system"]
            assert system == (
                ids.SAMORDNINGSNUMMER_SYSTEM if ids.is_samordningsnummer(number) else ids.PERSONNUMMER_SYSTEM
            )
    for entries in patients.values():
        for region, res in entries:
            lo, hi = geo.POSTAL_RANGES[region][0]
            assert lo <= int(res["address"][0]["postalCode"]) <= hi


def test_samordningsnummer_in_fhir_are_day_plus_60_of_test_numbers(clean):
    delivery, summary = clean
    listed = set(ids.test_numbers())
    samordning = [n for n in patients_by_number(delivery) if ids.is_samordningsnummer(n)]
    assert len(samordning) == summary.samordningsnummer > 0
    for n in samordning:
        assert 61 <= int(n[6:8]) <= 91 and ids.is_valid_luhn(n)
        assert ids.with_check_digit(n[:6] + f"{int(n[6:8]) - 60:02d}" + n[8:11]) in listed


def test_register_visits_appear_as_encounters_within_3_days(clean):
    delivery, _ = clean
    patient_number: dict[tuple[str, str], str] = {}
    encounter_days: dict[str, set[date]] = defaultdict(set)
    for region in REGIONS:
        for rtype, _, res, _ in delivery.resources(region):
            if rtype == "Patient":
                patient_number[(region, res["id"])] = res["identifier"][0]["value"]
        for rtype, _, res, _ in delivery.resources(region):
            if rtype == "Encounter" and res["type"][0]["coding"][0]["code"] == "390906007":
                number = patient_number[(region, res["subject"]["reference"].split("/")[1])]
                encounter_days[number].add(date.fromisoformat(res["period"]["start"][:10]))
    rows = clean_lines(delivery, "ndr", "register/ndr_visits.csv")[1:]
    for _, line in rows:
        r = line.split(";")
        day = date.fromisoformat(r[4])
        days = encounter_days[normalise(r[0])]
        assert any(abs((d - day).days) <= 3 for d in days)


def test_hba1c_values_agree_between_register_and_journal(clean):
    delivery, _ = clean
    patient_number = {}
    journal: dict[tuple[str, str], set[float]] = defaultdict(set)
    for region in REGIONS:
        for rtype, _, res, _ in delivery.resources(region):
            if rtype == "Patient":
                patient_number[res["id"]] = res["identifier"][0]["value"]
        for rtype, _, res, _ in delivery.resources(region):
            if rtype == "Observation" and res["code"]["coding"][0]["code"] in ("NPU27300", "59261-8"):
                n = patient_number[res["subject"]["reference"].split("/")[1]]
                journal[(n, res["effectiveDateTime"][:10])].add(res["valueQuantity"]["value"])
    agree = total = 0
    for _, line in clean_lines(delivery, "ndr", "register/ndr_visits.csv")[1:]:
        r = line.split(";")
        if not r[6]:
            continue
        day = date.fromisoformat(r[4])
        values = set().union(
            *(
                journal.get((normalise(r[0]), (day + timedelta(days=s)).isoformat()), set())
                for s in range(-3, 4)
            )
        )
        if values:
            total += 1
            agree += float(r[6]) in values
    # a visit whose own HbA1c is missing from the journal can meet a neighbouring visit (±3 days)
    assert total > 500 and agree >= 0.99 * total


# -- determinism and re-runs -------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(hdp_home, tmp_path, monkeypatch):
    generate(seed=9, persons=150, defect_rate=0.03)
    first = tree_digest(hdp_home.restricted)
    other = tmp_path / "other_home"
    monkeypatch.setenv("HDP_HOME", str(other))
    get_settings.cache_clear()
    generate(seed=9, persons=150, defect_rate=0.03)
    assert tree_digest(get_settings().restricted) == first
    generate(seed=10, persons=150, defect_rate=0.03)
    assert tree_digest(get_settings().restricted) != first


def test_rerun_replaces_instead_of_appending(hdp_home):
    generate(seed=2, persons=80, defect_rate=0.05)
    landing = hdp_home.landing_dir("ndr")
    (landing / "register" / "stale.csv").write_text("left over\n")
    assert (landing / "register" / "ndr_visits_tillagg.csv").exists()
    summary = generate(seed=2, persons=80, defect_rate=0.0)
    assert not (landing / "register" / "stale.csv").exists()
    assert not (landing / "register" / "ndr_visits_tillagg.csv").exists()
    assert hdp_home.defect_manifest.read_text() == ""
    assert summary.total_defects == 0
    first = tree_digest(hdp_home.restricted)
    generate(seed=2, persons=80, defect_rate=0.0)
    assert tree_digest(hdp_home.restricted) == first


def test_rejects_bad_arguments(hdp_home):
    with pytest.raises(GenerationError, match="defect_rate"):
        generate(persons=10, defect_rate=0.5)
    with pytest.raises(GenerationError, match="persons"):
        generate(persons=0)
    with pytest.raises(GenerationError, match="extract_date"):
        generate(persons=10, extract_date=date(2021, 12, 31))


def test_summary_says_when_numbers_were_generated(hdp_home, monkeypatch):
    small = tuple(n for n in ids.test_numbers() if int(n[:4]) == 1950)
    monkeypatch.setattr(pop.ids, "test_numbers", lambda: small)
    pop.build_population.cache_clear()
    try:
        summary = generate(seed=1, persons=len(small) + 5, defect_rate=0.0)
    finally:
        pop.build_population.cache_clear()
    assert summary.persons_generated_numbers == 5
    assert summary.persons_from_test_list == len(small)
    assert summary.note is not None and "generated numbers" in summary.note
    assert any(line.startswith("NOTE:") for line in summary.lines())
