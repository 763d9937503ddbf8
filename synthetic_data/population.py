"""The synthetic population: persons with diabetes and their clinical course ("ground truth").

Every source (NDR register and PROM CSVs, each region's FHIR journal) is rendered from this
one truth, so the same person, visit and value appear consistently across holders. All
randomness comes from ``random.Random`` seeded with strings derived from the run seed (string
seeds are hashed with SHA-512, so results do not depend on ``PYTHONHASHSEED``); each person has
an independent stream, so one region's FHIR can be streamed without building the others.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache

from synthetic_data import geo
from synthetic_data import identifiers as ids

FIRST_YEAR = 2022
#: Birth years of the main population (plausible for a diabetes register) ...
MAIN_BIRTH_YEARS = (1935, 2008)
#: ... plus a few centenarians, so that the '+' separator of the 10-digit form occurs.
CENTENARIAN_BIRTH_YEARS = (1918, 1925)
CENTENARIAN_SHARE = 0.005
SAMORDNINGSNUMMER_SHARE = 0.05
MOVED_SHARE = 0.05
PROM_SHARE = 0.35

DIABETES_TYPES = ("typ1", "typ2", "lada", "mody", "sekundar", "annan")
SMOKING = ("aldrig", "tidigare", "daglig", "ibland")
TREATMENTS = ("kost", "tabletter", "insulin", "insulin_tabletter", "glp1", "pump")
PREM_ANSWERS = ("1", "2", "3", "4", "5", "ej aktuellt")


@dataclass(frozen=True)
class Address:
    line: str
    postal_code: str  # 5 digits
    city: str
    region: str


@dataclass(frozen=True)
class Prom:
    levels: tuple[int, int, int, int, int]  # EQ-5D-5L mobility .. anxiety/depression, 1..5
    vas: int  # EQ VAS 0..100
    prem: tuple[str, str, str, str, str]  # respect, involvement, information, accessibility, overall


@dataclass(frozen=True)
class Visit:
    """One NDR visit (register row) and the journal encounter that belongs to it."""

    day: date
    region: str  # the region whose journal holds the encounter
    encounter_shift: int  # journal date = register date + shift (days, -3..3)
    hba1c: int  # mmol/mol (IFCC)
    bmi: float
    weight: float  # kg
    systolic: int
    diastolic: int
    smoking: str
    treatment: str
    prom: Prom | None
    ekg: bool


@dataclass(frozen=True)
class OtherEncounter:
    """A journal contact that is not an NDR visit (emergency, inpatient, virtual, ...)."""

    start: date
    days: int  # length of stay (0 = same day)
    class_code: str  # v3 ActCode: AMB, EMER, IMP, VR
    region: str
    diagnosis: str | None  # ICD-10-SE
    procedure: str | None  # KVÅ
    systolic: int | None
    diastolic: int | None


@dataclass(frozen=True)
class Person:
    index: int
    number: str  # 12 digits, personnummer or samordningsnummer
    from_test_list: bool
    given: tuple[str, ...]
    family: str
    height_cm: float
    home_region: str
    address: Address  # current (at extract date)
    previous_address: Address | None  # before moving, for persons who moved region
    move_date: date | None
    diabetes_type: str
    diagnosis_date: date
    death_date: date | None
    comorbidities: tuple[tuple[str, date], ...]  # (ICD-10-SE, onset)
    extra_medications: tuple[str, ...]  # ATC codes in use besides the diabetes treatment's own
    visits: tuple[Visit, ...]
    other_encounters: tuple[OtherEncounter, ...]

    @property
    def id_type(self) -> str:
        return "samordningsnummer" if ids.is_samordningsnummer(self.number) else "personnummer"

    @property
    def sex(self) -> str:
        return ids.sex(self.number)

    @property
    def birth_date(self) -> date:
        return ids.birth_date(self.number)

    @property
    def regions(self) -> tuple[str, ...]:
        """Regions whose journals hold this person (previous region first)."""
        if self.previous_address is not None:
            return (self.previous_address.region, self.home_region)
        return (self.home_region,)

    def region_at(self, d: date) -> str:
        """The region responsible for the person on day ``d``."""
        return _region_on(d, self.home_region, self.previous_address, self.move_date)

    def address_in(self, region: str) -> Address:
        if self.previous_address is not None and self.previous_address.region == region:
            return self.previous_address
        return self.address


@dataclass(frozen=True)
class Population:
    persons: tuple[Person, ...]
    from_test_list: int
    generated: int
    by_region: dict[str, tuple[int, ...]] = field(default_factory=dict)  # region -> person indexes


def _age_weight(age: int) -> float:
    """Relative frequency of an age in a diabetes register (type 2 dominates from 50)."""
    if age < 18:
        return 0.4
    if age < 40:
        return 1.0
    if age < 50:
        return 2.5
    if age < 60:
        return 5.0
    if age < 70:
        return 8.0
    if age < 80:
        return 9.0
    return 5.0


def _choose_numbers(seed: int, n: int, extract_date: date) -> tuple[list[tuple[str, bool]], int]:
    """(12-digit number, from_test_list) for n persons, and how many had to be generated."""
    rng = random.Random(f"{seed}:numbers")
    all_numbers = ids.test_numbers()
    lo, hi = MAIN_BIRTH_YEARS
    main = [x for x in all_numbers if lo <= int(x[:4]) <= hi]
    old = [x for x in all_numbers if CENTENARIAN_BIRTH_YEARS[0] <= int(x[:4]) <= CENTENARIAN_BIRTH_YEARS[1]]
    rng.shuffle(old)
    n_old = min(len(old), max(1 if n >= 50 else 0, round(n * CENTENARIAN_SHARE)))
    chosen: list[tuple[str, bool]] = [(x, True) for x in old[:n_old]]
    need = n - n_old
    # The test list is very unevenly spread over birth years (about 35 numbers a year for
    # 1935-1969, 700 a year for 1980-2009). Weighted sampling without replacement
    # (Efraimidis-Spirakis keys) with weight = wanted age density / list density per year gives
    # a register-like age mix for as long as a year's numbers last, then spills to other years.
    per_year = Counter(x[:4] for x in main)
    keyed = sorted(
        (
            (math.log(rng.random() or 1e-300) * per_year[x[:4]] / _age_weight(ids.age_on(x, extract_date)), x)
            for x in main
        ),
        reverse=True,
    )
    accepted = [x for _, x in keyed[:need]]
    chosen.extend((x, True) for x in accepted)
    generated = need - len(accepted)
    if generated > 0:
        used = set(all_numbers)
        while len(chosen) < n:
            year = rng.randint(lo, hi)
            if rng.random() * 9.0 >= _age_weight(extract_date.year - year):
                continue
            born = date(year, 1, 1) + timedelta(days=rng.randrange(365))
            serial = rng.randrange(1000)
            if serial == 0:  # never issued (identifier.invalid_serial): draw again
                continue
            number = ids.generated_number(born, serial)
            if number not in used:
                used.add(number)
                chosen.append((number, False))
    # interleave centenarians with the rest so person indexes are not sorted by age group
    rng.shuffle(chosen)
    return chosen, max(generated, 0)


def _address(rng: random.Random, region: str) -> Address:
    city, prefixes = rng.choice(geo.CITIES[region])
    postal = f"{rng.choice(prefixes)}{rng.randrange(100):02d}"
    line = f"{rng.choice(geo.STREETS)} {rng.randint(1, 120)}"
    if rng.random() < 0.15:
        line += f" lgh {rng.randint(1001, 1403)}"
    return Address(line=line, postal_code=postal, city=city, region=region)


def _diabetes_type(rng: random.Random, age: int) -> str:
    p_t1 = 0.6 if age < 35 else 0.15 if age < 55 else 0.05
    r = rng.random()
    if r < p_t1:
        return "typ1"
    r = rng.random()
    if r < 0.03:
        return "lada"
    if r < 0.04:
        return "mody"
    if r < 0.055:
        return "sekundar"
    if r < 0.065:
        return "annan"
    return "typ2"


def _weekday(d: date, lo: date, hi: date, pick: int) -> date:
    """Clinics see NDR patients on weekdays: move a weekend day to weekday ``pick`` (0-4) of the
    same week, if that stays within [lo, hi]."""
    wd = d.weekday()
    if wd < 5:
        return d
    moved = d - timedelta(days=wd - pick)
    return moved if lo <= moved <= hi else d


def _clip(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def _initial_treatment(rng: random.Random, dtype: str) -> str:
    if dtype == "typ1":
        return "pump" if rng.random() < 0.25 else "insulin"
    if dtype == "lada":
        return rng.choice(("insulin", "insulin_tabletter", "tabletter"))
    if dtype == "mody":
        return rng.choice(("kost", "tabletter"))
    return rng.choices(TREATMENTS[:5], weights=(12, 45, 10, 15, 18))[0]


_ESCALATE = {
    "kost": "tabletter",
    "tabletter": "glp1",
    "glp1": "insulin_tabletter",
    "insulin_tabletter": "insulin",
    "insulin": "pump",
    "pump": "pump",
}

#: ATC codes prescribed for each register treatment category
MEDS_FOR_TREATMENT: dict[str, tuple[str, ...]] = {
    "kost": (),
    "tabletter": ("A10BA02",),
    "insulin": ("A10AE04", "A10AB05"),
    "insulin_tabletter": ("A10BA02", "A10AE04"),
    "glp1": ("A10BA02", "A10BJ06"),
    "pump": ("A10AB05",),
}


def _prom(rng: random.Random, age: int, hba1c: float) -> Prom:
    burden = 0.035 * (age - 55) + 0.03 * (hba1c - 55)  # older and worse-controlled report more problems
    levels = []
    for weight in (1.2, 0.7, 1.0, 1.1, 0.6):  # mobility, self-care, activities, pain, anxiety
        level = round(_clip(1.3 + weight * burden + rng.gauss(0, 0.9), 1, 5))
        levels.append(int(level))
    vas = int(round(_clip(82 - 6 * burden - 2.5 * (sum(levels) - 5) + rng.gauss(0, 8), 0, 100)))
    prem = tuple(
        "ej aktuellt"
        if rng.random() < 0.05
        else str(rng.choices((1, 2, 3, 4, 5), weights=(2, 4, 12, 35, 47))[0])
        for _ in range(5)
    )
    return Prom(levels=tuple(levels), vas=vas, prem=prem)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Names:
    given: tuple[str, ...]
    family: str


def _names(rng: random.Random, sex: str) -> _Names:
    names = geo.MALE_NAMES if sex == "male" else geo.FEMALE_NAMES
    given = (rng.choice(names),) if rng.random() < 0.7 else tuple(rng.sample(names, 2))
    family = rng.choice(geo.FAMILY_NAMES)
    if rng.random() < 0.1:
        family = f"{family}-{rng.choice(geo.FAMILY_NAMES)}"
    return _Names(given=given, family=family)


def _diagnosis_date(rng: random.Random, dtype: str, born: date, age: int, extract_date: date) -> date:
    """When the diabetes was diagnosed: in the past, at least 90 days before the extract."""
    onset_age = rng.gauss(14, 9) if dtype == "typ1" else rng.gauss(55, 11)
    if onset_age >= age - 0.3:  # would be diagnosed in the future: years since diagnosis instead
        onset_age = age - 0.3 - rng.expovariate(1 / 6)
    onset_age = max(onset_age, 0.5)
    diagnosis = born + timedelta(days=int(onset_age * 365.25))
    latest_diagnosis = extract_date - timedelta(days=90)
    if diagnosis > latest_diagnosis:
        diagnosis = latest_diagnosis - timedelta(days=rng.randrange(400))
    if diagnosis < born:
        diagnosis = born + timedelta(days=30)
    return diagnosis


def _death_date(rng: random.Random, age: int, start: date, end: date) -> date | None:
    """A death within the follow-up [start, end] (likelier with age), or None."""
    p_death = 0.015 + max(0, age - 70) * 0.004
    if rng.random() < p_death:
        span = (end - start).days
        if span > 60:
            return start + timedelta(days=rng.randrange(30, span))
    return None


@dataclass(frozen=True)
class _Baseline:
    """A person's clinical state at the start of follow-up; visits vary around it."""

    bmi: float
    hba1c: float
    systolic: float
    diastolic: float
    smoking: str
    treatment: str
    #: from this year on the treatment is escalated one step (None: never)
    escalate_year: int | None


