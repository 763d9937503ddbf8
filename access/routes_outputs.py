"""The airlock over HTTP: output requests, their checks, downloads, stewards' exceptions.

``mount(app, service, current_user)`` builds an ``access.outputs.OutputDesk`` on the app's
``AccessService``, keeps it at ``app.state.outputs`` (the web pages use the same desk) and
includes these routes:

=======  ==========================================  =============================================
POST     /releases/{release_id}/outputs              file an output request from a query (201)
GET      /outputs                                    my output requests
GET      /outputs/check                              outputs awaiting my check (``?all=true``: every
                                                     output I may check)
GET      /outputs/{id}                               one output request (requester, its checkers)
GET      /outputs/{id}/preview                       its first rows as JSON (requester, checkers)
POST     /outputs/{id}/checks                        approve / reject / return, with a comment
POST     /outputs/{id}/resubmit                      answer a return (new context, optional new query)
POST     /outputs/{id}/withdraw                      the requester withdraws it
GET      /outputs/{id}/download                      the approved file (requester only; hash checked)
GET      /permits/{permit_id}/output-exceptions      the permit's row-level exceptions
POST     /permits/{permit_id}/output-exceptions      a steward records one (201)
POST     /output-exceptions/{id}/withdraw            a steward withdraws one
=======  ==========================================  =============================================

Refusals are the access layer's ``{"error": <code>, "message": <text>}`` with the governance
error's status (403 not allowed, 404 unknown or not yours to see, 409 wrong state, 422 invalid).
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated aliases at runtime.

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from access.formats import serialise
from access.outputs import OutputDesk, exception_dict, to_dict

MAX_TEXT = 5000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OutputBody(_Body):
    sql: str = Field(max_length=100_000)
    format: Literal["csv", "parquet", "arrow", "json"] = "csv"
    title: str = Field(max_length=200)
    context: str = Field(max_length=MAX_TEXT)


class CheckBody(_Body):
    decision: Literal["approve", "reject", "return"]
    comment: str = Field(max_length=MAX_TEXT)


class ResubmitBody(_Body):
    context: str = Field(max_length=MAX_TEXT)
    sql: str | None = Field(default=None, max_length=100_000)
    format: Literal["csv", "parquet", "arrow", "json"] | None = None


class ExceptionBody(_Body):
    justification: str = Field(max_length=MAX_TEXT)
    holder_id: str | None = Field(default=None, max_length=64)


def make_router(desk: OutputDesk, current_user: Callable[..., Any]) -> APIRouter:
    router = APIRouter(tags=["outputs"])
    CurrentUser = Annotated[Any, Depends(current_user)]

    @router.post("/releases/{release_id}/outputs", status_code=201)
    def create(release_id: str, body: OutputBody, user: CurrentUser) -> JSONResponse:
        o = desk.create(user, release_id, body.sql, body.format, title=body.title, context=body.context)
        return JSONResponse(to_dict(o, viewer=user.name), status_code=201)

    @router.get("/outputs")
    def mine(user: CurrentUser) -> list[dict[str, Any]]:
        return [to_dict(o, viewer=user.name) for o in desk.mine(user)]

    @router.get("/outputs/check")
    def check_queue(user: CurrentUser, all: bool = False) -> list[dict[str, Any]]:  # noqa: A002 - query name
        found = desk.for_checker(user) if all else desk.queue(user)
        return [to_dict(o, viewer=user.name) for o in found]

    @router.get("/outputs/{output_id}")
    def one(output_id: int, user: CurrentUser) -> dict[str, Any]:
        return to_dict(desk.get(user, output_id), viewer=user.name)

    @router.get("/outputs/{output_id}/preview")
    def preview(output_id: int, user: CurrentUser) -> Response:
        _, table = desk.preview(user, output_id)
        return Response(
            serialise(table, "json", meta={"output_id": output_id}),
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    @router.post("/outputs/{output_id}/checks")
    def check(output_id: int, body: CheckBody, user: CurrentUser) -> dict[str, Any]:
        return to_dict(desk.decide(user, output_id, body.decision, body.comment), viewer=user.name)

    @router.post("/outputs/{output_id}/resubmit")
    def resubmit(output_id: int, body: ResubmitBody, user: CurrentUser) -> dict[str, Any]:
        o = desk.resubmit(user, output_id, context=body.context, sql=body.sql, fmt=body.format)
        return to_dict(o, viewer=user.name)

    @router.post("/outputs/{output_id}/withdraw")
    def withdraw(output_id: int, user: CurrentUser) -> dict[str, Any]:
        return to_dict(desk.withdraw(user, output_id), viewer=user.name)

    @router.get("/outputs/{output_id}/download")
    def download(output_id: int, user: CurrentUser) -> Response:
        d = desk.download(user, output_id)
        return Response(
            d.body,
            media_type=d.media_type,
            headers={
                "Content-Disposition": f'attachment; filename="{d.filename}"',
                "X-HDP-Output-SHA256": d.sha256,
                "X-HDP-Rows": str(d.output.rows),
                "Cache-Control": "no-store",
            },
        )

    @router.get("/permits/{permit_id}/output-exceptions")
    def exceptions(permit_id: int, user: CurrentUser) -> list[dict[str, Any]]:
        return [exception_dict(e) for e in desk.exceptions(user, permit_id)]

    @router.post("/permits/{permit_id}/output-exceptions", status_code=201)
    def record_exception(permit_id: int, body: ExceptionBody, user: CurrentUser) -> JSONResponse:
        e = desk.record_exception(user, permit_id, body.justification, body.holder_id)
        return JSONResponse(exception_dict(e), status_code=201)

    @router.post("/output-exceptions/{exception_id}/withdraw")
    def withdraw_exception(exception_id: int, user: CurrentUser) -> dict[str, Any]:
        return exception_dict(desk.withdraw_exception(user, exception_id))

    return router


def mount(app: FastAPI, service: Any, current_user: Callable[..., Any]) -> OutputDesk:
    """Build the desk on ``service``, keep it at ``app.state.outputs`` and include the routes."""
    desk = OutputDesk(service)
    app.state.outputs = desk
    app.include_router(make_router(desk, current_user))
    return desk
