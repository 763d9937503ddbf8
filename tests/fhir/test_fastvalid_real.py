"""The fast path on real shapes: real generator output (Synthea bulk exports) and the project's
real-shaped generator (:mod:`synthetic_data.fhir_real`), against the reference validator.

The real sample (a Synthea bulk export, e.g. a branch of the public
smart-on-fhir/sample-bulk-fhir-datasets) is read from the first of: ``$HDP_SYNTHEA_SAMPLE``,
``../shared/testdata/synthea-bulk/`` (beside the repository), see ``real_shapes.sample_dir``; its
tests are skipped when neither exists. Third-party data is read from there, never committed here.

The laws, line by line: the msgspec fast path accepts a line iff the reference (``fhir.resources``
R4B ``model_validate_json`` plus required-binding codes) accepts it; the Python fast path never
accepts what the reference rejects; and mutants of real shapes (a required element dropped, a bad
code, a wrong primitive, two values of one choice, a bad narrative, a bad reference, a bad
attachment, a bad contained resource, a bad ``_element``) never pass the fast path unless the
reference accepts them too.
"""

from __future__ import annotations

import copy
import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import msgspec
import pytest
from real_shapes import sample_dir, sample_files

from pipelines.fhir import fastvalid
from pipelines.fhir import validation as v
from synthetic_data.fhir_real import iter_real_resources

SAMPLE = sample_dir()
needs_sample = pytest.mark.skipif(SAMPLE is None, reason="the real Synthea sample is not present")


def real_lines() -> list[tuple[str, bytes]]:
    """(file's resource type, line) of every non-blank line of the real sample."""
    assert SAMPLE is not None
    out = []
    for rtype, path in sample_files(SAMPLE):
        out.extend((rtype, line) for line in path.read_bytes().splitlines() if line.strip())
    return out


def reference_accepts(rtype: str, line: bytes) -> bool:
    obj = json.loads(line)
    return (
        type(obj) is dict
        and obj.get("resourceType") == rtype
        and not (v.reference_issues(rtype, line) or v.code_issues(obj))
    )


def fast_accepts(rtype: str, line: bytes) -> bool:
    return fastvalid.fast_decode(line, rtype) is not None


def generated(n: int, seed: int = 11) -> list[dict[str, Any]]:
    return list(islice(iter_real_resources(seed, patients=10, encounters=12, providers=4), n))


