"""The airlock, access side: where a query result becomes an export, and output requests.

EHDS art. 73: only non-personal data may leave a secure processing environment. The access
layer's HTTP boundary is where data leaves, so the rule is applied to every query result:

* **Aggregate tier.** Results pass the closed aggregate grammar, cell-key perturbation and
  suppression (``access.aggregate``): they are non-personal statistics and leave directly,
  in any format.
* **Record tier.** The researcher queries microdata *inside* the environment: a result comes
  back directly only as a **preview**, at most ``PREVIEW_ROWS`` rows as ``json`` or ``arrow``
  (the Python client's transport). A file format (``csv``, ``parquet``) of any size, and any
  result above the preview bound, is an **export**: the query is refused with
  ``output.review_required`` (403) and a hint, and the researcher files an *output request*
  instead (``OutputDesk.create``): the server runs the query, stores the result file in the
  restricted area (``<home>/restricted/outputs/<release>/``, owner-only), and two output
  checkers decide on it (``governance.outputs``). Only the requester downloads it, after two
  approvals, while the permit is in force, and only if the file's SHA-256 is still the one
  that was checked.
* **Row-level outputs** of pseudonymised data (a pseudonym in the result, one row per record
  or person, collected values) are refused at filing time unless a steward of a holder in the
  permit has recorded a justified exception on the permit (``classify`` decides, failing
  closed: anything not clearly a grouped aggregate is row-level).

``ExportRule.from_env`` takes the settings ``HDP_ACCESS_PREVIEW_ROWS`` and
``HDP_ACCESS_PREVIEW_FORMATS`` (:class:`hdp.settings.Settings`); in production
(``HDP_ENV=production``) they may only tighten the defaults, otherwise every record-level query
is refused (``output.rule_invalid``, 503): a looser rule exists for development and for tests of
the engine, never for real data.

Every step is written to the access audit log (``access.output_*``) as well as, through
governance, to the governance audit log; neither gets free text or data, only ids, hashes,
counts and decisions.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sqlglot import exp

from access.engine import release_dir
from access.errors import Forbidden, NotFound, QueryRefused, Refusal
from access.formats import MEDIA_TYPES, serialise
from access.ports import AGGREGATE, RECORD, OutputGovernance, Permit, User
from governance import outputs as out
from governance.catalogue import load_catalogue
from governance.errors import GovernanceError
from hdp.settings import SettingsError, get_settings, load_settings

PREVIEW_ROWS = 100
PREVIEW_FORMATS = frozenset({"json", "arrow"})
FILE_FORMATS = ("csv", "parquet", "arrow", "json")
EXTENSIONS = {"csv": "csv", "parquet": "parquet", "arrow": "arrows", "json": "json"}
#: Rows of an output a checker sees on the page / in the preview answer.
CHECK_PREVIEW_ROWS = 200
#: A run of hex digits this long in a result value looks like (part of) a release pseudonym.
PSEUDONYM_SHAPE = r"[0-9A-Fa-f]{16,}"
_PSEUDONYM_RE = re.compile(PSEUDONYM_SHAPE)
#: Aggregates that publish the values of the records they collect.
COLLECTING = frozenset(
    {
        "list",
        "array_agg",
        "string_agg",
        "group_concat",
        "listagg",
        "histogram",
        "arg_min",
        "arg_max",
        "argmin",
        "argmax",
        "min_by",
        "max_by",
        "any_value",
        "first",
        "last",
        "arbitrary",
        "mode",
    }
)


# --------------------------------------------------------------------------- the export rule


@dataclass(frozen=True)
class ExportRule:
    """What a record-level query may return directly (a preview inside the environment)."""

    preview_rows: int = PREVIEW_ROWS
    preview_formats: frozenset[str] = PREVIEW_FORMATS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ExportRule:
        """The rule of the settings of ``env`` (default: this process's environment)."""
        try:
            settings = get_settings() if env is None else load_settings(env)
            rows = PREVIEW_ROWS if settings.access_preview_rows is None else settings.access_preview_rows
            formats = (
                PREVIEW_FORMATS
                if settings.access_preview_formats is None
                else settings.access_preview_formats
            )
            production = settings.is_production
        except SettingsError:
            rows, formats, production = -1, frozenset(), False
        looser = rows > PREVIEW_ROWS or not formats <= PREVIEW_FORMATS
        if rows < 0 or not formats <= set(MEDIA_TYPES) or (looser and production):
            raise Refusal(
                "output.rule_invalid",
                "the export rule is misconfigured (HDP_ACCESS_PREVIEW_*); record-level results are "
                "withheld until an operator fixes it",
                status=503,
            )
        return cls(rows, formats)


_rules: dict[tuple[int | None, frozenset[str] | None, str], ExportRule] = {}


def export_rule() -> ExportRule:
    """The rule in force (from the environment; re-read when it changes, cached otherwise)."""
    settings = get_settings()
    key = (settings.access_preview_rows, settings.access_preview_formats, settings.environment)
    rule = _rules.get(key)
    if rule is None:
        rule = _rules[key] = ExportRule.from_env()
    return rule


def check_direct(release_id: str, fmt: str, rows: int | None = None) -> None:
    """Refuse a record-level result that would be an export (``output.review_required``).

    Called by ``AccessService.query`` on the record tier: with ``rows=None`` before the query
    runs (format only), then with the result's row count.
    """
    rule = export_rule()
    why = None
    if fmt not in rule.preview_formats:
        why = f"{fmt} is a file format"
    elif rows is not None and rows > rule.preview_rows:
        why = f"the result has more than {rule.preview_rows} rows"
    if why:
        raise Forbidden(
            "output.review_required",
            f"record-level results leave the secure environment only through output checking ({why}). "
            f"Look at up to {rule.preview_rows} rows as {' or '.join(sorted(rule.preview_formats))} here, or "
            f"file an output request: POST /releases/{release_id}/outputs with sql, format, title and context "
            "(Client.request_output); two output checkers decide, then you download it.",
        )


# --------------------------------------------------------------------------- row-level or aggregate


def pseudonym_columns() -> frozenset[str]:
    """Column names the catalogue marks as pseudonyms (linkage keys), plus ``person_id``."""
    try:
        names = {v["column"] for v in load_catalogue().values() if v.get("sensitivity") == "pseudonym"}
    except Exception:  # noqa: BLE001 - without the catalogue, the release's pseudonym still counts
        names = set()
    return frozenset({"person_id", *(n.lower() for n in names)})


def _name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return node.sql_name().lower() if hasattr(node, "sql_name") else type(node).__name__.lower()


def _own(node: exp.Expression, select: exp.Select) -> bool:
    """True when ``node`` belongs to ``select`` itself, not to a subquery inside it."""
    return node.find_ancestor(exp.Select) is select


def _inside_count(node: exp.Expression, select: exp.Select) -> bool:
    parent = node.parent
    while parent is not None and parent is not select:
        if isinstance(parent, exp.Count):
            return True
        parent = parent.parent
    return False


def classify_query(tree: exp.Expr, pseudonyms: frozenset[str] | None = None) -> tuple[str, ...]:
    """Why the result of ``tree`` is row-level (empty when it is an aggregate table).

    Fails closed: only a top-level SELECT that aggregates (an aggregate function of its own in
    the select list), with no pseudonym outside ``count(...)``, no pseudonym among its group
    keys, no window function and no value-collecting aggregate, counts as aggregate.
    """
    pseudonyms = pseudonym_columns() if pseudonyms is None else pseudonyms
    if not isinstance(tree, exp.Select):
        return ("not_aggregate",)  # set operations and anything else: treated as rows
    reasons: list[str] = []
    projections = tree.expressions
    if not any(_own(a, tree) for p in projections for a in p.find_all(exp.AggFunc)):
        reasons.append("not_aggregate")
    if any(_own(w, tree) for p in projections for w in p.find_all(exp.Window)):
        reasons.append("window_function")
    group = tree.args.get("group")
    if group is not None and any(
        c.name.lower() in pseudonyms for g in group.expressions for c in g.find_all(exp.Column)
    ):
        reasons.append("pseudonym_grouped")
    if any(
        c.name.lower() in pseudonyms and not _inside_count(c, tree)
        for p in projections
        for c in p.find_all(exp.Column)
    ):
        reasons.append("pseudonym_selected")
    if any(
        isinstance(p, exp.Star) or (isinstance(p, exp.Column) and isinstance(p.this, exp.Star))
        for p in projections
    ):
        reasons.append("star")
    funcs = [f for p in projections for f in p.find_all(exp.Func)]
    if any(_name(f) in COLLECTING or isinstance(f, exp.ArrayAgg | exp.GroupConcat) for f in funcs):
        reasons.append("collects_values")
    return tuple(dict.fromkeys(reasons))


def values_look_like_pseudonyms(table: pa.Table) -> bool:
    """True when any text value holds a run of 16+ hex digits (a pseudonym or a piece of one)."""
    for column in table.columns:
        t = column.type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            if pc.any(pc.match_substring_regex(column, PSEUDONYM_SHAPE)).as_py():
                return True
        elif (
            pa.types.is_binary(t)
            or pa.types.is_large_binary(t)
            or pa.types.is_nested(t)
            or pa.types.is_dictionary(t)
        ):
            if any(v is not None and _PSEUDONYM_RE.search(str(v)) for v in column.to_pylist()):
                return True
    return False


# --------------------------------------------------------------------------- files


class OutputFiles:
    """Result files of output requests: ``<root>/<release_id>/<random name>``, directories 0700,
    files 0600, written once (``O_EXCL``), never served except through ``OutputDesk.download``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, release_id: str) -> Path:
        d = release_dir(self.root, release_id)  # refuses ids that are not plain names
        for p in (self.root, d):
            p.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(p, 0o700)  # whatever the umask said
        return d

    def write(self, release_id: str, fmt: str, body: bytes) -> tuple[str, str]:
        """Store ``body``; (file name, SHA-256)."""
        name = f"{secrets.token_hex(16)}.{EXTENSIONS[fmt]}"
        path = self._dir(release_id) / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        return name, hashlib.sha256(body).hexdigest()

    def path(self, release_id: str, name: str) -> Path:
        if "/" in name or name.startswith(".") or not name:
            raise NotFound("output.file_missing", "the output's file is not available")
        return release_dir(self.root, release_id) / name

    def read(self, release_id: str, name: str) -> bytes:
        try:
            with open(self.path(release_id, name), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise NotFound("output.file_missing", "the output's file is no longer stored") from None

    def delete(self, release_id: str, name: str) -> None:
        try:
            self.path(release_id, name).unlink(missing_ok=True)
        except Refusal:
            pass


def read_table(body: bytes, fmt: str) -> pa.Table:
    """An output file back as an Arrow table (for the checkers' preview)."""
    if fmt == "csv":
        return pacsv.read_csv(io.BytesIO(body))
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(body))
    if fmt == "arrow":
        return pa.ipc.open_stream(io.BytesIO(body)).read_all()
    doc = json.loads(body)
    names = [c["name"] for c in doc["columns"]]
    return pa.table(
        {n: [str(r[i]) if r[i] is not None else None for r in doc["rows"]] for i, n in enumerate(names)}
    )


# --------------------------------------------------------------------------- the desk


def to_dict(o: Any, *, viewer: str | None = None) -> dict[str, Any]:
    """An output request as JSON (never the file's content)."""
    return {
        "id": o.id,
        "permit_id": o.permit_id,
        "release_id": o.release_id,
        "requester": o.requester,
        "status": o.status,
        "round": o.round,
        "title": o.title,
        "context": o.context,
        "query_masked": o.query_masked,
        "query_sha256": o.query_sha256,
        "format": o.format,
        "sha256": o.sha256,
        "size_bytes": o.size_bytes,
        "rows": o.rows,
        "columns": list(o.columns),
        "row_level": o.row_level,
        "row_level_reasons": list(o.row_level_reasons),
        "exception_id": o.exception_id,
        "created_at": o.created_at.isoformat(),
        "updated_at": o.updated_at.isoformat(),
        "decided_at": o.decided_at.isoformat() if o.decided_at else None,
        "downloads": o.downloads,
        "approvals": sorted(o.approvers),
        "downloadable": bool(viewer == o.requester and o.downloadable),
        "checks": [
            {
                "checker": c.checker,
                "decision": c.decision,
                "comment": c.comment,
                "round": c.round,
                "decided_at": c.decided_at.isoformat(),
            }
            for c in o.checks
        ],
    }


def exception_dict(e: Any) -> dict[str, Any]:
    return {
        "id": e.id,
        "permit_id": e.permit_id,
        "steward": e.steward,
        "holder_id": e.holder_id,
        "justification": e.justification,
        "recorded_at": e.recorded_at.isoformat(),
        "withdrawn_at": e.withdrawn_at.isoformat() if e.withdrawn_at else None,
        "withdrawn_by": e.withdrawn_by,
    }


@dataclass(frozen=True)
class Download:
    body: bytes
    media_type: str
    filename: str
    sha256: str
    output: Any


def _consent_digest(keys: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()


class OutputDesk:
    """Output requests over an ``AccessService`` (its permits, engines, audit log) and the
    governance port's ``OutputGovernance`` methods. HTTP routes and web pages call this."""

    def __init__(self, service: Any, *, files: OutputFiles | None = None) -> None:
        self.service = service
        if files is None:
            private = (
                getattr(service.engines, "private_dir", None)
                or service.settings.releases_dir.parent / "restricted" / "releases"
            )
            files = OutputFiles(Path(private).parent / "outputs")
        self.files = files

    # -- plumbing ------------------------------------------------------------------------
    @property
    def gov(self) -> OutputGovernance:
        g = self.service.governance
        if not isinstance(g, OutputGovernance):
            raise Refusal(
                "output.unavailable", "this deployment's governance has no output checking", status=503
            )
        return g

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """Governance refusals become access refusals with the same code and status."""

        def guarded() -> Any:
            try:
                return fn()
            except GovernanceError as exc:
                raise Refusal(exc.code, exc.message, status=exc.http_status) from None

        return self.service._governance(what, guarded)

    def _log(self, **event: Any) -> None:
        self.service._log(**event)

    def _visible(self, user: User, output_id: int) -> Any:
        """The output if ``user`` may see it (requester, or someone who may check it); else 404."""
        o = self._call("get_output", lambda: self.gov.get_output(output_id=output_id))
        if o.requester == user.name:
            return o
        users, holders = self._call("output_scope", lambda: self.gov.output_scope(permit_id=o.permit_id))
        if (
            out.check_refusal(
                out.party(user), requester=o.requester, permit_users=users, permit_holders=holders
            )
            is None
        ):
            return o
        raise NotFound("output.not_found", f"output {output_id} does not exist")

    def _run(self, user: User, release_id: str, sql: str, fmt: str, now: datetime) -> dict[str, Any]:
        """Run ``sql`` for an output request and store its result; the file's facts."""
        svc = self.service
        if fmt not in FILE_FORMATS:
            raise QueryRefused("format.unknown", f"format must be one of {list(FILE_FORMATS)}")
        permit: Permit = svc._permit(user, release_id, now)
        if permit.output_tier == AGGREGATE:
            raise QueryRefused(
                "output.not_needed",
                "aggregate results are disclosure-controlled and leave directly: "
                "query with the format you need",
            )
        if permit.output_tier != RECORD:
            raise Forbidden("permit.unknown_tier", "the permit's output tier is not one this layer knows")
        keys = svc.excluded_keys(permit, now)
        with svc.engines.lease(permit, keys) as engine:
            engine.refresh_exclusions(keys)
            checked, _ = svc._prepare(engine, sql, RECORD)
            reasons = list(classify_query(checked.tree))
            if reasons and self._exception(permit.id, now) is None:
                raise Forbidden(
                    "output.row_level_needs_exception", _ROW_LEVEL_HINT.format(reasons=", ".join(reasons))
                )
            (table,) = engine.run([checked.sql])
        if values_look_like_pseudonyms(table):
            reasons.append("pseudonym_values")
        body = serialise(
            table, fmt, meta={"release_id": release_id, "output_tier": RECORD} if fmt == "json" else None
        )
        name, digest = self.files.write(release_id, fmt, body)
        return {
            "permit": permit,
            "query_masked": checked.masked,
            "query_sha256": checked.masked_sha256,
            "format": fmt,
            "file_name": name,
            "sha256": digest,
            "size_bytes": len(body),
            "rows": table.num_rows,
            "columns": list(table.column_names),
            "row_level": bool(reasons),
            "row_level_reasons": list(dict.fromkeys(reasons)),
            "consent_sha256": _consent_digest(keys),
        }

    def _exception(self, permit_id: int, at: datetime) -> Any:
        live = [
            e
            for e in self._call("output_exceptions", lambda: self.gov.output_exceptions(permit_id=permit_id))
            if e.in_force(at)
        ]
        return live[-1] if live else None

    # -- requester -----------------------------------------------------------------------
    def create(self, user: User, release_id: str, sql: str, fmt: str, *, title: str, context: str) -> Any:
        """File an output request from a query (runs it, stores the file, asks for two checks)."""
        now = self.service.clock()
        event: dict[str, Any] = {
            "event": "access.output_request",
            "user": user.name,
            "release_id": release_id,
            "format": fmt,
        }
        facts: dict[str, Any] | None = None
        try:
            facts = self._run(user, release_id, sql, fmt, now)
            permit = facts.pop("permit")
            event.update(
                permit_id=permit.id,
                query_sha256=facts["query_sha256"],
                rows=facts["rows"],
                result_sha256=facts["sha256"],
                row_level=facts["row_level"],
            )
            o = self._call(
                "file_output",
                lambda: self.gov.file_output(
                    at=now, permit_id=permit.id, requester=user.name, title=title, context=context, **facts
                ),
            )
        except Refusal as r:
            if facts is not None:
                self.files.delete(release_id, facts["file_name"])
            self._log(**event, decision="refused", reason=r.reason)
            raise
        except BaseException:
            if facts is not None:
                self.files.delete(release_id, facts["file_name"])
            raise
        self._log(**event, decision="allowed", output_id=o.id)
        return o

    def mine(self, user: User) -> list[Any]:
        return self._call("list_outputs", lambda: self.gov.list_outputs(requester=user.name))

    def get(self, user: User, output_id: int) -> Any:
        return self._visible(user, output_id)

    def resubmit(
        self, user: User, output_id: int, *, context: str, sql: str | None = None, fmt: str | None = None
    ) -> Any:
        """Answer a return: new context, and optionally a new query (a new file replaces the old)."""
        now = self.service.clock()
        old = self._visible(user, output_id)
        event: dict[str, Any] = {
            "event": "access.output_resubmit",
            "user": user.name,
            "output_id": output_id,
            "permit_id": old.permit_id,
        }
        facts: dict[str, Any] | None = None
        try:
            if old.requester != user.name:
                raise Forbidden("output.not_requester", "only the requester may resubmit an output")
            if sql:
                facts = self._run(user, old.release_id, sql, fmt or old.format, now)
                facts.pop("permit")
            o = self._call(
                "resubmit_output",
                lambda: self.gov.resubmit_output(
                    output_id=output_id, actor=user.name, context=context, replacement=facts, at=now
                ),
            )
        except Refusal as r:
            if facts is not None:
                self.files.delete(old.release_id, facts["file_name"])
            self._log(**event, decision="refused", reason=r.reason)
            raise
        if facts is not None:
            self.files.delete(old.release_id, old.file_name)
        self._log(**event, decision="allowed", round=o.round, result_sha256=o.sha256)
        return o

    def withdraw(self, user: User, output_id: int) -> Any:
        now = self.service.clock()
        old = self._visible(user, output_id)
        try:
            o = self._call(
                "withdraw_output",
                lambda: self.gov.withdraw_output(output_id=output_id, actor=user.name, at=now),
            )
        except Refusal as r:
            self._log(
                event="access.output_withdraw",
                user=user.name,
                output_id=output_id,
                decision="refused",
                reason=r.reason,
            )
            raise
        self.files.delete(old.release_id, old.file_name)  # nothing will leave: keep no copy
        self._log(event="access.output_withdraw", user=user.name, output_id=output_id, decision="allowed")
        return o

    def download(self, user: User, output_id: int) -> Download:
        """The approved file, for its requester, if its hash is the one checked (audited either way)."""
        now = self.service.clock()
        event: dict[str, Any] = {"event": "access.output_download", "user": user.name, "output_id": output_id}
        try:
            o = self._visible(user, output_id)
            event.update(permit_id=o.permit_id, release_id=o.release_id)
            if (refusal := out.download_refusal(o, user.name)) is not None:
                raise Refusal(refusal.code, refusal.message, status=refusal.http_status)
            # The permit, for this user, now (researcher role, not revoked, not expired).
            permit = self.service._permit(user, o.release_id, now)
            if permit.id != o.permit_id:
                raise Forbidden(
                    "output.permit_inactive", "the permit this output was filed under is not in force"
                )
            if o.row_level:
                keys = self.service.excluded_keys(permit, now)
                if _consent_digest(keys) != o.consent_sha256:
                    raise Refusal(
                        "output.consent_changed",
                        "consent records changed since this row-level output "
                        "was made; file it again so that withdrawn persons are left out",
                        status=409,
                    )
            body = self.files.read(o.release_id, o.file_name)
            digest = hashlib.sha256(body).hexdigest()
            o = self._call(
                "record_output_download",
                lambda: self.gov.record_output_download(
                    output_id=output_id, actor=user.name, sha256=digest, at=now
                ),
            )
        except Refusal as r:
            self._log(**event, decision="refused", reason=r.reason)
            raise
        self._log(**event, decision="allowed", result_sha256=digest, bytes=len(body), rows=o.rows)
        return Download(body, MEDIA_TYPES[o.format], f"output-{o.id}.{EXTENSIONS[o.format]}", digest, o)

    # -- checkers ------------------------------------------------------------------------
    def for_checker(self, user: User) -> list[Any]:
        """Every output ``user`` may check (any state), newest first."""
        return self._call("outputs_for_checker", lambda: self.gov.outputs_for_checker(checker=user.name))

    def queue(self, user: User) -> list[Any]:
        """Outputs awaiting ``user``'s check in their current round, oldest first."""
        return sorted(
            (
                o
                for o in self.for_checker(user)
                if out.OutputStatus(o.status) in out.IN_CHECK
                and all(c.checker != user.name for c in o.current_checks)
            ),
            key=lambda o: o.id,
        )

    def preview(self, user: User, output_id: int, *, rows: int = CHECK_PREVIEW_ROWS) -> tuple[Any, pa.Table]:
        """(output, its first ``rows`` rows) for a checker or the requester (audited: checkers
        read record-level data here)."""
        o = self._visible(user, output_id)
        table = read_table(self.files.read(o.release_id, o.file_name), o.format)
        self._log(
            event="access.output_preview",
            user=user.name,
            output_id=output_id,
            permit_id=o.permit_id,
            rows=min(rows, table.num_rows),
            decision="allowed",
        )
        return o, table.slice(0, rows)

    def decide(self, user: User, output_id: int, decision: str, comment: str) -> Any:
        now = self.service.clock()
        event: dict[str, Any] = {
            "event": "access.output_check",
            "user": user.name,
            "output_id": output_id,
            "check": decision,
        }
        try:
            before = self._call("get_output", lambda: self.gov.get_output(output_id=output_id))
            o = self._call(
                "check_output",
                lambda: self.gov.check_output(
                    output_id=output_id, checker=user.name, decision=decision, comment=comment, at=now
                ),
            )
        except Refusal as r:
            self._log(**event, decision="refused", reason=r.reason)
            raise
        if o.status == out.OutputStatus.REJECTED:
            self.files.delete(before.release_id, before.file_name)  # nothing will leave: keep no copy
        self._log(**event, decision="allowed", status=o.status, round=o.round, permit_id=o.permit_id)
        return o

    # -- stewards' exceptions ------------------------------------------------------------
    def record_exception(
        self, user: User, permit_id: int, justification: str, holder_id: str | None = None
    ) -> Any:
        now = self.service.clock()
        try:
            e = self._call(
                "record_output_exception",
                lambda: self.gov.record_output_exception(
                    permit_id=permit_id,
                    steward=user.name,
                    justification=justification,
                    holder_id=holder_id,
                    at=now,
                ),
            )
        except Refusal as r:
            self._log(
                event="access.output_exception",
                user=user.name,
                permit_id=permit_id,
                decision="refused",
                reason=r.reason,
            )
            raise
        self._log(
            event="access.output_exception",
            user=user.name,
            permit_id=permit_id,
            decision="allowed",
            exception_id=e.id,
            holder_id=e.holder_id,
        )
        return e

    def withdraw_exception(self, user: User, exception_id: int) -> Any:
        now = self.service.clock()
        try:
            e = self._call(
                "withdraw_output_exception",
                lambda: self.gov.withdraw_output_exception(
                    exception_id=exception_id, actor=user.name, at=now
                ),
            )
        except Refusal as r:
            self._log(
                event="access.output_exception_withdraw",
                user=user.name,
                exception_id=exception_id,
                decision="refused",
                reason=r.reason,
            )
            raise
        self._log(
            event="access.output_exception_withdraw",
            user=user.name,
            exception_id=exception_id,
            permit_id=e.permit_id,
            decision="allowed",
        )
        return e

    def exceptions(self, user: User, permit_id: int) -> list[Any]:
        """A permit's exceptions: for its users, its holders' stewards and output checkers."""
        users, holders = self._call("output_scope", lambda: self.gov.output_scope(permit_id=permit_id))
        who = out.party(user)
        if not (
            user.name in users
            or out.CHECKER_ROLE in who.roles
            or ("steward" in who.roles and who.holder_ids & holders)
        ):
            raise NotFound("permit.not_found", f"permit {permit_id} does not exist")
        return self._call("output_exceptions", lambda: self.gov.output_exceptions(permit_id=permit_id))


_ROW_LEVEL_HINT = (
    "this result is row-level ({reasons}): rows of pseudonymised data leave the environment only under an "
    "exception a steward of a holder in your permit records on the permit. Aggregate it (GROUP BY with counts, "
    "no person_id outside count(DISTINCT person_id)), or ask a steward"
)