def _baseline(rng: random.Random, dtype: str, age: int, extract_date: date) -> _Baseline:
    bmi = _clip(rng.gauss(25, 4) if dtype == "typ1" else rng.gauss(30, 5), 16.5, 52)
    hba1c = rng.gauss(62 if dtype == "typ1" else 53, 10)
    systolic = rng.gauss(128 + 0.35 * (age - 55) + 0.5 * (bmi - 28), 12)
    diastolic = rng.gauss(78 - 0.1 * (age - 55), 8)
    smoking = rng.choices(SMOKING, weights=(55, 30, 10, 5) if age >= 40 else (75, 10, 10, 5))[0]
    treatment = _initial_treatment(rng, dtype)
    escalate_year = rng.randint(FIRST_YEAR, extract_date.year) if rng.random() < 0.2 else None
    return _Baseline(bmi, hba1c, systolic, diastolic, smoking, treatment, escalate_year)


def _day_between(rng: random.Random, a: date, b: date) -> date:
    """A uniformly drawn day in [a, b] (``a`` itself if the interval is empty)."""
    if b <= a:
        return a
    return a + timedelta(days=rng.randrange((b - a).days + 1))


def _comorbidities(
    rng: random.Random, dtype: str, age: int, bmi: float, diagnosis: date, end: date
) -> list[tuple[str, date]]:
    """(ICD-10-SE code, onset) of the person's other chronic conditions, onset after diagnosis."""
    t2like = dtype != "typ1"
    comorbidities: list[tuple[str, date]] = []
    for code, p in (
        ("I10", 0.55 if t2like else 0.2),
        ("E78.0", 0.35 if t2like else 0.15),
        ("N18.3", 0.12 + 0.004 * max(age - 60, 0)),
        ("E66.9", 0.7 if bmi >= 30 else 0.0),
        ("I25.1", 0.1 if age >= 55 else 0.01),
        ("I48.9", 0.06 if age >= 65 else 0.01),
        ("G63.2", 0.1),
        ("H36.0", 0.15 if dtype == "typ1" else 0.08),
        ("F32.9", 0.06),
        ("E03.9", 0.1 if dtype == "typ1" else 0.03),
    ):
        if rng.random() < p:
            comorbidities.append((code, _day_between(rng, diagnosis, end)))
    return comorbidities


