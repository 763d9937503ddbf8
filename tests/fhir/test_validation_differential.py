"""Differential test: the fast structural path decides exactly like the reference validator.

Reference = ``fhir.resources.R4B.<Type>.model_validate_json`` plus the required-binding codes the
R4B models declare (see pipelines/fhir/validation.py). ``validate_resource`` asks the reference
whenever the fast path is not certain, so both agree on every resource iff the law
"fast-accept => reference-accept" holds; the tests check the law and the end-to-end agreement
over valid resources and many mutations of them, and that both outcomes really occur.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import fhir_factory as factory
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.fhir.validation import (
    RESOURCE_TYPES,
    code_issues,
    fast_accept,
    reference_issues,
    validate_resource,
)
from synthetic_data.fhir_real import iter_real_resources

_SAMPLES = factory.rich_samples()


def real_shapes() -> list[dict[str, Any]]:
    """One resource of each type a real (Synthea-style) export has: narratives, conditional and
    logical references, extensions, base64 attachments, a contained resource."""
    firsts: dict[tuple[str, bool], dict[str, Any]] = {}
    for r in iter_real_resources(3, patients=12, encounters=10, providers=3):
        firsts.setdefault((r["resourceType"], "contained" in r), r)
    return list(firsts.values())


_REAL = real_shapes()

_ODD_VALUES: list[Any] = [
    "",
    " ",
    "  padded  ",
    "a b",
    "male ",
    "bogus",
    "x" * 70,
    "x" * 300,
    "1970-06",
    "1970-02-30",
    "2023-13-01",
    "0000",
    "2020-01-01T10:00:00",
    "2020-01-01T10:00:00Z",
    "2020-01-01T24:00:00+01:00",
    "10:61:00",
    "12:00:00",
    "urn:oid:1.2",
    "urn:uuid:53fefa32-fcbb-4ff8-8a92-55ee120877b7",
    "http://x y",
    "http://example.org/a",
    "Patient/p1",
    "Group/g1",
    "tab\there",
    "new\nline",
    "p1\n",
    "male\n",
    "1970-01-01\n",
    "urn:oid:1.2.3\n",
    "\u00e5\u00e4\u00f6",
    "true",
    "12",
    "1.5",
    0,
    1,
    -1,
    2**31,
    1.5,
    2.0,
    1e20,
    True,
    False,
    None,
    [],
    {},
    ["x"],
    [{}],
    {"a": 1},
]


def _reference_valid(res: dict[str, Any]) -> bool:
    if res.get("resourceType") not in RESOURCE_TYPES:
        return False
    raw = json.dumps(res)
    return not reference_issues(res["resourceType"], raw) and not code_issues(res)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append(prefix + (k,))
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append(prefix + (i,))
            out.extend(_paths(v, prefix + (i,)))
    return out


def _parent(root: Any, path: tuple) -> Any:
    node = root
    for p in path[:-1]:
        node = node[p]
    return node


def mutate(res: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One or two random structural or value mutations."""
    res = copy.deepcopy(res)
    for _ in range(rng.choice((1, 1, 2))):
        paths = [p for p in _paths(res) if p != ("resourceType",)]
        if not paths:
            break
        path = rng.choice(paths)
        parent = _parent(res, path)
        key = path[-1]
        op = rng.randrange(8)
        if op == 0:  # delete
            if isinstance(parent, dict):
                del parent[key]
            else:
                parent.pop(key)
        elif op in (1, 2, 3):  # odd value
            parent[key] = copy.deepcopy(rng.choice(_ODD_VALUES))
        elif op == 4 and isinstance(parent, dict):  # unknown / extension / choice siblings
            parent[
                rng.choice(
                    (
                        "foo",
                        "_" + str(key),
                        "valueString",
                        "valueBoolean",
                        "resourceType",
                        "fhir_comments",
                        "extension",
                        "id",
                    )
                )
            ] = copy.deepcopy(rng.choice(_ODD_VALUES))
        elif op == 5:  # wrap / unwrap list
            v = parent[key]
            parent[key] = v[0] if isinstance(v, list) and v else [v]
        elif op == 6 and isinstance(parent, dict):  # empty container
            parent[key] = [] if isinstance(parent[key], list) else {}
        else:  # swap with a value from elsewhere in the resource
            other = rng.choice(paths)
            try:
                parent[key] = copy.deepcopy(_parent(res, other)[other[-1]])
            except (KeyError, IndexError, TypeError):
                pass
    return res


