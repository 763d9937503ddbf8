"""privacy.identifiers: kinds, namespaces, holder configuration, classification of identifier values."""

from __future__ import annotations

from datetime import date

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.domains import resource_message
from privacy.identifiers import (
    DEFAULT_CONFIG,
    FOREIGN,
    INTERIM,
    KINDS,
    LOCAL,
    NATIONAL_KINDS,
    PATIENT_ID_SYSTEM,
    PERSONNUMMER,
    RESERVNUMMER,
    RESERVNUMMER_INVALID,
    SAMORDNINGSNUMMER,
    SEPARATOR,
    UNUSABLE,
    IdentifierConfigError,
    classify_values,
    identify,
    is_national,
    load_scheme,
    namespaced,
    national_mask,
    scheme_from_config,
)
from privacy.personnummer import (
    INTERIM_NOT_ACCEPTED,
    MISSING,
    UNKNOWN_FORMAT,
    luhn_digit,
)

REF = date(2026, 1, 15)
VGR = {
    "name": "vgr",
    "system": "urn:oid:1.2.752.113.11.0.2.1.1.1",
    "pattern": "[0-9]{8}[KMX][0-9]{3}",
    "birth_date_prefix": True,
    "luhn": {"start": 2, "end": 12, "letters": {"K": 5, "M": 7, "X": 8}},
}
SLL = {
    "name": "sll",
    "system": "urn:oid:1.2.752.97.3.1.3",
    "pattern": "99[0-9]{10}",
    "luhn": {"start": 4, "end": 12},
}
INERA_EXAMPLES = {  # Inera, "Lokala reservidentiteter" (examples given for each format)
    "vgr": ["19810829M071", "19450829K088", "19930829X802"],
    "sll": ["991981000010", "991945000023", "991993000032"],
}


def _pnr(birth: str, serial: str = "123") -> str:
    nine = birth[2:] + serial
    return birth[:2] + nine + luhn_digit(nine)


def _interim(birth: str, serial: str = "T45") -> str:
    nine = birth[2:] + serial
    return birth[:2] + nine + luhn_digit(birth[2:] + "1" + serial[1:])


def _scheme(holder: str = "region_x", *, accept_interim: bool = False, **config):
    return scheme_from_config(holder, {"reservnummer": [VGR, SLL], **config}, accept_interim=accept_interim)


def _classify(values, scheme):
    return classify_values(pa.array(values, pa.string()), scheme, reference_date=REF).to_pylist()


# ---------------------------------------------------------------- configuration


def test_every_holder_of_the_repository_has_a_valid_scheme():
    for holder in ("ndr", "region_uppsala", "region_orebro", "region_skane"):
        scheme = load_scheme(holder)
        assert scheme.holder == holder and scheme.reservnummer
    assert scheme_from_config("x").reservnummer[0].name == DEFAULT_CONFIG["reservnummer"][0]["name"]


@pytest.mark.parametrize(
    ("holder", "config", "message"),
    [
        ("Region X", None, "holder id"),
        ("x", {"surprise": []}, "unknown keys"),
        ("x", {"reservnummer": [{"name": "a", "pattern": "("}]}, "does not compile"),
        ("x", {"reservnummer": [{"name": "a", "pattern": "[0-9]*"}]}, "empty value"),
        ("x", {"reservnummer": [{"name": "a", "pattern": "1"}, {"name": "a", "pattern": "2"}]}, "unique"),
        ("x", {"reservnummer": [{"pattern": "1"}]}, "needs a name"),
        (
            "x",
            {"reservnummer": [{"name": "a", "pattern": "1", "luhn": {"start": 3, "end": 3}}]},
            "start < end",
        ),
        (
            "x",
            {
                "reservnummer": [
                    {"name": "a", "pattern": "1", "luhn": {"start": 0, "end": 4, "letters": {"k": 5}}}
                ]
            },
            "capital",
        ),
        ("x", {"foreign": {"systems": ["not a uri"]}}, "absolute URI"),
        ("x", {"foreign": {"systems": ["urn:a\x1fb"]}}, "absolute URI"),
        ("x", {"foreign": {"type_codes": ["P P N"]}}, "type code"),
        ("x", {"foreign": {"systems": ["urn:a"]}, "local": {"systems": ["urn:a"]}}, "one kind only"),
        (
            "x",
            {"local": {"systems": ["http://electronichealth.se/identifier/personnummer"]}},
            "one kind only",
        ),
        ("x", {"local": {"patient_id": True, "other": 1}}, "keys"),
    ],
)
def test_broken_configuration_is_refused(holder, config, message):
    with pytest.raises(IdentifierConfigError, match=message):
        scheme_from_config(holder, config)


