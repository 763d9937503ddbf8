"""FHIR R4 resources shaped like a real US bulk export (Synthea-style), streamed.

:mod:`synthetic_data.fhir` writes the resources this platform's Swedish journals deliver, in the
shapes the platform chose. Real exports look different, and the fast validator must keep up with
them (issue 15): this generator writes those shapes, for the benchmark ``fhir_real`` and the tests.
The shapes follow the public Synthea samples (smart-on-fhir/sample-bulk-fhir-datasets, read from
beside the repository when present, never committed: README, "Developing"); the code and every
value here are the project's own.

What a real export has that the platform's own generator does not:

* US Core ``meta.profile`` on every resource (sometimes the same profile twice);
* Patient narratives (``text.div`` XHTML) and extensions of many value types: nested extensions
  whose ``url`` is a bare name (race, ethnicity), ``valueAddress``, ``valueDecimal``, ``valueCode``,
  ``valueString``, ``valueBoolean``, ``valueInteger``; a geolocation extension on an address;
* conditional references (``Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|…``), logical
  references (an identifier only), ``urn:uuid:`` identifiers, references with a display;
* base64 attachments (clinical notes in DocumentReference.content and DiagnosticReport.presentedForm);
* 20 resource types, among them Device, Location, Organization, Practitioner, PractitionerRole,
  EpisodeOfCare, ServiceRequest, Specimen, Medication, MedicationDispense and Provenance, and a
  MedicationRequest with a contained Medication;
* no Swedish identifier: US-style identifiers only (SSN-like numbers all start with 999, which
  is never issued).

Every resource validates with ``fhir.resources.R4B`` (``tests/fhir/test_fastvalid_real.py``).
Everything is drawn from one seeded ``random.Random``: the same arguments give the same resources.
"""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

Resource = dict[str, Any]

US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
US_CORE_CODES = "http://hl7.org/fhir/us/core/CodeSystem/"
SYNTHEA = "https://github.com/synthetichealth/synthea"
NPI = "http://hl7.org/fhir/sid/us-npi"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"

#: Resource types written, in the order of a patient's record.
RESOURCE_TYPES: tuple[str, ...] = (
    "Organization",
    "Location",
    "Practitioner",
    "PractitionerRole",
    "Medication",
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "DiagnosticReport",
    "DocumentReference",
    "Procedure",
    "MedicationRequest",
    "MedicationDispense",
    "Immunization",
    "AllergyIntolerance",
    "Device",
    "EpisodeOfCare",
    "ServiceRequest",
    "Specimen",
    "Provenance",
)

_GIVEN = ("Brandon214", "Evie333", "Devin82", "Anibal473", "Jacquline932", "Irvin970", "Leana211", "Trey250")
_FAMILY = ("Hyatt152", "Cole117", "Emard19", "Wehner319", "Tromp100", "Hand679", "Wuckert783", "Kuhn96")
_CITIES = (("EMPORIA", "KS", "66801"), ("BURLINGTON", "KS", "66839"), ("OLATHE", "KS", "66061"))
_ENCOUNTER_TYPES = (
    ("410620009", "Well child visit (procedure)", "AMB"),
    ("185349003", "Encounter for check up (procedure)", "AMB"),
    ("50849002", "Emergency room admission (procedure)", "EMER"),
    ("162673000", "General examination of patient (procedure)", "AMB"),
)
_CONDITIONS = (
    ("423315002", "Limited social contact (finding)"),
    ("444814009", "Viral sinusitis (disorder)"),
    ("73595000", "Stress (finding)"),
    ("44054006", "Diabetes mellitus type 2 (disorder)"),
)
_PROCEDURES = (
    ("430193006", "Medication Reconciliation (procedure)"),
    ("710824005", "Assessment of health and social care needs (procedure)"),
    ("171207006", "Depression screening (procedure)"),
)
_MEDICATIONS = (
    ("243670", "Aspirin 81 MG Oral Tablet"),
    ("308136", "amLODIPine 2.5 MG Oral Tablet"),
    ("860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet"),
)
_VACCINES = (
    ("140", "Influenza, seasonal, injectable, preservative free"),
    ("208", "SARS-COV-2 (COVID-19) vaccine"),
)
_LABS = (
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.0, 9.0),
    ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 150.0, 260.0),
    ("38483-4", "Creatinine [Mass/volume] in Blood", "mg/dL", 0.6, 1.4),
)
_NOTE = (
    "\n{day}\n\n# Chief Complaint\nNo complaints.\n\n# History of Present Illness\n{name} is a {age} year-old "
    "patient. Patient has a history of {condition}.\n\n# Social History\nPatient has never smoked.\n\n"
    "# Allergies\nNo Known Allergies.\n\n# Medications\n{medication}\n\n# Assessment and Plan\n"
    "Patient is presenting with {condition}.\n\n## Plan\nThe following procedures were conducted:\n- {procedure}\n"
)


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    c = {"system": system, "code": code}
    if display is not None:
        c["display"] = display
    return c


