"""``hdp request|consent|user|governance``: the governance workflows on the command line.

Who acts: commands taken on behalf of a person (file, submit, decide, amend, revoke, consent
changes) authenticate with that person's API token from ``$HDP_TOKEN``, exactly like the HTTP API;
the CLI never takes a user name on trust. ``hdp user add|token`` and ``hdp governance upgrade`` are
operator bootstrap commands for whoever runs the server (shell access to the store).

Output never shows a token except the one just issued, and never a personnummer or consent key.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import UTC, date, datetime
from typing import Any

import click
from sqlalchemy.orm import Session

from governance import ledger, service
from governance.errors import GovernanceError
from governance.purposes import LEGAL_BASES, PURPOSES, SECONDARY_USE
from governance.store import current_revision, session_scope, upgrade
from governance.values import User
from hdp.settings import get_settings
from privacy import domains


def _url() -> str:
    return get_settings().governance_url


@contextmanager
def _session() -> Iterator[Session]:
    """A committed-on-success session on a migrated store; governance errors become clean CLI errors."""
    url = _url()
    upgrade(url)  # idempotent: a no-op when the schema is current
    try:
        with session_scope(url) as session:
            yield session
    except GovernanceError as exc:
        raise click.ClickException(f"[{exc.code}] {exc.message}") from None


def _actor(session: Session, role: str | None = None) -> User:
    configured = get_settings().token
    token = configured.get_secret_value() if configured is not None else ""
    if not token:
        raise click.ClickException(
            "set HDP_TOKEN to your API token (an operator issues one with `hdp user token NAME`)"
        )
    user = service.authenticate_token(session, token)
    if user is None:
        raise click.ClickException("HDP_TOKEN is not a valid, active token")
    if role is not None and role not in user.roles and "admin" not in user.roles:
        raise click.ClickException(f"user {user.name!r} lacks the {role!r} role")
    return user


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        items = [_jsonable(v) for v in value]
        return sorted(items) if isinstance(value, frozenset | set) else items
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(_jsonable(value), indent=2, ensure_ascii=False))


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- hdp request


@click.group()
def request() -> None:
    """Data-access requests: file, submit, decide, amend, revoke."""


@request.command("file")
@click.option("--project", required=True, help="Project title (public in the transparency register).")
@click.option("--purpose", required=True, type=click.Choice(sorted(PURPOSES)), help="EHDS art. 53 purpose.")
@click.option("--legal-basis", required=True, type=click.Choice(sorted(LEGAL_BASES)))
@click.option("--ethics-ref", required=True, help="Ethics approval reference, e.g. 2024-01234-01.")
@click.option(
    "--variable", "variables", multiple=True, required=True, help="table.column from schemas/variables.json"
)
@click.option("--holder", "holders", multiple=True, required=True, help="Data holder id (repeat).")
@click.option("--member", "members", multiple=True, help="Team member user name (repeat).")
@click.option(
    "--criteria",
    default="{}",
    help='Cohort criteria as JSON, e.g. {"register_visit.diabetes_type": {"in": [1]}}',
)
@click.option("--period-start", default=None, help="YYYY-MM-DD")
@click.option("--period-end", default=None, help="YYYY-MM-DD")
@click.option("--data-form", type=click.Choice(["anonymised", "pseudonymised"]), default="anonymised")
@click.option("--pseudonymisation-justification", default=None)
@click.option("--output-tier", type=click.Choice(["aggregate", "record"]), default="aggregate")
@click.option("--access-days", type=int, default=365)
@click.option("--submit", "submit_now", is_flag=True, help="Submit at once instead of keeping a draft.")
def file_cmd(
    project: str,
    purpose: str,
    legal_basis: str,
    ethics_ref: str,
    variables: tuple[str, ...],
    holders: tuple[str, ...],
    members: tuple[str, ...],
    criteria: str,
    period_start: str | None,
    period_end: str | None,
    data_form: str,
    pseudonymisation_justification: str | None,
    output_tier: str,
    access_days: int,
    submit_now: bool,
) -> None:
    """File a request as the token's user (a draft unless --submit)."""
    try:
        cohort = json.loads(criteria)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON ({exc.msg} at {exc.pos})", param_hint="--criteria") from None
    with _session() as s:
        user = _actor(s, "researcher")
        rid = service.file_request(
            s,
            applicant=user.name,
            project=project,
            purpose=purpose,
            legal_basis=legal_basis,
            ethics_ref=ethics_ref,
            variables=list(variables),
            holders=list(holders),
            members=list(members),
            cohort_criteria=cohort,
            period=(period_start, period_end),
            data_form=data_form,
            pseudonymisation_justification=pseudonymisation_justification,
            output_tier=output_tier,
            access_days=access_days,
        )
        if submit_now:
            service.submit_request(s, request_id=rid, actor=user.name)
    click.echo(f"request {rid} {'submitted' if submit_now else 'filed as draft'}")


