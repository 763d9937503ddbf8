"""The HTTP API end to end through FastAPI's test client (real app, in-memory governance)."""

from __future__ import annotations

import io

import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from access_support import auth


def q(client, token, release, sql, fmt="json"):
    return client.post(f"/releases/{release}/query", json={"sql": sql, "format": fmt}, headers=auth(token))


def test_health_and_me(client, world):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/me").status_code == 401
    r = client.get("/me", headers=auth("nope"))
    assert r.status_code == 401 and r.json()["error"] == "auth.invalid_token"
    assert client.get("/me", headers=auth(world.alice)).json()["name"] == "alice"


def test_releases_and_schema_are_own_only(client, world):
    rel = client.get("/releases", headers=auth(world.alice)).json()
    assert sorted(r["release_id"] for r in rel) == ["r_agg", "r_rec"]
    schema = client.get("/releases/r_rec/schema", headers=auth(world.alice)).json()
    assert set(schema["tables"]) == {"patient", "register_visit"}
    cols = [c["name"] for c in schema["tables"]["register_visit"]]
    assert "smoking" not in cols and "hba1c_mmol_mol" in cols and "person_id" in cols
    r = client.get("/releases/r_bob/schema", headers=auth(world.alice))
    assert r.status_code == 403 and r.json()["error"] == "permit.none"
    assert client.get("/releases/..%2Fx/schema", headers=auth(world.alice)).status_code in (403, 404)


def test_record_query_formats(client, world):
    sql = "SELECT sex, count(*) AS n FROM register_visit GROUP BY sex ORDER BY sex"
    j = q(client, world.alice, "r_rec", sql).json()
    assert [row[0] for row in j["rows"]] == ["F", "M"]
    arrow = q(client, world.alice, "r_rec", sql, "arrow")
    t = ipc.open_stream(io.BytesIO(arrow.content)).read_all()
    assert t.num_rows == 2 and arrow.headers["X-HDP-Rows"] == "2"
    # Record level: files and results beyond a preview leave only as checked outputs (access.outputs).
    for fmt, query in (
        ("csv", sql),
        ("parquet", "SELECT * FROM register_visit"),
        ("json", "SELECT * FROM patient"),
    ):
        r = q(client, world.alice, "r_rec", query, fmt)
        assert r.status_code == 403 and r.json()["error"] == "output.review_required"
    # The aggregate tier's results are disclosure-controlled and leave directly, in any format.
    csv = q(client, world.alice, "r_agg", sql, "csv")
    assert csv.status_code == 200 and csv.text.splitlines()[0] == '"sex","n"'
    pqr = q(client, world.alice, "r_agg", sql, "parquet")
    assert pq.read_table(io.BytesIO(pqr.content)).num_rows == 2


def test_unpermitted_column_and_other_release(client, world):
    r = q(client, world.alice, "r_rec", "SELECT smoking FROM register_visit")
    assert r.status_code == 400 and r.json()["error"] == "sql.invalid"
    r = q(client, world.bob, "r_rec", "SELECT 1")
    assert r.status_code == 403 and r.json()["error"] == "permit.none"
    r = q(client, world.olga, "r_rec", "SELECT 1")
    assert r.status_code == 403 and r.json()["error"] == "role.not_researcher"


def test_revoked_permit_refused_at_next_query(client, world):
    assert q(client, world.bob, "r_bob", "SELECT count(*) FROM patient").status_code == 200
    world.gov.revoke(3)
    r = q(client, world.bob, "r_bob", "SELECT count(*) FROM patient")
    assert r.status_code == 403 and r.json()["error"] == "permit.none"


def test_aggregate_tier_suppresses_and_perturbs(client, world):
    r = q(
        client,
        world.alice,
        "r_agg",
        "SELECT county, sex, count(*) AS n FROM register_visit GROUP BY county, sex ORDER BY county, sex",
    )
    assert r.status_code == 200, r.text
    body = r.json()
    names = [c["name"] for c in body["columns"]]
    assert names == ["county", "sex", "n"]
    d = body["disclosure"]
    withheld = d["suppressed_persons"] + d["suppressed_dominance"] + d["suppressed_after_perturbation"]
    assert d["published"] == len(body["rows"]) == d["cells"] - withheld
    assert r.headers["X-HDP-Cells-Suppressed"] == str(withheld)
    # Nothing small, nothing blanked; every count on the release's grid (multiples of 10:
    # region_skane, in this release, rounds to 10).
    assert all(n is not None and n >= 10 and n % 10 == 0 for *_, n in body["rows"])
    assert [tuple(row[:2]) for row in body["rows"]] == sorted(tuple(row[:2]) for row in body["rows"])
    r = q(client, world.alice, "r_agg", "SELECT * FROM register_visit")
    assert r.status_code == 400 and r.json()["error"] == "aggregate.shape"
    r = q(client, world.alice, "r_agg", "SELECT sex, max(hba1c_mmol_mol) FROM register_visit GROUP BY sex")
    assert r.json()["error"] == "aggregate.aggregate_not_allowed"
    assert "Hint:" in r.json()["message"]


def test_aggregate_tier_refuses_keys_that_can_be_records(client, world):
    """A key that singles out persons (the pseudonym and visit of everyone with a very high
    HbA1c) would make each small cell one person's record: the grammar refuses it outright,
    since the pseudonym may appear only inside count(DISTINCT person_id)."""
    r = q(
        client,
        world.alice,
        "r_agg",
        "SELECT CASE WHEN hba1c_mmol_mol > 85 THEN person_id || ' ' || CAST(visit_date AS VARCHAR) "
        "ELSE 'everyone else' END AS who, count(*) AS n FROM register_visit GROUP BY who",
    )
    assert r.status_code == 400
    assert r.json()["error"] == "aggregate.group_key"


def test_operator_audit_endpoints(client, world):
    q(client, world.alice, "r_rec", "SELECT 1")
    assert client.get("/audit/verify", headers=auth(world.alice)).status_code == 403
    v = client.get("/audit/verify", headers=auth(world.olga)).json()
    assert v["ok"] and v["entries"] >= 1
    rep = client.get("/audit/report", headers=auth(world.olga)).json()
    assert any(u["user"] == "alice" for u in rep["users"])
