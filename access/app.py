"""FastAPI application: thin routes over ``AccessService``.

``create_app(settings=None, governance=None)`` builds the app; with no arguments it reads
``AccessSettings.from_env()`` and talks to the governance store at ``HDP_GOVERNANCE_URL``.
Every refusal is a JSON body ``{"error": <reason code>, "message": <text>}`` with status
400 (bad query), 401 (no/invalid token), 403 (not allowed), 404 (unknown), 422 (limit hit)
or 503 (a dependency could not be asked, so the layer refused).
"""

# No `from __future__ import annotations`: FastAPI must see the local Annotated aliases.

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from access import audit_http
from access.audit_http import AuditEveryRequest, request_validation_handler
from access.codebook import codebook_for, manifest_for
from access.docs_offline import NO_CDN_DOCS, serve_offline_docs
from access.errors import Forbidden, Refusal
from access.formats import chunks
from access.governance_adapter import shared_governance
from access.metrics import AccessMetrics, RequestMetrics, platform_sources
from access.ports import Governance, User
from access.routes_followup import make_router as make_followup_router
from access.routes_governance import make_router as make_governance_router
from access.routes_outputs import mount as mount_outputs
from access.service import AccessService, AccessSettings, QueryResult, StreamedResult
from access.web import build_router as build_web_router
from governance.auditing import StoreCheckpoints
from governance.store import session_scope
from hdp import settings as hdp_settings
from hdp.audit import build_report
from privacy.audit_key import configure as configure_audit_key

ServiceDependency = Callable[[], Awaitable[AccessService]]
UserDependency = Callable[[Request, AccessService], User]


class QueryBody(BaseModel):
    sql: str = Field(max_length=100_000)
    format: Literal["json", "csv", "arrow", "parquet"] = "json"


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def create_app(settings: AccessSettings | None = None, governance: Governance | None = None) -> FastAPI:
    service = build_service(settings or AccessSettings.from_env(), governance)
    app = FastAPI(title="Health-data platform: access layer", version="1", **NO_CDN_DOCS)
    serve_offline_docs(app)  # Swagger UI and ReDoc from this machine (access/docs_offline.py)
    app.state.service = service
    # Every request leaves an audit entry (its own, or access.http); 500s are JSON, audited.
    app.add_middleware(AuditEveryRequest, service=service)
    app.add_exception_handler(RequestValidationError, request_validation_handler)  # no input echoed
    app.add_exception_handler(Refusal, refusal_response)
    # Outermost: counts every request, the 500s the audit middleware answers too (access/metrics.py).
    app.state.metrics = AccessMetrics(platform_sources(lambda: hdp_settings.get_settings().governance_url))
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)

    get_service = service_dependency(service)
    current_user = current_user_dependency(get_service)
    app.include_router(query_router(get_service, current_user))
    app.include_router(operator_router(get_service, current_user))
    app.include_router(make_governance_router(governance_session, current_user))
    # Access follow-up (logguppföljning) per holder: access/routes_followup.py
    app.include_router(make_followup_router(governance_session, current_user, service.settings.audit_path))
    mount_outputs(app, service, current_user)  # the airlock: output requests (access/routes_outputs.py)
    app.include_router(build_web_router())  # server-rendered pages under /web
    app.router.on_shutdown.append(service.audit.close)  # checkpoint the head this worker left
    app.router.on_shutdown.append(service.close)
    return app


def build_service(settings: AccessSettings, governance: Governance | None) -> AccessService:
    """The service over ``governance``, or over the governance store of the settings (whose
    port the web pages share) with the audit log's head checkpoints kept in that store."""
    # This process's edge: logs under $HDP_HOME/audit are keyed with the key store's audit key
    # (loaded once, on the first append). See privacy/audit_key.py.
    configure_audit_key()
    if governance is not None:
        return AccessService(settings, governance)
    url = hdp_settings.get_settings().governance_url
    service = AccessService(settings, shared_governance(url))
    service.audit.checkpoints = StoreCheckpoints(url)
    return service


def refusal_response(request: Request, exc: Exception) -> JSONResponse:
    """A refusal as ``{"error": <reason code>, "message": <text>}``, its reason in the audit entry."""
    assert isinstance(exc, Refusal)  # registered for Refusal only
    request.scope[audit_http.REASON] = exc.reason
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(
        {"error": exc.reason, "message": exc.message}, status_code=exc.status, headers=headers
    )


def service_dependency(service: AccessService) -> ServiceDependency:
    # async: no I/O here, and a sync dependency costs a threadpool round trip per request
    # (measured on the loaded 2-core machine: each hop adds milliseconds at p50).
    async def get_service() -> AccessService:
        return service

    return get_service


