"""Patient identifier kinds, the namespace each is pseudonymised in, and each holder's configuration.

A person is identified by the best kind of identifier they carry (priority, best first)::

    1 personnummer, samordningsnummer   national, issued by Skatteverket (privacy.personnummer)
    2 reservnummer                      the region's reserve numbers, formats configured per holder
    3 interim                           interim numbers, only with HDP_ACCEPT_INTERIM_NUMBERS
    4 foreign                           configured identifier systems / types: passports, foreign national ids
    5 local                             the holder's own patient ids: configured systems (MR), finally the
                                        FHIR Patient's logical id

Only national numbers mean the same person at every holder. Every other kind is issued by one
organisation (a region, a university, another country, the source system) and is only known
to be unique there, so it is *holder-local*: it links a person's rows within their holder and
never across holders, whatever the value.

Namespaces. The keyed pseudonym (HMAC) is computed over the *namespaced identifier*, which is
also what ``person_link`` stores and what release pseudonyms and consent keys are computed from::

    national       198112189876                                  (the 12 digits, unchanged)
    reservnummer   reservnummer<US>region_skane<US>19810829K088
    interim        interim<US>ndr<US>19900402T459
    foreign        foreign<US>region_uppsala<US>http://hl7.org/fhir/sid/us-ssn<US>999-94-5397
    local          local<US>region_uppsala<US>Patient.id<US>129c6ac7-...

(``<US>`` is the unit separator ``\\x1f``.) A national number therefore keeps exactly its
pseudonym, release pseudonym and consent key of before. The other messages start with a
lower-case kind and a separator: never 12 digits, never a resource message (``Encounter<US>id``,
:func:`privacy.domains.resource_message`, whose type is capitalised), and never each other's,
because kind, holder id and system contain no separator (validated here; values holding one are
unusable), so a message splits back into its parts in exactly one way.

Configuration: ``schemas/holders.json``, per holder, ``"identifiers"`` (all keys optional;
:data:`DEFAULT_CONFIG` when absent)::

    "identifiers": {
      "reservnummer": [{"name": "vgr", "system": "urn:oid:1.2.752.113.11.0.2.1.1.1",
                        "pattern": "[0-9]{8}[KMX][0-9]{2}[0-9]", "birth_date_prefix": true,
                        "luhn": {"start": 2, "end": 12, "letters": {"K": 5, "M": 7, "X": 8}}}],
      "interim_systems": ["urn:..."],
      "foreign": {"systems": ["..."], "type_codes": ["NI", "SS", "PPN"]},
      "local": {"systems": ["..."], "type_codes": ["MR"], "patient_id": true}
    }

* A reserve format: ``pattern`` (Python regex, full match) over the value with surrounding ASCII
  whitespace and every '-' removed and ASCII letters in capitals; optionally a real calendar
  date ``YYYYMMDD`` (not after the reference date) in front, and a Luhn check over
  ``[start, end)`` with letters given digit values. ``system``: the FHIR identifier system that
  carries it. Sources for the formats: Inera, "Lokala reservidentiteter" (Region Stockholm
  ``99yyyyNNNNNC``, VGR ``yyyymmddGggC``, Värmland, Carelink); Socialstyrelsen's recommendation
  (a correct birth date and at least one letter in the last four characters, as Region Skåne
  does), which is the default for a holder that configures none.
* Foreign and local identifiers are recognised in FHIR by ``system`` or by a
  ``type.coding.code`` (HL7 v2 table 0203: NI national unique individual identifier, SS social
  security number, PPN passport, MR medical record number), in the order listed: a lifelong
  national id is listed before a passport, whose number changes on renewal. Within a kind the
  first listed match wins, then the smallest value, so the choice does not depend on the order of
  a Patient's identifiers. ``use: old`` identifiers are ignored.
* CSV registers have one identifier column: a value there is a national number, else a reserve
  number in one of the holder's formats, else an interim number (:func:`classify_values`). A
  holder's reserve format decides before the interim shape: it is the more specific of the two.
A value of the best kind that is *present but invalid* (a wrong check digit, a reserve number in
no configured format, an interim number while they are refused) quarantines the person's rows
with its reason: lower kinds are not tried, so a data error never silently gives the person a
second, unrelated pseudonym.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from hdp.settings import SCHEMAS_DIR
from privacy.personnummer import (
    INTERIM,
    INTERIM_NOT_ACCEPTED,
    MISSING,
    PERSONNUMMER,
    SAMORDNINGSNUMMER,
    parse_batch,
)
from privacy.personnummer import REASON_TEXT as PERSONNUMMER_REASON_TEXT

RESERVNUMMER: Final = "reservnummer"
FOREIGN: Final = "foreign"
LOCAL: Final = "local"
#: Every kind, best first (national numbers share the first place).
KINDS: Final = (PERSONNUMMER, SAMORDNINGSNUMMER, RESERVNUMMER, INTERIM, FOREIGN, LOCAL)
PRIORITY: Final = {PERSONNUMMER: 0, SAMORDNINGSNUMMER: 0, RESERVNUMMER: 1, INTERIM: 2, FOREIGN: 3, LOCAL: 4}
NATIONAL_KINDS: Final = frozenset({PERSONNUMMER, SAMORDNINGSNUMMER})

SEPARATOR: Final = "\x1f"
#: The ``system`` part of the namespace of a FHIR Patient's logical id (not a URI, so no
#: configured system can equal it).
PATIENT_ID_SYSTEM: Final = "Patient.id"

#: HL7 Sweden's systems of the national numbers (the FHIR Patient view reads these).
NATIONAL_SYSTEMS: Final = (
    "http://electronichealth.se/identifier/personnummer",
    "http://electronichealth.se/identifier/samordningsnummer",
)

RESERVNUMMER_INVALID = "identifier.reservnummer_invalid"
UNUSABLE = "identifier.unusable"
#: Reason codes of every identifier problem (this module's and the national parser's).
REASON_TEXT: Final = {
    **PERSONNUMMER_REASON_TEXT,
    RESERVNUMMER_INVALID: "not a reserve number in any format this holder configured",
    UNUSABLE: "identifier value is empty, longer than 256 characters or holds control characters",
}

#: Longest foreign or local identifier value used (real ones are a few dozen characters).
MAX_VALUE_LENGTH = 256
_HOLDER_ID = re.compile(r"[a-z0-9_]{1,64}")
_SYSTEM = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[!-~]{1,2000}")  # an absolute URI, printable ASCII
_TYPE_CODE = re.compile(r"[A-Za-z0-9]{1,16}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WS = " \t\r\n\x0b\x0c"

#: Socialstyrelsen's recommendation for reserve numbers: a correct birth date and at least one
#: letter among the last four characters, which keeps them apart from every personnummer. The
#: interim shape (a letter T R S U W X J K L M N and three digits) is left out: whether such a
#: value is accepted is HDP_ACCEPT_INTERIM_NUMBERS's decision, not this generic pattern's.
SOCIALSTYRELSEN_PATTERN: Final = "[0-9]{8}(?![TRSUWXJKLMN][0-9]{3})(?=[0-9]{0,3}[A-Z])[0-9A-Z]{4}"

#: A holder without an ``identifiers`` entry: the generic reserve format, passports and national
#: ids of other countries (by HL7 v2-0203 type), the source system's medical record number, and
#: finally the Patient's logical id.
DEFAULT_CONFIG: Final[Mapping[str, Any]] = {
    "reservnummer": [
        {"name": "socialstyrelsen", "pattern": SOCIALSTYRELSEN_PATTERN, "birth_date_prefix": True}
    ],
    "interim_systems": [],
    "foreign": {"systems": [], "type_codes": ["NI", "SS", "PPN"]},
    "local": {"systems": [], "type_codes": ["MR"], "patient_id": True},
}


class IdentifierConfigError(ValueError):
    """A holder's identifier configuration that cannot be applied safely."""


