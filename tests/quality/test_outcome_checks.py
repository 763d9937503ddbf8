"""Checks on the outcome columns pseudonymisation derives (EQ-5D profile, level sum and indices;
PREM positive-answer flags) in the research and release zones.

A wrong derivation (an edited value set, a bug in pipelines/outcomes/sql.py) must fail the gate
under a check id of its own rather than reach researchers: the hand-built zones of builders.py,
whose derived columns are computed by the project's own SQL, pass; one corrupted value fails
exactly the check written for it. The value-set bounds written into the check library are kept
in step with schemas/valuesets/ here.
"""

from __future__ import annotations

import math
import re

import duckdb
import pytest

from pipelines.outcomes.survey import load_survey
from pipelines.outcomes.valuesets import load_value_set, state_code
from pipelines.quality import catalog
from pipelines.quality.gate import run_gate
from privacy.policy import load_pseudonymise_policy, load_release_policy
from quality import builders as b

#: research table -> (check id prefix, the holder of the hand-built zones that delivers it)
TABLES = {"prom_response": ("prom", "ndr"), "eq5d_response": ("fhir.eq5d_response", "region_uppsala")}
SURVEY = load_survey("prem")
DIMS = [d.name for d in SURVEY.dimensions]
TABLES_HOLDERS = [holder for _prefix, holder in TABLES.values()]


def _library() -> dict[str, catalog.Check]:
    return {c.id: c for c in catalog.load_library()}


def _derived(table: str) -> list:
    rule = next(r for r in load_pseudonymise_policy().tables if r.name == table)
    return [c for c in rule.columns if c.action in ("eq5d", "survey")]


def _expected_ids(table: str) -> set[str]:
    prefix = TABLES[table][0]
    ids = set()
    for c in _derived(table):
        if c.action == "survey":
            ids |= {f"{prefix}.{c.name}.allowed", f"{prefix}.{c.name}.unanswered"}
        elif c.score == "profile":
            ids |= {f"{prefix}.{c.name}.format", f"{prefix}.{c.name}.consistent"}
        else:
            ids |= {f"{prefix}.{c.name}.range", f"{prefix}.{c.name}.consistent"}
    return ids


ALL_NEW = set().union(*(_expected_ids(t) for t in TABLES))


# -- the library -------------------------------------------------------------------------------


@pytest.mark.parametrize("table", TABLES)
def test_every_derived_column_of_the_policy_has_its_blocking_checks(table):
    lib = _library()
    ids = _expected_ids(table)
    assert len(ids) == {"prom_response": 18, "eq5d_response": 8}[table]
    for cid in ids:
        check = lib[cid]
        assert set(check.zones) == {"research", "release"}, cid
        for zone in check.zones:
            resolved = catalog.resolve(check, zone)
            assert resolved.table == table and resolved.severity == "blocking", (cid, zone)
            assert resolved.threshold.max_failed_share == 0 and not resolved.quarantine, (cid, zone)


def _index_checks() -> list[catalog.Check]:
    return [c for c in catalog.load_library() if re.fullmatch(r".*\.eq5d_index_\w+\.range", c.id)]


def test_index_bounds_are_the_value_sets_range_as_the_project_scores_it():
    """Fails when a value set file changes and the check library does not (or the reverse)."""
    checks = _index_checks()
    assert len(checks) == 4  # two value sets, two tables
    for check in checks:
        vs = load_value_set(check.params["column"].removeprefix("eq5d_index_"))
        values = vs.state_values()  # the order of subtraction the research SQL uses
        low, high = float(values.min()), float(values.max())
        # the worst state and full health are the set's bounds
        assert values[state_code((vs.levels,) * 5, vs.levels)] == low
        assert values[state_code((1,) * 5, vs.levels)] == high
        # written rounded outward to 9 decimals: never cuts off a value the set gives
        lo, hi = check.params["min"], check.params["max"]
        assert lo <= low < lo + 1e-9 and hi - 1e-9 < high <= hi, check.id
        assert lo == round(lo, 9) and hi == round(hi, 9), check.id


def test_flag_checks_name_the_surveys_not_applicable_answers():
    """The ``unanswered`` predicates list prem.json's not-applicable answers (lower case)."""
    listed = ", ".join("'" + v.lower().replace("'", "''") + "'" for v in sorted(SURVEY.not_applicable))
    lib = _library()
    for dim in DIMS:
        check = lib[f"prom.prem_{dim}_positive.unanswered"]
        assert f"IN ({listed}))" in check.params["fail_when"], dim


