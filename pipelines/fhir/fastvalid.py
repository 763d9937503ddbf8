"""Validation at C speed: msgspec Structs generated from the R4B-derived schema of :mod:`validation`.

:func:`pipelines.fhir.validation.fast_accept` walks a decoded dict in Python (~50 µs per
resource). This module turns the very same schema (``validation.type_spec``: element names,
cardinality, primitive types, required elements, choice groups, required-binding codes)
into ``msgspec.Struct`` types once per process, so that decoding a
line *is* validating it, in C:

* unknown elements, ``null`` (but for the placeholders of an ``_element`` list) and elements
  the fast path does not model are unknown fields -> decoding fails;
* a resource inside a resource (``contained``, of any type) is decoded by its own type's Struct
  (built when that type is first met, see :func:`_resource_in`);
* primitives carry patterns at least as strict as the ``_p_*`` checks in :mod:`validation`
  (dates are exact, leap years included, so no Python post-check is needed). These regex calls
  are most of the decoding time (0.15-0.75 µs each). A line that is ASCII without a backslash
  (most lines) is decoded by a variant whose strings need no pattern (:class:`LineDecoder`: two
  C scans prove it; an earlier proof for strings and codes, four scans for quote/blank pairs,
  cost as much as it saved and was dropped);
* required-binding codes are ``Literal`` types; lists must be non-empty;
* choice groups (``value[x]``) are checked by a generated ``__post_init__`` on the few
  Structs that have them;
* empty arrays are refused (``min_length=1``); an empty object decodes only into a type without
  required elements, which the reference accepts as well (the differential test covers it),
  except an ``_element`` object, which the reference refuses empty (``TypeSpec.any_of``).

It only ever *accepts*: :func:`fast_decode` returns ``None`` whenever decoding fails for any
reason, and the caller then asks the reference validator. The law "fast-accept implies
reference-accept" is checked by ``tests/fhir/test_validation_differential.py``.
"""

from __future__ import annotations

import keyword
import re
import sys
import types
import typing
from functools import cache
from typing import Annotated, Any, Literal, Union

import msgspec

from pipelines.fhir import primitives
from pipelines.fhir import validation as v

__all__ = ["CODED_TYPES", "LineDecoder", "decoder", "fast_decode", "sql_safe", "struct_unknown_code_paths"]

# --------------------------------------------------------------------------- primitive patterns
# msgspec applies ``pattern`` with ``re.search``: the FHIR formats (:mod:`primitives`) are anchored
# (but ``string``, which needs no anchor).
#: The pattern of each primitive check of :mod:`validation` the Structs model, by its name.
PATTERNS: dict[str, str] = {
    "_p_string": primitives.STRING,
    "_p_code": primitives.CODE,
    "_p_id": primitives.ID,
    "_p_uri": primitives.URI,
    "_p_url": primitives.URL,
    "_p_oid": primitives.OID,
    "_p_uuid": primitives.UUID,
    "_p_date": primitives.DATE,
    "_p_datetime": primitives.DATE_TIME,
    "_p_instant": primitives.INSTANT,
    "_p_time": primitives.TIME,
    "_p_base64": primitives.BASE64,
}
_I32 = (-2147483648, 2147483647)
#: Primitives modelled by their JSON type (and bounds) alone.
_TYPED: dict[str, Any] = {
    "_p_integer": Annotated[int, msgspec.Meta(ge=_I32[0], le=_I32[1])],
    "_p_unsigned": Annotated[int, msgspec.Meta(ge=0, le=_I32[1])],
    "_p_positive": Annotated[int, msgspec.Meta(ge=1, le=_I32[1])],
    "_p_decimal": Union[  # noqa: UP007
        Annotated[int, msgspec.Meta(ge=_I32[0], le=_I32[1])],
        Annotated[float, msgspec.Meta(gt=-1e15, lt=1e15)],
    ],
    "_p_bool": bool,
    "_p_xhtml": str,  # Narrative.div: any string, exactly like the reference (see validation._p_xhtml)
}


def _primitive_type(check: Any, enum: frozenset[str] | None, plain: bool) -> Any:
    name = getattr(check, "__name__", "")
    if plain and name == "_p_string" and enum is None:
        return _PLAIN_STRING
    if name in _TYPED:
        return _TYPED[name] if enum is None else None
    pat = PATTERNS.get(name)
    if pat is None:
        return None
    if enum is not None:
        # A required binding: only codes that also pass the primitive check.
        ok = sorted(c for c in enum if check(c) and re.search(pat, c))
        return Literal[tuple(ok)] if ok else None
    return Annotated[str, msgspec.Meta(pattern=pat)]


