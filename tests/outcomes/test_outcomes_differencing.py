"""The node's differencing guard on re-published PROM key figures (issue 17 item 6).

An attacker holds every message a node ever sent. The property tests replay sequences of datasets
(persons added, removed, values corrected between publications) through the guard and check,
with the test's own definitions of what each figure is made of:

* every published cell is exactly the figure of the dataset the guard says it came from;
* any two published versions of a family's cells differ by 0 or at least ``k`` contributions;
* stronger, by brute force over small groups: no linear combination of everything published
  is supported on fewer than ``k`` persons (the pairwise rule alone misses three-version
  combinations, see ``test_three_versions_pairwise_apart_still_cannot_isolate_one_person``).

Then the node side: the state survives a restart, is owner-only and holds no identifier, and a
missing or damaged state withholds rather than publishes unguarded figures.
"""

from __future__ import annotations

import itertools
import json
import logging
import stat
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.outcomes import differencing as guard
from pipelines.outcomes.keyfigures import (
    GUARD_UNAVAILABLE,
    Contributions,
    PeriodFigures,
    figures_of,
)
from pipelines.outcomes.pooling import PARTIAL, Part, key_figures_from_document, pool_key_figures

KEY = bytes(range(32))

# -- the test's own model of what each family's published numbers are made of ------------------
#
# family -> (contributions -> {person: (membership of each counted subset, value or None)})
# The published numbers of a version are, per counted subset, the number of its persons, and,
# when valued, the sum (and sum of squares) of the values.


def _model(family: str, c: Contributions) -> dict[object, tuple[tuple[int, ...], float | None]] | None:
    if family == "responders":
        return {p: ((1,), float(n)) for p, n in c.responders.items()}
    if family == "rate":
        if c.denominator is None:
            return None
        return {p: ((1, int(p in c.responders)), None) for p in c.denominator}
    if family in ("index", "vas"):
        return {p: ((1,), v) for p, v in (c.index if family == "index" else c.vas).items()}
    return {p: ((1, int(b)), None) for p, b in c.improved.items()}


FAMILY_FIGURES = {f.name: f.figures for f in guard.FAMILIES}


def _elements(members) -> set:
    return set(members.items())


def _isolating_group(versions: list[dict], k: int) -> tuple | None:
    """A group of fewer than ``k`` persons that some combination of the published numbers of
    ``versions`` (each the model of one published version) involves alone, or None. Person-level
    and brute force: a group T is isolated iff removing T's columns lowers the rank."""
    persons = sorted({p for v in versions for p in v}, key=str)
    n_counts = len(next(iter(next(v for v in versions if v).values()))[0])
    columns, owners = [], []
    for p in persons:  # one column per person over (version, counted subset) rows ...
        col = []
        for v in versions:
            col += list(v[p][0]) if p in v else [0] * n_counts
            col.append(0)
        columns.append(col)
        owners.append(p)
    values = sorted({(p, v[p][1]) for v in versions for p in v if v[p][1] is not None}, key=str)
    for p, value in values:  # ... and one per (person, value) over the versions' sum rows
        col = []
        for v in versions:
            col += [0] * n_counts
            col.append(1 if p in v and v[p][1] == value else 0)
        columns.append(col)
        owners.append(p)
    m = np.array(columns, dtype=float).T
    full = np.linalg.matrix_rank(m)
    for size in range(1, k):
        for group in itertools.combinations(persons, size):
            keep = [i for i, p in enumerate(owners) if p not in group]
            if np.linalg.matrix_rank(m[:, keep]) < full:
                return group
    return None


# -- datasets as sequences of small changes ---------------------------------------------------------

PERSONS = [f"p{i}" for i in range(9)]
state_st = st.one_of(
    st.none(),  # not in this period's data at all
    st.tuples(
        st.booleans(),  # responded
        st.integers(1, 2),  # response rows
        st.sampled_from([None, 0.25, 0.5, 0.75, 1.0]),  # index
        st.sampled_from([None, 40.0, 80.0]),  # VAS
        st.booleans(),  # in the denominator
        st.sampled_from([None, False, True]),  # improved (None: not paired)
    ),
)
step_st = st.dictionaries(st.sampled_from(PERSONS), state_st, max_size=9)


