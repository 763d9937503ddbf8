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
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMAS_DIR = REPO_ROOT / "schemas"

DEVELOPMENT = "development"
PRODUCTION = "production"


class SettingsError(RuntimeError):
    """Configuration that cannot be used safely."""


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
    #: cell-key perturbation of aggregate results (``access.cellkey.PerturbationSettings``
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
        return self.home / "restricted"

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
