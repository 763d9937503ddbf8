"""Output requests (the airlock), kept in the governance store.

EHDS art. 73: a record-level result that is to leave the secure processing environment is
filed here as an output request (the file itself stays in the restricted area of the access
layer; only its facts are stored) and leaves only after two output checkers approve. The
rules are the pure state machine in ``governance.outputs``; these functions load, lock,
apply and persist. Free text (context, comments, justifications) stays in the store; the
audit log gets ids, decisions and counts.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from governance import auditing, outputs
from governance.errors import InvalidRequest, InvalidTransition, NotFound, PermissionDenied
from governance.models import OutputCheckRow, OutputExceptionRow, OutputRequestRow
from governance.permits import permit_by_id, permit_value
from governance.releases import SHA256_HEX
from governance.transactions import aware_now, flush
from governance.users import has_role, user_row

_OUTPUT_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _party(session: Session, name: str) -> outputs.Party | None:
    row = user_row(session, name)
    if row is None or row.disabled_at is not None:
        return None
    return outputs.Party(row.name, frozenset(row.roles), frozenset(row.holder_ids))


def _exception_value(row: OutputExceptionRow) -> outputs.OutputException:
    return outputs.OutputException(
        id=row.id,
        permit_id=row.permit_id,
        steward=row.steward,
        holder_id=row.holder_id,
        justification=row.justification,
        recorded_at=row.recorded_at,
        withdrawn_at=row.withdrawn_at,
        withdrawn_by=row.withdrawn_by,
    )


def output_exceptions(session: Session, *, permit_id: int) -> list[outputs.OutputException]:
    """Every row-level exception ever recorded on the permit, oldest first (withdrawn ones too)."""
    rows = session.execute(
        select(OutputExceptionRow)
        .where(OutputExceptionRow.permit_id == permit_id)
        .order_by(OutputExceptionRow.id)
    ).scalars()
    return [_exception_value(r) for r in rows]


def output_exception(
    session: Session, *, permit_id: int, at: datetime | None = None
) -> outputs.OutputException | None:
    """The latest row-level exception in force on the permit at ``at``, or None."""
    at = aware_now(at)
    live = [e for e in output_exceptions(session, permit_id=permit_id) if e.in_force(at)]
    return live[-1] if live else None


def record_output_exception(
    session: Session,
    *,
    permit_id: int,
    steward: str,
    justification: str,
    holder_id: str | None = None,
    now: datetime | None = None,
) -> outputs.OutputException:
    """A steward of a holder in the permit's scope records why row-level outputs of this permit's
    pseudonymised data may be requested (each is still checked by two output checkers)."""
    now = aware_now(now)
    text = outputs.clean_text(
        justification, field="justification", minimum=outputs.MIN_EXCEPTION_JUSTIFICATION
    )
    permit = permit_by_id(session, permit_id)
    who = _party(session, steward)
    if who is None:
        raise PermissionDenied(f"{steward!r} is not an active user", code="exception.not_steward")
    if holder_id is None:
        mine = sorted(who.holder_ids & set(permit.holders))
        holder_id = mine[0] if mine else ""
    refusal = outputs.exception_refusal(
        who, holder_id=holder_id, permit_users=permit.users, permit_holders=permit.holders
    )
    if refusal is not None:
        raise refusal
    if not permit_value(permit, now).is_active(now):
        raise InvalidTransition(f"permit {permit_id} is not in force", code="exception.permit_inactive")
    row = OutputExceptionRow(
        permit_id=permit_id, holder_id=holder_id, steward=steward, justification=text, recorded_at=now
    )
    session.add(row)
    flush(session)
    auditing.queue(
        session,
        event="governance.output_exception.recorded",
        exception_id=row.id,
        permit_id=permit_id,
        holder_id=holder_id,
        actor=steward,
    )
    return _exception_value(row)


def withdraw_output_exception(
    session: Session, *, exception_id: int, actor: str, now: datetime | None = None
) -> outputs.OutputException:
    """End an exception at once (a steward of a holder in scope): no new row-level output request
    under it, and no download of a row-level output filed under it."""
    now = aware_now(now)
    row = session.get(OutputExceptionRow, exception_id, populate_existing=True)
    if row is None:
        raise NotFound(f"exception {exception_id} does not exist", code="exception.not_found")
    permit = permit_by_id(session, row.permit_id)
    who = _party(session, actor)
    mine = sorted(who.holder_ids & set(permit.holders)) if who else []
    refusal = (
        outputs.exception_refusal(
            who, holder_id=mine[0], permit_users=permit.users, permit_holders=permit.holders
        )
        if who and mine
        else PermissionDenied(
            f"{actor!r} is not a steward of a holder in the permit", code="exception.not_steward"
        )
    )
    if refusal is not None:
        raise refusal
    if row.withdrawn_at is None:
        row.withdrawn_at, row.withdrawn_by = now, actor
        flush(session)
        auditing.queue(
            session,
            event="governance.output_exception.withdrawn",
            exception_id=row.id,
            permit_id=row.permit_id,
            actor=actor,
        )
    return _exception_value(row)


def _output_value(session: Session, row: OutputRequestRow) -> outputs.OutputRequest:
    checks = session.execute(
        select(OutputCheckRow).where(OutputCheckRow.output_id == row.id).order_by(OutputCheckRow.id)
    ).scalars()
    return outputs.OutputRequest(
        id=row.id,
        permit_id=row.permit_id,
        release_id=row.release_id,
        requester=row.requester,
        status=row.status,
        round=row.review_round,
        title=row.title,
        context=row.context,
        query_masked=row.query_masked,
        query_sha256=row.query_sha256,
        format=row.format,
        file_name=row.file_name,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        rows=row.rows,
        columns=tuple(row.columns),
        row_level=bool(row.row_level),
        row_level_reasons=tuple(row.row_level_reasons),
        exception_id=row.exception_id,
        consent_sha256=row.consent_sha256,
        created_at=row.created_at,
        updated_at=row.updated_at,
        decided_at=row.decided_at,
        downloads=row.downloads,
        checks=tuple(
            outputs.OutputCheck(c.checker, c.decision, c.comment, c.review_round, c.decided_at)
            for c in checks
        ),
    )


def _lock_output(session: Session, output_id: int) -> OutputRequestRow:
    row = session.execute(
        select(OutputRequestRow)
        .where(OutputRequestRow.id == output_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"output {output_id} does not exist", code="output.not_found")
    return row


def _file_facts(
    file_name: str, sha256: str, size_bytes: int, rows: int, columns: Iterable[str], fmt: str
) -> list[tuple[str, str]]:
    problems = []
    if not _OUTPUT_FILE.match(file_name or "") or ".." in file_name:
        problems.append(("output.file_name", "file name must be a plain name (A-Z a-z 0-9 . _ -)"))
    if not SHA256_HEX.match(sha256 or ""):
        problems.append(("output.sha256", "sha256 must be 64 lower-case hex digits"))
    if fmt not in outputs.FORMATS:
        problems.append(("output.format", f"format must be one of {outputs.FORMATS}"))
    if size_bytes < 0 or rows < 0 or not list(columns):
        problems.append(("output.file", "an output has a size, a row count and at least one column"))
    return problems


def file_output_request(
    session: Session,
    *,
    permit_id: int,
    requester: str,
    title: str,
    context: str,
    query_masked: str,
    query_sha256: str,
    format: str,
    file_name: str,
    sha256: str,
    size_bytes: int,
    rows: int,  # noqa: A002
    columns: Iterable[str],
    row_level: bool,
    row_level_reasons: Iterable[str] = (),
    consent_sha256: str = "0" * 64,
    now: datetime | None = None,
) -> outputs.OutputRequest:
    """File an output request for checking. The requester must hold the (active) permit; a
    row-level output needs a steward's exception in force on the permit."""
    now = aware_now(now)
    problems = _file_facts(file_name, sha256, size_bytes, rows, columns, format)
    try:
        clean_title = outputs.clean_text(title, field="title", minimum=3, maximum=200, multiline=False)
    except InvalidRequest as exc:
        problems += list(exc.problems)
        clean_title = ""
    try:
        clean_context = outputs.clean_text(context, field="context", minimum=outputs.MIN_CONTEXT)
    except InvalidRequest as exc:
        problems += list(exc.problems)
        clean_context = ""
    if problems:
        raise InvalidRequest(problems)
    permit = permit_by_id(session, permit_id)
    if requester not in permit.users or not has_role(session, requester, "researcher"):
        raise PermissionDenied(f"{requester!r} holds no permit {permit_id}", code="output.not_on_permit")
    if not permit_value(permit, now).is_active(now):
        raise InvalidTransition(f"permit {permit_id} is not in force", code="output.permit_inactive")
    exception = output_exception(session, permit_id=permit_id, at=now) if row_level else None
    if row_level and exception is None:
        raise PermissionDenied(
            "a row-level output of pseudonymised data may leave only under an exception that a steward of a "
            "holder in the permit has recorded; aggregate the result, or ask a steward",
            code="output.row_level_needs_exception",
        )
    row = OutputRequestRow(
        permit_id=permit_id,
        release_id=permit.release_id or "",
        requester=requester,
        status=outputs.OutputStatus.SUBMITTED.value,
        review_round=1,
        title=clean_title,
        context=clean_context,
        query_masked=query_masked,
        query_sha256=query_sha256,
        format=format,
        file_name=file_name,
        sha256=sha256,
        size_bytes=size_bytes,
        rows=rows,
        columns=list(columns),
        row_level=bool(row_level),
        row_level_reasons=list(row_level_reasons),
        exception_id=exception.id if exception else None,
        consent_sha256=consent_sha256,
        created_at=now,
        updated_at=now,
        decided_at=None,
        downloads=0,
    )
    session.add(row)
    flush(session)
    auditing.queue(
        session,
        event="governance.output.filed",
        output_id=row.id,
        permit_id=permit_id,
        release_id=row.release_id,
        actor=requester,
        format=format,
        rows=rows,
        sha256=sha256,
        row_level=bool(row_level),
        exception_id=row.exception_id,
        query_sha256=query_sha256,
    )
    return _output_value(session, row)


