"""FHIR R4 resources for the synthetic population (valid resources only; defects are added later).

Every resource validates with ``fhir.resources.R4B`` (the team's reference model of R4).
References are relative (``Patient/<id>``, ``Encounter/<id>``). Ids are UUIDv5 of the seed,
region and a per-person counter path, so the same arguments always give the same ids, and a
person has different Patient ids in different regions (as separate journal systems would).
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from synthetic_data import codes as cs
from synthetic_data import geo
from synthetic_data import identifiers as ids
from synthetic_data.population import MEDS_FOR_TREATMENT, OtherEncounter, Person, Visit, build_population

DEFAULT_EXTRACT_DATE = date(2026, 11, 1)

RESOURCE_TYPES: tuple[str, ...] = (
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "MedicationRequest",
    "Procedure",
    "QuestionnaireResponse",
)

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://hdp.example.se/synthetic")
_STOCKHOLM = ZoneInfo("Europe/Stockholm")

Resource = dict[str, Any]

_ENCOUNTER_TYPES = {
    "NDR": ("390906007", "Follow-up encounter"),
    "AMB": ("185349003", "Encounter for check up"),
    "EMER": ("50849002", "Emergency room admission"),
    "IMP": ("32485007", "Hospital admission"),
    "VR": ("185317003", "Telephone encounter"),
}
_CLASS_DISPLAY = {"AMB": "ambulatory", "EMER": "emergency", "IMP": "inpatient encounter", "VR": "virtual"}


@lru_cache(maxsize=4096)
def _offset(d: date) -> str:
    """UTC offset of Swedish local time at noon on ``d`` ('+01:00' or '+02:00')."""
    off = datetime(d.year, d.month, d.day, 12, tzinfo=_STOCKHOLM).utcoffset()
    assert off is not None
    return "+02:00" if off.total_seconds() == 7200 else "+01:00"


def local_datetime(d: date, minute_of_day: int) -> str:
    """FHIR dateTime for a local time on day ``d`` with the correct Swedish offset."""
    h, m = divmod(minute_of_day, 60)
    return f"{d.isoformat()}T{h:02d}:{m:02d}:00{_offset(d)}"


class IdFactory:
    """Deterministic resource ids for one seed and region.

    ``IdFactory(seed, region)(*parts) == str(uuid.uuid5(_NAMESPACE, f"{seed}:{region}:" + ":".join(parts)))``;
    computed from a pre-hashed SHA-1 state because ``uuid.uuid5`` was the generator's single
    largest cost (about 14 µs per id, against about 2 µs here).
    """

    def __init__(self, seed: int, region: str) -> None:
        self._state = hashlib.sha1(_NAMESPACE.bytes + f"{seed}:{region}:".encode(), usedforsecurity=False)

    def __call__(self, *parts: object) -> str:
        h = self._state.copy()
        h.update(":".join(map(str, parts)).encode())
        b = bytearray(h.digest()[:16])
        b[6] = (b[6] & 0x0F) | 0x50  # version 5
        b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
        x = b.hex()
        return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def _ref(kind: str, rid: str) -> dict[str, str]:
    return {"reference": f"{kind}/{rid}"}


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    c = {"system": system, "code": code}
    if display:
        c["display"] = display
    return c


def _quantity(value: float | int, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": cs.UCUM_SYSTEM, "code": unit}


_VITAL = [{"coding": [_coding(cs.OBSERVATION_CATEGORY_SYSTEM, "vital-signs", "Vital Signs")]}]
_LAB = [{"coding": [_coding(cs.OBSERVATION_CATEGORY_SYSTEM, "laboratory", "Laboratory")]}]


def patient_resource(person: Person, region: str, pid: str) -> Resource:
    addr = person.address_in(region)
    system = (
        ids.SAMORDNINGSNUMMER_SYSTEM if person.id_type == "samordningsnummer" else ids.PERSONNUMMER_SYSTEM
    )
    res: Resource = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": system, "value": person.number}],
        "name": [{"use": "official", "family": person.family, "given": list(person.given)}],
        "gender": person.sex,
        "birthDate": person.birth_date.isoformat(),
        "address": [
            {
                "use": "home",
                "line": [addr.line],
                "postalCode": addr.postal_code,
                "city": addr.city,
                "country": "SE",
            }
        ],
    }
    if person.death_date is not None:
        res["deceasedDateTime"] = local_datetime(person.death_date, 3 * 60 + (person.index * 37) % 1200)
    return res


def encounter_resource(
    eid: str,
    pid: str,
    *,
    kind: str,
    start: str,
    end: str,
    region: str,
) -> Resource:
    class_code = "AMB" if kind == "NDR" else kind
    code, display = _ENCOUNTER_TYPES[kind]
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": _coding(cs.ACT_CODE_SYSTEM, class_code, _CLASS_DISPLAY[class_code]),
        "type": [{"coding": [_coding(cs.SNOMED_SYSTEM, code, display)]}],
        "subject": _ref("Patient", pid),
        "period": {"start": start, "end": end},
        "serviceProvider": {"display": geo.REGION_DISPLAY[region]},
    }


def observation_resource(
    oid: str,
    pid: str,
    eid: str | None,
    *,
    system: str,
    code: str,
    display: str,
    value: float | int,
    unit: str,
    when: str,
    lab: bool,
) -> Resource:
    res: Resource = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "category": _LAB if lab else _VITAL,
        "code": {"coding": [_coding(system, code, display)]},
        "subject": _ref("Patient", pid),
    }
    if eid is not None:
        res["encounter"] = _ref("Encounter", eid)
    res["effectiveDateTime"] = when
    res["valueQuantity"] = _quantity(value, unit)
    return res


def hba1c_coding(region: str, rng: random.Random) -> tuple[str, str, str]:
    """(system, code, display) for HbA1c in mmol/mol; labs differ by region (NPU vs LOINC)."""
    p_npu = {"region_uppsala": 1.0, "region_orebro": 0.5, "region_skane": 0.2}[region]
    if rng.random() < p_npu:
        return (cs.NPU_SYSTEM, *cs.HBA1C_NPU)
    return (cs.LOINC_SYSTEM, *cs.HBA1C_LOINC)


def condition_resource(
    cid: str,
    pid: str,
    *,
    code: str,
    recorded: date,
    onset: date | None,
    encounter: str | None,
    category: str,
    active: bool = True,
) -> Resource:
    cat_display = "Encounter Diagnosis" if category == "encounter-diagnosis" else "Problem List Item"
    res: Resource = {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {
            "coding": [_coding(cs.CONDITION_CLINICAL_SYSTEM, "active" if active else "resolved")]
        },
        "verificationStatus": {"coding": [_coding(cs.CONDITION_VERIFICATION_SYSTEM, "confirmed")]},
        "category": [{"coding": [_coding(cs.CONDITION_CATEGORY_SYSTEM, category, cat_display)]}],
        "code": {"coding": [_coding(cs.ICD10SE_SYSTEM, code, cs.ICD10SE.get(code))]},
        "subject": _ref("Patient", pid),
    }
    if encounter is not None:
        res["encounter"] = _ref("Encounter", encounter)
    if onset is not None:
        res["onsetDateTime"] = onset.isoformat()
    res["recordedDate"] = recorded.isoformat()
    return res


def medication_request_resource(
    mid: str,
    pid: str,
    eid: str,
    *,
    atc: str,
    authored: str,
    status: str,
) -> Resource:
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {"coding": [_coding(cs.ATC_SYSTEM, atc, cs.ATC.get(atc))]},
        "subject": _ref("Patient", pid),
        "encounter": _ref("Encounter", eid),
        "authoredOn": authored,
    }


def procedure_resource(prid: str, pid: str, eid: str, *, code: str, performed: str) -> Resource:
    return {
        "resourceType": "Procedure",
        "id": prid,
        "status": "completed",
        "code": {"coding": [_coding(cs.KVA_SYSTEM, code, cs.KVA.get(code))]},
        "subject": _ref("Patient", pid),
        "encounter": _ref("Encounter", eid),
        "performedDateTime": performed,
    }


def eq5d_response_resource(
    qid: str,
    pid: str,
    eid: str,
    *,
    levels: tuple[int, ...],
    vas: int,
    authored: str,
) -> Resource:
    items: list[dict[str, Any]] = [
        {"linkId": link, "answer": [{"valueCoding": _coding(cs.EQ5D_LEVEL_SYSTEM, str(level))}]}
        for link, level in zip(cs.EQ5D_DIMENSION_LINK_IDS, levels, strict=True)
    ]
    items.append({"linkId": cs.EQ5D_VAS_LINK_ID, "answer": [{"valueInteger": vas}]})
    return {
        "resourceType": "QuestionnaireResponse",
        "id": qid,
        "questionnaire": cs.EQ5D_QUESTIONNAIRE,
        "status": "completed",
        "subject": _ref("Patient", pid),
        "encounter": _ref("Encounter", eid),
        "authored": authored,
        "item": items,
    }


def _diabetes_icd(person: Person, rng: random.Random) -> str:
    t = person.diabetes_type
    if t in ("typ1", "lada"):
        prefix = "E10"
    elif t == "typ2":
        prefix = "E11"
    elif t in ("mody", "sekundar"):
        return "E13.9"
    else:
        return "E14.9"
    complications = {c for c, _ in person.comorbidities}
    if "N18.3" in complications:
        return f"{prefix}.2"
    if "H36.0" in complications:
        return f"{prefix}.3"
    if "G63.2" in complications:
        return f"{prefix}.4"
    return f"{prefix}.5" if rng.random() < 0.05 else f"{prefix}.9"


#: Key of the first non-NDR encounter: visits are keyed by their index (0, 1, ...), other encounters
#: by this plus theirs, so the key tells the two apart and orders a visit before an encounter of
#: the same day. It is part of the resources' id paths.
_OTHER_ENCOUNTER_KEY = 10_000


@dataclass(frozen=True)
class _JournalEvent:
    """One contact in a region's journal: an NDR visit or another encounter."""

    day: date  # the journal's day (a visit's register date shifted by its encounter_shift)
    key: int
    contact: Visit | OtherEncounter


