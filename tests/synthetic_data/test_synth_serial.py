"""Synthetic identifiers never carry serial number 000 (never issued by Skatteverket, refused by the
parser as ``identifier.invalid_serial``), so the only invalid identifiers in a delivery are the
defects its manifest declares; and each identifier defect is reported by the production parser
with exactly the class the manifest declares."""

from __future__ import annotations

import random
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.personnummer import parse_batch, try_parse
from synthetic_data import identifiers as ids
from synthetic_data import population as pop
from synthetic_data.defects import bad_checksum, impossible_date

EXTRACT = date(2026, 3, 1)
_TEST_NUMBERS = ids.test_numbers()


def test_generated_number_refuses_serial_000():
    with pytest.raises(ValueError, match="000"):
        ids.generated_number(date(1960, 5, 17), 0)
    assert ids.generated_number(date(1960, 5, 17), 1)[8:11] == "001"


def test_fallback_numbers_skip_serial_000(monkeypatch):
    """Regression: the fallback drew serials from 0..999, so 000 (never issued) could be generated."""
    real_random = random.Random

    class ZeroSerialsFirst(real_random):
        zeros = 25

        def randrange(self, *args, **kwargs):
            if args == (1000,) and ZeroSerialsFirst.zeros:
                ZeroSerialsFirst.zeros -= 1
                super().randrange(*args, **kwargs)
                return 0
            return super().randrange(*args, **kwargs)

    small = tuple(n for n in _TEST_NUMBERS if 1950 <= int(n[:4]) <= 1951)
    monkeypatch.setattr(pop.ids, "test_numbers", lambda: small)
    monkeypatch.setattr(pop.random, "Random", ZeroSerialsFirst)
    chosen, generated = pop._choose_numbers(7, len(small) + 60, EXTRACT)
    assert generated == 60 and ZeroSerialsFirst.zeros == 0  # the zero serials were really drawn
    numbers = [n for n, _ in chosen]
    assert not [n for n in numbers if n[8:11] == "000"]
    assert parse_batch(numbers, reference_date=EXTRACT)["reason_code"].null_count == len(numbers)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**31), persons=st.integers(min_value=1, max_value=60))
def test_population_numbers_all_parse(seed, persons):
    p = pop.build_population.__wrapped__(seed=seed, persons=persons, extract_date=EXTRACT)
    numbers = [x.number for x in p.persons]
    table = parse_batch(numbers, reference_date=EXTRACT)
    assert table["reason_code"].to_pylist() == [None] * len(numbers)
    assert table["kind"].to_pylist() == [x.id_type for x in p.persons]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_TEST_NUMBERS), st.integers(0, 2**32), st.booleans())
def test_identifier_defects_are_reported_as_declared(number, seed, samordning):
    if samordning:
        number = ids.to_samordningsnummer(number)
    assert not isinstance(try_parse(number, reference_date=EXTRACT), str)  # valid, serial 000 included
    assert (
        try_parse(bad_checksum(number, random.Random(seed)), reference_date=EXTRACT)
        == "identifier.bad_checksum"
    )
    assert (
        try_parse(impossible_date(number, random.Random(seed)), reference_date=EXTRACT)
        == "identifier.impossible_date"
    )