def _contributions(states: dict) -> Contributions:
    resp = {p: s for p, s in states.items() if s is not None and s[0]}
    return Contributions(
        responders={p: s[1] for p, s in resp.items()},
        denominator=frozenset(p for p, s in states.items() if s is not None and s[4]),
        index={p: s[2] for p, s in resp.items() if s[2] is not None},
        vas={p: s[3] for p, s in resp.items() if s[3] is not None},
        improved={p: s[5] for p, s in resp.items() if s[5] is not None},
    )


def _replay(steps: list[dict], k: int):
    """Publish after each step; per family the published versions' models, checking that every
    published cell is the figure of the dataset its version came from."""
    keys = guard.Keys(KEY)
    entry: dict[str, guard.FamilyState] = {}
    states: dict = {}
    by_digest: dict[str, dict[str, tuple[Contributions, PeriodFigures]]] = {f: {} for f in FAMILY_FIGURES}
    published: dict[str, dict[str, dict]] = {f: {} for f in FAMILY_FIGURES}
    for step in steps:
        states.update(step)
        c = _contributions(states)
        candidate = figures_of("2024", c, k)
        row, _ = guard.guard_period(entry, candidate, c, keys, k)
        for family, names in FAMILY_FIGURES.items():
            shown = [getattr(row, n) for n in names]
            if not all(f.shown for f in shown):
                assert [getattr(row, n) for n in names] == [getattr(candidate, n) for n in names]
                continue
            state = entry[family]
            for version in state.versions:
                by_digest[family].setdefault(version["digest"], (c, candidate))
            digest = state.versions[state.current]["digest"]
            source, source_figures = by_digest[family][digest]
            assert shown == [getattr(source_figures, n) for n in names]  # the guard says what it sent
            published[family][digest] = _model(family, source)
    return published


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step_st, min_size=1, max_size=7), k=st.integers(2, 4))
def test_no_two_published_versions_differ_by_fewer_than_k(steps, k):
    published = _replay(steps, k)
    for family, versions in published.items():
        for a, b in itertools.combinations(versions.values(), 2):
            diff = len(_elements(a) ^ _elements(b))
            assert diff == 0 or diff >= k, (family, diff)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step_st, min_size=2, max_size=6), k=st.integers(2, 3))
def test_no_combination_of_everything_published_isolates_a_small_group(steps, k):
    published = _replay(steps, k)
    for family, versions in published.items():
        if versions:
            assert _isolating_group(list(versions.values()), k) is None, family


def test_the_oracle_finds_the_late_responder_an_unguarded_node_discloses():
    """The brute-force check is not vacuous: two unguarded versions one person apart fail it."""
    base = {f"p{i}": ((1,), 0.5) for i in range(5)}
    late = {**base, "x": ((1,), 0.9)}
    assert _isolating_group([base, late], 3) == ("x",)


# -- worked cases -------------------------------------------------------------------------------


def _index_contributions(values: dict[str, float]) -> Contributions:
    return Contributions(
        responders={p: 1 for p in values}, denominator=None, index=values, vas={}, improved={}
    )


def _publish(entry, values, k=3):
    c = _index_contributions(values)
    return guard.guard_period(entry, figures_of("2024", c, k), c, guard.Keys(KEY), k)[0]


