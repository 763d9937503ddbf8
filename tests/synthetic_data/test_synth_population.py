"""The synthetic population: ages, identifiers, regions, fallback numbers."""

from __future__ import annotations

from collections import Counter
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic_data import geo
from synthetic_data import identifiers as ids
from synthetic_data import population as pop

EXTRACT = date(2026, 11, 1)


@pytest.fixture(scope="module")
def people():
    return pop.build_population(seed=42, persons=2000, extract_date=EXTRACT)


def test_numbers_come_from_the_test_list(people):
    listed = set(ids.test_numbers())
    assert people.generated == 0 and people.from_test_list == 2000
    for p in people.persons:
        base = (
            p.number
            if p.id_type == "personnummer"
            else (ids.with_check_digit(p.number[:6] + f"{int(p.number[6:8]) - 60:02d}" + p.number[8:11]))
        )
        assert base in listed
        assert ids.is_valid_luhn(p.number)
    assert len({p.number for p in people.persons}) == 2000


def test_ages_are_plausible_for_a_diabetes_register(people):
    years = [p.birth_date.year for p in people.persons]
    assert all(1918 <= y <= 2008 for y in years)
    assert sum(1935 <= y <= 2008 for y in years) >= 0.99 * len(years)
    ages = [ids.age_on(p.number, EXTRACT) for p in people.persons]
    # most persons with diabetes are over 50
    assert sum(a >= 50 for a in ages) > 0.5 * len(ages)
    assert any(a >= 100 for a in ages)  # so that the '+' form occurs


def test_shares(people):
    n = len(people.persons)
    samordning = sum(p.id_type == "samordningsnummer" for p in people.persons)
    moved = sum(p.previous_address is not None for p in people.persons)
    assert 0.03 * n < samordning < 0.07 * n
    assert 0.03 * n < moved < 0.07 * n
    types = Counter(p.diabetes_type for p in people.persons)
    assert types["typ2"] > types["typ1"] > 0


def test_regions_and_postal_codes(people):
    for p in people.persons:
        lo, hi = geo.POSTAL_RANGES[p.home_region][0]
        assert lo <= int(p.address.postal_code) <= hi
        if p.previous_address is not None:
            assert p.previous_address.region != p.home_region
            lo, hi = geo.POSTAL_RANGES[p.previous_address.region][0]
            assert lo <= int(p.previous_address.postal_code) <= hi
            assert len(p.regions) == 2
    for region, members in people.by_region.items():
        assert all(region in people.persons[i].regions for i in members)


def test_visits_are_in_period_distinct_and_before_death(people):
    for p in people.persons:
        days = [v.day for v in p.visits]
        assert days, "every NDR person has at least one visit"
        assert len(set(days)) == len(days)
        assert all(date(2022, 1, 1) <= d < EXTRACT for d in days)
        if p.death_date is not None:
            assert max(days) < p.death_date
        assert p.diagnosis_date <= days[0]


def test_deterministic_and_seed_dependent():
    a = pop.build_population.__wrapped__(seed=3, persons=200, extract_date=EXTRACT)
    b = pop.build_population.__wrapped__(seed=3, persons=200, extract_date=EXTRACT)
    c = pop.build_population.__wrapped__(seed=4, persons=200, extract_date=EXTRACT)
    assert a == b
    assert a.persons != c.persons


def test_falls_back_to_generated_numbers_when_list_is_too_small(monkeypatch):
    small = tuple(n for n in ids.test_numbers() if 1950 <= int(n[:4]) <= 1951)
    monkeypatch.setattr(pop.ids, "test_numbers", lambda: small)
    p = pop.build_population.__wrapped__(seed=1, persons=len(small) + 40, extract_date=EXTRACT)
    assert p.generated == 40
    assert p.from_test_list == len(small)
    generated = [x for x in p.persons if not x.from_test_list]
    assert len(generated) == 40
    assert all(ids.is_valid_luhn(x.number) for x in generated)
    assert len({x.number for x in p.persons}) == len(p.persons)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**31),
    persons=st.integers(min_value=1, max_value=30),
    extract=st.dates(min_value=date(2023, 1, 1), max_value=date(2027, 12, 31)),
)
def test_population_laws_hold_for_any_seed(seed, persons, extract):
    p = pop.build_population.__wrapped__(seed=seed, persons=persons, extract_date=extract)
    numbers = [x.number for x in p.persons]
    assert len(set(numbers)) == persons
    for x in p.persons:
        assert ids.is_valid_luhn(x.number)
        assert x.birth_date == ids.birth_date(x.number) and x.sex == ids.sex(x.number)
        assert x.id_type == ("samordningsnummer" if int(x.number[6:8]) > 60 else "personnummer")
        assert x.visits and all(date(2022, 1, 1) <= v.day < extract for v in x.visits)
        assert all(v.region in x.regions for v in x.visits)
        assert all(o.region in x.regions for o in x.other_encounters)
