"""audit checkpoints: heads of the audit logs, kept outside the host's audit folder

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 10:00:00

``hdp.audit`` records the head (seq, keyed hash) of each audit log here every N entries and
at shutdown, and ``hdp audit verify`` fails when a log is shorter than a checkpoint or a
checkpointed hash is not in its chain: a log deleted and started afresh, or cut back to an
anchor saved earlier, no longer verifies. See ``governance.auditing``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gov_audit_checkpoint",
        sa.Column("log_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("log_id", "seq"),
    )


def downgrade() -> None:
    op.drop_table("gov_audit_checkpoint")
