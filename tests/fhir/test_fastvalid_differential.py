"""Differential tests of the msgspec fast path (pipelines/fhir/fastvalid.py) against the reference.

The law: whatever the fast path accepts, the reference (``fhir.resources.R4B`` model_validate_json
plus the required-binding codes) accepts too. The fast path may refuse more (the reference then
decides), so the tests also check it is not vacuous: the generator's resources all take it.
Mutants target what the Structs model: nested datatypes, choice groups, dates, unknown elements
at depth, required-binding codes, empty containers, duplicate keys, escapes.
"""

from __future__ import annotations

import copy
import itertools
import json
import random
import re
from typing import Any

import fhir_factory as factory
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_validation_differential import _ODD_VALUES, _REAL, _paths, _reference_valid, mutate

from pipelines.fhir import fastvalid
from pipelines.fhir import validation as v
from synthetic_data.fhir import iter_fhir_resources

_SAMPLES = factory.rich_samples()


def _generated(n: int = 400) -> list[dict[str, Any]]:
    return list(itertools.islice(iter_fhir_resources(seed=3, persons=8, region="region_uppsala"), n))


_GENERATED = _generated()


def _fast(res: Any) -> bool:
    """Fast-path decision on the resource serialised compactly and with blanks: both must agree."""
    rtype = res.get("resourceType") if isinstance(res, dict) else None
    expected = rtype if rtype in v.RESOURCE_TYPES else "Patient"
    compact = json.dumps(res, ensure_ascii=False, separators=(",", ":")).encode()
    spaced = json.dumps(res, ensure_ascii=False).encode()
    a = fastvalid.fast_decode(compact, expected) is not None
    b = fastvalid.fast_decode(spaced, expected) is not None
    assert a == b, json.dumps(res)[:300]
    return a


def _check_law(res: Any) -> bool:
    accepted = _fast(res)
    if accepted:
        assert _reference_valid(res), (
            f"fast path accepted what the reference rejects: {json.dumps(res)[:500]}"
        )
    return accepted


def test_generated_and_sample_resources_take_the_fast_path():
    for r in _GENERATED + _SAMPLES:
        assert _reference_valid(r)
        assert _fast(r), r["resourceType"]
        line = json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode()
        assert fastvalid.sql_safe(line, fastvalid.fast_decode(line, r["resourceType"]))


# --------------------------------------------------------------------------- targeted mutants
_BAD_DATES = [
    "2023-02-29",
    "1900-02-29",
    "0000-01-01",
    "2023-13-01",
    "2023-00-10",
    "2023-04-31",
    "23-01-01",
    "2023-1-01",
    "2023-01-01T10:00:00",
    "2023-01-01T25:00:00Z",
    "2023-01-01T10:00Z",
    "2023-01-01T10:00:00+15:00",
    "\u0662\u0660\u0662\u0663",
    "2023-01-01 ",
    "2023-01-01\n",
]
_GOOD_DATES = ["2024-02-29", "2000-02-29", "1600-02-29", "2023", "2023-06", "2023-12-31"]
_GOOD_DATETIMES = ["2024-02-29T23:59:59Z", "2023-06-01T00:00:00.123456+14:00", "2023-06-01T00:00:00-03:30"]


def _objects(res: Any) -> list[tuple]:
    """Paths (from the root) of every JSON object in the resource, the root included."""
    out = [()]
    for p in _paths(res):
        node = res
        for k in p:
            node = node[k]
        if isinstance(node, dict):
            out.append(p)
    return out


def _at(res: Any, path: tuple) -> Any:
    for k in path:
        res = res[k]
    return res


