"""Access follow-up (logguppföljning): who accessed which release of a holder, and what to look at.

The Patient Data Act (patientdatalagen 4 kap. 3 §) asks every holder to follow up, regularly and
systematically, who has accessed the data. This report answers that per holder and period (and
optionally one release) from the keyed, hash-chained audit logs (``hdp.audit``): the access
layer's log (queries, schema views, output requests and downloads, checkers' previews) and the
governance log (outputs filed and approved). The governance store says which releases belong to
the holder (a permit names its holders and its release) and when each permit ended.

Per user and release: queries and the rows they returned, schema views, output requests,
approvals and downloads, previews (checkers read record-level rows there), refusals by reason
code, requests outside office hours, requests at or after the permit's end. Findings name what
to follow up: many refusals, office-hours access, access after a permit ended, attempts by a
user the permit does not name, a volume far above the other users'. Thresholds and office
hours are those of the operator report (``hdp.audit.ReportThresholds``).
Each finding carries ``detail``, an English sentence (what the API and the CLI print), and
``params``, the values the sentence is made of (:data:`DETAILS`), which the web page words in its
language.

The report holds user names, release and permit ids, counts, reason codes and times only: it
is built from an allow-list of entry fields, so no query text (masked or keyed), no result hash
and no path a caller typed reaches it. A release id the log holds but the governance store does
not know (a caller can type any id into a path) is counted, never shown.

:func:`follow_up` is pure (entries and release facts in, report out); :func:`build_follow_up`
reads the store and the logs, and verifies each log's chain first (a report over a log that does
not verify says so).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from governance.models import PermitRow
from governance.permits import permit_status
from hdp import periods
from hdp.audit import LOCAL_TZ, AuditLog, CheckpointStore, ReportThresholds

#: Events that read or take data out of a release, by what they count as.
QUERY, QUERY_END, SCHEMA = "access.query", "access.query_end", "access.schema"
OUTPUT_REQUEST, DOWNLOAD, PREVIEW = "access.output_request", "access.output_download", "access.output_preview"
OUTPUT_CHECK = "access.output_check"
#: A permit holder's own use of the release (checkers' previews and checks are their work).
RESEARCHER_EVENTS = frozenset({QUERY, SCHEMA, OUTPUT_REQUEST, DOWNLOAD})
FILED, CHECKED = "governance.output.filed", "governance.output.checked"
APPROVED = "approved"


class FollowUpError(ValueError):
    """A period or scope the report cannot be made for."""


def parse_since(text: str, *, now: datetime) -> datetime:
    """``30d``, ``12h``, ``2w`` (back from ``now``) or an ISO date/time (UTC if no zone)."""
    try:
        return periods.parse_since(text, now=now)
    except ValueError as exc:
        raise FollowUpError(f"since: {exc}") from None


@dataclass(frozen=True)
class ReleaseFacts:
    """What the governance store says about one release: its permit, holders, users and end."""

    release_id: str
    permit_id: int
    holders: tuple[str, ...]
    users: frozenset[str]
    ends_at: datetime  # the earliest of expiry, revocation and early end
    status: str


def release_facts(session: Session, *, at: datetime | None = None) -> dict[str, ReleaseFacts]:
    """Every release bound to a permit (I/O: the governance store)."""
    at = at or datetime.now(UTC)
    out = {}
    for p in session.scalars(select(PermitRow).where(PermitRow.release_id.is_not(None))):
        assert p.release_id is not None  # the query's condition
        ends = min(d for d in (p.expires_at, p.revoked_at, p.ended_at) if d is not None)
        out[p.release_id] = ReleaseFacts(
            p.release_id, p.id, tuple(p.holders), frozenset(p.users), ends, permit_status(p, at)
        )
    return out


@dataclass
class Activity:
    """One user's use of one release in the period."""

    user: str
    release_id: str
    queries: int = 0
    rows: int = 0
    schema_views: int = 0
    outputs_requested: int = 0
    outputs_approved: int = 0
    downloads: int = 0
    previews: int = 0
    output_checks: int = 0
    refused: int = 0
    off_hours: int = 0
    after_permit_end: int = 0
    requests: int = 0
    data_requests: int = 0  # RESEARCHER_EVENTS among the requests
    reasons: Counter[str] = field(default_factory=Counter)
    first: datetime | None = None
    last: datetime | None = None

    def seen(self, ts: datetime, off_hours: bool, after_end: bool, data: bool) -> None:
        self.requests += 1
        self.data_requests += data
        self.off_hours += off_hours
        self.after_permit_end += after_end and data
        self.first = ts if self.first is None else min(self.first, ts)
        self.last = ts if self.last is None else max(self.last, ts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "release_id": self.release_id,
            "requests": self.requests,
            "queries": self.queries,
            "rows": self.rows,
            "schema_views": self.schema_views,
            "outputs_requested": self.outputs_requested,
            "outputs_approved": self.outputs_approved,
            "downloads": self.downloads,
            "previews": self.previews,
            "output_checks": self.output_checks,
            "refused": self.refused,
            "refusal_reasons": dict(sorted(self.reasons.items())),
            "off_hours": self.off_hours,
            "after_permit_end": self.after_permit_end,
            "first": self.first.isoformat() if self.first else None,
            "last": self.last.isoformat() if self.last else None,
        }