@pytest.mark.parametrize("table", TABLES)
def test_release_profile_format_admits_the_release_policys_top_code_label(table):
    check = _library()[f"{TABLES[table][0]}.eq5d_profile.format"]
    label = load_release_policy().rule_for(table, "eq5d_profile").param("label")
    pattern = catalog.resolve(check, "release").params["pattern"]
    assert re.fullmatch(pattern, label) and re.fullmatch(pattern, "21341")
    assert not re.fullmatch(catalog.resolve(check, "research").params["pattern"], label)


# -- the gate over hand-built zones ------------------------------------------------------------

#: extra prom_response rows (person, five levels, five PREM answers): both bounds of the value
#: sets, every way a row is not scored (a missing dimension; a level 6, which the raw gate would
#: have quarantined, shows the derivation's rule), and the answers a flag is NULL for
EDGE_ROWS = [
    ("edge-worst", (5, 5, 5, 5, 5), ("1", "2", None, "", " 4 ")),
    ("edge-best", (1, 1, 1, 1, 1), ("EJ AKTUELLT", "3", "5", "4", None)),
    ("edge-missing", (None, 1, 2, 3, 4), ("4", None, "ej aktuellt", "  ", "2")),
    ("edge-not-level", (2, 3, 4, 5, 6), ("5", "5", "5", "5", "5")),
]


def _pid(name: str) -> str:
    return b.pseudonym(name)


def _add_edge_rows(settings) -> None:
    five = ", ".join("?" * 5)
    with duckdb.connect(str(settings.research_db("ndr"))) as con:
        for i, (name, levels, answers) in enumerate(EDGE_ROWS):
            con.execute(
                "INSERT INTO prom_response (person_id, birth_year, sex, id_type, visit_date, eq5d_mobility, "
                "eq5d_self_care, eq5d_usual_activities, eq5d_pain_discomfort, eq5d_anxiety_depression, eq_vas, "
                "prem_respect, prem_involvement, prem_information, prem_accessibility, prem_overall) "
                f"VALUES (?, 1950, 'K', 'personnummer', DATE '2020-01-0{i + 1}', {five}, 70, {five})",
                [_pid(name), *levels, *answers],
            )
        b.add_derived_columns(con, "prom_response")
    with duckdb.connect(str(settings.research_db("region_uppsala"))) as con:
        # 55555 and 11111 for both bounds, one row not scored
        con.execute(
            "UPDATE eq5d_response SET mobility = 5, self_care = 5, usual_activities = 5, pain_discomfort = 5, "
            "anxiety_depression = 5 WHERE encounter_id = ?",
            [b.pseudonym("e1")],
        )
        con.execute("UPDATE eq5d_response SET mobility = NULL WHERE encounter_id = ?", [b.pseudonym("e2")])
        con.execute(
            "UPDATE eq5d_response SET mobility = 1, self_care = 1, usual_activities = 1, pain_discomfort = 1 "
            "WHERE encounter_id = ?",
            [b.pseudonym("e3")],
        )
        b.add_derived_columns(con, "eq5d_response")


@pytest.fixture
def outcome_zones(clean_zones):
    _add_edge_rows(clean_zones["settings"])
    return clean_zones


def _not_passing(result) -> dict[str, str]:
    return {c.id: c.verdict for c in result.checks if c.verdict != "pass"}


def test_the_edge_rows_are_what_the_checks_are_about(outcome_zones):
    """The derived values the checks see: scored, not scored, flags NULL where they must be."""
    s = outcome_zones["settings"]
    with duckdb.connect(str(s.research_db("ndr")), read_only=True) as con:
        rows = {
            pid: rest
            for pid, *rest in con.execute(
                "SELECT person_id, eq5d_profile, eq5d_level_sum, eq5d_index_se_5l_tto_2020, "
                "prem_respect_positive, prem_information_positive, prem_accessibility_positive, "
                "prem_overall_positive FROM prom_response"
            ).fetchall()
        }
    tto = load_value_set("se_5l_tto_2020").state_values()
    assert rows[_pid("edge-worst")] == ["55555", 25, float(tto.min()), 0, None, None, 1]
    assert rows[_pid("edge-best")] == ["11111", 5, float(tto.max()), None, 1, 1, None]
    assert rows[_pid("edge-missing")][:3] == [None, None, None]
    assert rows[_pid("edge-not-level")][:3] == [None, None, None]
    assert rows[_pid("edge-missing")][3:] == [1, None, None, 0]