def get_output_request(session: Session, *, output_id: int) -> outputs.OutputRequest:
    """The output request with its checks, or NotFound."""
    row = session.get(OutputRequestRow, output_id, populate_existing=True)
    if row is None:
        raise NotFound(f"output {output_id} does not exist", code="output.not_found")
    return _output_value(session, row)


def list_output_requests(
    session: Session, *, requester: str | None = None, permit_id: int | None = None, status: str | None = None
) -> list[outputs.OutputRequest]:
    """Output requests, newest first, filtered by requester / permit / status."""
    q = select(OutputRequestRow).order_by(OutputRequestRow.id.desc())
    if requester is not None:
        q = q.where(OutputRequestRow.requester == requester)
    if permit_id is not None:
        q = q.where(OutputRequestRow.permit_id == permit_id)
    if status is not None:
        q = q.where(OutputRequestRow.status == outputs.OutputStatus(status).value)
    return [_output_value(session, r) for r in session.execute(q).scalars().all()]


def output_permit_scope(session: Session, *, permit_id: int) -> tuple[frozenset[str], frozenset[str]]:
    """(users, holders) of the permit: who may not check its outputs, whose stewards may."""
    p = permit_by_id(session, permit_id)
    return frozenset(p.users), frozenset(p.holders)


def outputs_for_checker(session: Session, *, checker: str) -> list[outputs.OutputRequest]:
    """Every output ``checker`` may check (any state), newest first; none for an unknown user."""
    who = _party(session, checker)
    if who is None:
        return []
    out = []
    for o in list_output_requests(session):
        users, holders = output_permit_scope(session, permit_id=o.permit_id)
        if (
            outputs.check_refusal(who, requester=o.requester, permit_users=users, permit_holders=holders)
            is None
        ):
            out.append(o)
    return out