def _journal_events(person: Person, region: str) -> list[_JournalEvent]:
    """The person's contacts with this region, in chronological order."""
    events = [
        _JournalEvent(v.day + timedelta(days=v.encounter_shift), i, v)
        for i, v in enumerate(person.visits)
        if v.region == region
    ]
    events.extend(
        _JournalEvent(o.start, _OTHER_ENCOUNTER_KEY + j, o)
        for j, o in enumerate(person.other_encounters)
        if o.region == region
    )
    events.sort(key=lambda e: (e.day, e.key))
    return events


@dataclass(frozen=True)
class _Journal:
    """What every resource of one person's journal in one region shares."""

    person: Person
    region: str
    pid: str
    new_id: IdFactory
    #: the person's stream for this region: resources draw from it in journal order
    rng: random.Random
    #: (system, code, display) of HbA1c at this region's labs, fixed per person
    hba1c: tuple[str, str, str]


def _problem_list(j: _Journal, first_day: date) -> list[Resource]:
    """The diabetes and the comorbidities that started while the person lived in the region."""
    person, k = j.person, j.person.index
    out = [
        condition_resource(
            j.new_id("Condition", k, "dm"),
            j.pid,
            code=_diabetes_icd(person, j.rng),
            recorded=max(first_day, person.diagnosis_date),
            onset=person.diagnosis_date,
            encounter=None,
            category="problem-list-item",
        )
    ]
    for n, (code, onset) in enumerate(person.comorbidities):
        if person.region_at(max(onset, first_day)) != j.region:
            continue
        out.append(
            condition_resource(
                j.new_id("Condition", k, "c", n),
                j.pid,
                code=code,
                recorded=max(onset, first_day),
                onset=onset,
                encounter=None,
                category="problem-list-item",
            )
        )
    return out


