"""A release holds only the requested columns: checks whose filter reads an absent column skip."""

from __future__ import annotations

import duckdb

from pipelines.quality.gate import run_gate


def test_check_whose_where_reads_an_unreleased_column_is_skipped_not_errored(hdp_home):
    release = hdp_home.releases_dir / "rel-cols"
    release.mkdir(parents=True)
    con = duckdb.connect(str(release / "release.duckdb"))
    con.execute("CREATE TABLE condition (person_id VARCHAR, holder VARCHAR, code VARCHAR)")
    con.execute("INSERT INTO condition VALUES ('p1', 'region_uppsala', 'E11.9')")
    con.close()
    result = run_gate("release", release_dir=release, run_id="cols", settings=hdp_home, render_docs=False)
    verdicts = {c.id: c.verdict for c in result.checks}
    assert verdicts["fhir.condition.code.known"] == "skipped"  # its filter reads code_system
    assert "error" not in verdicts.values()
