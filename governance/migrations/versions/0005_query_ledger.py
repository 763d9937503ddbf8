"""query ledger: each permit's aggregate queries and the cells they published; query budgets

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 18:40:00

The access layer records every distinct aggregate query of a permit (keyed digests of its
fingerprint, shape and filter terms, and the cells it published); a steward sets how many
distinct queries a permit may ask. See ``governance.ledger``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gov_query_budget",
        sa.Column("permit_id", sa.Integer(), nullable=False),
        sa.Column("budget", sa.Integer(), nullable=False),
        sa.Column("set_by", sa.String(length=64), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("set_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["permit_id"], ["gov_permit.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("permit_id"),
    )
    op.create_table(
        "gov_query_ledger",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("permit_id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("shape", sa.String(length=64), nullable=False),
        sa.Column("terms", sa.JSON(), nullable=False),
        sa.Column("negates", sa.JSON(), nullable=True),
        sa.Column("measures", sa.JSON(), nullable=False),
        sa.Column("result_sha256", sa.String(length=64), nullable=False),
        sa.Column("cells_published", sa.Integer(), nullable=False),
        sa.Column("cells_withheld", sa.Integer(), nullable=False),
        sa.Column("cells", sa.JSON(), nullable=False),
        sa.Column("asked_by", sa.String(length=64), nullable=False),
        sa.Column("asked_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("permit_id", "fingerprint", "result_sha256"),
    )
    op.create_index("ix_gov_query_ledger_permit_id", "gov_query_ledger", ["permit_id"])


def downgrade() -> None:
    op.drop_index("ix_gov_query_ledger_permit_id", table_name="gov_query_ledger")
    op.drop_table("gov_query_ledger")
    op.drop_table("gov_query_budget")