@request.command("submit")
@click.argument("request_id", type=int)
def submit_cmd(request_id: int) -> None:
    """Submit a draft (or a request returned for changes) for review."""
    with _session() as s:
        user = _actor(s)
        service.submit_request(s, request_id=request_id, actor=user.name)
    click.echo(f"request {request_id} submitted")


@request.command("decide")
@click.argument("request_id", type=int)
@click.option("--holder", required=True, help="The holder you decide for.")
@click.option("--decision", required=True, type=click.Choice(["approve", "reject", "return"]))
@click.option("--justification", required=True)
@click.option(
    "--safe",
    "safes",
    multiple=True,
    type=click.Choice(list(service.FIVE_SAFES)),
    help="A Five Safes item you checked (repeat for each): recorded with the decision.",
)
@click.option(
    "--ack-at-risk",
    is_flag=True,
    help="You have seen the groups below k of the disclosure pre-check (needed to approve when there are any).",
)
def decide_cmd(
    request_id: int, holder: str, decision: str, justification: str, safes: tuple[str, ...], ack_at_risk: bool
) -> None:
    """Decide for one holder as the token's steward."""
    from access.web.precheck import require_at_risk_acknowledged

    checklist = {item: item in safes for item in service.FIVE_SAFES} | {
        service.AT_RISK_ACKNOWLEDGED: ack_at_risk
    }
    with _session() as s:
        user = _actor(s, "steward")
        if decision == "approve":
            view = service.get_request(s, request_id=request_id)
            require_at_risk_acknowledged(view, checklist, research_db=get_settings().research_db)
        status = service.decide(
            s,
            request_id=request_id,
            holder_id=holder,
            reviewer=user.name,
            decision=decision,
            justification=justification,
            checklist=checklist,
        )
    click.echo(f"request {request_id}: {holder} {decision} recorded; request is now {status}")


