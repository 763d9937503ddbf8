from __future__ import annotations

import duckdb
from hypothesis import given
from hypothesis import strategies as st

from pipelines.encoding import CONVERTED_PREFIX, decode
from pipelines.ingest import ingest_delimited_source, load_source_schema, parse_delimited

SCHEMA = load_source_schema("register")
HEADER = ";".join(c.name for c in SCHEMA.columns)
GOOD = "191212121212;Tolvan;Tolvansson;75236;2024-03-01;typ2;52,5;27,4;130;80;aldrig;tabletter"


def _parse(text: str | bytes):
    data = text.encode() if isinstance(text, str) else text
    return parse_delimited(data, SCHEMA, holder="ndr", relative_name="register/x.csv")


def test_good_row_is_parsed_with_decimal_comma():
    pf = _parse(f"{HEADER}\n{GOOD}\n")
    assert pf.rejects == []
    (row,) = pf.rows
    assert row["hba1c_mmol_mol"] == 52.5 and row["bmi"] == 27.4 and row["systolic_bp"] == 130
    assert pf.line_numbers == [2]


def test_each_bad_line_gets_its_reason_and_no_value_in_detail():
    lines = [
        GOOD,
        GOOD,  # duplicate key
        GOOD.replace("2024-03-01", "2024-13-01").replace("191212121212", "191212121213"),  # bad date
        GOOD.replace("52,5", "femtio").replace("2024-03-01", "2024-03-02"),
        GOOD.replace("typ2", "").replace("2024-03-01", "2024-03-03"),  # missing required
        "191212121212;only;three",
    ]
    pf = _parse(HEADER + "\n" + "\n".join(lines) + "\n")
    reasons = {r.line_no: r.reason_code for r in pf.rejects}
    assert reasons == {
        3: "csv.duplicate",
        4: "csv.bad_date",
        5: "csv.bad_number",
        6: "csv.missing_required",
        7: "csv.column_count",
    }
    assert len(pf.rows) == 1
    for r in pf.rejects:
        assert "1912121212" not in r.detail and "femtio" not in r.detail
        assert r.original  # the operator keeps the line exactly as delivered


def test_truncated_last_line_is_quarantined_and_the_rest_kept():
    pf = _parse(f"{HEADER}\n{GOOD}\n{GOOD[:30]}")
    assert [r.reason_code for r in pf.rejects] == ["file.truncated"]
    assert len(pf.rows) == 1


def test_a_file_neither_utf8_nor_cp1252_is_rejected_whole():
    lines = [GOOD.replace("2024-03-01", f"2024-03-{d:02d}") for d in range(1, 21)]
    data = f"{HEADER}\n{chr(10).join(lines)}\n".encode().replace(
        b"Tolvan", b"T\x81lvan"
    )  # undefined in cp1252
    pf = _parse(data)
    assert [(r.reason_code, r.line_no) for r in pf.rejects] == [("encoding.not_utf8", None)]
    assert pf.rows == []


def test_a_cp1252_file_is_read_and_noted_once():
    pf = _parse(f"{HEADER}\n{GOOD.replace('Tolvan', 'Åsa')}\n".encode("cp1252"))
    assert [(r.reason_code, r.line_no) for r in pf.rejects] == [("encoding.converted_from_cp1252", None)]
    assert [r["first_name"] for r in pf.rows] == ["Åsa"]
    assert "Åsa" not in pf.rejects[0].detail


def test_header_mismatch_is_rejected_whole():
    pf = _parse("a;b;c\n1;2;3\n")
    assert [r.reason_code for r in pf.rejects] == ["csv.header_mismatch"]


@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise_and_every_line_is_accounted_for(data):
    delivered = HEADER.encode() + b"\n" + data
    pf = _parse(delivered)
    # every non-blank data line is either a row or a reject; nothing disappears
    line_rejects = [r for r in pf.rejects if r.line_no is not None]
    if len(line_rejects) == len(pf.rejects) or all(
        r.reason_code.startswith(CONVERTED_PREFIX) for r in pf.rejects if r.line_no is None
    ):
        if any(r.reason_code == "csv.header_mismatch" for r in line_rejects):
            return
        verdict = SCHEMA.scan(delivered)
        assert verdict.encoding is not None
        text = decode(delivered, verdict.encoding)
        non_blank = [ln for ln in text.splitlines()[1:] if ln.strip()]
        assert len(pf.rows) + len(line_rejects) == len(non_blank)


def test_ingest_writes_raw_table_and_quarantine_idempotently(hdp_home):
    landing = hdp_home.landing_dir("ndr") / "register"
    landing.mkdir(parents=True)
    (landing / "a.csv").write_text(f"{HEADER}\n{GOOD}\n{GOOD}\n", encoding="utf-8")
    damaged = GOOD.replace("Tolvan", "T\x81lvan").replace("2024-03-01", "2024-03-02").encode("latin-1")
    (landing / "b.csv").write_bytes(HEADER.encode() + b"\n" + damaged + b"\n")  # one line not UTF-8
    first = ingest_delimited_source("ndr", "register", settings=hdp_home)
    second = ingest_delimited_source("ndr", "register", settings=hdp_home)
    assert first == second
    assert first.rows_loaded == 1
    assert first.quarantined == {"csv.duplicate": 1, "encoding.not_utf8": 1}
    assert first.files_converted == {}
    con = duckdb.connect(str(hdp_home.raw_db("ndr")), read_only=True)
    assert con.execute("select count(*) from register_visit").fetchone()[0] == 1
    assert con.execute("select count(*) from quarantine").fetchone()[0] == 2
    line_no, original = con.execute(
        "select line_no, original from quarantine where reason_code='encoding.not_utf8'"
    ).fetchone()
    assert (line_no, original) == (2, damaged + b"\n")  # the line exactly as delivered
