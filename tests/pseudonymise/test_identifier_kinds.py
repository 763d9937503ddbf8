"""Patients without a personnummer are linked within their holder (issue 15): every identifier kind
through the real stage, no research row without a person, namespaces kept apart in releases."""

from __future__ import annotations

import hashlib
import hmac
import json

import duckdb
import pytest

from pipelines.pseudonymise import pseudonymise_holder
from pipelines.release_identity import release_person_map
from privacy.domains import holder_domain
from privacy.identifiers import PATIENT_ID_SYSTEM, namespaced, scheme_from_config
from privacy.keys import KeyStore
from pseudonymise.raw_fixtures import ANNA, BERTIL, build_ndr, pnr, write_delivery
from tests.zone_files import read_rows

SSN = "http://hl7.org/fhir/sid/us-ssn"
MR_SYSTEM = "http://hospital.smarthealthit.org"
VGR_SYSTEM = "urn:oid:1.2.752.113.11.0.2.1.1.1"
PNR_SYSTEM = "http://electronichealth.se/identifier/personnummer"
VGR = {
    "name": "vgr",
    "system": VGR_SYSTEM,
    "pattern": "[0-9]{8}[KMX][0-9]{3}",
    "birth_date_prefix": True,
    "luhn": {"start": 2, "end": 12, "letters": {"K": 5, "M": 7, "X": 8}},
}
REGION_CONFIG = {
    "reservnummer": [VGR],
    "foreign": {"type_codes": ["NI", "SS", "PPN"]},
    "local": {"systems": [MR_SYSTEM], "patient_id": True},
}
RESERVE = "19450829K088"  # Inera's VGR example
INTERIM = "19900402T458"  # Luhn-valid with the letter as 1