class _Prescriptions:
    """Medication requests of one journal: each medicine renewed at the first visit of a year."""

    def __init__(self, j: _Journal) -> None:
        self._journal = j
        self._last_year: dict[str, str] = {}
        self.requests: list[Resource] = []

    def renew(self, key: int, eid: str, day: date, authored: str, atcs: tuple[str, ...]) -> None:
        j, year = self._journal, str(day.year)
        k = j.person.index
        for atc in atcs:
            if self._last_year.get(atc) == year:
                continue
            self._last_year[atc] = year
            self.requests.append(
                medication_request_resource(
                    j.new_id("MedicationRequest", k, key, atc),
                    j.pid,
                    eid,
                    atc=atc,
                    authored=authored,
                    status="active",
                )
            )

    def settled(self) -> list[Resource]:
        """The requests with their final status: active only if it is the latest for that medicine
        and the person still lives in the region."""
        latest: dict[str, Resource] = {}
        for mr in self.requests:
            atc = mr["medicationCodeableConcept"]["coding"][0]["code"]
            if atc in latest:
                latest[atc]["status"] = "completed"
            latest[atc] = mr
        person = self._journal.person
        if person.death_date is not None or person.regions[-1] != self._journal.region:
            for mr in latest.values():
                mr["status"] = "stopped"
        return self.requests


