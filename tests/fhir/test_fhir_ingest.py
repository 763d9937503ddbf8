"""Ingestion end to end on small landing areas: malformed input, bundles, links, codes, re-runs."""

from __future__ import annotations

import codecs
import gzip
import json

import duckdb
import fhir_factory as f
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.fhir.ingest import ingest_fhir

HOLDER = "region_uppsala"


def _line(r) -> str:
    return json.dumps(r, ensure_ascii=False) + "\n"


def _write(landing, name, text: str | bytes) -> None:
    p = landing / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".gz"):
        p.write_bytes(gzip.compress(text.encode() if isinstance(text, str) else text))
    elif isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")


@pytest.fixture
def landing(hdp_home):
    d = hdp_home.landing_dir(HOLDER) / "fhir"
    d.mkdir(parents=True)
    return d


def _db(hdp_home):
    return duckdb.connect(str(hdp_home.raw_db(HOLDER)), read_only=True)


def _malformed_landing(landing):
    patients = [f.patient("p1"), f.patient("p2", gender="bogus"), f.patient("p3")]
    text = "".join(_line(p) for p in patients)
    text += "{not json\n"  # line 4: json.malformed
    text += _line(f.encounter("e9"))  # line 5: wrong type
    text += _line(f.patient("p1"))  # line 6: duplicate id
    p_unknown = f.patient("p4")
    p_unknown["favouriteColour"] = "blue"
    text += _line(p_unknown)  # line 7: unknown element
    _write(landing, "Patient.ndjson", text)
    _write(landing, "Encounter.ndjson.gz", _line(f.encounter("e1")) + _line(f.encounter("e2", pid="ghost")))
    obs = _line(f.observation("o1")) + _line(f.observation("o2"))
    _write(landing, "Observation.ndjson", obs + _line(f.observation("o3"))[:40])  # truncated last line
    _write(landing, "Condition.ndjson", _line(f.condition("c1")) + _line(f.condition("c2", code="X99.9")))
    _write(
        landing,
        "MedicationRequest.ndjson",
        _line(f.medication_request()) + b"\xff\xfe bad\n".decode("latin-1"),
    )
    (landing / "MedicationRequest.ndjson").write_bytes(
        _line(f.medication_request()).encode() + b'{"resourceType": "MedicationRequest", "id": "\xff"}\n'
    )
    bad_proc = f.procedure("pr2")
    bad_proc["status"] = 7
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
                "resource": {k: v for k, v in f.procedure("x").items() if k != "id"}
                | {"encounter": {"reference": "urn:uuid:22222222-2222-4222-8222-222222222222"}},
                "request": {"method": "POST", "url": "Procedure"},
            },
            {
                "fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222",
                "resource": {k: v for k, v in f.encounter("x").items() if k != "id"},
                "request": {"method": "POST", "url": "Encounter"},
            },
            {"resource": bad_proc, "request": {"method": "PUT", "url": "Procedure/pr2"}},
        ],
    }
    _write(landing, "bundles/b1.json", json.dumps(bundle))
    coll = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": f.eq5d("q1")}]}
    _write(landing, "bundles/b2.json", json.dumps(coll))
    search = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": f.eq5d("q2", levels=(1, 1, 1, 1, 9)), "search": {"mode": "match"}},
            {"resource": {"resourceType": "OperationOutcome", "issue": []}, "search": {"mode": "outcome"}},
        ],
    }
    _write(landing, "bundles/b3.json", json.dumps(search))