@request.command("show")
@click.argument("request_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def show_cmd(request_id: int, as_json: bool) -> None:
    """Show a request with its reviews, decisions, permit and history."""
    with _session() as s:
        view = service.get_request(s, request_id=request_id)
        permit = service.permit_for_request(s, request_id=request_id)
        history = service.request_history(s, request_id=request_id)
    if as_json:
        _echo_json({"request": view, "permit": permit, "history": history})
        return
    click.echo(f"request {view.id}  [{view.status}]  round {view.review_round}")
    click.echo(f"  project     {view.project}")
    click.echo(f"  purpose     {view.purpose}   legal basis {view.legal_basis}   ethics {view.ethics_ref}")
    click.echo(f"  applicant   {view.applicant}   members {', '.join(view.members) or '-'}")
    click.echo(f"  holders     {', '.join(view.holders)}")
    click.echo(f"  variables   {', '.join(view.variables)}")
    click.echo(f"  data        {view.data_form}, {view.output_tier}, {view.access_days} days")
    for r in view.reviews:
        if r.review_round == view.review_round:
            click.echo(
                f"  review      {r.holder_id}: {r.verdict} (needs {r.reviewers_required}, due {r.due_at:%Y-%m-%d})"
            )
    for d in view.decisions:
        click.echo(
            f"  decision    r{d.review_round} {d.holder_id} {d.reviewer}: {d.decision} - {d.justification}"
        )
    if permit is not None:
        click.echo(
            f"  permit      {permit.id} [{permit.status}] release {permit.release_id or '-'} "
            f"expires {permit.expires_at:%Y-%m-%d}"
        )


@request.command("list")
@click.option("--status", default=None)
@click.option("--holder", default=None)
@click.option("--json", "as_json", is_flag=True)
def list_cmd(status: str | None, holder: str | None, as_json: bool) -> None:
    """List requests (newest first)."""
    with _session() as s:
        views = service.list_requests(s, status=status, holder_id=holder)
    if as_json:
        _echo_json(
            [
                {
                    "id": v.id,
                    "status": v.status,
                    "project": v.project,
                    "purpose": v.purpose,
                    "holders": v.holders,
                    "applicant": v.applicant,
                }
                for v in views
            ]
        )
        return
    for v in views:
        click.echo(f"{v.id:>5}  {v.status:<13} {v.purpose:<20} {','.join(v.holders):<40} {v.project}")


@request.command("amend")
@click.argument("request_id", type=int)
@click.option("--add-member", "add_members", multiple=True, help="Add a team member (repeat).")
@click.option("--remove-member", "remove_members", multiple=True, help="Remove a team member (repeat).")
@click.option(
    "--access-days", type=int, default=None, help="New access period in days from the permit's issue."
)
@click.option(
    "--set", "sets", multiple=True, help="field=JSON for a request still in review, e.g. variables='[..]'"
)
@click.option("--reason", required=True)
def amend_cmd(
    request_id: int,
    add_members: tuple[str, ...],
    remove_members: tuple[str, ...],
    access_days: int | None,
    sets: tuple[str, ...],
    reason: str,
) -> None:
    """Amend a submitted request (logged; goes through review again)."""
    with _session() as s:
        user = _actor(s)
        view = service.get_request(s, request_id=request_id)
        changes: dict[str, Any] = {}
        if add_members or remove_members:
            changes["members"] = sorted((set(view.members) | set(add_members)) - set(remove_members))
        if access_days is not None:
            changes["access_days"] = access_days
        for item in sets:
            field, _, raw = item.partition("=")
            try:
                changes[field] = json.loads(raw)
            except json.JSONDecodeError:
                raise click.BadParameter(f"{field}: value is not JSON", param_hint="--set") from None
        new_id = service.amend_request(
            s, request_id=request_id, actor=user.name, changes=changes, reason=reason
        )
    if new_id == request_id:
        click.echo(f"request {request_id} amended; review restarts")
    else:
        click.echo(
            f"amendment filed as request {new_id} (draft); submit it with `hdp request submit {new_id}`"
        )


@request.command("revoke")
@click.argument("request_id", type=int)
@click.option("--justification", required=True)
def revoke_cmd(request_id: int, justification: str) -> None:
    """Revoke a permit at once (steward of a holder in scope, or admin)."""
    with _session() as s:
        user = _actor(s)
        permit = service.revoke_permit(s, request_id=request_id, actor=user.name, justification=justification)
    click.echo(
        f"permit {permit.id} of request {request_id} revoked; release {permit.release_id or '-'} due for deletion"
    )


# --------------------------------------------------------------------------- hdp consent

_SCOPES = sorted([SECONDARY_USE, *PURPOSES])


def _consent_key(personnummer: str | None, key: str | None) -> str:
    """The consent key: given directly, or derived from a personnummer (``-`` reads it from stdin)."""
    if key and not personnummer:
        return key
    if not personnummer or key:
        raise click.UsageError("give exactly one of --personnummer or --key")
    if personnummer == "-":
        personnummer = sys.stdin.readline().strip()

    try:
        return domains.consent_key(personnummer)
    except ValueError as exc:
        # The identity package's message names the problem, never the number.
        reason = getattr(exc, "reason_code", type(exc).__name__)
        raise click.ClickException(f"invalid personal identity number ({reason})") from None


def _who(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--key", default=None, help="Consent key (consent-domain pseudonym).")(f)
    f = click.option(
        "--personnummer",
        default=None,
        help="Personal identity number ('-' reads it from stdin, keeping it out of shell history).",
    )(f)
    return f


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    dt = datetime.fromisoformat(value)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@click.group()
def consent() -> None:
    """Consent registry: opt-out / opt-in per purpose, withdrawal (stewards)."""


def _record(
    choice: str,
    personnummer: str | None,
    key: str | None,
    purpose: str,
    source: str,
    valid_from: str | None,
    valid_to: str | None,
) -> None:
    ck = _consent_key(personnummer, key)
    with _session() as s:
        user = _actor(s, "steward")
        rid = service.record_consent(
            s,
            consent_key=ck,
            scope=purpose,
            choice=choice,
            source_ref=source,
            actor=user.name,
            valid_from=_parse_time(valid_from),
            valid_to=_parse_time(valid_to),
        )
    click.echo(f"consent record {rid}: {choice} for {purpose}")


@consent.command("opt-out")
@_who
@click.option("--purpose", type=click.Choice(_SCOPES), default=SECONDARY_USE, show_default=True)
@click.option("--source", required=True, help="Source document reference (form id, 1177 case, ...).")
@click.option("--valid-from", default=None, help="ISO date/time (default now)")
@click.option("--valid-to", default=None, help="ISO date/time (default open-ended)")
def opt_out_cmd(
    personnummer: str | None,
    key: str | None,
    purpose: str,
    source: str,
    valid_from: str | None,
    valid_to: str | None,
) -> None:
    """Record an opt-out of secondary use (or of one purpose)."""
    _record("opt_out", personnummer, key, purpose, source, valid_from, valid_to)


@consent.command("opt-in")
@_who
@click.option("--purpose", type=click.Choice(_SCOPES), required=True)
@click.option("--source", required=True)
@click.option("--valid-from", default=None)
@click.option("--valid-to", default=None)
def opt_in_cmd(
    personnummer: str | None,
    key: str | None,
    purpose: str,
    source: str,
    valid_from: str | None,
    valid_to: str | None,
) -> None:
    """Record an opt-in for one purpose."""
    _record("opt_in", personnummer, key, purpose, source, valid_from, valid_to)


@consent.command("withdraw")
@_who
@click.option("--purpose", type=click.Choice(_SCOPES), default=SECONDARY_USE, show_default=True)
@click.option("--source", required=True)
def withdraw_cmd(personnummer: str | None, key: str | None, purpose: str, source: str) -> None:
    """Withdraw consent now: ends earlier choices and excludes the person from later releases and queries."""
    ck = _consent_key(personnummer, key)
    with _session() as s:
        user = _actor(s, "steward")
        rid = service.withdraw_consent(s, consent_key=ck, scope=purpose, source_ref=source, actor=user.name)
    click.echo(f"consent withdrawn ({purpose}); record {rid}")


@consent.command("show")
@_who
@click.option("--json", "as_json", is_flag=True)
def show_consent_cmd(personnummer: str | None, key: str | None, as_json: bool) -> None:
    """Show one person's consent records and current state per purpose."""
    ck = _consent_key(personnummer, key)
    now = _now()
    with _session() as s:
        _actor(s, "steward")
        records = service.consent_records(s, consent_key=ck)
        state = {
            p: ("excluded" if service.is_excluded(s, consent_key=ck, purpose=p, at=now) else "included")
            for p in PURPOSES
        }
    if as_json:
        _echo_json({"records": records, "state_now": state})
        return
    for r in records:
        until = r.valid_to.isoformat() if r.valid_to else "open"
        click.echo(
            f"{r.id:>6}  {r.choice:<8} {r.scope:<20} {r.valid_from.isoformat()} .. {until}  source {r.source_ref}"
        )
    for p, st in state.items():
        click.echo(f"now  {p:<20} {st}")


# --------------------------------------------------------------------------- hdp user


@click.group()
def user() -> None:
    """Users, roles and API tokens (operator)."""


@user.command("add")
@click.argument("name")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice(["researcher", "steward", "operator", "admin", "reid_approver"]),
)
@click.option("--holder", "holders", multiple=True, help="Holder a steward reviews for (repeat).")
def user_add(name: str, roles: tuple[str, ...], holders: tuple[str, ...]) -> None:
    """Create a user."""
    with _session() as s:
        u = service.create_user(s, name=name, roles=roles, holder_ids=holders, actor="cli")
    click.echo(
        f"user {u.name} created: roles {', '.join(sorted(u.roles))}"
        + (f"; holders {', '.join(sorted(u.holder_ids))}" if u.holder_ids else "")
    )


@user.command("token")
@click.argument("name")
def user_token(name: str) -> None:
    """Issue a new API token; it is printed once and stored only as a hash."""
    with _session() as s:
        token = service.issue_token(s, user_name=name)
    click.echo(token)


@user.command("disable")
@click.argument("name")
def user_disable(name: str) -> None:
    """Disable a user at once: tokens stop working, access to every release ends."""
    with _session() as s:
        service.disable_user(s, name=name, actor="cli")
    click.echo(f"user {name} disabled")


@user.command("list")
def user_list() -> None:
    with _session() as s:
        for u in service.list_users(s):
            click.echo(f"{u.name:<24} {','.join(sorted(u.roles)):<30} {','.join(sorted(u.holder_ids))}")


# --------------------------------------------------------------------------- hdp governance


@click.group()
def governance() -> None:
    """Store migrations, deadlines, overdue reviews, key figures, transparency register."""


@governance.command("upgrade")
def upgrade_cmd() -> None:
    """Apply the store's migrations (idempotent)."""
    url = _url()
    upgrade(url)
    click.echo(f"governance store at revision {current_revision(url)}")


@governance.command("overdue")
@click.option("--json", "as_json", is_flag=True)
def overdue_cmd(as_json: bool) -> None:
    """Holder reviews past their decision deadline."""
    with _session() as s:
        rows = service.overdue_reviews(s, at=_now())
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("no overdue reviews")
    for o in rows:
        click.echo(
            f"request {o.request_id:>5}  {o.holder_id:<16} due {o.due_at:%Y-%m-%d}  {o.days_overdue:.1f} days overdue"
        )


@governance.command("deadline")
@click.option("--days", type=int, required=True)
@click.option("--holder", default=None, help="Only this holder (default: all holders).")
def deadline_cmd(days: int, holder: str | None) -> None:
    """Set the decision deadline applied to reviews opened from now on."""
    with _session() as s:
        service.set_decision_deadline(s, days=days, holder_id=holder, actor="cli")
    click.echo(f"decision deadline {days} days for {holder or 'all holders'}")


@governance.command("expire")
def expire_cmd() -> None:
    """Mark permits past their expiry (access already ends at expiry) and list releases to delete."""
    now = _now()
    with _session() as s:
        expired = service.expire_permits(s, at=now)
        due = service.releases_due_for_deletion(s, at=now)
    click.echo(
        f"{len(expired)} permit(s) expired; {len(due)} release(s) due for deletion: "
        + (", ".join(p.release_id or "" for p in due) or "-")
    )


@governance.command("figures")
@click.option("--period", type=click.Choice(["month", "quarter", "year"]), default="month", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def figures_cmd(period: str, as_json: bool) -> None:
    """Key figures per holder and period: counts and median days to decision and to release."""
    with _session() as s:
        figs = service.key_figures(s, period=period)
    if as_json:
        _echo_json(figs)
        return
    click.echo(
        f"{'holder':<16} {'period':<8} {'subm':>5} {'dec':>5} {'appr':>5} {'rej':>5} {'ret':>5} {'rel':>5} "
        f"{'med_d_dec':>10} {'med_d_rel':>10}"
    )
    for f in figs:

        def fmt(x: float | None) -> str:
            return "-" if x is None else f"{x:.1f}"

        click.echo(
            f"{f.holder_id:<16} {f.period:<8} {f.submitted:>5} {f.decided:>5} {f.approved:>5} {f.rejected:>5} "
            f"{f.returned:>5} {f.released:>5} {fmt(f.median_days_to_decision):>10} "
            f"{fmt(f.median_days_decision_to_release):>10}"
        )


@governance.command("transparency")
@click.option("--json", "as_json", is_flag=True)
def transparency_cmd(as_json: bool) -> None:
    """The public register of permits (no personal data)."""
    with _session() as s:
        entries = service.transparency_register(s)
    if as_json:
        _echo_json(entries)
        return
    for e in entries:
        click.echo(
            f"permit {e.permit_id:>4} [{e.status:<8}] {e.issued_on}..{e.expires_on} {e.purpose:<20} "
            f"{','.join(e.holders):<40} {e.project}"
        )


@governance.command("budget")
@click.argument("permit_id", type=int)
@click.option("--queries", type=int, required=True, help="Distinct aggregate queries the permit may ask.")
@click.option("--justification", required=True)
def budget_cmd(permit_id: int, queries: int, justification: str) -> None:
    """Set a permit's query budget (a steward of one of its holders; HDP_TOKEN)."""
    with _session() as s:
        who = _actor(s, "steward")
        ledger.set_query_budget(
            s, permit_id=permit_id, budget=queries, actor=who.name, justification=justification
        )
    click.echo(f"permit {permit_id}: {queries} distinct aggregate queries")


@governance.command("ledger")
@click.option("--since", default=None, help="Only queries asked from this date (YYYY-MM-DD).")
@click.option("--json", "as_json", is_flag=True)
def ledger_cmd(since: str | None, as_json: bool) -> None:
    """Follow-up of aggregate queries (operators): budgets used and flagged pairs of queries."""
    with _session() as s:
        _actor(s, "operator")
        report = ledger.follow_up(s, since=_parse_time(since))
    if as_json:
        _echo_json(report)
        return
    click.echo(f"{'permit':>6} {'queries':>8} {'budget':>7} {'compl':>6} {'diff':>5} {'near':>5}  askers")
    for p in report["permits"]:
        f = p["flags"]
        click.echo(
            f"{p['permit_id']:>6} {p['distinct_queries']:>8} {p['budget']:>7} {f['complementary']:>6} "
            f"{f['differencing']:>5} {f['near_duplicate']:>5}  {', '.join(p['askers'])}"
        )
    for pair in report["flagged_pairs"]:
        click.echo(
            f"  {pair['kind']:<14} permit {pair['permit_id']}: ledger rows {pair['ledger_ids'][0]} and "
            f"{pair['ledger_ids'][1]} ({pair['asked_by']}, {pair['asked_at']})"
        )
