"""Small, hand-written FHIR R4 resources of every ingested type (valid R4B)."""

from __future__ import annotations

import copy
from typing import Any

PNR = "http://electronichealth.se/identifier/personnummer"
EQ5D = "http://euroqol.org/fhir/Questionnaire/eq-5d-5l-sv"


def patient(pid: str = "p1", **extra: Any) -> dict[str, Any]:
    r = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": PNR, "value": "191212121212"}],
        "name": [{"use": "official", "family": "Testsson", "given": ["Tolvan", "Test"]}],
        "gender": "male",
        "birthDate": "1912-12-12",
        "address": [{"use": "home", "line": ["Storgatan 1"], "postalCode": "75237", "city": "Uppsala"}],
    }
    r.update(extra)
    return r


def encounter(eid: str = "e1", pid: str = "p1") -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": "2024-03-01T09:00:00+01:00", "end": "2024-03-01T09:30:00+01:00"},
    }


def condition(
    cid: str = "c1", pid: str = "p1", code: str = "E11.9", eid: str | None = "e1"
) -> dict[str, Any]:
    r = {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
            ]
        },
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-se", "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "recordedDate": "2024-03-01",
    }
    if eid:
        r["encounter"] = {"reference": f"Encounter/{eid}"}
    return r


def observation(oid: str = "o1", pid: str = "p1", eid: str = "e1", value: float = 52.0) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://www.npu-terminology.org", "code": "NPU27300"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "encounter": {"reference": f"Encounter/{eid}"},
        "effectiveDateTime": "2024-03-01T09:00:00+01:00",
        "valueQuantity": {
            "value": value,
            "unit": "mmol/mol",
            "system": "http://unitsofmeasure.org",
            "code": "mmol/mol",
        },
    }


def medication_request(
    mid: str = "m1", pid: str = "p1", eid: str = "e1", atc: str = "A10BA02"
) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc", "code": atc}]},
        "subject": {"reference": f"Patient/{pid}"},
        "encounter": {"reference": f"Encounter/{eid}"},
        "authoredOn": "2024-03-01T09:10:00+01:00",
    }


def procedure(prid: str = "pr1", pid: str = "p1", eid: str = "e1") -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": prid,
        "status": "completed",
        "code": {"coding": [{"system": "urn:oid:1.2.752.116.1.3.2.1.4", "code": "AF037"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "encounter": {"reference": f"Encounter/{eid}"},
        "performedDateTime": "2024-03-01T09:15:00+01:00",
    }


def eq5d(
    qid: str = "q1", pid: str = "p1", eid: str = "e1", levels=(1, 2, 3, 4, 5), vas: int = 70
) -> dict[str, Any]:
    links = ("mobility", "self-care", "usual-activities", "pain-discomfort", "anxiety-depression")
    items: list[dict[str, Any]] = [
        {
            "linkId": link,
            "answer": [
                {
                    "valueCoding": {
                        "system": "http://euroqol.org/fhir/CodeSystem/eq-5d-5l-level",
                        "code": str(level),
                    }
                }
            ],
        }
        for link, level in zip(links, levels, strict=True)
    ]
    items.append({"linkId": "eq-vas", "answer": [{"valueInteger": vas}]})
    return {
        "resourceType": "QuestionnaireResponse",
        "id": qid,
        "questionnaire": EQ5D,
        "status": "completed",
        "subject": {"reference": f"Patient/{pid}"},
        "encounter": {"reference": f"Encounter/{eid}"},
        "authored": "2024-03-01T09:20:00+01:00",
        "item": items,
    }


def one_of_each() -> list[dict[str, Any]]:
    return [patient(), encounter(), condition(), observation(), medication_request(), procedure(), eq5d()]


def rich_samples() -> list[dict[str, Any]]:
    """Valid resources using more of the model (extensions, periods, components, notes)."""
    out = one_of_each()
    p = patient(
        "p2",
        deceasedDateTime="2020-05-01T10:00:00+02:00",
        active=True,
        telecom=[{"system": "phone", "value": "070-1234567", "use": "mobile"}],
        extension=[{"url": "http://example.org/ext", "valueString": "x"}],
    )
    out.append(p)
    o = observation("o2")
    del o["valueQuantity"]
    o["component"] = [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "valueQuantity": {"value": 120, "unit": "mm[Hg]"},
        },
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
            "valueQuantity": {"value": 80, "unit": "mm[Hg]"},
        },
    ]
    o["note"] = [{"text": "fasting"}]
    out.append(o)
    pr = procedure("pr2")
    del pr["performedDateTime"]
    pr["performedPeriod"] = {"start": "2024-01-01", "end": "2024-01-02"}
    out.append(pr)
    c = condition("c2", eid=None)
    c["onsetDateTime"] = "2010"
    c["category"] = [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                    "code": "problem-list-item",
                }
            ]
        }
    ]
    out.append(c)
    e = encounter("e2")
    e["type"] = [{"coding": [{"system": "http://snomed.info/sct", "code": "185349003"}], "text": "check up"}]
    e["serviceProvider"] = {"display": "Region Uppsala"}
    out.append(e)
    return [copy.deepcopy(r) for r in out]
