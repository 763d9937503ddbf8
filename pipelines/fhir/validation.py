"""Validation of FHIR R4 resources: exact like the reference, fast where it can be.

**Reference.** ``fhir.resources`` 8.x is R5 at its top level; the team's reference for R4
is its ``fhir.resources.R4B`` package (R4B keeps R4's resources and adds a few). Every concrete
resource type of it is ingested (:data:`RESOURCE_TYPES`). A resource is
valid when ``R4B.<Type>.model_validate_json`` accepts it **and** every coded element
with a required binding holds one of the codes the R4B model itself declares
(``enum_values`` in the field metadata), contained resources included. fhir.resources 8.3
declares those codes but does not enforce them (it accepts ``gender: "bogus"``); a bad code
must still reach quarantine (ARCHITECTURE.md: defect ``fhir.invalid``), so the one rule is
added from the reference's own metadata. Value sets marked open (``"+"``) are not checked.

What the reference does *not* check, and so neither path may refuse for: the target of a
``Reference.reference`` (any string: ``Type/id``, conditional ``Type?identifier=s|v``, absolute
URLs, ``urn:uuid:``, ``#contained``; the target types in the metadata are documentation), the
content of ``Narrative.div`` (any string), the form of a ``uri`` / ``canonical`` (any string).

**Fast path.** :func:`fast_accept` walks the decoded resource against a schema derived
once from the same R4B models (element names, cardinality, primitive types, required
elements, choice groups, codes, ``_element`` primitive extensions, contained resources of any
type). It only ever *accepts*: whenever it is not certain (a string outside the formats of
:mod:`primitives`, ``null``, an empty array, lax JSON types the reference coerces such as
``"true"`` for a boolean ...), it answers "undecided" and the reference decides. Exactness therefore
rests on one law — fast-accept implies reference-accept — which
``tests/fhir/test_validation_differential.py`` checks over generated valid and mutated
resources.

Ingestion first tries :mod:`pipelines.fhir.fastvalid`, which turns the same schema into msgspec
Structs (validation at C speed while decoding); this module is what decides, and explains, every
line that path does not accept.

Issues carry an element path and a fixed reason phrase, never a value from the resource.
"""

from __future__ import annotations

import re
import typing
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any

from pipelines.fhir import primitives

__all__ = [
    "ElementSpec",
    "Issue",
    "LazyType",
    "RESOURCE_TYPES",
    "TypeSpec",
    "code_issues",
    "fast_accept",
    "reference_issues",
    "type_spec",
    "validate_resource",
]


def _r4b_resource_types() -> tuple[str, ...]:
    """Every concrete resource type of the reference's R4B models, read from the package's files.

    Importing the ~190 model modules to ask ``issubclass(cls, Resource)`` costs about two seconds;
    each model module declares its class as ``class X(domainresource.DomainResource)`` or
    ``class X(resource.Resource)`` near its top, so the first few kB of every file answer the same
    question in milliseconds, without importing pydantic (``tests/fhir/test_fastvalid_real.py``
    checks the two answers are equal). DomainResource itself is abstract; a Bundle is a container
    (ingestion unpacks its entries), never a resource of its own here.
    """
    import importlib.util
    import os

    spec = importlib.util.find_spec("fhir.resources")  # imports only the namespace package "fhir"
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("fhir.resources is not installed")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "R4B")
    declares = re.compile(
        rb"^class ([A-Z][A-Za-z]+)\((?:domainresource\.DomainResource|resource\.Resource)\):", re.M
    )
    found: set[str] = set()
    for name in os.listdir(folder):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), "rb") as f:
                found.update(m.decode() for m in declares.findall(f.read(8192)))
    return tuple(sorted(found - {"DomainResource", "Bundle"}))


#: Resource types this platform ingests: every FHIR R4 (R4B models) resource type.
RESOURCE_TYPES: tuple[str, ...] = _r4b_resource_types()
_RESOURCE_TYPE_SET = frozenset(RESOURCE_TYPES)


@dataclass(frozen=True)
class Issue:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


# --------------------------------------------------------------------------- primitive checks
# Each is deliberately at least as strict as fhir_core's type (proved by the differential
# test); anything they refuse goes to the reference validator, so strictness costs only time.
# The string formats are the FHIR primitive formats of :mod:`primitives` (shared with fastvalid).
_INT32 = (-2147483648, 2147483647)


def _p_string(v: Any) -> bool:
    return type(v) is str and primitives.STRING_RE.search(v) is not None


def _p_code(v: Any) -> bool:
    return type(v) is str and primitives.CODE_RE.match(v) is not None


def _p_id(v: Any) -> bool:
    return type(v) is str and primitives.ID_RE.match(v) is not None


