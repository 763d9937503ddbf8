"""CSV registers in other encodings: one file-level result per file, the right rows, the original kept."""

from __future__ import annotations

import codecs
import dataclasses
import json
from dataclasses import asdict

import duckdb
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pipelines.ingest import ingest_delimited_source, load_source_schema, parse_delimited
from synthetic_data.geo import FAMILY_NAMES, NON_ASCII_FAMILY_NAMES, NON_ASCII_GIVEN_NAMES

SCHEMA = load_source_schema("register")
HEADER = ";".join(c.name for c in SCHEMA.columns)
NAMES = [("Åsa", "Öberg"), ("Örjan", "Ärlig"), ("Tolvan", "Tolvansson"), ("Märta", "Åström")]


def _row(i: int, given: str, family: str) -> str:
    return f"19121212121{i % 10};{given};{family};75236;2024-03-{i + 1:02d};typ2;52,5;27,4;130;80;aldrig;tabletter"


def _register(names=NAMES) -> str:
    return HEADER + "\n" + "".join(_row(i, g, f) + "\n" for i, (g, f) in enumerate(names))


def _parse(data: bytes, schema=SCHEMA):
    return parse_delimited(data, schema, holder="ndr", relative_name="register/x.csv")


def _outcome(pf):
    """What ingestion makes of a file: rows with their line numbers, and line-level reasons."""
    return (
        list(zip(pf.line_numbers, pf.rows, strict=True)),
        [(r.line_no, r.reason_code) for r in pf.rejects if r.line_no is not None],
    )


def test_cp1252_register_loads_with_one_notice_and_the_original_kept(hdp_home):
    landing = hdp_home.landing_dir("ndr") / "register"
    landing.mkdir(parents=True)
    delivered = _register().encode("cp1252")
    (landing / "ndr_2024.csv").write_bytes(delivered)
    result = ingest_delimited_source("ndr", "register", settings=hdp_home)
    assert result.rows_loaded == len(NAMES) and result.quarantined == {}
    assert result.files_converted == {"encoding.converted_from_cp1252": 1}
    con = duckdb.connect(str(hdp_home.raw_db("ndr")), read_only=True)
    rows = con.execute(
        "select first_name, family_name, hba1c_mmol_mol, bmi from register_visit order by _line_no"
    )
    assert rows.fetchall() == [(g, f, 52.5, 27.4) for g, f in NAMES]
    (record,) = con.execute(
        "select source_file, line_no, reason_code, detail, original, original_path from quarantine"
    ).fetchall()
    source_file, line_no, reason, detail, original, kept = record
    assert (source_file, line_no, reason, original) == (
        "register/ndr_2024.csv",
        None,
        "encoding.converted_from_cp1252",
        None,
    )
    assert open(kept, "rb").read() == delivered  # byte for byte
    assert (landing / "ndr_2024.csv").read_bytes() == delivered  # the landing file untouched
    # the names stay in the restricted zone: never in a detail, a result or outside restricted/
    assert str(hdp_home.holder_dir("ndr")) in kept
    counts = json.dumps(asdict(result), ensure_ascii=False)
    for first, family in NAMES:
        for name in (first, family):
            assert name not in detail and name not in counts


@pytest.mark.parametrize(
    "codec,bom,notice",
    [
        ("utf-16-le", codecs.BOM_UTF16_LE, "encoding.converted_from_utf16"),
        ("utf-16-be", codecs.BOM_UTF16_BE, "encoding.converted_from_utf16"),
        ("utf-32-le", codecs.BOM_UTF32_LE, "encoding.converted_from_utf32"),
        ("utf-32-be", b"", "encoding.converted_from_utf32"),
        ("utf-8", codecs.BOM_UTF8, None),
    ],
)
def test_unicode_registers_read_as_their_utf8_form(codec, bom, notice):
    expected = _outcome(_parse(_register().encode()))
    pf = _parse(bom + _register().encode(codec))
    assert _outcome(pf) == expected
    assert [r.reason_code for r in pf.rejects if r.line_no is None] == ([notice] if notice else [])


def test_a_few_damaged_lines_in_a_utf8_register_stay_line_level():
    text = _register(NAMES * 6)
    data = text.encode().replace(b"Tolvansson", b"Tolvans\xe5on", 1)  # one cp1252 byte
    pf = _parse(data)
    assert [(r.line_no, r.reason_code) for r in pf.rejects] == [(4, "encoding.not_utf8")]
    assert len(pf.rows) == len(NAMES) * 6 - 1
    assert pf.rejects[0].original == data.splitlines(keepends=True)[3]


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_UNICODE = [
    ("utf-8", codecs.BOM_UTF8),
    ("utf-16-le", codecs.BOM_UTF16_LE),
    ("utf-16-le", b""),
    ("utf-16-be", codecs.BOM_UTF16_BE),
    ("utf-16-be", b""),
    ("utf-32-le", codecs.BOM_UTF32_LE),
    ("utf-32-be", b""),
]


@settings(max_examples=150)
@given(st.lists(st.tuples(_TEXT, _TEXT), min_size=1, max_size=6), st.sampled_from(_UNICODE))
def test_any_text_in_any_unicode_encoding_ingests_as_its_utf8_form(names, encoding):
    codec, bom = encoding
    text = _register(names)
    assert _outcome(_parse(bom + text.encode(codec))) == _outcome(_parse(text.encode()))


_CP1252_TEXT = st.text(st.characters(codec="cp1252", blacklist_categories=("Cc",)), max_size=12)


@settings(max_examples=150)
@given(st.lists(st.tuples(_CP1252_TEXT, _CP1252_TEXT), min_size=1, max_size=6))
def test_any_cp1252_text_ingests_as_its_utf8_form_when_the_source_declares_cp1252(names):
    text = _register(names)
    delivered = text.encode("cp1252")
    # Valid UTF-8 is read as UTF-8 whatever the declaration (cp1252 letters are practically never
    # followed by exactly the bytes UTF-8 needs; the generator can make them).
    assume(delivered.isascii() or not _valid_utf8(delivered))
    declared = dataclasses.replace(SCHEMA, encoding="cp1252")
    pf = _parse(delivered, declared)
    assert _outcome(pf) == _outcome(_parse(text.encode()))
    assert [r.reason_code for r in pf.rejects if r.line_no is None] == []  # declared: nothing to note


_SWEDISH_NAME = st.sampled_from(NON_ASCII_GIVEN_NAMES + NON_ASCII_FAMILY_NAMES + FAMILY_NAMES[:20])


@settings(max_examples=100)
@given(st.lists(st.tuples(_SWEDISH_NAME, _SWEDISH_NAME), min_size=1, max_size=8))
def test_swedish_names_in_cp1252_are_detected_and_ingest_as_their_utf8_form(names):
    text = _register(names)
    pf = _parse(text.encode("cp1252"))
    assert _outcome(pf) == _outcome(_parse(text.encode()))
    notes = [r.reason_code for r in pf.rejects if r.line_no is None]
    assert notes == ([] if text.isascii() else ["encoding.converted_from_cp1252"])


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
