"""The walking skeleton, end to end, through Airflow.

One module-scoped run of ``hdp demo`` (generate → ingest/pseudonymise DAGs → federated approval
→ release DAG → researcher query) on a temporary data home and AIRFLOW_HOME, then assertions
about what it left behind.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.e2e.leakscan import find_byte_leaks, find_cell_leaks, landing_identifiers_and_names

pytestmark = pytest.mark.slow

PERSONS = 400
DEFECT_RATE = 0.01


def _env(home: Path, kek: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "HDP_"))}
    env.update(
        {
            "HDP_HOME": str(home),
            "AIRFLOW_HOME": str(home / "airflow"),
            "HDP_KEK": kek,
            "HDP_METRICS_URL": f"sqlite:///{home / 'monitoring' / 'metrics.sqlite'}",
            "GX_ANALYTICS_ENABLED": "false",
        }
    )
    return env


def _hdp(env: dict[str, str], *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"hdp {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    home = tmp_path_factory.mktemp("e2e") / "hdp_home"
    env = _env(home, base64.b64encode(os.urandom(32)).decode())
    summary_path = home.parent / "summary.json"
    proc = _hdp(
        env,
        "demo",
        "--persons",
        str(PERSONS),
        "--defect-rate",
        str(DEFECT_RATE),
        "--summary-json",
        str(summary_path),
    )
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    return home, env, summary, proc


def test_demo_query_succeeds_for_the_permitted_researcher_and_is_refused_for_another(demo):
    _, _, summary, _ = demo
    assert all(state == "success" for state in summary["dag_runs"].values()), summary["dag_runs"]
    assert summary["researcher_query"]["status"] == 200
    assert summary["researcher_query"]["result"]["row_count"] > 0
    assert summary["other_researcher_status"] == 403


def test_demo_builds_both_tiers_and_the_aggregate_release_answers_a_grouped_query(demo):
    home, _, summary, proc = demo
    releases = summary["releases"]
    assert set(releases) == {"record", "aggregate"}
    record, aggregate = releases["record"]["release_id"], releases["aggregate"]["release_id"]
    assert (record, aggregate) == (
        summary["release_id"],
        summary["aggregate_release_id"],
    ) and record != aggregate
    for tier, release_id in (("record", record), ("aggregate", aggregate)):
        manifest = json.loads((home / "releases" / release_id / "manifest.json").read_text())
        assert manifest["request"]["output_tier"] == tier
        assert manifest["request"]["request_id"] == releases[tier]["request_id"]
        assert release_id in releases[tier]["try"]
    assert not [
        v
        for v in json.loads((home / "releases" / aggregate / "manifest.json").read_text())["request"][
            "variables"
        ]
        if v.endswith(".person_id")
    ]  # anonymised: no linkage variable requested
    answer = summary["aggregate_query"]
    assert answer["status"] == 200 and "GROUP BY sex" in answer["sql"]
    result = answer["result"]
    assert (result["release_id"], result["output_tier"]) == (aggregate, "aggregate")
    assert [c["name"] for c in result["columns"]] == ["sex", "persons", "visits", "mean_hba1c"]
    assert {row[0] for row in result["rows"]} == {"F", "M"}  # one published cell per sex
    assert result["disclosure"]["published"] == result["row_count"] == 2
    assert all(persons > 0 and visits >= persons for _, persons, visits, _ in result["rows"])
    # the printed summary names both releases, so a user can try both at once
    assert record in proc.stdout and aggregate in proc.stdout


def test_no_identifier_or_name_outside_the_restricted_zone(demo):
    home, _, _, proc = demo
    ids, names = landing_identifiers_and_names(home)
    assert len(ids) > PERSONS and len(names) > PERSONS / 2  # the scan has something to look for
    assert any(n[-1].isdigit() and not n[0].isdigit() for n in names)  # street addresses too
    # every cell of every DuckDB, Parquet and SQLite file, and every byte of every file (WAL,
    # freed pages, logs, Data Docs ...) outside restricted/
    assert find_cell_leaks(home, ids | names) == []
    assert find_byte_leaks(home, ids | names) == []
    # nor in what the run printed (the console is a log too)
    leaked_in_output = [n for n in ids | names if n in proc.stdout or n in proc.stderr]
    assert leaked_in_output == []


def test_restricted_zone_key_store_governance_store_and_audit_are_owner_only(demo):
    home, _, _, _ = demo
    import stat

    wide = [
        str(p.relative_to(home))
        for p in [
            home / "restricted",
            *(home / "restricted").rglob("*"),
            home / "audit",
            *(home / "audit").rglob("*"),
            *home.glob("governance.sqlite*"),
        ]
        if stat.S_IMODE(p.lstat().st_mode) & 0o077
    ]
    assert (home / "restricted" / "keys" / "keystore.json").exists() and (home / "governance.sqlite").exists()
    assert wide == []


def test_every_injected_defect_is_quarantined_or_flagged(demo):
    home, _, _, _ = demo
    manifest = [
        json.loads(line) for line in (home / "restricted/synthetic/defects.jsonl").read_text().splitlines()
    ]
    assert {d["defect_class"] for d in manifest} >= {
        "identifier.bad_checksum",
        "identifier.impossible_date",
        "value.out_of_range",
        "value.wrong_unit",
        "row.duplicate",
        "field.missing_required",
        "json.malformed_line",
        "file.not_utf8",
        "file.truncated",
        "fhir.wrong_resource_type",
        "fhir.invalid",
        "fhir.dangling_reference",
        "code.unknown",
    }
    caught: dict[str, set] = {}
    flagged_keys: dict[str, set] = {}
    for raw in (home / "restricted").glob("*/raw.duckdb"):
        holder = raw.parent.name
        con = duckdb.connect(str(raw), read_only=True)
        caught[holder] = set(con.execute("SELECT source_file, line_no FROM quarantine").fetchall())
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        flagged_keys[holder] = (
            {r[0] for r in con.execute("SELECT resource_key FROM fhir_flag").fetchall()}
            if "fhir_flag" in tables
            else set()
        )
        con.close()
    missed = []
    for d in manifest:
        key = (d["file"], d["line"])
        record_id = (d["record_key"] or "").rpartition("/")[2]
        if key in caught[d["holder"]] or (record_id and record_id in flagged_keys[d["holder"]]):
            continue
        missed.append((d["defect_id"], d["defect_class"], d["file"], d["line"]))
    assert missed == []


def test_opted_out_persons_are_absent_from_the_release(demo):
    home, env, summary, _ = demo
    from privacy.personnummer import InvalidIdentifier, parse

    release = home / "releases" / summary["release_id"]
    manifest = json.loads((release / "manifest.json").read_text())
    assert manifest["excluded"]["persons_by_consent"] == summary["opted_out_persons"] == 3
    # the demo's opt-outs are the first three valid identifiers of the register extract
    opted_out: list[str] = []
    for row in csv.DictReader(
        (home / "restricted/ndr/landing/register/ndr_visits.csv").open(encoding="utf-8"), delimiter=";"
    ):
        try:
            normalised = parse(row["personnummer"]).normalised
        except InvalidIdentifier:
            continue
        if normalised not in opted_out:
            opted_out.append(normalised)
        if len(opted_out) == 3:
            break
    code = (
        "import json,sys\nfrom privacy.domains import consent_key\n"
        "print(json.dumps([consent_key(p) for p in json.loads(sys.argv[1])]))"
    )
    keys = json.loads(
        subprocess.run(
            [sys.executable, "-c", code, json.dumps(opted_out)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert not (release / "consent_link.parquet").exists()  # restricted: never beside the release
    link = home / "restricted" / "releases" / release.name / "consent_link.parquet"
    released_keys = set(pq.read_table(link).column("consent_key").to_pylist())
    assert released_keys and not released_keys & set(keys)


def test_rerun_gives_identical_pseudonyms_and_release_files(demo):
    home, env, summary, _ = demo

    def research_ids() -> dict[str, list]:
        """Every holder's pseudonyms, from the table that lists its persons."""
        out = {}
        for db in sorted((home / "research").glob("*.duckdb")):
            table = "register_visit" if db.stem == "ndr" else "patient"
            con = duckdb.connect(str(db), read_only=True)
            out[db.stem] = con.execute(f"SELECT DISTINCT person_id FROM {table} ORDER BY 1").fetchall()
            con.close()
        return out

    before = research_ids()
    release = home / "releases" / summary["release_id"]
    published = {p.name: p.read_bytes() for p in release.glob("*.parquet")}
    _hdp(env, "run", "--stage", "pseudonymise")
    assert research_ids() == before
    # Rebuild the same release from the same inputs and keys: byte-identical Parquet files.
    code = (
        "import json,sys\nfrom pathlib import Path\nfrom edge.releases import rebuild_for_comparison\n"
        "print(json.dumps(rebuild_for_comparison(int(sys.argv[1]), Path(sys.argv[2]))))"
    )
    rebuilt_dir = home.parent / "rebuilt"
    subprocess.run(
        [sys.executable, "-c", code, str(summary["request_id"]), str(rebuilt_dir)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    rebuilt = {p.name: p.read_bytes() for p in rebuilt_dir.glob("*.parquet")}
    assert rebuilt.keys() == published.keys() and rebuilt == published
    # A retried release task (the worker died after publishing) reports the published release.
    code = (
        "import json,sys\nfrom edge.releases import build_release\n"
        "print(json.dumps(build_release(int(sys.argv[1]), run_id='retry').rows))"
    )
    retried = subprocess.run(
        [sys.executable, "-c", code, str(summary["request_id"])],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    manifest = json.loads((release / "manifest.json").read_text())
    assert json.loads(retried.stdout.strip().splitlines()[-1]) == manifest["rows"]
    assert {p.name: p.read_bytes() for p in release.glob("*.parquet")} == published