def _visit_resources(
    j: _Journal, day: date, key: int, v: Visit, prescriptions: _Prescriptions
) -> list[Resource]:
    """An NDR visit's encounter and what was measured there (each measurement is sometimes missing)."""
    k, rng = j.person.index, j.rng
    eid = j.new_id("Encounter", k, key)
    minute = 8 * 60 + rng.randrange(0, 16) * 30
    start = local_datetime(day, minute)
    out = [
        encounter_resource(
            eid, j.pid, kind="NDR", start=start, end=local_datetime(day, minute + 30), region=j.region
        )
    ]
    system, code, display = j.hba1c
    if rng.random() < 0.95:
        out.append(
            observation_resource(
                j.new_id("Observation", k, key, "hba1c"),
                j.pid,
                eid,
                system=system,
                code=code,
                display=display,
                value=v.hba1c,
                unit="mmol/mol",
                when=start,
                lab=True,
            )
        )
    if rng.random() < 0.8:
        out.append(
            observation_resource(
                j.new_id("Observation", k, key, "bmi"),
                j.pid,
                eid,
                system=cs.LOINC_SYSTEM,
                code=cs.BMI_LOINC[0],
                display=cs.BMI_LOINC[1],
                value=v.bmi,
                unit="kg/m2",
                when=start,
                lab=False,
            )
        )
    if rng.random() < 0.7:
        out.append(
            observation_resource(
                j.new_id("Observation", k, key, "weight"),
                j.pid,
                eid,
                system=cs.LOINC_SYSTEM,
                code=cs.WEIGHT_LOINC[0],
                display=cs.WEIGHT_LOINC[1],
                value=v.weight,
                unit="kg",
                when=start,
                lab=False,
            )
        )
    if rng.random() < 0.9:
        out.extend(_blood_pressure(j.new_id, k, key, j.pid, eid, v.systolic, v.diastolic, start))
    if v.ekg:
        out.append(
            procedure_resource(
                j.new_id("Procedure", k, key, "AF037"), j.pid, eid, code="AF037", performed=start
            )
        )
    if v.prom is not None and rng.random() < 0.6:
        out.append(
            eq5d_response_resource(
                j.new_id("QuestionnaireResponse", k, key),
                j.pid,
                eid,
                levels=v.prom.levels,
                vas=v.prom.vas,
                authored=start,
            )
        )
    prescriptions.renew(key, eid, day, start, MEDS_FOR_TREATMENT[v.treatment] + j.person.extra_medications)
    return out


def _other_encounter_resources(j: _Journal, day: date, key: int, o: OtherEncounter) -> list[Resource]:
    """A non-NDR encounter with its diagnosis, blood pressure and procedure, where it has them."""
    k, rng = j.person.index, j.rng
    eid = j.new_id("Encounter", k, key)
    minute = 7 * 60 + rng.randrange(0, 28) * 30
    start = local_datetime(day, minute)
    end_day = day + timedelta(days=o.days)
    end = local_datetime(
        end_day,
        min(minute + (60 if o.days == 0 else 0), 23 * 60)
        if o.days == 0
        else 10 * 60 + rng.randrange(0, 12) * 30,
    )
    out = [encounter_resource(eid, j.pid, kind=o.class_code, start=start, end=end, region=j.region)]
    if o.diagnosis is not None:
        out.append(
            condition_resource(
                j.new_id("Condition", k, key),
                j.pid,
                code=o.diagnosis,
                recorded=day,
                onset=None,
                encounter=eid,
                category="encounter-diagnosis",
            )
        )
    if o.systolic is not None and o.diastolic is not None:
        out.extend(_blood_pressure(j.new_id, k, key, j.pid, eid, o.systolic, o.diastolic, start))
    if o.procedure is not None:
        out.append(
            procedure_resource(
                j.new_id("Procedure", k, key, o.procedure),
                j.pid,
                eid,
                code=o.procedure,
                performed=local_datetime(day, minute + 120) if o.days else start,
            )
        )
    return out