def output_check_queue(session: Session, *, checker: str) -> list[outputs.OutputRequest]:
    """Outputs awaiting ``checker``'s check in their current round, oldest first."""
    who = _party(session, checker)
    if who is None:
        return []
    return sorted(
        (
            o
            for o in outputs_for_checker(session, checker=checker)
            if outputs.OutputStatus(o.status) in outputs.IN_CHECK
            and all(c.checker != checker for c in o.current_checks)
        ),
        key=lambda o: o.id,
    )


def _persist_output(session: Session, row: OutputRequestRow, value: outputs.OutputRequest) -> None:
    row.status, row.review_round, row.context = value.status, value.round, value.context
    row.updated_at, row.decided_at = value.updated_at, value.decided_at
    for f in (
        "query_masked",
        "query_sha256",
        "format",
        "file_name",
        "sha256",
        "size_bytes",
        "rows",
        "row_level",
        "consent_sha256",
        "exception_id",
    ):
        setattr(row, f, getattr(value, f))
    row.columns, row.row_level_reasons = list(value.columns), list(value.row_level_reasons)


def check_output(
    session: Session,
    *,
    output_id: int,
    checker: str,
    decision: str,
    comment: str,
    now: datetime | None = None,
) -> outputs.OutputRequest:
    """Record one output checker's decision; the output is approved when two distinct checkers
    approved in this round, rejected or returned at once on one objection."""
    now = aware_now(now)
    row = _lock_output(session, output_id)
    who = _party(session, checker) or outputs.Party(checker, frozenset())
    users, holders = output_permit_scope(session, permit_id=row.permit_id)
    before = _output_value(session, row)
    after = outputs.decide(before, who, decision, comment, permit_users=users, permit_holders=holders, at=now)
    new = after.checks[-1]
    session.add(
        OutputCheckRow(
            output_id=row.id,
            review_round=new.round,
            checker=new.checker,
            decision=new.decision,
            comment=new.comment,
            decided_at=now,
        )
    )
    _persist_output(session, row, after)
    flush(session)
    auditing.queue(
        session,
        event="governance.output.checked",
        output_id=row.id,
        permit_id=row.permit_id,
        actor=checker,
        decision=new.decision,
        round=new.round,
        from_status=before.status,
        to_status=after.status,
        approvals=len(after.approvers),
    )
    return _output_value(session, row)