def test_malformed_input_quarantines_exactly_the_bad_resources(hdp_home, landing):
    _malformed_landing(landing)
    res = ingest_fhir(HOLDER, settings=hdp_home, workers=0)
    con = _db(hdp_home)
    q = con.sql(
        "SELECT source_file, line_no, record_key, reason_code, detail FROM quarantine "
        "ORDER BY source_file, line_no NULLS LAST, reason_code"
    ).fetchall()
    got = {(r[0], r[1], r[3]) for r in q}
    assert got == {
        ("fhir/Patient.ndjson", 2, "fhir.invalid"),
        ("fhir/Patient.ndjson", 4, "json.malformed"),
        ("fhir/Patient.ndjson", 5, "fhir.wrong_resource_type"),
        ("fhir/Patient.ndjson", 6, "fhir.duplicate_id"),
        ("fhir/Patient.ndjson", 7, "fhir.invalid"),
        ("fhir/Observation.ndjson", 3, "file.truncated"),
        ("fhir/MedicationRequest.ndjson", 2, "encoding.not_utf8"),
        ("fhir/bundles/b1.json", None, "fhir.invalid"),
    }
    assert res.quarantined == {
        "encoding.not_utf8": 1,
        "fhir.duplicate_id": 1,
        "fhir.invalid": 3,
        "fhir.wrong_resource_type": 1,
        "file.truncated": 1,
        "json.malformed": 1,
    }
    ids = dict(con.sql("SELECT resource_type, list(id ORDER BY id) FROM fhir_resource GROUP BY 1").fetchall())
    assert ids["Patient"] == ["p1", "p3"]
    assert ids["Observation"] == ["o1", "o2"]
    assert ids["Procedure"] == ["11111111-1111-4111-8111-111111111111"]
    assert sorted(ids["Encounter"]) == ["22222222-2222-4222-8222-222222222222", "e1", "e2"]
    assert ids["QuestionnaireResponse"] == ["q1", "q2"]  # level 9 is plausibility, not validity
    # transaction: the urn:uuid reference now points at the entry's id
    assert con.sql("SELECT encounter_id FROM fhir_procedure").fetchall() == [
        ("22222222-2222-4222-8222-222222222222",)
    ]
    # details name paths and reasons only; originals keep the raw bytes
    details = " ".join(r[4] for r in q)
    assert "Patient.gender: not a permitted code" in details
    assert "Patient.favouriteColour: unknown element" in details
    for value in ("bogus", "blue", "191212121212", "Testsson"):
        assert value not in details
    orig = con.execute(
        "SELECT original FROM quarantine WHERE line_no = 2 AND source_file = 'fhir/Patient.ndjson'"
    ).fetchall()[0][0]
    assert json.loads(orig)["gender"] == "bogus"
    # links and terminology are flagged, not dropped
    flags = set(con.sql("SELECT resource_type, resource_key, flag_code, path FROM fhir_flag").fetchall())
    assert ("Encounter", "e2", "fhir.dangling_reference", "Encounter.subject") in flags
    assert ("Condition", "c2", "code.unknown", "Condition.code.coding[0]") in flags
    assert res.dangling_references >= 1 and res.unknown_codes == 1
    assert con.execute("SELECT count(*) FROM fhir_condition").fetchall()[0][0] == 2