def current_user_dependency(get_service: ServiceDependency) -> UserDependency:
    Service = Annotated[AccessService, Depends(get_service)]

    def current_user(request: Request, svc: Service) -> User:
        user = svc.authenticate(_bearer(request), endpoint=request.url.path)
        request.scope[audit_http.USER] = user.name  # for the request's audit entry
        return user

    return current_user


def governance_session() -> Iterator[Session]:
    """A session on the governance store for one request of the governance routes."""
    with session_scope(hdp_settings.get_settings().governance_url) as session:
        yield session


def query_result_response(result: QueryResult | StreamedResult, fmt: str) -> Response:
    """The HTTP response of a query: streamed when large (Arrow) or binary, with its facts in headers."""
    if isinstance(result, StreamedResult):
        return StreamingResponse(
            result.chunks,
            media_type=result.media_type,
            headers={"X-HDP-Permit": str(result.permit_id), "X-HDP-Streamed": "1"},
        )
    headers = {
        "X-HDP-Rows": str(result.rows),
        "X-HDP-Result-SHA256": result.sha256,
        "X-HDP-Permit": str(result.permit_id),
    }
    if result.summary:  # aggregate tier: how many cells disclosure control withheld
        headers["X-HDP-Cells-Suppressed"] = str(result.summary["cells"] - result.summary["published"])
    if fmt in ("arrow", "parquet"):
        body = result.body

        def stream() -> Iterator[bytes]:
            yield from chunks(body)

        return StreamingResponse(stream(), media_type=result.media_type, headers=headers)
    return Response(result.body, media_type=result.media_type, headers=headers)


def query_router(get_service: ServiceDependency, current_user: UserDependency) -> APIRouter:
    """Health, who am I, my releases, their schemas, and queries."""
    router = APIRouter()
    Service = Annotated[AccessService, Depends(get_service)]
    CurrentUser = Annotated[User, Depends(current_user)]

    @router.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/me")
    def me(user: CurrentUser) -> dict[str, Any]:
        return {"name": user.name, "roles": sorted(user.roles), "holder_ids": sorted(user.holder_ids)}

    @router.get("/releases")
    def releases(user: CurrentUser, svc: Service) -> list[dict[str, Any]]:
        return svc.my_releases(user)

    @router.get("/releases/{release_id}/schema")
    def schema(release_id: str, user: CurrentUser, svc: Service) -> dict[str, Any]:
        return svc.schema(user, release_id)

    @router.get("/releases/{release_id}/codebook")
    def codebook(release_id: str, user: CurrentUser, svc: Service) -> dict[str, Any]:
        """Variables (labels sv/en, type, unit, value set, code system, disclosure class) and
        provenance (holders, extract dates, quality gates, exclusions, disclosure settings)."""
        return codebook_for(svc, user, release_id)

    @router.get("/releases/{release_id}/manifest")
    def manifest(release_id: str, user: CurrentUser, svc: Service) -> dict[str, Any]:
        """The release manifest's allow-listed fields (nothing identifying, no keys, no paths)."""
        return manifest_for(svc, user, release_id)

    @router.post("/releases/{release_id}/query")
    def query(release_id: str, body: QueryBody, request: Request, svc: Service) -> Response:
        # Authenticated here rather than through the CurrentUser dependency: a sync dependency
        # is one more thread-pool round trip, on the path every query takes.
        user = current_user(request, svc)
        # Arrow results are streamed when large (bounded server memory); see AccessService.query.
        result = svc.query(user, release_id, body.sql, body.format, stream=body.format == "arrow")
        return query_result_response(result, body.format)

    @router.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/web/")

    return router


def operator_router(get_service: ServiceDependency, current_user: UserDependency) -> APIRouter:
    """The audit log and the pipeline metrics, for operators and admins."""
    router = APIRouter()
    Service = Annotated[AccessService, Depends(get_service)]
    CurrentUser = Annotated[User, Depends(current_user)]

    def require_operator(user: CurrentUser) -> User:
        if not user.roles & {"operator", "admin"}:
            raise Forbidden("role.not_operator", "only operators and admins read the audit log")
        return user

    Operator = Annotated[User, Depends(require_operator)]

    @router.get("/audit/verify")
    def audit_verify(_: Operator, svc: Service) -> dict[str, Any]:
        r = svc.audit.verify()
        return {"ok": r.ok, "entries": r.entries, "first_bad_seq": r.first_bad_seq, "reason": r.reason}

    @router.get("/audit/report")
    def audit_report(_: Operator, svc: Service) -> dict[str, Any]:
        return build_report(svc.audit.entries())

    @router.get("/metrics")
    def metrics(_: Operator, request: Request) -> Response:
        """Request, governance and pipeline figures for Prometheus (scrape with an operator token)."""
        body, content_type = request.app.state.metrics.exposition()
        return Response(body, media_type=content_type)

    return router