def _ts(entry: Mapping[str, Any]) -> datetime | None:
    try:
        dt = datetime.fromisoformat(str(entry["ts"]))
    except (KeyError, ValueError):
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def off_office_hours(ts: datetime, th: ReportThresholds) -> bool:
    """Outside the operator report's office hours (local time) or at a weekend."""
    local = ts.astimezone(LOCAL_TZ)
    return not (th.work_start_hour <= local.hour < th.work_end_hour) or local.weekday() >= 5


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def follow_up(
    entries: Iterable[Mapping[str, Any]],
    releases: Mapping[str, ReleaseFacts],
    *,
    holder: str,
    since: datetime,
    until: datetime,
    release: str | None = None,
    thresholds: ReportThresholds | None = None,
) -> dict[str, Any]:
    """The follow-up report of ``holder`` (and ``release``) over ``[since, until)``; pure."""
    th = thresholds or ReportThresholds()
    if release is not None and (release not in releases or holder not in releases[release].holders):
        raise FollowUpError("the release is not one of the holder's releases")  # no input echoed
    scope = {r: f for r, f in releases.items() if holder in f.holders and (release is None or r == release)}
    by_permit = {f.permit_id: r for r, f in releases.items()}
    outputs: dict[int, tuple[str, str]] = {}  # output id -> (requester, release)
    activity: dict[tuple[str, str], Activity] = {}
    unattributed = 0

    def row(user: str, release_id: str) -> Activity:
        return activity.setdefault((user, release_id), Activity(user, release_id))

    for e in entries:
        event = str(e.get("event", ""))
        output_id = _int(e.get("output_id"))
        if event == FILED and output_id is not None:  # learnt whatever the period: later checks need it
            rel = by_permit.get(_int(e.get("permit_id")) or -1) or e.get("release_id")
            if isinstance(rel, str) and isinstance(e.get("actor"), str):
                outputs[output_id] = (str(e["actor"]), rel)
            continue
        if event not in (QUERY, QUERY_END, SCHEMA, OUTPUT_REQUEST, DOWNLOAD, PREVIEW, OUTPUT_CHECK, CHECKED):
            continue
        ts = _ts(e)
        if ts is None or not since <= ts < until:
            continue
        rel = e.get("release_id")
        if not isinstance(rel, str):
            rel = by_permit.get(_int(e.get("permit_id")) or -1)
        if rel is None and output_id is not None and output_id in outputs:
            rel = outputs[output_id][1]
        if rel not in releases:  # an id the store does not know: counted, never shown
            if event.startswith("access."):
                unattributed += 1
            continue
        if rel not in scope:
            continue
        if event == CHECKED:
            if e.get("to_status") == APPROVED and output_id in outputs:
                row(outputs[output_id][0], rel).outputs_approved += 1
            continue
        user = e.get("user")
        if not isinstance(user, str):
            continue
        act = row(user, rel)
        if event == QUERY_END:  # the rows of a streamed query, logged when its stream ended
            act.rows += _int(e.get("rows")) or 0
            continue
        if event == OUTPUT_REQUEST and e.get("decision") == "allowed" and output_id is not None:
            outputs[output_id] = (user, rel)
        act.seen(ts, off_office_hours(ts, th), ts >= scope[rel].ends_at, event in RESEARCHER_EVENTS)
        if e.get("decision") != "allowed":
            act.refused += 1
            act.reasons[str(e.get("reason") or "unknown")] += 1
            continue
        if event == QUERY:
            act.queries += 1
            act.rows += _int(e.get("rows")) or 0
        elif event == SCHEMA:
            act.schema_views += 1
        elif event == OUTPUT_REQUEST:
            act.outputs_requested += 1
        elif event == DOWNLOAD:
            act.downloads += 1
        elif event == PREVIEW:
            act.previews += 1
        elif event == OUTPUT_CHECK:
            act.output_checks += 1

    rows = sorted(activity.values(), key=lambda a: (a.release_id, a.user))
    return {
        "holder": holder,
        "release": release,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "office_hours": f"{th.work_start_hour:02d}-{th.work_end_hour:02d} {LOCAL_TZ.key}, weekdays",
        "releases": [
            {
                "release_id": f.release_id,
                "permit_id": f.permit_id,
                "status": f.status,
                "permit_ends": f.ends_at.isoformat(),
                "users_on_permit": sorted(f.users),
            }
            for f in sorted(scope.values(), key=lambda f: f.release_id)
        ],
        "activity": [a.as_dict() for a in rows],
        "totals": {
            "users": len({a.user for a in rows}),
            "requests": sum(a.requests for a in rows),
            "queries": sum(a.queries for a in rows),
            "downloads": sum(a.downloads for a in rows),
            "outputs_requested": sum(a.outputs_requested for a in rows),
            "outputs_approved": sum(a.outputs_approved for a in rows),
            "refused": sum(a.refused for a in rows),
            "entries_for_unknown_releases": unattributed,
        },
        "findings": _findings(rows, scope, th),
    }


