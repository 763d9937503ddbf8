"""The workspace inside the secure environment: an SQL editor over a release, a results table,
a bar chart of a two-column result, and (record level) "request output" into output checking.

``add_workspace_pages(router, web)`` adds the pages to the ``/web`` router
(``access.web.routes``), sharing its ``WebApp`` (sessions, CSRF, rendering, headers):

* ``GET /web/workspace``: the caller's permits with a release, record level or aggregates only;
* ``GET /web/workspace/{release_id}``: the editor, with the release's tables and columns beside it;
* ``POST /web/workspace/{release_id}``: run the query and show its result under the editor.

Nothing here decides what a researcher may see. The tables come from ``AccessService.schema``
and every query runs through ``AccessService.query`` (``request.app.state.service``), the code
behind ``POST /releases/{id}/query``: the same permit check, SQL sandbox, consent exclusions,
limits and audit entry. A record-level result comes back only up to the export rule's preview
bound (``access.outputs.check_direct``); a bigger one is refused there, and the page offers
the output request instead. "Request output" posts the query to ``/web/outputs``, the airlock's
own form handler (``access.web.outputs``), so the output is filed, checked and downloaded
exactly as from the outputs page.

An aggregate-only permit gets the same editor. Its query must fit the aggregate grammar
(``access.grammar``); the service compiles its own SQL from it and returns cells already under
disclosure control (``access.aggregate``), with a summary of the cells published and withheld,
shown under the result. Such results are non-personal statistics and leave directly, as from
the API (``access.outputs``: an output request for an aggregate permit is refused as
``output.not_needed``), so the page offers no output request. It shows the permit's disclosure
settings (``AccessService.schema``'s ``disclosure`` block) and opens with an example query
(``example_query``) built from the release's columns.

The chart is drawn on the server as inline SVG (the pages' Content-Security-Policy allows no
script and no third-party origin), from the rows already on the page.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlglot import exp

from access.errors import Refusal
from access.grammar import PSEUDONYM
from access.outputs import export_rule, pseudonym_columns
from access.ports import AGGREGATE, RECORD, Permit, User
from access.service import AccessService, QueryResult
from access.web.outputs import FORMATS, MAX_SQL
from access.web.pages import Page, PageKit

log = logging.getLogger(__name__)

#: Bars a chart draws at most (the first ones, in the result's order).
MAX_BARS = 30
#: Characters of a category label drawn beside its bar (the full label is in its tooltip).
LABEL_CHARS = 24
#: Rows of an aggregate result the page lists (the API returns them all; up to
#: ``access.aggregate.MAX_CELLS``). A record-level result is never longer than the export
#: rule's preview bound, so the page lists it whole.
AGGREGATE_SHOWN_ROWS = 500


# -- chart ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    label: str
    short: str
    value: str
    y: float
    x: float
    width: float


@dataclass(frozen=True)
class BarChart:
    """Geometry of a horizontal bar chart: category labels on the left, bars from the zero line."""

    category: str
    measure: str
    width: int
    height: int
    left: int
    right: int
    top: int
    bar_height: int
    zero: float
    bars: tuple[Bar, ...]
    ticks: tuple[tuple[float, str], ...]  # (x, label)
    total: int  # categories in the result (more than drawn when cut at MAX_BARS)

    @property
    def bottom(self) -> int:
        return self.height - 24


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | Decimal):
        f = float(value)
        return f if math.isfinite(f) else None
    return None


def _fmt(value: float) -> str:
    return (
        f"{value:,.0f}"
        if float(value).is_integer()
        else f"{value:,.3g}"
        if abs(value) < 1
        else f"{value:,.2f}"
    )


def _nice_step(span: float) -> float:
    """A round tick step giving about four ticks over ``span``."""
    raw = span / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def bar_chart(
    columns: list[str], types: list[pa.DataType], rows: list[list[Any]], *, width: int = 640
) -> BarChart | None:
    """A bar chart of a result with two columns, a category and a number; None for any other
    shape (or when no value is a finite number)."""
    if len(columns) != 2 or not (
        pa.types.is_integer(types[1]) or pa.types.is_floating(types[1]) or pa.types.is_decimal(types[1])
    ):
        return None
    shown = rows[:MAX_BARS]
    values = [_number(r[1]) for r in shown]
    finite = [v for v in values if v is not None]
    if not finite:
        return None
    lo, hi = min(0.0, *finite), max(0.0, *finite)
    if hi == lo:
        hi = lo + 1
    step = _nice_step(hi - lo)
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    left, right, top, bar_height = 180, width - 24, 8, 22
    height = top + bar_height * len(shown) + 32

    def x(v: float) -> float:
        return round(left + (v - lo) / (hi - lo) * (right - left), 1)

    bars = []
    for i, (row, v) in enumerate(zip(shown, values, strict=True)):
        label = "∅" if row[0] is None else str(row[0])
        short = label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"
        y = top + bar_height * i
        if v is None:
            bars.append(Bar(label, short, "–", y, x(0), 0))
        else:
            start, end = sorted((x(0), x(v)))
            bars.append(Bar(label, short, _fmt(v), y, start, round(end - start, 1)))
    ticks = []
    n = round((hi - lo) / step)
    for j in range(n + 1):
        value = lo + j * step
        ticks.append((x(value), _fmt(value)))
    return BarChart(
        category=columns[0],
        measure=columns[1],
        width=width,
        height=height,
        left=left,
        right=right,
        top=top,
        bar_height=bar_height,
        zero=x(0),
        bars=tuple(bars),
        ticks=tuple(ticks),
        total=len(rows),
    )


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """A query's result as the page shows it."""

    columns: list[str]
    types: list[pa.DataType]
    rows: list[list[Any]]
    numeric: list[bool]

    @classmethod
    def of(cls, table: pa.Table) -> Result:
        types = [f.type for f in table.schema]
        numeric = [pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) for t in types]
        return cls(table.column_names, types, [list(r.values()) for r in table.to_pylist()], numeric)


