"""The hub's federation state: registered nodes, the outbox each node polls, what the nodes sent.

A relational store (SQLAlchemy Core) in the hub's data home, ``hub.sqlite`` (0600), apart from
the governance store (applications, reviews, permits, releases: ``governance``), which the hub
runs as any installation does. Nothing here is an identifier: ids, decisions, counts, digests,
public keys, sealed bytes the hub cannot open, and disclosure-controlled cells.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from federation.identity import PublicIdentity
from hdp.settings import make_private_file

metadata = MetaData()

party = Table(
    "fed_party",
    metadata,
    Column("party", String(80), primary_key=True),
    Column("identity", JSON, nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True)),
)
outbox = Table(
    "fed_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("recipient", String(80), nullable=False, index=True),
    Column("type", String(40), nullable=False),
    Column("permit", Integer),
    Column("body", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("acked_at", DateTime(timezone=True)),
    # what the hub routed, so that it routes each thing once: "application:<id>:<round>", ...
    Column("route_key", String(120), unique=True),
)
catalogue = Table(
    "fed_catalogue",
    metadata,
    Column("party", String(80), primary_key=True),
    Column("summary", JSON, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)
key_figures = Table(
    "fed_prom_key_figures",
    metadata,
    Column("party", String(80), primary_key=True),
    Column("documents", JSON, nullable=False),  # the node's published documents (aggregates only)
    Column("received_at", DateTime(timezone=True), nullable=False),
)
part = Table(
    "fed_part",
    metadata,
    Column("permit", Integer, primary_key=True),
    Column("party", String(80), primary_key=True),
    Column("status", String(20), nullable=False),  # delivered | failed
    Column("sha256", String(64)),
    Column("size", Integer),
    Column("path", Text),
    Column("reason", String(80)),
    Column("facts", JSON),
    Column("received_at", DateTime(timezone=True), nullable=False),
)
query_result = Table(
    "fed_query_result",
    metadata,
    Column("query_id", String(40), primary_key=True),
    Column("party", String(80), primary_key=True),
    Column("status", String(20), nullable=False),  # answered | refused
    Column("reason", String(80)),
    Column("cells", LargeBinary),  # Arrow IPC stream of the node's published cells
    Column("summary", JSON),
    Column("received_at", DateTime(timezone=True), nullable=False),
)
withdrawal = Table(
    "fed_withdrawal",
    metadata,
    Column("permit", Integer, primary_key=True),
    Column("party", String(80), primary_key=True),
    Column("reason", String(80), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    recipient: str
    type: str
    permit: int | None
    body: Mapping[str, Any]


class HubState:
    """The hub's federation tables over one SQLite (or other SQLAlchemy) URL."""

    def __init__(self, path: Path) -> None:
        make_private_file(path)
        self.engine: Engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})

        @event.listens_for(self.engine, "connect")
        def _wal(dbapi_connection: Any, _record: Any) -> None:  # concurrent readers while one writes
            dbapi_connection.execute("PRAGMA journal_mode=WAL")

        metadata.create_all(self.engine)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as con:
            yield con

    # -- parties ---------------------------------------------------------------
    def register(self, identity: PublicIdentity) -> None:
        with self.begin() as con:
            existing = con.execute(select(party.c.identity).where(party.c.party == identity.party)).first()
            if existing is None:
                con.execute(
                    insert(party).values(
                        party=identity.party, identity=identity.to_json(), registered_at=now()
                    )
                )
            else:
                con.execute(
                    update(party).where(party.c.party == identity.party).values(identity=identity.to_json())
                )

    def identity(self, party_id: str) -> PublicIdentity | None:
        with self.begin() as con:
            row = con.execute(select(party.c.identity).where(party.c.party == party_id)).first()
        return None if row is None else PublicIdentity.from_json(row[0])

    def nodes(self) -> tuple[str, ...]:
        with self.begin() as con:
            return tuple(r[0] for r in con.execute(select(party.c.party).order_by(party.c.party)))

    def seen(self, party_id: str) -> None:
        with self.begin() as con:
            con.execute(update(party).where(party.c.party == party_id).values(last_seen_at=now()))

    def last_seen(self) -> dict[str, datetime | None]:
        with self.begin() as con:
            return {r[0]: r[1] for r in con.execute(select(party.c.party, party.c.last_seen_at))}

    # -- outbox ----------------------------------------------------------------
    def enqueue(
        self,
        recipient: str,
        message_type: str,
        body: Mapping[str, Any],
        *,
        permit: int | None,
        route_key: str | None = None,
    ) -> int | None:
        """Queue a message for ``recipient``; None if ``route_key`` was already routed (by this or a
        concurrent pass: the unique key decides)."""
        try:
            return self._insert_outbox(recipient, message_type, body, permit=permit, route_key=route_key)
        except IntegrityError:
            return None

    def _insert_outbox(
        self,
        recipient: str,
        message_type: str,
        body: Mapping[str, Any],
        *,
        permit: int | None,
        route_key: str | None,
    ) -> int:
        with self.begin() as con:
            result = con.execute(
                insert(outbox).values(
                    recipient=recipient,
                    type=message_type,
                    permit=permit,
                    body=json.loads(json.dumps(body)),
                    created_at=now(),
                    route_key=route_key,
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def pending(self, recipient: str, limit: int = 50) -> list[OutboxMessage]:
        with self.begin() as con:
            rows = con.execute(
                select(outbox.c.id, outbox.c.recipient, outbox.c.type, outbox.c.permit, outbox.c.body)
                .where(outbox.c.recipient == recipient, outbox.c.acked_at.is_(None))
                .order_by(outbox.c.id)
                .limit(limit)
            ).all()
        return [OutboxMessage(r.id, r.recipient, r.type, r.permit, r.body) for r in rows]

    def ack(self, recipient: str, ids: list[int]) -> int:
        with self.begin() as con:
            result = con.execute(
                update(outbox)
                .where(outbox.c.recipient == recipient, outbox.c.id.in_(ids), outbox.c.acked_at.is_(None))
                .values(acked_at=now())
            )
            return int(result.rowcount)

    def routed(self, route_key: str) -> bool:
        with self.begin() as con:
            return con.execute(select(outbox.c.id).where(outbox.c.route_key == route_key)).first() is not None

    # -- what nodes sent ---------------------------------------------------------
    def put_catalogue(self, party_id: str, summary: Mapping[str, Any]) -> None:
        with self.begin() as con:
            con.execute(catalogue.delete().where(catalogue.c.party == party_id))
            con.execute(insert(catalogue).values(party=party_id, summary=dict(summary), received_at=now()))

    def catalogue(self) -> dict[str, Mapping[str, Any]]:
        with self.begin() as con:
            return {r[0]: r[1] for r in con.execute(select(catalogue.c.party, catalogue.c.summary))}

    def put_key_figures(self, party_id: str, documents: list[Mapping[str, Any]]) -> None:
        with self.begin() as con:
            con.execute(key_figures.delete().where(key_figures.c.party == party_id))
            con.execute(
                insert(key_figures).values(
                    party=party_id, documents=[dict(d) for d in documents], received_at=now()
                )
            )

    def key_figures(self) -> dict[str, list[Mapping[str, Any]]]:
        with self.begin() as con:
            return {r[0]: r[1] for r in con.execute(select(key_figures.c.party, key_figures.c.documents))}

    def put_part(self, permit_id: int, party_id: str, **values: Any) -> None:
        with self.begin() as con:
            con.execute(part.delete().where(part.c.permit == permit_id, part.c.party == party_id))
            con.execute(insert(part).values(permit=permit_id, party=party_id, received_at=now(), **values))

    def parts(self, permit_id: int) -> dict[str, Mapping[str, Any]]:
        with self.begin() as con:
            rows = con.execute(select(part).where(part.c.permit == permit_id)).mappings().all()
        return {r["party"]: dict(r) for r in rows}

    def put_query_result(self, query_id: str, party_id: str, **values: Any) -> bool:
        """Record a node's answer; False if it already answered (the first answer stands)."""
        with self.begin() as con:
            if con.execute(
                select(query_result.c.party).where(
                    query_result.c.query_id == query_id, query_result.c.party == party_id
                )
            ).first():
                return False
            con.execute(
                insert(query_result).values(query_id=query_id, party=party_id, received_at=now(), **values)
            )
            return True

    def query_results(self, query_id: str) -> dict[str, Mapping[str, Any]]:
        with self.begin() as con:
            rows = (
                con.execute(select(query_result).where(query_result.c.query_id == query_id)).mappings().all()
            )
        return {r["party"]: dict(r) for r in rows}

    def withdraw(self, permit_id: int, party_id: str, reason: str) -> None:
        with self.begin() as con:
            if not con.execute(
                select(withdrawal.c.party).where(
                    withdrawal.c.permit == permit_id, withdrawal.c.party == party_id
                )
            ).first():
                con.execute(
                    insert(withdrawal).values(permit=permit_id, party=party_id, reason=reason, at=now())
                )

    def withdrawn(self, permit_id: int) -> dict[str, str]:
        with self.begin() as con:
            rows = con.execute(
                select(withdrawal.c.party, withdrawal.c.reason).where(withdrawal.c.permit == permit_id)
            )
            return {r[0]: r[1] for r in rows}
