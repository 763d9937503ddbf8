"""Every HTTP request to the access layer leaves an audit entry; error bodies never echo input.

:class:`AuditEveryRequest` (pure ASGI middleware) watches the appends a request makes
(``hdp.audit.track_appends``). A query, a listing or a refused token already writes its own
entry; any request that has written none by the time its response starts, and every server
error, gets an ``access.http`` entry *before* the response leaves (so an audit log that cannot
be written stops the response): method, route template, status, reason code, the user when
known. Never the path's values, the query string or the body: an unknown path is kept only as
a keyed digest (``path_hmac``), since a path can hold a personnummer.

Unhandled errors become ``500 {"error": "server.error", "message", "ref"}`` (``ref``: the seq
of its audit entry), with no traceback in the body. The server log gets the exception type and
the stack, not the exception's message (it may quote a value).

Request validation errors (422) give reason code, field locations and messages only:
FastAPI's default body echoes the submitted ``input``, which may be a personnummer.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from hdp import audit

log = logging.getLogger("access.http")

#: Keys in the ASGI scope that handlers fill in for the request's audit entry.
USER = "hdp.user"
REASON = "hdp.reason"
FIELDS = "hdp.fields"
_AUDITED = "hdp.audited"

INVALID = "request.invalid"
SERVER_ERROR = "server.error"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
# 10- or 12-digit identifier shapes, with or without a separator.
_PNR = re.compile(r"(?<!\d)\d{6}(?:\d{2})?[-+]?\d{4}(?!\d)")


def _loc_part(part: Any) -> Any:
    """A location element: field names and indexes stay; a submitted key (an extra field's
    name, a dict key) is not echoed unless it looks like a field name."""
    if isinstance(part, int) and not isinstance(part, bool):
        return part
    if isinstance(part, str) and _NAME.match(part):
        return part
    return "<key>"


def _message(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", ""))
    value = err.get("input")
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = str(value)
        if len(text) >= 4 and text in msg:  # a custom validator that quotes the value
            msg = msg.replace(text, "<value>")
    return _PNR.sub("<value>", msg)[:300]


def validation_fields(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Location, message and type of each problem; never ``input`` or ``ctx``."""
    return [
        {
            "loc": [_loc_part(p) for p in err.get("loc", ())],
            "msg": _message(err),
            "type": str(err.get("type", "")),
        }
        for err in exc.errors()
    ]


def request_validation_handler(request: Request, exc: Exception) -> JSONResponse:
    """A malformed request as 422 naming the fields, never echoing their input."""
    assert isinstance(exc, RequestValidationError)  # registered for RequestValidationError only
    fields = validation_fields(exc)
    request.scope[REASON] = INVALID
    request.scope[FIELDS] = [".".join(str(p) for p in f["loc"]) for f in fields]
    return JSONResponse(
        {
            "error": INVALID,
            "message": "the request does not have the expected form (see fields)",
            "fields": fields,
        },
        status_code=422,
    )


def _reason(scope: dict[str, Any], status: int) -> str | None:
    if REASON in scope:
        return str(scope[REASON])
    if status < 400:
        return None
    if status == 404 and scope.get("route") is None:
        return "route.not_found"
    return f"http.{status}"


class AuditEveryRequest:
    """ASGI middleware: see the module docstring. ``service`` has the ``audit`` log."""

    def __init__(self, app: Any, service: Any) -> None:
        self.app = app
        self.service = service

    def _event(self, scope: dict[str, Any], status: int) -> dict[str, Any]:
        route = scope.get("route")
        event: dict[str, Any] = {
            "event": "access.http",
            "method": scope.get("method"),
            "route": getattr(route, "path", None),
            "status": status,
            "decision": "allowed" if status < 400 else "refused",
        }
        if route is None:
            event["path_hmac"] = self.service.audit.text_mac(str(scope.get("path", "")))
        for key, name in ((USER, "user"), (FIELDS, "fields"), ("hdp.error_type", "error_type")):
            if key in scope:
                event[name] = scope[key]
        reason = _reason(scope, status)
        if reason:
            event["reason"] = reason
        return event

    async def _write(self, scope: dict[str, Any], status: int) -> dict[str, Any]:
        scope[_AUDITED] = True
        # An fsync'ed append: off the event loop.
        return await run_in_threadpool(self.service.audit.append, self._event(scope, status))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen, token = audit.track_appends()
        started = False

        async def send_audited(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                if not scope.get(_AUDITED) and (not seen or status >= 500):
                    await self._write(scope, status)
            await send(message)

        try:
            await self.app(scope, receive, send_audited)
        except Exception as exc:
            log.error(
                "unhandled %s in %s %s\n%s",
                type(exc).__name__,
                scope.get("method"),
                getattr(scope.get("route"), "path", "(no route)"),
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            scope["hdp.error_type"] = type(exc).__name__
            scope[REASON] = SERVER_ERROR
            if started:  # a streamed body failed midway: the client sees a cut transfer
                if not scope.get(_AUDITED):
                    await self._write(scope, 500)
                raise
            entry = await self._write(scope, 500)
            response = JSONResponse(
                {
                    "error": SERVER_ERROR,
                    "ref": entry["seq"],
                    "message": "the server could not complete the request; "
                    "it has been logged for the operators",
                },
                status_code=500,
            )
            await response(scope, receive, send)
        finally:
            audit.stop_tracking(token)