def read_result(result: QueryResult) -> pa.Table:
    return pa.ipc.open_stream(io.BytesIO(result.body)).read_all()


@dataclass(frozen=True)
class CellSummary:
    """The disclosure control of one aggregate result (``access.aggregate.publish``'s summary):
    cells computed, published and withheld whole (by reason), and single measures withheld."""

    cells: int
    published: int
    too_few_persons: int
    dominance: int
    after_perturbation: int
    measures_withheld: int

    @property
    def withheld(self) -> int:
        return self.too_few_persons + self.dominance + self.after_perturbation

    @classmethod
    def of(cls, summary: Mapping[str, Any]) -> CellSummary:
        return cls(
            cells=int(summary["cells"]),
            published=int(summary["published"]),
            too_few_persons=int(summary["suppressed_persons"]),
            dominance=int(summary["suppressed_dominance"]),
            after_perturbation=int(summary["suppressed_after_perturbation"]),
            measures_withheld=int(summary["measures_withheld"]),
        )


# -- the aggregate tier's example query -------------------------------------------------------

#: Column types (DuckDB's names) whose values are categories: a count by one of them is the
#: example an aggregate permit's editor opens with.
CATEGORICAL_TYPES = ("VARCHAR", "BOOLEAN", "ENUM")


def _ident(name: str) -> str:
    return exp.to_identifier(name).sql(dialect="duckdb")  # quoted only where it must be


def example_query(tables: Mapping[str, list[dict[str, str]]], pseudonyms: Iterable[str] = ()) -> str:
    """A query the aggregate grammar accepts: persons (or rows, without ``person_id``) counted by
    the first categorical column of the first table that has one; an ungrouped count of the
    first table when none has. Pseudonyms (linkage keys) are never a category: every cell
    would be one person, all withheld. Empty when there is no table."""
    if not tables:
        return ""
    hidden = {PSEUDONYM, *(p.lower() for p in pseudonyms)}

    def category(columns: list[dict[str, str]]) -> str | None:
        return next(
            (
                c["name"]
                for c in columns
                if c["name"].lower() not in hidden and c["type"].upper().startswith(CATEGORICAL_TYPES)
            ),
            None,
        )

    found = ((t, category(cols)) for t, cols in tables.items())
    table, key = next(((t, k) for t, k in found if k is not None), (next(iter(tables)), None))
    has_person = any(c["name"].lower() == PSEUDONYM for c in tables[table])
    measure = f"count(DISTINCT {PSEUDONYM}) AS persons" if has_person else "count(*) AS n"
    if key is None:
        return f"SELECT {measure}\nFROM {_ident(table)}"
    k = _ident(key)
    return f"SELECT {k}, {measure}\nFROM {_ident(table)}\nGROUP BY {k}\nORDER BY {k}"


# -- pages ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    page: Page
    user: User
    service: AccessService