#: A ``string`` of a plain line (see :class:`LineDecoder`): every character is printable ASCII or a
#: space (a control character needs an escape, and there is no backslash), so any non-empty string
#: holds a character the reference's ``[ \r\n\t\S]`` finds: no pattern to run.
_PLAIN_STRING = Annotated[str, msgspec.Meta(min_length=1)]


# --------------------------------------------------------------------------- struct generation
_MODULE_NAME = "pipelines.fhir._fast_structs"
_mod = types.ModuleType(_MODULE_NAME)
sys.modules[_MODULE_NAME] = _mod
_TYPES = frozenset(v.RESOURCE_TYPES)


def _resource_in(raw: msgspec.Raw) -> Any:
    """A resource inside a resource (``contained`` ...), decoded by its own type's Struct.

    Such fields are decoded as ``msgspec.Raw`` first: one union over every resource type would
    build all ~140 types' Structs before the first line; this way a type is built when first met.
    """
    try:
        rtype = _type_only(raw).resourceType
        if rtype not in _TYPES:
            raise ValueError("not a resource type")
        return decoder(rtype).decode(bytes(raw))
    except msgspec.DecodeError as exc:  # (ValidationError included)
        raise ValueError("invalid resource inside a resource") from exc


def _post_init(
    groups: tuple[tuple[tuple[str, ...], bool], ...],
    resources: tuple[tuple[str, bool], ...],
    any_of: tuple[str, ...],
) -> Any:
    """``__post_init__`` enforcing choice-type exclusivity (and presence when required), the
    presence of one of ``any_of``, and decoding the resources inside (``resources``: attribute,
    is a list).

    Generated as straight-line code (no loop, no getattr): it runs for every resource.
    """
    lines = ["def __post_init__(self):"]
    if any_of:
        absent = " and ".join(f"self.{k} is U" for k in any_of)
        lines += [f"    if {absent}:", "        raise ValueError('empty')"]
    for keys, required in groups:
        count = " + ".join(f"(self.{k} is not U)" for k in keys) or "0"
        cond = "n > 1 or n == 0" if required else "n > 1"
        lines += [f"    n = {count}", f"    if {cond}:", "        raise ValueError('choice group')"]
    for attr, is_list in resources:
        # The decoded Structs replace the raw text: sql_safe re-encodes them (duplicate keys).
        decoded = f"[R(x) for x in self.{attr}]" if is_list else f"R(self.{attr})"
        lines += [f"    if self.{attr} is not U:", f"        self.{attr} = {decoded}"]
    ns: dict[str, Any] = {"U": msgspec.UNSET, "R": _resource_in}
    exec("\n".join(lines), ns)  # noqa: S102 - code built from model field names only
    return ns["__post_init__"]


def _attr(key: str) -> str:
    """The Struct attribute of a JSON key (which stays the field's name in JSON)."""
    if key.startswith("_"):
        return key[1:] + "__ext"  # ``_birthDate``: msgspec keeps leading underscores private
    # Python keywords clash ("class": Encounter.class).
    return key + "_" if keyword.iskeyword(key) else key


@cache
def _struct(type_name: str, plain: bool) -> str:
    """Name (in the generated module) of the Struct for ``type_name`` (built on first use);
    ``plain``: the variant for plain lines (:class:`LineDecoder`)."""
    cname = type_name + ("__plain" if plain else "")
    if hasattr(_mod, cname):
        return cname
    setattr(_mod, cname, None)  # placeholder: recursion through Extension etc. resolves lazily
    spec = v.type_spec(type_name)
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    renames: dict[str, str] = {}
    choice_groups = []
    resources = []
    for key, el in spec.elements.items():
        check = el.check
        if check is None:
            continue  # not modelled: if present, the line is left to the reference
        if type(check) is v.LazyType:
            tp: Any = _struct(check.name, plain)
        elif getattr(check, "__name__", "") == "_p_resource":
            tp = msgspec.Raw
            resources.append((_attr(key), el.is_list))
        else:
            tp = _primitive_type(check, el.enum, plain)
            if tp is None:
                continue
        if el.nulls:
            tp = Union[tp, None]  # noqa: UP007
        if el.is_list:
            # typing.List, not list[...]: it turns the struct names into resolvable forward refs.
            tp = Annotated[typing.List[tp], msgspec.Meta(min_length=1)]  # noqa: UP006
        attr = _attr(key)
        if attr != key:
            renames[attr] = key
        # The platform needs an id: a resource without one takes the reference path.
        if key in spec.required or (key == "id" and type_name in v.RESOURCE_TYPES):
            fields.append((attr, tp))
        else:
            fields.append((attr, Union[tp, msgspec.UnsetType], msgspec.UNSET))  # noqa: UP007
    for keys, req in spec.choice_groups.values():
        present = tuple(_attr(k) for k in keys if any(f[0] == _attr(k) for f in fields))
        if len(present) > 1 or req:
            choice_groups.append((present, req))
    ns: dict[str, Any] = {}
    if choice_groups or resources or spec.any_of:
        any_of = tuple(_attr(k) for k in spec.any_of)
        ns["__post_init__"] = _post_init(tuple(choice_groups), tuple(resources), any_of)
    kwargs: dict[str, Any] = {}
    if type_name in v.RESOURCE_TYPES:
        kwargs.update(tag_field="resourceType", tag=type_name)
    cls = msgspec.defstruct(
        cname,
        fields,
        kw_only=True,
        forbid_unknown_fields=True,
        omit_defaults=True,
        gc=False,
        module=_MODULE_NAME,
        namespace=ns,
        rename=renames or None,
        **kwargs,
    )
    setattr(_mod, cname, cls)
    return cname