def _hmac(settings, holder: str, message: str) -> str:
    secret = KeyStore(settings).active_key(holder_domain(holder)).secret
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def _no_null_person(path) -> dict[str, int]:
    """Rows per research table with a person_id column; asserts none is NULL."""
    out = {}
    con = duckdb.connect(str(path), read_only=True)
    try:
        for (table,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall():
            cols = {r[0] for r in con.execute(f'DESCRIBE "{table}"').fetchall()}
            if "person_id" in cols:
                nulls, rows = con.execute(
                    f'SELECT count(*) FILTER (person_id IS NULL), count(*) FROM "{table}"'
                ).fetchone()
                assert nulls == 0, table
                out[table] = rows
    finally:
        con.close()
    return out


def _identifier(system, value, *, code=None, use=None):
    out = {"system": system, "value": value}
    if code:
        out["type"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": code}]}
    if use:
        out["use"] = use
    return out


#: patient id -> (national in the view's column, identifiers of the resource, gender, birthDate)
PATIENTS = {
    "p-nat": (
        ANNA,
        [_identifier(PNR_SYSTEM, ANNA), _identifier("urn:pp", "X1", code="PPN")],
        "female",
        "1950-01-01",
    ),
    "p-res": (
        None,
        [_identifier(MR_SYSTEM, "mr-2", code="MR"), _identifier(VGR_SYSTEM, RESERVE)],
        "male",
        "1945-08-29",
    ),
    # a Synthea-like patient: no Swedish identifier at all (see /tmp/synthea10/Patient.000.ndjson)
    "p-syn": (
        None,
        [
            _identifier("https://github.com/synthetichealth/synthea", "129c6ac7"),
            _identifier(MR_SYSTEM, "129c6ac7", code="MR"),
            _identifier(SSN, "999-94-5397", code="SS"),
            _identifier("urn:oid:2.16.840.1.113883.4.3.25", "S99940903", code="DL"),
            _identifier(
                "http://standardhealthrecord.org/fhir/StructureDefinition/passportNumber", "X5363", code="PPN"
            ),
        ],
        "female",
        "1927-05-21",
    ),
    "p-mr": (None, [_identifier(MR_SYSTEM, "mr-4")], "other", "1990"),
    "p-bare": (None, [], "unknown", None),
    "p-old": (None, [_identifier("urn:pp", "OLD1", code="PPN", use="old")], None, "2001-02-03"),
    "p-badres": (None, [_identifier(VGR_SYSTEM, RESERVE[:-1] + "9")], "male", "1945-08-29"),
}


def build_region(settings, holder="region_uppsala", patients=None, encounters=None):
    """A region's raw zone with Patients carrying identifiers of every kind (fhir_resource holds
    the resources, fhir_patient the view's columns) and one encounter per Patient plus a dangling one."""
    patients = PATIENTS if patients is None else patients
    write_delivery(settings, holder)
    path = settings.raw_db(holder)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute("""CREATE TABLE fhir_resource (resource_type VARCHAR, id VARCHAR, resource JSON,
        _source_file VARCHAR, _line_no BIGINT)""")
    con.execute("""CREATE TABLE fhir_patient (patient_id VARCHAR, identifier_system VARCHAR, personnummer VARCHAR,
        family_name VARCHAR, given_name VARCHAR, gender VARCHAR, birth_date VARCHAR, postal_code VARCHAR,
        deceased_date VARCHAR)""")
    for line, (pid, (national, identifiers, gender, birth)) in enumerate(patients.items(), start=1):
        resource = {"resourceType": "Patient", "id": pid, "identifier": identifiers}
        con.execute(
            "INSERT INTO fhir_resource VALUES ('Patient', ?, ?, 'fhir/Patient.ndjson', ?)",
            [pid, json.dumps(resource), line],
        )
        con.execute(
            "INSERT INTO fhir_patient VALUES (?, ?, ?, 'Namn', 'Förnamn', ?, ?, '75105', NULL)",
            [pid, PNR_SYSTEM if national else None, national, gender, birth],
        )
    con.execute("""CREATE TABLE fhir_encounter (encounter_id VARCHAR, patient_id VARCHAR, status VARCHAR,
        class_code VARCHAR, start_time VARCHAR, end_time VARCHAR)""")
    rows = encounters or [(f"e-{pid}", pid) for pid in patients] + [("e-dangling", "p-missing")]
    con.executemany(
        "INSERT INTO fhir_encounter VALUES (?, ?, 'finished', 'AMB', '2024-01-02T10:00:00+01:00', NULL)", rows
    )
    con.close()


def _scheme(holder="region_uppsala", **kw):
    return scheme_from_config(holder, REGION_CONFIG, **kw)


# ---------------------------------------------------------------- FHIR


def test_every_patient_is_linked_by_its_best_identifier_and_no_row_lacks_a_person(hdp_home, kek_env):
    build_region(hdp_home)
    result = pseudonymise_holder("region_uppsala", settings=hdp_home, identifiers=_scheme())
    db = hdp_home.research_db("region_uppsala")
    assert _no_null_person(db) == {"patient": 6, "encounter": 6}
    assert result.persons == 6 and result.unresolved_person_rows == 2
    assert result.quarantined_by_reason == {
        "identifier.reservnummer_invalid": 1,  # p-badres: a reserve number in no configured format
        "person.patient_quarantined": 1,  # its encounter
        "person.unresolved": 1,  # the dangling encounter
    }
    assert result.rows_in == result.rows_out + result.quarantined + sum(result.excluded_by_quality.values())

    kinds = sorted(read_rows(db, "SELECT id_type, birth_year, sex FROM patient"), key=str)
    assert kinds == sorted(
        [
            ("personnummer", 1950, "F"),  # from the number
            ("reservnummer", 1945, "M"),  # birthDate year and gender: the policy's fallback_from
            ("foreign", 1927, "F"),
            ("local", 1990, None),  # partial birthDate; gender 'other' is no sex code
            ("local", None, None),
            ("local", 2001, None),
        ],
        key=str,
    )
    link = dict(
        read_rows(hdp_home.raw_db("region_uppsala"), "SELECT personnummer, person_id FROM person_link")
    )
    h = "region_uppsala"
    expected = {
        ANNA: "p-nat",
        namespaced("reservnummer", RESERVE, holder=h): "p-res",
        namespaced("foreign", "999-94-5397", holder=h, system=SSN): "p-syn",  # SS is listed before PPN
        namespaced("local", "mr-4", holder=h, system=MR_SYSTEM): "p-mr",
        namespaced("local", "p-bare", holder=h, system=PATIENT_ID_SYSTEM): "p-bare",
        namespaced(
            "local", "p-old", holder=h, system=PATIENT_ID_SYSTEM
        ): "p-old",  # an old passport is ignored
    }
    assert set(link) == set(expected)
    for identifier, person in link.items():
        assert person == _hmac(hdp_home, h, identifier)  # the HMAC of the namespaced identifier
    # a national number keeps exactly the pseudonym it always had: HMAC of its 12 digits
    assert (
        link[ANNA]
        == hmac.new(
            KeyStore(hdp_home).active_key(holder_domain(h)).secret, ANNA.encode(), hashlib.sha256
        ).hexdigest()
    )
    # each encounter carries its patient's person
    enc = {p for (p,) in read_rows(db, "SELECT person_id FROM encounter")}
    assert enc == {link[i] for i in expected}


def test_the_choice_does_not_depend_on_the_order_of_identifiers(hdp_home, kek_env):
    syn = PATIENTS["p-syn"]
    build_region(hdp_home, patients={"p-syn": (None, list(reversed(syn[1])), syn[2], syn[3])})
    pseudonymise_holder("region_uppsala", settings=hdp_home, identifiers=_scheme())
    (identifier,) = read_rows(hdp_home.raw_db("region_uppsala"), "SELECT personnummer FROM person_link")[0]
    assert identifier == namespaced("foreign", "999-94-5397", holder="region_uppsala", system=SSN)


def test_without_the_logical_id_fallback_a_patient_without_identifiers_is_quarantined(hdp_home, kek_env):
    build_region(hdp_home, patients={"p-bare": PATIENTS["p-bare"], "p-nat": PATIENTS["p-nat"]})
    config = {**REGION_CONFIG, "local": {"systems": [MR_SYSTEM], "patient_id": False}}
    result = pseudonymise_holder(
        "region_uppsala", settings=hdp_home, identifiers=scheme_from_config("region_uppsala", config)
    )
    assert result.quarantined_by_reason == {
        "identifier.missing": 1,
        "person.patient_quarantined": 1,
        "person.unresolved": 1,
    }
    assert _no_null_person(hdp_home.research_db("region_uppsala")) == {"patient": 1, "encounter": 1}
    q = read_rows(
        hdp_home.raw_db("region_uppsala"), "SELECT record_key, detail FROM quarantine ORDER BY record_key"
    )
    assert [k for k, _ in q] == ["Encounter/e-dangling", "Encounter/e-p-bare", "Patient/p-bare"]
    assert all(d.startswith("column ") and "p-bare" not in d for _, d in q)  # reasons, never values


def test_the_repositorys_region_configuration_links_a_synthea_patient(hdp_home, kek_env):
    """schemas/holders.json as shipped: a Synthea-like export without Swedish identifiers."""
    build_region(hdp_home, patients={k: PATIENTS[k] for k in ("p-syn", "p-bare", "p-nat")})
    result = pseudonymise_holder("region_uppsala", settings=hdp_home)
    assert result.persons == 3
    assert sorted(
        r[0] for r in read_rows(hdp_home.research_db("region_uppsala"), "SELECT id_type FROM patient")
    ) == [
        "foreign",
        "local",
        "personnummer",
    ]


# ---------------------------------------------------------------- CSV registers


def _register_row(identifier, day):
    return (
        identifier,
        "A",
        "B",
        "75105",
        f"2024-03-{day:02d}",
        "typ2",
        50.0,
        25.0,
        120,
        80,
        "aldrig",
        "kost",
    )


def _prom_row(identifier, vas):
    return (identifier, "2024-03-01", 1, 1, 1, 1, 1, vas, "5", "5", "5", "5", "5")


SLL = "991981000010"


def test_register_rows_with_reserve_and_interim_numbers_link(hdp_home, kek_env, monkeypatch):
    reserve = "19650312TF26"  # Socialstyrelsen's form: a date and a letter among the last four
    rows = [
        _register_row(ANNA, 1),
        _register_row(reserve, 2),
        _register_row("19650312-tf26", 3),  # the same reserve number, written otherwise
        _register_row(SLL, 4),  # Region Stockholm's, which NDR receives
        _register_row(INTERIM, 5),
        _register_row("19650399TF26", 6),  # a reserve number's shape, but no such date
        _register_row("12345", 7),
    ]
    build_ndr(hdp_home, register_rows=rows, prom_rows=[_prom_row(reserve, 70), _prom_row(BERTIL, 80)])
    result = pseudonymise_holder("ndr", settings=hdp_home)  # schemas/holders.json, interim refused
    assert result.quarantined_by_reason == {
        "identifier.interim_not_accepted": 1,
        "identifier.reservnummer_invalid": 1,
        "identifier.unknown_format": 1,
    }
    db = hdp_home.research_db("ndr")
    assert _no_null_person(db) == {"register_visit": 4, "prom_response": 2}
    visits = read_rows(
        db, "SELECT day(visit_date), person_id, id_type, birth_year, sex FROM register_visit ORDER BY 1"
    )
    assert [(d, t, y, s) for d, _, t, y, s in visits] == [
        (1, "personnummer", 1950, "F"),
        (2, "reservnummer", None, None),
        (3, "reservnummer", None, None),
        (4, "reservnummer", None, None),
    ]
    person = {d: p for d, p, *_ in visits}
    assert person[2] == person[3] == _hmac(hdp_home, "ndr", namespaced("reservnummer", reserve, holder="ndr"))
    assert person[4] == _hmac(hdp_home, "ndr", namespaced("reservnummer", SLL, holder="ndr"))
    prom = dict(read_rows(db, "SELECT eq_vas, person_id FROM prom_response"))
    assert prom[70] == person[2]  # linked across the register's sources

    monkeypatch.setenv("HDP_ACCEPT_INTERIM_NUMBERS", "true")
    from hdp.settings import get_settings

    get_settings.cache_clear()
    result = pseudonymise_holder("ndr", settings=get_settings())
    assert "identifier.interim_not_accepted" not in result.quarantined_by_reason
    interim = read_rows(db, "SELECT id_type, person_id FROM register_visit WHERE day(visit_date) = 5")
    assert interim == [("interim", _hmac(hdp_home, "ndr", namespaced("interim", INTERIM, holder="ndr")))]


# ---------------------------------------------------------------- releases


def test_national_numbers_link_across_holders_in_a_release_and_holder_local_ones_never(hdp_home, kek_env):
    shared = {
        "p-nat": PATIENTS["p-nat"],
        "p-res": PATIENTS["p-res"],
        "p-bare": PATIENTS["p-bare"],  # the same logical id at both regions
    }
    for holder in ("region_uppsala", "region_orebro"):
        build_region(hdp_home, holder, patients=shared)
        pseudonymise_holder(holder, settings=hdp_home, identifiers=_scheme(holder))
    m = release_person_map(
        holder_ids=("region_uppsala", "region_orebro"), release_domain="release:rel-1", settings=hdp_home
    ).to_pylist()
    assert len(m) == 6
    by_key = {}
    for row in m:
        by_key.setdefault(row["consent_key"] is None, set()).add(row["release_person_id"])
    assert len(by_key[False]) == 1  # the national number: one release person at both holders
    assert len(by_key[True]) == 4  # reserve and logical id: a release person per holder, no consent key


@pytest.mark.parametrize("holder", ["region_uppsala", "region_skane"])
def test_a_patient_under_a_wrong_kind_system_is_not_national(hdp_home, kek_env, holder):
    """A national number's digits under a foreign system stay foreign (the system decides the kind),
    so they never link across holders by accident."""
    number = pnr("19811218", "987")
    build_region(
        hdp_home, holder, patients={"p": (None, [_identifier(SSN, number, code="SS")], "male", None)}
    )
    pseudonymise_holder(holder, settings=hdp_home, identifiers=_scheme(holder))
    (identifier,) = read_rows(hdp_home.raw_db(holder), "SELECT personnummer FROM person_link")[0]
    assert identifier == namespaced("foreign", number, holder=holder, system=SSN)


def test_the_raw_gate_refuses_exactly_the_identifiers_pseudonymisation_refuses(
    hdp_home, kek_env, monkeypatch
):
    """register.personnummer.valid / prom.personnummer.valid accept what classify_values accepts
    (the holder's reserve numbers, interim numbers when accepted), so a delivery of reserve
    numbers is not blocked nor its rows quarantined by the gate before they could be linked."""
    from pipelines.quality.gate import run_gate

    rows = [
        _register_row(ANNA, 1),
        _register_row("19650312TF26", 2),
        _register_row(SLL, 3),
        _register_row(INTERIM, 4),
        _register_row("19650399TF26", 5),
        _register_row("12345", 6),
    ]
    build_ndr(hdp_home, register_rows=rows, prom_rows=[_prom_row("19650312TF26", 70), _prom_row(INTERIM, 80)])

    def failed(settings):
        gate = run_gate("raw", holder_id="ndr", run_id="ids", settings=settings, render_docs=False)
        by_id = {c.id: c for c in gate.checks}
        return {i: by_id[i].failed_rows for i in ("register.personnummer.valid", "prom.personnummer.valid")}

    assert failed(hdp_home) == {"register.personnummer.valid": 3, "prom.personnummer.valid": 1}
    monkeypatch.setenv("HDP_ACCEPT_INTERIM_NUMBERS", "true")
    from hdp.settings import get_settings

    get_settings.cache_clear()
    assert failed(get_settings()) == {"register.personnummer.valid": 2, "prom.personnummer.valid": 0}