class WorkspacePages:
    """The workspace's handlers over the ``/web`` router's ``PageKit``."""

    def __init__(self, web: PageKit) -> None:
        self.web = web

    def start(self, request: Request) -> Caller | Response:
        p = self.web.page(request)
        if p.user is None:
            return self.web.login_redirect(p)
        if "researcher" not in p.roles:
            return self.web.error(p, 403, "forbidden")
        svc: AccessService | None = getattr(request.app.state, "service", None)
        if svc is None:
            return self.web.error(p, 404, "not_found")
        return Caller(p, p.user, svc)

    def refused(self, p: Page, exc: Refusal) -> Response:
        status = exc.status if 400 <= exc.status < 600 else 400
        message = p.t("workspace_refused", message=exc.message)
        return self.web.render(p, "error.html", status=status, title=p.t("error_title"), message=message)

    def index(self, request: Request) -> Response:
        c = self.start(request)
        if isinstance(c, Response):
            return c
        try:
            permits = workspace_permits(
                self.web.governance().releases_for_user(user_name=c.user.name, at=datetime.now(UTC))
            )
        except Exception:  # noqa: BLE001 - the governance port failed: refuse, as the API does
            return self.web.error(c.page, 503, "workspace_unavailable")
        return self.web.render(
            c.page, "workspace_index.html", title=c.page.t("workspace_title"), permits=permits
        )

    def editor(
        self,
        c: Caller,
        release_id: str,
        *,
        sql: str = "",
        result: Result | None = None,
        summary: CellSummary | None = None,
        error: str | None = None,
        offer_output: bool = False,
        status: int = 200,
    ) -> Response:
        try:
            schema = c.service.schema(c.user, release_id)  # permit checked and audited
            rule = export_rule()
        except Refusal as exc:
            return self.refused(c.page, exc)
        tier = schema["output_tier"]
        tables: dict[str, list[dict[str, str]]] = schema["tables"]
        if not sql and tables:
            sql = (
                f"SELECT *\nFROM {next(iter(tables))}\nLIMIT 20"
                if tier == RECORD
                else example_query(tables, pseudonym_columns())
            )
        chart = bar_chart(result.columns, result.types, result.rows) if result else None
        return self.web.render(
            c.page,
            "workspace.html",
            status=status,
            title=c.page.t("workspace_release_title", release=release_id),
            release_id=release_id,
            tier=tier,
            aggregate=tier == AGGREGATE,
            disclosure=schema.get("disclosure"),
            tables=tables,
            sql=sql,
            result=result,
            summary=summary,
            chart=chart,
            max_bars=MAX_BARS,
            error=error,
            preview_rows=rule.preview_rows,
            shown_rows=AGGREGATE_SHOWN_ROWS if tier == AGGREGATE else rule.preview_rows,
            # Aggregate results leave directly (access.outputs): there is nothing to request.
            offer_output=tier == RECORD and (offer_output or result is not None),
            formats=FORMATS,
        )

    def open(self, request: Request, release_id: str) -> Response:
        c = self.start(request)
        return c if isinstance(c, Response) else self.editor(c, release_id)

    def run(
        self, request: Request, release_id: str, csrf_token: str = Form(""), sql: str = Form("")
    ) -> Response:
        c = self.start(request)
        if isinstance(c, Response):
            return c
        if not self.web.csrf_ok(c.page, csrf_token):
            return self.web.error(c.page, 403, "csrf_failed")
        t = c.page.t
        if len(sql) > MAX_SQL:
            error = t("workspace_refused", message=f"the query is longer than {MAX_SQL} characters")
            return self.editor(c, release_id, sql=sql[:MAX_SQL], error=error, status=422)
        try:
            answer = c.service.query(c.user, release_id, sql, "arrow")
        except Refusal as exc:
            log.info("web workspace query refused code=%s", exc.reason)
            if exc.reason == "output.review_required":
                # More rows than a preview: the whole result may still leave through checking.
                error = t("workspace_too_many_rows", rows=export_rule().preview_rows)
                return self.editor(c, release_id, sql=sql, error=error, offer_output=True, status=exc.status)
            return self.editor(
                c, release_id, sql=sql, error=t("workspace_refused", message=exc.message), status=exc.status
            )
        assert isinstance(answer, QueryResult)  # not streamed: stream=False
        table = read_result(answer)
        # Only the aggregate tier's results carry a summary of their disclosure control.
        summary = CellSummary.of(answer.summary) if answer.summary else None
        return self.editor(c, release_id, sql=sql, result=Result.of(table), summary=summary)


def workspace_permits(permits: Iterable[Permit]) -> list[Permit]:
    """The permits the workspace opens: those of a tier the access layer serves (record level
    first, then aggregates only; each by release)."""
    order = {RECORD: 0, AGGREGATE: 1}
    return sorted(
        (p for p in permits if p.output_tier in order), key=lambda p: (order[p.output_tier], p.release_id)
    )


def add_workspace_pages(router: APIRouter, web: PageKit) -> None:
    """Add the workspace's pages to the ``/web`` router (``web``: its ``WebApp``)."""
    pages = WorkspacePages(web)
    router.add_api_route("/workspace", pages.index, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route("/workspace/{release_id}", pages.open, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route("/workspace/{release_id}", pages.run, methods=["POST"], response_class=HTMLResponse)