def _concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)], "text": display}


def _profile(name: str) -> dict[str, Any]:
    return {"profile": [US_CORE + name]}


def _conditional(rtype: str, system: str, value: str, display: str) -> dict[str, str]:
    """A conditional reference, as bulk exports write references to directory resources."""
    return {"reference": f"{rtype}?identifier={system}|{value}", "display": display}


class _Generator:
    """One generated export: a directory of providers, then patients one by one."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.orgs: list[tuple[str, str]] = []  # (id, name)
        self.locations: list[tuple[str, str]] = []
        self.practitioners: list[tuple[str, str]] = []  # (npi, display name)
        self.medications: list[str] = []

    # -- small helpers ------------------------------------------------------------------------
    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128)))

    def when(self, day: date, minute: int) -> str:
        h, m = divmod(minute % 1440, 60)
        return f"{day.isoformat()}T{h:02d}:{m:02d}:{self.rng.randrange(60):02d}-05:00"

    def name(self) -> tuple[str, str]:
        return self.rng.choice(_GIVEN), self.rng.choice(_FAMILY)

    def address(self, geolocated: bool) -> dict[str, Any]:
        city, state, postal = self.rng.choice(_CITIES)
        a: dict[str, Any] = {
            "line": [f"{self.rng.randrange(1, 999)} {self.rng.choice(_FAMILY)} Street"],
            "city": city,
            "state": state,
            "postalCode": postal,
            "country": "US",
        }
        if geolocated:
            a["extension"] = [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/geolocation",
                    "extension": [
                        {"url": "latitude", "valueDecimal": round(self.rng.uniform(37.0, 40.0), 6)},
                        {"url": "longitude", "valueDecimal": round(self.rng.uniform(-98.0, -94.6), 6)},
                    ],
                }
            ]
        return a

    def b64_note(self, **fields: Any) -> str:
        return base64.b64encode(_NOTE.format(**fields).encode()).decode()

    # -- the provider directory ---------------------------------------------------------------
    def directory(self, size: int) -> Iterator[Resource]:
        for _ in range(size):
            oid = self.uid()
            name = f"{self.rng.choice(_FAMILY).rstrip('0123456789').upper()} MEDICAL CENTER"
            self.orgs.append((oid, name))
            yield {
                "resourceType": "Organization",
                "id": oid,
                "meta": _profile("us-core-organization"),
                "extension": [
                    {
                        "url": "http://synthetichealth.github.io/synthea/utilization-encounters-extension",
                        "valueInteger": self.rng.randrange(500),
                    }
                ],
                "identifier": [{"system": SYNTHEA, "value": oid}],
                "active": True,
                "type": [_concept(TERMINOLOGY + "organization-type", "prov", "Healthcare Provider")],
                "name": name,
                "telecom": [{"system": "phone", "value": f"620{self.rng.randrange(10**7):07d}"}],
                "address": [self.address(False)],
            }
        for oid, name in self.orgs:
            lid = self.uid()
            self.locations.append((lid, name))
            yield {
                "resourceType": "Location",
                "id": lid,
                "meta": _profile("us-core-location"),
                "identifier": [{"system": SYNTHEA, "value": lid}],
                "status": "active",
                "name": name,
                "address": self.address(False),
                "position": {
                    "longitude": round(self.rng.uniform(-98.0, -94.6), 6),
                    "latitude": round(self.rng.uniform(37.0, 40.0), 6),
                },
                "managingOrganization": {"identifier": {"system": SYNTHEA, "value": oid}, "display": name},
            }
        for i in range(2 * size):
            given, family = self.name()
            npi = f"99999{self.rng.randrange(10**5):05d}"
            display = f"Dr. {given} {family}"
            self.practitioners.append((npi, display))
            oid, org = self.orgs[i % len(self.orgs)]
            yield {
                "resourceType": "Practitioner",
                "id": self.uid(),
                "meta": _profile("us-core-practitioner"),
                "identifier": [{"system": NPI, "value": npi}],
                "active": True,
                "name": [{"family": family, "given": [given], "prefix": ["Dr."]}],
                "telecom": [
                    {
                        "extension": [{"url": US_CORE + "us-core-direct", "valueBoolean": True}],
                        "system": "email",
                        "value": f"{given}.{family}@example.com",
                        "use": "work",
                    }
                ],
                "address": [self.address(False)],
                "gender": self.rng.choice(("male", "female")),
            }
            yield {
                "resourceType": "PractitionerRole",
                "id": self.uid(),
                "meta": _profile("us-core-practitionerrole"),
                "practitioner": {"identifier": {"system": NPI, "value": npi}, "display": display},
                "organization": {"identifier": {"system": SYNTHEA, "value": oid}, "display": org},
                "code": [
                    _concept("http://nucc.org/provider-taxonomy", "208D00000X", "General Practice Physician")
                ],
                "specialty": [
                    _concept("http://nucc.org/provider-taxonomy", "208D00000X", "General Practice Physician")
                ],
                "location": [{"identifier": {"system": SYNTHEA, "value": self.locations[i % size][0]}}],
            }
        for code, display in _MEDICATIONS:
            mid = self.uid()
            self.medications.append(mid)
            yield {
                "resourceType": "Medication",
                "id": mid,
                "meta": _profile("us-core-medication"),
                "code": _concept(RXNORM, code, display),
                "status": "active",
            }

    # -- one patient's record -----------------------------------------------------------------
    def patient(self, encounters: int) -> Iterator[Resource]:
        rng = self.rng
        pid = self.uid()
        given, family = self.name()
        birth = date(1940, 1, 1) + timedelta(days=rng.randrange(28000))
        full = f"{given} {family}"
        patient_ref = {"reference": f"Patient/{pid}", "display": full}
        yield self.patient_resource(pid, given, family, birth)
        day = max(birth, date(1995, 1, 1))
        for _ in range(encounters):
            day += timedelta(days=rng.randrange(20, 200))
            yield from self.encounter(pid, patient_ref, full, birth, min(day, date(2024, 12, 31)))
        yield {
            "resourceType": "Provenance",
            "id": self.uid(),
            "meta": _profile("us-core-provenance"),
            "target": [{"reference": f"Patient/{pid}"}],
            "recorded": f"{day.isoformat()}T10:00:00.{rng.randrange(1000):03d}-05:00",
            "agent": [
                {
                    "type": _concept(TERMINOLOGY + "provenance-participant-type", "author", "Author"),
                    "who": _conditional("Practitioner", NPI, *rng.choice(self.practitioners)),
                    "onBehalfOf": _conditional("Organization", SYNTHEA, *rng.choice(self.orgs)),
                }
            ],
        }

    def patient_resource(self, pid: str, given: str, family: str, birth: date) -> Resource:
        rng = self.rng
        gender = rng.choice(("male", "female"))
        return {
            "resourceType": "Patient",
            "id": pid,
            "meta": _profile("us-core-patient"),
            "text": {
                "status": "generated",
                "div": '<div xmlns="http://www.w3.org/1999/xhtml">Generated by <a href="https://github.com/'
                f'synthetichealth/synthea">Synthea</a>. Person seed: {rng.getrandbits(62)}</div>',
            },
            "extension": [
                {
                    "url": US_CORE + "us-core-race",
                    "extension": [
                        {
                            "url": "ombCategory",
                            "valueCoding": _coding("urn:oid:2.16.840.1.113883.6.238", "2106-3", "White"),
                        },
                        {"url": "text", "valueString": "White"},
                    ],
                },
                {
                    "url": US_CORE + "us-core-ethnicity",
                    "extension": [
                        {
                            "url": "ombCategory",
                            "valueCoding": _coding(
                                "urn:oid:2.16.840.1.113883.6.238", "2186-5", "Not Hispanic or Latino"
                            ),
                        },
                        {"url": "text", "valueString": "Not Hispanic or Latino"},
                    ],
                },
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
                    "valueString": f"{rng.choice(_GIVEN)} {rng.choice(_FAMILY)}",
                },
                {"url": US_CORE + "us-core-birthsex", "valueCode": "M" if gender == "male" else "F"},
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
                    "valueAddress": {"city": "EMPORIA", "state": "Kansas", "country": "US"},
                },
                {
                    "url": "http://synthetichealth.github.io/synthea/disability-adjusted-life-years",
                    "valueDecimal": round(rng.uniform(0, 3), 13),
                },
                {
                    "url": "http://synthetichealth.github.io/synthea/quality-adjusted-life-years",
                    "valueDecimal": round(rng.uniform(20, 80), 13),
                },
            ],
            "identifier": [
                {"system": SYNTHEA, "value": pid},
                {
                    "type": _concept(TERMINOLOGY + "v2-0203", "MR", "Medical Record Number"),
                    "system": "http://hospital.smarthealthit.org",
                    "value": pid,
                },
                {
                    "type": _concept(TERMINOLOGY + "v2-0203", "SS", "Social Security Number"),
                    "system": "http://hl7.org/fhir/sid/us-ssn",
                    "value": f"999-{rng.randrange(100):02d}-{rng.randrange(10000):04d}",
                },
                {
                    "type": _concept(TERMINOLOGY + "v2-0203", "DL", "Driver's license number"),
                    "system": "urn:oid:2.16.840.1.113883.4.3.25",
                    "value": f"S999{rng.randrange(10**5):05d}",
                },
            ],
            "name": [
                {
                    "use": "official",
                    "family": family,
                    "given": [given],
                    "prefix": ["Mr." if gender == "male" else "Ms."],
                }
            ],
            "telecom": [
                {
                    "system": "phone",
                    "value": f"555-{rng.randrange(1000):03d}-{rng.randrange(10000):04d}",
                    "use": "home",
                }
            ],
            "gender": gender,
            "birthDate": birth.isoformat(),
            "address": [self.address(True)],
            "maritalStatus": _concept(
                "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "M", "Married"
            ),
            "multipleBirthBoolean": False,
            "communication": [{"language": _concept("urn:ietf:bcp:47", "en-US", "English (United States)")}],
        }

    def encounter(
        self, pid: str, patient_ref: dict[str, str], full: str, birth: date, day: date
    ) -> Iterator[Resource]:
        rng = self.rng
        eid = self.uid()
        start = rng.randrange(7 * 60, 17 * 60)
        begin, end = self.when(day, start), self.when(day, start + 15 + rng.randrange(60))
        period = {"start": begin, "end": end}
        npi, doctor = rng.choice(self.practitioners)
        oid, org = rng.choice(self.orgs)
        lid, loc = rng.choice(self.locations)
        performer = _conditional("Practitioner", NPI, npi, doctor)
        location = _conditional("Location", SYNTHEA, lid, loc)
        subject = {"reference": f"Patient/{pid}"}
        encounter = {"reference": f"Encounter/{eid}"}
        code, display, klass = rng.choice(_ENCOUNTER_TYPES)
        yield {
            "resourceType": "Encounter",
            "id": eid,
            "meta": _profile("us-core-encounter"),
            "identifier": [{"use": "official", "system": SYNTHEA, "value": eid}],
            "status": "finished",
            "class": _coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", klass),
            "type": [_concept(SNOMED, code, display)],
            "subject": patient_ref,
            "participant": [
                {
                    "type": [_concept(TERMINOLOGY + "v3-ParticipationType", "PPRF", "primary performer")],
                    "period": period,
                    "individual": performer,
                }
            ],
            "period": period,
            "location": [{"location": location}],
            "serviceProvider": _conditional("Organization", SYNTHEA, oid, org),
        }
        condition = rng.choice(_CONDITIONS)
        if rng.random() < 0.35:
            c: Resource = {
                "resourceType": "Condition",
                "id": self.uid(),
                "meta": _profile("us-core-condition-encounter-diagnosis"),
                "clinicalStatus": {"coding": [_coding(TERMINOLOGY + "condition-clinical", "active")]},
                "verificationStatus": {
                    "coding": [_coding(TERMINOLOGY + "condition-ver-status", "confirmed")]
                },
                "category": [
                    {
                        "coding": [
                            _coding(
                                TERMINOLOGY + "condition-category",
                                "encounter-diagnosis",
                                "Encounter Diagnosis",
                            )
                        ]
                    }
                ],
                "code": _concept(SNOMED, *condition),
                "subject": subject,
                "encounter": encounter,
                "onsetDateTime": begin,
                "recordedDate": begin,
            }
            if rng.random() < 0.5:
                c["clinicalStatus"] = {"coding": [_coding(TERMINOLOGY + "condition-clinical", "resolved")]}
                c["abatementDateTime"] = self.when(day + timedelta(days=rng.randrange(5, 60)), start)
            yield c
        results = []
        for _ in range(rng.randrange(2, 6)):
            obs = self.observation(subject, encounter, begin)
            results.append({"reference": f"Observation/{obs['id']}"})
            yield obs
        yield {
            "resourceType": "DiagnosticReport",
            "id": self.uid(),
            "meta": _profile("us-core-diagnosticreport-lab"),
            "status": "final",
            "category": [{"coding": [_coding(TERMINOLOGY + "v2-0074", "LAB", "Laboratory")]}],
            "code": _concept(LOINC, "51990-0", "Basic metabolic panel - Blood"),
            "subject": subject,
            "encounter": encounter,
            "effectiveDateTime": begin,
            "issued": begin[:19] + ".829-05:00",
            "performer": [performer],
            "result": results,
        }
        procedure = rng.choice(_PROCEDURES)
        medication = rng.choice(_MEDICATIONS)
        note = self.b64_note(
            day=day.isoformat(),
            name=full,
            age=day.year - birth.year,
            condition=condition[1],
            medication=medication[1],
            procedure=procedure[1],
        )
        note_type = _concept(LOINC, "34117-2", "History and physical note")
        yield {
            "resourceType": "DiagnosticReport",
            "id": self.uid(),
            "meta": _profile("us-core-diagnosticreport-note"),
            "status": "final",
            "category": [note_type],
            "code": note_type,
            "subject": subject,
            "encounter": encounter,
            "effectiveDateTime": begin,
            "issued": begin[:19] + ".829-05:00",
            "performer": [performer],
            "presentedForm": [{"contentType": "text/plain; charset=utf-8", "data": note}],
        }
        yield {
            "resourceType": "DocumentReference",
            "id": self.uid(),
            "meta": _profile("us-core-documentreference"),
            "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{self.uid()}"}],
            "status": "superseded",
            "type": {"coding": [_coding(LOINC, "34117-2", "History and physical note")]},
            "category": [
                {
                    "coding": [
                        _coding(
                            US_CORE_CODES + "us-core-documentreference-category",
                            "clinical-note",
                            "Clinical Note",
                        )
                    ]
                }
            ],
            "subject": subject,
            "date": begin[:19] + ".829-05:00",
            "author": [performer, _conditional("Organization", SYNTHEA, oid, org)],
            "custodian": _conditional("Organization", SYNTHEA, oid, org),
            "content": [
                {
                    "attachment": {"contentType": "text/plain; charset=utf-8", "data": note},
                    "format": _coding(
                        "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode",
                        "urn:ihe:iti:xds:2017:mimeTypeSufficient",
                        "mimeType Sufficient",
                    ),
                }
            ],
            "context": {"encounter": [encounter], "period": period},
        }
        for _ in range(rng.choice((1, 1, 2))):
            yield {
                "resourceType": "Procedure",
                "id": self.uid(),
                "meta": _profile("us-core-procedure"),
                "status": "completed",
                "code": _concept(SNOMED, *procedure),
                "subject": subject,
                "encounter": encounter,
                "performedPeriod": period,
                "location": location,
            }
        if rng.random() < 0.8:
            yield from self.medication_request(subject, encounter, begin, performer, medication)
        if rng.random() < 0.15:
            yield {
                "resourceType": "Immunization",
                "id": self.uid(),
                "meta": _profile("us-core-immunization"),
                "status": "completed",
                "vaccineCode": _concept("http://hl7.org/fhir/sid/cvx", *rng.choice(_VACCINES)),
                "patient": subject,
                "encounter": encounter,
                "occurrenceDateTime": begin,
                "primarySource": True,
                "location": location,
            }
        if rng.random() < 0.1:
            yield from self.lab_order(pid, patient_ref, encounter, period)
        if rng.random() < 0.02:
            yield {
                "resourceType": "AllergyIntolerance",
                "id": self.uid(),
                "meta": _profile("us-core-allergyintolerance"),
                "clinicalStatus": {
                    "coding": [_coding(TERMINOLOGY + "allergyintolerance-clinical", "active")]
                },
                "verificationStatus": {
                    "coding": [_coding(TERMINOLOGY + "allergyintolerance-verification", "confirmed")]
                },
                "type": "allergy",
                "category": ["medication"],
                "criticality": "low",
                "code": _concept(RXNORM, "1191", "Aspirin"),
                "patient": subject,
                "recordedDate": begin,
                "reaction": [
                    {"manifestation": [_concept(SNOMED, "247472004", "Wheal (finding)")], "severity": "mild"}
                ],
            }
        if rng.random() < 0.01:
            di = f"{rng.randrange(10**14):014d}"
            yield {
                "resourceType": "Device",
                "id": self.uid(),
                "meta": _profile("us-core-implantable-device"),
                "udiCarrier": [
                    {
                        "deviceIdentifier": di,
                        "carrierHRF": f"(01){di}(11){day:%y%m%d}(10){rng.randrange(10**9)}",
                    }
                ],
                "status": "active",
                "distinctIdentifier": di,
                "manufactureDate": begin,
                "lotNumber": str(rng.randrange(10**9)),
                "deviceName": [{"name": "Crutches (physical object)", "type": "user-friendly-name"}],
                "type": _concept(SNOMED, "363753007", "Crutches (physical object)"),
                "patient": subject,
            }

    def observation(self, subject: dict[str, str], encounter: dict[str, str], when: str) -> Resource:
        rng = self.rng
        base: Resource = {
            "resourceType": "Observation",
            "id": self.uid(),
            "status": "final",
            "subject": subject,
            "encounter": encounter,
            "effectiveDateTime": when,
            "issued": when[:19] + ".829-05:00",
        }
        kind = rng.randrange(4)
        vital = [{"coding": [_coding(TERMINOLOGY + "observation-category", "vital-signs", "Vital signs")]}]
        if kind == 0:  # blood pressure: components
            base["meta"] = _profile("us-core-blood-pressure")
            base["category"] = vital
            base["code"] = _concept(LOINC, "85354-9", "Blood pressure panel with all children optional")
            base["component"] = [
                {
                    "code": _concept(LOINC, code, label),
                    "valueQuantity": {
                        "value": rng.randrange(lo, hi),
                        "unit": "mm[Hg]",
                        "system": UCUM,
                        "code": "mm[Hg]",
                    },
                }
                for code, label, lo, hi in (
                    ("8462-4", "Diastolic Blood Pressure", 60, 95),
                    ("8480-6", "Systolic Blood Pressure", 100, 150),
                )
            ]
        elif kind == 1:  # survey answer: CodeableConcept
            base["category"] = [
                {"coding": [_coding(TERMINOLOGY + "observation-category", "survey", "Survey")]}
            ]
            base["code"] = _concept(LOINC, "72166-2", "Tobacco smoking status")
            base["valueCodeableConcept"] = _concept(SNOMED, "266919005", "Never smoked tobacco (finding)")
        else:  # laboratory: a decimal quantity (twice the same profile, as real exports do)
            code, label, unit, lo, hi = rng.choice(_LABS)
            base["meta"] = {"profile": [US_CORE + "us-core-observation-lab"] * (1 + kind % 2)}
            base["category"] = [
                {"coding": [_coding(TERMINOLOGY + "observation-category", "laboratory", "Laboratory")]}
            ]
            base["code"] = _concept(LOINC, code, label)
            base["valueQuantity"] = {
                "value": round(rng.uniform(lo, hi), 2),
                "unit": unit,
                "system": UCUM,
                "code": unit,
            }
        return base

    def medication_request(
        self,
        subject: dict[str, str],
        encounter: dict[str, str],
        when: str,
        requester: dict[str, str],
        med: tuple[str, str],
    ) -> Iterator[Resource]:
        rng = self.rng
        mrid = self.uid()
        mr: Resource = {
            "resourceType": "MedicationRequest",
            "id": mrid,
            "meta": _profile("us-core-medicationrequest"),
            "status": rng.choice(("active", "stopped", "completed")),
            "intent": "order",
            "category": [_concept(TERMINOLOGY + "medicationrequest-category", "community", "Community")],
            "medicationCodeableConcept": _concept(RXNORM, *med),
            "subject": subject,
            "encounter": encounter,
            "authoredOn": when,
            "requester": requester,
            "dosageInstruction": [
                {
                    "sequence": 1,
                    "timing": {"repeat": {"frequency": 1, "period": 1.0, "periodUnit": "d"}},
                    "asNeededBoolean": False,
                    "doseAndRate": [
                        {
                            "type": _concept(TERMINOLOGY + "dose-rate-type", "ordered", "Ordered"),
                            "doseQuantity": {"value": 1.0},
                        }
                    ],
                }
            ],
        }
        r = rng.random()
        if r < 0.1:  # the medication contained in the request
            del mr["medicationCodeableConcept"]
            mr["contained"] = [
                {
                    "resourceType": "Medication",
                    "id": "med1",
                    "code": _concept(RXNORM, *med),
                    "status": "active",
                }
            ]
            mr["medicationReference"] = {"reference": "#med1"}
        elif r < 0.2:
            del mr["medicationCodeableConcept"]
            mr["medicationReference"] = {"reference": f"Medication/{rng.choice(self.medications)}"}
        yield mr
        if rng.random() < 0.4:
            yield {
                "resourceType": "MedicationDispense",
                "id": self.uid(),
                "status": "completed",
                "category": _concept(TERMINOLOGY + "medicationdispense-category", "community", "Community"),
                "medicationCodeableConcept": _concept(RXNORM, *med),
                "subject": subject,
                "context": encounter,
                "authorizingPrescription": [{"reference": f"MedicationRequest/{mrid}"}],
                "type": _concept("http://terminology.hl7.org/CodeSystem/v3-ActCode", "FF", "First Fill"),
                "quantity": {"value": 30, "unit": "doses", "system": UCUM, "code": "{dose}"},
                "daysSupply": {"value": 30, "unit": "days", "system": UCUM, "code": "d"},
                "whenHandedOver": when,
                "dosageInstruction": [{"sequence": 1, "text": "Take as directed."}],
            }

    def lab_order(
        self, pid: str, patient_ref: dict[str, str], encounter: dict[str, str], period: dict[str, str]
    ) -> Iterator[Resource]:
        oid = self.uid()
        yield {
            "resourceType": "EpisodeOfCare",
            "id": oid,
            "status": "finished",
            "type": [_concept(TERMINOLOGY + "episodeofcare-type", "hacc", "Home and Community Care")],
            "period": period,
            "patient": patient_ref,
        }
        yield {
            "resourceType": "ServiceRequest",
            "id": oid,
            "status": "completed",
            "intent": "order",
            "category": [{"coding": [_coding(SNOMED, "108252007", "Laboratory procedure")]}],
            "code": {"coding": [_coding(LOINC, "94500-6", "SARS-CoV-2 (COVID-19) RNA")]},
            "subject": patient_ref,
            "encounter": encounter,
            "occurrencePeriod": period,
            "specimen": [{"reference": f"Specimen/{oid}"}],
        }
        yield {
            "resourceType": "Specimen",
            "id": oid,
            "status": "available",
            "type": {"coding": [_coding(SNOMED, "119297000", "Blood specimen (specimen)")]},
            "subject": patient_ref,
        }


def iter_real_resources(
    seed: int, patients: int, *, encounters: int = 20, providers: int = 20
) -> Iterator[Resource]:
    """A real-shaped export: ``providers`` organisations (with their locations, two practitioners
    each and their roles), three medications, then ``patients`` patients with about ``encounters``
    encounters each (about 9 resources an encounter: observations, reports, notes, procedures,
    prescriptions ...), streamed one resource at a time."""
    gen = _Generator(seed)
    yield from gen.directory(providers)
    for _ in range(patients):
        yield from gen.patient(encounters)
