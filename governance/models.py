"""SQLAlchemy 2 models of the governance store (SQLite by default, Postgres in production).

The schema itself is owned by the Alembic migrations in ``governance/migrations``; a test checks
that these models and the migrations agree. Lists (variables, holders, members) are stored as
sorted JSON arrays so that equality and hashing are deterministic.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite has no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the governance store; pass a timezone-aware one")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class UserRow(Base):
    __tablename__ = "gov_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    roles: Mapped[list[str]] = mapped_column(JSON)
    holder_ids: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The organisation the person works for (migration 0006): stewards weigh who applies.
    organisation: Mapped[str | None] = mapped_column(String(200), nullable=True)


class ApiTokenRow(Base):
    __tablename__ = "gov_api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("gov_user.id", ondelete="CASCADE"), index=True)
    # SHA-256 of the token: the plain token is shown once and never stored.
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RequestRow(Base):
    __tablename__ = "gov_request"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Optimistic lock: every UPDATE checks and bumps it (a second line of defence behind FOR UPDATE).
    version: Mapped[int] = mapped_column(Integer, default=1)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("gov_request.id"), nullable=True, index=True)
    applicant: Mapped[str] = mapped_column(String(64), index=True)
    members: Mapped[list[str]] = mapped_column(JSON)
    project: Mapped[str] = mapped_column(String(200))
    purpose: Mapped[str] = mapped_column(String(64))
    legal_basis: Mapped[str] = mapped_column(String(64))
    ethics_ref: Mapped[str] = mapped_column(String(32))
    variables: Mapped[list[str]] = mapped_column(JSON)
    holders: Mapped[list[str]] = mapped_column(JSON)
    cohort_criteria: Mapped[dict[str, Any]] = mapped_column(JSON)
    period_start: Mapped[date | None] = mapped_column(Date, nullable=True)
    period_end: Mapped[date | None] = mapped_column(Date, nullable=True)
    data_form: Mapped[str] = mapped_column(String(16))
    pseudonymisation_justification: Mapped[str | None] = mapped_column(Text, nullable=True)
    output_tier: Mapped[str] = mapped_column(String(16))
    access_days: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    review_round: Mapped[int] = mapped_column(Integer, default=0)
    amendment: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __mapper_args__ = {"version_id_col": version}


class HolderReviewRow(Base):
    """One holder's review of one round of a request (the holder decides independently)."""

    __tablename__ = "gov_holder_review"
    __table_args__ = (UniqueConstraint("request_id", "holder_id", "review_round"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("gov_request.id", ondelete="CASCADE"))
    holder_id: Mapped[str] = mapped_column(String(64))
    review_round: Mapped[int] = mapped_column(Integer)
    reviewers_required: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[str] = mapped_column(String(16))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DecisionRow(Base):
    __tablename__ = "gov_decision"
    # One decision per reviewer per holder per round: a second click cannot count twice.
    __table_args__ = (UniqueConstraint("request_id", "holder_id", "review_round", "reviewer"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("gov_request.id", ondelete="CASCADE"), index=True)
    holder_id: Mapped[str] = mapped_column(String(64))
    review_round: Mapped[int] = mapped_column(Integer)
    reviewer: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))
    justification: Mapped[str] = mapped_column(Text)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # What the steward ticked with the decision (migration 0006): the Five Safes and, when the
    # pre-check flagged groups at risk, the acknowledgement; None for decisions taken without.
    checklist: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class RequestCommentRow(Base):
    """One comment on a request's thread (``governance.comments``): plain text, never edited."""

    __tablename__ = "gov_request_comment"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("gov_request.id", ondelete="CASCADE"), index=True)
    author: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    posted_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PermitRow(Base):
    __tablename__ = "gov_permit"

    id: Mapped[int] = mapped_column(primary_key=True)
    # unique: one permit per request, one permit per release (no double release).
    request_id: Mapped[int] = mapped_column(ForeignKey("gov_request.id"), unique=True)
    release_id: Mapped[str | None] = mapped_column(String(128), unique=True, nullable=True)
    manifest_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    users: Mapped[list[str]] = mapped_column(JSON)
    variables: Mapped[list[str]] = mapped_column(JSON)
    holders: Mapped[list[str]] = mapped_column(JSON)
    purpose: Mapped[str] = mapped_column(String(64))
    output_tier: Mapped[str] = mapped_column(String(16))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deletion_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RequestEventRow(Base):
    """Append-only history of a request: every transition and amendment, with its actor."""

    __tablename__ = "gov_request_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("gov_request.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)