def test_flattened_tables_have_exactly_the_contract_columns(hdp_home, landing):
    for r in f.one_of_each():
        _write(landing, f"{r['resourceType']}.ndjson", _line(r))
    ingest_fhir(HOLDER, settings=hdp_home, workers=0)
    con = _db(hdp_home)
    expected = {
        "fhir_resource": ["resource_type", "id", "resource", "_source_file", "_line_no"],
        "fhir_patient": [
            "patient_id",
            "identifier_system",
            "personnummer",
            "family_name",
            "given_name",
            "gender",
            "birth_date",
            "postal_code",
            "deceased_date",
        ],
        "fhir_encounter": ["encounter_id", "patient_id", "status", "class_code", "start_time", "end_time"],
        "fhir_condition": [
            "condition_id",
            "patient_id",
            "encounter_id",
            "code_system",
            "code",
            "recorded_date",
        ],
        "fhir_observation": [
            "observation_id",
            "patient_id",
            "encounter_id",
            "code_system",
            "code",
            "value",
            "unit",
            "effective_time",
        ],
        "fhir_medication_request": [
            "medication_request_id",
            "patient_id",
            "encounter_id",
            "code_system",
            "code",
            "atc_code",
            "authored_on",
            "status",
        ],
        "fhir_procedure": [
            "procedure_id",
            "patient_id",
            "encounter_id",
            "code_system",
            "code",
            "performed_date",
        ],
        "fhir_eq5d_response": [
            "questionnaire_response_id",
            "patient_id",
            "encounter_id",
            "authored",
            "mobility",
            "self_care",
            "usual_activities",
            "pain_discomfort",
            "anxiety_depression",
            "eq_vas",
        ],
    }
    for table, cols in expected.items():
        assert [c[0] for c in con.sql(f"DESCRIBE {table}").fetchall()] == cols, table
    assert con.sql("SELECT * FROM fhir_patient").fetchall() == [
        ("p1", f.PNR, "191212121212", "Testsson", "Tolvan", "male", "1912-12-12", "75237", None)
    ]
    assert con.sql("SELECT * FROM fhir_eq5d_response").fetchall() == [
        ("q1", "p1", "e1", "2024-03-01T09:20:00+01:00", 1, 2, 3, 4, 5, 70)
    ]
    assert con.sql("SELECT value, unit, code FROM fhir_observation").fetchall() == [
        (52.0, "mmol/mol", "NPU27300")
    ]
    assert con.execute("SELECT count(*) FROM fhir_flag").fetchall()[0][0] == 0


@pytest.mark.slow
def test_rerun_is_idempotent_and_workers_agree(hdp_home, landing):
    _malformed_landing(landing)
    first = ingest_fhir(HOLDER, settings=hdp_home, workers=2, chunk_lines=2)

    def snapshot():
        con = _db(hdp_home)
        try:
            return {
                t: sorted(map(str, con.sql(f"SELECT * FROM {t}").fetchall()))
                for t in ("fhir_resource", "fhir_patient", "fhir_flag", "fhir_procedure", "quarantine")
            }
        finally:
            con.close()

    a = snapshot()
    second = ingest_fhir(HOLDER, settings=hdp_home, workers=0)
    assert first == second
    assert snapshot() == a


def test_oversized_and_too_deep_lines_are_quarantined(hdp_home, landing, monkeypatch):
    import pipelines.fhir.ingest as ing

    monkeypatch.setattr(ing, "MAX_RESOURCE_BYTES", 2000)
    monkeypatch.setattr(ing, "MAX_JSON_DEPTH", 12)
    big = f.patient("big")
    big["name"][0]["given"] = ["G" * 3000]
    deep = f.patient("deep")
    ext: dict = {"url": "http://e.org/x", "valueString": "v"}
    for _ in range(8):
        ext = {"url": "http://e.org/x", "extension": [ext]}
    deep["extension"] = [ext]
    _write(landing, "Patient.ndjson", _line(f.patient("ok")) + _line(big) + _line(deep))
    res = ingest_fhir(HOLDER, settings=hdp_home, workers=0)
    assert res.quarantined == {"fhir.too_large": 1, "json.too_deep": 1}
    con = _db(hdp_home)
    q = con.sql(
        "SELECT line_no, reason_code, detail, original IS NOT NULL FROM quarantine ORDER BY line_no"
    ).fetchall()
    assert [(r[0], r[1], r[3]) for r in q] == [(2, "fhir.too_large", True), (3, "json.too_deep", True)]
    assert "G" * 10 not in " ".join(r[2] for r in q)
    assert con.sql("SELECT patient_id FROM fhir_patient").fetchall() == [("ok",)]


def test_json_depth_ignores_brackets_in_strings():
    from pipelines.fhir.ingest import json_depth

    assert json_depth(b'{"a":[{"b":"[[[{{{"}]}') == 3
    assert json_depth(b'{"a":"\\"[[["}') == 1
    assert json_depth(b"[]") == 1