def test_a_late_responder_changes_nothing_the_hub_sees_until_k_have_come():
    entry: dict = {}
    base = {f"p{i}": 0.1 * i for i in range(10)}
    first = _publish(entry, base)
    assert first.mean_index.persons == 10
    late = _publish(entry, {**base, "x": 0.95})  # one late responder: n, n·mean would give 0.95
    assert late == first
    two = _publish(entry, {**base, "x": 0.95, "y": 0.2})  # two: still fewer than k = 3
    assert two == first
    three = _publish(entry, {**base, "x": 0.95, "y": 0.2, "z": 0.4})
    assert three.mean_index.persons == 13 and three.persons.value == 13
    corrected = _publish(entry, {**base, "x": 0.95, "y": 0.2, "z": 0.41})  # a corrected value
    assert corrected == three
    back = _publish(entry, base)  # exactly the first dataset again: its own figures, re-sent
    assert back == first


def test_three_versions_pairwise_apart_still_cannot_isolate_one_person():
    """{a,b,c}, {d,e,f} and {a..g} differ pairwise by at least k = 3, but the third minus the
    first two is g alone: the pairwise rule would let it out, the rank audit does not."""
    entry: dict = {}
    v1 = {"a": 0.1, "b": 0.2, "c": 0.3}
    v2 = {"d": 0.4, "e": 0.5, "f": 0.6}
    first, second = _publish(entry, v1), _publish(entry, v2)
    assert first.persons.value == 3 and second.persons.value == 3 and first != second
    third = _publish(entry, {**v1, **v2, "g": 0.9})
    assert third == second  # held: the last published version is re-sent
    fourth = _publish(entry, {**v1, **v2, "g": 0.9, "h": 0.1, "i": 0.2})
    assert fourth.persons.value == 9  # g, h and i together are a group of k


def test_a_share_change_of_one_person_is_held_on_either_side():
    k = 3

    def publish(entry, improved):
        c = Contributions(
            responders={p: 1 for p in improved}, denominator=None, index={}, vas={}, improved=improved
        )
        return guard.guard_period(entry, figures_of("2024", c, k), c, guard.Keys(KEY), k)[0]

    entry: dict = {}
    base = {f"p{i}": i % 2 == 0 for i in range(10)}  # 5 improved of 10
    first = publish(entry, base)
    assert first.improved_share.value == 0.5
    assert publish(entry, {**base, "p1": True}) == first  # one person's improvement corrected
    assert publish(entry, {**base, "x": False}) == first  # one more, not improved


# -- the node: state on disk ----------------------------------------------------------------------


def _research_zone(path: Path, persons: int, late: int = 0) -> None:
    import duckdb

    ids = [f"person-{i:04d}" for i in range(persons + late)]
    table = pa.table(
        {
            "person_id": pa.array(ids, pa.string()),
            "visit_date": pa.array([date(2024, 1 + i % 12, 5) for i in range(len(ids))], pa.date32()),
            "eq5d_index_se_5l_tto_2020": pa.array([0.3 + 0.0123 * i for i in range(len(ids))], pa.float64()),
            "eq_vas": pa.array([40 + i for i in range(len(ids))], pa.int64()),
            "eq5d_profile": pa.array(["21341"] * len(ids), pa.string()),
        }
    )
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    con.register("t", table)
    con.execute("CREATE TABLE prom_response AS SELECT * FROM t")
    con.close()


def _publish_node(zone: Path, guard_dir: Path) -> dict:
    from pipelines.outcomes.source import published_documents

    (doc,) = published_documents(zone, holder="ndr", threshold=5, guard_dir=guard_dir)
    return doc


@pytest.fixture()
def node(tmp_path):
    guard_dir = tmp_path / "private"
    guard_dir.mkdir(mode=0o700)
    zone = tmp_path / "research.duckdb"
    _research_zone(zone, 30)
    return zone, guard_dir


def _row(doc: dict, period: str = "2024") -> dict:
    return next(r for r in doc["rows"] if r["period"] == period)


def test_a_restarted_node_keeps_its_guard(node):
    zone, guard_dir = node
    first = _publish_node(zone, guard_dir)
    _research_zone(zone, 30, late=1)
    # a new call reads everything from disk, as a restarted node does
    assert _publish_node(zone, guard_dir) == first
    _research_zone(zone, 30, late=5)
    assert _row(_publish_node(zone, guard_dir))["persons"]["value"] == 35


