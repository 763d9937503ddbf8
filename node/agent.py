"""The node agent: a data holder's connection to the hub, opened from inside the holder's network.

It holds a long poll on the hub's inbox (no inbound port at the node), believes only messages the
hub signed for this node (``federation.messages.verify`` with the hub's registered identity),
acts on each at most once (by its outbox id), and acknowledges it. Its own stewards decide in
the node's own governance store, with the node's own CLI and web pages; the agent forwards their
verdicts, signed. Every task is checked against the node's *own* store: a permit, a part or a
query that its stewards did not approve is refused with a reason, whatever the hub says.

What leaves the node: decisions (ids, verdict, the stewards' justification), its catalogue summary
(counts only), its release part (sealed for the secure environment), project keys (sealed for the
other nodes in scope), and the disclosure-controlled cells of aggregate queries under its own
thresholds. Never a landing file, a zone file, a node key or an identifier.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import secrets
import tarfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pyarrow.ipc as ipc
from nacl.public import PublicKey

from access.errors import Refusal
from access.governance_adapter import shared_governance
from access.service import AccessService, AccessSettings
from edge import releases as edge_releases
from federation import cells
from federation.identity import HUB, PartyKeys, PublicIdentity, node_party
from federation.messages import Message, MessageRejected, sign, verify
from federation.nonces import FileNonceStore
from federation.sealing import open_sealed, seal
from governance import service, store
from governance.catalogue import table_holders
from governance.errors import GovernanceError, InvalidRequest, NotFound
from governance.permits import IN_FORCE
from governance.values import User
from hdp.audit import AuditLog
from hdp.settings import Settings, SettingsError
from node.state import NodeState
from pipelines.release import release_domain, release_id_for
from privacy.domains import consent_key, pseudonymiser, release_domain_name
from privacy.keys import KeyStore, KeyStoreError
from privacy.personnummer import parse

log = logging.getLogger(__name__)

POLL_WAIT_S = 20.0
#: Seconds between the agent's passes over its own store (its stewards' decisions, withdrawals).
LOCAL_PASS_S = 0.5
CATALOGUE_EVERY_S = 300.0
MESSAGE_HEADER = "X-HDP-Message"
#: Seconds before a message whose handling failed is tried again (it stays unacknowledged).
RETRY_AFTER_FAILURE_S = 5.0
#: Aggregate queries this node answers at once (each is bounded by the access layer's limits).
QUERY_WORKERS = 4


class Node:
    """One data holder's node agent."""

    def __init__(self, settings: Settings, *, client: httpx.Client | None = None) -> None:
        if settings.federation_role != "node" or settings.node_holder is None:
            raise SettingsError("the node agent runs with HDP_FEDERATION_ROLE=node and HDP_NODE_HOLDER")
        if settings.hub_url is None or settings.hub_identity is None:
            raise SettingsError("a node needs HDP_HUB_URL and HDP_HUB_IDENTITY (the hub's public identity)")
        self.settings = settings
        self.holder_id: str = settings.node_holder
        self.party = node_party(self.holder_id)
        self.keys = PartyKeys.load(self.party, settings)
        self.hub_identity = PublicIdentity.read(settings.hub_identity)
        if self.hub_identity.party != HUB:
            raise SettingsError("HDP_HUB_IDENTITY is not the hub's identity")
        private = settings.ensure_restricted(settings.restricted / "federation")
        self.nonces = FileNonceStore(private / "nonces.sqlite")
        self.state = NodeState(private / "node.sqlite")
        self.audit = AuditLog(settings.audit_dir / "federation.jsonl")
        self.http = client or httpx.Client(base_url=settings.hub_url, timeout=POLL_WAIT_S + 15)
        self._access: AccessService | None = None
        self._builds = threading.Lock()
        self._queries = ThreadPoolExecutor(max_workers=QUERY_WORKERS, thread_name_prefix="node-query")
        self.stopping = threading.Event()

    # -- the channel ---------------------------------------------------------------------
    def _signed(self, message_type: str, body: Mapping[str, Any], permit: int | None) -> str:
        return sign(self.keys, message_type, body, recipient=HUB, permit=permit)

    def send(self, message_type: str, body: Mapping[str, Any], *, permit: int | None) -> httpx.Response:
        response = self.http.post("/federation/v1/messages", content=self._signed(message_type, body, permit))
        if response.status_code >= 500:
            response.raise_for_status()  # the hub could not act: the caller tries again later
        if response.status_code >= 400:
            log.warning("hub refused %s: %s", message_type, _reason(response))
        return response

    def poll(self, wait: float = POLL_WAIT_S, *, ack: list[int] | None = None) -> list[str]:
        """The next messages for this node; ``ack`` acknowledges those handled since the last poll
        (one round trip for both)."""
        response = self.http.get(
            "/federation/v1/inbox",
            params={"wait": wait},
            headers={MESSAGE_HEADER: self._signed("poll", {"ack": ack or []}, None)},
            timeout=wait + 15,
        )
        response.raise_for_status()
        messages = response.json().get("messages", [])
        return [m for m in messages if isinstance(m, str)]

    def believe(self, token: str) -> Message:
        return verify(
            token,
            recipient=self.party,
            sender_key=lambda party: self.hub_identity if party == HUB else None,
            nonces=self.nonces,
        )

    # -- the loop ------------------------------------------------------------------------------
    def run_forever(self) -> None:
        """Poll and act until stopped; a hub that cannot be reached is retried with backoff."""
        self.resume()
        local = threading.Thread(target=self._local_loop, name="node-local", daemon=True)
        local.start()
        backoff = 0.5
        handled: list[int] = []
        while not self.stopping.is_set():
            try:
                tokens = self.poll(ack=handled)
                handled = self.handle_all(tokens, ack=False)
                backoff = 0.5
            except httpx.HTTPError as exc:
                log.warning("hub unreachable (%s); retrying in %.1f s", type(exc).__name__, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def resume(self) -> None:
        """After a restart: build the parts of permits whose build was cut off."""
        for permit_id in self.state.permits_without_part():
            try:
                self.build_part_when_ready(permit_id)
            except Exception:  # reported to the hub as part_failed; the redelivery retries
                pass

    def _local_loop(self) -> None:
        last_catalogue = 0.0
        while not self.stopping.is_set():
            try:
                self.forward_decisions()
                if time.monotonic() - last_catalogue > CATALOGUE_EVERY_S:
                    self.publish_catalogue()
                    last_catalogue = time.monotonic()
            except httpx.HTTPError:
                pass  # the hub is away: the next pass forwards what is still due
            except Exception:
                log.exception("node local pass failed")
            self.stopping.wait(LOCAL_PASS_S)

    def handle_all(self, tokens: list[str], *, ack: bool = True) -> list[int]:
        """Act on each message (at most once in effect); returns the outbox ids handled, and
        acknowledges them at once unless ``ack`` is False (the next poll carries them)."""
        handled: list[int] = []
        for token in tokens:
            try:
                message = self.believe(token)
            except MessageRejected as exc:
                log.warning("refused a message from the hub: %s", exc.reason)
                self.audit.append({"kind": "federation.rejected", "reason": exc.reason})
                continue
            outbox_id = message.body.get("outbox_id")
            if not isinstance(outbox_id, int):
                continue
            if self.state.handled(outbox_id):
                handled.append(outbox_id)  # a redelivery: acted on already
                continue
            # Marked handled only once acted on: a node killed half-way acts again on the
            # redelivery, and every handler is idempotent (a second application, permit, key
            # share or part build finds its work done; the hub keeps a query's first answer).
            try:
                self.handle(message)
            except Exception:
                log.exception("node failed to handle a %s message", message.type)
                self.stopping.wait(RETRY_AFTER_FAILURE_S)  # the hub redelivers it at once
                continue
            self.state.mark_handled(outbox_id)
            handled.append(outbox_id)
        if handled and ack:
            self.send("ack", {"ids": handled}, permit=None)
        return handled

    def handle(self, message: Message) -> None:
        handlers: dict[str, Callable[[Message], None]] = {
            "application": self.on_application,
            "permit": self.on_permit,
            "relay": self.on_relay,
            "revocation": self.on_revocation,
            # answered in worker threads: a slow query does not hold up the node's other tasks, and
            # several researchers' queries run side by side (answered at most once: the hub keeps
            # the first answer)
            "aggregate_query": self._answer_in_background,
        }
        handler = handlers.get(message.type)
        if handler is None:
            return
        self.audit.append({"kind": "federation.task", "type": message.type, "permit": message.permit})
        handler(message)

    # -- applications and decisions ------------------------------------------------------------------
    def on_application(self, message: Message) -> None:
        """Put an application before this node's own stewards, under the hub's id."""
        assert message.permit is not None
        body = message.body
        own_tables = {t for t, hs in table_holders().items() if self.holder_id in hs}
        variables = [v for v in body.get("variables", []) if v.split(".", 1)[0] in own_tables]
        if self.holder_id not in body.get("holders", []) or not variables:
            self.send("refusal", {"reason": "application.not_for_this_node"}, permit=message.permit)
            return
        url = self.settings.governance_url
        with store.session_scope(url) as session:
            for name in [body["applicant"], *body.get("members", [])]:
                try:
                    service.get_user(session, name=name)
                except NotFound:  # the researcher as the hub knows them (no token at this node)
                    service.create_user(session, name=name, roles={"researcher"}, actor=self.party)
        with store.session_scope(url) as session:
            try:
                existing = service.get_request(session, request_id=message.permit)
            except NotFound:
                existing = None
            if existing is None:
                criteria = {
                    variable: condition
                    for variable, condition in (body.get("cohort_criteria") or {}).items()
                    if variable.split(".", 1)[0] in own_tables
                }
                fields = {
                    k: body[k]
                    for k in (
                        "project",
                        "purpose",
                        "legal_basis",
                        "ethics_ref",
                        "data_form",
                        "pseudonymisation_justification",
                        "output_tier",
                        "access_days",
                    )
                    if body.get(k) is not None
                }
                try:
                    service.file_request(
                        session,
                        applicant=body["applicant"],
                        request_id=message.permit,
                        holders=[self.holder_id],
                        variables=variables,
                        members=body.get("members", []),
                        period=tuple(body.get("period") or (None, None)),
                        cohort_criteria=criteria,
                        **fields,
                    )
                except InvalidRequest as exc:
                    # this node's rules refuse it as filed (the hub shows the reason to the applicant)
                    codes = ",".join(sorted({code for code, _ in exc.problems}))[:60]
                    self.send("refusal", {"reason": f"application.invalid:{codes}"}, permit=message.permit)
                    return
                service.submit_request(session, request_id=message.permit, actor=body["applicant"])
            elif existing.status == "returned":
                service.submit_request(session, request_id=message.permit, actor=body["applicant"])
        self.state.set_hub_round(message.permit, int(body.get("review_round", 1)))

    def forward_decisions(self) -> None:
        """Send the hub each verdict this node's stewards reached, once; and a withdrawal when they
        revoke a permit they had approved."""
        with store.session_scope(self.settings.governance_url) as session:
            views = [service.get_request(session, request_id=i) for i in self.state.mirrored()]
            permits = {v.id: service.permit_for_request(session, request_id=v.id) for v in views}
        for view in views:
            hub_round = self.state.hub_round(view.id)
            review = next(
                (
                    r
                    for r in view.reviews
                    if r.holder_id == self.holder_id and r.review_round == view.review_round
                ),
                None,
            )
            permit = permits.get(view.id)
            if permit is not None and permit.status == "revoked":
                self._forward_once(view.id, "withdraw", {"decision": "withdraw", "justification": ""})
                continue
            if review is None or review.verdict == "pending" or hub_round is None:
                continue
            verdict = {"approved": "approve", "rejected": "reject", "returned": "return"}.get(review.verdict)
            if verdict is None or self.state.was_sent(view.id, f"{verdict}:{hub_round}"):
                continue
            justification = next(
                (
                    d.justification
                    for d in view.decisions
                    if d.holder_id == self.holder_id and d.review_round == view.review_round
                ),
                "",
            )
            self._forward_once(
                view.id,
                f"{verdict}:{hub_round}",
                {"decision": verdict, "justification": justification, "review_round": hub_round},
            )

    def _forward_once(self, request_id: int, what: str, body: Mapping[str, Any]) -> None:
        """Send a decision unless sent already; marked sent only once the hub has answered (a hub
        that cannot be reached raises, and the next pass sends it again)."""
        if self.state.was_sent(request_id, what):
            return
        self.send("decision", body, permit=request_id)
        self.state.mark_sent(request_id, what)

    # -- permits, project keys, parts -----------------------------------------------------------
    def _local_permit_in_force(self, permit_id: int) -> bool:
        with store.session_scope(self.settings.governance_url) as session:
            permit = service.permit_for_request(session, request_id=permit_id)
        return permit is not None and permit.status in IN_FORCE

    def on_permit(self, message: Message) -> None:
        assert message.permit is not None
        if not self._local_permit_in_force(message.permit):
            # The hub says every node approved; this node's own store must say so too.
            self.send("refusal", {"reason": "permit.not_approved_here"}, permit=message.permit)
            return
        self.state.put_permit(message.permit, dict(message.body))
        if message.body.get("coordinator") == self.party:
            self._draw_project_key(message.permit, message.body)
        self.build_part_when_ready(message.permit)

    def _key_domain(self, permit_id: int) -> str:
        return release_domain_name(release_domain(permit_id))

    def _has_project_key(self, permit_id: int) -> bool:
        try:
            KeyStore(self.settings).active_key(self._key_domain(permit_id), create=False)
        except KeyStoreError:
            return False
        return True

    def _draw_project_key(self, permit_id: int, body: Mapping[str, Any]) -> None:
        """The coordinator draws the project key and seals it for each other node in scope; the hub
        relays the sealed shares and can open none of them."""
        store_ = KeyStore(self.settings)
        domain = self._key_domain(permit_id)
        if not self._has_project_key(permit_id):
            store_.install_key(domain, secrets.token_bytes(32))
        secret = store_.active_key(domain, create=False).secret
        for party, seal_key in sorted(body.get("scope", {}).items()):
            if party == self.party:
                continue
            sealed = seal(secret, PublicKey(base64.b64decode(seal_key)))
            self.send(
                "key_share", {"to": party, "sealed": base64.b64encode(sealed).decode()}, permit=permit_id
            )

    def on_relay(self, message: Message) -> None:
        kind = message.body.get("kind")
        sealed = base64.b64decode(str(message.body.get("sealed", "")))
        if kind == "key_share" and message.permit is not None:
            secret = open_sealed(sealed, self.keys.opening)
            KeyStore(self.settings).install_key(self._key_domain(message.permit), secret)
            self.build_part_when_ready(message.permit)
        elif kind == "opt_out":
            self._on_relayed_opt_out(sealed, str(message.body.get("from", "node")).replace(":", "."))

    # -- opt-outs -------------------------------------------------------------------------------------
    def opt_out(self, personnummer: str, *, scope: str, source_ref: str) -> list[str]:
        """Record an opt-out at this node and send it on to every other node, sealed for each (the
        hub relays bytes it cannot open, and stores no personnummer). Returns the nodes it went to."""
        ident = parse(personnummer)
        self._record_opt_out(ident.normalised, scope=scope, source_ref=source_ref, actor=self.party)
        listed = self.http.get("/federation/v1/nodes", timeout=30)
        listed.raise_for_status()
        payload = json.dumps(
            {"personnummer": ident.normalised, "scope": scope, "source_ref": source_ref}
        ).encode()
        sealed_for = {}
        for doc in listed.json().get("nodes", []):
            other = PublicIdentity.from_json(doc)
            if other.party != self.party:
                sealed_for[other.party] = base64.b64encode(seal(payload, other.sealing_key())).decode()
        self.send("opt_out", {"sealed_for": sealed_for}, permit=None)
        return sorted(sealed_for)

    def _record_opt_out(self, normalised: str, *, scope: str, source_ref: str, actor: str) -> None:
        """Into this node's consent registry (its own consent key): applied at its next build and
        query; and, for each federated release it took part in, the person's project pseudonym goes
        to the secure environment, which drops it at the next query."""
        with store.session_scope(self.settings.governance_url) as session:
            service.record_consent(
                session,
                consent_key=consent_key(normalised, settings=self.settings),
                scope=scope,
                choice="opt_out",
                source_ref=source_ref,
                actor=actor,
            )
        for permit_id in self.state.record_permits():
            if not self._has_project_key(permit_id):
                continue
            pseudonym = pseudonymiser(self._key_domain(permit_id), settings=self.settings, create=False).one(
                normalised
            )
            self.send("exclusions", {"pseudonyms": [pseudonym], "scope": scope}, permit=permit_id)

    def _on_relayed_opt_out(self, sealed: bytes, sender: str) -> None:
        doc = json.loads(open_sealed(sealed, self.keys.opening))
        normalised = parse(str(doc["personnummer"])).normalised
        self._record_opt_out(
            normalised,
            scope=str(doc["scope"]),
            source_ref=str(doc["source_ref"])[:128],
            actor=f"relay.{sender}",
        )

    def on_revocation(self, message: Message) -> None:
        assert message.permit is not None
        self.state.end_permit(message.permit)

    def build_part_when_ready(self, permit_id: int) -> None:
        """Build and deliver this node's part once both the permit and the project key are here."""
        permit_body = self.state.permit(permit_id)
        if permit_body is None or not self._has_project_key(permit_id):
            return
        with self._builds:
            if self.state.part_sent(permit_id):
                return
            try:
                self._build_and_deliver(permit_id, permit_body)
            except Exception as exc:
                log.exception("part of permit %s failed", permit_id)
                self.send("part_failed", {"reason": f"part.{type(exc).__name__}"[:80]}, permit=permit_id)
                raise

    def _build_and_deliver(self, permit_id: int, permit_body: Mapping[str, Any]) -> None:
        built = edge_releases.build_release(
            permit_id, run_id=f"federation-{permit_id}", settings=self.settings
        )
        release_dir = Path(built.path)
        schema = self._schema(permit_id, built.release_id)
        facts = {
            "tier": permit_body.get("output_tier"),
            "rows": built.rows,
            "persons": built.persons,
            "schema": schema,
        }
        payload = b""
        if permit_body.get("output_tier") == "record":
            environment = PublicKey(base64.b64decode(permit_body["environment_seal_key"]))
            payload = seal(_part_archive(release_dir), environment)
        header = self._signed(
            "part",
            {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload), "facts": facts},
            permit_id,
        )
        response = self.http.post(
            f"/federation/v1/parts/{permit_id}",
            content=payload,
            headers={MESSAGE_HEADER: header},
            timeout=600,
        )
        response.raise_for_status()
        self.state.mark_part_sent(permit_id)
        self.audit.append(
            {
                "kind": "federation.part_delivered",
                "permit": permit_id,
                "bytes": len(payload),
                "rows": built.rows,
            }
        )

    def _schema(self, permit_id: int, release_id: str) -> dict[str, list[list[str]]]:
        with store.session_scope(self.settings.governance_url) as session:
            view = service.get_request(session, request_id=permit_id)
        doc = self.access.schema(self._researcher(view.applicant), release_id)
        return {t: [[c["name"], c["type"]] for c in cols] for t, cols in doc["tables"].items()}

    # -- aggregate queries -------------------------------------------------------------------
    @property
    def access(self) -> AccessService:
        if self._access is None:
            self._access = AccessService(
                AccessSettings.from_env(), shared_governance(self.settings.governance_url)
            )
        return self._access

    @staticmethod
    def _researcher(name: str) -> User:
        return User(name=name, roles=frozenset({"researcher"}))

    def _answer_in_background(self, message: Message) -> None:
        self._queries.submit(self._answer_safely, message)

    def _answer_safely(self, message: Message) -> None:
        try:
            self.on_aggregate_query(message)
        except Exception:  # the hub reports the node as not answering; nothing partial leaves
            log.exception("aggregate query failed at this node")

    def on_aggregate_query(self, message: Message) -> None:
        """Run a federated query on this node's part, under its own thresholds, perturbation,
        consent and query ledger, as the researcher the hub authenticated."""
        assert message.permit is not None
        query_id, sql, user = message.body.get("query_id"), message.body.get("sql"), message.body.get("user")
        if not (isinstance(query_id, str) and isinstance(sql, str) and isinstance(user, str)):
            return
        if self.state.permit_ended(message.permit) or not self._local_permit_in_force(message.permit):
            self.send(
                "refusal", {"reason": "permit.withdrawn_by_node", "query_id": query_id}, permit=message.permit
            )
            return
        try:
            result = self.access.query(self._researcher(user), release_id_for(message.permit), sql, "arrow")
            table = ipc.open_stream(io.BytesIO(result.body)).read_all()  # type: ignore[union-attr]
        except Refusal as refusal:
            self.send("refusal", {"reason": refusal.reason, "query_id": query_id}, permit=message.permit)
            return
        except GovernanceError as exc:
            self.send("refusal", {"reason": exc.code, "query_id": query_id}, permit=message.permit)
            return
        self.send(
            "aggregate_result",
            {
                "query_id": query_id,
                "cells": base64.b64encode(cells.to_ipc(table)).decode(),
                "summary": result.summary,  # type: ignore[union-attr]
            },
            permit=message.permit,
        )

    # -- catalogue ---------------------------------------------------------------------------------
    def publish_catalogue(self) -> None:
        from pipelines.dataset_summary import summarise_holder

        if not self.settings.research_db(self.holder_id).exists():
            return
        summary = summarise_holder(self.holder_id, node_id=self.party, settings=self.settings)
        self.send("catalogue", {"summary": summary}, permit=None)
        self.publish_key_figures()

    def publish_key_figures(self) -> None:
        """The holder's PROM key figures by year, computed here under this node's own
        min_cell_count and through its differencing guard (state owner-only in the node's private
        federation directory), for the hub's federation figures."""
        from pipelines.outcomes.keyfigures import threshold_for
        from pipelines.outcomes.source import published_documents

        documents = published_documents(
            self.settings.research_db(self.holder_id),
            holder=self.holder_id,
            threshold=threshold_for(self.holder_id),
            guard_dir=self.settings.ensure_restricted(self.settings.restricted / "federation"),
        )
        if documents:
            self.send("prom_key_figures", {"figures": documents}, permit=None)


def _reason(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.status_code))
    except ValueError:
        return str(response.status_code)


def _part_archive(release_dir: Path) -> bytes:
    """The part as the environment takes it: the release's Parquet files and the node's manifest."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:") as tar:
        for path in sorted([*release_dir.glob("*.parquet"), release_dir / "manifest.json"]):
            info = tar.gettarinfo(str(path), arcname=path.name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with open(path, "rb") as source:
                tar.addfile(info, source)
    return buffer.getvalue()
