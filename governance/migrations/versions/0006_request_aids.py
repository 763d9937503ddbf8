"""steward decision aids: the applicant's organisation, the checklist ticked with a decision
(Five Safes, acknowledgement of groups at risk), and a comment thread per request

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 15:40:00

All three are additive: existing users have no organisation (shown as not recorded), existing
decisions no checklist (taken before it existed), existing requests no comments.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gov_user") as batch:
        batch.add_column(sa.Column("organisation", sa.String(length=200), nullable=True))
    with op.batch_alter_table("gov_decision") as batch:
        batch.add_column(sa.Column("checklist", sa.JSON(), nullable=True))
    op.create_table(
        "gov_request_comment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("author", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("posted_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["gov_request.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_gov_request_comment_request_id", "gov_request_comment", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_gov_request_comment_request_id", table_name="gov_request_comment")
    op.drop_table("gov_request_comment")
    with op.batch_alter_table("gov_decision") as batch:
        batch.drop_column("checklist")
    with op.batch_alter_table("gov_user") as batch:
        batch.drop_column("organisation")