def test_duplicate_keys_flatten_as_the_validator_reads_them(hdp_home, landing):
    # DuckDB's JSON functions keep the first of two equal keys, the validators the last:
    # such a resource is flattened by the Python evaluator, so rows match what was validated.
    line = '{"resourceType":"Patient","id":"d1","gender":"male","birthDate":"1990-01-01","gender":"female"}\n'
    escaped = '{"resourceType":"Patient","id":"d2","name":[{"family":"\\u00c5berg"}]}\n'
    _write(landing, "Patient.ndjson", line + escaped + _line(f.patient("p1")))
    res = ingest_fhir(HOLDER, settings=hdp_home, workers=0)
    assert res.resources_valid == {"Patient": 3}
    con = _db(hdp_home)
    rows = dict(con.sql("SELECT patient_id, gender FROM fhir_patient").fetchall())
    assert rows == {"d1": "female", "d2": None, "p1": "male"}
    assert con.sql("SELECT family_name FROM fhir_patient WHERE patient_id = 'd2'").fetchall() == [
        ("\u00c5berg",)
    ]
    # stored as delivered
    assert (
        con.sql("SELECT resource::VARCHAR FROM fhir_resource WHERE id = 'd1'").fetchall()[0][0]
        == line.strip()
    )


def test_duplicate_id_across_fast_and_reference_paths_keeps_the_first(hdp_home, landing):
    first = f.patient("p1", gender="female")
    first["name"][0]["family"] = "\u00c5"
    odd = json.dumps(first, ensure_ascii=True) + "\n"  # \u escapes: valid, but rows come from Python
    _write(landing, "Patient.ndjson", odd + _line(f.patient("p1")) + _line(f.patient("p2")))
    res = ingest_fhir(HOLDER, settings=hdp_home, workers=0, chunk_lines=2)
    assert res.quarantined == {"fhir.duplicate_id": 1}
    con = _db(hdp_home)
    assert sorted(con.sql("SELECT patient_id, gender FROM fhir_patient").fetchall()) == [
        ("p1", "female"),
        ("p2", "male"),
    ]
    assert con.sql("SELECT line_no FROM quarantine").fetchall() == [(2,)]


@pytest.mark.slow
def test_a_failure_mid_run_stops_the_workers_and_rolls_back(hdp_home, landing, monkeypatch):
    import pipelines.fhir.ingest as ing

    _write(landing, "Patient.ndjson", "".join(_line(f.patient(f"p{i}")) for i in range(400)))
    ingest_fhir(HOLDER, settings=hdp_home, workers=0)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ing._Loader, "add_columns", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest_fhir(HOLDER, settings=hdp_home, workers=2, chunk_lines=2)  # many chunks in flight
    con = _db(hdp_home)
    assert con.sql("SELECT count(*) FROM fhir_patient").fetchall() == [(400,)]  # the earlier run stands


@pytest.mark.slow
def test_a_worker_error_reaches_the_ingest_and_rolls_back(hdp_home, landing, monkeypatch):
    """An error inside a worker process (here: a landing file that changed while it was read) is
    raised again by the ingest, the workers stop, and nothing of the run is kept."""
    import pipelines.fhir.ingest as ing

    _write(landing, "Patient.ndjson", "".join(_line(f.patient(f"p{i}")) for i in range(400)))
    ingest_fhir(HOLDER, settings=hdp_home, workers=0)
    real = ing.process_chunk

    def changed(chunk):
        if chunk.first_line_no > 100:
            raise ing.FhirIngestError("Patient.ndjson: the file changed while it was being ingested")
        return real(chunk)

    monkeypatch.setattr(ing, "process_chunk", changed)  # the forked workers inherit it
    with pytest.raises(ing.FhirIngestError, match="changed while"):
        ingest_fhir(HOLDER, settings=hdp_home, workers=2, chunk_lines=2)
    con = _db(hdp_home)
    assert con.sql("SELECT count(*) FROM fhir_patient").fetchall() == [(400,)]  # the earlier run stands


