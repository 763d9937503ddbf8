"""The SQL the checks compile to agrees with plain-Python reference implementations."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.quality import sql
from pipelines.quality.catalog import parse_check
from pipelines.quality.sql import RunContext


def luhn_ok(ten: str) -> bool:
    total = 0
    for i, ch in enumerate(ten):
        x = int(ch) * (2 if i % 2 == 0 else 1)
        total += x // 10 + x % 10
    return total % 10 == 0


def reference_birth_date(pnr: str, ref_year: int) -> date | None:
    digits = "".join(ch for ch in pnr if ch.isdigit())
    if len(digits) == 12:
        year = int(digits[:4])
    elif len(digits) == 10:
        yy = int(digits[:2])
        year = ref_year - ((ref_year - yy) % 100) - (100 if "+" in pnr else 0)
    else:
        return None
    ten = digits[-10:]
    try:
        return date(year, int(ten[2:4]), int(ten[4:6]) % 60)
    except ValueError:
        return None


def reference_valid(pnr: str, ref_year: int) -> bool:
    import re

    if not re.fullmatch(r"([0-9]{6}|[0-9]{8})[-+]?[0-9]{4}", pnr):
        return False
    digits = "".join(ch for ch in pnr if ch.isdigit())
    born = reference_birth_date(pnr, ref_year)
    return (
        luhn_ok(digits[-10:])
        and born is not None
        and born <= date(ref_year, 12, 31)
        and digits[-4:-1] != "000"
    )


@pytest.fixture(scope="module")
def con():
    c = duckdb.connect()
    for m in sql.MACROS:
        c.execute(m)
    yield c
    c.close()


pnr_like = st.one_of(
    # well-formed shapes with random digits: exercises dates, samordningsnummer days and Luhn
    st.builds(
        lambda cent, body, sep: cent + body[:6] + sep + body[6:],
        st.sampled_from(["", "19", "20"]),
        st.text("0123456789", min_size=10, max_size=10),
        st.sampled_from(["", "-", "+"]),
    ),
    st.text("0123456789-+ ", max_size=14),
)


@settings(max_examples=200, deadline=None)
@given(pnr_like, st.integers(1990, 2030))
def test_personnummer_macro_matches_reference(con, pnr, ref_year):
    valid, born = con.execute(
        "SELECT hdp_pnr_valid(?, ?), hdp_pnr_birth_date(?, ?)", [pnr, ref_year, pnr, ref_year]
    ).fetchone()
    assert bool(valid) == reference_valid(pnr, ref_year)
    if reference_valid(pnr, ref_year):
        assert born == reference_birth_date(pnr, ref_year)


def test_known_test_personnummer_are_valid_and_altered_ones_are_not(con):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "synthetic_data" / "skatteverket_testpersonnummer.txt"
    numbers = [
        line.strip()
        for line in path.read_text(encoding="utf-8").splitlines()[:2000]
        if line.strip().isdigit()
    ]
    assert numbers
    rows = con.execute(
        "SELECT count_if(NOT hdp_pnr_valid(s, 2026)) FROM (SELECT unnest(?) AS s)", [numbers]
    ).fetchone()
    assert rows[0] == 0
    bad = [n[:-1] + str((int(n[-1]) + 1) % 10) for n in numbers]
    assert (
        con.execute("SELECT count_if(hdp_pnr_valid(s, 2026)) FROM (SELECT unnest(?) AS s)", [bad]).fetchone()[
            0
        ]
        == 0
    )


def test_serial_000_is_invalid_like_the_parser(con):
    # Luhn-valid, possible dates, serial 000 (never issued): identifier.invalid_serial in the parser
    for value in ("811218-0008", "198112180008", "701063-0007", "811218+0008"):
        assert con.execute("SELECT hdp_pnr_valid(?, 2026)", [value]).fetchone()[0] is False


def test_samordningsnummer_day_plus_sixty(con):
    assert con.execute("SELECT hdp_pnr_birth_date('197010632391', 2026)").fetchone()[0] == date(1970, 10, 3)


def test_literals_are_escaped():
    assert sql.literal("a'b") == "'a''b'"
    assert sql.literal(date(2020, 1, 2)) == "DATE '2020-01-02'"


def _check(**kw):
    base = {
        "id": "t.t.t",
        "category": "plausibility",
        "subcategory": "atemporal",
        "source": "register",
        "zones": ["raw"],
        "table": "t",
        "severity": "blocking",
        "threshold": {"max_failed_share": 0},
        "note": "n",
    }
    return parse_check({**base, **kw})


@pytest.mark.parametrize(
    "check,expected",
    [
        (_check(kind="range", column="v", min=1, max=5), 2),  # 0 and 9 fail; NULL is not a range failure
        (_check(kind="not_null", column="v", category="completeness", subcategory="presence"), 1),
        (_check(kind="in_set", column="v", values=[1, 2, 3], category="conformance", subcategory="value"), 2),
        (_check(kind="predicate", columns=["v"], fail_when="v > 4", description="d"), 1),
        (_check(kind="range", column="v", min=1, max=5, where="k = 'a'"), 1),
    ],
)
def test_row_fail_expressions_count_the_right_rows(con, check, expected):
    con.execute(
        "CREATE OR REPLACE TABLE t AS SELECT * FROM (VALUES (0, 'a'), (3, 'b'), (9, 'b'), (NULL, 'a')) v(v, k)"
    )
    expr = sql.row_fail_expr(check, RunContext(date(2024, 1, 1)), {"v": "INTEGER", "k": "VARCHAR"})
    assert con.execute(f"SELECT count_if({expr}) FROM t").fetchone()[0] == expected


def test_identifier_pattern_finds_personnummer_but_not_pseudonyms(con):
    import hashlib

    texts = [
        "19121212-1212",
        "x 121212-1212 y",
        "191212121212",
        hashlib.sha256(b"a").hexdigest(),
        "urn:oid:1.2.752.116.1.3.2.1.4",
        "2020-01-01T10:00:00+01:00",
        "NPU27300",
        "E11.9",
    ]
    hits = [
        con.execute("SELECT regexp_matches(?, ?)", [t, sql.IDENTIFIER_PATTERN]).fetchone()[0] for t in texts
    ]
    assert hits == [True, True, True, False, False, False, False, False]


def test_an_encounter_soon_after_death_is_plausible_a_late_one_is_not(con):
    """Death certification and autopsy happen after death (Synthea: 1-4 days later)."""
    from pipelines.quality.catalog import library

    check = next(c for c in library() if c.id == "fhir.encounter.before_death")
    con.execute(
        "CREATE OR REPLACE TABLE fhir_patient AS SELECT 'p' AS patient_id, '1989-05-09T20:35:22-04:00' AS deceased_date"
    )
    con.execute(
        "CREATE OR REPLACE TABLE fhir_encounter AS SELECT * FROM (VALUES ('e1', 'p', '1989-05-01T10:00:00-04:00'), "
        "('e2', 'p', '1989-05-13T23:58:16-04:00'), ('e3', 'p', '1989-07-01T10:00:00-04:00')) v(encounter_id, patient_id, start_time)"
    )
    failed, total = con.execute(sql.set_fail_sql(check, RunContext(date(2024, 1, 1)))).fetchone()
    assert (failed, total) == (1, 3)
