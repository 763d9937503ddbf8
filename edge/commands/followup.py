"""CLI: ``hdp audit follow-up``: access follow-up (logguppföljning) of one holder, as rich tables or JSON.

The report is ``governance.followup``; this command only finds the logs (the access layer's and
the governance store's, verified against the store's checkpoints) and prints it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from governance.auditing import GOVERNANCE_LOG, StoreCheckpoints, checkpoint_table_exists
from governance.followup import FollowUpError, build_follow_up_for
from governance.store import session_scope
from hdp.settings import get_settings, holders

#: The access layer's log (access.service.AUDIT_FILE; named here so the CLI needs no DuckDB import).
ACCESS_LOG = "access.jsonl"


@click.command("follow-up")
@click.option("--holder", required=True, help="data holder id (schemas/holders.json)")
@click.option("--since", default="30d", show_default=True, help="30d, 12h, 2w or an ISO date/time")
@click.option("--until", default=None, help="ISO date/time or a duration back from now (default: now)")
@click.option("--release", default=None, help="one release of the holder (default: all of them)")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def follow_up(holder: str, since: str, until: str | None, release: str | None, fmt: str) -> None:
    """Who accessed which release of a holder, how, and what looks unusual (Patient Data Act)."""
    settings = get_settings()
    if holder not in {h.id for h in holders()}:
        raise click.BadParameter(f"unknown holder {holder!r}", param_hint="--holder")
    if not checkpoint_table_exists(settings.governance_url):
        raise click.ClickException("the governance store is not set up: run 'hdp governance upgrade'")
    try:
        with session_scope(settings.governance_url, readonly=True) as session:
            report = build_follow_up_for(
                session,
                [settings.audit_dir / ACCESS_LOG, settings.audit_dir / GOVERNANCE_LOG],
                holder=holder,
                since=since,
                until=until,
                release=release,
                checkpoints=StoreCheckpoints(settings.governance_url),
            )
    except FollowUpError as err:
        raise click.ClickException(str(err)) from None
    if fmt == "json":
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_report(report)
    if not all(log["verified"] for log in report["logs"]):
        sys.exit(2)  # the figures stand on a log that does not verify: say so in the exit status


def print_report(report: dict[str, Any]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    scope = report["holder"] + (f" / {report['release']}" if report["release"] else "")
    console.print(
        f"[bold]Access follow-up {scope}[/bold]  {report['since'][:16]} .. {report['until'][:16]}  "
        f"(office hours {report['office_hours']})"
    )
    for log in report["logs"]:
        state = (
            "[green]verified[/green]"
            if log["verified"]
            else f"[bold red]DOES NOT VERIFY at seq {log['first_bad_seq']}[/bold red]"
        )
        console.print(f"  log {log['log']}: {log['entries']} entries, {state}")

    releases = Table(title="Releases", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("release", "permit", "status", "permit ends", "users on permit"):
        releases.add_column(name)
    for r in report["releases"]:
        releases.add_row(
            r["release_id"],
            str(r["permit_id"]),
            r["status"],
            r["permit_ends"][:10],
            ", ".join(r["users_on_permit"]),
        )
    console.print(releases)

    columns = [
        ("user", "user"),
        ("release", "release_id"),
        ("queries", "queries"),
        ("rows", "rows"),
        ("schema", "schema_views"),
        ("outputs req.", "outputs_requested"),
        ("approved", "outputs_approved"),
        ("downloads", "downloads"),
        ("previews", "previews"),
        ("refused", "refused"),
        ("off-hours", "off_hours"),
        ("after end", "after_permit_end"),
    ]
    activity = Table(
        title="Activity per user and release", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
    )
    for title, key in columns:
        activity.add_column(title, justify="left" if key in ("user", "release_id") else "right")
    flagged = {(f["user"], f["release_id"]) for f in report["findings"]}
    for a in report["activity"]:
        activity.add_row(
            *(str(a[key]) for _, key in columns),
            style="yellow" if (a["user"], a["release_id"]) in flagged else None,
        )
    if not report["activity"]:
        activity.add_row("(no access in the period)", *[""] * (len(columns) - 1))
    console.print(activity)
    t = report["totals"]
    console.print(
        f"{t['users']} users, {t['requests']} requests, {t['queries']} queries, {t['downloads']} downloads, "
        f"{t['outputs_requested']} outputs requested ({t['outputs_approved']} approved), {t['refused']} refused"
        + (
            f"; {t['entries_for_unknown_releases']} entries named a release the store does not know"
            if t["entries_for_unknown_releases"]
            else ""
        )
    )
    if not report["findings"]:
        console.print("[green]Nothing unusual to follow up.[/green]")
        return
    findings = Table(title="To follow up", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("kind", "user", "release", "detail"):
        findings.add_column(name)
    for f in report["findings"]:
        findings.add_row(f["kind"], f["user"], f["release_id"], f["detail"], style="bold")
    console.print(findings)
