"""The hub's HTTP face for the nodes (``/federation/v1``) and for everyone (the catalogue).

Nodes connect out: they post their messages and hold a long poll (``GET /inbox``) that the hub
answers as soon as something is queued for them, so no node opens an inbound port. Every
request of a node carries a signed message (the body, or the ``X-HDP-Message`` header for the
poll and for a part's sealed bytes); there is no other credential.
"""

# No `from __future__ import annotations`: FastAPI must see the annotations.
import asyncio
import hashlib
import os
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from federation.messages import MessageRejected
from hub.coordinator import Hub, TaskRefused
from hub.queries import FederatedQueries, QueryIncomplete
from hub.wakeups import Wakeups, woken

MAX_POLL_S = 30.0
RECHECK_S = 2.0
MAX_PART_BYTES = 16 * 1024**3
MESSAGE_HEADER = "x-hdp-message"


def _refused(exc: MessageRejected | TaskRefused) -> JSONResponse:
    status = 401 if isinstance(exc, MessageRejected) else 409
    return JSONResponse({"error": exc.reason, "message": str(exc)}, status_code=status)


def federation_router(hub: Hub, wakeups: Wakeups, queries: FederatedQueries) -> APIRouter:
    router = APIRouter(prefix="/federation/v1")

    @router.get("/identity")
    def identity() -> dict[str, Any]:
        """The hub's public identity (nodes compare its fingerprint with the one they were given)."""
        return hub.keys.public.to_json()

    @router.get("/nodes")
    async def nodes() -> dict[str, Any]:
        """The registered nodes' public identities: what a node seals an opt-out for the others with."""
        identities = await run_in_threadpool(lambda: [hub.state.identity(p) for p in hub.state.nodes()])
        return {"nodes": [i.to_json() for i in identities if i is not None]}

    @router.post("/messages")
    async def post_message(request: Request) -> Response:
        token = (await request.body()).decode("ascii", errors="replace")
        try:
            accepted = await run_in_threadpool(hub.accept, token)
        except (MessageRejected, TaskRefused) as exc:
            return _refused(exc)
        return JSONResponse({"accepted": accepted.message.type, **accepted.outcome}, status_code=202)

    @router.get("/inbox")
    async def inbox(request: Request, wait: float = 20.0) -> Response:
        wakeups.loop = wakeups.loop or asyncio.get_running_loop()
        try:
            poll = await run_in_threadpool(hub.believe, request.headers.get(MESSAGE_HEADER, ""))
        except MessageRejected as exc:
            return _refused(exc)
        if poll.type != "poll":
            return _refused(MessageRejected("message.not_a_poll", "the inbox takes a poll message"))
        acks = poll.body.get("ack")
        if isinstance(acks, list) and all(isinstance(i, int) for i in acks) and acks:
            # what the node handled since its last poll: one round trip instead of two
            await run_in_threadpool(hub.state.ack, poll.sender, acks)
        deadline = asyncio.get_running_loop().time() + max(0.0, min(wait, MAX_POLL_S))
        with wakeups.subscription(poll.sender) as event:
            while True:
                event.clear()
                pending = await run_in_threadpool(hub.state.pending, poll.sender)
                remaining = deadline - asyncio.get_running_loop().time()
                if pending or remaining <= 0:
                    break
                if await request.is_disconnected():
                    # the node went away (stopped, crashed): nothing to answer, and a handler left
                    # waiting out its poll would hold up the hub's own shutdown by as long. What was
                    # pending stays queued until a poll acknowledges it.
                    return Response(status_code=204)
                # woken at once by this process; a message another process queued (an operator's
                # command, a second worker) is picked up within the re-check interval
                await woken(event, min(remaining, RECHECK_S))
        signed = await run_in_threadpool(lambda: [hub.signed(item) for item in pending])
        return JSONResponse({"messages": signed})

    @router.post("/parts/{permit_id}")
    async def post_part(permit_id: int, request: Request) -> Response:
        """A node's release part, sealed for the secure environment; the signed ``part`` message in
        the header carries its SHA-256 and size, so the bytes are bound to the node and the permit."""
        try:
            message = await run_in_threadpool(hub.believe, request.headers.get(MESSAGE_HEADER, ""))
            if message.type != "part" or message.permit != permit_id:
                raise TaskRefused("part.mismatch", "the header is not a part message for this permit")
            await run_in_threadpool(hub.check_part_sender, message)
        except (MessageRejected, TaskRefused) as exc:
            return _refused(exc)
        expected, size = message.body.get("sha256"), message.body.get("size")
        if not isinstance(expected, str) or not isinstance(size, int) or not 0 <= size <= MAX_PART_BYTES:
            return _refused(TaskRefused("part.invalid", "sha256 and size are required"))
        target = hub.part_path(permit_id, message.sender)
        partial = target.with_suffix(".partial")
        digest, received = hashlib.sha256(), 0
        with open(partial, "wb") as out:
            async for chunk in request.stream():
                received += len(chunk)
                if received > size:
                    break
                digest.update(chunk)
                out.write(chunk)
        if received != size or digest.hexdigest() != expected:
            os.unlink(partial)
            return _refused(
                TaskRefused("part.truncated", "the bytes received do not match the signed size and digest")
            )
        os.replace(partial, target)
        outcome = await run_in_threadpool(hub.part_delivered, message, target)
        return JSONResponse({"accepted": "part", **outcome}, status_code=202)

    @router.get("/permits/{permit_id}/status", response_model=None)
    async def permit_status(permit_id: int) -> dict[str, Any] | JSONResponse:
        try:
            return await run_in_threadpool(hub.permit_status, permit_id)
        except TaskRefused as exc:  # no such application: 404, not a server error
            return JSONResponse({"error": exc.reason, "message": str(exc)}, status_code=404)

    @router.post("/permits/{permit_id}/query")
    async def federated_query(permit_id: int, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("sql"), str):
            return JSONResponse(
                {"error": "request.body", "message": 'send {"sql": "..."} as JSON'}, status_code=400
            )
        token = request.headers.get("authorization", "").partition(" ")[2].strip()
        try:
            result = await queries.run(permit_id, token=token, sql=body["sql"])
        except QueryIncomplete as exc:
            return JSONResponse(exc.body, status_code=503)
        return JSONResponse(result)

    return router


def catalogue_router(hub: Hub) -> APIRouter:
    router = APIRouter()

    @router.get("/catalogue.jsonld")
    def catalogue_jsonld() -> Response:
        return Response(hub.catalogue_document("json-ld"), media_type="application/ld+json")

    @router.get("/catalogue.ttl")
    def catalogue_turtle() -> Response:
        return Response(hub.catalogue_document("turtle"), media_type="text/turtle")

    @router.get("/catalogue/prom-key-figures.json")
    def prom_key_figures(period: str = "year") -> Response:
        """The nodes' published PROM key figures and the federation's pooled figures (public:
        every cell is already under its node's threshold; the pool withholds what any node did)."""
        from pipelines.outcomes.pooling import key_figures_document

        if period not in ("year", "quarter"):
            return JSONResponse(
                {"error": "request.period", "message": "period is year or quarter"}, status_code=400
            )
        parts, pooled = hub.prom_key_figures(period)
        return JSONResponse(
            {
                "period": period,
                "holders": [key_figures_document(kf) for kf in parts],
                "federation": key_figures_document(pooled) if pooled is not None else None,
            }
        )

    return router