def test_correct_derived_values_pass_in_research_and_release(outcome_zones):
    for table, (_prefix, holder) in TABLES.items():
        result = run_gate("research", holder_id=holder, run_id="ok", render_docs=False)
        checks = {c.id: c for c in result.checks}
        assert result.passed and not _not_passing(result), table
        for cid in _expected_ids(table):
            assert checks[cid].verdict == "pass" and checks[cid].total_rows > 0, cid
    rel_dir = outcome_zones["release_dir"]
    b.build_release(
        rel_dir.parent / "rel-edge", {h: outcome_zones["settings"].research_db(h) for h in TABLES_HOLDERS}
    )
    result = run_gate("release", release_dir=rel_dir.parent / "rel-edge", run_id="ok", render_docs=False)
    assert result.passed and not _not_passing(result)
    assert ALL_NEW <= {c.id for c in result.checks if c.verdict == "pass"}


#: (check id, research table, SET clause, WHERE clause): one corrupted value each
_MIN, _MAX = "{min}", "{max}"
CORRUPTIONS = [
    *(
        (f"prom.prem_{d}_positive.allowed", "prom_response", f"prem_{d}_positive = 2", "edge-not-level")
        for d in DIMS
    ),
    *(
        (
            f"prom.prem_{d}_positive.unanswered",
            "prom_response",
            f"prem_{d} = NULL",  # the flag kept: set for a missing answer
            "edge-not-level",
        )
        for d in DIMS
    ),
    ("prom.prem_respect_positive.unanswered", "prom_response", "prem_respect_positive = 0", "edge-best"),
    (
        "prom.prem_accessibility_positive.unanswered",
        "prom_response",
        "prem_accessibility_positive = 1",
        "edge-missing",
    ),
    ("prom.eq5d_level_sum.consistent", "prom_response", "eq5d_level_sum = eq5d_level_sum - 1", "edge-worst"),
    ("prom.eq5d_level_sum.consistent", "prom_response", "eq5d_level_sum = 10", "edge-missing"),
    ("prom.eq5d_level_sum.range", "prom_response", "eq5d_level_sum = 26", "edge-worst"),
    ("prom.eq5d_profile.format", "prom_response", "eq5d_profile = 'x1111'", "edge-best"),
    ("prom.eq5d_profile.consistent", "prom_response", "eq5d_profile = '55554'", "edge-worst"),
    ("prom.eq5d_profile.consistent", "prom_response", "eq5d_profile = '23455'", "edge-not-level"),
    (
        "prom.eq5d_index_se_5l_tto_2020.range",
        "prom_response",
        f"eq5d_index_se_5l_tto_2020 = {_MAX} + 0.001",
        "edge-best",
    ),
    (
        "prom.eq5d_index_se_5l_tto_2020.range",
        "prom_response",
        f"eq5d_index_se_5l_tto_2020 = {_MIN} - 0.001",
        "edge-worst",
    ),
    (
        "prom.eq5d_index_se_5l_vas_2020.range",
        "prom_response",
        f"eq5d_index_se_5l_vas_2020 = {_MIN} - 0.001",
        "edge-worst",
    ),
    (
        "prom.eq5d_index_se_5l_tto_2020.consistent",
        "prom_response",
        "eq5d_index_se_5l_tto_2020 = NULL",
        "edge-best",
    ),
    (
        "prom.eq5d_index_se_5l_vas_2020.consistent",
        "prom_response",
        "eq5d_index_se_5l_vas_2020 = 50",
        "edge-missing",
    ),
    (
        "fhir.eq5d_response.eq5d_level_sum.consistent",
        "eq5d_response",
        "eq5d_level_sum = eq5d_level_sum + 1",
        "e3",
    ),
    ("fhir.eq5d_response.eq5d_level_sum.range", "eq5d_response", "eq5d_level_sum = 4", "e3"),
    ("fhir.eq5d_response.eq5d_profile.format", "eq5d_response", "eq5d_profile = 'x1111'", "e3"),
    ("fhir.eq5d_response.eq5d_profile.consistent", "eq5d_response", "eq5d_profile = '11111'", "e2"),
    (
        "fhir.eq5d_response.eq5d_index_se_5l_tto_2020.range",
        "eq5d_response",
        f"eq5d_index_se_5l_tto_2020 = {_MAX} + 0.001",
        "e3",
    ),
    (
        "fhir.eq5d_response.eq5d_index_se_5l_vas_2020.range",
        "eq5d_response",
        f"eq5d_index_se_5l_vas_2020 = {_MAX} + 0.001",
        "e3",
    ),
    (
        "fhir.eq5d_response.eq5d_index_se_5l_vas_2020.consistent",
        "eq5d_response",
        "eq5d_index_se_5l_vas_2020 = NULL",
        "e1",
    ),
]