def test_the_state_is_owner_only_and_holds_no_identifier_or_value(node):
    zone, guard_dir = node
    _publish_node(zone, guard_dir)
    _research_zone(zone, 30, late=6)
    _publish_node(zone, guard_dir)
    for name in (guard.STATE_FILE, guard.KEY_FILE):
        assert stat.S_IMODE((guard_dir / name).stat().st_mode) == 0o600
    text = (guard_dir / guard.STATE_FILE).read_text()
    assert "person-" not in text
    for i in range(36):  # neither an index value nor its exact hex form
        value = 0.3 + 0.0123 * i
        assert repr(value) not in text and value.hex() not in text
    assert not list(guard_dir.glob("*.tmp"))


def _assert_closed(doc: dict) -> None:
    for row in doc["rows"]:
        for name in FAMILY_FIGURES["responders"] + FAMILY_FIGURES["index"] + FAMILY_FIGURES["vas"]:
            assert row[name] == {"withheld": GUARD_UNAVAILABLE}, name


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: (d / guard.STATE_FILE).unlink(), guard.STATE_MISSING),
        (lambda d: (d / guard.STATE_FILE).write_text("{not json"), guard.STATE_CORRUPT),
        (lambda d: (d / guard.KEY_FILE).unlink(), guard.KEY_MISSING),
        (lambda d: (d / guard.KEY_FILE).write_bytes(b"short"), guard.KEY_MISSING),
    ],
)
def test_a_missing_or_damaged_state_withholds_instead_of_publishing_unguarded(node, caplog, damage, reason):
    zone, guard_dir = node
    _publish_node(zone, guard_dir)
    damage(guard_dir)
    before = {p.name: p.read_bytes() for p in guard_dir.iterdir()}
    _research_zone(zone, 30, late=1)
    with caplog.at_level(logging.WARNING, logger="pipelines.outcomes.differencing"):
        doc = _publish_node(zone, guard_dir)
    _assert_closed(doc)
    assert reason in caplog.text and "person-" not in caplog.text
    assert {p.name: p.read_bytes() for p in guard_dir.iterdir()} == before  # left for restoring
    # the hub takes the withheld cells as any other and withholds the pool
    kf, _ = key_figures_from_document(doc)
    pooled = pool_key_figures([Part(kf)])
    assert pooled.rows[0].mean_index.withheld == PARTIAL


def test_a_tampered_period_closes_that_period_only(tmp_path, caplog):
    import duckdb

    guard_dir = tmp_path / "private"
    guard_dir.mkdir(mode=0o700)
    zone = tmp_path / "research.duckdb"
    ids = [f"person-{i:04d}" for i in range(20)]
    con = duckdb.connect(str(zone))
    con.register(
        "t",
        pa.table(
            {
                "person_id": ids * 2,
                "visit_date": pa.array([date(2023, 3, 1)] * 20 + [date(2024, 3, 1)] * 20, pa.date32()),
                "eq5d_index_se_5l_tto_2020": [0.5 + 0.01 * i for i in range(40)],
                "eq_vas": list(range(40, 80)),
                "eq5d_profile": ["11111"] * 40,
            }
        ),
    )
    con.execute("CREATE TABLE prom_response AS SELECT * FROM t")
    con.close()
    _publish_node(zone, guard_dir)
    state = json.loads((guard_dir / guard.STATE_FILE).read_text())
    # flip one version bit of one column: the JSON stays valid, the MAC does not
    families = json.loads(state["periods"]["2024"]["families"])
    counts = families["index"]["counts"]
    first = next(iter(counts))
    counts[first] = [counts[first][0] ^ 1 ^ 2]
    state["periods"]["2024"]["families"] = json.dumps(families, separators=(",", ":"))
    (guard_dir / guard.STATE_FILE).write_text(json.dumps(state))
    with caplog.at_level(logging.WARNING, logger="pipelines.outcomes.differencing"):
        doc = _publish_node(zone, guard_dir)
    assert guard.PERIOD_CORRUPT in caplog.text
    assert _row(doc, "2024")["persons"] == {"withheld": GUARD_UNAVAILABLE}
    assert _row(doc, "2023")["persons"]["value"] == 20
    saved = json.loads((guard_dir / guard.STATE_FILE).read_text())
    assert saved["periods"]["2024"] == state["periods"]["2024"]  # kept as found