def test_resource_text_is_read_by_duckdb_json_before_it_is_stored_as_json():
    """The flat batch is inserted without a second ::JSON parse only because the compiled views
    parse every row first; text DuckDB cannot read must fail the load, never be stored."""
    import numpy as np

    import pipelines.fhir.ingest as ing

    plan = ing.view_plan(ing.VIEWS_DIR)
    con = duckdb.connect()
    ing._create_tables(con, plan.views)
    loader = ing._Loader(con, plan)
    good = json.dumps(f.patient("ok"), separators=(",", ":")).encode()
    loader.add_columns(
        "f",
        "Patient",
        ing.FastColumns([1], ["ok"], good, np.array([0, len(good)], np.int64), [], {}, ing.id_digest("ok")),
    )
    loader.flush()
    assert con.sql("SELECT resource::VARCHAR, typeof(resource) FROM fhir_resource").fetchall() == [
        (good.decode(), "JSON")
    ]
    bad = b'{"resourceType":"Patient","id":"bad",'
    loader.add_columns(
        "f",
        "Patient",
        ing.FastColumns([2], ["bad"], bad, np.array([0, len(bad)], np.int64), [], {}, ing.id_digest("bad")),
    )
    with pytest.raises(duckdb.Error):
        loader.flush()


# --------------------------------------------------------------------------- whole-file encodings
def _patients(n: int = 30) -> str:
    out = []
    for i in range(n):
        p = f.patient(f"p{i}")
        p["name"][0]["family"] = "Åström" if i % 2 else "Öberg"
        p["name"][0]["given"] = ["Märta"]
        out.append(_line(p))
    return "".join(out)


def _quarantine_rows(hdp_home):
    con = _db(hdp_home)
    try:
        return con.sql(
            "SELECT source_file, line_no, reason_code, detail, original_path FROM quarantine "
            "ORDER BY source_file, line_no NULLS FIRST"
        ).fetchall()
    finally:
        con.close()


@pytest.mark.parametrize(
    "name,encoded,notice",
    [
        ("utf-16-le", lambda t: codecs.BOM_UTF16_LE + t.encode("utf-16-le"), "encoding.converted_from_utf16"),
        ("utf-16-be", lambda t: codecs.BOM_UTF16_BE + t.encode("utf-16-be"), "encoding.converted_from_utf16"),
        ("utf-32-le", lambda t: codecs.BOM_UTF32_LE + t.encode("utf-32-le"), "encoding.converted_from_utf32"),
        ("utf-32-be", lambda t: t.encode("utf-32-be"), "encoding.converted_from_utf32"),
        ("utf-8-bom", lambda t: codecs.BOM_UTF8 + t.encode(), None),
    ],
)
def test_a_unicode_ndjson_file_gives_one_file_level_result(hdp_home, landing, name, encoded, notice):
    text = _patients()
    bad = f.patient("bad", gender="bogus")
    text += _line(bad)  # line 31: invalid FHIR, quarantined once like in any UTF-8 file
    delivered = encoded(text)
    _write(landing, "Patient.ndjson", delivered)
    res = ingest_fhir(HOLDER, settings=hdp_home, workers=0)
    assert res.resources_valid == {"Patient": 30}
    assert res.quarantined == {"fhir.invalid": 1}
    assert res.files_converted == ({notice: 1} if notice else {})
    rows = _quarantine_rows(hdp_home)
    expected = [("fhir/Patient.ndjson", 31, "fhir.invalid")]
    if notice:
        expected.insert(0, ("fhir/Patient.ndjson", None, notice))
    assert [r[:3] for r in rows] == expected
    if notice:
        kept = rows[0][4]
        assert open(kept, "rb").read() == delivered  # the original, byte for byte
        assert "31 lines" in rows[0][3] and "Åström" not in rows[0][3]
    con = _db(hdp_home)
    assert con.sql("SELECT count(*) FROM fhir_patient WHERE family_name = 'Åström'").fetchall() == [(15,)]
    assert con.sql("SELECT max(_line_no) FROM fhir_resource").fetchall() == [(30,)]


