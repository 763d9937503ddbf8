"""The query ledger seen from the access layer: distinct aggregate queries count against the
permit's budget, repeats are free, nothing literal is kept, and the follow-up recognises the
attack shapes from real queries."""

from __future__ import annotations

import json

import pytest
from access_support import World

from access.errors import Refusal
from access.ledger import MemoryLedger
from access.ports import User
from access.service import AccessService

ALICE = User("alice", frozenset({"researcher"}))
PNR = "194512249876"  # a personnummer-looking literal a researcher might type


@pytest.fixture(scope="module")
def lworld(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("ledger_home"), persons=300, visits=1_500)
    w.ledger = MemoryLedger(budgets={2: 3})  # permit 2 is alice's aggregate-only permit
    w.service = AccessService(w.settings, w.gov, ledger=w.ledger)
    yield w
    w.service.close()


def ask(w, sql):
    return json.loads(w.service.query(ALICE, "r_agg", sql).body)


def test_budget_counts_distinct_queries_and_repeats_are_free(lworld):
    w = lworld
    w.ledger.recorded.clear()
    first = ask(w, "SELECT sex, count(*) FROM register_visit GROUP BY sex")
    ask(w, "SELECT county, count(*) FROM register_visit GROUP BY county")
    ask(w, "SELECT count(*) FROM register_visit")
    with pytest.raises(Refusal) as info:
        ask(w, "SELECT diabetes_type, count(*) FROM register_visit GROUP BY diabetes_type")
    assert info.value.reason == "ledger.budget_exhausted" and info.value.status == 403
    # Asked before (even spelled differently): the same answer, no budget needed.
    assert ask(w, "SELECT sex, count(*)\nFROM register_visit GROUP BY 1") == first
    # Record-level permits are not aggregate queries: no ledger, no budget.
    w.service.query(ALICE, "r_rec", "SELECT count(*) FROM register_visit")
    assert {r.permit_id for r in w.ledger.recorded} == {2}
    entries = [e for e in w.service.audit.entries() if e.get("reason") == "ledger.budget_exhausted"]
    assert entries and entries[-1]["decision"] == "refused"


def test_ledger_keeps_cells_but_no_literal(lworld):
    w = lworld
    w.ledger.recorded.clear()
    w.ledger.budgets[2] = 100
    ask(w, f"SELECT sex, count(*) FROM register_visit WHERE county <> '{PNR}' GROUP BY sex")
    (rec,) = w.ledger.recorded
    text = repr(rec.entry)
    assert PNR not in text and "county" not in text  # digests only, apart from the published cells
    assert rec.entry.cells and all(len(c) == 2 for c in rec.entry.cells)
    assert rec.entry.measures == ("rows",)


def test_follow_up_recognises_differencing_from_real_queries(lworld):
    w = lworld
    w.ledger.recorded.clear()
    w.ledger.budgets[2] = 100
    small = "birth_year = 1950 AND sex = 'F'"
    ask(w, "SELECT county, count(DISTINCT person_id) FROM register_visit GROUP BY county")
    ask(w, f"SELECT county, count(DISTINCT person_id) FROM register_visit WHERE {small} GROUP BY county")
    ask(
        w, f"SELECT county, count(DISTINCT person_id) FROM register_visit WHERE NOT ({small}) GROUP BY county"
    )
    ask(
        w,
        "SELECT county, count(DISTINCT person_id) FROM register_visit WHERE hba1c_mmol_mol < 50 GROUP BY county",
    )
    ask(
        w,
        "SELECT county, count(DISTINCT person_id) FROM register_visit WHERE hba1c_mmol_mol < 51 GROUP BY county",
    )
    ask(w, "SELECT sex, count(*) FROM register_visit WHERE hba1c_mmol_mol < 50 GROUP BY sex")  # another table
    kinds = {(f.kind, f.first_id, f.second_id) for f in w.ledger.follow_up()}
    assert ("complementary", 2, 3) in kinds
    assert ("near_duplicate", 4, 5) in kinds
    assert ("differencing", 1, 4) in kinds
    assert not any(6 in (a, b) for _, a, b in kinds)
