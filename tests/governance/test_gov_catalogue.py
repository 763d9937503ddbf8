"""schemas/variables.json stays generated from the research-zone contract."""

from __future__ import annotations

import json

import pytest

from governance.catalogue import (
    CATALOGUE_PATH,
    CatalogueError,
    generate_catalogue,
    load_catalogue,
    render,
    research_tables,
)


def test_variables_json_is_in_sync_with_architecture():
    assert CATALOGUE_PATH.read_text(encoding="utf-8") == render(generate_catalogue()), (
        "schemas/variables.json is out of date: run `python -m governance.catalogue`"
    )


def test_catalogue_content():
    cat = load_catalogue()
    assert cat["register_visit.hba1c_mmol_mol"]["sensitivity"] == "health"
    assert cat["register_visit.person_id"]["sensitivity"] == "pseudonym"
    assert cat["patient.birth_year"]["sensitivity"] == "quasi_identifier"
    assert cat["observation.unit"]["sensitivity"] == "administrative"
    data = json.loads(CATALOGUE_PATH.read_text(encoding="utf-8"))
    assert data["tables"]["register_visit"]["holders"] == ["ndr"]
    assert set(data["tables"]["observation"]["holders"]) == {
        "region_uppsala",
        "region_orebro",
        "region_skane",
    }
    # Direct identifiers are not research-zone columns, so they can never be requested.
    for banned in ("personnummer", "family_name", "given_name", "postal_code", "birth_date"):
        assert not any(v.endswith("." + banned) for v in cat)


def test_new_unclassified_column_fails_generation():
    md = "## Research zone\n* `register_visit(person_id, shoe_size)`\n## Releases\n"
    assert research_tables(md) == {"register_visit": ["person_id", "shoe_size"]}
    with pytest.raises(CatalogueError, match="shoe_size"):
        generate_catalogue(md)
    with pytest.raises(CatalogueError, match="no source"):
        generate_catalogue("## Research zone\n* `new_table(person_id)`\n## Next\n")
