"""restricted/ (and everything under it), the key store, the governance store and the audit
files are the owner's only (directories 0700, files 0600), whatever the process umask (issue 12).

Files that libraries create with their own modes count too: DuckDB's database, WAL and spill
files, SQLite's WAL and shared-memory files, the generator's landing files, Parquet written by
DuckDB. They are private because the restricted zone's directories carry an owner-only default
ACL (``hdp.settings.ensure_private_dir``) and the governance store's file is created 0600
before SQLite opens it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from hdp import settings as settings_module
from hdp.settings import (
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    ensure_private_dir,
    make_private_file,
    open_private,
)


def _modes(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (and root) whose permissions are not owner-only."""
    wrong = {}
    for p in [root, *root.rglob("*")]:
        mode = p.lstat().st_mode
        want = PRIVATE_DIR_MODE if stat.S_ISDIR(mode) else PRIVATE_FILE_MODE
        if stat.S_IMODE(mode) != want:
            wrong[str(p.relative_to(root.parent))] = oct(stat.S_IMODE(mode))
    return wrong


@pytest.fixture
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o022, 0o000], indirect=True, ids=["umask022", "umask000"])
def test_everything_private_is_created_owner_only_whatever_the_umask(umask, hdp_home, kek_env, monkeypatch):
    from edge import stages
    from governance import service, store
    from governance.values import ApprovedRequest
    from hdp.audit import AuditLog
    from pipelines.release import assemble, release_domain, release_id_for
    from pipelines.release_identity import release_person_map
    from pipelines.warehouse import write_connection
    from synthetic_data.generate import generate

    settings = hdp_home
    generate(settings, seed=5, persons=40, defect_rate=0.05)  # landing files, defect manifest
    for holder, sources in (("ndr", ("register", "prom")), ("region_uppsala", ("fhir",))):
        for source in sources:
            stages.ingest_source(holder, source)  # raw zone, quarantine (with copies of originals)
        stages.pseudonymise(holder)  # key store, person_link, staging, research file
    request = ApprovedRequest(
        request_id=3,
        project="p",
        purpose="scientific_research",
        holders=("ndr", "region_uppsala"),
        variables=("register_visit.birth_year", "condition.code"),
        output_tier="aggregate",
        approvals=(),
        period=(None, None),
    )
    assemble(
        request,
        person_map=release_person_map(
            holder_ids=request.holders, release_domain=release_domain(3), settings=settings
        ),
        excluded_consent_keys=frozenset(),
        staging=settings.releases_dir / release_id_for(3),
        settings=settings,
    )  # consent link and cell keys in restricted/releases/
    # DuckDB's own files while a connection is open: the WAL and spill files
    with write_connection(settings.raw_db("ndr")) as con:
        spill = settings.ensure_restricted(settings.scratch_dir / "spill-test")
        con.execute("SET memory_limit = '64MB'")
        con.execute("SET threads = 1")
        con.execute(f"SET temp_directory = '{spill}'")
        con.execute(
            "CREATE TEMP TABLE big AS SELECT md5(i::VARCHAR) || md5((i + 1)::VARCHAR) AS v "
            "FROM range(1500000) t(i)"
        )  # more than the memory limit: spilled
        con.execute("CREATE TABLE wal_test AS SELECT 1 AS x")  # in the WAL until the connection closes
        open_now = _modes(settings.restricted)
        spilled = list(spill.iterdir())
        wal = settings.raw_db("ndr").with_name("raw.duckdb.wal")
        wal_exists = wal.exists()
        con.execute("DROP TABLE wal_test")
    assert open_now == {}
    assert spilled and wal_exists

    store.upgrade(settings.governance_url)
    with store.session_scope(settings.governance_url) as session:
        service.create_user(session, name="anna", roles=["researcher"], holder_ids=[], actor="test")
    AuditLog(settings.audit_dir / "audit.jsonl").append({"kind": "test"})

    assert _modes(settings.restricted) == {}
    governance_db = Path(settings.governance_url.removeprefix("sqlite:///"))
    sqlite_files = [p for p in governance_db.parent.glob(governance_db.name + "*")]
    assert governance_db in sqlite_files
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in sqlite_files} == {
        p.name: oct(PRIVATE_FILE_MODE) for p in sqlite_files
    }
    assert _modes(settings.audit_dir) == {}
    assert (settings.keys_dir / "keystore.json").exists()


@pytest.mark.parametrize(
    "umask", [0o022, 0o000, 0o277], indirect=True, ids=["umask022", "umask000", "umask277"]
)
def test_private_dirs_and_files_whatever_the_umask(umask, tmp_path):
    top = tmp_path / "zone"
    leaf = ensure_private_dir(top / "a" / "b", top=top)
    assert _modes(top) == {}
    # what another program creates inside, with its own modes, is owner-only too (default ACL)
    fd = os.open(leaf / "lib.db", os.O_WRONLY | os.O_CREAT, 0o666)
    os.close(fd)
    (leaf / "sub").mkdir()
    os.close(open_private(leaf / "ours.json"))
    make_private_file(leaf / "store.sqlite")
    assert _modes(top) == {}  # a default ACL overrides the umask, even 0277


def test_existing_wider_directories_and_files_are_narrowed(tmp_path):
    top = tmp_path / "zone"
    (top / "a").mkdir(parents=True)
    os.chmod(top, 0o755)
    os.chmod(top / "a", 0o777)
    (top / "a" / "f").write_text("x")
    os.chmod(top / "a" / "f", 0o644)
    ensure_private_dir(top / "a", top=top)
    make_private_file(top / "a" / "f")
    assert _modes(top) == {}
    assert (top / "a" / "f").read_text() == "x"  # narrowed, not truncated
    with pytest.raises(ValueError):
        ensure_private_dir(tmp_path / "elsewhere", top=top)


def test_restricted_root_is_private_as_soon_as_a_path_in_it_is_asked_for(hdp_home):
    root = hdp_home.home / "restricted"
    raw = hdp_home.raw_db("ndr")  # asking for the path makes the root, not the holder's folder
    assert root.is_dir() and not raw.parent.exists()
    assert stat.S_IMODE(root.stat().st_mode) == PRIVATE_DIR_MODE
    raw.parent.mkdir(parents=True)  # made the ordinary way, by any component
    assert stat.S_IMODE(raw.parent.stat().st_mode) == PRIVATE_DIR_MODE
    with pytest.raises(ValueError):
        hdp_home.ensure_restricted(hdp_home.research_db("ndr").parent)


def test_without_acl_support_directories_are_still_0700(tmp_path, monkeypatch, caplog):
    def no_acl(*_args, **_kwargs):
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", no_acl)
    monkeypatch.setattr(os, "getxattr", no_acl)
    monkeypatch.setattr(settings_module, "_acl_unsupported_warned", False)
    old = os.umask(0)
    try:
        top = ensure_private_dir(tmp_path / "zone" / "x", top=tmp_path / "zone")
        os.close(open_private(top / "ours"))
    finally:
        os.umask(old)
    assert _modes(tmp_path / "zone") == {}
    assert "no POSIX ACLs" in caplog.text