def targeted_mutants(res: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def variant(fn) -> None:
        r = copy.deepcopy(res)
        fn(r)
        out.append(r)

    for path in _objects(res):
        # unknown elements, primitive extensions and wrong types at every depth
        variant(lambda r, p=path: _at(r, p).update(unknownElement="x"))
        variant(lambda r, p=path: _at(r, p).update(_id={"extension": []}))
        variant(lambda r, p=path: _at(r, p).update(id=1))
        variant(
            lambda r, p=path: _at(r, p).update(
                extension=[{"url": "http://e.org/x", "valueString": "a", "valueInteger": 1}]
            )
        )
        variant(lambda r, p=path: _at(r, p).update(extension=[{"url": "http://e.org/x", "valueString": " "}]))
        for key, value in list(_at(res, path).items()):
            if key == "resourceType":
                continue
            for odd in ({}, [], None, [value] if not isinstance(value, list) else value[0], 7, "", True):
                variant(lambda r, p=path, k=key, o=odd: _at(r, p).__setitem__(k, copy.deepcopy(o)))
            if isinstance(value, str):
                for d in (
                    _BAD_DATES + _GOOD_DATES + _GOOD_DATETIMES + ["bogus", "a  b", " a", "\u00e5", "\u3042"]
                ):
                    variant(lambda r, p=path, k=key, d=d: _at(r, p).__setitem__(k, d))
    # choice-type conflicts and missing required choices
    for key in list(res):
        for other in (
            "valueString",
            "valueBoolean",
            "effectiveInstant",
            "deceasedBoolean",
            "onsetString",
            "performedString",
            "medicationReference",
            "valueCoding",
        ):
            if key != other and key[:4] == other[:4]:
                variant(lambda r, o=other: r.update({o: True if o.endswith("Boolean") else "x"}))
    variant(lambda r: r.pop("medicationCodeableConcept", None))
    return out


def test_targeted_mutants_obey_the_law():
    accepted = rejected = 0
    for res in _SAMPLES:
        for m in targeted_mutants(res):
            if _check_law(m):
                accepted += 1
            else:
                rejected += 1
    assert accepted > 200 and rejected > 1000, (accepted, rejected)


def test_targeted_mutants_of_real_shapes_obey_the_law():
    """Narratives, conditional references, extensions, attachments, contained resources: every
    targeted mutant of a real shape (a seeded share of them: there are tens of thousands)."""
    rng = random.Random(1215)
    accepted = rejected = 0
    for res in _REAL:
        mutants = targeted_mutants(res)
        for m in rng.sample(mutants, min(len(mutants), 150)):
            if _check_law(m):
                accepted += 1
            else:
                rejected += 1
    assert accepted > 300 and rejected > 1000, (accepted, rejected)


def test_real_shapes_take_the_fast_path():
    for r in _REAL:
        line = json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode()
        assert _fast(r), r["resourceType"]
        assert fastvalid.sql_safe(line, fastvalid.fast_decode(line, r["resourceType"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(_REAL) - 1), st.randoms(use_true_random=False))
def test_differential_property_on_real_shapes(index, rnd):
    _check_law(mutate(_REAL[index], rnd))


def test_required_binding_codes_and_choice_groups_are_enforced():
    p = factory.patient()
    p["gender"] = "bogus"
    assert not _fast(p)
    o = factory.observation()
    o["valueString"] = "x"  # valueQuantity is there too
    assert not _fast(o)
    m = factory.medication_request()
    del m["medicationCodeableConcept"]  # medication[x] is required
    assert not _fast(m)
    e = factory.encounter()
    e["class"]["system"] = "not a uri"
    assert not _fast(e)


@pytest.mark.parametrize("date, ok", [(d, False) for d in _BAD_DATES] + [(d, True) for d in _GOOD_DATES])
def test_date_pattern_is_exact_on_calendar_dates(date, ok):
    p = factory.patient(birthDate=date)
    assert _fast(p) is ok
    if ok:
        assert _reference_valid(p)


@pytest.mark.parametrize(
    "line",
    [
        b'{"resourceType":"Patient","id":"a","gender":"male","gender":"female"}',
        b'{"resourceType":"Patient","id":"a","name":[{"family":"A","family":"B"}]}',
        b'{"resourceType":"Patient","id":"a","gender":"male","birthDate":"2000-01-01","gender":"male"}',
    ],
)
def test_duplicate_keys_are_never_sql_safe(line):
    s = fastvalid.fast_decode(line, "Patient")
    assert s is not None  # the validators keep the last value: valid
    assert not fastvalid.sql_safe(line, s)


def test_escapes_and_whitespace_are_not_sql_safe_unless_proven():
    line = b'{"resourceType":"Patient","id":"a","name":[{"family":"A\\u00e5"}]}'
    assert not fastvalid.sql_safe(line, fastvalid.fast_decode(line, "Patient"))
    spaced = b'{ "resourceType" : "Patient", "id" : "a", "gender" : "male" }'
    assert fastvalid.sql_safe(spaced, fastvalid.fast_decode(spaced, "Patient"))


@pytest.mark.parametrize(
    "line, safe",
    [
        # XHTML attributes in a narrative: escaped quotes re-encode as escaped quotes
        (
            b'{"resourceType":"Patient","id":"a","text":{"status":"generated","div":"<a href=\\"x\\">y</a>"}}',
            True,
        ),
        (b'{"resourceType":"Patient","id":"a","gender":"male","name":[{"family":"O\\"B"}]}', True),
        (
            b'{"resourceType":"Patient","id":"a","gender":"male","gender":"male","name":[{"family":"\\"\\""}]}',
            False,
        ),
        # \u0022 decodes to a quote the encoder writes back: it could hide a duplicate key
        (
            b'{"resourceType":"Patient","id":"a","gender":"male","gender":"male","name":[{"family":"\\u0022"}]}',
            False,
        ),
        (b'{"resourceType":"Patient","id":"a","name":[{"family":"\\u0022"}]}', False),
    ],
)
def test_escaped_quotes_are_sql_safe_unicode_escapes_are_not(line, safe):
    s = fastvalid.fast_decode(line, "Patient")
    assert s is not None
    assert fastvalid.sql_safe(line, s) is safe


def test_differential_seeded_sweep_on_generated_resources():
    rng = random.Random(8)
    accepted = 0
    for _ in range(1500):
        if _check_law(mutate(rng.choice(_GENERATED), rng)):
            accepted += 1
    assert accepted > 150


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(_SAMPLES) - 1), st.randoms(use_true_random=False))
def test_differential_property(index, rnd):
    _check_law(mutate(_SAMPLES[index], rnd))


