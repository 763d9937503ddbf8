"""PROM key figures pages for stewards: ``/web/prom`` (their holders) and ``/web/prom/{holder}``.

The figures come from the holder's research zone (``research/<holder>.duckdb``, opened read-only):
``prom_response`` (register; response rate against the persons of ``register_visit``) or else
``eq5d_response`` (FHIR; no denominator, so no response rate). They are computed by
``pipelines.outcomes.keyfigures`` under the holder's ``min_cell_count``: a withheld cell reaches
the template as its reason only (no value, interval or count), and the chart plots shown means
only. Aggregates only, never a person or a single response.

Access as for the other steward pages: logged in, role ``steward``, and the holder must be one of
the steward's own (any other holder id gets 404, not 403). The chart is inline SVG drawn on the
server: no script, no external asset, nothing a Content-Security-Policy of ``default-src 'none'``
would block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from access.web.i18n import translator
from access.web.pages import PREFIX, Page, PageKit
from hdp.settings import holders
from pipelines.outcomes import Figure, KeyFigures, key_figures
from pipelines.outcomes.keyfigures import Period
from pipelines.outcomes.source import load_source

# -- data ---------------------------------------------------------------------------------------


# -- chart --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChartPoint:
    label: str
    x: float
    y: float | None = None  # None: withheld, nothing drawn
    y_low: float | None = None
    y_high: float | None = None
    text: str = ""


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    points: tuple[ChartPoint, ...]
    ticks: tuple[tuple[float, str], ...]  # (y, label)

    @property
    def has_values(self) -> bool:
        return any(p.y is not None for p in self.points)


def build_chart(kf: KeyFigures, *, width: int = 640, height: int = 260) -> Chart:
    """Geometry of the mean-index chart: shown cells only; withheld periods keep their slot empty."""
    left, right, top, bottom = 56, width - 16, 16, height - 40
    shown = [
        (r.period, r.mean_index) for r in kf.rows if r.mean_index.shown and r.mean_index.value is not None
    ]
    values = [v for _, f in shown for v in (f.value, f.low, f.high) if v is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 0.1:
        mid = (hi + lo) / 2
        lo, hi = mid - 0.05, mid + 0.05
    pad = (hi - lo) * 0.08
    lo, hi = lo - pad, hi + pad

    def y(v: float) -> float:
        return round(bottom - (v - lo) / (hi - lo) * (bottom - top), 1)

    n = len(kf.rows)
    step = (right - left) / max(n, 1)
    points = []
    for i, r in enumerate(kf.rows):
        x = round(left + step * (i + 0.5), 1)
        f = r.mean_index
        if f.shown and f.value is not None:
            points.append(
                ChartPoint(
                    r.period,
                    x,
                    y(f.value),
                    y(f.low) if f.low is not None else None,
                    y(f.high) if f.high is not None else None,
                    f"{r.period}: {fmt(f, 'index')}",
                )
            )
        else:
            points.append(ChartPoint(r.period, x))
    ticks = tuple((y(lo + (hi - lo) * j / 4), f"{lo + (hi - lo) * j / 4:.2f}") for j in range(5))
    return Chart(width, height, left, right, top, bottom, tuple(points), ticks)


def fmt(f: Figure, kind: str) -> str:
    """A shown figure as text (callers check ``f.shown`` first)."""
    if f.value is None:
        return ""
    if kind == "count":
        return str(int(f.value))
    if kind == "share":
        return f"{f.value * 100:.0f} % (n={f.persons})"
    digits = 3 if kind == "index" else 1
    text = f"{f.value:.{digits}f}"
    if f.low is not None and f.high is not None:
        text += f" ({f.low:.{digits}f} – {f.high:.{digits}f})"
    return text + f" n={f.persons}"


# -- pages --------------------------------------------------------------------------------------


class PromPages:
    def __init__(self, web: PageKit) -> None:
        self.web = web

    def _steward(self, request: Request) -> Page | Response:
        """The caller's page if a logged-in steward, else the response that refuses them."""
        p = self.web.page(request)
        if p.user is None:
            return self.web.login_redirect(p)
        if "steward" not in p.roles:
            return self.web.error(p, 403, "forbidden")
        return p

    def hub(self, request: Request) -> Response:
        p = self._steward(request)
        if isinstance(p, Response):
            return p
        assert p.user is not None
        names = {h.id: h.name for h in holders()}
        mine = [(h, names.get(h, h)) for h in sorted(p.user.holder_ids)]
        tp = translator(p.lang)
        return self.web.render(p, "prom_hub.html", title=tp("prom_title"), tp=tp, holders=mine)

    def holder(self, request: Request, holder_id: str) -> Response:
        p = self._steward(request)
        if isinstance(p, Response):
            return p
        assert p.user is not None
        known = {h.id: h for h in holders()}
        if holder_id not in p.user.holder_ids or holder_id not in known:
            return self.web.error(p, 404, "not_found")
        tp = translator(p.lang)
        period: Period = "quarter" if request.query_params.get("period") == "quarter" else "year"
        name = known[holder_id].name
        source = load_source(self.web._settings().research_db(holder_id))
        context: dict[str, Any] = {
            "tp": tp,
            "holder_id": holder_id,
            "holder_name": name,
            "period": period,
            "title": tp("prom_holder_title", holder=name),
        }
        if isinstance(source, str):
            return self.web.render(
                p, "prom_keyfigures.html", kf=None, chart=None, source=None, unavailable=source, **context
            )
        kf = key_figures(
            source.responses,
            holder=holder_id,
            threshold=known[holder_id].min_cell_count,
            columns=source.columns,
            period=period,
            denominator=source.denominator,
        )
        return self.web.render(
            p,
            "prom_keyfigures.html",
            kf=kf,
            chart=build_chart(kf),
            source=source,
            unavailable=None,
            fmt=fmt,
            **context,
        )

    def federation(self, request: Request) -> Response:
        """The hub's public page: the federation's pooled key figures and each node's published
        table. Only where the app is a hub (``app.state.prom_federation``), else 404."""
        p = self.web.page(request)
        provider = getattr(request.app.state, "prom_federation", None)
        if provider is None:
            return self.web.error(p, 404, "not_found")
        tp = translator(p.lang)
        period: Period = "quarter" if request.query_params.get("period") == "quarter" else "year"
        parts, pooled = provider(period)
        names = {h.id: h.name for h in holders()}
        return self.web.render(
            p,
            "prom_federation.html",
            title=tp("prom_federation_title"),
            tp=tp,
            fmt=fmt,
            period=period,
            pooled=pooled,
            pooled_chart=build_chart(pooled) if pooled is not None else None,
            parts=[(kf, names.get(kf.holder, kf.holder), build_chart(kf)) for kf in parts],
        )


def add_prom_pages(router: APIRouter, web: PageKit) -> None:
    """Add the PROM key figures pages to the ``/web`` router."""
    pages = PromPages(web)
    router.add_api_route("/federation/prom", pages.federation, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route("/prom", pages.hub, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route("/prom/{holder_id}", pages.holder, methods=["GET"], response_class=HTMLResponse)


__all__ = ["PREFIX", "add_prom_pages", "build_chart", "load_source"]
