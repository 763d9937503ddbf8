from __future__ import annotations

from datetime import date

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edge.releases import delete_ended_releases
from governance import service, store
from governance.values import ApprovedRequest
from hdp.settings import holder
from pipelines.release import ReleaseError, assemble, private_staging_dir, variables_by_table


def _research(settings, holder, rows):
    path = settings.research_db(holder)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE register_visit (person_id VARCHAR, birth_year INTEGER, visit_date DATE, hba1c_mmol_mol DOUBLE)"
    )
    if rows:
        con.executemany("INSERT INTO register_visit VALUES (?, ?, ?, ?)", rows)
    con.close()


PERSON_MAP = pa.table(
    {
        "holder": ["ndr", "ndr", "ndr", "region_uppsala"],
        "person_id": ["a1", "a2", "a3", "u1"],
        "release_person_id": ["P1", "P2", "P3", "P1"],
        "consent_key": ["c1", "c2", "c3", "c1"],
    }
)


def _request(**kw):
    base = dict(
        request_id=7,
        project="p",
        purpose="scientific_research",
        holders=("ndr", "region_uppsala"),
        variables=("register_visit.birth_year", "register_visit.hba1c_mmol_mol"),
        output_tier="aggregate",
        approvals=(),
        period=(None, None),
    )
    return ApprovedRequest(**{**base, **kw})


def test_assemble_links_holders_excludes_opted_out_and_unlinked(hdp_home):
    _research(
        hdp_home,
        "ndr",
        [
            ("a1", 1950, "2024-01-01", 50.0),
            ("a2", 1960, "2024-02-01", 60.0),
            ("a3", 1970, "2024-03-01", 70.0),
            (None, 1980, "2024-03-01", 80.0),
        ],
    )
    _research(hdp_home, "region_uppsala", [("u1", 1950, "2024-05-01", 55.0)])
    staging = hdp_home.releases_dir / ".staging"
    result = assemble(
        _request(),
        person_map=PERSON_MAP,
        excluded_consent_keys=frozenset({"c2"}),
        staging=staging,
        settings=hdp_home,
    )
    table = pq.read_table(staging / "register_visit.parquet")
    assert set(table.column_names) == {"person_id", "holder", "birth_year", "hba1c_mmol_mol"}
    assert sorted(table.column("person_id").to_pylist()) == ["P1", "P1", "P3"]  # P2 opted out
    assert result.excluded_persons_consent == 1
    assert result.excluded_rows_unlinked == 1
    assert result.persons == 2
    assert not (staging / "consent_link.parquet").exists()  # never beside what researchers may read
    private = private_staging_dir(hdp_home, "rel-00007")
    link = pq.read_table(private / "consent_link.parquet").to_pylist()
    assert link == [{"person_id": "P1", "consent_key": "c1"}, {"person_id": "P3", "consent_key": "c3"}]
    keys = duckdb.connect(str(private / "cell_keys.duckdb"), read_only=True)
    assert keys.execute("SELECT count(*), count(DISTINCT person_no) FROM person_key").fetchone() == (2, 2)
    assert keys.execute(
        "SELECT count(*), min(record_key) >= 0, max(record_key) <= 255 FROM record_key__register_visit"
    ).fetchone() == (3, True, True)
    con = duckdb.connect(str(staging / "release.duckdb"), read_only=True)
    assert con.execute("select count(*) from register_visit").fetchone()[0] == 3


def test_assemble_is_byte_identical_on_rerun(hdp_home):
    _research(hdp_home, "ndr", [(f"a{i}", 1950 + i % 30, "2024-01-01", 40.0 + i) for i in range(1, 4)])
    _research(hdp_home, "region_uppsala", [("u1", 1950, "2024-05-01", 55.0)])
    digests = []
    for n in range(2):
        staging = hdp_home.releases_dir / f".staging{n}"
        assemble(
            _request(),
            person_map=PERSON_MAP,
            excluded_consent_keys=frozenset(),
            staging=staging,
            settings=hdp_home,
        )
        digests.append((staging / "register_visit.parquet").read_bytes())
    assert digests[0] == digests[1]


