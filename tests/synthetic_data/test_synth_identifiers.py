"""Identifier helpers: Luhn, samordningsnummer, delivered forms, defect mutations."""

from __future__ import annotations

import random
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic_data import identifiers as ids
from synthetic_data.defects import bad_checksum, impossible_date

NUMBERS = ids.test_numbers()
test_number = st.sampled_from(NUMBERS)


def valid_date(twelve: str) -> bool:
    try:
        ids.birth_date(twelve)
    except ValueError:
        return False
    return True


def test_skatteverket_list_is_complete_and_valid():
    assert len(NUMBERS) == 41_493
    assert len(set(NUMBERS)) == len(NUMBERS)
    assert min(n[:4] for n in NUMBERS) == "1890" and max(n[:4] for n in NUMBERS) == "2024"
    assert all(ids.is_valid_luhn(n) and valid_date(n) for n in NUMBERS)


def test_luhn_known_value():
    # 811218-9876 is the textbook example of a valid personnummer
    assert ids.luhn_digit("811218987") == 6
    assert ids.is_valid_luhn("198112189876")


@given(test_number)
def test_samordningsnummer_is_day_plus_60_with_valid_luhn(number):
    s = ids.to_samordningsnummer(number)
    assert int(s[6:8]) == int(number[6:8]) + 60
    assert s[:6] == number[:6] and s[8:11] == number[8:11]
    assert ids.is_valid_luhn(s)
    assert ids.is_samordningsnummer(s)
    assert ids.birth_date(s) == ids.birth_date(number)
    assert ids.sex(s) == ids.sex(number)


@given(test_number)
def test_forms_render_the_same_number(number):
    on = date(2026, 11, 1)
    assert ids.format_number(number, "12", on=on) == number
    assert ids.format_number(number, "12-", on=on) == f"{number[:8]}-{number[8:]}"
    ten = ids.format_number(number, "10", on=on)
    assert ten[:6] == number[2:8] and ten[7:] == number[8:]
    assert ten[6] == ("+" if ids.age_on(number, on) >= 100 else "-")


def test_plus_separator_for_centenarians():
    assert ids.format_number("192001019809", "10", on=date(2026, 11, 1))[6] == "+"
    assert ids.format_number("195001019809", "10", on=date(2026, 11, 1))[6] == "-"


def test_unknown_form_is_rejected():
    with pytest.raises(ValueError, match="unknown identifier form"):
        ids.format_number(NUMBERS[0], "11", on=date(2026, 1, 1))


@given(test_number, st.integers(0, 2**32), st.booleans())
def test_bad_checksum_keeps_date_and_breaks_luhn(number, seed, samordning):
    if samordning:
        number = ids.to_samordningsnummer(number)
    bad = bad_checksum(number, random.Random(seed))
    assert bad[:11] == number[:11]
    assert not ids.is_valid_luhn(bad)
    assert valid_date(bad)


@given(test_number, st.integers(0, 2**32), st.booleans())
def test_impossible_date_keeps_luhn_valid(number, seed, samordning):
    if samordning:
        number = ids.to_samordningsnummer(number)
    bad = impossible_date(number, random.Random(seed))
    assert ids.is_valid_luhn(bad)
    assert not valid_date(bad)


@settings(max_examples=50)
@given(test_number)
def test_sex_follows_ninth_digit(number):
    assert ids.sex(number) == ("male" if int(number[10]) % 2 else "female")
