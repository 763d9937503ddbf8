"""The fast path on real generator output (Synthea bulk exports, tests/fixtures/synthea-bulk/).

Every resource type of the reference's R4B models is ingested (``validation.RESOURCE_TYPES``).
"""

from __future__ import annotations

from pipelines.fhir import validation as v


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