def _extra_medications(rng: random.Random, dtype: str, age: int, codes: set[str]) -> list[str]:
    """ATC codes in use besides the diabetes treatment's own (may repeat: the caller dedupes)."""
    meds: list[str] = []
    if dtype != "typ1" and rng.random() < 0.3:
        meds.append(rng.choice(("A10BK01", "A10BK03", "A10BH01", "A10BB12")))
    if "I10" in codes:
        meds.append("C09AA05" if rng.random() < 0.6 else rng.choice(("C09CA01", "C08CA01")))
    if "E78.0" in codes or (age >= 40 and rng.random() < 0.5):
        meds.append("C10AA01" if rng.random() < 0.4 else "C10AA05")
    if "I25.1" in codes:
        meds.append("B01AC06")
    return meds


def _visit_days(rng: random.Random, dtype: str, start: date, end: date, extract_date: date) -> list[date]:
    """NDR visit days in [start, end], one to four a year on weekdays; at least one visit."""
    weights = (1, 3, 4, 2) if dtype == "typ1" else (2, 4, 3, 1)
    visit_days: list[date] = []
    for year in range(FIRST_YEAR, extract_date.year + 1):
        lo = max(start, date(year, 1, 1))
        hi = min(end, date(year, 12, 31))
        if hi < lo:
            continue
        span = (hi - lo).days + 1
        n = rng.choices((1, 2, 3, 4), weights=weights)[0]
        n = max(1, round(n * span / 365)) if span < 365 else n
        n = min(n, span)
        days = {
            _weekday(lo + timedelta(days=d), lo, hi, rng.randrange(5)) for d in rng.sample(range(span), n)
        }
        visit_days.extend(sorted(days))
    if not visit_days:  # diagnosed (or died) at the edge of the period: one visit
        visit_days = [min(start, end) if start <= end else end]
    return visit_days