def namespaced(kind: str, value: str, *, holder: str = "", system: str = "") -> str:
    """The HMAC message (and ``person_link`` value) of a validated identifier of ``kind``.

    ``value`` is the normalised value (national: the 12 digits); holder-local kinds need
    ``holder``, foreign and local ones their ``system`` too.
    """
    if kind in NATIONAL_KINDS:
        return value
    if kind in (RESERVNUMMER, INTERIM):
        return SEPARATOR.join((kind, holder, value))
    return SEPARATOR.join((kind, holder, system, value))


def is_national(identifier: str) -> bool:
    """True for a national number's namespaced identifier (the only kind linking across holders)."""
    return SEPARATOR not in identifier


def national_mask(identifiers: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """:func:`is_national` of every value (null stays null)."""
    return pc.invert(pc.match_substring(identifiers, SEPARATOR))


def _luhn_valid(digits: Sequence[int]) -> bool:
    """Luhn over a digit sequence whose last digit is the check digit (doubling from the right)."""
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _valid_date_prefix(value: str, ref: date) -> bool:
    if len(value) < 8 or not value[:8].isdigit():
        return False
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:8])) <= ref
    except ValueError:
        return False


@dataclass(frozen=True)
class LuhnCheck:
    """A Luhn check digit at ``end - 1`` over the characters ``[start, end)``; letters count as
    their configured digit (any other non-digit fails the check)."""

    start: int
    end: int
    letters: tuple[tuple[str, int], ...] = ()

    def accepts(self, value: str) -> bool:
        part = value[self.start : self.end]
        if len(part) != self.end - self.start:
            return False
        letters = dict(self.letters)
        digits = []
        for ch in part:
            if "0" <= ch <= "9":
                digits.append(ord(ch) - 48)
            elif ch in letters:
                digits.append(letters[ch])
            else:
                return False
        return _luhn_valid(digits)