#: The English sentence of each kind of finding over its ``params`` (what the API and the CLI
#: print as ``detail``). The web page words the same params from its catalogues
#: (``followup_detail_<kind>``, same placeholders) through :func:`detail_fields`, so the sentence
#: and the page's can never disagree on a number.
DETAILS = {
    "not_on_permit": "{requests} requests for data by a user the permit does not name",
    "after_permit_end": "{requests} requests at or after the permit ended ({permit_ends})",
    "refusals": "{refused} of {requests} requests refused ({reasons})",
    "off_hours": "{off_hours} of {requests} requests outside {start_hour}-{end_hour} local time or at weekends",
    "volume": "{rows} rows vs median {median_rows} per user and release",
}


def detail_fields(
    params: Mapping[str, Any], *, number: Callable[[int], str] = str, reason: str = "{reason} x{count}"
) -> dict[str, str]:
    """A finding's params as the texts its sentence shows: counts through ``number`` (the web page
    formats them for its locale), hours as two digits (``07``), the refusal reasons as
    ``reason`` per code joined by commas (codes are identifiers, shown as they are), dates as
    their ISO text."""
    out = {}
    for key, value in params.items():
        if key == "reasons":
            out[key] = ", ".join(reason.format(reason=code, count=number(n)) for code, n in value)
        elif key.endswith("_hour"):
            out[key] = f"{value:02d}"
        elif isinstance(value, int):
            out[key] = number(value)
        else:
            out[key] = str(value)
    return out


def _findings(
    rows: Sequence[Activity], scope: Mapping[str, ReleaseFacts], th: ReportThresholds
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def finding(kind: str, a: Activity, **params: Any) -> None:
        detail = DETAILS[kind].format(**detail_fields(params))
        out.append(
            {"kind": kind, "user": a.user, "release_id": a.release_id, "detail": detail, "params": params}
        )

    median_rows = statistics.median([a.rows for a in rows]) if rows else 0
    for a in rows:
        facts = scope[a.release_id]
        if a.user not in facts.users and a.data_requests:
            finding("not_on_permit", a, requests=a.data_requests)
        if a.after_permit_end:
            finding(
                "after_permit_end", a, requests=a.after_permit_end, permit_ends=f"{facts.ends_at:%Y-%m-%d}"
            )
        if a.refused >= th.min_refusals and a.refused / max(a.requests, 1) >= th.refusal_share:
            reasons = [[code, n] for code, n in a.reasons.most_common()]
            finding("refusals", a, refused=a.refused, requests=a.requests, reasons=reasons)
        if a.off_hours:
            finding(
                "off_hours",
                a,
                off_hours=a.off_hours,
                requests=a.requests,
                start_hour=th.work_start_hour,
                end_hour=th.work_end_hour,
            )
        if a.rows >= th.min_volume_rows and a.rows > th.volume_factor * max(median_rows, 1):
            # rounded as the sentence always showed it (half to even): the median of an even
            # number of users can be x.5
            finding("volume", a, rows=a.rows, median_rows=round(median_rows))
    return out


def build_follow_up(
    session: Session,
    logs: Sequence[Path],
    *,
    holder: str,
    since: datetime,
    until: datetime | None = None,
    release: str | None = None,
    checkpoints: CheckpointStore | None = None,
    thresholds: ReportThresholds | None = None,
) -> dict[str, Any]:
    """Read the release facts and ``logs`` (each verified first) and make the report (I/O)."""
    now = datetime.now(UTC)
    until = until or now
    if until <= since:
        raise FollowUpError("the period is empty: since must be before until")
    facts = release_facts(session, at=now)
    checked = []
    entries: list[Mapping[str, Any]] = []
    for path in logs:
        log = AuditLog(path, checkpoints=checkpoints)
        result = log.verify()
        checked.append(
            {
                "log": path.name,
                "entries": result.entries,
                "verified": result.ok,
                "first_bad_seq": result.first_bad_seq,
            }
        )
        entries.extend(log.entries())
    entries.sort(key=lambda e: str(e.get("ts", "")))  # outputs are filed before they are checked
    report = follow_up(
        entries, facts, holder=holder, since=since, until=until, release=release, thresholds=thresholds
    )
    return {"generated_at": now.isoformat(), "logs": checked, **report}


def build_follow_up_for(
    session: Session,
    logs: Sequence[Path],
    *,
    holder: str,
    since: str,
    until: str | None = None,
    release: str | None = None,
    checkpoints: CheckpointStore | None = None,
) -> dict[str, Any]:
    """:func:`build_follow_up` over a period as operators type it (``30d`` … or ISO dates, both
    ends read against one "now"): what the API and the CLI ask for."""
    now = datetime.now(UTC)
    return build_follow_up(
        session,
        logs,
        holder=holder,
        since=parse_since(since, now=now),
        until=parse_since(until, now=now) if until else None,
        release=release,
        checkpoints=checkpoints,
    )