def test_period_filter(hdp_home):
    _research(hdp_home, "ndr", [("a1", 1950, "2023-01-01", 50.0), ("a2", 1960, "2024-02-01", 60.0)])
    _research(hdp_home, "region_uppsala", [])
    staging = hdp_home.releases_dir / ".s"
    result = assemble(
        _request(period=(date(2024, 1, 1), date(2024, 12, 31))),
        person_map=PERSON_MAP,
        excluded_consent_keys=frozenset(),
        staging=staging,
        settings=hdp_home,
    )
    assert result.rows == {"register_visit": 1}


def test_unknown_column_and_bad_variable_are_refused(hdp_home):
    _research(hdp_home, "ndr", [])
    _research(hdp_home, "region_uppsala", [])
    with pytest.raises(ReleaseError, match="no column"):
        assemble(
            _request(variables=("register_visit.secret",)),
            person_map=PERSON_MAP,
            excluded_consent_keys=frozenset(),
            staging=hdp_home.releases_dir / ".x",
            settings=hdp_home,
        )
    with pytest.raises(ReleaseError, match="table.column"):
        variables_by_table(("register_visit; DROP",))


def test_revoked_release_is_deleted_and_marked(hdp_home):
    url = hdp_home.governance_url
    store.upgrade(url)
    with store.session_scope(url) as s:
        service.create_user(s, name="rita", roles=["researcher"])
        service.create_user(s, name="stig", roles=["steward"], holder_ids=["ndr"])
        rid = service.file_request(
            s,
            applicant="rita",
            project="Release deletion test",
            purpose="scientific_research",
            legal_basis="gdpr_6_1_e__9_2_j",
            ethics_ref="2025-01234-01",
            holders=["ndr"],
            variables=["register_visit.birth_year"],
            output_tier="aggregate",
        )
        service.submit_request(s, request_id=rid, actor="rita")
    with store.session_scope(url) as s:
        service.decide(
            s,
            request_id=rid,
            holder_id="ndr",
            reviewer="stig",
            decision="approve",
            justification="Fits the stated purpose.",
        )
    release_dir = hdp_home.releases_dir / "rel-00001"
    release_dir.mkdir(parents=True)
    (release_dir / "register_visit.parquet").write_bytes(b"x")
    with store.session_scope(url) as s:
        service.record_release(s, request_id=rid, release_id="rel-00001", manifest_sha256="0" * 64)
    assert delete_ended_releases(settings=hdp_home)["releases_deleted"] == 0  # still in force
    assert release_dir.exists()
    with store.session_scope(url) as s:
        service.revoke_permit(s, request_id=rid, actor="stig", justification="Ethics approval withdrawn.")
    assert delete_ended_releases(settings=hdp_home) == {
        "permits_expired": 0,
        "releases_deleted": 1,
        "releases_marked_deleted": 1,
    }
    assert not release_dir.exists()
    assert delete_ended_releases(settings=hdp_home)["releases_marked_deleted"] == 0  # idempotent


def test_cohort_criteria_keep_only_persons_with_a_qualifying_row(hdp_home):
    _research(
        hdp_home,
        "ndr",
        [
            ("a1", 1950, "2024-01-01", 50.0),
            ("a2", 1960, "2024-02-01", 60.0),
            ("a2", 1960, "2024-03-01", 40.0),
            ("a3", 1970, "2024-03-01", 70.0),
        ],
    )
    _research(hdp_home, "region_uppsala", [("u1", 1950, "2024-05-01", 65.0)])
    request = _request(
        cohort_criteria={
            "register_visit.hba1c_mmol_mol": {">=": 60},
            "register_visit.birth_year": {"between": [1955, 1975]},
        }
    )
    staging = hdp_home.releases_dir / ".c"
    assemble(
        request, person_map=PERSON_MAP, excluded_consent_keys=frozenset(), staging=staging, settings=hdp_home
    )
    # P1 (a1 + u1) has a row >= 60 (u1) but born 1950: out; P2 keeps *all* its rows, P3 in.
    rows = pq.read_table(staging / "register_visit.parquet").to_pylist()
    assert sorted((r["person_id"], r["hba1c_mmol_mol"]) for r in rows) == [
        ("P2", 40.0),
        ("P2", 60.0),
        ("P3", 70.0),
    ]