def _resolve(name: str) -> Any:
    return getattr(_mod, name)


class LineDecoder:
    """Decodes (validates) the lines of one resource type.

    Most lines are *plain*: ASCII, and without a backslash (so without escapes). Their strings can
    hold nothing but printable ASCII and spaces, which the reference accepts whenever the string
    is not empty: they are decoded by Structs whose strings carry a length, not a pattern (the
    pattern calls are the larger part of the decoding time: 12.4 -> 10.4 µs a resource on real
    shapes). Two C scans tell a plain line; every other line takes the Structs with the patterns.
    """

    __slots__ = ("_checked", "_plain")

    def __init__(self, rtype: str) -> None:
        self._checked = msgspec.json.Decoder(_resolve(_struct(rtype, False))).decode
        self._plain = msgspec.json.Decoder(_resolve(_struct(rtype, True))).decode

    def decode(self, line: bytes) -> Any:
        if line.isascii() and b"\\" not in line:
            return self._plain(line)
        return self._checked(line)


@cache
def decoder(expected: str) -> LineDecoder:
    """The decoder of one resource type's lines (a Bulk Data file), its Structs built on first use."""
    return LineDecoder(expected)


class _TypeOnly(msgspec.Struct):
    """Just the ``resourceType`` of a line (other keys skipped): picks the decoder of a line whose
    type no file name tells. (One union over all ~140 types would build every type's Structs.)"""

    resourceType: str  # noqa: N815 - the JSON name


_type_only = msgspec.json.Decoder(_TypeOnly).decode


_ENCODE = msgspec.json.Encoder().encode


def sql_safe(line: bytes, struct: Any) -> bool:
    """True if the line certainly has no duplicate object keys (so DuckDB, which keeps the first
    of two equal keys, reads the same resource as the validator, which keeps the last).

    Re-encoding the decoded Struct changes only key order, whitespace, number formatting and
    escapes; none of these changes the number of quote characters as long as the line has no
    ``\\u`` escape (an escaped quote ``\\"`` is re-encoded as one, but ``\\u0022`` would add a
    quote). Every duplicate key removes at least two quotes. So, without ``\\u``, equal quote
    counts prove there is no duplicate key. (Real narratives are full of ``\\"``: XHTML attributes.)
    """
    if b"\\" in line and b"\\u" in line:  # (the first scan is ~4x faster and usually decides)
        return False
    return line.count(b'"') == _ENCODE(struct).count(b'"')


def fast_decode(line: bytes | str, expected: str | None) -> Any:
    """The validated Struct if the line is certainly a valid resource (of ``expected``), else None."""
    if isinstance(line, str):
        try:
            line = line.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: not valid UTF-8 text
            return None
    try:
        if expected is None:
            expected = _type_only(line).resourceType
            if expected not in _TYPES:
                return None
        return decoder(expected).decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return None


# --------------------------------------------------------------------------- terminology on Structs
_CODED = {
    "Condition": "code",
    "Observation": "code",
    "Procedure": "code",
    "MedicationRequest": "medicationCodeableConcept",
}
#: The types :func:`struct_unknown_code_paths` checks (it finds nothing in any other).
CODED_TYPES = frozenset(_CODED)


def struct_unknown_code_paths(rtype: str, s: Any, lists: dict[str, frozenset[str]]) -> list[str]:
    """Same result as :func:`pipelines.fhir.terminology.unknown_code_paths`, on a validated Struct."""
    key = _CODED.get(rtype)
    if key is None:
        return []
    cc = getattr(s, key, msgspec.UNSET)
    if cc is msgspec.UNSET:
        return []
    codings = cc.coding
    if codings is msgspec.UNSET:
        return []
    out = []
    for i, c in enumerate(codings):
        known = lists.get(c.system) if c.system is not msgspec.UNSET else None  # no system: not checked
        if known is not None and (c.code if c.code is not msgspec.UNSET else None) not in known:
            out.append(f"{rtype}.{key}.coding[{i}]")
    return out
