"""Append-only, hash-chained audit log (JSON lines), with a head anchor and an operator report.

Each entry carries ``seq``, ``prev`` (the previous entry's hash) and ``hash`` (SHA-256 over the
canonical JSON of the entry without ``hash``), so editing, removing or reordering any entry
breaks the chain from that point on. Cutting entries off the *end* leaves a valid shorter
chain, so every append also rewrites a small head anchor (``<log>.head``: last seq and hash,
kept apart from the log; point ``HDP_AUDIT_ANCHOR_DIR`` at another volume or WORM storage in
production) and ``verify`` checks the chain reaches the anchored head.

Entries hold who/what/when/ids/counts only, never an identifier or a health value: callers
pass ids (request, release, permit, check), counts, reason codes and masked query text.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

GENESIS = "0" * 64
#: Bytes of the head anchor record (JSON padded with spaces): always overwritten whole.
_ANCHOR_WIDTH = 160
#: Local clock for "time of day" in the operator report (the regions' working hours).
LOCAL_TZ = ZoneInfo("Europe/Stockholm")


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str = ""


def _last_line(fh: Any) -> str | None:
    """The last non-empty line of a file opened in binary mode, read backwards from the end
    (appends stay O(1) however long the log grows)."""
    fh.seek(0, os.SEEK_END)
    end = fh.tell()
    if end == 0:
        return None
    block = 4096
    buf = b""
    pos = end
    while pos > 0:
        step = min(block, pos)
        pos -= step
        fh.seek(pos)
        buf = fh.read(step) + buf
        stripped = buf.rstrip(b"\n")
        if b"\n" in stripped:
            return stripped.rsplit(b"\n", 1)[1].decode("utf-8")
    stripped = buf.rstrip(b"\n")
    return stripped.decode("utf-8") if stripped else None


class AuditLog:
    def __init__(self, path: Path, anchor_path: Path | None = None, *, fsync: bool = True) -> None:
        self.path = path
        anchor_dir = os.environ.get("HDP_AUDIT_ANCHOR_DIR")
        if anchor_path is None:
            anchor_path = (Path(anchor_dir) / (path.name + ".head")) if anchor_dir else path.with_name(
                path.name + ".head"
            )
        self.anchor_path = anchor_path
        self.fsync = fsync
        self._dirs_made = False  # made on first append, not checked on every one (hot path)

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Append one event; returns the stored entry (with seq, ts, prev, hash)."""
        event = dict(event)
        if not self._dirs_made:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.anchor_path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs_made = True
        with open(self.path, "a+b") as fh:
            # An exclusive lock makes read-last-then-append atomic across processes.
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                last = _last_line(fh)
                prev = json.loads(last) if last else None
                entry = {
                    "seq": (prev["seq"] + 1) if prev else 1,
                    "ts": event.pop("ts", None) or datetime.now(UTC).isoformat(),
                    **event,
                    "prev": prev["hash"] if prev else GENESIS,
                }
                entry["hash"] = entry_hash(entry)
                fh.seek(0, os.SEEK_END)
                fh.write((json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
                self._write_anchor(entry)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return entry

    def _write_anchor(self, entry: dict[str, Any]) -> None:
        """Overwrite the anchor in place with one fixed-width write (padded JSON).

        One small write at offset 0 cannot be half-applied on a crash (it lies within one disk
        sector) and costs a tenth of writing a temporary file and renaming it, on a path taken
        by every query. Readers hold the log's shared lock, so they never see it mid-write.
        """
        record = json.dumps({"seq": entry["seq"], "hash": entry["hash"]}).encode().ljust(_ANCHOR_WIDTH)
        fd = os.open(self.anchor_path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, record, 0)
        finally:
            os.close(fd)

    def entries(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)

    def verify(self) -> VerifyResult:
        """Walk the chain; report the first entry whose hash, link or sequence is wrong, or
        the first missing entry when the log ends before its anchored head."""
        if not self.path.exists():
            return self._verify_lines([])
        with open(self.path, encoding="utf-8") as fh:
            # Shared lock: appends (exclusive) wait, so the log and its anchor are read as of
            # one moment; without it an append between the two reads looks like a cut tail.
            fcntl.flock(fh, fcntl.LOCK_SH)
            try:
                return self._verify_lines(fh)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _verify_lines(self, lines: Iterable[str]) -> VerifyResult:
        prev_hash, expected_seq, count = GENESIS, 1, 0
        by_seq_hash: dict[int, str] = {}
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                return VerifyResult(False, count, expected_seq, f"line {lineno} is not JSON")
            if not isinstance(entry, dict):
                return VerifyResult(False, count, expected_seq, f"line {lineno} is not an entry")
            seq = entry.get("seq")
            if seq != expected_seq:
                return VerifyResult(False, count, expected_seq, f"expected seq {expected_seq}, found {seq}")
            if entry.get("prev") != prev_hash:
                return VerifyResult(False, count, seq, "link to previous entry broken")
            if entry.get("hash") != entry_hash(entry):
                return VerifyResult(False, count, seq, "entry content does not match its hash")
            prev_hash, expected_seq, count = entry["hash"], expected_seq + 1, count + 1
            by_seq_hash[seq] = entry["hash"]
        anchor = self._read_anchor()
        if anchor is None:
            if count:
                return VerifyResult(False, count, count + 1, "head anchor missing: cannot rule out a cut-off tail")
            return VerifyResult(True, 0)
        a_seq, a_hash = anchor
        if a_seq > count:
            return VerifyResult(
                False, count, count + 1, f"log ends at seq {count} but the anchor records seq {a_seq}: tail removed"
            )
        if by_seq_hash.get(a_seq) != a_hash:
            return VerifyResult(False, count, a_seq, "entry does not match the anchored head")
        return VerifyResult(True, count)

    def _read_anchor(self) -> tuple[int, str] | None:
        try:
            raw = json.loads(self.anchor_path.read_text(encoding="utf-8"))
            return int(raw["seq"]), str(raw["hash"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return (1 << 62, "")  # unreadable anchor: verification fails rather than passes


# -- operator report: log follow-up (Patient Data Act) ---------------------------------


@dataclass(frozen=True)
class ReportThresholds:
    work_start_hour: int = 7  # local time
    work_end_hour: int = 19
    volume_factor: float = 5.0  # a user's rows > factor x the median user's rows
    min_volume_rows: int = 100_000  # ... and at least this many rows
    refusal_share: float = 0.2  # refused / all requests of a user
    min_refusals: int = 3


@dataclass
class UserActivity:
    user: str
    requests: int = 0
    allowed: int = 0
    refused: int = 0
    rows: int = 0
    off_hours: int = 0
    releases: set[str] = field(default_factory=set)
    reasons: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class Finding:
    kind: str  # "volume" | "off_hours" | "refusals" | "authentication"
    user: str
    detail: str


def _parse_ts(ts: str) -> datetime:
    dt = datetime.fromisoformat(ts)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def build_report(
    entries: Iterable[dict[str, Any]],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    thresholds: ReportThresholds | None = None,
) -> dict[str, Any]:
    """Summarise access per user and flag unusual access: volume, time of day, refusals.

    Reads only the ids, counts, reason codes and times the log holds.
    """
    th = thresholds or ReportThresholds()
    users: dict[str, UserActivity] = {}
    auth_failures = 0
    total = 0
    for e in entries:
        if not str(e.get("event", "")).startswith("access."):
            continue
        ts = _parse_ts(e["ts"])
        if (since and ts < since) or (until and ts >= until):
            continue
        total += 1
        if e.get("event") == "access.auth":
            auth_failures += 1
            continue
        name = str(e.get("user") or "(unauthenticated)")
        act = users.setdefault(name, UserActivity(name))
        act.requests += 1
        if e.get("decision") == "allowed":
            act.allowed += 1
            act.rows += int(e.get("rows") or 0)
        else:
            act.refused += 1
            act.reasons[str(e.get("reason") or "unknown")] += 1
        if e.get("release_id"):
            act.releases.add(str(e["release_id"]))
        hour = ts.astimezone(LOCAL_TZ).hour
        if not (th.work_start_hour <= hour < th.work_end_hour) or ts.astimezone(LOCAL_TZ).weekday() >= 5:
            act.off_hours += 1
    findings: list[Finding] = []
    row_counts = [a.rows for a in users.values()]
    median_rows = statistics.median(row_counts) if row_counts else 0
    for a in sorted(users.values(), key=lambda a: a.user):
        if a.rows >= th.min_volume_rows and a.rows > th.volume_factor * max(median_rows, 1):
            findings.append(Finding("volume", a.user, f"{a.rows} rows vs median {median_rows:.0f} per user"))
        if a.off_hours:
            findings.append(Finding("off_hours", a.user, f"{a.off_hours} of {a.requests} requests outside "
                                    f"{th.work_start_hour:02d}-{th.work_end_hour:02d} local time or at weekends"))
        if a.refused >= th.min_refusals and a.refused / a.requests >= th.refusal_share:
            reasons = ", ".join(f"{r} x{n}" for r, n in a.reasons.most_common())
            findings.append(Finding("refusals", a.user, f"{a.refused} of {a.requests} refused ({reasons})"))
    if auth_failures:
        findings.append(Finding("authentication", "(unauthenticated)", f"{auth_failures} failed authentications"))
    return {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "requests": total,
        "authentication_failures": auth_failures,
        "users": [
            {
                "user": a.user, "requests": a.requests, "allowed": a.allowed, "refused": a.refused,
                "rows": a.rows, "off_hours": a.off_hours, "releases": sorted(a.releases),
                "refusal_reasons": dict(a.reasons),
            }
            for a in sorted(users.values(), key=lambda a: a.user)
        ],
        "findings": [{"kind": f.kind, "user": f.user, "detail": f.detail} for f in findings],
    }


def render_report(report: dict[str, Any]) -> str:
    lines = [
        f"Access log follow-up  {report['since'] or 'start'} .. {report['until'] or 'now'}",
        f"requests: {report['requests']}   failed authentications: {report['authentication_failures']}",
        "",
        f"{'user':<24}{'requests':>9}{'refused':>9}{'rows':>12}{'off-hours':>11}",
    ]
    for u in report["users"]:
        lines.append(f"{u['user']:<24}{u['requests']:>9}{u['refused']:>9}{u['rows']:>12}{u['off_hours']:>11}")
    lines.append("")
    if report["findings"]:
        lines.append("Unusual access to follow up:")
        lines += [f"  [{f['kind']}] {f['user']}: {f['detail']}" for f in report["findings"]]
    else:
        lines.append("No unusual access found.")
    return "\n".join(lines)