def resubmit_output_request(
    session: Session,
    *,
    output_id: int,
    actor: str,
    context: str,
    replacement: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> outputs.OutputRequest:
    """Answer a return: new context and optionally a new file (``replacement``: the file's facts,
    ``governance.outputs.FileFacts``). A new round starts; earlier approvals no longer count."""
    now = aware_now(now)
    row = _lock_output(session, output_id)
    repl = dict(replacement or {})
    if repl:
        if unknown := sorted(set(repl) - outputs.FileFacts.__optional_keys__):
            raise InvalidRequest([("output.unknown_field", f"cannot replace {unknown}")])
        if problems := _file_facts(
            repl["file_name"],
            repl["sha256"],
            repl["size_bytes"],
            repl["rows"],
            repl["columns"],
            repl["format"],
        ):
            raise InvalidRequest(problems)
        repl["columns"] = tuple(repl["columns"])
        repl["row_level_reasons"] = tuple(repl.get("row_level_reasons", ()))
    before = _output_value(session, row)
    after = outputs.resubmit(before, actor, context, at=now, **repl)
    permit = permit_by_id(session, row.permit_id)
    if not permit_value(permit, now).is_active(now):
        raise InvalidTransition(f"permit {row.permit_id} is not in force", code="output.permit_inactive")
    if after.row_level:
        exception = output_exception(session, permit_id=row.permit_id, at=now)
        if exception is None:
            raise PermissionDenied(
                "a row-level output needs a steward's exception in force on the permit",
                code="output.row_level_needs_exception",
            )
        after = replace(after, exception_id=exception.id)
    _persist_output(session, row, after)
    flush(session)
    auditing.queue(
        session,
        event="governance.output.resubmitted",
        output_id=row.id,
        permit_id=row.permit_id,
        actor=actor,
        round=after.round,
        new_file=bool(repl),
        sha256=after.sha256,
    )
    return _output_value(session, row)


def withdraw_output_request(
    session: Session, *, output_id: int, actor: str, now: datetime | None = None
) -> outputs.OutputRequest:
    """The requester withdraws an output request that is not decided yet."""
    now = aware_now(now)
    row = _lock_output(session, output_id)
    after = outputs.withdraw(_output_value(session, row), actor, at=now)
    _persist_output(session, row, after)
    flush(session)
    auditing.queue(
        session, event="governance.output.withdrawn", output_id=row.id, permit_id=row.permit_id, actor=actor
    )
    return _output_value(session, row)


def record_output_download(
    session: Session, *, output_id: int, actor: str, sha256: str, now: datetime | None = None
) -> outputs.OutputRequest:
    """Allow and record one download: by the requester, of an output two checkers approved,
    while the permit is in force (and, for a row-level output, its exception too), of a file
    whose SHA-256 (computed by the caller from the stored file) is the one filed and checked."""
    now = aware_now(now)
    row = _lock_output(session, output_id)
    value = _output_value(session, row)
    refusal = outputs.download_refusal(value, actor)
    if refusal is not None:
        raise refusal
    permit = permit_by_id(session, row.permit_id)
    if (
        not permit_value(permit, now).is_active(now)
        or not has_role(session, actor, "researcher")
        or actor not in permit.users
    ):
        raise PermissionDenied(
            f"permit {row.permit_id} is not in force for {actor!r}", code="output.permit_inactive"
        )
    if value.row_level and output_exception(session, permit_id=row.permit_id, at=now) is None:
        raise PermissionDenied(
            "the steward's exception for row-level outputs on this permit is no longer in force",
            code="output.exception_withdrawn",
        )
    if not hmac.compare_digest(sha256 or "", row.sha256):
        raise InvalidTransition(
            "the stored file is not the file that was checked (SHA-256 differs)", code="output.integrity"
        )
    row.downloads += 1
    flush(session)
    auditing.queue(
        session,
        event="governance.output.downloaded",
        output_id=row.id,
        permit_id=row.permit_id,
        actor=actor,
        sha256=row.sha256,
        downloads=row.downloads,
    )
    return _output_value(session, row)