def test_a_utf16_gzip_file_is_converted_as_it_streams(hdp_home, landing):
    text = _patients(200)
    _write(landing, "Patient.ndjson.gz", codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    res = ingest_fhir(HOLDER, settings=hdp_home, workers=0, chunk_lines=3)
    assert res.resources_valid == {"Patient": 200} and res.quarantined == {}
    assert res.files_converted == {"encoding.converted_from_utf16": 1}


def test_a_cp1252_ndjson_file_is_quarantined_once_and_nothing_of_it_loaded(hdp_home, landing):
    delivered = _patients().encode("cp1252")
    _write(landing, "Patient.ndjson", delivered)
    _write(landing, "Encounter.ndjson", _line(f.encounter("e1")))
    res = ingest_fhir(HOLDER, settings=hdp_home, workers=0)
    assert res.quarantined == {"encoding.not_utf8": 1}
    assert res.resources_valid == {"Encounter": 1}
    (row,) = _quarantine_rows(hdp_home)
    assert row[:3] == ("fhir/Patient.ndjson", None, "encoding.not_utf8")
    assert "30 of 30 lines" in row[3]
    assert open(row[4], "rb").read() == delivered


def test_a_file_partly_utf8_partly_cp1252_is_quarantined_once_as_mixed(hdp_home, landing):
    text = _patients()
    _write(landing, "Patient.ndjson", text.encode() + _patients(20).replace('"p', '"q').encode("cp1252"))
    res = ingest_fhir(HOLDER, settings=hdp_home, workers=0)
    assert res.quarantined == {"encoding.mixed": 1} and res.resources_valid == {}


def test_one_bad_byte_in_a_utf8_file_stays_a_line_level_problem(hdp_home, landing):
    lines = _patients().encode().splitlines(keepends=True)
    lines[4] = lines[4].replace("Öberg".encode(), b"\xd6berg")  # cp1252 Ö in a UTF-8 file
    _write(landing, "Patient.ndjson", b"".join(lines))
    res = ingest_fhir(HOLDER, settings=hdp_home, workers=0)
    assert res.quarantined == {"encoding.not_utf8": 1} and res.resources_valid == {"Patient": 29}
    assert [r[:3] for r in _quarantine_rows(hdp_home)] == [("fhir/Patient.ndjson", 5, "encoding.not_utf8")]


def test_a_utf16_bundle_is_converted_and_read(hdp_home, landing):
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": f.patient("bp")}]}
    _write(landing, "bundles/b.json", codecs.BOM_UTF16_BE + json.dumps(bundle).encode("utf-16-be"))
    _write(landing, "bundles/c.json", codecs.BOM_UTF8 + json.dumps(bundle).replace('"bp"', '"cp"').encode())
    res = ingest_fhir(HOLDER, settings=hdp_home, workers=0)
    assert res.resources_valid == {"Patient": 2} and res.quarantined == {}
    assert res.files_converted == {"encoding.converted_from_utf16": 1}


def test_a_cut_gzip_stream_keeps_the_lines_before_the_damage(hdp_home, landing):
    whole = gzip.compress("".join(_line(f.patient(f"p{i}")) for i in range(400)).encode())
    (landing / "Patient.ndjson.gz").write_bytes(whole[: len(whole) * 2 // 3])
    res = ingest_fhir(HOLDER, settings=hdp_home, workers=0, chunk_lines=4)
    assert 0 < res.resources_valid["Patient"] < 400
    truncated = [r for r in _quarantine_rows(hdp_home) if r[2] == "file.truncated"]
    assert truncated and all(r[1] > res.resources_valid["Patient"] for r in truncated)


_NDJSON_TEXT = st.lists(
    st.builds(
        lambda s: json.dumps({"resourceType": "Basic", "id": "x", "v": s}, ensure_ascii=False), st.text()
    ),
    max_size=5,
).map(lambda lines: "".join(line + "\n" for line in lines))


@settings(max_examples=100, deadline=None)
@given(
    _NDJSON_TEXT,
    st.sampled_from(
        [
            ("utf-8", codecs.BOM_UTF8),
            ("utf-16-le", codecs.BOM_UTF16_LE),
            ("utf-16-le", b""),
            ("utf-16-be", codecs.BOM_UTF16_BE),
            ("utf-16-be", b""),
            ("utf-32-le", codecs.BOM_UTF32_LE),
            ("utf-32-be", codecs.BOM_UTF32_BE),
            ("utf-32-le", b""),
        ]
    ),
    st.booleans(),
)
def test_any_text_in_any_unicode_encoding_reads_as_its_utf8_lines(tmp_path_factory, text, enc, gz):
    from pipelines.fhir.ingest import ndjson_chunks

    codec, bom = enc
    d = tmp_path_factory.mktemp("enc")
    name = "Basic.ndjson.gz" if gz else "Basic.ndjson"
    data = bom + text.encode(codec)
    (d / name).write_bytes(gzip.compress(data) if gz else data)
    problems: list = []
    chunks = list(ndjson_chunks(d / name, name, 1, problems))
    assert b"".join(c.blob for c in chunks) == text.encode()
    assert [c.first_line_no for c in chunks] == sorted({c.first_line_no for c in chunks})
    converted = codec != "utf-8" and bool(text or bom)  # a mark alone says UTF-16/32 too
    assert [p.reason for p in problems] == (
        [f"encoding.converted_from_{codec[:6].replace('-', '')}"] if converted else []
    )


def test_progress_reaches_the_task_log_with_counts_only(hdp_home, landing, caplog, monkeypatch):
    import logging

    import pipelines.fhir.ingest as ing

    monkeypatch.setattr(ing, "PROGRESS_EVERY_S", 0.0)
    _write(landing, "Patient.ndjson", _patients(50))
    _write(landing, "Encounter.ndjson", _line(f.encounter("e1")))
    with caplog.at_level(logging.INFO, logger="pipelines.fhir.ingest"):
        ingest_fhir(HOLDER, settings=hdp_home, workers=0, chunk_lines=4)
    progress = [r.getMessage() for r in caplog.records if "progress" in r.getMessage()]
    assert len(progress) > 5
    assert progress[-1].startswith(
        f"fhir ingest {HOLDER} progress: 2/2 files done, 51 resources read, 51 valid, 0 quarantined"
    )
    text = " ".join(progress)
    for value in ("Åström", "Öberg", "191212121212", "p1"):
        assert value not in text


def test_seen_ids_find_every_repeat_across_merges(monkeypatch):
    import random

    from pipelines.fhir.ingest import SeenIds, id_digest

    monkeypatch.setattr(SeenIds, "MERGE_AT", 7)
    seen = SeenIds()
    rng = random.Random(3)
    ids = [f"id-{rng.randrange(400)}" for _ in range(600)]
    truth: set[str] = set()
    for start in range(0, len(ids), 5):
        chunk = ids[start : start + 5]
        fresh = not (set(chunk) & truth) and len(set(chunk)) == len(chunk)
        assert seen.add_new(b"".join(map(id_digest, chunk))) is fresh
        if fresh:
            truth |= set(chunk)
            continue
        for rid in chunk:
            assert (id_digest(rid) in seen) is (rid in truth)
            if rid not in truth:
                seen.add(id_digest(rid))
                truth.add(rid)
    assert len(seen) == len(truth)
    assert id_digest(b"\x00".decode() + "x") not in seen


def test_seen_ids_keep_digests_that_end_in_nul_bytes(monkeypatch):
    from pipelines.fhir.ingest import SeenIds, id_digest

    monkeypatch.setattr(SeenIds, "MERGE_AT", 2)
    nul = next(f"n{i}" for i in range(10_000) if id_digest(f"n{i}").endswith(b"\0"))
    seen = SeenIds()
    assert seen.add_new(id_digest(nul) + id_digest("other"))  # merged into the sorted array
    assert id_digest(nul) in seen and not seen.add_new(id_digest(nul))
    seen.add(id_digest("third"))
    assert id_digest("third") in seen and len(seen) == 3