@dataclass(frozen=True)
class ReserveFormat:
    """One reserve-number format of a holder (see the module docstring)."""

    name: str
    pattern: str
    system: str | None = None
    birth_date_prefix: bool = False
    luhn: LuhnCheck | None = None

    @cached_property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern)

    def matches(self, value: str) -> bool:
        """The normalised ``value`` has this format's shape (its checks aside)."""
        return self.regex.fullmatch(value) is not None

    def accepts(self, value: str, *, reference_date: date) -> bool:
        """The normalised ``value`` is a reserve number of this format."""
        return (
            self.matches(value)
            and (not self.birth_date_prefix or _valid_date_prefix(value, reference_date))
            and (self.luhn is None or self.luhn.accepts(value))
        )


@dataclass(frozen=True)
class IdentifierScheme:
    """Which identifiers identify a patient at one holder, and how (see the module docstring)."""

    holder: str
    reservnummer: tuple[ReserveFormat, ...] = ()
    interim_systems: tuple[str, ...] = ()
    foreign_systems: tuple[str, ...] = ()
    foreign_type_codes: tuple[str, ...] = ()
    local_systems: tuple[str, ...] = ()
    local_type_codes: tuple[str, ...] = ()
    #: a FHIR Patient with no other usable identifier is known by its logical id (kind local)
    patient_id_fallback: bool = True
    #: HDP_ACCEPT_INTERIM_NUMBERS
    accept_interim: bool = False

    def fhir_rules(self) -> pa.Table:
        """How a FHIR identifier gets its kind: ``(kind, rank, system, type_code)``, one rule per
        configured system or type code; the lowest rank among the rules an identifier matches
        is its kind and rank (kind priority first, then the order configured)."""
        rules: list[tuple[str, str | None, str | None]] = []
        rules += [(RESERVNUMMER, f.system, None) for f in self.reservnummer if f.system]
        rules += [(INTERIM, s, None) for s in self.interim_systems]
        rules += [(FOREIGN, s, None) for s in self.foreign_systems]
        rules += [(FOREIGN, None, t) for t in self.foreign_type_codes]
        rules += [(LOCAL, s, None) for s in self.local_systems]
        rules += [(LOCAL, None, t) for t in self.local_type_codes]
        return pa.table(
            {
                "kind": pa.array([k for k, _, _ in rules], pa.string()),
                "rank": pa.array([PRIORITY[k] * 1000 + i for i, (k, _, _) in enumerate(rules)], pa.int32()),
                "system": pa.array([s for _, s, _ in rules], pa.string()),
                "type_code": pa.array([t for _, _, t in rules], pa.string()),
            }
        )


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


