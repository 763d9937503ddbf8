"""Personnummer / samordningsnummer parser: official test numbers, invalid corpus, properties."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.personnummer import (
    BAD_CHECKSUM,
    IMPOSSIBLE_DATE,
    INVALID_SERIAL,
    MISSING,
    PERSONNUMMER,
    PLUS_UNDER_100,
    SAMORDNINGSNUMMER,
    UNKNOWN_FORMAT,
    InvalidIdentifier,
    luhn_digit,
    luhn_ok,
    parse,
    parse_batch,
    try_parse,
)

REPO = Path(__file__).resolve().parents[2]
TEST_LIST = REPO / "synthetic_data" / "skatteverket_testpersonnummer.txt"
#: the shared copy of Skatteverket's list (the project's copy must be the same file)
SHARED_TEST_LIST = REPO.parent / "shared" / "testdata" / "skatteverket_testpersonnummer.txt"
REF = date(2026, 1, 1)


def _official() -> list[str]:
    return [ln.strip() for ln in TEST_LIST.read_text(encoding="ascii").splitlines() if ln.strip()]


def test_every_skatteverket_test_number_is_valid_in_every_form():
    numbers = _official()
    assert len(numbers) > 40_000
    forms_12, forms_12sep, forms_10, forms_10bare = [], [], [], []
    for n in numbers:
        ident = parse(n, reference_date=REF)
        assert ident.normalised == n
        forms_12.append(n)
        forms_12sep.append(f"{n[:8]}-{n[8:]}")
        ten = ident.ten_digit(reference_date=REF)
        forms_10.append(ten)
        if ten[6] == "-":
            forms_10bare.append(ten.replace("-", ""))
    for forms in (forms_12, forms_12sep, forms_10, forms_10bare):
        table = parse_batch(forms, reference_date=REF)
        assert table["reason_code"].null_count == len(forms)
    assert parse_batch(forms_10, reference_date=REF)["normalised"].to_pylist() == numbers
    assert parse_batch(forms_12sep, reference_date=REF)["normalised"].to_pylist() == numbers


def test_official_list_has_no_serial_000_and_matches_the_shared_copy():
    numbers = _official()
    assert not [n for n in numbers if n[8:11] == "000"]
    if SHARED_TEST_LIST.exists():
        assert SHARED_TEST_LIST.read_bytes() == TEST_LIST.read_bytes()


def test_invalid_corpus_values_are_what_they_claim():
    """The serial-000 entries are Luhn-valid (so the serial alone is wrong)."""
    for value, reason in INVALID:
        if reason == INVALID_SERIAL:
            digits = value.replace("-", "").replace("+", "")[-10:]
            assert luhn_ok(digits) and digits[6:9] == "000"


def test_known_values():
    ident = parse("811218-9876", reference_date=REF)
    assert (ident.normalised, ident.kind, ident.sex, ident.birth_date) == (
        "198112189876",
        PERSONNUMMER,
        "M",
        date(1981, 12, 18),
    )
    # '+' means 100 or older at the reference date
    assert parse("121212+1212", reference_date=REF).normalised == "191212121212"
    assert parse("121212-1212", reference_date=REF).normalised == "201212121212"
    # samordningsnummer: day + 60
    s = parse("701063-2391", reference_date=REF)
    assert (s.kind, s.birth_date, s.sex) == (SAMORDNINGSNUMMER, date(1970, 10, 3), "M")
    assert s.normalised == "197010632391"


def test_century_rule_around_the_birthday():
    # Born 1926-06-15 is 99 on 2026-06-14 and 100 on 2026-06-15.
    nine = "260615123"
    num = nine + luhn_digit(nine)
    ten_minus = f"{num[:6]}-{num[6:]}"
    ten_plus = f"{num[:6]}+{num[6:]}"
    assert parse(ten_minus, reference_date=date(2026, 6, 14)).birth_date == date(1926, 6, 15)
    assert parse(ten_plus, reference_date=date(2026, 6, 15)).birth_date == date(1926, 6, 15)
    # with '-' on the 100th birthday the same digits mean someone born in 2026 that day
    assert parse(ten_minus, reference_date=date(2026, 6, 15)).birth_date == date(2026, 6, 15)


INVALID = [
    (None, MISSING),
    ("", MISSING),
    ("   ", MISSING),
    ("abc", UNKNOWN_FORMAT),
    ("19811218987", UNKNOWN_FORMAT),  # 11 digits
    ("1981121898765", UNKNOWN_FORMAT),  # 13 digits
    ("811218 9876", UNKNOWN_FORMAT),
    ("811218--9876", UNKNOWN_FORMAT),
    ("81-1218-9876", UNKNOWN_FORMAT),
    ("19811218+9876", PLUS_UNDER_100),  # '+' with a 4-digit year: only for someone turning 100 by 2026
    ("19811218+987X", UNKNOWN_FORMAT),
    ("811218-T87X", UNKNOWN_FORMAT),  # interim letter, but a letter as check digit
    ("811218-A876", UNKNOWN_FORMAT),  # not one of the interim letters
    ("811218-t876", UNKNOWN_FORMAT),  # interim letters are capitals
    ("811218-TT76", UNKNOWN_FORMAT),
    ("811218T8760", UNKNOWN_FORMAT),
    ("８１１２１８-９８７６", UNKNOWN_FORMAT),  # full-width digits
    ("811218-987X", UNKNOWN_FORMAT),
    ("811218-9875", BAD_CHECKSUM),
    ("198112189877", BAD_CHECKSUM),
    ("811318-9876", IMPOSSIBLE_DATE),  # month 13
    ("810018-9876", IMPOSSIBLE_DATE),  # month 00
    ("811200-9876", IMPOSSIBLE_DATE),  # day 00
    ("811232-9876", IMPOSSIBLE_DATE),  # day 32
    ("811260-9876", IMPOSSIBLE_DATE),  # samordning day 0
    ("811292-9876", IMPOSSIBLE_DATE),  # samordning day 32
    ("19010229-1234", IMPOSSIBLE_DATE),  # 1901 not a leap year
    ("19000229-1234", IMPOSSIBLE_DATE),  # 1900 not a leap year
    ("20990101-1234", IMPOSSIBLE_DATE),  # born after the reference date
    ("811218-0008", INVALID_SERIAL),  # serial 000 is never issued (Luhn-valid)
    ("8112180008", INVALID_SERIAL),
    ("19811218-0008", INVALID_SERIAL),
    ("198112180008", INVALID_SERIAL),
    ("811218+0008", INVALID_SERIAL),
    ("701063-0007", INVALID_SERIAL),  # samordningsnummer with serial 000
    ("197010630007", INVALID_SERIAL),
    ("811218-0009", BAD_CHECKSUM),  # serial 000 and a wrong check digit: the checksum wins
    ("811318-0007", IMPOSSIBLE_DATE),  # serial 000 and month 13: the date wins
]


@pytest.mark.parametrize(("value", "reason"), INVALID)
def test_invalid_corpus(value, reason):
    with pytest.raises(InvalidIdentifier) as exc:
        parse(value, reference_date=REF)
    assert exc.value.reason_code == reason
    if value and value.strip():
        assert value.strip() not in str(exc.value)
        assert value.strip()[:6] not in str(exc.value)
    assert parse_batch([value], reference_date=REF)["reason_code"][0].as_py() == reason


def test_leap_day_valid():
    nine = "000229123"
    assert parse(f"20{nine[:6]}-{nine[6:]}{luhn_digit(nine)}", reference_date=REF).birth_date == date(
        2000, 2, 29
    )


def test_identifier_repr_hides_value():
    ident = parse("811218-9876", reference_date=REF)
    assert "9876" not in repr(ident) and "811218" not in repr(ident)


def test_batch_accepts_chunked_and_empty():
    assert parse_batch([], reference_date=REF).num_rows == 0
    chunked = pa.chunked_array([["811218-9876"], ["bad"]])
    assert parse_batch(chunked, reference_date=REF)["reason_code"].to_pylist() == [None, UNKNOWN_FORMAT]
    sliced = pa.array(["x", "811218-9876", "811218-9875"]).slice(1)
    assert parse_batch(sliced, reference_date=REF)["normalised"].to_pylist() == ["198112189876", None]


# ---------------------------------------------------------------- properties

dates = st.dates(min_value=date(1880, 1, 1), max_value=REF)


@st.composite
def identifiers(draw):
    birth = draw(dates)
    samord = draw(st.booleans())
    serial = draw(st.integers(1, 999))
    day = birth.day + (60 if samord else 0)
    nine = f"{birth:%y%m}{day:02d}{serial:03d}"
    return f"{birth.year // 100:02d}{nine}{luhn_digit(nine)}", birth, samord, serial


@given(identifiers())
@settings(max_examples=300, deadline=None)
def test_round_trip_between_forms(item):
    twelve, birth, samord, serial = item
    ident = parse(twelve, reference_date=REF)
    assert ident.birth_date == birth
    assert ident.kind == (SAMORDNINGSNUMMER if samord else PERSONNUMMER)
    assert ident.sex == ("M" if serial % 2 else "F")
    forms = [twelve, f"{twelve[:8]}-{twelve[8:]}", ident.ten_digit(reference_date=REF), f"  {twelve} "]
    if (REF - birth) < timedelta(days=365 * 99):
        forms.append(twelve[2:])
    for form in forms:
        assert parse(form, reference_date=REF) == ident
    assert parse_batch(forms, reference_date=REF)["normalised"].to_pylist() == [twelve] * len(forms)


@given(dates, st.booleans(), st.sampled_from(["12", "12-", "10"]))
@settings(max_examples=300, deadline=None)
def test_serial_000_is_never_valid(birth, samord, form):
    """Any Luhn-valid number with serial 000, in any form, personnummer or samordningsnummer."""
    day = birth.day + (60 if samord else 0)
    nine = f"{birth:%y%m}{day:02d}000"
    twelve = f"{birth.year // 100:02d}{nine}{luhn_digit(nine)}"
    if form == "12":
        value = twelve
    elif form == "12-":
        value = f"{twelve[:8]}-{twelve[8:]}"
    else:
        age = REF.year - birth.year - ((REF.month, REF.day) < (birth.month, birth.day))
        value = f"{twelve[2:8]}{'+' if age >= 100 else '-'}{twelve[8:]}"
    assert try_parse(value, reference_date=REF) == INVALID_SERIAL
    assert parse_batch([value], reference_date=REF).to_pylist()[0] == {
        "normalised": None,
        "kind": None,
        "sex": None,
        "birth_date": None,
        "reason_code": INVALID_SERIAL,
    }
    with pytest.raises(InvalidIdentifier) as exc:
        parse(value, reference_date=REF)
    assert twelve[2:8] not in str(exc.value)


@given(identifiers(), st.integers(0, 11), st.integers(1, 9))
@settings(max_examples=300, deadline=None)
def test_luhn_detects_every_single_digit_error(item, position, delta):
    twelve = item[0]
    ten = twelve[2:]
    assert luhn_ok(ten)
    pos = 2 + position % 10
    changed = twelve[:pos] + str((int(twelve[pos]) + delta) % 10) + twelve[pos + 1 :]
    assert not luhn_ok(changed[2:])
    result = try_parse(changed, reference_date=REF)
    assert result in (BAD_CHECKSUM, IMPOSSIBLE_DATE)


@given(st.one_of(st.none(), st.text(max_size=16), st.from_regex(r"\A\s?\d{6,8}[-+]?\d{4}\s?\Z")))
@settings(max_examples=500, deadline=None)
def test_batch_agrees_with_scalar(value):
    scalar = try_parse(value, reference_date=REF)
    row = parse_batch([value], reference_date=REF).to_pylist()[0]
    if isinstance(scalar, str):
        assert row["reason_code"] == scalar
        assert row["normalised"] is None
    else:
        assert row == {
            "normalised": scalar.normalised,
            "kind": scalar.kind,
            "sex": scalar.sex,
            "birth_date": scalar.birth_date,
            "reason_code": None,
        }


_values = st.one_of(
    st.none(),
    st.text(max_size=16),
    st.from_regex(r"\A\s?\d{6,8}[-+]?\d{4}\s?\Z"),
    st.from_regex(r"\A\d{6,8}[-+]?000\d\Z"),
    identifiers().map(lambda item: item[0]),
    identifiers().map(lambda item: f"{item[0][2:8]}{'+' if item[1].year < 1927 else '-'}{item[0][8:]}"),
)


@given(st.lists(_values, max_size=60), st.dates(min_value=date(1990, 1, 1), max_value=date(2030, 12, 31)))
@settings(max_examples=200, deadline=None)
def test_batch_of_many_agrees_with_scalar(values, ref):
    """Whole arrays (mixed forms, nulls, junk; any reference date): row i equals parse(values[i])."""
    rows = parse_batch(values, reference_date=ref).to_pylist()
    assert len(rows) == len(values)
    for value, row in zip(values, rows, strict=True):
        scalar = try_parse(value, reference_date=ref)
        if isinstance(scalar, str):
            assert row == {
                "normalised": None,
                "kind": None,
                "sex": None,
                "birth_date": None,
                "reason_code": scalar,
            }
        else:
            assert row == {
                "normalised": scalar.normalised,
                "kind": scalar.kind,
                "sex": scalar.sex,
                "birth_date": scalar.birth_date,
                "reason_code": None,
            }
