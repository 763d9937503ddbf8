"""A real-shaped FHIR bulk export delivered to a region, end to end (issue 15, "Done when").

Two deliveries run through the stages as the DAGs run them (ingest → raw gate → pseudonymise →
research gate):

* ``generated``: the project's real-shaped export (:mod:`synthetic_data.fhir_real`: Synthea's
  shapes, 21 resource types, US Core profiles, narratives, conditional references, no Swedish
  identifier), always;
* ``real``: real generator output (Synthea, from the public smart-on-fhir/sample-bulk-fhir-datasets,
  e.g. its ``10-patients`` branch), when a copy lies at ``$HDP_SYNTHEA_SAMPLE`` or
  ``../shared/testdata/synthea-bulk/`` beside the repository. Third-party data is read from
  there, never committed.

Each must:

* pass the raw gate;
* keep every valid resource, with counts that add up (read = kept, per type);
* link every patient through the identifiers it has;
* leave no row with a NULL person in the research zone;
* keep every name, address and identifier of the delivery inside ``restricted/``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import duckdb
import pytest

from edge import stages
from synthetic_data.fhir_real import iter_real_resources
from tests.e2e.leakscan import find_leaks, landing_identifiers_and_names
from tests.fhir.real_shapes import sample_files

REPO = Path(__file__).resolve().parents[2]
HOLDER = "region_uppsala"


def _real_sample() -> Path | None:
    for candidate in (
        os.environ.get("HDP_SYNTHEA_SAMPLE"),
        REPO.parent / "shared" / "testdata" / "synthea-bulk",
    ):
        if candidate and Path(candidate).is_dir() and any(Path(candidate).glob("Patient*.ndjson")):
            return Path(candidate)
    return None


def _write_generated(landing: Path) -> None:
    by_type: dict[str, list[str]] = defaultdict(list)
    for resource in iter_real_resources(15, 12, encounters=12, providers=4):
        by_type[resource["resourceType"]].append(json.dumps(resource, separators=(",", ":")))
    for rtype, lines in by_type.items():
        (landing / f"{rtype}.000.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _delivered_lines(landing: Path) -> Counter[str]:
    """Resources per type as delivered (one per non-blank NDJSON line)."""
    counts: Counter[str] = Counter()
    for path in landing.glob("*.ndjson"):
        counts[path.name.split(".")[0]] += sum(1 for line in path.read_bytes().splitlines() if line.strip())
    return counts


@pytest.fixture(params=["generated", "real"])
def delivered(request, hdp_home):
    landing = hdp_home.landing_dir(HOLDER) / "fhir"
    landing.mkdir(parents=True)
    if request.param == "real":
        sample = _real_sample()
        if sample is None:
            pytest.skip("no real Synthea bulk sample beside the repository (set HDP_SYNTHEA_SAMPLE)")
        for _, path in sample_files(sample):  # the exporter's own log.ndjson is no delivery
            shutil.copy(path, landing / path.name)
    else:
        _write_generated(landing)
    (landing.parent / "delivery.json").write_text(
        json.dumps({"holder": HOLDER, "extract_date": "2026-11-30", "files": []}), encoding="utf-8"
    )
    return hdp_home, _delivered_lines(landing)


def test_a_real_bulk_export_is_kept_linked_and_contained(delivered):
    settings, expected = delivered
    # A real sample may be partial (the public samples' large files are not always at hand): what
    # is asserted below holds for whichever types it carries.
    assert expected["Patient"], "the delivery has patients"

    ingested = stages.ingest_source(HOLDER, "fhir")
    assert ingested["quarantined"] == {}, "every resource in the real export is valid FHIR R4"
    assert ingested["resources_read"] == dict(expected)
    assert ingested["resources_valid"] == dict(expected), "every valid resource is kept, of every type"

    stages.validate("raw", run_id="real-delivery", holder_id=HOLDER)  # raises if the gate blocks

    result = stages.pseudonymise(HOLDER)
    assert result["persons"] == expected["Patient"], "every patient is linked through their identifiers"
    assert result["rows_in"] == (
        result["rows_out"] + result["quarantined"] + sum(result["excluded_by_quality"].values())
    )
    with duckdb.connect(str(settings.research_db(HOLDER)), read_only=True) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        linked = 0
        for table in tables:
            columns = {r[0] for r in con.execute(f'DESCRIBE "{table}"').fetchall()}
            if "person_id" not in columns:
                continue
            nulls, rows = con.execute(
                f'SELECT count(*) FILTER (person_id IS NULL), count(*) FROM "{table}"'
            ).fetchone()
            assert nulls == 0, f"{table}: rows without a person"
            linked += rows
    assert linked == result["rows_out"], "every research row belongs to a person"

    stages.validate("research", run_id="real-delivery", holder_id=HOLDER)

    identifiers, names = landing_identifiers_and_names(settings.home)
    assert identifiers and names
    assert find_leaks(settings.home, identifiers | names) == []
