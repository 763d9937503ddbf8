"""person_rows / person_map: for every input, the pseudonym is hmac.new(key, normalised identifier),
identical across the forms of one identifier; invalid values get their reason, never a pseudonym."""

from __future__ import annotations

import hashlib
import hmac
import secrets

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.pseudonymise import person_map, person_rows, resource_map
from privacy.domains import resource_message
from privacy.personnummer import try_parse
from privacy.pseudonym import Pseudonymiser
from pseudonymise.raw_fixtures import EXTRACT_DATE, pnr

KEY = secrets.token_bytes(32)
PSEUDO = Pseudonymiser(KEY, key_id="k-test")

_valid = st.builds(
    lambda y, m, d, s: pnr(f"{y:04d}{m:02d}{d:02d}", f"{s:03d}"),
    st.integers(1930, 2020),
    st.integers(1, 12),
    st.integers(1, 28),
    st.integers(0, 999),
)
_forms = _valid.flatmap(lambda v: st.sampled_from([v, f"{v[:8]}-{v[8:]}", f"{v[2:8]}-{v[8:]}", f" {v} "]))
_values = st.lists(
    st.one_of(_forms, st.text(max_size=14), st.from_regex(r"\A\d{8}-?\d{4}\Z")), unique=True, max_size=40
)


@given(_values, st.lists(st.booleans(), min_size=40, max_size=40))
@settings(max_examples=150, deadline=None)
def test_pseudonyms_equal_hmac_of_the_normalised_identifier(values, flags):
    arr = pa.array(values, pa.string())
    rows = person_rows(arr, PSEUDO, reference_date=EXTRACT_DATE).to_pylist()
    expected_link = set()
    for value, row, used in zip(values, rows, flags, strict=False):
        parsed = try_parse(value, reference_date=EXTRACT_DATE)
        assert row["raw_value"] == value
        if isinstance(parsed, str):
            assert row["person_id"] is None and row["identifier"] is None and row["reason_code"] == parsed
        else:
            want = hmac.new(KEY, parsed.normalised.encode(), hashlib.sha256).hexdigest()
            assert row["person_id"] == want and row["identifier"] == parsed.normalised
            assert (row["birth_year"], row["sex"], row["id_type"]) == (
                parsed.birth_date.year,
                parsed.sex,
                parsed.kind,
            )
            if used:
                expected_link.add((want, parsed.normalised))
    _, link = person_map(
        arr, PSEUDO, reference_date=EXTRACT_DATE, used=pa.array(flags[: len(values)], pa.bool_())
    )
    got = list(zip(link["person_id"].to_pylist(), link["personnummer"].to_pylist(), strict=True))
    assert len(got) == len(set(got)) and set(got) == expected_link


@given(st.lists(st.text(min_size=1, max_size=20), unique=True, max_size=30))
@settings(max_examples=100, deadline=None)
def test_resource_pseudonyms_equal_hmac_of_the_resource_message(ids):
    got = resource_map(pa.array(ids, pa.string()), "Encounter", PSEUDO)
    want = [hmac.new(KEY, resource_message("Encounter", i).encode(), hashlib.sha256).hexdigest() for i in ids]
    assert got["resource_id"].to_pylist() == ids and got["pseudonym"].to_pylist() == want
