"""Append-only audit log (JSON lines): hash-chained, keyed, anchored, checkpointed; operator report.

Each entry carries ``seq``, ``prev`` (the previous entry's hash) and ``hash``, so editing,
removing or reordering any entry breaks the chain from that point on.

**Keyed entries.** A plain SHA-256 chain can be recomputed by anyone who can write the file, so
the log is *keyed*: ``hash`` is HMAC-SHA256 under the audit key (``mac_key`` names the key
version), over the entry and the log's name. The key lives in the key store (domain ``audit``,
wrapped under the key-encryption key outside ``$HDP_HOME``), never in the audit folder, so
whoever can write the audit folder but not read the key cannot re-chain the log. This module
imports nothing above ``hdp``: the key is handed in by the caller (``AuditLog(key=...)``) or by
the process's edge (``set_key_source``: ``edge.cli``, ``access.app``, the DAG file), which knows
the key store (``privacy.audit_key``).

**Head anchor.** Cutting entries off the *end* leaves a valid shorter chain, so every append
also rewrites a small head anchor (``<log>.head``: last seq and hash, keyed too; point
``HDP_AUDIT_ANCHOR_DIR`` at another volume or WORM storage in production), and ``verify``
checks the chain reaches the anchored head. An anchor written without the key does not verify.

**Checkpoints.** An anchor copied away earlier can be put back after cutting the log to it,
and a deleted log with its anchor can be started afresh. So heads are also recorded outside
the host's audit folder, in a :class:`CheckpointStore` (the governance store:
``governance.auditing``), every ``checkpoint_every`` entries and on ``close``; ``verify``
fails when the log is shorter than a checkpoint or a checkpointed hash is not in its chain.
Entries after the last checkpoint are protected by the keyed chain and anchor only.

**Old logs.** Entries written before keys existed have a plain SHA-256 ``hash`` and no
``mac_key``. With a key, ``verify`` accepts such entries only as a prefix that a keyed entry
follows (the first keyed entry's MAC covers the link to them, so they cannot be re-chained
either); the head must be keyed and so must the anchor, and an unkeyed entry after a keyed one
fails. A log that is unkeyed to its head fails until a keyed entry seals it (``hdp audit
seal``). A keyed log is always verified keyed: without the key, ``verify`` fails on it.

Entries hold who/what/when/ids/counts only, never an identifier or a health value: callers
pass ids (request, release, permit, check), counts, reason codes and masked query text, and
:meth:`AuditLog.text_mac` for a keyed digest of a text that must not be logged.
"""

from __future__ import annotations

import contextvars
import fcntl
import hashlib
import hmac
import json
import logging
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from hdp.settings import get_settings

log = logging.getLogger(__name__)

GENESIS = "0" * 64
#: Bytes of the head anchor record (JSON padded with spaces): always overwritten whole, in
#: one write that lies within one disk sector.
_ANCHOR_WIDTH = 256
#: Domain separation of the three things the audit key authenticates.
_ENTRY_CONTEXT = b"hdp-audit-entry-v1\x00"
_ANCHOR_CONTEXT = b"hdp-audit-anchor-v1\x00"
_TEXT_CONTEXT = b"hdp-audit-text-v1\x00"
#: Audit files and their folder are the owner's only, whatever the umask.
DIR_MODE = 0o700
FILE_MODE = 0o600
#: Local clock for "time of day" in the operator report (the regions' working hours).
LOCAL_TZ = ZoneInfo("Europe/Stockholm")


class AuditKeyError(RuntimeError):
    """The log is keyed and this writer has no key (an unkeyed entry would break it)."""


@dataclass(frozen=True)
class AuditKey:
    """One version of the audit key. ``repr`` never shows the bytes."""

    key_id: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class KeyRing:
    """The key new entries get (``active``) and a lookup of older versions (after rotation)."""

    active: AuditKey
    lookup: Callable[[str], AuditKey | None] | None = field(default=None, repr=False, compare=False)

    def get(self, key_id: str) -> AuditKey | None:
        if key_id == self.active.key_id:
            return self.active
        return self.lookup(key_id) if self.lookup is not None else None


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str


class CheckpointStore(Protocol):
    """A second place for the log heads, outside the audit folder (``governance.auditing``)."""

    def record(self, log_id: str, seq: int, entry_hash: str) -> None: ...

    def load(self, log_id: str) -> list[Checkpoint]: ...


