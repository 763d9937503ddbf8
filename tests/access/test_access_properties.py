"""Laws, checked with Hypothesis:

* a withdrawn or opted-out person (or one without a consent link) never appears in any result;
* no suppressed small cell can be recovered from one result's published cells plus every
  publishable margin (checked with an independent linear program, which also catches
  recovery through the "each present cell has at least one person" bound).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import timedelta

import numpy as np
import pytest
from access_support import World
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from access.demo_release import consent_key, person_id
from access.disclosure import Cell, suppress
from access.ports import User

PERSONS = 300
UNLINKED = 5  # persons 295..299 have no consent link

QUERIES = [
    "SELECT person_id FROM register_visit",
    "SELECT DISTINCT person_id, sex FROM register_visit WHERE hba1c_mmol_mol > {v}",
    "SELECT p.person_id, count(*) FROM patient p JOIN register_visit r ON p.person_id = r.person_id "
    "GROUP BY p.person_id",
    "SELECT person_id FROM patient UNION SELECT person_id FROM register_visit",
    "SELECT list(person_id) AS ids FROM register_visit WHERE bmi < {v}",
    "WITH x AS (SELECT person_id, max(bmi) AS b FROM register_visit GROUP BY person_id) SELECT * FROM x",
]


@pytest.fixture(scope="module")
def consent_world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("consent_home"), persons=PERSONS, visits=1_200, unlinked=UNLINKED)
    yield w
    w.service.close()


def _text(result) -> str:
    return result.body.decode()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    withdrawn=st.sets(st.integers(0, PERSONS - 1), max_size=40),
    purpose_specific=st.booleans(),
    query=st.sampled_from(QUERIES),
    value=st.integers(20, 90),
)
def test_withdrawn_person_never_appears(consent_world, withdrawn, purpose_specific, query, value):
    w = consent_world
    alice = User("alice", frozenset({"researcher"}))
    sql = query.format(v=value)
    w.gov._optouts.clear()
    before = _text(w.service.query(alice, "r_rec", sql))
    # Withdraw (for all purposes or for this permit's purpose) a moment before the next query.
    for i in withdrawn:
        w.gov.opt_out(consent_key(i, seed=1), at=w.now - timedelta(seconds=1),
                      purpose="diabetes-outcomes" if purpose_specific else None)
    after = _text(w.service.query(alice, "r_rec", sql))
    for i in withdrawn:
        assert person_id(i, seed=1) not in after
    for i in range(PERSONS - UNLINKED, PERSONS):
        assert person_id(i, seed=1) not in before and person_id(i, seed=1) not in after
    # Those not withdrawn are still served (the filter removes exactly the withdrawn).
    if query == QUERIES[0]:
        kept = [i for i in range(PERSONS - UNLINKED) if i not in withdrawn]
        assert all(person_id(i, seed=1) in after for i in kept)
    w.gov._optouts.clear()


def test_opt_out_for_another_purpose_does_not_exclude(consent_world):
    w = consent_world
    alice = User("alice", frozenset({"researcher"}))
    w.gov._optouts.clear()
    w.gov.opt_out(consent_key(0, seed=1), at=w.now - timedelta(seconds=1), purpose="another-purpose")
    assert person_id(0, seed=1) in _text(w.service.query(alice, "r_rec", QUERIES[0]))
    w.gov._optouts.clear()


# -- disclosure: no small cell recoverable ---------------------------------------------------


@st.composite
def tables(draw):
    dims = draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 4)) for _ in range(dims)]
    cells = []
    for key in itertools.product(*[range(s) for s in sizes]):
        n = draw(st.one_of(st.just(0), st.integers(1, 6), st.integers(7, 60)))
        if n:  # absent cells are known zeros, as GROUP BY returns no row for them
            cells.append(Cell(key, n, draw(st.sampled_from([3, 5, 10]))))
    return cells


def _recoverable(cells, suppressed) -> set[int]:
    """Suppressed cells whose value a linear program pins down exactly."""
    hidden = sorted(suppressed)
    col = {c: j for j, c in enumerate(hidden)}
    dims = len(cells[0].key)
    a_eq, b_eq = [], []
    for size in range(dims):
        for subset in itertools.combinations(range(dims), size):
            groups = defaultdict(list)
            for i, c in enumerate(cells):
                groups[tuple(c.key[d] for d in subset)].append(i)
            for members in groups.values():
                if sum(cells[i].n for i in members) < max(cells[i].threshold for i in members):
                    continue  # that margin would itself be suppressed
                row = np.zeros(len(hidden))
                for i in members:
                    if i in col:
                        row[col[i]] = 1
                if row.any():
                    a_eq.append(row)
                    b_eq.append(sum(cells[i].n for i in members if i in col))
    out = set()
    if not a_eq:
        return out
    for i, j in col.items():
        c = np.zeros(len(hidden))
        c[j] = 1
        lo = linprog(c, A_eq=np.array(a_eq), b_eq=b_eq, bounds=[(1, None)] * len(hidden))
        hi = linprog(-c, A_eq=np.array(a_eq), b_eq=b_eq, bounds=[(1, None)] * len(hidden))
        if lo.status == 0 and hi.status == 0 and (-hi.fun) - lo.fun < 0.5:
            out.add(i)
    return out


@settings(max_examples=60, deadline=None)
@given(tables())
def test_no_small_cell_recoverable(cells):
    if not cells:
        return
    sup = suppress(cells)
    small = {i for i, c in enumerate(cells) if c.n < c.threshold}
    assert small <= sup.all  # every small cell is suppressed
    published_small = small - sup.all
    assert not published_small
    if sup.unprotected:
        return  # the service refuses such a result outright
    assert not (_recoverable(cells, sup.all) & small)


# -- disclosure: every published cell of a real result is large enough -----------------------

GROUP_COLUMNS = ["sex", "birth_year", "county", "visit_date", "diabetes_type", "hba1c_mmol_mol", "person_id"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(st.sampled_from(GROUP_COLUMNS), min_size=1, max_size=3, unique=True),
       cutoff=st.integers(20, 120))
def test_every_published_aggregate_cell_has_enough_persons(consent_world, keys, cutoff):
    """Whatever a researcher groups by (coarse codes or a pseudonym, a date, a lab value),
    each published row stands for at least the threshold's number of distinct persons, so
    no group key of a published row singles anyone out."""
    import duckdb

    from hdp.settings import holders

    w = consent_world
    alice = User("alice", frozenset({"researcher"}))
    w.gov._optouts.clear()
    cols = ", ".join(keys)
    sql = f"SELECT {cols}, count(*) AS n FROM register_visit WHERE hba1c_mmol_mol < {cutoff} GROUP BY {cols}"
    try:
        result = w.service.query(alice, "r_agg", sql, "arrow")
    except Exception as err:  # noqa: BLE001 - a refusal publishes nothing, which satisfies the law
        assert getattr(err, "reason", "").startswith("disclosure."), err
        return
    import pyarrow as pa

    table = pa.ipc.open_stream(result.body).read_all()
    threshold = min(h.min_cell_count for h in holders())
    con = duckdb.connect(str(w.settings.releases_dir / "r_agg" / "release.duckdb"), read_only=True)
    try:
        for row in table.to_pylist():
            where = " AND ".join(f"{k} IS NOT DISTINCT FROM ?" for k in keys)
            (persons,) = con.execute(
                f"SELECT count(DISTINCT person_id) FROM register_visit WHERE hba1c_mmol_mol < {cutoff} AND {where}",
                [row[k] for k in keys]).fetchall()[0]
            assert persons >= threshold, (keys, row)
    finally:
        con.close()