def _encode(res: Any) -> bytes:
    return json.dumps(res, ensure_ascii=False, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- resource types
def test_resource_types_are_every_concrete_r4b_resource():
    """The file scan of ``_r4b_resource_types`` agrees with the imported models' class tree."""
    from fhir.resources.R4B import fhirtypes
    from fhir.resources.R4B.resource import Resource

    classes = {
        getattr(fhirtypes, n).get_model_klass()
        for n in dir(fhirtypes)
        if n.endswith("Type") and hasattr(getattr(fhirtypes, n), "get_model_klass")
    }
    concrete = {c.__name__ for c in classes if issubclass(c, Resource)} - {
        "Resource",
        "DomainResource",
        "Bundle",
    }
    assert set(v.RESOURCE_TYPES) == concrete
    assert type(v.RESOURCE_TYPES) is tuple and len(v.RESOURCE_TYPES) == len(concrete) > 130
    assert {"AllergyIntolerance", "Immunization", "DocumentReference", "PractitionerRole"} <= concrete


def test_every_element_of_the_real_types_is_modelled():
    """No element of the types a real export carries (and of every type they contain) is left out
    of the fast path's schema: an element it does not model sends its whole line to the reference."""
    from synthetic_data.fhir_real import RESOURCE_TYPES as REAL_TYPES

    seen: set[str] = set()
    todo = list(REAL_TYPES)
    unmodelled = []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for key, el in v.type_spec(name).elements.items():
            if el.check is None:
                unmodelled.append(f"{name}.{key}")
            elif type(el.check) is v.LazyType:
                todo.append(el.check.name)
    assert unmodelled == []
    assert {"Extension", "Narrative", "Attachment", "SampledData", "Timing", "FHIRPrimitiveExtension"} <= seen
    # ... and each is a field of the Structs (both variants), under its JSON name.
    for name in REAL_TYPES:
        fastvalid.decoder(name)
    for name in seen:
        for variant in (name, name + "__plain"):
            struct = getattr(fastvalid._mod, variant)
            assert {f.encode_name for f in msgspec.structs.fields(struct)} == set(v.type_spec(name).elements)


# --------------------------------------------------------------------------- the real sample
@needs_sample
def test_real_sample_fast_path_agrees_with_the_reference_line_by_line():
    lines = real_lines()
    types = Counter(rtype for rtype, _ in lines)
    assert "Patient" in types and len(types) >= 5, types  # a bulk export: patients and their records
    disagree = []
    fast_n = 0
    for rtype, line in lines:
        ref = reference_accepts(rtype, line)
        fast = fast_accepts(rtype, line)
        fast_n += fast
        if fast != ref:
            disagree.append((rtype, fast, ref))
        if v.fast_accept(json.loads(line)):
            assert ref, rtype
    assert not disagree, Counter(disagree)
    assert fast_n / len(lines) >= 0.99, (fast_n, len(lines))


@needs_sample
def test_real_sample_is_all_valid_and_all_fast():
    """What the real generator writes is valid FHIR, and the fast path takes every line of it."""
    declined = Counter(rtype for rtype, line in real_lines() if not fast_accepts(rtype, line))
    assert not declined, declined


# --------------------------------------------------------------------------- the real-shaped generator
def test_generated_real_shapes_are_valid_and_take_the_fast_path():
    resources = generated(1500)
    types = Counter(r["resourceType"] for r in resources)
    assert len(types) >= 20, types
    for r in resources:
        line = _encode(r)
        assert fast_accepts(r["resourceType"], line), r["resourceType"]
        assert fastvalid.sql_safe(line, fastvalid.fast_decode(line, r["resourceType"]))
        assert v.fast_accept(r), r["resourceType"]
    # The reference on a slice of every type (it is the slow side).
    seen: Counter[str] = Counter()
    for r in resources:
        if seen[r["resourceType"]] < 15:
            seen[r["resourceType"]] += 1
            assert reference_accepts(r["resourceType"], _encode(r)), r["resourceType"]


# --------------------------------------------------------------------------- mutants of real shapes
Slot = tuple[Any, Any, v.ElementSpec, v.TypeSpec]  # (container, key or index, element, owner type)


def slots(obj: Any, spec: v.TypeSpec) -> Iterator[Slot]:
    """Every element of a resource with its schema, depth first (contained resources included)."""
    if type(obj) is not dict:
        return
    for key, value in list(obj.items()):
        el = spec.elements.get(key)
        if el is None:
            continue
        yield obj, key, el, spec
        items = value if type(value) is list else [value]
        for it in items:
            if type(el.check) is v.LazyType:
                yield from slots(it, el.check.spec)
            elif getattr(el.check, "__name__", "") == "_p_resource" and type(it) is dict:
                rt = it.get("resourceType")
                if rt in v.RESOURCE_TYPES:
                    yield from slots(it, v.type_spec(rt))


_WRONG_PRIMITIVES: list[Any] = [7, 1.5, True, "", " ", "x\ny", None, [], {}, ["x"], "bogus"]
_OTHER_CHOICE = {
    "String": "x",
    "Boolean": True,
    "Integer": 3,
    "DateTime": "2020-01-01",
    "Quantity": {"value": 1},
}


def real_mutants(res: dict[str, Any], rng: random.Random, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` mutants of one resource, each with one targeted defect."""
    rtype = res["resourceType"]
    spec = v.type_spec(rtype)
    edits: list[Callable[[dict[str, Any]], None]] = []

    def at(path: list[Any]) -> Callable[[dict[str, Any]], Any]:
        def get(root: dict[str, Any]) -> Any:
            node: Any = root
            for p in path:
                node = node[p]
            return node

        return get

    # Paths to every dict in the resource, to address the slots of a deep copy.
    def walk(node: Any, path: list[Any]) -> Iterator[tuple[list[Any], Any]]:
        if type(node) is dict:
            yield path, node
            for k, val in node.items():
                yield from walk(val, [*path, k])
        elif type(node) is list:
            for i, val in enumerate(node):
                yield from walk(val, [*path, i])

    owners = {id(node): path for path, node in walk(res, [])}
    for container, key, el, owner in slots(res, spec):
        get = at(owners[id(container)])

        def put(value: Any, get: Any = get, key: Any = key) -> Callable[[dict[str, Any]], None]:
            return lambda r: get(r).__setitem__(key, copy.deepcopy(value))

        if key in owner.required:
            edits.append(lambda r, get=get, key=key: get(r).pop(key))  # drop a required element
        if el.enum is not None:
            edits.append(put(["bogus"] if el.is_list else "bogus"))  # a code outside the binding
        name = getattr(el.check, "__name__", "")
        if name.startswith("_p_"):
            for odd in rng.sample(_WRONG_PRIMITIVES, 3):
                edits.append(put(odd))  # a wrong primitive
        if key == "div":
            for odd in (1, None, [], {"div": "x"}, "", "<p>not xhtml"):
                edits.append(put(odd))  # narrative content
        if key == "reference":
            for odd in ("", " ", 1, {"reference": "Patient/1"}, "Practitioner?identifier=x|1", "urn:uuid:x"):
                edits.append(put(odd))
        if key == "data":
            for odd in ("abc", "@@@@", "YWJj\n", "", 1):
                edits.append(put(odd))  # attachment data (base64Binary)
        group = owner.element_of_key.get(key)
        if group is not None:
            others = [
                k for k in owner.choice_groups[group][0] if k != key and k[len(group) :] in _OTHER_CHOICE
            ]
            for other in others[:2]:
                value = _OTHER_CHOICE[other[len(group) :]]
                edits.append(lambda r, get=get, other=other, value=value: get(r).__setitem__(other, value))
        if not name.startswith("_p_") and type(el.check) is v.LazyType:
            edits.append(lambda r, get=get, key=key: get(r).__setitem__("_" + str(key), {"extension": []}))
    for odd_contained in (
        {"resourceType": "Medication", "id": "m", "status": "bogus"},
        {"resourceType": "Medication", "id": "m", "foo": 1},
        {"resourceType": "Medication", "id": "m", "status": "active"},
        {"resourceType": "Bundle", "id": "b", "type": "collection"},
        {"id": "m"},
        {"resourceType": "Nope", "id": "m"},
    ):
        edits.append(lambda r, c=odd_contained: r.__setitem__("contained", [copy.deepcopy(c)]))
    for odd_ext in ({}, {"extension": [{"url": "http://e.org/x", "valueString": "a"}]}, [{}], {"foo": 1}):
        edits.append(lambda r, e=odd_ext: r.__setitem__("_id" if rng.random() < 0.5 else "_language", e))
    edits.append(
        lambda r: r.setdefault("modifierExtension", []).append({"url": "http://e.org/m", "valueCode": "x"})
    )
    rng.shuffle(edits)
    out = []
    for edit in edits[:limit]:
        m = copy.deepcopy(res)
        edit(m)
        out.append(m)
    return out


def _law(res: dict[str, Any]) -> tuple[bool, bool]:
    rtype = res["resourceType"]
    line = _encode(res)
    ref = reference_accepts(rtype, line)
    fast = fast_accepts(rtype, line)
    assert not fast or ref, f"fast path accepted what the reference rejects: {line[:400]!r}"
    assert not v.fast_accept(res) or ref, (
        f"Python fast path accepted what the reference rejects: {line[:400]!r}"
    )
    return fast, ref


def _one_of_each_type(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    firsts: dict[str, dict[str, Any]] = {}
    for r in resources:
        firsts.setdefault(r["resourceType"], r)
    return list(firsts.values())


def test_mutants_of_generated_real_shapes_obey_the_law():
    rng = random.Random(15)
    outcomes: Counter[tuple[bool, bool]] = Counter()
    for res in _one_of_each_type(generated(1500)):
        for m in real_mutants(res, rng, 60):
            outcomes[_law(m)] += 1
    # Not one-sided: fast accepts, fast declines what the reference accepts, both reject.
    assert outcomes[(True, True)] > 100 and outcomes[(False, False)] > 500, outcomes


@needs_sample
def test_mutants_of_the_real_sample_obey_the_law():
    rng = random.Random(16)
    outcomes: Counter[tuple[bool, bool]] = Counter()
    by_type: dict[str, list[dict[str, Any]]] = {}
    for rtype, line in real_lines():
        by_type.setdefault(rtype, []).append(json.loads(line))
    for _rtype, resources in sorted(by_type.items()):
        for res in rng.sample(resources, min(4, len(resources))):
            for m in real_mutants(res, rng, 60):
                outcomes[_law(m)] += 1
    assert outcomes[(True, True)] > 200 and outcomes[(False, False)] > 1000, outcomes


@pytest.mark.parametrize(
    "edit, reference_ok, fast_ok",
    [
        (lambda p: p["text"].update(div=""), True, True),  # the reference checks no XHTML at all
        (lambda p: p["text"].update(div="plain text"), True, True),
        (lambda p: p["text"].pop("div"), False, False),
        (lambda p: p["text"].update(div=7), False, False),
        (lambda p: p["extension"][0]["extension"][0].update(url="ombCategory"), True, True),
        (
            lambda p: p.update(generalPractitioner=[{"reference": "Practitioner?identifier=http://x|1"}]),
            True,
            True,
        ),
        (
            lambda p: p.update(generalPractitioner=[{"identifier": {"system": "http://x", "value": "1"}}]),
            True,
            True,
        ),
        (
            lambda p: p.update(
                generalPractitioner=[{"reference": "urn:uuid:53fefa32-fcbb-4ff8-8a92-55ee120877b7"}]
            ),
            True,
            True,
        ),
        (
            lambda p: p.update(generalPractitioner=[{"reference": "http://other.org/fhir/Practitioner/1"}]),
            True,
            True,
        ),
        (
            lambda p: p.update(generalPractitioner=[{"reference": "Group/1"}]),
            True,
            True,
        ),  # target types unchecked
        (lambda p: p.update(generalPractitioner=[{"reference": 1}]), False, False),
        (
            lambda p: p.update(_birthDate={"extension": [{"url": "http://e.org/x", "valueString": "a"}]}),
            True,
            True,
        ),
        # Empty arrays are valid for the reference; the fast path leaves them to it (declines).
        (lambda p: p.update(birthDate="2000-01-01", _birthDate={"extension": []}), True, False),
        (lambda p: p.update(_birthDate={}), False, False),
        (
            lambda p: p.update(contained=[{"resourceType": "Organization", "id": "o", "name": "x"}]),
            True,
            True,
        ),
        (
            lambda p: p.update(contained=[{"resourceType": "Organization", "id": "o", "active": "yes!"}]),
            False,
            False,
        ),
        (
            lambda p: p.update(contained=[{"resourceType": "Medication", "id": "m", "status": "bogus"}]),
            False,
            False,
        ),
        (lambda p: p["meta"].update(profile=[p["meta"]["profile"][0]] * 2), True, True),
        (lambda p: p.update(modifierExtension=[{"url": "http://e.org/m", "valueBoolean": True}]), True, True),
        (lambda p: p.update(photo=[{"contentType": "image/png", "data": "iVBORw0KGgo="}]), True, True),
        (lambda p: p.update(photo=[{"contentType": "image/png", "data": "iVBORw0KGgo"}]), False, False),
    ],
)
def test_real_shapes_decided_as_the_reference_decides(edit, reference_ok, fast_ok):
    patient = next(r for r in generated(400) if r["resourceType"] == "Patient")
    edit(patient)
    fast, ref = _law(patient)
    assert ref is reference_ok
    assert fast is fast_ok
