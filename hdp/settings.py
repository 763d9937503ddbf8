"""The platform's settings (:class:`Settings`, every ``HDP_*`` variable) and where everything lives.

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
import re
import struct
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMAS_DIR = REPO_ROOT / "schemas"

DEVELOPMENT: Final = "development"
PRODUCTION: Final = "production"
#: Every setting is an environment variable with this prefix (see :class:`Settings`).
ENV_PREFIX = "HDP_"
#: Default: an audit log's head is checkpointed every this many entries (and on close).
DEFAULT_CHECKPOINT_EVERY = 100


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


def _memory_limit(value: str) -> str:
    if not _MEMORY_LIMIT.fullmatch(value):
        raise ValueError("must be a size such as '2GB' or '512MiB'")
    return value


def _comma_separated(value: object) -> object:
    if isinstance(value, str):
        return frozenset(part.strip() for part in value.split(",") if part.strip())
    return value


def _expand_user(value: Path | None) -> Path | None:
    return None if value is None else value.expanduser()


#: A DuckDB memory limit ("2GB", "512MiB", "1.5 GB"). Checked here because it is spliced into
#: ``SET memory_limit = '...'``: nothing but a number and a unit gets there.
_MEMORY_LIMIT = re.compile(r"[0-9]+(\.[0-9]+)?\s*([KMGT]i?B|B|bytes)", re.IGNORECASE)
MemoryLimit = Annotated[str, AfterValidator(_memory_limit)]
#: A comma-separated list ("json,arrow") as a set; NoDecode: not JSON.
CommaSeparated = Annotated[frozenset[str], NoDecode, BeforeValidator(_comma_separated)]
UserPath = Annotated[Path, AfterValidator(_expand_user)]

#: The environment :func:`load_settings` reads while it builds a :class:`Settings` (None: os.environ).
_environ: ContextVar[Mapping[str, str] | None] = ContextVar("hdp_settings_environ", default=None)


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading the mapping :func:`load_settings` was given."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = _environ.get()
        if environ is None:
            return super()._load_env_vars()
        # the settings' variables, upper case as documented (pydantic-settings compares lower-cased
        # names); an empty variable is unset
        return {k.lower(): v for k, v in environ.items() if k.isupper() and v != ""}


class Settings(BaseSettings):
    """Every setting of the platform, each from one ``HDP_*`` environment variable.

    The variable of a field is ``HDP_`` and the field's name in capitals (``home``: ``HDP_HOME``),
    except ``environment`` (``HDP_ENV``). An empty variable counts as unset. This class is the one
    place a variable is read, typed, checked and described (``deploy/hdp.env.example`` lists them
    for deployments); modules read ``get_settings().<field>``, never ``os.environ``. A bad value
    is a :class:`SettingsError` naming the variable (never echoing a secret's value).

    Secrets (the key-encryption key, the CLI user's token, URLs that may carry a password or a
    token) are hidden from ``repr`` and from error messages.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        populate_by_name=True,
        str_strip_whitespace=True,
        frozen=True,
        extra="ignore",
    )

    # -- where everything lives ------------------------------------------------
    home: Path = Field(
        default_factory=lambda: REPO_ROOT / "var",
        validate_default=True,
        description="The data home: every file the platform keeps (default: var/ in the checkout).",
    )
    environment: Literal["development", "production"] = Field(
        default=DEVELOPMENT,
        validation_alias=AliasChoices("HDP_ENV", "environment"),
        description="'development' or 'production'. Production refuses insecure defaults: a SQLite "
        "governance or metrics store, a generated key-encryption key, a KEK file others can read, "
        "export rules looser than the defaults.",
    )
    governance_url: str = Field(
        default="",
        validate_default=True,
        repr=False,
        description="SQLAlchemy URL of the governance store (default: SQLite governance.sqlite in the "
        "data home). Production needs Postgres (postgresql+psycopg://...). May hold a password.",
    )
    metrics_url: str | None = Field(
        default=None,
        repr=False,
        description="SQLAlchemy URL of the run-metrics store (default: SQLite under the data home's "
        "monitoring/; production needs Postgres: every worker records into it). May hold a password.",
    )
    alert_webhook: SecretStr | None = Field(
        default=None,
        description="http(s) URL that failure alerts are POSTed to as JSON (unset: log only). Its "
        "scheme is checked when an alert is sent, never here: a bad webhook must not fail the task "
        "it reports on. May hold a token.",
    )

    # -- keys ------------------------------------------------------------------
    kek: SecretStr | None = Field(
        default=None,
        description="The key-encryption key, base64 of 32 bytes (for secret managers that inject "
        "variables). Checked where it is decoded (privacy.keys), like a key file.",
    )
    kek_file: UserPath | None = Field(
        default=None,
        description="A file outside the data home holding the key-encryption key (base64 of 32 "
        "bytes, mode 0600); used when HDP_KEK is unset.",
    )
    kek_dir: UserPath = Field(
        default_factory=lambda: Path.home() / ".config" / "hdp",
        description="Development only: the folder of the generated key-encryption key (kek), used "
        "when neither HDP_KEK nor HDP_KEK_FILE is set. Default ~/.config/hdp.",
    )

    # -- audit log -------------------------------------------------------------
    audit_anchor_dir: UserPath | None = Field(
        default=None,
        description="Folder of the audit logs' head anchors (default: beside each log); point it at "
        "another volume or WORM storage in production.",
    )
    audit_checkpoint_every: int = Field(
        default=DEFAULT_CHECKPOINT_EVERY,
        ge=1,
        description="Record an audit log's head in the governance store every this many entries.",
    )

    # -- pipelines -------------------------------------------------------------
    quality_memory_limit: MemoryLimit = Field(
        default="2GB", description="DuckDB memory limit of a quality-gate run (the gate spills beyond it)."
    )
    pseudonymise_memory_limit: MemoryLimit = Field(
        default="2GB", description="DuckDB memory limit of a pseudonymisation run."
    )
    accept_interim_numbers: bool = Field(
        default=False,
        description="Accept interim numbers (YYMMDD-Xnnn, a letter in the serial) as patient identifiers; "
        "they are assigned by organisations, not Skatteverket, and link only within their holder. "
        "Off: refused as identifier.interim_not_accepted.",
    )

    # -- access layer ----------------------------------------------------------
    access_workers: int = Field(default=2, ge=1, description="uvicorn worker processes of `hdp serve`.")
    access_timeout_s: float = Field(default=10.0, gt=0, description="Seconds a researcher's query may run.")
    access_max_rows: int = Field(default=1_000_000, ge=1, description="Rows a query may return at most.")
    access_memory_limit: MemoryLimit = Field(default="1GB", description="DuckDB memory limit of a query.")
    access_threads: int = Field(default=2, ge=1, description="DuckDB threads of a query.")
    access_query_budget: int | None = Field(
        default=None,
        ge=0,
        description="Distinct aggregate queries a permit may ask when no steward set its budget "
        "(default: governance.ledger.DEFAULT_BUDGET).",
    )
    access_preview_rows: int | None = Field(
        default=None,
        ge=0,
        description="Rows a record-level query may return directly (default: access.outputs."
        "PREVIEW_ROWS); in production only lower than the default.",
    )
    access_preview_formats: CommaSeparated | None = Field(
        default=None,
        description="Comma-separated formats a record-level result may be returned in directly "
        "(default: access.outputs.PREVIEW_FORMATS); in production only a subset of the default.",
    )
    oidc_issuer: str | None = Field(default=None, description="OIDC issuer of researchers' identity tokens.")
    oidc_audience: str | None = Field(
        default=None, description="OIDC audience the identity tokens must name."
    )
    oidc_jwks_url: str | None = Field(
        default=None, description="URL of the OIDC issuer's signing keys (JWKS)."
    )
    # web sign-in through the same provider (access/web/oidc.py): on when client id and
    # redirect base are set with HDP_OIDC_ISSUER
    oidc_client_id: str | None = Field(
        default=None,
        description="Web single sign-on: the web pages' client id at the OIDC provider "
        "HDP_OIDC_ISSUER (authorisation code flow with PKCE). With HDP_OIDC_REDIRECT_BASE it puts "
        "'Sign in with <provider>' on the login page.",
    )
    oidc_client_secret: SecretStr | None = Field(
        default=None,
        description="Web single sign-on: the client secret, if the provider registered the web "
        "pages as a confidential client (sent as HTTP Basic); unset: a public client, PKCE only.",
    )
    oidc_user_claim: str = Field(
        default="preferred_username",
        description="Web single sign-on: the ID token claim whose value is the platform user name. "
        "Only an existing, enabled user may sign in; none is ever created.",
    )
    oidc_redirect_base: str | None = Field(
        default=None,
        description="Web single sign-on: the platform's external base URL as browsers reach it "
        "(https://hdp.example.se, behind the proxy); the provider redirects to "
        "<base>/web/login/oidc/callback and nowhere else.",
    )
    oidc_discovery_url: str | None = Field(
        default=None,
        description="Web single sign-on: the provider's discovery document (default: "
        "HDP_OIDC_ISSUER/.well-known/openid-configuration).",
    )
    oidc_provider_name: str | None = Field(
        default=None,
        description="Web single sign-on: the provider's name on the login page's button "
        "(default: the issuer's host name).",
    )

    # -- federation ----------------------------------------------------------------
    federation_role: Literal["single", "hub", "node"] = Field(
        default="single",
        description="'single': every holder in one data home (the first version); 'node': one data "
        "holder's node (HDP_NODE_HOLDER), which connects out to the hub; 'hub': the health data "
        "access body's hub, which never holds an identifier (its private zone is secure/, not "
        "restricted/).",
    )
    node_holder: str | None = Field(
        default=None, description="A node's own data holder (schemas/holders.json id); nodes only."
    )
    hub_url: str | None = Field(
        default=None, description="The hub's base URL a node connects out to (http(s)); nodes only."
    )
    hub_identity: UserPath | None = Field(
        default=None,
        description="A node's copy of the hub's public identity (JSON from `hdp hub identity`), "
        "registered out of band; nodes only.",
    )

    # -- client side -------------------------------------------------------------
    token: SecretStr | None = Field(
        default=None,
        description="Client side, never read by a server: the API token of the person using the hdp "
        "CLI. The governance commands act with it; `hdp query` and the identity commands take it "
        "through their --token option, whose default is this variable (click's envvar).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Values given to the constructor, then the environment; no .env file and no secrets
        # folder: deployments inject variables (docker-compose, the secret manager).
        return init_settings, _EnvironSource(settings_cls)

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.resolve()

    @field_validator("governance_url")
    @classmethod
    def _governance_store(cls, value: str, info: ValidationInfo) -> str:
        home = info.data.get("home")
        url = value or (f"sqlite:///{home / 'governance.sqlite'}" if home is not None else "")
        if info.data.get("environment") == PRODUCTION and not url.startswith("postgresql"):
            raise ValueError("production needs a Postgres URL (postgresql+psycopg://...)")
        return url

    @field_validator("oidc_jwks_url", "hub_url", "oidc_redirect_base", "oidc_discovery_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and (
            urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc
        ):
            raise ValueError("must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _node_knows_its_holder(self) -> Settings:
        if self.federation_role == "node":
            known = {h.id for h in holders()}
            if self.node_holder not in known:
                raise ValueError(f"HDP_NODE_HOLDER must name this node's data holder, one of {sorted(known)}")
        elif self.node_holder is not None:
            raise ValueError("HDP_NODE_HOLDER is for nodes (HDP_FEDERATION_ROLE=node) only")
        return self

    # -- restricted zone -------------------------------------------------
    @property
    def private_zone_name(self) -> str:
        """``restricted`` where direct identifiers may live (a node, a single home); ``secure`` at
        the hub, whose owner-only zone holds its own keys and releases' secrets but never an
        identifier, so that a scan can tell the two apart by name."""
        return "secure" if self.federation_role == "hub" else "restricted"

    @property
    def restricted(self) -> Path:
        """The restricted zone's root, which exists and is owner-only (0700, with the owner-only
        default ACL) once any path inside it has been asked for: so whatever is created below
        it afterwards, by whichever component or library, is private whatever the umask."""
        root = self.home / self.private_zone_name
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


class _CachedSettings:
    """:func:`get_settings`: one validated :class:`Settings` per ``HDP_*`` environment."""

    def __call__(self) -> Settings:
        """The settings of this process's environment, validated once (per ``HDP_*`` environment).

        A process whose environment does not change reads and checks it once. A change of an
        ``HDP_*`` variable (a test's ``monkeypatch.setenv``, ``CliRunner(env=...)``) is seen by
        the next call; ``get_settings.cache_clear()`` forgets every cached object.
        """
        # Only the settings' own variables: looking up two dozen names is cheap, decoding the
        # whole environment on every call is not.
        return _settings_of(tuple(os.environ.get(name) for name in _env_names()))

    def cache_clear(self) -> None:
        _settings_of.cache_clear()


@cache
def _env_names() -> tuple[str, ...]:
    return tuple(env_name(field) for field in Settings.model_fields)


@lru_cache(maxsize=8)
def _settings_of(values: tuple[str | None, ...]) -> Settings:
    return load_settings({name: v for name, v in zip(_env_names(), values, strict=True) if v is not None})


get_settings = _CachedSettings()


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings read from ``environ`` (default ``os.environ``), uncached; :class:`SettingsError`
    naming each bad variable."""
    token = _environ.set(os.environ if environ is None else environ)
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    finally:
        _environ.reset(token)


def env_name(field: str) -> str:
    """The environment variable of a :class:`Settings` field."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return ENV_PREFIX + field.upper()


def _is_secret(field: str) -> bool:
    info = Settings.model_fields[field]
    return not info.repr or info.annotation in (SecretStr, SecretStr | None)


def _describe(exc: ValidationError) -> str:
    """One line per bad variable: its name, what is wrong, and the value unless it is a secret."""
    by_name = {f: f for f in Settings.model_fields} | {env_name(f): f for f in Settings.model_fields}
    lines = []
    for error in exc.errors(include_input=True, include_url=False):
        field = by_name.get(str(error["loc"][0]), "") if error["loc"] else ""
        if not field:
            lines.append(error["msg"])
            continue
        message = error["msg"].removeprefix("Value error, ")
        shown = "" if _is_secret(field) else f" (got {error['input']!r})"
        lines.append(f"{env_name(field)}: {message}{shown}")
    return "; ".join(lines)


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


def local_holders(settings: Settings | None = None) -> tuple[Holder, ...]:
    """The holders whose data this data home processes: every holder in a single home, the node's
    own holder at a node, none at the hub (it never holds a holder's zones)."""
    settings = settings or get_settings()
    if settings.federation_role == "hub":
        return ()
    if settings.federation_role == "node":
        return tuple(h for h in holders() if h.id == settings.node_holder)
    return holders()


def holder(holder_id: str) -> Holder:
    for h in holders():
        if h.id == holder_id:
            return h
    raise KeyError(f"unknown data holder {holder_id!r}; known: {', '.join(h.id for h in holders())}")