def _system(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _SYSTEM.fullmatch(value):
        raise IdentifierConfigError(f"{where}: a system must be an absolute URI of printable ASCII")
    return value


def _type_code(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _TYPE_CODE.fullmatch(value):
        raise IdentifierConfigError(f"{where}: a type code is 1-16 ASCII letters or digits")
    return value


def _luhn(raw: Any, where: str) -> LuhnCheck | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) - {"start", "end", "letters"}:
        raise IdentifierConfigError(f"{where}.luhn: give start, end and optionally letters")
    start, end = raw.get("start"), raw.get("end")
    if not isinstance(start, int) or not isinstance(end, int) or not 0 <= start < end - 1:
        raise IdentifierConfigError(f"{where}.luhn: 0 <= start < end - 1 (the check digit is at end - 1)")
    letters = raw.get("letters", {})
    if not isinstance(letters, Mapping) or not all(
        isinstance(k, str) and len(k) == 1 and "A" <= k <= "Z" and isinstance(v, int) and 0 <= v <= 9
        for k, v in letters.items()
    ):
        raise IdentifierConfigError(f"{where}.luhn.letters: capital letter -> digit 0-9")
    return LuhnCheck(start, end, tuple(sorted(letters.items())))


def _reserve_format(raw: Any, where: str) -> ReserveFormat:
    if not isinstance(raw, Mapping) or set(raw) - {"name", "pattern", "system", "birth_date_prefix", "luhn"}:
        raise IdentifierConfigError(f"{where}: a format has name, pattern, system, birth_date_prefix, luhn")
    name, pattern = raw.get("name"), raw.get("pattern")
    if not isinstance(name, str) or not name:
        raise IdentifierConfigError(f"{where}: a format needs a name")
    if not isinstance(pattern, str):
        raise IdentifierConfigError(f"{where}: a format needs a pattern")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise IdentifierConfigError(f"{where}: pattern does not compile ({exc.msg})") from None
    if compiled.fullmatch(""):
        raise IdentifierConfigError(f"{where}: pattern matches the empty value")
    system = raw.get("system")
    return ReserveFormat(
        name=name,
        pattern=pattern,
        system=None if system is None else _system(system, where),
        birth_date_prefix=bool(raw.get("birth_date_prefix", False)),
        luhn=_luhn(raw.get("luhn"), where),
    )


def _list(raw: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = raw.get(key, [])
    if not isinstance(value, list):
        raise IdentifierConfigError(f"{where}.{key} must be a list")
    return value


def scheme_from_config(
    holder_id: str, config: Mapping[str, Any] | None = None, *, accept_interim: bool = False
) -> IdentifierScheme:
    """Validate one holder's ``identifiers`` configuration (``None``: :data:`DEFAULT_CONFIG`)."""
    if not _HOLDER_ID.fullmatch(holder_id):
        raise IdentifierConfigError("a holder id is 1-64 of a-z 0-9 _ (it is part of every namespace)")
    where = f"holder {holder_id} identifiers"
    config = DEFAULT_CONFIG if config is None else config
    unknown = set(config) - set(DEFAULT_CONFIG)
    if unknown:
        raise IdentifierConfigError(f"{where}: unknown keys {sorted(unknown)}")
    formats = tuple(
        _reserve_format(f, f"{where}.reservnummer[{i}]")
        for i, f in enumerate(_list(config, "reservnummer", where))
    )
    if len({f.name for f in formats}) != len(formats):
        raise IdentifierConfigError(f"{where}.reservnummer: format names must be unique")
    groups = {}
    for group in ("foreign", "local"):
        raw = config.get(group, {})
        allowed = {"systems", "type_codes"} | ({"patient_id"} if group == "local" else set())
        if not isinstance(raw, Mapping) or set(raw) - allowed:
            raise IdentifierConfigError(f"{where}.{group}: keys {sorted(allowed)}")
        groups[group] = (
            tuple(_system(s, f"{where}.{group}") for s in _list(raw, "systems", f"{where}.{group}")),
            tuple(_type_code(t, f"{where}.{group}") for t in _list(raw, "type_codes", f"{where}.{group}")),
        )
    interim = tuple(_system(s, f"{where}.interim_systems") for s in _list(config, "interim_systems", where))
    systems = (
        [f.system for f in formats if f.system] + list(interim) + [s for g in groups.values() for s in g[0]]
    )
    clash = sorted({s for s in systems if systems.count(s) > 1} | (set(systems) & set(NATIONAL_SYSTEMS)))
    if clash:
        raise IdentifierConfigError(f"{where}: a system may have one kind only: {clash}")
    local = config.get("local", {})
    return IdentifierScheme(
        holder=holder_id,
        reservnummer=formats,
        interim_systems=interim,
        foreign_systems=groups["foreign"][0],
        foreign_type_codes=groups["foreign"][1],
        local_systems=groups["local"][0],
        local_type_codes=groups["local"][1],
        patient_id_fallback=bool(local.get("patient_id", True)),
        accept_interim=accept_interim,
    )


def load_scheme(
    holder_id: str, *, accept_interim: bool = False, path: Path | None = None
) -> IdentifierScheme:
    """The identifier scheme of a holder of ``schemas/holders.json`` (``path``)."""
    doc = json.loads((path or SCHEMAS_DIR / "holders.json").read_text(encoding="utf-8"))
    for h in doc["holders"]:
        if h["id"] == holder_id:
            return scheme_from_config(holder_id, h.get("identifiers"), accept_interim=accept_interim)
    raise IdentifierConfigError(f"unknown data holder {holder_id!r}")


# --------------------------------------------------------------------------------------
# Classification (Arrow in, Arrow out)
# --------------------------------------------------------------------------------------

#: What :func:`classify_values` and :func:`identify` return, one row per input value.
IDENTIFIED_SCHEMA = pa.schema(
    [
        ("identifier", pa.string()),  # namespaced; null when unusable
        ("kind", pa.string()),
        ("birth_year", pa.int32()),  # national kinds only
        ("sex", pa.string()),  # national kinds only
        ("reason_code", pa.string()),  # null when usable
    ]
)


def _reserve_normalised(value: str) -> str:
    s = value.strip(_WS).replace("-", "")
    return s.upper() if s.isascii() else s


def _reserve(value: str, scheme: IdentifierScheme, ref: date) -> str | None:
    """The namespaced reserve number, or None when no format of the holder accepts the value."""
    norm = _reserve_normalised(value)
    for fmt in scheme.reservnummer:
        if fmt.accepts(norm, reference_date=ref):
            return namespaced(RESERVNUMMER, norm, holder=scheme.holder)
    return None


def classify_values(values: pa.Array, scheme: IdentifierScheme, *, reference_date: date) -> pa.Table:
    """The identifiers of one identifier column (CSV register, the national column of FHIR
    Patients), in the order of the kinds: a national number, else a reserve number in one of
    the holder's formats, else an interim number (when accepted); else the reason.

    A holder's own reserve format is more specific than the interim shape (VGR's gender letters
    K, M and X are interim letters too), so it decides first. The national parser runs
    vectorised on every value; only the values it does not accept as national (few, in a real
    delivery) are looked at again, in Python.
    """
    parsed = parse_batch(values, reference_date=reference_date, allow_interim=True)
    kind = parsed["kind"]
    national = pc.fill_null(pc.is_in(kind, pa.array(sorted(NATIONAL_KINDS))), False)
    identifier = parsed["normalised"]
    reason = parsed["reason_code"]
    # not national and not missing: an interim number, a reserve number, or invalid
    rest = pc.and_(pc.invert(national), pc.fill_null(pc.not_equal(reason, MISSING), True))
    if pc.any(rest).as_py():
        identifier, kind, reason = _not_national(values, parsed, rest, scheme, reference_date)
    return pa.table(
        {
            "identifier": identifier,
            "kind": kind,
            "birth_year": pc.if_else(
                national, pc.year(parsed["birth_date"]).cast(pa.int32()), pa.scalar(None, pa.int32())
            ),
            "sex": pc.if_else(national, parsed["sex"], pa.scalar(None, pa.string())),
            "reason_code": reason,
        },
        schema=IDENTIFIED_SCHEMA,
    )


def _not_national(
    values: pa.Array, parsed: pa.Table, rest: pa.Array, scheme: IdentifierScheme, ref: date
) -> tuple[pa.Array, pa.Array, pa.Array]:
    """(identifier, kind, reason) with the values of ``rest`` decided: a reserve number of the
    holder, else an interim number (accepted or refused), else invalid (a reserve number's shape
    with a wrong date or check digit: ``identifier.reservnummer_invalid``; otherwise the national
    parser's reason)."""
    idx = pc.indices_nonzero(rest).to_pylist()
    take = pa.array(idx, pa.int64())
    raw = pc.take(values, take).to_pylist()
    interim = pc.take(parsed["normalised"], take).to_pylist()  # set only for a valid interim number
    ids: list[str | None] = parsed["normalised"].to_pylist()
    kinds: list[str | None] = parsed["kind"].to_pylist()
    reasons: list[str | None] = parsed["reason_code"].to_pylist()
    for i, value, interim_number in zip(idx, raw, interim, strict=True):
        national_reason = reasons[i]
        ids[i] = kinds[i] = reasons[i] = None
        found = _reserve(value, scheme, ref)
        if found is not None:
            ids[i], kinds[i] = found, RESERVNUMMER
        elif interim_number is not None and scheme.accept_interim:
            ids[i], kinds[i] = namespaced(INTERIM, interim_number, holder=scheme.holder), INTERIM
        elif interim_number is not None:
            reasons[i] = INTERIM_NOT_ACCEPTED
        elif any(f.matches(_reserve_normalised(value)) for f in scheme.reservnummer):
            reasons[i] = RESERVNUMMER_INVALID  # its shape, but a wrong date or check digit
        else:
            reasons[i] = national_reason
    return pa.array(ids, pa.string()), pa.array(kinds, pa.string()), pa.array(reasons, pa.string())


def _array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array (``replace_with_mask`` takes no chunked arrays)."""
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks() if values.num_chunks else pa.array([], values.type)
    return values


def _opaque(kinds: pa.Array, systems: pa.Array, values: pa.Array, holder: str) -> pa.Table:
    """Foreign and local identifiers, vectorised: any value is usable that is not empty (after
    ASCII whitespace), at most :data:`MAX_VALUE_LENGTH` characters and free of control characters,
    under a system without the separator."""
    v = pc.utf8_trim(values, characters=_WS)
    empty = pc.fill_null(pc.equal(pc.utf8_length(v), 0), True)
    unusable = pc.or_kleene(
        pc.or_kleene(
            pc.greater(pc.utf8_length(v), MAX_VALUE_LENGTH), pc.match_substring_regex(v, _CONTROL.pattern)
        ),
        pc.fill_null(pc.match_substring(systems, SEPARATOR), True),
    )
    unusable = pc.and_(pc.invert(empty), pc.fill_null(unusable, True))
    usable = pc.invert(pc.or_(empty, unusable))
    identifier = pc.binary_join_element_wise(kinds, pa.scalar(holder), systems, v, SEPARATOR)
    reason = pc.if_else(empty, MISSING, pc.if_else(unusable, UNUSABLE, pa.scalar(None, pa.string())))
    n = len(values)
    return pa.table(
        {
            "identifier": pc.if_else(usable, identifier, pa.scalar(None, pa.string())),
            "kind": kinds,
            "birth_year": pa.nulls(n, pa.int32()),
            "sex": pa.nulls(n, pa.string()),
            "reason_code": reason,
        },
        schema=IDENTIFIED_SCHEMA,
    )


def identify(
    kinds: pa.Array, systems: pa.Array, values: pa.Array, scheme: IdentifierScheme, *, reference_date: date
) -> pa.Table:
    """The identifiers of FHIR identifiers whose kind is already known (from their system or type,
    :meth:`IdentifierScheme.fhir_rules`), one row each, with :data:`IDENTIFIED_SCHEMA`.

    Reserve and interim values are read like an identifier column (:func:`classify_values`: a
    national number under such a system is a national number); foreign and local values are
    opaque and need only be usable; a null kind (no identifier at all) is ``identifier.missing``.
    """
    unknown = set(pc.unique(kinds).to_pylist()) - {RESERVNUMMER, INTERIM, FOREIGN, LOCAL, None}
    if unknown:
        raise ValueError(f"identify: {sorted(unknown)}: not a FHIR identifier kind")
    out = _opaque(kinds, systems, values, scheme.holder)  # the foreign and local rows, and no kind: missing
    out = out.set_column(4, "reason_code", pc.if_else(pc.is_null(kinds), MISSING, out["reason_code"]))
    coded = _array(pc.fill_null(pc.is_in(kinds, pa.array([RESERVNUMMER, INTERIM])), False))
    if not pc.any(coded).as_py():
        return out
    read = classify_values(values.filter(coded), scheme, reference_date=reference_date)
    out, read = out.combine_chunks(), read.combine_chunks()
    return pa.table(
        {
            name: pc.replace_with_mask(out[name].chunk(0), coded, read[name].chunk(0))
            for name in IDENTIFIED_SCHEMA.names
        },
        schema=IDENTIFIED_SCHEMA,
    )