@pytest.mark.parametrize(
    "criteria",
    [
        {"register_visit.hba1c_mmol_mol": {"like": "%"}},
        {"register_visit.hba1c_mmol_mol": {">=": [1, 2]}},
        {"register_visit.hba1c_mmol_mol; DROP TABLE x": {">=": 1}},
        {"register_visit.secret": {">=": 1}},
    ],
)
def test_cohort_criteria_that_cannot_be_applied_are_refused(hdp_home, criteria):
    _research(hdp_home, "ndr", [("a1", 1950, "2024-01-01", 50.0)])
    _research(hdp_home, "region_uppsala", [])
    with pytest.raises(ReleaseError, match="cohort criteria"):
        assemble(
            _request(cohort_criteria=criteria),
            person_map=PERSON_MAP,
            excluded_consent_keys=frozenset(),
            staging=hdp_home.releases_dir / ".bad",
            settings=hdp_home,
        )


def test_release_policy_generalises_birth_year_to_five_year_bands(hdp_home):
    _research(hdp_home, "ndr", [("a1", 1953, "2024-01-01", 50.0)])
    _research(hdp_home, "region_uppsala", [])
    staging = hdp_home.releases_dir / ".g"
    assemble(
        _request(),
        person_map=PERSON_MAP,
        excluded_consent_keys=frozenset(),
        staging=staging,
        settings=hdp_home,
    )
    assert pq.read_table(staging / "register_visit.parquet").column("birth_year").to_pylist() == [1950]


def test_record_level_release_is_made_k_anonymous_by_local_suppression(hdp_home):
    k = max(holder("ndr").k_anonymity, holder("region_uppsala").k_anonymity)
    persons = [f"a{i}" for i in range(k + 1)]
    person_map = pa.table(
        {
            "holder": ["ndr"] * len(persons),
            "person_id": persons,
            "release_person_id": [f"P{i}" for i in range(len(persons))],
            "consent_key": [f"c{i}" for i in range(len(persons))],
        }
    )
    # k persons share a band; one is alone in 1990-1994: their birth year must not be released.
    rows = [(p, 1950, "2024-01-01", 50.0) for p in persons[:-1]] + [(persons[-1], 1991, "2024-01-01", 50.0)]
    _research(hdp_home, "ndr", rows)
    _research(hdp_home, "region_uppsala", [])
    staging = hdp_home.releases_dir / ".k"
    result = assemble(
        _request(output_tier="record"),
        person_map=person_map,
        excluded_consent_keys=frozenset(),
        staging=staging,
        settings=hdp_home,
    )
    years = pq.read_table(staging / "register_visit.parquet").column("birth_year").to_pylist()
    assert 1990 not in years and years.count(1950) == k
    report = result.disclosure["register_visit"]
    assert report["k"] == k and report["persons_suppressed"] == 1 and report["rows_dropped"] == 1


def test_period_filter_reads_fhir_datetimes_and_leaves_out_partial_dates(hdp_home):
    """The new FHIR tables filter on their delivered dateTime (offsets kept); a partial date has
    no day to compare, so it falls outside a period rather than failing the release."""
    path = hdp_home.research_db("region_uppsala")
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE immunization (person_id VARCHAR, code VARCHAR, occurrence_time VARCHAR)")
        con.executemany(
            "INSERT INTO immunization VALUES (?, ?, ?)",
            [("u1", "208", "2024-03-01T10:00:00-05:00"), ("u1", "10", "2019-04"), ("u1", "08", "2023-12-31")],
        )
    _research(hdp_home, "ndr", [])
    result = assemble(
        _request(
            variables=("immunization.code",),
            holders=("ndr", "region_uppsala"),
            period=(date(2024, 1, 1), date(2024, 12, 31)),
        ),
        person_map=PERSON_MAP,
        excluded_consent_keys=frozenset(),
        staging=hdp_home.releases_dir / ".s",
        settings=hdp_home,
    )
    assert result.rows == {"immunization": 1}
