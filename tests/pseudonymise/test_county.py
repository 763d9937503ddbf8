"""Postal code -> county: SQL lookup equals the Python rule; known areas map right."""

from __future__ import annotations

import duckdb
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.pseudonymise import county_sql
from privacy.policy import postcode_to_county

codes = st.one_of(
    st.none(),
    st.from_regex(r"\A[0-9]{5}\Z"),
    st.from_regex(r"\A[0-9]{3} [0-9]{2}\Z"),
    st.text(max_size=7),
    st.from_regex(r"\A\s[0-9]{5}\s?\Z"),
)


@given(st.lists(codes, max_size=40))
@settings(max_examples=60, deadline=None)
def test_sql_lookup_equals_python(values):
    con = duckdb.connect()
    con.register("t", pa.table({"pc": pa.array(values, pa.string())}))
    got = [r[0] for r in con.execute(f"SELECT {county_sql('pc')} FROM t").fetchall()]
    con.close()
    assert got == [postcode_to_county(v) for v in values]


def test_known_areas():
    assert postcode_to_county("11122") == "01"  # Stockholm
    assert postcode_to_county("753 20") == "03"  # Uppsala
    assert postcode_to_county("70210") == "18"  # Örebro
    assert postcode_to_county("69131") == "18"  # Karlskoga
    assert postcode_to_county("21119") == "12"  # Malmö
    assert postcode_to_county("43430") == "13"  # Kungsbacka (Halland, in a Göteborg area)
    assert postcode_to_county("76130") == "01"  # Norrtälje (Stockholm, in an Uppsala area)
    assert postcode_to_county("00123") is None and postcode_to_county("7021") is None