def test_fhir_rules_rank_kinds_then_configured_order():
    scheme = _scheme(
        interim_systems=["urn:interim"],
        foreign={"systems": ["urn:nid"], "type_codes": ["PPN"]},
        local={"type_codes": ["MR"]},
    )
    rules = scheme.fhir_rules().to_pylist()
    assert [(r["kind"], r["system"] or r["type_code"]) for r in rules] == [
        (RESERVNUMMER, VGR["system"]),
        (RESERVNUMMER, SLL["system"]),
        (INTERIM, "urn:interim"),
        (FOREIGN, "urn:nid"),
        (FOREIGN, "PPN"),
        (LOCAL, "MR"),
    ]
    ranks = [r["rank"] for r in rules]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)


# ---------------------------------------------------------------- reserve numbers


def test_inera_examples_are_accepted_and_a_wrong_check_digit_is_not():
    scheme = _scheme()
    for values in INERA_EXAMPLES.values():
        rows = _classify(values, scheme)
        assert [r["kind"] for r in rows] == [RESERVNUMMER] * len(values)
        assert [r["identifier"] for r in rows] == [
            namespaced(RESERVNUMMER, v, holder="region_x") for v in values
        ]
        assert {(r["birth_year"], r["sex"]) for r in rows} == {
            (None, None)
        }  # only national numbers carry them
        wrong = [v[:-1] + str((int(v[-1]) + 1) % 10) for v in values]
        assert {r["reason_code"] for r in _classify(wrong, scheme)} == {RESERVNUMMER_INVALID}


def test_reserve_number_forms_normalise_to_one_identifier():
    scheme = _scheme()
    forms = ["19810829M071", "19810829-M071", " 19810829m071\t"]
    assert {r["identifier"] for r in _classify(forms, scheme)} == {
        namespaced(RESERVNUMMER, "19810829M071", holder="region_x")
    }


def test_reserve_date_prefix_must_be_a_real_date():
    bad_date = "19810229M07" + luhn_digit("810229707")[0]  # 1981 is not a leap year
    assert _classify([bad_date], _scheme())[0]["reason_code"] == RESERVNUMMER_INVALID


def test_a_valid_national_number_is_never_a_reserve_number():
    number = _pnr("19811218", "987")
    anything = scheme_from_config("x", {"reservnummer": [{"name": "all", "pattern": "[0-9]{12}"}]})
    assert _classify([number], anything)[0]["kind"] == PERSONNUMMER


def test_without_reserve_formats_only_national_reasons_remain():
    national_only = scheme_from_config("x", {})
    # a VGR number has the interim shape (M is an interim letter): without a reserve format it is
    # read as an interim number with a wrong check digit
    assert [
        r["reason_code"] for r in _classify(["19810829M071", "19810829A071", "12345", None], national_only)
    ] == [
        "identifier.bad_checksum",
        UNKNOWN_FORMAT,
        UNKNOWN_FORMAT,
        MISSING,
    ]


# ---------------------------------------------------------------- interim numbers


