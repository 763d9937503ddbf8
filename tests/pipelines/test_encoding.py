"""Whole-file encoding verdicts (pipelines.encoding): marks, NUL patterns, UTF-8 damage, cp1252."""

from __future__ import annotations

import codecs

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines import encoding

LINE = '{"resourceType":"Patient","id":"p1","name":[{"family":"Åström","given":["Märta"]}]}\n'
TEXT = LINE * 40


def _blocks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


MARKED = {
    "UTF-8 mark": (codecs.BOM_UTF8 + TEXT.encode("utf-8"), "utf-8", None),
    "UTF-16LE mark": (codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le"), "utf-16-le", "utf16"),
    "UTF-16BE mark": (codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"), "utf-16-be", "utf16"),
    "UTF-32LE mark": (codecs.BOM_UTF32_LE + TEXT.encode("utf-32-le"), "utf-32-le", "utf32"),
    "UTF-32BE mark": (codecs.BOM_UTF32_BE + TEXT.encode("utf-32-be"), "utf-32-be", "utf32"),
    "UTF-16LE NULs": (TEXT.encode("utf-16-le"), "utf-16-le", "utf16"),
    "UTF-16BE NULs": (TEXT.encode("utf-16-be"), "utf-16-be", "utf16"),
    "UTF-32LE NULs": (TEXT.encode("utf-32-le"), "utf-32-le", "utf32"),
    "UTF-32BE NULs": (TEXT.encode("utf-32-be"), "utf-32-be", "utf32"),
}


@pytest.mark.parametrize("name", sorted(MARKED))
@pytest.mark.parametrize("size", [1, 3, 7, 4096])
def test_marks_and_nul_patterns_convert_to_the_same_utf8(name, size):
    data, codec, family = MARKED[name]
    verdict = encoding.scan(_blocks(data, size))
    assert verdict.encoding is not None and verdict.encoding.codec == codec
    assert verdict.reason == (None if family is None else f"encoding.converted_from_{family}")
    assert verdict.lines == 40
    assert b"".join(encoding.to_utf8(_blocks(data, size), verdict.encoding)) == TEXT.encode("utf-8")
    assert encoding.decode(data, verdict.encoding) == TEXT


def test_plain_utf8_passes_through_unchanged_and_unnoted():
    data = TEXT.encode()
    verdict = encoding.scan([data])
    assert verdict == encoding.Verdict(encoding.FileEncoding("utf-8"), lines=40)
    assert list(encoding.to_utf8([data], verdict.encoding)) == [data]


def test_a_few_damaged_lines_stay_line_level():
    data = TEXT.encode() + b'{"resourceType":"Patient","id":"\xff"}\n' + TEXT.encode()
    verdict = encoding.scan(_blocks(data, 64))
    assert verdict.encoding is not None and verdict.encoding.is_utf8
    assert verdict.reason is None and verdict.damaged_lines == 1 and verdict.lines == 81


def test_a_character_split_across_blocks_is_not_damage():
    data = "å".encode() * 1000
    assert encoding.scan(_blocks(data, 1)).damaged_lines == 0


def test_an_8bit_file_is_quarantined_whole_when_no_8bit_encoding_is_accepted():
    data = TEXT.encode("cp1252")
    verdict = encoding.scan([data])
    assert verdict.encoding is None and verdict.reason == "encoding.not_utf8"
    assert "40 of 40 lines" in verdict.detail and "Åström" not in verdict.detail


def test_a_file_partly_utf8_partly_cp1252_is_mixed():
    data = TEXT.encode() + TEXT.encode("cp1252")
    verdict = encoding.scan([data], fallback="cp1252")
    assert verdict.encoding is None and verdict.reason == "encoding.mixed"


def test_plausible_cp1252_is_detected_and_noted():
    data = ("namn;ort\n" + "Åsa Öberg;Västerås\n" * 30).encode("cp1252")
    verdict = encoding.scan(_blocks(data, 5), fallback="cp1252")
    assert verdict.encoding == encoding.FileEncoding("cp1252", 0, "detected")
    assert verdict.reason == "encoding.converted_from_cp1252"
    assert encoding.decode(data, verdict.encoding) == "namn;ort\n" + "Åsa Öberg;Västerås\n" * 30


def test_a_declared_8bit_encoding_is_read_without_a_notice():
    data = "namn\nÅsa\n".encode("latin-1")
    verdict = encoding.scan([data], fallback="latin-1", declared=True)
    assert verdict.encoding is not None and verdict.encoding.codec == "iso8859-1"
    assert verdict.reason is None


def test_bytes_cp1252_leaves_undefined_are_not_plausible():
    data = b"namn\n" + b"T\x81lvan\n" * 30
    verdict = encoding.scan([data], fallback="cp1252")
    assert verdict.encoding is None and verdict.reason == "encoding.not_utf8"
    assert "nor plausible cp1252" in verdict.detail


def test_binary_garbage_is_not_plausible_cp1252():
    data = b"namn\n" + bytes(range(0xA0, 0x100)) * 3 + b"\n" + b"\x9c\xe2\x9d" * 40 + b"\n"
    assert not encoding.plausible(data, "cp1252")


def test_broken_utf16_is_quarantined_whole():
    data = codecs.BOM_UTF16_LE + '{"a":1}\n'.encode("utf-16-le") + b"\x00\xd8a\x00"  # lone surrogate
    verdict = encoding.scan([data])
    assert verdict.encoding is None and verdict.reason == "encoding.invalid"
    odd = codecs.BOM_UTF16_LE + '{"a":1}\n'.encode("utf-16-le") + b"{"  # half a character at the end
    assert encoding.scan([odd]).reason == "encoding.invalid"


def test_empty_and_tiny_files():
    assert encoding.scan([]).encoding == encoding.FileEncoding("utf-8")
    assert encoding.scan([b""]).lines == 0
    assert encoding.scan([b"{"]).encoding == encoding.FileEncoding("utf-8")
    assert encoding.scan([b"x\n"]).lines == 1


@given(st.binary(max_size=300), st.integers(1, 64))
def test_any_bytes_get_a_verdict_and_utf8_reads_back_byte_for_byte(data, size):
    verdict = encoding.scan(_blocks(data, size), fallback="cp1252")
    assert (verdict.encoding is None) == (
        verdict.reason in ("encoding.not_utf8", "encoding.mixed", "encoding.invalid")
    )
    if verdict.encoding is not None and verdict.encoding.is_utf8:
        out = b"".join(encoding.to_utf8(_blocks(data, size), verdict.encoding))
        assert out == data[verdict.encoding.bom :]
