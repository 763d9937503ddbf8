"""change counters: one version number per group of tables, bumped by triggers on every write

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 19:05:00

The access layer asks governance at every query (token, permit, consent). It may answer from
a cache only while nothing it read has changed since; these counters say so in one indexed
read. Triggers, not application code, bump them, so every writer is covered: the service,
bulk loads, an operator's SQL. See ``governance.models.CHANGE_SCOPES``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: scope -> tables whose writes bump it (kept equal to governance.models.CHANGE_SCOPES, tested).
SCOPES = {
    "access": ("gov_user", "gov_api_token", "gov_request", "gov_permit"),
    "consent": ("gov_consent",),
}


def upgrade() -> None:
    table = op.create_table(
        "gov_change",
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("scope"),
    )
    op.bulk_insert(table, [{"scope": s, "version": 0} for s in SCOPES])
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("""CREATE FUNCTION gov_bump_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE gov_change SET version = version + 1 WHERE scope = TG_ARGV[0];
                RETURN NULL;
            END $$""")
    for scope, tables in SCOPES.items():
        for t in tables:
            if dialect == "postgresql":
                # One bump per statement (a bulk insert of 10,000 opt-outs is one change).
                op.execute(
                    f"CREATE TRIGGER {t}_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {t} "
                    f"FOR EACH STATEMENT EXECUTE FUNCTION gov_bump_change('{scope}')"
                )
            else:  # SQLite has row triggers only
                for verb in ("INSERT", "UPDATE", "DELETE"):
                    op.execute(
                        f"CREATE TRIGGER {t}_change_{verb.lower()} AFTER {verb} ON {t} BEGIN "
                        f"UPDATE gov_change SET version = version + 1 WHERE scope = '{scope}'; END"
                    )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for tables in SCOPES.values():
        for t in tables:
            if dialect == "postgresql":
                op.execute(f"DROP TRIGGER IF EXISTS {t}_change ON {t}")
            else:
                for verb in ("insert", "update", "delete"):
                    op.execute(f"DROP TRIGGER IF EXISTS {t}_change_{verb}")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS gov_bump_change()")
    op.drop_table("gov_change")