def _region_on(day: date, home: str, previous: Address | None, move: date | None) -> str:
    """The region responsible on ``day`` for a person living in ``home``, or in ``previous``
    before ``move``."""
    if previous is not None and move is not None and day < move:
        return previous.region
    return home


@dataclass(frozen=True)
class _Residence:
    """Where a person lives: ``home`` now, ``previous`` before ``move`` (for persons who moved)."""

    home: str
    previous: Address | None = None
    move: date | None = None

    def region_at(self, day: date) -> str:
        return _region_on(day, self.home, self.previous, self.move)


def _residence(rng: random.Random, home: str, visit_days: list[date]) -> _Residence:
    """Some persons moved from another region, between two of their visits."""
    if len(visit_days) >= 2 and rng.random() < MOVED_SHARE:
        k = rng.randrange(1, len(visit_days))
        move = visit_days[k - 1] + timedelta(
            days=rng.randrange(1, (visit_days[k] - visit_days[k - 1]).days + 1)
        )
        old_region = rng.choice([r for r in geo.REGIONS if r != home])
        return _Residence(home=home, previous=_address(rng, old_region), move=move)
    return _Residence(home=home)


def _visits(
    rng: random.Random,
    number: str,
    visit_days: list[date],
    baseline: _Baseline,
    height: float,
    residence: _Residence,
) -> list[Visit]:
    """The NDR visits: values drift around the baseline, the treatment escalates in its year."""
    visits: list[Visit] = []
    for i, d in enumerate(visit_days):
        years = (d - visit_days[0]).days / 365.25
        tr = baseline.treatment
        if baseline.escalate_year is not None and d.year >= baseline.escalate_year:
            tr = _ESCALATE[baseline.treatment]
        hba1c = _clip(
            baseline.hba1c + 1.2 * math.sin(years) + rng.gauss(0, 5) - (4 if tr != baseline.treatment else 0),
            28,
            140,
        )
        bmi = _clip(baseline.bmi + 0.3 * years + rng.gauss(0, 0.6), 15.5, 60)
        age_v = ids.age_on(number, d)
        shift = 0 if rng.random() < 0.6 else rng.randint(-3, 3)
        visits.append(
            Visit(
                day=d,
                region=residence.region_at(d + timedelta(days=shift)),
                encounter_shift=shift,
                hba1c=int(round(hba1c)),
                bmi=round(bmi, 1),
                weight=round(bmi * (height / 100) ** 2, 1),
                systolic=int(round(_clip(baseline.systolic + rng.gauss(0, 9), 85, 210))),
                diastolic=int(round(_clip(baseline.diastolic + rng.gauss(0, 6), 45, 120))),
                smoking=baseline.smoking if i == 0 or rng.random() > 0.03 else "tidigare",
                treatment=tr,
                prom=_prom(rng, age_v, hba1c) if rng.random() < PROM_SHARE else None,
                ekg=rng.random() < 0.15,
            )
        )
    return visits