def person_resources(
    person: Person, region: str, *, seed: int, new_id: IdFactory | None = None
) -> list[Resource]:
    """All journal resources of one person in one region's FHIR system, in chronological order
    (the medication requests last)."""
    new_id = new_id or IdFactory(seed, region)
    rng = random.Random(f"{seed}:fhir:{region}:{person.index}")
    pid = new_id("Patient", person.index)
    out: list[Resource] = [patient_resource(person, region, pid)]
    journal = _Journal(person, region, pid, new_id, rng, hba1c_coding(region, rng))
    events = _journal_events(person, region)
    if not events:
        return out
    out.extend(_problem_list(journal, events[0].day))
    prescriptions = _Prescriptions(journal)
    for event in events:
        if isinstance(event.contact, Visit):
            out.extend(_visit_resources(journal, event.day, event.key, event.contact, prescriptions))
        else:
            out.extend(_other_encounter_resources(journal, event.day, event.key, event.contact))
    out.extend(prescriptions.settled())
    return out


def _blood_pressure(
    new_id: IdFactory,
    k: int,
    key: int | str,
    pid: str,
    eid: str,
    sys_: int,
    dia: int,
    when: str,
) -> tuple[Resource, Resource]:
    return (
        observation_resource(
            new_id("Observation", k, key, "sys"),
            pid,
            eid,
            system=cs.LOINC_SYSTEM,
            code=cs.SYSTOLIC_LOINC[0],
            display=cs.SYSTOLIC_LOINC[1],
            value=sys_,
            unit="mm[Hg]",
            when=when,
            lab=False,
        ),
        observation_resource(
            new_id("Observation", k, key, "dia"),
            pid,
            eid,
            system=cs.LOINC_SYSTEM,
            code=cs.DIASTOLIC_LOINC[0],
            display=cs.DIASTOLIC_LOINC[1],
            value=dia,
            unit="mm[Hg]",
            when=when,
            lab=False,
        ),
    )


def bundle_extra_resources(person: Person, region: str, *, seed: int, tag: str, when: date) -> list[Resource]:
    """A few resources of an existing patient that are delivered only inside a Bundle.

    A telephone follow-up with an HbA1c result and blood pressure; ids are distinct from the
    NDJSON resources (the ``tag`` is part of the id path).
    """
    new_id = IdFactory(seed, region)
    k = person.index
    pid = new_id("Patient", k)
    eid = new_id("Encounter", k, "bundle", tag)
    rng = random.Random(f"{seed}:bundle:{region}:{tag}:{k}")
    start = local_datetime(when, 9 * 60 + rng.randrange(0, 14) * 30)
    system, code, display = hba1c_coding(region, rng)
    last = person.visits[-1]
    return [
        encounter_resource(eid, pid, kind="VR", start=start, end=start, region=region),
        observation_resource(
            new_id("Observation", k, "bundle", tag, "hba1c"),
            pid,
            eid,
            system=system,
            code=code,
            display=display,
            value=max(28, last.hba1c + rng.randint(-4, 4)),
            unit="mmol/mol",
            when=start,
            lab=True,
        ),
        *_blood_pressure(new_id, k, f"bundle:{tag}", pid, eid, last.systolic, last.diastolic, start),
    ]


def iter_fhir_resources(
    *,
    seed: int = 42,
    persons: int = 2000,
    region: str | None = None,
    extract_date: date = DEFAULT_EXTRACT_DATE,
) -> Iterator[Resource]:
    """Stream the valid journal resources of a region (or of every region), person by person.

    Exactly the resources ``generate`` writes to the regions' NDJSON files before defects
    are injected, in the same order per type. Holds one person's resources at a time (plus the
    population's ground truth), so it can produce millions of resources for benchmarks: about
    74 resources per person over all regions (``persons=13_600`` gives a little over 1,000,000;
    cut the stream with ``itertools.islice``). Persons beyond the Skatteverket test list get
    generated numbers (see ``GenerationSummary.note``).
    """
    population = build_population(seed=seed, persons=persons, extract_date=extract_date)
    regions = geo.REGIONS if region is None else (region,)
    for r in regions:
        if r not in population.by_region:
            raise ValueError(f"unknown region {r!r}; known: {', '.join(geo.REGIONS)}")
        new_id = IdFactory(seed, r)
        for index in population.by_region[r]:
            yield from person_resources(population.persons[index], r, seed=seed, new_id=new_id)
