"""Alembic environment for the governance store (online mode only)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from governance.models import Base

config = context.config


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        from hdp.settings import get_settings

        url = get_settings().governance_url
    return url


def run_migrations_online() -> None:
    from governance.store import engine_for

    engine = engine_for(_url())
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Two processes upgrading at once (API and scheduler starting together) must not
            # both run the DDL: serialise them on an advisory lock held for the transaction.
            connection.execute(text("SELECT pg_advisory_xact_lock(774411)"))
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline SQL generation is not supported; run against a database")
run_migrations_online()