#: Where logs without an explicit key find theirs: set by the process's edge (``edge.cli``,
#: ``access.app``, the DAG file); maps a log path to its key ring, or None (unkeyed).
KeySource = Callable[[Path], KeyRing | None]
_key_source: KeySource | None = None


def set_key_source(source: KeySource | None) -> None:
    """Install (or remove, with None) this process's audit key source."""
    global _key_source
    _key_source = source


def key_source() -> KeySource | None:
    return _key_source


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


#: ``AuditLog(key=DEFAULT)``: the key comes from the process's key source.
DEFAULT: Any = _Default()

# Appends made while serving one request (access.app's middleware: a request that wrote no
# entry of its own gets one). Holds a list shared with worker threads, which run on a copy
# of the context.
_request_appends: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "hdp_audit_appends", default=None
)


def track_appends() -> tuple[list[int], contextvars.Token]:
    """Start counting appends in this context; returns (the seqs appended, a reset token)."""
    seen: list[int] = []
    return seen, _request_appends.set(seen)


def stop_tracking(token: contextvars.Token) -> None:
    _request_appends.reset(token)


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    """The unkeyed hash of an entry (logs written before audit keys)."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


def entry_mac(key: AuditKey, log_id: str, entry: dict[str, Any]) -> str:
    """The keyed hash of an entry of the log named ``log_id``."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    msg = _ENTRY_CONTEXT + log_id.encode() + b"\x00" + _canonical(body)
    return hmac.new(key.secret, msg, hashlib.sha256).hexdigest()