def _p_uri(v: Any) -> bool:
    return type(v) is str and primitives.URI_RE.match(v) is not None


def _p_url(v: Any) -> bool:
    return type(v) is str and primitives.URL_RE.match(v) is not None


def _p_oid(v: Any) -> bool:
    return type(v) is str and primitives.OID_RE.match(v) is not None


def _p_uuid(v: Any) -> bool:
    return type(v) is str and primitives.UUID_RE.match(v) is not None


def _p_base64(v: Any) -> bool:
    return type(v) is str and primitives.BASE64_RE.match(v) is not None


def _p_xhtml(v: Any) -> bool:
    # Narrative.div: the reference's type (fhir_core ``Xhtml``) carries no constraint at all, so
    # any JSON string is what it accepts ("" and text that is not XHTML included).
    return type(v) is str


def _p_resource(v: Any) -> bool:
    """A resource inside a resource (``contained``, ``Parameters.parameter.resource``): any type."""
    return fast_accept(v)


def _p_bool(v: Any) -> bool:
    return type(v) is bool


def _p_decimal(v: Any) -> bool:
    return (type(v) is int and _INT32[0] <= v <= _INT32[1]) or (type(v) is float and v == v and abs(v) < 1e15)


def _p_integer(v: Any) -> bool:
    return type(v) is int and _INT32[0] <= v <= _INT32[1]


def _p_unsigned(v: Any) -> bool:
    return type(v) is int and 0 <= v <= _INT32[1]


def _p_positive(v: Any) -> bool:
    return type(v) is int and 1 <= v <= _INT32[1]


def _p_date(v: Any) -> bool:
    return type(v) is str and primitives.DATE_RE.match(v) is not None


def _p_datetime(v: Any) -> bool:
    return type(v) is str and primitives.DATE_TIME_RE.match(v) is not None


def _p_instant(v: Any) -> bool:
    return type(v) is str and primitives.INSTANT_RE.match(v) is not None


def _p_time(v: Any) -> bool:
    return type(v) is str and primitives.TIME_RE.match(v) is not None


_PRIMITIVE_CHECKS = {
    "String": _p_string,
    "Markdown": _p_string,
    "Code": _p_code,
    "Id": _p_id,
    "Uri": _p_uri,
    "Url": _p_url,
    "Canonical": _p_uri,  # fhir_core's Canonical is its Uri (any string), not its Url
    "Oid": _p_oid,
    "Uuid": _p_uuid,
    "Decimal": _p_decimal,
    "Integer": _p_integer,
    "UnsignedInt": _p_unsigned,
    "PositiveInt": _p_positive,
    "Date": _p_date,
    "DateTime": _p_datetime,
    "Instant": _p_instant,
    "Time": _p_time,
    "Xhtml": _p_xhtml,
    "EncodedBytes": _p_base64,  # pydantic's Base64Bytes (checked to be base64 in _primitive_check)
    "UuidVersion": _p_uuid,  # pydantic's UUID4 (checked to be version 4 in _primitive_check)
}


def _never(v: Any) -> bool:
    return False


# --------------------------------------------------------------------------- schema from the models
@dataclass
class ElementSpec:
    """One element of a type, as the fast paths and the SQL compiler see it."""

    key: str
    is_list: bool
    check: Any  # a primitive check function, a LazyType, or None (always undecided)
    enum: frozenset[str] | None
    #: Items of the list may be null: the ``_element`` list of a repeating primitive, whose nulls
    #: line its extensions up with the values.
    nulls: bool = False


@dataclass
class TypeSpec:
    """A FHIR type (resource or datatype) derived from its R4B model: its elements and their rules."""

    name: str
    elements: dict[str, ElementSpec]
    required: tuple[str, ...]
    choice_groups: dict[str, tuple[tuple[str, ...], bool]]  # group -> (keys, required)
    element_of_key: dict[str, str]  # json key -> choice group name (if any)
    any_of: tuple[str, ...] = ()  # at least one of these elements must be present


def _unwrap_annotation(ann: Any) -> tuple[bool, Any]:
    """(is_list, innermost annotation) of a field annotation."""
    is_list = False
    while True:
        origin = typing.get_origin(ann)
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(args) != 1:
                return is_list, None
            ann = args[0]
        elif origin in (list, typing.List):  # noqa: UP006 - the models use typing.List
            is_list = True
            ann = typing.get_args(ann)[0]
        else:
            return is_list, ann