# --------------------------------------------------------------------------- plain lines
@settings(max_examples=400, deadline=None)
@given(st.text(max_size=12), st.sampled_from(["family", "text"]), st.booleans())
def test_plain_and_checked_lines_obey_the_law_on_any_string(text, key, ascii_only):
    """Strings of any characters, written raw or as escapes: a line decoded by the plain Structs
    (ASCII, no backslash) or by the checked ones is never fast-accepted unless the reference
    accepts it."""
    p = factory.patient()
    p["name"][0][key] = text
    line = json.dumps(p, ensure_ascii=ascii_only, separators=(",", ":")).encode()
    if fastvalid.fast_decode(line, "Patient") is not None:
        assert _reference_valid(p), repr(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8))
def test_plain_strings_decide_as_the_checked_ones(text):
    """On a plain line both Struct variants decide alike (the plain one only skips the pattern)."""
    p = factory.patient()
    p["name"][0]["family"] = text
    line = json.dumps(p, separators=(",", ":")).encode()
    if b"\\" in line:
        return  # not a plain line
    dec = fastvalid.decoder("Patient")
    outcomes = []
    for variant in (dec._plain, dec._checked):
        try:
            variant(line)
            outcomes.append(True)
        except msgspec.ValidationError:
            outcomes.append(False)
    assert outcomes[0] == outcomes[1] == (text != "")


# --------------------------------------------------------------------------- primitives
_CHECKS = {name: getattr(v, name) for name in fastvalid.PATTERNS}


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(sorted(fastvalid.PATTERNS)),
    st.one_of(
        st.text(max_size=40),
        st.sampled_from(
            [x for x in _ODD_VALUES if isinstance(x, str)] + _BAD_DATES + _GOOD_DATES + _GOOD_DATETIMES
        ),
    ),
)
def test_every_pattern_is_at_least_as_strict_as_the_checked_primitive(name, text):
    """A string the fast path's pattern admits also passes the differential-tested Python check."""
    if re.search(fastvalid.PATTERNS[name], text):
        assert _CHECKS[name](text), (name, text)


@settings(max_examples=300, deadline=None)
@given(st.dates(), st.sampled_from(["_p_date", "_p_datetime"]))
def test_every_calendar_date_matches(d, name):
    assert re.search(fastvalid.PATTERNS[name], d.isoformat())