def anchor_mac(key: AuditKey, log_id: str, seq: int, entry_hash_: str) -> str:
    msg = _ANCHOR_CONTEXT + f"{log_id}\x00{seq}\x00{entry_hash_}".encode()
    return hmac.new(key.secret, msg, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str = ""
    keyed: bool = False  # verified with the audit key
    checkpoints: int = 0  # checkpoints compared (None store: 0)


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


def _owner_only(path: Path, mode: int) -> None:
    try:
        if path.stat().st_mode & 0o777 != mode:
            os.chmod(path, mode)
    except PermissionError:  # not ours (a shared folder): leave it, the files stay 0600
        pass


class AuditLog:
    """One audit log file (``path``), its head anchor and, optionally, its checkpoints.

    ``key``: a :class:`KeyRing` or :class:`AuditKey` (keyed), None (unkeyed), or
    ``DEFAULT``: asked of the process's key source on first use (and again while it has none).
    ``checkpoints``: where head checkpoints go (None: nowhere); every ``checkpoint_every`` entries
    (default ``HDP_AUDIT_CHECKPOINT_EVERY``). The head anchor goes to ``anchor_path`` (default: in
    ``HDP_AUDIT_ANCHOR_DIR``, else beside the log).
    """

    def __init__(
        self,
        path: Path,
        anchor_path: Path | None = None,
        *,
        fsync: bool = True,
        key: KeyRing | AuditKey | None = DEFAULT,
        checkpoints: CheckpointStore | None = None,
        checkpoint_every: int | None = None,
    ) -> None:
        self.path = path
        settings = get_settings()
        anchor_dir = settings.audit_anchor_dir
        if anchor_path is None:
            anchor_path = (
                (anchor_dir / (path.name + ".head")) if anchor_dir else path.with_name(path.name + ".head")
            )
        self.anchor_path = anchor_path
        self.log_id = path.name  # bound into every MAC: entries cannot move between logs
        self.fsync = fsync
        self.checkpoints = checkpoints
        self.checkpoint_every = max(
            1, settings.audit_checkpoint_every if checkpoint_every is None else checkpoint_every
        )
        self._key_default = key is DEFAULT
        self._ring: KeyRing | None = None if key is DEFAULT else _as_ring(key)
        self._prepared = False  # folders and modes made on first append, not on every one (hot path)
        self._unchecked: Checkpoint | None = None  # this writer's head, not yet checkpointed
        self._retry_at: float | None = None  # a checkpoint failed: retry after this time
        self._checkpoint_lock = threading.Lock()

    # -- key -----------------------------------------------------------------
    @property
    def keyed(self) -> bool:
        return self._keys() is not None

    def _keys(self) -> KeyRing | None:
        if self._ring is None and self._key_default and _key_source is not None:
            self._ring = _key_source(self.path)  # loaded once per log, not per append
        return self._ring

    def text_mac(self, text: str) -> str | None:
        """A keyed digest of ``text`` (a refused query) for the log, or None without a key.

        Keyed because an unkeyed hash of a short text that holds a personnummer can be
        reversed by hashing every possible number; whoever holds the audit key can still check
        a given text against it.
        """
        ring = self._keys()
        if ring is None:
            return None
        return hmac.new(
            ring.active.secret, _TEXT_CONTEXT + text.encode("utf-8", "surrogatepass"), hashlib.sha256
        ).hexdigest()

    # -- writing ---------------------------------------------------------------
    def _prepare(self) -> None:
        """Folders 0700 and files 0600 (an older, wider file is narrowed): once per writer."""
        for d in {self.path.parent, self.anchor_path.parent}:
            d.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            _owner_only(d, DIR_MODE)
        for f in (self.path, self.anchor_path):
            if f.exists():
                _owner_only(f, FILE_MODE)
        self._prepared = True

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Append one event; returns the stored entry (with seq, ts, prev, hash)."""
        event = dict(event)
        ring = self._keys()
        if not self._prepared:
            self._prepare()
        # Created 0600 (the umask can only narrow it), never world-readable for a moment.
        fh = open(os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE), "a+b")
        with fh:
            # An exclusive lock makes read-last-then-append atomic across processes.
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                last = _last_line(fh)
                prev = json.loads(last) if last else None
                if ring is None and prev is not None and "mac_key" in prev:
                    raise AuditKeyError(
                        f"{self.path.name} is keyed, but this process has no audit key; "
                        "an unkeyed entry would break it"
                    )
                ts = event.pop("ts", None) or datetime.now(UTC).isoformat()
                entry = {
                    **event,
                    "seq": (prev["seq"] + 1) if prev else 1,
                    "ts": ts,
                    "prev": prev["hash"] if prev else GENESIS,
                }
                entry.pop("hash", None)
                if ring is not None:
                    entry["mac_key"] = ring.active.key_id
                    entry["hash"] = entry_mac(ring.active, self.log_id, entry)
                else:
                    entry.pop("mac_key", None)
                    entry["hash"] = entry_hash(entry)
                fh.seek(0, os.SEEK_END)
                fh.write((json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
                self._write_anchor(entry, ring)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        seen = _request_appends.get()
        if seen is not None:
            seen.append(entry["seq"])
        if self.checkpoints is not None:
            head = self._unchecked = Checkpoint(entry["seq"], entry["hash"])
            if entry["seq"] % self.checkpoint_every == 0 or (
                self._retry_at is not None and time.monotonic() >= self._retry_at
            ):
                self.checkpoint(head)
        return entry

    def _write_anchor(self, entry: dict[str, Any], ring: KeyRing | None) -> None:
        """Overwrite the anchor in place with one fixed-width write (padded JSON).

        One small write at offset 0 cannot be half-applied on a crash (it lies within one disk
        sector) and costs a tenth of writing a temporary file and renaming it, on a path taken
        by every query. Readers hold the log's shared lock, so they never see it mid-write.
        """
        head: dict[str, Any] = {"seq": entry["seq"], "hash": entry["hash"]}
        if ring is not None:
            head["mac_key"] = ring.active.key_id
            head["mac"] = anchor_mac(ring.active, self.log_id, entry["seq"], entry["hash"])
        record = json.dumps(head).encode().ljust(_ANCHOR_WIDTH)
        fd = os.open(self.anchor_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            os.pwrite(fd, record, 0)
        finally:
            os.close(fd)

    def checkpoint(self, head: Checkpoint | None = None) -> Checkpoint | None:
        """Record ``head`` (default: this writer's last entry, if not yet recorded) in the
        checkpoint store; returns it, or None when nothing was recorded.

        A failure is logged and retried with a later append (at most once a second): the entry
        itself is already durable in the log; the checkpoint is the second copy of its head.
        """
        store = self.checkpoints
        head = head or self._unchecked
        if store is None or head is None:
            return None
        with self._checkpoint_lock:
            try:
                store.record(self.log_id, head.seq, head.hash)
            except Exception as err:  # noqa: BLE001 - the append succeeded; retried later
                log.warning(
                    "audit checkpoint of %s at seq %d failed (%s); retried with a later entry",
                    self.log_id,
                    head.seq,
                    type(err).__name__,
                )
                self._retry_at = time.monotonic() + 1.0
                return None
            self._retry_at = None
            if self._unchecked is head:
                self._unchecked = None
        return head

    def close(self) -> None:
        """Checkpoint the head this writer left (call at shutdown)."""
        self.checkpoint()

    # -- reading ------------------------------------------------------------------
    def entries(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)

    def verify(self) -> VerifyResult:
        """Walk the chain; report the first entry whose hash (keyed, with the key), link or
        sequence is wrong, the first missing entry when the log ends before its anchored head
        or a checkpoint, and a checkpointed head that is not in the chain."""
        ring = self._keys()
        try:
            checkpoints = self.checkpoints.load(self.log_id) if self.checkpoints is not None else []
        except Exception as err:  # noqa: BLE001 - an unreadable second copy fails the check
            return VerifyResult(
                False,
                0,
                None,
                f"the checkpoint store could not be read ({type(err).__name__})",
                keyed=ring is not None,
            )
        if not self.path.exists():
            return self._verify_lines([], ring, checkpoints)
        with open(self.path, encoding="utf-8") as fh:
            # Shared lock: appends (exclusive) wait, so the log and its anchor are read as of
            # one moment; without it an append between the two reads looks like a cut tail.
            fcntl.flock(fh, fcntl.LOCK_SH)
            try:
                return self._verify_lines(fh, ring, checkpoints)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _verify_lines(
        self, lines: Iterable[str], ring: KeyRing | None, checkpoints: list[Checkpoint]
    ) -> VerifyResult:
        anchor = self._read_anchor()
        wanted = {c.seq for c in checkpoints}
        if anchor is not None:
            wanted.add(anchor.seq)
        chain = _Chain()
        broken = (
            self._walk(lines, ring, wanted, chain)
            or self._check_head(chain, anchor, ring)
            or _check_checkpoints(chain, checkpoints)
        )
        if broken is not None:
            return VerifyResult(
                False,
                chain.count,
                broken.seq,
                broken.reason,
                keyed=ring is not None,
                checkpoints=len(checkpoints),
            )
        return VerifyResult(True, chain.count, keyed=ring is not None, checkpoints=len(checkpoints))

    def _walk(
        self, lines: Iterable[str], ring: KeyRing | None, wanted: set[int], chain: _Chain
    ) -> _Break | None:
        """Follow the chain line by line, recording in ``chain`` the hashes of the ``wanted`` seqs;
        the first break, or None when every entry links and verifies."""
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                return _Break(chain.expected_seq, f"line {lineno} is not JSON")
            if not isinstance(entry, dict):
                return _Break(chain.expected_seq, f"line {lineno} is not an entry")
            broken = self._check_entry(entry, ring, chain)
            if broken is not None:
                return broken
            chain.keyed_seen = chain.keyed_seen or entry.get("mac_key") is not None
            chain.prev_hash = entry["hash"]
            chain.count += 1
            if entry["seq"] in wanted:
                chain.hashes[entry["seq"]] = entry["hash"]
        return None

    def _check_entry(self, entry: dict[str, Any], ring: KeyRing | None, chain: _Chain) -> _Break | None:
        """The entry's seq follows, it links to the previous entry, and its hash (keyed when it
        names a key; unkeyed only before any keyed entry) matches its content."""
        seq = entry.get("seq")
        if seq != chain.expected_seq:
            return _Break(chain.expected_seq, f"expected seq {chain.expected_seq}, found {seq}")
        if entry.get("prev") != chain.prev_hash:
            return _Break(seq, "link to previous entry broken")
        mac_key = entry.get("mac_key")
        if mac_key is None:
            if chain.keyed_seen:
                return _Break(seq, "an unkeyed entry after keyed ones")
            if entry.get("hash") != entry_hash(entry):
                return _Break(seq, "entry content does not match its hash")
            return None
        if ring is None:
            return _Break(seq, "the entry is keyed: verifying it needs the audit key")
        key = ring.get(str(mac_key))
        if key is None:
            return _Break(seq, f"the entry names audit key {mac_key!r}, which the key store does not hold")
        if not hmac.compare_digest(str(entry.get("hash")), entry_mac(key, self.log_id, entry)):
            return _Break(seq, "entry content does not match its keyed hash")
        return None

    def _check_head(self, chain: _Chain, anchor: _Anchor | None, ring: KeyRing | None) -> _Break | None:
        """The chain reaches the anchored head, and the anchor is keyed exactly when the log is."""
        count = chain.count
        if anchor is None:
            if count:
                return _Break(count + 1, "head anchor missing: cannot rule out a cut-off tail")
            return None
        keyed = ring is not None
        if keyed and count and not chain.keyed_seen:
            return _Break(
                count, "the log is not keyed (written before audit keys): 'hdp audit seal' keys its head"
            )
        if keyed and count:
            key = ring.get(anchor.mac_key) if (ring is not None and anchor.mac_key) else None
            if key is None or not hmac.compare_digest(
                anchor.mac, anchor_mac(key, self.log_id, anchor.seq, anchor.hash)
            ):
                return _Break(anchor.seq, "the head anchor is not keyed with the audit key: rewritten")
        elif anchor.mac_key and not keyed:
            return _Break(anchor.seq, "the head anchor is keyed: verifying it needs the audit key")
        if anchor.seq > count:
            return _Break(
                count + 1, f"log ends at seq {count} but the anchor records seq {anchor.seq}: tail removed"
            )
        if chain.hashes.get(anchor.seq) != anchor.hash:
            return _Break(anchor.seq, "entry does not match the anchored head")
        return None

    def _read_anchor(self) -> _Anchor | None:
        """The head anchor as recorded, or None when there is none."""
        try:
            raw = json.loads(self.anchor_path.read_text(encoding="utf-8"))
            return _Anchor(
                int(raw["seq"]), str(raw["hash"]), str(raw.get("mac_key") or ""), str(raw.get("mac") or "")
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return _Anchor(1 << 62, "", "", "")  # unreadable anchor: verification fails rather than passes


@dataclass(frozen=True)
class _Anchor:
    """The head anchor as read; ``mac_key`` and ``mac`` are empty when it is unkeyed."""

    seq: int
    hash: str
    mac_key: str
    mac: str


@dataclass(frozen=True)
class _Break:
    """Where verification found the log broken (``seq``, as VerifyResult.first_bad_seq) and why."""

    seq: int | None
    reason: str


@dataclass
class _Chain:
    """What walking a log has established so far."""

    count: int = 0  # entries verified
    prev_hash: str = GENESIS
    keyed_seen: bool = False
    hashes: dict[int, str] = field(default_factory=dict)  # hash at each anchored or checkpointed seq

    @property
    def expected_seq(self) -> int:
        return self.count + 1


def _check_checkpoints(chain: _Chain, checkpoints: list[Checkpoint]) -> _Break | None:
    """Every checkpointed head is in the chain: the log was neither cut to an old head nor replaced."""
    count = chain.count
    for c in sorted(checkpoints, key=lambda c: c.seq):
        if c.seq > count:
            return _Break(
                count + 1,
                f"log ends at seq {count} but the checkpoint store records seq "
                f"{c.seq}: entries removed, or the log replaced",
            )
        if chain.hashes.get(c.seq) != c.hash:
            return _Break(
                c.seq,
                "the entry does not match the checkpoint store's record of it: "
                "the log was replaced or re-chained",
            )
    return None


def _as_ring(key: KeyRing | AuditKey | None) -> KeyRing | None:
    if key is None or isinstance(key, KeyRing):
        return key
    if isinstance(key, AuditKey):
        return KeyRing(key)
    raise TypeError(f"an audit key is a KeyRing or an AuditKey, not {type(key).__name__}")


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
            findings.append(
                Finding(
                    "off_hours",
                    a.user,
                    f"{a.off_hours} of {a.requests} requests outside "
                    f"{th.work_start_hour:02d}-{th.work_end_hour:02d} local time or at weekends",
                )
            )
        if a.refused >= th.min_refusals and a.refused / a.requests >= th.refusal_share:
            reasons = ", ".join(f"{r} x{n}" for r, n in a.reasons.most_common())
            findings.append(Finding("refusals", a.user, f"{a.refused} of {a.requests} refused ({reasons})"))
    if auth_failures:
        findings.append(
            Finding("authentication", "(unauthenticated)", f"{auth_failures} failed authentications")
        )
    return {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "requests": total,
        "authentication_failures": auth_failures,
        "users": [
            {
                "user": a.user,
                "requests": a.requests,
                "allowed": a.allowed,
                "refused": a.refused,
                "rows": a.rows,
                "off_hours": a.off_hours,
                "releases": sorted(a.releases),
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
