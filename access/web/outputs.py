"""The airlock's web pages: a researcher's outputs, the checkers' queue and decision page,
the download that works only after two approvals, and stewards' row-level exceptions.

``add_output_pages(router, web)`` adds the pages to the ``/web`` router (``access.web.routes``),
sharing its ``WebApp`` (sessions, CSRF, rendering, security headers). Every action goes
through the app's ``access.outputs.OutputDesk`` (``request.app.state.outputs``, mounted by
``access.routes_outputs``), the same code the HTTP API uses: the same rules, the same audit.

Unlike the other pages, the checker's decision page shows data: the first rows of the output
under check (checkers must see what is to leave; they see it inside the environment, and each
view is audited as ``access.output_preview``). Everything is autoescaped.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from access.errors import Refusal

log = logging.getLogger(__name__)

PAGE_PREVIEW_ROWS = 50
MAX_SQL = 20_000
MAX_TEXT = 5000
FORMATS = ("csv", "parquet", "json", "arrow")
DECISIONS = ("approve", "reject", "return")


def _desk(request: Request) -> Any:
    return getattr(request.app.state, "outputs", None)


def _is_checker(p: Any) -> bool:
    return bool(p.roles & {"output_checker", "steward"})


def add_output_pages(router: APIRouter, web: Any) -> None:  # noqa: C901 - one page per nested handler
    """Add the airlock's pages to the ``/web`` router (``web``: its ``WebApp``)."""
    from access.web.routes import PREFIX

    def start(request: Request) -> tuple[Any, Any, Response | None]:
        p = web.page(request)
        if p.user is None:
            return p, None, web.login_redirect(p)
        desk = _desk(request)
        if desk is None:
            return p, None, web.error(p, 404, "not_found")
        return p, desk, None

    def refused(p: Any, exc: Refusal) -> Response:
        status = exc.status if 400 <= exc.status < 600 else 400
        return web.render(
            p,
            "error.html",
            status=status,
            title=p.t("error_title"),
            message=p.t("output_error", message=exc.message),
        )

    def record_permits(p: Any) -> list[Any]:
        from governance import service

        with web.store() as s:
            permits = service.releases_for_user(s, user_name=p.user.name, at=datetime.now(UTC))
        return [x for x in permits if x.output_tier == "record"]

    # -- researcher ------------------------------------------------------------------------
    def outputs_page(
        request: Request,
        *,
        page: Any = None,
        status: int = 200,
        error: str | None = None,
        form: dict[str, str] | None = None,
    ) -> Response:
        from access.outputs import export_rule

        p, desk, early = (page, _desk(request), None) if page is not None else start(request)
        if early is not None:
            return early
        try:
            mine = desk.mine(p.user)
        except Refusal as exc:
            return refused(p, exc)
        return web.render(
            p,
            "outputs_mine.html",
            status=status,
            title=p.t("outputs_title"),
            outputs=mine,
            permits=record_permits(p),
            formats=FORMATS,
            error=error,
            form=form or {},
            preview_rows=export_rule().preview_rows,
        )

    @router.get("/outputs", response_class=HTMLResponse)
    def outputs(request: Request) -> Response:
        return outputs_page(request)

    @router.post("/outputs", response_class=HTMLResponse)
    def create(
        request: Request,
        csrf_token: str = Form(""),
        release_id: str = Form(""),
        sql: str = Form(""),
        format: str = Form("csv"),
        title: str = Form(""),
        context: str = Form(""),
    ) -> Response:  # noqa: A002
        p, desk, early = start(request)
        if early is not None:
            return early
        if not web.csrf_ok(p, csrf_token):
            return web.error(p, 403, "csrf_failed")
        form = {"release_id": release_id, "sql": sql, "format": format, "title": title, "context": context}
        if len(sql) > MAX_SQL or len(context) > MAX_TEXT or len(title) > 200 or format not in FORMATS:
            return outputs_page(
                request,
                page=p,
                status=422,
                form=form,
                error=p.t("output_error", message="input too long or unknown format"),
            )
        try:
            o = desk.create(p.user, release_id, sql, format, title=title, context=context)
        except Refusal as exc:
            log.info("web output request refused code=%s", exc.reason)
            return outputs_page(
                request, page=p, status=exc.status, form=form, error=p.t("output_error", message=exc.message)
            )
        assert p.session is not None
        p.session.flash.append(("success", p.t("output_created", id=o.id)))
        return web.redirect(p, f"{PREFIX}/outputs/{o.id}")

    # -- one output ------------------------------------------------------------------------
    def output_page(
        request: Request,
        output_id: int,
        *,
        page: Any = None,
        status: int = 200,
        error: str | None = None,
        form: dict[str, str] | None = None,
    ) -> Response:
        from governance import outputs as out

        p, desk, early = (page, _desk(request), None) if page is not None else start(request)
        if early is not None:
            return early
        try:
            o = desk.get(p.user, output_id)
        except Refusal as exc:
            return refused(p, exc)
        is_requester = o.requester == p.user.name
        may_check = not is_requester and _is_checker(p)
        awaiting = (
            may_check
            and out.OutputStatus(o.status) in out.IN_CHECK
            and all(c.checker != p.user.name for c in o.current_checks)
        )
        columns, rows = [], []
        if may_check and o.status not in ("rejected", "withdrawn"):
            try:
                _, table = desk.preview(p.user, output_id, rows=PAGE_PREVIEW_ROWS)
                columns, rows = table.column_names, [list(r.values()) for r in table.to_pylist()]
            except Refusal as exc:
                error = error or p.t("output_error", message=exc.message)
        exceptions = []
        if o.row_level:
            try:
                exceptions = [e for e in desk.exceptions(p.user, o.permit_id) if e.id == o.exception_id]
            except Refusal:
                exceptions = []
        return web.render(
            p,
            "output.html",
            status=status,
            title=p.t("output_title", id=o.id, title=o.title),
            o=o,
            is_requester=is_requester,
            may_check=may_check,
            awaiting=awaiting,
            columns=columns,
            rows=rows,
            preview_rows=PAGE_PREVIEW_ROWS,
            exceptions=exceptions,
            error=error,
            form=form or {},
            downloadable=is_requester and o.downloadable,
            approvals=len(o.approvers),
            withdrawable=is_requester and out.OutputStatus(o.status) in out.WITHDRAWABLE,
            returned=is_requester and o.status == out.OutputStatus.RETURNED,
        )

    @router.get("/outputs/{output_id}", response_class=HTMLResponse)
    def output(request: Request, output_id: int) -> Response:
        return output_page(request, output_id)

    @router.post("/outputs/{output_id}/check", response_class=HTMLResponse)
    def check(
        request: Request,
        output_id: int,
        csrf_token: str = Form(""),
        decision: str = Form(""),
        comment: str = Form(""),
    ) -> Response:
        p, desk, early = start(request)
        if early is not None:
            return early
        if not web.csrf_ok(p, csrf_token):
            return web.error(p, 403, "csrf_failed")
        form = {"decision": decision, "comment": comment}
        if len(comment) > MAX_TEXT:
            return output_page(
                request,
                output_id,
                page=p,
                status=422,
                form=form,
                error=p.t("output_error", message="comment too long"),
            )
        try:
            o = desk.decide(p.user, output_id, decision, comment)
        except Refusal as exc:
            log.info("web output check refused output=%s code=%s", output_id, exc.reason)
            return output_page(
                request,
                output_id,
                page=p,
                status=exc.status,
                form=form,
                error=p.t("output_error", message=exc.message),
            )
        assert p.session is not None
        p.session.flash.append(("success", p.t("check_recorded", status=p.t(f"status_{o.status}"))))
        return web.redirect(p, f"{PREFIX}/outputs/{output_id}")

    @router.post("/outputs/{output_id}/resubmit", response_class=HTMLResponse)
    def resubmit(
        request: Request,
        output_id: int,
        csrf_token: str = Form(""),
        context: str = Form(""),
        sql: str = Form(""),
    ) -> Response:
        p, desk, early = start(request)
        if early is not None:
            return early
        if not web.csrf_ok(p, csrf_token):
            return web.error(p, 403, "csrf_failed")
        form = {"context": context, "sql": sql}
        if len(sql) > MAX_SQL or len(context) > MAX_TEXT:
            return output_page(
                request,
                output_id,
                page=p,
                status=422,
                form=form,
                error=p.t("output_error", message="input too long"),
            )
        try:
            desk.resubmit(p.user, output_id, context=context, sql=sql.strip() or None)
        except Refusal as exc:
            return output_page(
                request,
                output_id,
                page=p,
                status=exc.status,
                form=form,
                error=p.t("output_error", message=exc.message),
            )
        assert p.session is not None
        p.session.flash.append(("success", p.t("resubmitted")))
        return web.redirect(p, f"{PREFIX}/outputs/{output_id}")

    @router.post("/outputs/{output_id}/withdraw", response_class=HTMLResponse)
    def withdraw(request: Request, output_id: int, csrf_token: str = Form("")) -> Response:
        p, desk, early = start(request)
        if early is not None:
            return early
        if not web.csrf_ok(p, csrf_token):
            return web.error(p, 403, "csrf_failed")
        try:
            desk.withdraw(p.user, output_id)
        except Refusal as exc:
            return output_page(
                request, output_id, page=p, status=exc.status, error=p.t("output_error", message=exc.message)
            )
        assert p.session is not None
        p.session.flash.append(("info", p.t("withdrawn_notice")))
        return web.redirect(p, f"{PREFIX}/outputs/{output_id}")

    @router.get("/outputs/{output_id}/download")
    def download(request: Request, output_id: int) -> Response:
        p, desk, early = start(request)
        if early is not None:
            return early
        try:
            d = desk.download(p.user, output_id)
        except Refusal as exc:
            return refused(p, exc)
        return web.finish(
            p,
            Response(
                d.body,
                media_type=d.media_type,
                headers={
                    "Content-Disposition": f'attachment; filename="{d.filename}"',
                    "X-HDP-Output-SHA256": d.sha256,
                },
            ),
        )

    # -- checkers --------------------------------------------------------------------------
    @router.get("/checking", response_class=HTMLResponse)
    def checking(request: Request) -> Response:
        p, desk, early = start(request)
        if early is not None:
            return early
        if not _is_checker(p):
            return web.error(p, 403, "forbidden")
        try:
            everything = desk.for_checker(p.user)
            awaiting = desk.queue(p.user)
        except Refusal as exc:
            return refused(p, exc)
        waiting_ids = {o.id for o in awaiting}
        return web.render(
            p,
            "outputs_checking.html",
            title=p.t("checking_title"),
            awaiting=awaiting,
            others=[o for o in everything if o.id not in waiting_ids],
        )

    # -- stewards' exceptions ----------------------------------------------------------------
    def exceptions_page(
        request: Request, permit_id: int, *, page: Any = None, status: int = 200, error: str | None = None
    ) -> Response:
        p, desk, early = (page, _desk(request), None) if page is not None else start(request)
        if early is not None:
            return early
        try:
            found = desk.exceptions(p.user, permit_id)
        except Refusal as exc:
            return refused(p, exc)
        return web.render(
            p,
            "output_exceptions.html",
            status=status,
            title=p.t("exceptions_title", id=permit_id),
            permit_id=permit_id,
            exceptions=found,
            may_record="steward" in p.roles,
            error=error,
        )

    @router.get("/permits/{permit_id}/output-exceptions", response_class=HTMLResponse)
    def exceptions(request: Request, permit_id: int) -> Response:
        return exceptions_page(request, permit_id)

    @router.post("/permits/{permit_id}/output-exceptions", response_class=HTMLResponse)
    def record_exception(
        request: Request, permit_id: int, csrf_token: str = Form(""), justification: str = Form("")
    ) -> Response:
        p, desk, early = start(request)
        if early is not None:
            return early
        if not web.csrf_ok(p, csrf_token):
            return web.error(p, 403, "csrf_failed")
        try:
            desk.record_exception(p.user, permit_id, justification[: MAX_TEXT + 1])
        except Refusal as exc:
            return exceptions_page(
                request, permit_id, page=p, status=exc.status, error=p.t("output_error", message=exc.message)
            )
        assert p.session is not None
        p.session.flash.append(("success", p.t("exception_recorded")))
        return web.redirect(p, f"{PREFIX}/permits/{permit_id}/output-exceptions")

    @router.post("/output-exceptions/{exception_id}/withdraw", response_class=HTMLResponse)
    def withdraw_exception(request: Request, exception_id: int, csrf_token: str = Form("")) -> Response:
        p, desk, early = start(request)
        if early is not None:
            return early
        if not web.csrf_ok(p, csrf_token):
            return web.error(p, 403, "csrf_failed")
        try:
            e = desk.withdraw_exception(p.user, exception_id)
        except Refusal as exc:
            return refused(p, exc)
        assert p.session is not None
        p.session.flash.append(("info", p.t("exception_withdrawn")))
        return web.redirect(p, f"{PREFIX}/permits/{e.permit_id}/output-exceptions")