class ConsentRow(Base):
    """One consent decision of one person (by consent-domain pseudonym, never the identifier)."""

    __tablename__ = "gov_consent"
    __table_args__ = (Index("ix_gov_consent_key_scope", "consent_key", "scope"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    consent_key: Mapped[str] = mapped_column(String(128))
    scope: Mapped[str] = mapped_column(String(64))  # "secondary_use" or a purpose code
    choice: Mapped[str] = mapped_column(String(8))  # "opt_out" | "opt_in"
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_to: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    source_ref: Mapped[str] = mapped_column(String(128))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_by: Mapped[str] = mapped_column(String(64))


#: Change-counter scope -> the tables whose writes bump it (triggers, migration 0002). A cache
#: of anything read from these tables is current exactly while its scope's version is unchanged.
CHANGE_SCOPES: dict[str, tuple[str, ...]] = {
    "access": ("gov_user", "gov_api_token", "gov_request", "gov_permit"),
    "consent": ("gov_consent",),
}


class ChangeCounterRow(Base):
    """One version number per scope of ``CHANGE_SCOPES``; only the triggers write it."""

    __tablename__ = "gov_change"

    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


class ConfigRow(Base):
    """Store-held settings that stewards change at run time (decision deadlines)."""

    __tablename__ = "gov_config"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


class OutputExceptionRow(Base):
    """A steward's justified exception on a permit: row-level outputs of pseudonymised data may
    be requested under it (still checked by two output checkers). Withdrawn, never deleted."""

    __tablename__ = "gov_output_exception"

    id: Mapped[int] = mapped_column(primary_key=True)
    permit_id: Mapped[int] = mapped_column(ForeignKey("gov_permit.id"), index=True)
    holder_id: Mapped[str] = mapped_column(String(64))
    steward: Mapped[str] = mapped_column(String(64))
    justification: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    withdrawn_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


class OutputRequestRow(Base):
    """A result that is to leave the secure environment (the airlock): facts of its stored file,
    the requester's context, its state (``governance.outputs``). Never the data itself."""

    __tablename__ = "gov_output_request"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Optimistic lock: two checkers deciding at once cannot both count against stale state.
    version: Mapped[int] = mapped_column(Integer, default=1)
    permit_id: Mapped[int] = mapped_column(ForeignKey("gov_permit.id"), index=True)
    release_id: Mapped[str] = mapped_column(String(128))
    requester: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    review_round: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(200))
    context: Mapped[str] = mapped_column(Text)
    query_masked: Mapped[str] = mapped_column(Text)
    query_sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(16))
    file_name: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(BigInteger)
    columns: Mapped[list[str]] = mapped_column(JSON)
    row_level: Mapped[bool] = mapped_column(Boolean)
    row_level_reasons: Mapped[list[str]] = mapped_column(JSON)
    exception_id: Mapped[int | None] = mapped_column(ForeignKey("gov_output_exception.id"), nullable=True)
    consent_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    downloads: Mapped[int] = mapped_column(Integer, default=0)

    __mapper_args__ = {"version_id_col": version}


class OutputCheckRow(Base):
    """One output checker's decision on one round of an output request."""

    __tablename__ = "gov_output_check"
    # One decision per checker per round: the same person cannot count twice.
    __table_args__ = (UniqueConstraint("output_id", "review_round", "checker"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    output_id: Mapped[int] = mapped_column(
        ForeignKey("gov_output_request.id", ondelete="CASCADE"), index=True
    )
    review_round: Mapped[int] = mapped_column(Integer)
    checker: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str] = mapped_column(Text)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditCheckpointRow(Base):
    """A head of an audit log, kept outside the host's audit folder (``governance.auditing``).

    One row per (log, seq), never updated: a second, different hash for a seq already recorded
    is evidence that the log was replaced, and the first record is the one kept.
    """

    __tablename__ = "gov_audit_checkpoint"

    log_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    entry_hash: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)


class QueryBudgetRow(Base):
    """How many distinct aggregate queries a permit may ask (set by a steward of its holders;
    ``governance.ledger``). Without a row the platform default applies."""

    __tablename__ = "gov_query_budget"

    permit_id: Mapped[int] = mapped_column(ForeignKey("gov_permit.id", ondelete="CASCADE"), primary_key=True)
    budget: Mapped[int] = mapped_column(Integer)
    set_by: Mapped[str] = mapped_column(String(64))
    justification: Mapped[str] = mapped_column(Text)
    set_at: Mapped[datetime] = mapped_column(UTCDateTime)


class QueryLedgerRow(Base):
    """One aggregate query a permit asked, and the cells it published (``governance.ledger``).

    Everything that could carry a literal (the fingerprint, the shape, the filter terms) is a
    keyed digest: equal queries and terms compare equal, but nothing can be read back.
    """

    __tablename__ = "gov_query_ledger"
    __table_args__ = (UniqueConstraint("permit_id", "fingerprint", "result_sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    permit_id: Mapped[int] = mapped_column(Integer, index=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    shape: Mapped[str] = mapped_column(String(64))
    terms: Mapped[list[list[str]]] = mapped_column(JSON)
    negates: Mapped[list[list[str]] | None] = mapped_column(JSON, nullable=True)
    measures: Mapped[list[str]] = mapped_column(JSON)
    result_sha256: Mapped[str] = mapped_column(String(64))
    cells_published: Mapped[int] = mapped_column(Integer)
    cells_withheld: Mapped[int] = mapped_column(Integer)
    cells: Mapped[list[Any]] = mapped_column(JSON)
    asked_by: Mapped[str] = mapped_column(String(64))
    asked_at: Mapped[datetime] = mapped_column(UTCDateTime)
