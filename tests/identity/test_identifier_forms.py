"""Issue 15 forms of the national parser: 12-digit '+' (aged 100+), the '+' century rule by calendar
year, interim numbers (accepted only when allowed); parse == parse_batch on every form."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.personnummer import (
    BAD_CHECKSUM,
    IMPOSSIBLE_DATE,
    INTERIM,
    INTERIM_LETTERS,
    INTERIM_NOT_ACCEPTED,
    PERSONNUMMER,
    PLUS_UNDER_100,
    REASON_CODES,
    REASON_TEXT,
    SAMORDNINGSNUMMER,
    InvalidIdentifier,
    luhn_digit,
    parse,
    parse_batch,
    try_parse,
)

REF = date(2026, 1, 15)


def _number(birth: date, serial: str = "123", *, samord: bool = False) -> str:
    """12-digit number (or interim, when ``serial`` starts with a letter) for ``birth``."""
    day = birth.day + (60 if samord else 0)
    nine = f"{birth:%y%m}{day:02d}{serial}"
    luhn_nine = nine[:6] + ("1" + serial[1:] if serial[0].isalpha() else serial)
    return f"{birth.year // 100:02d}{nine}{luhn_digit(luhn_nine)}"


def test_every_reason_code_has_a_text_without_quotes():
    assert set(REASON_TEXT) == REASON_CODES
    assert not [t for t in REASON_TEXT.values() if "'" in t or '"' in t]


# ---------------------------------------------------------------- '+' long form


def test_plus_long_form_of_a_centenarian():
    twelve = _number(date(1920, 5, 17))
    ident = parse(f"{twelve[:8]}+{twelve[8:]}", reference_date=REF)
    assert ident.normalised == twelve and ident.birth_date == date(1920, 5, 17)
    assert parse(twelve, reference_date=REF) == ident  # the same person in every form


def test_plus_long_form_of_someone_turning_100_later_in_the_reference_year():
    """Skatteverket writes '+' from the year of the 100th birthday, not from the birthday."""
    twelve = _number(date(1926, 11, 30))
    assert parse(f"{twelve[:8]}+{twelve[8:]}", reference_date=REF).normalised == twelve
    younger = _number(date(1927, 1, 1))
    assert try_parse(f"{younger[:8]}+{younger[8:]}", reference_date=REF) == PLUS_UNDER_100


def test_ten_digit_plus_in_the_year_of_the_100th_birthday():
    """The old rule (exact age) read 261130+NNNC on 2026-01-15 as born 1826; it is 1926."""
    twelve = _number(date(1926, 11, 30))
    ten = f"{twelve[2:8]}+{twelve[8:]}"
    assert parse(ten, reference_date=REF).normalised == twelve
    assert parse(twelve, reference_date=REF).ten_digit(reference_date=REF) == ten
    # '-' keeps the exact-age rule: before the birthday the same digits are someone aged 99
    assert parse(ten.replace("+", "-"), reference_date=REF).birth_date == date(1926, 11, 30)
    assert parse(ten.replace("+", "-"), reference_date=date(2026, 11, 30)).birth_date == date(2026, 11, 30)


def test_plus_long_form_errors_keep_their_order():
    """Date first, then the '+', then the check digit."""
    young = _number(date(1981, 12, 18))
    wrong_sum = young[:-1] + str((int(young[-1]) + 1) % 10)
    assert try_parse(f"{wrong_sum[:8]}+{wrong_sum[8:]}", reference_date=REF) == PLUS_UNDER_100
    assert try_parse("19811318+9876", reference_date=REF) == IMPOSSIBLE_DATE
    old = _number(date(1900, 3, 1))
    old_sum = old[:-1] + str((int(old[-1]) + 1) % 10)
    assert try_parse(f"{old_sum[:8]}+{old_sum[8:]}", reference_date=REF) == BAD_CHECKSUM


# ---------------------------------------------------------------- interim numbers


def test_interim_number_refused_by_default_and_accepted_when_allowed():
    value = _number(date(1990, 4, 2), "T45")
    assert value[8] == "T"
    with pytest.raises(InvalidIdentifier) as exc:
        parse(value, reference_date=REF)
    assert exc.value.reason_code == INTERIM_NOT_ACCEPTED
    assert value not in str(exc.value) and value[:8] not in str(exc.value)
    ident = parse(f"{value[2:8]}-{value[8:]}", reference_date=REF, allow_interim=True)
    assert (ident.kind, ident.normalised, ident.birth_date, ident.sex) == (
        INTERIM,
        value,
        date(1990, 4, 2),
        "M",
    )
    assert "T45" not in repr(ident)


def test_interim_letter_counts_as_one_in_the_luhn_check():
    # every interim letter gives the same check digit: the letter is read as 1
    base = _number(date(1990, 4, 2), "T45")
    for letter in INTERIM_LETTERS:
        value = base[:8] + letter + base[9:]
        assert parse(value, reference_date=REF, allow_interim=True).normalised == value
    wrong = base[:-1] + str((int(base[-1]) + 1) % 10)
    assert try_parse(wrong, reference_date=REF, allow_interim=True) == BAD_CHECKSUM
    # a malformed interim number keeps its specific reason even when interim numbers are refused
    assert try_parse(wrong, reference_date=REF) == BAD_CHECKSUM


def test_interim_number_carries_the_real_day():
    nine = "900462T45"  # day 62: a samordningsnummer day, not an interim one
    value = "19" + nine + luhn_digit("900462145")
    assert try_parse(value, reference_date=REF, allow_interim=True) == IMPOSSIBLE_DATE
    assert parse_batch([value], reference_date=REF, allow_interim=True)["reason_code"][0].as_py() == (
        IMPOSSIBLE_DATE
    )


def test_batch_of_interim_numbers():
    ok = _number(date(1990, 4, 2), "R06")
    pnr = _number(date(1981, 12, 18), "987")
    refused = parse_batch([ok, pnr], reference_date=REF).to_pylist()
    assert refused[0]["reason_code"] == INTERIM_NOT_ACCEPTED and refused[0]["normalised"] is None
    assert refused[1]["kind"] == PERSONNUMMER
    allowed = parse_batch([ok, pnr], reference_date=REF, allow_interim=True).to_pylist()
    assert [r["kind"] for r in allowed] == [INTERIM, PERSONNUMMER]
    assert allowed[0]["normalised"] == ok and allowed[0]["sex"] == "F"


# ---------------------------------------------------------------- properties

births = st.dates(min_value=date(1880, 1, 1), max_value=REF)
serials = st.one_of(
    st.integers(1, 999).map(lambda n: f"{n:03d}"),
    st.tuples(st.sampled_from(INTERIM_LETTERS), st.integers(0, 99)).map(lambda t: f"{t[0]}{t[1]:02d}"),
)


@st.composite
def numbers(draw):
    birth = draw(births)
    serial = draw(serials)
    samord = draw(st.booleans()) and serial[0].isdigit()
    return _number(birth, serial, samord=samord), birth, samord


def _forms_of(twelve: str, birth: date) -> list[str]:
    plus_ok = REF.year - birth.year >= 100
    exact_age = REF.year - birth.year - ((REF.month, REF.day) < (birth.month, birth.day))
    forms = [twelve, f"{twelve[:8]}-{twelve[8:]}", f"\t{twelve} "]
    forms.append(f"{twelve[2:8]}{'+' if plus_ok else '-'}{twelve[8:]}")
    if plus_ok:
        forms.append(f"{twelve[:8]}+{twelve[8:]}")
    if exact_age < 100:
        forms.append(twelve[2:])
    return forms


@given(numbers())
@settings(max_examples=300, deadline=None)
def test_every_kind_round_trips_through_every_form(item):
    twelve, birth, samord = item
    interim = twelve[8].isalpha()
    ident = parse(twelve, reference_date=REF, allow_interim=True)
    assert ident.birth_date == birth
    assert ident.kind == (INTERIM if interim else SAMORDNINGSNUMMER if samord else PERSONNUMMER)
    assert ident.ten_digit(reference_date=REF) in _forms_of(twelve, birth)
    forms = _forms_of(twelve, birth)
    for form in forms:
        assert parse(form, reference_date=REF, allow_interim=True) == ident
        assert try_parse(form, reference_date=REF) == (INTERIM_NOT_ACCEPTED if interim else ident)
    table = parse_batch(forms, reference_date=REF, allow_interim=True)
    assert table["normalised"].to_pylist() == [twelve] * len(forms)


_values = st.one_of(
    st.none(),
    st.text(max_size=16),
    st.from_regex(rf"\A\s?\d{{6,8}}[-+]?[\d{INTERIM_LETTERS}]\d{{3}}\s?\Z"),
    numbers().map(lambda item: item[0]),
    numbers().map(lambda item: f"{item[0][:8]}+{item[0][8:]}"),
    numbers().map(lambda item: f"{item[0][2:8]}+{item[0][8:]}"),
    numbers().map(lambda item: f"{item[0][2:8]}-{item[0][8:]}"),
)


@given(
    st.lists(_values, max_size=60),
    st.dates(min_value=date(1990, 1, 1), max_value=date(2030, 12, 31)),
    st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_parse_batch_equals_parse_on_every_form(values, ref, allow_interim):
    rows = parse_batch(values, reference_date=ref, allow_interim=allow_interim).to_pylist()
    assert len(rows) == len(values)
    for value, row in zip(values, rows, strict=True):
        scalar = try_parse(value, reference_date=ref, allow_interim=allow_interim)
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
