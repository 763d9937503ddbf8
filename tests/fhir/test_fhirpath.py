"""FHIRPath subset: behaviour beyond what the conformance suite pins down."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.fhir.fhirpath import Env, FhirPathError, compile_path, unwrap
from pipelines.fhir.viewdef import ViewDefinitionError, compile_view


def ev(expr, resource):
    return [unwrap(x) for x in compile_path(expr)([resource], Env(resource))]


def test_reference_keys():
    r = {
        "resourceType": "Observation",
        "id": "o1",
        "subject": {"reference": "Patient/abc"},
        "encounter": {"reference": "http://x.se/fhir/Encounter/e1/_history/3"},
    }
    assert ev("subject.getReferenceKey()", r) == ["abc"]
    assert ev("subject.getReferenceKey(Patient)", r) == ["abc"]
    assert ev("subject.getReferenceKey(Group)", r) == []
    assert ev("encounter.getReferenceKey(Encounter)", r) == ["e1"]
    assert ev("getResourceKey()", r) == ["o1"]


def test_boundaries_and_arithmetic():
    r = {"resourceType": "Patient", "birthDate": "2024-02"}
    assert ev("birthDate.lowBoundary()", r) == ["2024-02-01"]
    assert ev("birthDate.highBoundary()", r) == ["2024-02-29"]
    assert ev("1.5 + 2 * 3", r) == [Decimal("7.5")]
    assert ev("7 div 2", r) == [3] and ev("7 mod 2", r) == [1]
    assert ev("(1 | 2 | 1).count()", r) == [2]
    assert ev("{}.exists()", r) == [False]


@pytest.mark.parametrize("bad", ["name.", "name..family", "where(", "'unterminated", "name[", "1 +"])
def test_parse_errors(bad):
    with pytest.raises(FhirPathError):
        compile_path(bad)


def test_view_requires_single_values_unless_collection():
    v = compile_view({"resource": "Patient", "select": [{"column": [{"name": "g", "path": "name.given"}]}]})
    with pytest.raises(ViewDefinitionError):
        list(v.evaluate([{"resourceType": "Patient", "name": [{"given": ["a", "b"]}]}]))


@given(st.lists(st.text(min_size=1, max_size=5), max_size=6), st.text(max_size=3))
def test_join_law(given_names, sep):
    """join() equals Python's str.join for every list of strings and separator."""
    r = {"resourceType": "Patient", "name": [{"given": given_names}]}
    lit = "'" + sep.replace("\\", "\\\\").replace("'", "\\'") + "'"
    assert ev(f"name.given.join({lit})", r) == [sep.join(given_names)]