def _corrupt(con: duckdb.DuckDBPyConnection, check_id: str, table: str, assignment: str, row: str) -> None:
    check = _library()[check_id]
    if "{min}" in assignment or "{max}" in assignment:
        assignment = assignment.replace("{min}", repr(check.params["min"])).replace(
            "{max}", repr(check.params["max"])
        )
    key = "person_id" if table == "prom_response" else "encounter_id"
    n = con.execute(f"UPDATE {table} SET {assignment} WHERE {key} = ?", [b.pseudonym(row)]).fetchone()
    assert n == (1,)


@pytest.mark.parametrize(
    "check_id,table,assignment,row", CORRUPTIONS, ids=[f"{c[0]}-{c[3]}" for c in CORRUPTIONS]
)
def test_one_wrong_derived_value_fails_exactly_its_check(outcome_zones, check_id, table, assignment, row):
    s = outcome_zones["settings"]
    holder = TABLES[table][1]
    with duckdb.connect(str(s.research_db(holder))) as con:
        _corrupt(con, check_id, table, assignment, row)
    result = run_gate("research", holder_id=holder, run_id="bad", render_docs=False)
    assert not result.passed
    assert _not_passing(result) == {check_id: "fail"}
    failed = next(c for c in result.checks if c.id == check_id)
    assert failed.failed_rows == 1 and failed.severity == "blocking"


def test_release_admits_a_top_coded_profile_and_skips_columns_it_does_not_carry(outcome_zones):
    s = outcome_zones["settings"]
    release = s.releases_dir / "rel-edge"
    b.build_release(release, {h: s.research_db(h) for h in TABLES_HOLDERS})
    db = release / "release.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(
            "UPDATE prom_response SET eq5d_profile = 'other' WHERE person_id = ?", [_pid("edge-worst")]
        )
        con.execute(
            "UPDATE eq5d_response SET eq5d_profile = 'other' WHERE encounter_id = ?", [b.pseudonym("e1")]
        )
    assert run_gate("release", release_dir=release, run_id="top", render_docs=False).passed

    with duckdb.connect(str(db)) as con:
        con.execute(
            "UPDATE prom_response SET eq5d_profile = 'x1111' WHERE person_id = ?", [_pid("edge-best")]
        )
    result = run_gate("release", release_dir=release, run_id="bad", render_docs=False)
    assert _not_passing(result) == {"prom.eq5d_profile.format": "fail"}

    # a request without the derived columns: their checks are skipped, the rest still run
    with duckdb.connect(str(db)) as con:
        derived = [c.name for c in _derived("prom_response")]
        for col in derived:
            con.execute(f'ALTER TABLE prom_response DROP COLUMN "{col}"')
    result = run_gate("release", release_dir=release, run_id="narrow", render_docs=False)
    verdicts = {c.id: c.verdict for c in result.checks}
    assert result.passed
    assert {verdicts[i] for i in _expected_ids("prom_response")} == {"skipped"}
    assert {verdicts[i] for i in _expected_ids("eq5d_response")} == {"pass"}


def test_index_bounds_hold_the_derived_values_to_the_last_bit(outcome_zones):
    """The worst and best states, as the research SQL derives them, are inside the written bounds
    (the bounds are rounded outward, so a last-bit difference cannot block a release)."""
    lib = _library()
    with duckdb.connect(str(outcome_zones["settings"].research_db("ndr")), read_only=True) as con:
        for vs in ("se_5l_tto_2020", "se_5l_vas_2020"):
            col = f"eq5d_index_{vs}"
            low, high = con.execute(f"SELECT min({col}), max({col}) FROM prom_response").fetchone()
            check = lib[f"prom.{col}.range"]
            assert check.params["min"] <= low and high <= check.params["max"]
            assert math.isclose(low, check.params["min"], abs_tol=1e-9)
            assert math.isclose(high, check.params["max"], abs_tol=1e-9)