def test_the_audit_rank_is_exact_on_a_dependent_matrix():
    m = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 2]])
    for p in guard._PRIMES:
        assert guard._rank_mod(m, p) == 2
        assert guard._rank_mod(np.eye(4, dtype=np.int64), p) == 4


# ----------------------------------------------------------------------------- the operator's view


def test_the_status_tells_the_operator_what_the_guard_holds_and_changes_nothing(node):
    zone, guard_dir = node
    assert guard.guard_status(guard_dir, "ndr")["reason"] == guard.NOT_STARTED
    assert not list(guard_dir.iterdir()), "the status starts no guard"
    _publish_node(zone, guard_dir)
    _research_zone(zone, 30, late=6)
    _publish_node(zone, guard_dir)
    before = {p.name: p.read_bytes() for p in guard_dir.iterdir()}
    status = guard.guard_status(guard_dir, "ndr")
    assert status["open"] and status["reason"] is None
    (period,) = status["periods"]
    assert period["period"] == "2024" and period["verified"]
    assert period["families"]["responders"] == {"versions": 2, "full": False}
    assert {p.name: p.read_bytes() for p in guard_dir.iterdir()} == before
    text = json.dumps(status)
    assert "person-" not in text and "0.3" not in text  # no person, no figure


def test_the_status_names_a_closed_guard_and_a_damaged_year(tmp_path, node):
    zone, guard_dir = node
    _publish_node(zone, guard_dir)
    state = json.loads((guard_dir / guard.STATE_FILE).read_text())
    state["periods"]["2024"]["mac"] = "0" * len(state["periods"]["2024"]["mac"])
    (guard_dir / guard.STATE_FILE).write_text(json.dumps(state))
    (period,) = guard.guard_status(guard_dir, "ndr")["periods"]
    assert not period["verified"] and period["reason"] == guard.PERIOD_CORRUPT
    (guard_dir / guard.KEY_FILE).unlink()
    status = guard.guard_status(guard_dir, "ndr")
    assert not status["open"] and status["reason"] == guard.KEY_MISSING


def test_hdp_node_key_figures_guard_prints_the_status_and_fails_when_closed(hdp_home, monkeypatch):
    from click.testing import CliRunner

    from hdp.settings import get_settings
    from node.cli import main

    monkeypatch.setenv("HDP_FEDERATION_ROLE", "node")
    monkeypatch.setenv("HDP_NODE_HOLDER", "ndr")
    get_settings.cache_clear()
    guard_dir = get_settings().ensure_restricted(get_settings().restricted / "federation")
    zone = hdp_home.home / "zone.duckdb"
    _research_zone(zone, 30)
    runner = CliRunner()
    started = runner.invoke(main, ["key-figures-guard"])
    assert started.exit_code == 0 and guard.NOT_STARTED in started.output
    _publish_node(zone, guard_dir)
    shown = runner.invoke(main, ["key-figures-guard"])
    assert shown.exit_code == 0, shown.output
    assert "ndr: open" in shown.output and "2024: versions published: " in shown.output
    as_json = json.loads(runner.invoke(main, ["key-figures-guard", "--format", "json"]).output)
    assert as_json["periods"][0]["families"]["responders"]["versions"] == 1
    (guard_dir / guard.STATE_FILE).unlink()
    closed = runner.invoke(main, ["key-figures-guard"])
    assert closed.exit_code == 2 and guard.STATE_MISSING in closed.output
    get_settings.cache_clear()
