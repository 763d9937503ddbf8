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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from access.errors import Refusal
from access.outputs import OutputDesk, export_rule
from access.ports import User
from access.web.pages import PREFIX, Page, PageKit
from governance.outputs import IN_CHECK, WITHDRAWABLE, OutputRequest, OutputStatus
from governance.values import Permit

log = logging.getLogger(__name__)

PAGE_PREVIEW_ROWS = 50
MAX_SQL = 20_000
MAX_TEXT = 5000
MAX_TITLE = 200
FORMATS = ("csv", "parquet", "json", "arrow")
DECISIONS = ("approve", "reject", "return")


def _is_checker(p: Page) -> bool:
    return bool(p.roles & {"output_checker", "steward"})


@dataclass(frozen=True)
class Caller:
    """A logged-in caller of an airlock page, with the desk that does the work."""

    page: Page
    user: User
    desk: OutputDesk


@dataclass(frozen=True)
class Preview:
    """The first rows of an output, as the checker's page shows them."""

    columns: list[str]
    rows: list[list[Any]]


class OutputPages:
    """The airlock's page handlers over the ``/web`` router's ``PageKit``.

    Handlers that change something (a form POST) check the CSRF token, refuse over-long input
    with 422 on the page it came from, call the desk, and redirect with a flash on success; a
    ``Refusal`` from the desk re-renders the page with its message and status.
    """

    def __init__(self, web: PageKit) -> None:
        self.web = web

    # -- plumbing ------------------------------------------------------------------------
    def start(self, request: Request) -> Caller | Response:
        """The logged-in caller and the app's desk, or the response that ends the request here."""
        p = self.web.page(request)
        if p.user is None:
            return self.web.login_redirect(p)
        desk: OutputDesk | None = getattr(request.app.state, "outputs", None)
        if desk is None:
            return self.web.error(p, 404, "not_found")
        return Caller(p, p.user, desk)

    def start_form(self, request: Request, csrf_token: str) -> Caller | Response:
        """As ``start``, for a form: also refuses a missing or wrong CSRF token (403)."""
        caller = self.start(request)
        if isinstance(caller, Caller) and not self.web.csrf_ok(caller.page, csrf_token):
            return self.web.error(caller.page, 403, "csrf_failed")
        return caller

    def refused(self, p: Page, exc: Refusal) -> Response:
        status = exc.status if 400 <= exc.status < 600 else 400
        return self.web.render(
            p,
            "error.html",
            status=status,
            title=p.t("error_title"),
            message=p.t("output_error", message=exc.message),
        )

    def done(self, p: Page, kind: str, text: str, url: str) -> Response:
        """After a successful form: a message for the next page, and the redirect to it."""
        p.flash(kind, text)
        return self.web.redirect(p, url)

    def record_permits(self, user: User) -> list[Permit]:
        """The caller's record-level permits with a release, for the request form."""
        permits = self.web.governance().releases_for_user(user_name=user.name, at=datetime.now(UTC))
        return [x for x in permits if x.output_tier == "record"]

    # -- researcher ------------------------------------------------------------------------
    def outputs_view(
        self,
        c: Caller,
        *,
        status: int = 200,
        error: str | None = None,
        form: dict[str, str] | None = None,
    ) -> Response:
        try:
            mine = c.desk.mine(c.user)
        except Refusal as exc:
            return self.refused(c.page, exc)
        return self.web.render(
            c.page,
            "outputs_mine.html",
            status=status,
            title=c.page.t("outputs_title"),
            outputs=mine,
            permits=self.record_permits(c.user),
            formats=FORMATS,
            error=error,
            form=form or {},
            preview_rows=export_rule().preview_rows,
        )

    def outputs(self, request: Request) -> Response:
        c = self.start(request)
        return c if isinstance(c, Response) else self.outputs_view(c)

    def create(
        self,
        request: Request,
        csrf_token: str = Form(""),
        release_id: str = Form(""),
        sql: str = Form(""),
        format: str = Form("csv"),  # noqa: A002 - the form field's name
        title: str = Form(""),
        context: str = Form(""),
    ) -> Response:
        c = self.start_form(request, csrf_token)
        if isinstance(c, Response):
            return c
        t = c.page.t
        form = {"release_id": release_id, "sql": sql, "format": format, "title": title, "context": context}
        if len(sql) > MAX_SQL or len(context) > MAX_TEXT or len(title) > MAX_TITLE or format not in FORMATS:
            message = "input too long or unknown format"
            return self.outputs_view(c, status=422, form=form, error=t("output_error", message=message))
        try:
            o = c.desk.create(c.user, release_id, sql, format, title=title, context=context)
        except Refusal as exc:
            log.info("web output request refused code=%s", exc.reason)
            error = t("output_error", message=exc.message)
            return self.outputs_view(c, status=exc.status, form=form, error=error)
        return self.done(c.page, "success", t("output_created", id=o.id), f"{PREFIX}/outputs/{o.id}")

    # -- one output ------------------------------------------------------------------------
    def preview(self, c: Caller, o: OutputRequest) -> Preview:
        """The output's first rows for a checker (each view audited by the desk)."""
        _, table = c.desk.preview(c.user, o.id, rows=PAGE_PREVIEW_ROWS)
        return Preview(table.column_names, [list(r.values()) for r in table.to_pylist()])

    def output_view(
        self,
        c: Caller,
        output_id: int,
        *,
        status: int = 200,
        error: str | None = None,
        form: dict[str, str] | None = None,
    ) -> Response:
        p, user = c.page, c.user
        try:
            o = c.desk.get(user, output_id)
        except Refusal as exc:
            return self.refused(p, exc)
        is_requester = o.requester == user.name
        may_check = not is_requester and _is_checker(p)
        awaiting = (
            may_check
            and OutputStatus(o.status) in IN_CHECK
            and all(check.checker != user.name for check in o.current_checks)
        )
        shown = Preview([], [])
        if may_check and o.status not in ("rejected", "withdrawn"):
            try:
                shown = self.preview(c, o)
            except Refusal as exc:
                error = error or p.t("output_error", message=exc.message)
        exceptions = []
        if o.row_level:
            try:
                exceptions = [e for e in c.desk.exceptions(user, o.permit_id) if e.id == o.exception_id]
            except Refusal:
                exceptions = []
        return self.web.render(
            p,
            "output.html",
            status=status,
            title=p.t("output_title", id=o.id, title=o.title),
            o=o,
            is_requester=is_requester,
            may_check=may_check,
            awaiting=awaiting,
            columns=shown.columns,
            rows=shown.rows,
            preview_rows=PAGE_PREVIEW_ROWS,
            exceptions=exceptions,
            error=error,
            form=form or {},
            downloadable=is_requester and o.downloadable,
            approvals=len(o.approvers),
            withdrawable=is_requester and OutputStatus(o.status) in WITHDRAWABLE,
            returned=is_requester and o.status == OutputStatus.RETURNED,
        )

    def output(self, request: Request, output_id: int) -> Response:
        c = self.start(request)
        return c if isinstance(c, Response) else self.output_view(c, output_id)

    def act_on_output(
        self,
        c: Caller,
        output_id: int,
        *,
        form: dict[str, str],
        too_long: str | None,
        action: Callable[[], OutputRequest],
        what: str,
    ) -> OutputRequest | Response:
        """Run ``action`` on one output: an over-long input (``too_long`` names it) or a refusal
        re-renders the output's page with the form as it was; otherwise the changed output."""
        t = c.page.t
        if too_long is not None:
            return self.output_view(
                c, output_id, status=422, form=form, error=t("output_error", message=too_long)
            )
        try:
            return action()
        except Refusal as exc:
            log.info("web output %s refused output=%s code=%s", what, output_id, exc.reason)
            error = t("output_error", message=exc.message)
            return self.output_view(c, output_id, status=exc.status, form=form, error=error)

    def check(
        self,
        request: Request,
        output_id: int,
        csrf_token: str = Form(""),
        decision: str = Form(""),
        comment: str = Form(""),
    ) -> Response:
        c = self.start_form(request, csrf_token)
        if isinstance(c, Response):
            return c
        o = self.act_on_output(
            c,
            output_id,
            form={"decision": decision, "comment": comment},
            too_long="comment too long" if len(comment) > MAX_TEXT else None,
            action=lambda: c.desk.decide(c.user, output_id, decision, comment),
            what="check",
        )
        if isinstance(o, Response):
            return o
        t = c.page.t
        recorded = t("check_recorded", status=t(f"status_{o.status}"))
        return self.done(c.page, "success", recorded, f"{PREFIX}/outputs/{output_id}")

    def resubmit(
        self,
        request: Request,
        output_id: int,
        csrf_token: str = Form(""),
        context: str = Form(""),
        sql: str = Form(""),
    ) -> Response:
        c = self.start_form(request, csrf_token)
        if isinstance(c, Response):
            return c
        o = self.act_on_output(
            c,
            output_id,
            form={"context": context, "sql": sql},
            too_long="input too long" if len(sql) > MAX_SQL or len(context) > MAX_TEXT else None,
            action=lambda: c.desk.resubmit(c.user, output_id, context=context, sql=sql.strip() or None),
            what="resubmission",
        )
        if isinstance(o, Response):
            return o
        return self.done(c.page, "success", c.page.t("resubmitted"), f"{PREFIX}/outputs/{output_id}")

    def withdraw(self, request: Request, output_id: int, csrf_token: str = Form("")) -> Response:
        c = self.start_form(request, csrf_token)
        if isinstance(c, Response):
            return c
        o = self.act_on_output(
            c,
            output_id,
            form={},
            too_long=None,
            action=lambda: c.desk.withdraw(c.user, output_id),
            what="withdrawal",
        )
        if isinstance(o, Response):
            return o
        return self.done(c.page, "info", c.page.t("withdrawn_notice"), f"{PREFIX}/outputs/{output_id}")

    def download(self, request: Request, output_id: int) -> Response:
        c = self.start(request)
        if isinstance(c, Response):
            return c
        try:
            d = c.desk.download(c.user, output_id)
        except Refusal as exc:
            return self.refused(c.page, exc)
        return self.web.finish(
            c.page,
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
    def checking(self, request: Request) -> Response:
        c = self.start(request)
        if isinstance(c, Response):
            return c
        if not _is_checker(c.page):
            return self.web.error(c.page, 403, "forbidden")
        try:
            everything = c.desk.for_checker(c.user)
            awaiting = c.desk.queue(c.user)
        except Refusal as exc:
            return self.refused(c.page, exc)
        waiting_ids = {o.id for o in awaiting}
        return self.web.render(
            c.page,
            "outputs_checking.html",
            title=c.page.t("checking_title"),
            awaiting=awaiting,
            others=[o for o in everything if o.id not in waiting_ids],
        )

    # -- stewards' exceptions ----------------------------------------------------------------
    def exceptions_view(
        self, c: Caller, permit_id: int, *, status: int = 200, error: str | None = None
    ) -> Response:
        try:
            found = c.desk.exceptions(c.user, permit_id)
        except Refusal as exc:
            return self.refused(c.page, exc)
        return self.web.render(
            c.page,
            "output_exceptions.html",
            status=status,
            title=c.page.t("exceptions_title", id=permit_id),
            permit_id=permit_id,
            exceptions=found,
            may_record="steward" in c.page.roles,
            error=error,
        )

    def exceptions(self, request: Request, permit_id: int) -> Response:
        c = self.start(request)
        return c if isinstance(c, Response) else self.exceptions_view(c, permit_id)

    def record_exception(
        self, request: Request, permit_id: int, csrf_token: str = Form(""), justification: str = Form("")
    ) -> Response:
        c = self.start_form(request, csrf_token)
        if isinstance(c, Response):
            return c
        t = c.page.t
        try:
            # Cut one past the limit: governance refuses it as too long, with its own message.
            c.desk.record_exception(c.user, permit_id, justification[: MAX_TEXT + 1])
        except Refusal as exc:
            error = t("output_error", message=exc.message)
            return self.exceptions_view(c, permit_id, status=exc.status, error=error)
        url = f"{PREFIX}/permits/{permit_id}/output-exceptions"
        return self.done(c.page, "success", t("exception_recorded"), url)

    def withdraw_exception(self, request: Request, exception_id: int, csrf_token: str = Form("")) -> Response:
        c = self.start_form(request, csrf_token)
        if isinstance(c, Response):
            return c
        try:
            e = c.desk.withdraw_exception(c.user, exception_id)
        except Refusal as exc:
            return self.refused(c.page, exc)
        url = f"{PREFIX}/permits/{e.permit_id}/output-exceptions"
        return self.done(c.page, "info", c.page.t("exception_withdrawn"), url)


def add_output_pages(router: APIRouter, web: PageKit) -> None:
    """Add the airlock's pages to the ``/web`` router (``web``: its ``WebApp``)."""
    pages = OutputPages(web)
    routes: tuple[tuple[str, str, Callable[..., Response]], ...] = (
        ("GET", "/outputs", pages.outputs),
        ("POST", "/outputs", pages.create),
        ("GET", "/outputs/{output_id}", pages.output),
        ("POST", "/outputs/{output_id}/check", pages.check),
        ("POST", "/outputs/{output_id}/resubmit", pages.resubmit),
        ("POST", "/outputs/{output_id}/withdraw", pages.withdraw),
        ("GET", "/checking", pages.checking),
        ("GET", "/permits/{permit_id}/output-exceptions", pages.exceptions),
        ("POST", "/permits/{permit_id}/output-exceptions", pages.record_exception),
        ("POST", "/output-exceptions/{exception_id}/withdraw", pages.withdraw_exception),
    )
    for method, path, endpoint in routes:
        router.add_api_route(path, endpoint, methods=[method], response_class=HTMLResponse)
    # A file, not a page.
    router.add_api_route("/outputs/{output_id}/download", pages.download, methods=["GET"])