def _other_encounter(
    rng: random.Random,
    when: date,
    last: date,
    codes: set[str],
    age: int,
    baseline: _Baseline,
    residence: _Residence,
) -> OtherEncounter:
    cls = rng.choices(("AMB", "EMER", "IMP", "VR"), weights=(45, 25, 15, 15))[0]
    stay = rng.randint(1, 9) if cls == "IMP" else 0
    if when + timedelta(days=stay) > last:
        stay = 0
    diag = None
    proc = None
    if cls in ("EMER", "IMP"):
        diag = rng.choice(("E16.2", "J18.9", "S72.0", "I48.9", "I10"))
        if "I25.1" in codes and cls == "IMP" and rng.random() < 0.3:
            diag, proc = "I25.1", "FNG05"
        elif "G63.2" in codes and cls == "IMP" and rng.random() < 0.2:
            proc = rng.choice(("NHQ09", "NGQ19"))
    elif cls == "AMB":
        if "H36.0" in codes and rng.random() < 0.3:
            diag, proc = "H36.0", "CKC12"
        elif age >= 60 and rng.random() < 0.08:
            proc = "CJE20"
    bp = cls in ("EMER", "IMP")
    return OtherEncounter(
        start=when,
        days=stay,
        class_code=cls,
        region=residence.region_at(when),
        diagnosis=diag,
        procedure=proc,
        systolic=int(round(_clip(baseline.systolic + rng.gauss(5, 12), 85, 220))) if bp else None,
        diastolic=int(round(_clip(baseline.diastolic + rng.gauss(2, 8), 45, 125))) if bp else None,
    )


