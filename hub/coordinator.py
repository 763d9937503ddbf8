"""What the hub does with what the nodes send, and what it routes to them.

The hub believes a message only after ``federation.messages.verify`` (signature of a registered
node, addressed to the hub, unexpired, nonce unseen), and acts on it only within the node's own
scope: a node decides for its own holder, delivers its own part, answers for itself.

Routing is derived from the governance store, so it survives restarts and is done once
(``route_key``): a submitted application goes to every node in its scope; an issued permit goes to
them with the scope's sealing keys; an ended permit is announced as a revocation.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.identity import HUB, PartyKeys, PublicIdentity, holder_of, node_party
from federation.messages import Message, MessageRejected, NonceStore, sign, verify
from federation.nonces import FileNonceStore
from governance import service, store
from governance.errors import GovernanceError, NotFound
from governance.permits import IN_FORCE
from governance.values import Permit, RequestView
from hdp.audit import AuditLog
from hdp.settings import Settings
from hub.state import HubState, OutboxMessage
from pipelines.outcomes.keyfigures import KeyFigures

log = logging.getLogger(__name__)

#: The governance user that stands for a node's verdict at the hub (one per holder).
NODE_USER_PREFIX = "node."
#: Fields of an application a node needs to put it before its stewards.
APPLICATION_FIELDS = (
    "project",
    "purpose",
    "legal_basis",
    "ethics_ref",
    "variables",
    "holders",
    "cohort_criteria",
    "data_form",
    "pseudonymisation_justification",
    "output_tier",
    "access_days",
)
DECISIONS = ("approve", "reject", "return", "withdraw")
PSEUDONYM = re.compile(r"^[0-9a-f]{64}$")


def node_user(holder_id: str) -> str:
    return NODE_USER_PREFIX + holder_id


class TaskRefused(Exception):
    """A message the hub believed but will not act on (out of scope, wrong state)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Accepted:
    message: Message
    outcome: Mapping[str, Any]


def _application_body(view: RequestView) -> dict[str, Any]:
    body = {name: getattr(view, name) for name in APPLICATION_FIELDS}
    body["holders"] = list(view.holders)
    body["variables"] = list(view.variables)
    body["period"] = [d.isoformat() if d else None for d in view.period]
    body["applicant"] = view.applicant
    body["members"] = list(view.members)
    body["review_round"] = view.review_round
    return body


