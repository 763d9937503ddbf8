"""Federated aggregate queries (an EHDS art. 69 health data request, what DataSHIELD does).

A researcher with an aggregate-tier permit sends one query in the aggregate grammar to the hub.
The hub parses it (the same grammar the nodes apply), sends the node form of it
(``hub.federated_query``) to every node in the permit's scope, and waits for all of them: each
node runs it on its own part under its own thresholds, perturbation, consent and query ledger.
The hub merges the published cells and applies disclosure control again to the merged table.

A node that does not answer in time, or refuses for any reason but the end of its approval,
makes the whole query fail with ``federation.incomplete`` naming the nodes: a total is never
silently partial. A node whose stewards withdrew approval has left the permit: its data is left
out and the result says so (``nodes_withdrawn``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool

from access.errors import Forbidden, NotFound, QueryRefused
from access.service import AccessService
from federation import cells
from federation.identity import node_party
from governance import service, store
from governance.permits import IN_FORCE
from governance.values import Permit
from hdp.settings import holder
from hub.coordinator import Hub
from hub.federated_query import FederatedPlan, merge_node_results, plan_federated_query
from hub.wakeups import Wakeups, woken

#: Seconds a node has to answer, beyond the query time limit every node applies itself.
ANSWER_MARGIN_S = 10.0


@dataclass(frozen=True)
class Sent:
    """A federated query on its way: to which nodes, under which plan."""

    permit_id: int
    user: str
    plan: FederatedPlan
    nodes: tuple[str, ...]
    not_holding: tuple[str, ...]
    withdrawn: dict[str, str]


class QueryIncomplete(Exception):
    """Not every node in scope answered: nothing is published."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        super().__init__(body.get("error", "federation.incomplete"))
        self.body = dict(body)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


