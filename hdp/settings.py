"""Where everything lives, read once from the environment.

All state is under one data home, ``$HDP_HOME`` (default ``var/`` in the checkout).
Direct identifiers may only ever exist under ``$HDP_HOME/restricted/``; every other
path below is outside the restricted zone and must never hold one.

Layout (see docs/ARCHITECTURE.md)::

    restricted/keys/                   encrypted key store
    restricted/synthetic/defects.jsonl ground truth of injected defects
    restricted/<holder>/landing/       files exactly as the holder delivered them
    restricted/<holder>/raw.duckdb     raw zone (identifiable)
    restricted/<holder>/quarantine/    rejected originals + reasons
    research/<holder>.duckdb           research zone (holder-domain pseudonyms)
    releases/<release_id>/             Parquet + manifest.json + release.duckdb
    quality/                           GX results, Data Docs, history
    audit/                             hash-chained audit log
    governance.sqlite                  governance store (default)
    airflow/                           AIRFLOW_HOME (metadata DB, task logs)

``restricted/`` and every directory below it are the owner's only (0700), whatever the process
umask. The root is made so (:func:`ensure_private_dir`) as soon as any path inside it is asked
for, before anything can be created there, and gets a default ACL (where the file system has
POSIX ACLs) under which every file anyone creates below it (DuckDB's database, WAL and spill
files, landing files, Parquet) is 0600 and every directory 0700.
:meth:`Settings.ensure_restricted` makes a directory inside it the same way. Files that must be
private outside ``restricted/`` are created with :func:`open_private` / :func:`make_private_file`
(the governance store's SQLite file; the audit log makes its own files 0600).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMAS_DIR = REPO_ROOT / "schemas"

DEVELOPMENT = "development"
PRODUCTION = "production"


class SettingsError(RuntimeError):
    """Configuration that cannot be used safely."""


# --------------------------------------------------------------------------------------
# Owner-only files and directories, whatever the umask
# --------------------------------------------------------------------------------------

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600

#: ``system.posix_acl_default`` value granting the owner everything and group and others
#: nothing (Linux xattr layout: version 2, then tag u16, permissions u16, id u32 per entry;
#: ACL_USER_OBJ 0x01, ACL_GROUP_OBJ 0x04, ACL_OTHER 0x20). A file created in a directory that
#: has a default ACL takes its permissions from the ACL, not from the creator's umask, so this
#: holds even for files DuckDB or a library opens with mode 0666 under umask 0.
_OWNER_ONLY_DEFAULT_ACL = struct.pack("<I", 2) + b"".join(
    struct.pack("<HHI", tag, perm, 0xFFFFFFFF) for tag, perm in ((0x01, 7), (0x04, 0), (0x20, 0))
)
_acl_unsupported_warned = False


def _set_owner_only_default_acl(path: Path) -> bool:
    """Give directory ``path`` the owner-only default ACL; False where the file system has none."""
    global _acl_unsupported_warned
    try:
        if os.getxattr(path, "system.posix_acl_default") == _OWNER_ONLY_DEFAULT_ACL:
            return True
    except OSError:
        pass  # no default ACL yet (ENODATA), or no ACL support: try to set it
    try:
        os.setxattr(path, "system.posix_acl_default", _OWNER_ONLY_DEFAULT_ACL)
        return True
    except (OSError, AttributeError) as exc:  # AttributeError: no xattr calls on this platform
        if isinstance(exc, OSError) and exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        if not _acl_unsupported_warned:
            _acl_unsupported_warned = True
            log.warning(
                "no POSIX ACLs on the file system of %s: files other programs create in the restricted "
                "zone follow their umask (its directories stay 0700, so only the owner can reach them)",
                path,
            )
        return False


def _narrow(path: Path, mode: int) -> None:
    if os.stat(path).st_mode & 0o777 != mode:
        os.chmod(path, mode)


def ensure_private_dir(path: Path, *, top: Path | None = None) -> Path:
    """Make directory ``path`` exist and be the owner's only (0700), whatever the umask.

    Every directory from ``top`` (default: ``path`` itself; it must be ``path`` or one of its
    parents) down to ``path`` is created if missing and narrowed to 0700 if wider, and gets an
    owner-only default ACL (see ``_OWNER_ONLY_DEFAULT_ACL``), so that whatever is created inside
    later, by this process or by a library with its own modes, is owner-only too. Parents above
    ``top`` are created with the usual modes and never changed. Returns ``path``.
    """
    path = Path(path)
    top = path if top is None else Path(top)
    if top != path and top not in path.parents:
        raise ValueError(f"{top} is not {path} or one of its parents")
    top.parent.mkdir(parents=True, exist_ok=True)
    chain = [top, *reversed([p for p in path.parents if top in p.parents])]
    if path != top:
        chain.append(path)
    for d in chain:
        try:
            os.mkdir(d, PRIVATE_DIR_MODE)  # the umask can only narrow this; _narrow sets it exactly
        except FileExistsError:
            if not d.is_dir():
                raise
        _narrow(d, PRIVATE_DIR_MODE)
        _set_owner_only_default_acl(d)
    return path


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """``os.open`` of ``path`` creating it 0600 whatever the umask (an existing wider file is
    narrowed first). Returns the file descriptor; wrap it with ``os.fdopen``."""
    fd = os.open(path, flags | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o777 != PRIVATE_FILE_MODE:
            os.fchmod(fd, PRIVATE_FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_private_file(path: Path) -> Path:
    """Create ``path`` empty if missing, and make it 0600 (for files another library opens
    afterwards with its own modes, such as a SQLite database: SQLite gives its journal, WAL and
    shared-memory files the database file's permissions). A wider existing file is narrowed,
    unless it belongs to another user (then it is theirs to set)."""
    try:
        os.close(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        try:
            _narrow(path, PRIVATE_FILE_MODE)
        except PermissionError:
            pass
    return path


#: Restricted roots made private in this process: path -> inode (re-checked, in case the
#: directory was removed and made again by someone else).
_private_roots: dict[Path, int] = {}


def _private_root(path: Path) -> None:
    try:
        inode = os.stat(path).st_ino
    except FileNotFoundError:
        inode = None
    if inode is not None and _private_roots.get(path) == inode:
        return
    try:
        ensure_private_dir(path)
    except OSError as exc:  # a read-only or foreign data home: its writers fail on their own
        log.debug("could not make %s owner-only: %s", path, type(exc).__name__)
        return
    _private_roots[path] = os.stat(path).st_ino


@dataclass(frozen=True)
class Holder:
    """A data holder (region or register): a separate data controller."""

    id: str
    name: str
    kind: str
    sources: tuple[str, ...]
    min_cell_count: int
    k_anonymity: int
    reviewers_required: int
    county_code: str | None = None
    #: cell-key perturbation of aggregate results (``privacy.cellkey.PerturbationSettings``
    #: fields other than the threshold, which is ``min_cell_count``); readable by everyone
    perturbation: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Settings:
    home: Path
    environment: str
    governance_url: str

    # -- restricted zone -------------------------------------------------
    @property
    def restricted(self) -> Path:
        """The restricted zone's root, which exists and is owner-only (0700, with the owner-only
        default ACL) once any path inside it has been asked for: so whatever is created below
        it afterwards, by whichever component or library, is private whatever the umask."""
        root = self.home / "restricted"
        _private_root(root)
        return root

    def ensure_restricted(self, path: Path | None = None) -> Path:
        """Create ``path`` (default: the restricted zone's root) owner-only, with every directory
        between it and the root (see :func:`ensure_private_dir`). Every writer into the restricted
        zone calls this before it creates anything there. Returns ``path``."""
        target = Path(path) if path is not None else self.restricted
        if target != self.restricted and self.restricted not in target.parents:
            raise ValueError(f"{target} is not inside the restricted zone {self.restricted}")
        return ensure_private_dir(target, top=self.restricted)

    @property
    def scratch_dir(self) -> Path:
        """Working space of processes that hold identifiers: DuckDB spill files, staged tables."""
        return self.restricted / "tmp"

    @property
    def keys_dir(self) -> Path:
        return self.restricted / "keys"

    @property
    def defect_manifest(self) -> Path:
        return self.restricted / "synthetic" / "defects.jsonl"

    def holder_dir(self, holder_id: str) -> Path:
        return self.restricted / holder_id

    def landing_dir(self, holder_id: str) -> Path:
        return self.holder_dir(holder_id) / "landing"

    def raw_db(self, holder_id: str) -> Path:
        return self.holder_dir(holder_id) / "raw.duckdb"

    def quarantine_dir(self, holder_id: str) -> Path:
        return self.holder_dir(holder_id) / "quarantine"

    @property
    def release_private_dir(self) -> Path:
        """Per-release files researchers must never read: the consent link (release pseudonym ->
        cross-release consent key) and the perturbation keys, under ``<this>/<release_id>/``."""
        return self.restricted / "releases"

    # -- outside the restricted zone: no direct identifiers ----------------
    def research_db(self, holder_id: str) -> Path:
        return self.home / "research" / f"{holder_id}.duckdb"

    @property
    def releases_dir(self) -> Path:
        return self.home / "releases"

    @property
    def quality_dir(self) -> Path:
        return self.home / "quality"

    @property
    def audit_dir(self) -> Path:
        return self.home / "audit"

    @property
    def airflow_home(self) -> Path:
        return Path(os.environ.get("AIRFLOW_HOME") or self.home / "airflow")

    @property
    def is_production(self) -> bool:
        return self.environment == PRODUCTION


def _default_home() -> Path:
    return REPO_ROOT / "var"


@cache
def get_settings() -> Settings:
    """Settings from the environment, validated once per process.

    Tests that change ``HDP_HOME`` call ``get_settings.cache_clear()``.
    """
    home = Path(os.environ.get("HDP_HOME") or _default_home()).resolve()
    environment = os.environ.get("HDP_ENV", DEVELOPMENT)
    if environment not in (DEVELOPMENT, PRODUCTION):
        raise SettingsError(f"HDP_ENV must be {DEVELOPMENT!r} or {PRODUCTION!r}, not {environment!r}")
    governance_url = os.environ.get("HDP_GOVERNANCE_URL") or f"sqlite:///{home / 'governance.sqlite'}"
    if environment == PRODUCTION and governance_url.startswith("sqlite"):
        raise SettingsError("production needs HDP_GOVERNANCE_URL pointing at Postgres, not SQLite")
    return Settings(home=home, environment=environment, governance_url=governance_url)


@cache
def holders() -> tuple[Holder, ...]:
    """The data holders declared in schemas/holders.json."""
    raw = json.loads((SCHEMAS_DIR / "holders.json").read_text(encoding="utf-8"))
    return tuple(
        Holder(
            id=h["id"],
            name=h["name"],
            kind=h["kind"],
            sources=tuple(h["sources"]),
            min_cell_count=int(h["min_cell_count"]),
            k_anonymity=int(h["k_anonymity"]),
            reviewers_required=int(h["reviewers_required"]),
            county_code=h.get("county_code"),
            perturbation=tuple(sorted((k, float(v)) for k, v in h.get("perturbation", {}).items())),
        )
        for h in raw["holders"]
    )


def holder(holder_id: str) -> Holder:
    for h in holders():
        if h.id == holder_id:
            return h
    raise KeyError(f"unknown data holder {holder_id!r}; known: {', '.join(h.id for h in holders())}")