class Hub:
    """The hub's federation side: one per process."""

    def __init__(self, settings: Settings, *, nonces: NonceStore | None = None) -> None:
        self.settings = settings
        self.keys = PartyKeys.load(HUB, settings)
        self.state = HubState(settings.home / "hub.sqlite")
        secure = settings.ensure_restricted()
        self.nonces = nonces or FileNonceStore(secure / "nonces.sqlite")
        self.parts_dir = settings.ensure_restricted(secure / "parts")
        self.audit = AuditLog(settings.audit_dir / "federation.jsonl")
        self.wakeup: Callable[[str], None] = lambda _party: None  # set by the web app

    # -- nodes -------------------------------------------------------------------
    def register_node(self, identity: PublicIdentity) -> None:
        """Register a node's public identity (out of band, by the hub's operator) and the governance
        user that carries its verdicts."""
        holder_id = holder_of(identity.party)
        self.state.register(identity)
        with store.session_scope(self.settings.governance_url) as session:
            try:
                service.get_user(session, name=node_user(holder_id))
            except NotFound:
                service.create_user(
                    session,
                    name=node_user(holder_id),
                    roles={"steward"},
                    holder_ids=(holder_id,),
                    actor="hub",
                )
        self.audit.append(
            {
                "kind": "federation.node_registered",
                "party": identity.party,
                "fingerprint": identity.fingerprint,
            }
        )

    # -- receiving -------------------------------------------------------------------
    def believe(self, token: str) -> Message:
        message = verify(token, recipient=HUB, sender_key=self.state.identity, nonces=self.nonces)
        self.state.seen(message.sender)
        return message

    def accept(self, token: str) -> Accepted:
        """Verify and act on one message from a node; raises MessageRejected or TaskRefused."""
        message = self.believe(token)
        handler = self._handlers().get(message.type)
        if handler is None:
            raise TaskRefused("message.not_here", f"{message.type} messages are not sent to this endpoint")
        try:
            outcome = handler(message)
        except TaskRefused as refused:
            self._log(message, decision="refused", reason=refused.reason)
            raise
        self._log(message, decision="accepted")
        return Accepted(message, outcome)

    def _handlers(self) -> dict[str, Callable[[Message], Mapping[str, Any]]]:
        return {
            "catalogue": self._on_catalogue,
            "prom_key_figures": self._on_key_figures,
            "decision": self._on_decision,
            "key_share": self._on_key_share,
            "opt_out": self._on_opt_out,
            "part_failed": self._on_part_failed,
            "aggregate_result": self._on_query_answer,
            "refusal": self._on_refusal,
            "ack": self._on_ack,
            "exclusions": self._on_exclusions,
        }

    def _log(self, message: Message, **extra: Any) -> None:
        self.audit.append(
            {
                "kind": "federation.message",
                "type": message.type,
                "sender": message.sender,
                "permit": message.permit,
                **extra,
            }
        )

    def _scope(self, permit_id: int) -> tuple[str, ...]:
        with store.session_scope(self.settings.governance_url) as session:
            try:
                view = service.get_request(session, request_id=permit_id)
            except GovernanceError:
                raise TaskRefused("permit.unknown", "no such application") from None
        return tuple(node_party(h) for h in view.holders)

    def _in_scope(self, message: Message) -> tuple[str, ...]:
        assert message.permit is not None
        scope = self._scope(message.permit)
        if message.sender not in scope:
            raise TaskRefused("permit.not_in_scope", "the sender's holder is not in this application's scope")
        return scope

    def _on_ack(self, message: Message) -> Mapping[str, Any]:
        ids = message.body.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise TaskRefused("message.body", "ids must be a list of integers")
        return {"acked": self.state.ack(message.sender, ids)}

    def _on_catalogue(self, message: Message) -> Mapping[str, Any]:
        from federation.catalogue import DatasetSummary

        try:
            summary = DatasetSummary.from_json(message.body.get("summary"))  # type: ignore[arg-type]
        except (ValueError, TypeError, KeyError):
            raise TaskRefused(
                "catalogue.invalid", "the summary does not follow the catalogue format"
            ) from None
        if node_party(summary.holder_id) != message.sender:
            raise TaskRefused("catalogue.not_own", "a node publishes its own holder's summary only")
        self.state.put_catalogue(message.sender, summary.to_json())
        return {"tables": len(summary.tables)}

    def _on_key_figures(self, message: Message) -> Mapping[str, Any]:
        from pipelines.outcomes.pooling import key_figures_from_document

        documents = message.body.get("figures")
        if not isinstance(documents, list) or len(documents) != 1:
            # Year and quarter tables side by side would give a withheld quarter back by subtraction
            # (a year's responses are its quarters' sum): a node publishes one period kind.
            raise TaskRefused(
                "keyfigures.one_period", "figures must be one key-figure document (one period kind)"
            )
        try:
            figures, _ = key_figures_from_document(documents[0])
        except ValueError:
            raise TaskRefused(
                "keyfigures.invalid", "the document does not follow the key-figure format"
            ) from None
        if node_party(figures.holder) != message.sender:
            raise TaskRefused("keyfigures.not_own", "a node publishes its own holder's key figures only")
        periods = {figures.period}
        self.state.put_key_figures(message.sender, documents)
        return {"periods": sorted(periods)}

    def _on_decision(self, message: Message) -> Mapping[str, Any]:
        assert message.permit is not None
        self._in_scope(message)
        decision, justification = message.body.get("decision"), message.body.get("justification", "")
        if decision not in DECISIONS or not isinstance(justification, str):
            raise TaskRefused("decision.invalid", "decision must be approve, reject, return or withdraw")
        holder_id = holder_of(message.sender)
        if decision == "withdraw":
            # Its stewards withdrew approval: its data leaves the permit at the next query.
            self.state.withdraw(message.permit, message.sender, "permit.withdrawn_by_node")
            return {"withdrawn": message.sender}
        with store.session_scope(self.settings.governance_url) as session:
            view = service.get_request(session, request_id=message.permit)
            if message.body.get("review_round") != view.review_round:
                raise TaskRefused("decision.stale_round", "the decision is for an earlier review round")
            try:
                status = service.decide(
                    session,
                    request_id=message.permit,
                    holder_id=holder_id,
                    reviewer=node_user(holder_id),
                    decision=decision,
                    justification=justification,
                )
            except GovernanceError as exc:
                raise TaskRefused(exc.code, "governance refused the decision") from None
        return {"status": status}

    def _on_key_share(self, message: Message) -> Mapping[str, Any]:
        """A project key sealed by one node for another: relayed, never opened (the hub cannot)."""
        scope = self._in_scope(message)
        to, sealed = message.body.get("to"), message.body.get("sealed")
        if to not in scope or to == message.sender or not isinstance(sealed, str):
            raise TaskRefused("key_share.invalid", "a key share goes to another node in the scope")
        self.state.enqueue(
            to,
            "relay",
            {"kind": "key_share", "from": message.sender, "sealed": sealed},
            permit=message.permit,
            route_key=f"key_share:{message.permit}:{message.sender}:{to}",
        )
        self.wakeup(to)
        return {"relayed_to": to}

    def _on_opt_out(self, message: Message) -> Mapping[str, Any]:
        """An opt-out a node recorded, sealed for each other node: relayed, unreadable here."""
        sealed_for = message.body.get("sealed_for")
        if not isinstance(sealed_for, dict):
            raise TaskRefused("opt_out.invalid", "sealed_for maps nodes to sealed opt-outs")
        nodes = set(self.state.nodes())
        relayed = []
        for to, sealed in sorted(sealed_for.items()):
            if to in nodes and to != message.sender and isinstance(sealed, str):
                self.state.enqueue(
                    to, "relay", {"kind": "opt_out", "from": message.sender, "sealed": sealed}, permit=None
                )
                self.wakeup(to)
                relayed.append(to)
        return {"relayed_to": relayed}

    def _on_exclusions(self, message: Message) -> Mapping[str, Any]:
        """Project pseudonyms of persons who opted out after the release was assembled: recorded in
        the hub's consent registry as the release's consent keys (its consent link maps each project
        pseudonym to itself), so the secure environment drops them at the next query."""
        assert message.permit is not None
        self._in_scope(message)
        pseudonyms, scope = message.body.get("pseudonyms"), message.body.get("scope", "secondary_use")
        if not isinstance(pseudonyms, list) or not all(
            isinstance(p, str) and PSEUDONYM.match(p) for p in pseudonyms
        ):
            raise TaskRefused("exclusions.invalid", "pseudonyms are 64 hex digits")
        with store.session_scope(self.settings.governance_url) as session:
            for pseudonym in pseudonyms:
                service.record_consent(
                    session,
                    consent_key=pseudonym,
                    scope=str(scope),
                    choice="opt_out",
                    source_ref=f"{message.sender} permit {message.permit}",
                    actor=node_user(holder_of(message.sender)),
                )
        return {"excluded": len(pseudonyms)}

    def _on_part_failed(self, message: Message) -> Mapping[str, Any]:
        assert message.permit is not None
        self._in_scope(message)
        reason = str(message.body.get("reason", "part.failed"))[:80]
        self.state.put_part(message.permit, message.sender, status="failed", reason=reason)
        return {"recorded": "failed"}

    def _on_query_answer(self, message: Message) -> Mapping[str, Any]:
        assert message.permit is not None
        self._in_scope(message)
        query_id, cells = message.body.get("query_id"), message.body.get("cells")
        if not isinstance(query_id, str) or not isinstance(cells, str):
            raise TaskRefused("aggregate_result.invalid", "query_id and cells are required")
        try:
            raw = base64.b64decode(cells, validate=True)
        except ValueError:
            raise TaskRefused("aggregate_result.invalid", "cells are base64 Arrow IPC") from None
        self.state.put_query_result(
            query_id,
            message.sender,
            status="answered",
            cells=raw,
            summary=dict(message.body.get("summary") or {}),
        )
        self.wakeup(f"query:{query_id}")
        return {"query_id": query_id}

    def _on_refusal(self, message: Message) -> Mapping[str, Any]:
        assert message.permit is not None
        self._in_scope(message)
        reason = str(message.body.get("reason", "node.refused"))[:80]
        query_id = message.body.get("query_id")
        if reason.startswith("permit."):
            self.state.withdraw(message.permit, message.sender, reason)
        if isinstance(query_id, str):
            self.state.put_query_result(query_id, message.sender, status="refused", reason=reason)
            self.wakeup(f"query:{query_id}")
        return {"reason": reason}

    # -- sending -------------------------------------------------------------------------
    def signed(self, item: OutboxMessage) -> str:
        """An outbox message signed now, with a fresh nonce and expiry (a redelivery after the node
        was away is a new message; the node recognises it by ``outbox_id`` and acts once)."""
        body = {**item.body, "outbox_id": item.id}
        return sign(self.keys, item.type, body, recipient=item.recipient, permit=item.permit)

    def route(self) -> int:
        """Route what the governance store says is due; returns how many messages were queued."""
        queued = 0
        nodes = set(self.state.nodes())
        with store.session_scope(self.settings.governance_url) as session:
            service.expire_permits(session)
            views = service.list_requests(session)
            permits = {v.id: service.permit_for_request(session, request_id=v.id) for v in views}
        for view in views:
            scope = [node_party(h) for h in view.holders]
            if view.status in ("submitted", "under_review"):
                for party_id in scope:
                    if party_id in nodes and self._queue(
                        party_id,
                        "application",
                        _application_body(view),
                        view.id,
                        f"application:{view.id}:{view.review_round}:{party_id}",
                    ):
                        queued += 1
            permit = permits.get(view.id)
            if permit is None or view.parent_id is not None:
                continue
            if permit.status in IN_FORCE:
                body = self._permit_body(permit, scope)
                for party_id in scope:
                    if party_id in nodes and self._queue(
                        party_id, "permit", body, view.id, f"permit:{view.id}:{party_id}"
                    ):
                        queued += 1
            elif permit.status in ("revoked", "expired"):
                for party_id in scope:
                    if party_id in nodes and self._queue(
                        party_id,
                        "revocation",
                        {"status": permit.status},
                        view.id,
                        f"revocation:{view.id}:{party_id}",
                    ):
                        queued += 1
        return queued

    def _queue(
        self, party_id: str, message_type: str, body: Mapping[str, Any], permit_id: int, key: str
    ) -> bool:
        if self.state.enqueue(party_id, message_type, body, permit=permit_id, route_key=key) is None:
            return False
        self.wakeup(party_id)
        return True

    def _permit_body(self, permit: Permit, scope: list[str]) -> dict[str, Any]:
        identities = {p: self.state.identity(p) for p in scope}
        return {
            "request_id": permit.request_id,
            "output_tier": permit.output_tier,
            "expires_at": permit.expires_at.isoformat(),
            "scope": {
                p: base64.b64encode(i.seal_key).decode() for p, i in identities.items() if i is not None
            },
            # the node that draws the project key and seals it for the others
            "coordinator": min(scope),
            "environment_seal_key": base64.b64encode(self.keys.public.seal_key).decode(),
        }

    # -- parts ------------------------------------------------------------------------------
    def check_part_sender(self, message: Message) -> None:
        self._in_scope(message)

    def part_delivered(self, message: Message, path: Path) -> Mapping[str, Any]:
        """Record a node's delivered part (sealed bytes at ``path``); the secure environment
        assembles the release once every node in scope has delivered (``hub.environment``)."""
        assert message.permit is not None
        facts = message.body.get("facts") if isinstance(message.body.get("facts"), dict) else {}
        self.state.put_part(
            message.permit,
            message.sender,
            status="delivered",
            sha256=message.body["sha256"],
            size=message.body["size"],
            path=str(path),
            facts=facts,
        )
        self._log(message, decision="accepted", size=message.body["size"])
        self.wakeup(f"parts:{message.permit}")
        return {"permit": message.permit}

    # -- PROM key figures ------------------------------------------------------------------------
    def prom_key_figures(self, period: str) -> tuple[list[KeyFigures], KeyFigures | None]:
        """Each node's published key figures for ``period`` (year or quarter) and the federation's
        pooled figures (None when nothing was published or the parts cannot be pooled)."""
        from pipelines.outcomes.pooling import Part, key_figures_from_document, pool_key_figures

        parts = []
        for _, documents in sorted(self.state.key_figures().items()):
            for document in documents:
                try:
                    figures, confidence = key_figures_from_document(document)
                except ValueError:  # checked on receipt; a stored document that no longer reads is skipped
                    continue
                if figures.period == period:
                    parts.append(Part(figures, confidence))
        if not parts:
            return [], None
        try:
            pooled = pool_key_figures(parts)
        except ValueError:  # the nodes used different confidence levels
            pooled = None
        return [p.figures for p in parts], pooled

    # -- catalogue ----------------------------------------------------------------------------
    def catalogue_document(self, fmt: str) -> str:
        from federation.catalogue import DatasetSummary, catalogue_graph, catalogue_jsonld, catalogue_turtle

        summaries = [DatasetSummary.from_json(doc) for _, doc in sorted(self.state.catalogue().items())]
        graph = catalogue_graph(
            summaries, hub_uri=self.public_url, catalogue_title="Hälsodata: federated catalogue"
        )
        return catalogue_jsonld(graph) if fmt == "json-ld" else catalogue_turtle(graph)

    @property
    def public_url(self) -> str:
        return self.settings.hub_url or "http://127.0.0.1:8700"

    # -- status ---------------------------------------------------------------------------
    def permit_status(self, permit_id: int) -> dict[str, Any]:
        scope = self._scope(permit_id)
        parts = self.state.parts(permit_id)
        withdrawn = self.state.withdrawn(permit_id)
        return {
            "permit": permit_id,
            "nodes": {
                p: {
                    "part": (parts.get(p) or {}).get("status", "waiting"),
                    "reason": (parts.get(p) or {}).get("reason"),
                    "withdrawn": withdrawn.get(p),
                }
                for p in scope
            },
        }

    def part_path(self, permit_id: int, party_id: str) -> Path:
        return (
            self.settings.ensure_restricted(self.parts_dir / str(permit_id)) / f"{holder_of(party_id)}.sealed"
        )

    def reject_reason(self, exc: MessageRejected | TaskRefused) -> str:
        return exc.reason