class FederatedQueries:
    def __init__(self, hub: Hub, access: AccessService, wakeups: Wakeups) -> None:
        self.hub = hub
        self.access = access
        self.wakeups = wakeups

    def _permit(self, permit_id: int, token: str) -> tuple[str, Permit]:
        user = self.access.authenticate(token or None, endpoint="/federation/v1/query")
        with store.session_scope(self.hub.settings.governance_url) as session:
            permit = service.permit_for_request(session, request_id=permit_id)
        if permit is None or user.name not in permit.users:
            raise NotFound("permit.none", "you hold no permit for this application")
        if permit.status not in IN_FORCE:
            raise Forbidden(f"permit.{permit.status}", f"the permit is {permit.status}")
        if permit.output_tier != "aggregate":
            raise QueryRefused(
                "federation.record_tier",
                "a record-level permit is queried in the secure environment's release, not across nodes",
            )
        return user.name, permit

    @staticmethod
    def _views(parts: Mapping[str, Mapping[str, Any]], nodes: list[str]) -> dict[str, list[tuple[str, str]]]:
        """The tables and column types the nodes' parts show (each node reports its part's schema)."""
        views: dict[str, dict[str, str]] = {}
        for party in nodes:
            facts = (parts.get(party) or {}).get("facts") or {}
            for table, columns in (facts.get("schema") or {}).items():
                for name, typ in columns:
                    views.setdefault(table, {}).setdefault(name, typ)
        if not views:
            raise QueryRefused(
                "federation.not_ready", "the nodes have not built their parts of this permit yet"
            )
        return {t: sorted(cols.items()) for t, cols in views.items()}

    async def run(self, permit_id: int, *, token: str, sql: str) -> dict[str, Any]:
        """Plan, send to every node, wait for all answers, merge. The blocking parts (the store,
        parsing, merging) run in worker threads: the event loop also serves the nodes' polls."""
        query_id = secrets.token_hex(12)
        # subscribed before the query goes out, so an answer that comes back at once still wakes us
        with self.wakeups.subscription(f"query:{query_id}") as answered:
            sent = await run_in_threadpool(self._send, query_id, permit_id, token, sql)
            answers = await self._answers(query_id, sent.nodes, answered)
        return await run_in_threadpool(self._merge, sent, answers, sql)

    def _send(self, query_id: str, permit_id: int, token: str, sql: str) -> Sent:
        user_name, permit = self._permit(permit_id, token)
        withdrawn = self.hub.state.withdrawn(permit_id)
        nodes = [node_party(h) for h in permit.holders if node_party(h) not in withdrawn]
        if not nodes:
            raise Forbidden("permit.withdrawn", "every node in scope has withdrawn its approval")
        parts = self.hub.state.parts(permit_id)
        plan = plan_federated_query(sql, self._views(parts, nodes))
        # A node whose part has none of a table the query reads holds nothing it could add: it is
        # left out and named, which is not a partial total.
        read_tables = {source.table for source in plan.query.sources}
        schemas = {p: set(((parts.get(p) or {}).get("facts") or {}).get("schema") or {}) for p in nodes}
        not_holding = tuple(sorted(p for p in nodes if not read_tables <= schemas[p]))
        nodes = [p for p in nodes if p not in not_holding]
        if not nodes:
            raise QueryRefused(
                "federation.no_node_holds", "no node in the permit holds every table the query reads"
            )
        for party in nodes:
            self.hub.state.enqueue(
                party,
                "aggregate_query",
                {"query_id": query_id, "sql": plan.node_sql, "user": user_name},
                permit=permit_id,
            )
            self.hub.wakeup(party)
        return Sent(permit_id, user_name, plan, tuple(nodes), not_holding, dict(withdrawn))

    def _merge(self, sent: Sent, answers: Mapping[str, Mapping[str, Any]], sql: str) -> dict[str, Any]:
        tables, left, failed = {}, dict(sent.withdrawn), {}
        for party in sent.nodes:
            answer = answers.get(party)
            if answer is None:
                failed[party] = "node.no_answer"
            elif answer["status"] == "answered":
                tables[party] = cells.from_ipc(answer["cells"])
            elif str(answer["reason"]).startswith("permit."):
                left[party] = answer["reason"]  # approval ended at the node: its data leaves
            else:
                failed[party] = answer["reason"]
        if failed:
            self._log(
                sent.user, sent.permit_id, sql, decision="incomplete", nodes=sorted(tables), failed=failed
            )
            raise QueryIncomplete(
                {
                    "error": "federation.incomplete",
                    "message": "not every node in scope answered; nothing is published",
                    "nodes_failed": failed,
                    "nodes_answered": sorted(tables),
                }
            )
        if not tables:
            raise Forbidden("permit.withdrawn", "every node in scope has withdrawn its approval")
        thresholds = {party: holder(party.split(":", 1)[1]).min_cell_count for party in tables}
        merged, summary = merge_node_results(sent.plan, tables, thresholds=thresholds)
        self._log(
            sent.user,
            sent.permit_id,
            sql,
            decision="allowed",
            nodes=sorted(tables),
            published=summary.published,
        )
        return {
            "columns": merged.column_names,
            "rows": [[_json_value(v) for v in row.values()] for row in merged.to_pylist()],
            "nodes_answered": sorted(tables),
            "nodes_withdrawn": left,
            "nodes_without_these_tables": list(sent.not_holding),
            "disclosure": {
                "cells": summary.cells,
                "published": summary.published,
                "withheld_threshold": summary.withheld_threshold,
                "cells_missing_at_some_node": summary.cells_missing_at_some_node,
            },
        }

    async def _answers(
        self, query_id: str, nodes: tuple[str, ...], answered: asyncio.Event
    ) -> dict[str, Mapping[str, Any]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.access.settings.limits.timeout_s + ANSWER_MARGIN_S
        while True:
            answered.clear()
            answers = await run_in_threadpool(self.hub.state.query_results, query_id)
            remaining = deadline - loop.time()
            if all(p in answers for p in nodes) or remaining <= 0:
                return answers
            await woken(answered, min(remaining, 1.0))

    def _log(self, user_name: str, permit_id: int, sql: str, **extra: Any) -> None:
        self.hub.audit.append(
            {
                "kind": "federation.query",
                "user": user_name,
                "permit": permit_id,
                # keyed digest in the access log is the layer's; here a plain digest of the text
                # would let anyone test guesses, so only its length and the nodes are kept
                "query_chars": len(sql),
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                **extra,
            }
        )