def test_valid_samples_take_the_fast_path_and_are_valid():
    for r in _SAMPLES:
        assert _reference_valid(r), r["resourceType"]
        assert fast_accept(r), r["resourceType"]


def test_differential_seeded_sweep():
    """2,000 mutants: the law holds, decisions agree, and the sweep is not one-sided."""
    rng = random.Random(20261122)
    fast_accepted = rejected = 0
    for _ in range(2000):
        res = mutate(rng.choice(_SAMPLES), rng)
        ref_ok = _reference_valid(res)
        if fast_accept(res):
            fast_accepted += 1
            assert ref_ok, f"fast path accepted a resource the reference rejects: {json.dumps(res)[:400]}"
        decided_ok = not validate_resource(res, json.dumps(res))
        assert decided_ok == ref_ok
        rejected += not ref_ok
    assert fast_accepted > 200 and rejected > 500, (fast_accepted, rejected)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(_SAMPLES) - 1), st.randoms(use_true_random=False))
def test_differential_property(index, rnd):
    res = mutate(_SAMPLES[index], rnd)
    ref_ok = _reference_valid(res)
    if fast_accept(res):
        assert ref_ok
    assert (not validate_resource(res, json.dumps(res))) == ref_ok


def test_real_shapes_take_the_fast_path_and_are_valid():
    assert any("contained" in r for r in _REAL)
    for r in _REAL:
        assert _reference_valid(r), r["resourceType"]
        assert fast_accept(r), r["resourceType"]


def test_differential_seeded_sweep_on_real_shapes():
    """Mutants of real shapes: the law holds, decisions agree, and the sweep is not one-sided."""
    rng = random.Random(20261215)
    fast_accepted = rejected = 0
    for _ in range(1500):
        res = mutate(rng.choice(_REAL), rng)
        ref_ok = _reference_valid(res)
        if fast_accept(res):
            fast_accepted += 1
            assert ref_ok, f"fast path accepted a resource the reference rejects: {json.dumps(res)[:400]}"
        assert (not validate_resource(res, json.dumps(res))) == ref_ok
        rejected += not ref_ok
    assert fast_accepted > 150 and rejected > 300, (fast_accepted, rejected)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(_REAL) - 1), st.randoms(use_true_random=False))
def test_differential_property_on_real_shapes(index, rnd):
    res = mutate(_REAL[index], rnd)
    ref_ok = _reference_valid(res)
    if fast_accept(res):
        assert ref_ok
    assert (not validate_resource(res, json.dumps(res))) == ref_ok


@pytest.mark.parametrize(
    "mutation, path_part",
    [
        (lambda r: r.update(gender="bogus"), "Patient.gender"),
        (lambda r: r.update(birthDate="1970-02-30"), "Patient.birthDate"),
        (lambda r: r.update(foo=1), "Patient.foo"),
        (lambda r: r["name"][0].update(family=""), "Patient.name[0].family"),
    ],
)
def test_issues_name_the_path_and_never_the_value(mutation, path_part):
    r = factory.patient()
    mutation(r)
    issues = validate_resource(r, json.dumps(r))
    assert issues and any(path_part in str(i) for i in issues)
    text = " ".join(str(i) for i in issues)
    for value in ("bogus", "1970-02-30", "Testsson", "191212121212"):
        assert value not in text