def test_interim_number_is_refused_unless_accepted():
    value = _interim("19900402", "T45")
    generic = scheme_from_config("x")  # Socialstyrelsen's pattern leaves the interim shape out
    assert not generic.reservnummer[0].matches(value) and generic.reservnummer[0].matches("19900402TF26")
    assert _classify([value], generic)[0]["reason_code"] == INTERIM_NOT_ACCEPTED
    accepted = scheme_from_config("x", accept_interim=True)
    row = _classify([value, f"{value[2:8]}-{value[8:]}"], accepted)
    assert row == 2 * [
        {
            "identifier": namespaced(INTERIM, value, holder="x"),
            "kind": INTERIM,
            "birth_year": None,
            "sex": None,
            "reason_code": None,
        }
    ]
    # a malformed interim number that is no reserve number keeps the parser's reason
    wrong = value[:-1] + str((int(value[-1]) + 1) % 10)
    assert _classify([wrong], accepted)[0]["reason_code"] == "identifier.bad_checksum"


def test_a_holders_reserve_format_decides_before_the_interim_shape():
    value = _interim("19900402", "K45")
    letters = scheme_from_config(
        "x",
        {"reservnummer": [{"name": "any_letter", "pattern": "[0-9]{8}[A-Z][0-9]{3}"}]},
        accept_interim=True,
    )
    assert _classify([value], letters)[0]["kind"] == RESERVNUMMER
    # VGR's letters count 5, 7, 8 in its check digit, an interim letter 1: never both valid
    for v in INERA_EXAMPLES["vgr"]:
        assert _classify([v], _scheme(accept_interim=True))[0]["kind"] == RESERVNUMMER


# ---------------------------------------------------------------- FHIR identifiers


def test_identify_opaque_foreign_and_local_values():
    scheme = _scheme()
    t = identify(
        pa.array([FOREIGN, LOCAL, FOREIGN, FOREIGN, LOCAL, None, RESERVNUMMER]),
        pa.array(
            [
                "http://hl7.org/fhir/sid/us-ssn",
                PATIENT_ID_SYSTEM,
                "urn:x",
                "urn:x",
                "urn:y",
                None,
                VGR["system"],
            ]
        ),
        pa.array([" 999-94-5397 ", "p-1", "", "a\x01b", "x" * 300, None, "19450829K088"]),
        scheme,
        reference_date=REF,
    ).to_pylist()
    assert [r["identifier"] for r in t] == [
        namespaced(FOREIGN, "999-94-5397", holder="region_x", system="http://hl7.org/fhir/sid/us-ssn"),
        namespaced(LOCAL, "p-1", holder="region_x", system=PATIENT_ID_SYSTEM),
        None,
        None,
        None,
        None,
        namespaced(RESERVNUMMER, "19450829K088", holder="region_x"),
    ]
    assert [r["reason_code"] for r in t] == [None, None, MISSING, UNUSABLE, UNUSABLE, MISSING, None]


def test_a_national_number_under_a_reserve_system_is_national():
    number = _pnr("19811218", "987")
    t = identify(
        pa.array([RESERVNUMMER]), pa.array([VGR["system"]]), pa.array([number]), _scheme(), reference_date=REF
    )
    assert t.to_pylist()[0]["identifier"] == number and t.to_pylist()[0]["kind"] == PERSONNUMMER


def test_identify_refuses_a_kind_it_does_not_know():
    with pytest.raises(ValueError, match="not a FHIR identifier kind"):
        identify(
            pa.array([PERSONNUMMER]), pa.array(["urn:x"]), pa.array(["1"]), _scheme(), reference_date=REF
        )


# ---------------------------------------------------------------- namespaces (properties)

holders = st.from_regex(r"\A[a-z0-9_]{1,12}\Z")
systems = st.from_regex(r"\A(urn|http):[!-~]{1,20}\Z")
values = st.text(min_size=1, max_size=20).filter(lambda v: SEPARATOR not in v)
local_kinds = st.sampled_from([RESERVNUMMER, INTERIM, FOREIGN, LOCAL])


