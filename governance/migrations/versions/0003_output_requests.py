"""output requests (the airlock): requests, their checks, steward exceptions for row-level outputs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 10:00:00

A record-level result that is to leave the secure processing environment becomes an output
request; two output checkers decide on it (``governance.outputs``). A row-level output of
pseudonymised data needs a steward's justified exception on the permit.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gov_output_exception",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("permit_id", sa.Integer(), nullable=False),
        sa.Column("holder_id", sa.String(length=64), nullable=False),
        sa.Column("steward", sa.String(length=64), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(), nullable=True),
        sa.Column("withdrawn_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["permit_id"], ["gov_permit.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("gov_output_exception", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gov_output_exception_permit_id"), ["permit_id"], unique=False)

    op.create_table(
        "gov_output_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("permit_id", sa.Integer(), nullable=False),
        sa.Column("release_id", sa.String(length=128), nullable=False),
        sa.Column("requester", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("review_round", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("context", sa.Text(), nullable=False),
        sa.Column("query_masked", sa.Text(), nullable=False),
        sa.Column("query_sha256", sa.String(length=64), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("file_name", sa.String(length=128), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("row_level", sa.Boolean(), nullable=False),
        sa.Column("row_level_reasons", sa.JSON(), nullable=False),
        sa.Column("exception_id", sa.Integer(), nullable=True),
        sa.Column("consent_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("downloads", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["exception_id"], ["gov_output_exception.id"]),
        sa.ForeignKeyConstraint(["permit_id"], ["gov_permit.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("gov_output_request", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gov_output_request_permit_id"), ["permit_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_gov_output_request_requester"), ["requester"], unique=False)
        batch_op.create_index(batch_op.f("ix_gov_output_request_status"), ["status"], unique=False)

    op.create_table(
        "gov_output_check",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("output_id", sa.Integer(), nullable=False),
        sa.Column("review_round", sa.Integer(), nullable=False),
        sa.Column("checker", sa.String(length=64), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("decided_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["output_id"], ["gov_output_request.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("output_id", "review_round", "checker"),
    )
    with op.batch_alter_table("gov_output_check", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gov_output_check_output_id"), ["output_id"], unique=False)


def downgrade() -> None:
    op.drop_table("gov_output_check")
    op.drop_table("gov_output_request")
    op.drop_table("gov_output_exception")