def _other_encounters(
    rng: random.Random,
    first: date,
    last: date,
    codes: set[str],
    age: int,
    baseline: _Baseline,
    residence: _Residence,
) -> list[OtherEncounter]:
    """Journal contacts between the first visit and the end of follow-up that are not NDR visits."""
    span_days = (last - first).days
    if span_days <= 0:
        return []
    others: list[OtherEncounter] = []
    for _ in range(rng.choices((0, 1, 2, 3, 4, 6), weights=(20, 25, 25, 15, 10, 5))[0]):
        when = first + timedelta(days=rng.randrange(span_days))
        others.append(_other_encounter(rng, when, last, codes, age, baseline, residence))
    others.sort(key=lambda e: (e.start, e.class_code))
    return others


def _person(seed: int, index: int, number: str, from_list: bool, extract_date: date) -> Person:
    # One stream per person, drawn from in a fixed order: every step below takes its draws in
    # turn, so reordering the steps changes every later value (and the generated files).
    rng = random.Random(f"{seed}:person:{index}")
    if rng.random() < SAMORDNINGSNUMMER_SHARE:
        number = ids.to_samordningsnummer(number)
    born = ids.birth_date(number)
    sex = ids.sex(number)
    age = ids.age_on(number, extract_date)
    names = _names(rng, sex)
    height = rng.gauss(178, 7) if sex == "male" else rng.gauss(165, 6)
    home = rng.choices(geo.REGIONS, weights=geo.REGION_WEIGHTS)[0]
    address = _address(rng, home)

    dtype = _diabetes_type(rng, age)
    diagnosis = _diagnosis_date(rng, dtype, born, age, extract_date)
    start = max(date(FIRST_YEAR, 1, 1), diagnosis + timedelta(days=14))
    end = extract_date - timedelta(days=1)
    death = _death_date(rng, age, start, end)
    if death is not None:
        end = death - timedelta(days=1)

    baseline = _baseline(rng, dtype, age, extract_date)
    comorbidities = _comorbidities(rng, dtype, age, baseline.bmi, diagnosis, end)
    codes = {c for c, _ in comorbidities}
    meds = _extra_medications(rng, dtype, age, codes)
    visit_days = _visit_days(rng, dtype, start, end, extract_date)
    residence = _residence(rng, home, visit_days)
    visits = _visits(rng, number, visit_days, baseline, height, residence)
    others = _other_encounters(rng, visit_days[0], end, codes, age, baseline, residence)

    return Person(
        index=index,
        number=number,
        from_test_list=from_list,
        given=names.given,
        family=names.family,
        height_cm=round(height, 1),
        home_region=home,
        address=address,
        previous_address=residence.previous,
        move_date=residence.move,
        diabetes_type=dtype,
        diagnosis_date=diagnosis,
        death_date=death,
        comorbidities=tuple(comorbidities),
        extra_medications=tuple(dict.fromkeys(meds)),
        visits=tuple(visits),
        other_encounters=tuple(others),
    )


@lru_cache(maxsize=4)
def build_population(*, seed: int, persons: int, extract_date: date) -> Population:
    """The whole synthetic population (deterministic in its arguments)."""
    if persons < 1:
        raise ValueError("persons must be at least 1")
    numbers, generated = _choose_numbers(seed, persons, extract_date)
    people = tuple(
        _person(seed, i, num, from_list, extract_date) for i, (num, from_list) in enumerate(numbers)
    )
    by_region: dict[str, list[int]] = {r: [] for r in geo.REGIONS}
    for p in people:
        for r in p.regions:
            by_region[r].append(p.index)
    return Population(
        persons=people,
        from_test_list=persons - generated,
        generated=generated,
        by_region={r: tuple(v) for r, v in by_region.items()},
    )