@given(st.lists(st.tuples(local_kinds, holders, systems, values), min_size=2, max_size=30, unique=True))
@settings(max_examples=300, deadline=None)
def test_namespaces_never_collide(items):
    """Different (kind, holder, system, value) never give one message: the message splits back
    into its parts in exactly one way, and is never a national number or a resource message."""
    keys = {}
    for kind, holder, system, value in items:
        message = namespaced(kind, value, holder=holder, system=system)
        parts = message.split(SEPARATOR)
        assert parts[0] == kind and parts[1] == holder and not is_national(message)
        assert parts[-1] == value and (len(parts) == 3) == (kind in (RESERVNUMMER, INTERIM))
        assert message != resource_message("Encounter", value) and not message[:1].isupper()
        canonical = (kind, holder, "" if kind in (RESERVNUMMER, INTERIM) else system, value)
        assert keys.setdefault(message, canonical) == canonical


@given(st.dates(min_value=date(1900, 1, 1), max_value=REF), st.integers(1, 999), st.booleans(), holders)
@settings(max_examples=200, deadline=None)
def test_national_numbers_are_their_own_namespace_at_every_holder(birth, serial, samord, holder):
    day = birth.day + (60 if samord else 0)
    nine = f"{birth:%y%m}{day:02d}{serial:03d}"
    number = f"{birth.year // 100:02d}{nine}{luhn_digit(nine)}"
    row = _classify([number], scheme_from_config(holder))[0]
    assert row["identifier"] == number  # exactly today's pseudonym input: the same at every holder
    assert row["kind"] in NATIONAL_KINDS and row["kind"] == (SAMORDNINGSNUMMER if samord else PERSONNUMMER)
    assert (row["birth_year"], row["sex"]) == (birth.year, "M" if serial % 2 else "F")
    assert national_mask(pa.array([row["identifier"]])).to_pylist() == [True]


@st.composite
def any_identifier(draw):
    """A value of any kind, with its expected kind."""
    birth = draw(st.dates(min_value=date(1920, 1, 1), max_value=date(2020, 12, 31)))
    which = draw(st.sampled_from(["national", "interim", "vgr", "sll"]))
    if which == "national":
        return _pnr(f"{birth:%Y%m%d}", f"{draw(st.integers(1, 999)):03d}"), PERSONNUMMER
    if which == "interim":
        letter = draw(st.sampled_from("TRSUWXJKLMN"))
        return _interim(f"{birth:%Y%m%d}", f"{letter}{draw(st.integers(0, 99)):02d}"), INTERIM
    if which == "vgr":
        g = draw(st.sampled_from("KMX"))
        gg = f"{draw(st.integers(6, 89)):02d}"
        digit = {"K": "5", "M": "7", "X": "8"}[g]
        return f"{birth:%Y%m%d}{g}{gg}" + luhn_digit(f"{birth:%y%m%d}{digit}{gg}"), RESERVNUMMER
    payload = f"{birth:%Y}{draw(st.integers(0, 99999)):05d}"
    # Luhn over positions 5-12 (payload digits 3-9 and the check digit), as Region Stockholm's
    check = next(c for c in "0123456789" if _luhn_from_right(payload[2:] + c))
    return f"99{payload}{check}", RESERVNUMMER


def _luhn_from_right(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


@given(st.lists(any_identifier(), min_size=1, max_size=25))
@settings(max_examples=200, deadline=None)
def test_every_kind_round_trips_alone_and_in_a_batch(items):
    """Each value is recognised as its kind, alone or among others, and its identifier is stable."""
    scheme = _scheme("h", accept_interim=True)
    batch = _classify([v for v, _ in items], scheme)
    for (value, kind), row in zip(items, batch, strict=True):
        assert row["reason_code"] is None and row["kind"] == kind
        assert _classify([value], scheme)[0] == row
        expected = value if kind == PERSONNUMMER else namespaced(kind, value, holder="h")
        assert row["identifier"] == expected
        assert is_national(row["identifier"]) == (kind == PERSONNUMMER)


def test_kinds_are_listed_best_first():
    assert KINDS[:2] == (PERSONNUMMER, SAMORDNINGSNUMMER) and KINDS[2:] == (
        RESERVNUMMER,
        INTERIM,
        FOREIGN,
        LOCAL,
    )