def _model_class(name: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(name)


@cache
def type_spec(model_name: str) -> TypeSpec:
    """The schema of one R4B type (built once per process)."""
    spec = TypeSpec(model_name, {}, (), {}, {})
    _build(spec, _model_class(model_name))
    if model_name == "FHIRPrimitiveExtension":
        # The one rule of the R4B models kept in a model validator rather than in field metadata
        # (an ``_element`` object needs an id or extensions; ``{}`` is refused).
        spec.any_of = ("id", "extension")
    return spec


def _build(spec: TypeSpec, cls: Any) -> None:
    required: list[str] = []
    for fname, field in cls.model_fields.items():
        key = field.alias or fname
        if fname in ("fhir_comments", "resource_type"):
            continue
        if fname.endswith("__ext"):
            # ``_element``: the id and extensions of a primitive element (the reference checks no
            # pairing with the value: a required value may even be absent, ``_status`` alone).
            is_list, _ = _unwrap_annotation(field.annotation)
            spec.elements[key] = ElementSpec(key, is_list, _PRIMITIVE_EXTENSION, None, nulls=is_list)
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        is_list, inner = _unwrap_annotation(field.annotation)
        check: Any = None
        if inner is bool:
            check = _p_bool
        elif typing.get_origin(inner) is typing.Annotated:
            check = _primitive_check(typing.get_args(inner))
        elif isinstance(inner, type) and hasattr(inner, "get_model_klass"):
            tname = inner.get_model_klass().__name__
            # A field typed Resource takes a resource of any type, chosen by its resourceType.
            check = _p_resource if tname == "Resource" else LazyType(tname)
        enum_values = extra.get("enum_values")
        enum = frozenset(enum_values) if enum_values and "+" not in enum_values else None
        # (``enum_reference_types``, a Reference's target types, is documentation only: the
        # reference accepts any string as ``Reference.reference``, conditional, logical, absolute
        # and ``urn:uuid:`` references included, whatever type they name.)
        spec.elements[key] = ElementSpec(key, is_list, check, enum)
        if field.is_required() or extra.get("element_required"):
            required.append(key)
        group = extra.get("one_of_many")
        if group:
            keys, req = spec.choice_groups.get(group, ((), False))
            spec.choice_groups[group] = (keys + (key,), req or bool(extra.get("one_of_many_required")))
            spec.element_of_key[key] = group
    spec.required = tuple(required)


def _primitive_check(annotated_args: tuple[Any, ...]) -> Any:
    """The check of a primitive field ``Annotated[base, *metadata]`` (None: not modelled)."""
    base, *meta = annotated_args
    for m in meta:
        name = m.__name__ if isinstance(m, type) else type(m).__name__
        if name == "EncodedBytes" and getattr(m.encoder, "__name__", "") != "Base64Encoder":
            continue
        if name == "UuidVersion" and (base is not uuid.UUID or m.uuid_version != 4):
            continue
        if name in _PRIMITIVE_CHECKS:
            return _PRIMITIVE_CHECKS[name]
    return None


class LazyType:
    """A complex type resolved on first use (types are recursive: Extension, Identifier ...)."""

    __slots__ = ("name", "_spec")

    def __init__(self, name: str) -> None:
        self.name = name
        self._spec: TypeSpec | None = None

    @property
    def spec(self) -> TypeSpec:
        if self._spec is None:
            self._spec = type_spec(self.name)
        return self._spec


_PRIMITIVE_EXTENSION = LazyType("FHIRPrimitiveExtension")


def _fast_complex(obj: Any, spec: TypeSpec) -> bool:
    if type(obj) is not dict or not obj:
        return False
    elements = spec.elements
    groups_seen: set[str] | None = None
    for key, value in obj.items():
        el = elements.get(key)
        if el is None:
            return False  # unknown element, "_x" extension, resourceType in a datatype ...
        check = el.check
        if check is None:
            return False
        items: list[Any] | tuple[Any]
        if el.is_list:
            if type(value) is not list or not value:
                return False
            items = value
        else:
            if type(value) is list:
                return False
            items = (value,)
        if type(check) is LazyType:
            sub = check.spec
            for it in items:
                if not _fast_complex(it, sub) and not (it is None and el.nulls):
                    return False
        else:
            enum = el.enum
            for it in items:
                if not check(it):
                    return False
                if enum is not None and it not in enum:
                    return False
        if key in spec.element_of_key:
            if groups_seen is None:
                groups_seen = set()
            g = spec.element_of_key[key]
            if g in groups_seen:
                return False
            groups_seen.add(g)
    for key in spec.required:
        if key not in obj:
            return False
    for g, (_keys, req) in spec.choice_groups.items():
        if req and (groups_seen is None or g not in groups_seen):
            return False
    if spec.any_of and not any(k in obj for k in spec.any_of):
        return False
    return True


def fast_accept(resource: Any) -> bool:
    """True only if the resource is certainly valid; False means "ask the reference"."""
    if type(resource) is not dict:
        return False
    rtype = resource.get("resourceType")
    if type(rtype) is not str or rtype not in _RESOURCE_TYPE_SET:
        return False
    body = {k: v for k, v in resource.items() if k != "resourceType"}
    return _fast_complex(body, type_spec(rtype))


# --------------------------------------------------------------------------- reference path
_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")

# Reason phrases by pydantic error type: fixed text, so no value can leak into `detail`.
_REASONS = {
    "missing": "required element missing",
    "model_field_validation.missing": "required element missing",
    "extra_forbidden": "unknown element",
    "string_type": "not a string",
    "string_pattern_mismatch": "does not match the type's pattern",
    "string_too_short": "empty string",
    "string_too_long": "too long",
    "list_type": "not an array",
    "dict_type": "not an object",
    "model_type": "not an object",
    "model_attributes_type": "not an object",
    "bool_type": "not a boolean",
    "bool_parsing": "not a boolean",
    "int_type": "not an integer",
    "int_parsing": "not an integer",
    "int_from_float": "not an integer",
    "decimal_type": "not a decimal",
    "decimal_parsing": "not a decimal",
    "less_than_equal": "out of range",
    "greater_than_equal": "out of range",
    "date_type": "not a valid date",
    "date_parsing": "not a valid date",
    "date_from_datetime_parsing": "not a valid date",
    "datetime_type": "not a valid dateTime",
    "datetime_parsing": "not a valid dateTime",
    "datetime_from_date_parsing": "not a valid dateTime",
    "time_type": "not a valid time",
    "time_parsing": "not a valid time",
    "json_invalid": "not valid JSON",
    "value_error": "invalid value (type rule or choice constraint)",
}


def _path(rtype: str, loc: tuple[Any, ...]) -> str:
    out = rtype
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and _SAFE_NAME.match(part):
            out += "." + part
        else:
            out += ".<element>"
    return out


def reference_issues(rtype: str, raw_json: bytes | str) -> list[Issue]:
    """Issues found by ``fhir.resources.R4B.<rtype>.model_validate_json``."""
    from pydantic import ValidationError

    try:
        cls = _model_class(rtype)
    except ValueError:
        return [Issue("resourceType", "not a supported resource type")]
    try:
        cls.model_validate_json(raw_json)
    except ValidationError as exc:
        issues = []
        for err in exc.errors(include_url=False, include_input=False, include_context=False):
            loc = tuple(p for p in err.get("loc", ()) if p not in ("function-after", "function-before"))
            etype = str(err.get("type", "invalid"))
            reason = _REASONS.get(etype, etype if _SAFE_NAME.match(etype.replace(".", "_")) else "invalid")
            issues.append(Issue(_path(rtype, loc), reason))
        return issues or [Issue(rtype, "invalid")]
    except (ValueError, TypeError, AttributeError, KeyError):
        # Some fhir.resources validators fail outside pydantic's error wrapping (e.g. a
        # primitive extension "_x" that is not an object): the reference did not accept it.
        return [Issue(rtype, "invalid structure (rejected by the reference model)")]
    return []


def code_issues(resource: Any) -> list[Issue]:
    """Codes outside a required binding's value set (the rule the reference declares but skips)."""
    rtype = resource.get("resourceType") if type(resource) is dict else None
    if type(rtype) is not str or rtype not in _RESOURCE_TYPE_SET:
        return []
    issues: list[Issue] = []
    _codes(resource, type_spec(rtype), rtype, issues)
    return issues


def _codes(obj: Any, spec: TypeSpec, path: str, issues: list[Issue]) -> None:
    if type(obj) is not dict:
        return
    for key, value in obj.items():
        el = spec.elements.get(key)
        if el is None or el.check is None:
            continue
        items = value if type(value) is list else [value]
        for i, it in enumerate(items):
            p = f"{path}.{key}" + (f"[{i}]" if el.is_list else "")
            if type(el.check) is LazyType:
                _codes(it, el.check.spec, p, issues)
            elif el.check is _p_resource:
                # A contained resource is part of the resource: its codes are checked alike.
                rtype = it.get("resourceType") if type(it) is dict else None
                if type(rtype) is str and rtype in _RESOURCE_TYPE_SET:
                    _codes(it, type_spec(rtype), p, issues)
            elif el.enum is not None and type(it) is str and it not in el.enum:
                issues.append(Issue(p, "not a permitted code"))


def validate_resource(resource: Any, raw_json: bytes | str) -> list[Issue]:
    """All issues of one decoded resource (``raw_json`` is the same resource as text)."""
    if fast_accept(resource):
        return []
    rtype = resource.get("resourceType") if type(resource) is dict else None
    if type(rtype) is not str or rtype not in _RESOURCE_TYPE_SET:
        return [Issue("resourceType", "not a supported resource type")]
    return reference_issues(rtype, raw_json) or code_issues(resource)
