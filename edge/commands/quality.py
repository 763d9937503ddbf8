"""``hdp quality``: the check library, run history (metric drift across runs) and Data Docs."""

from __future__ import annotations

from pathlib import Path

import click

from hdp.settings import get_settings
from pipelines.quality import catalog, store
from pipelines.quality.docs import docs_index
from pipelines.quality.gate import run_gate


@click.group()
def quality() -> None:
    """Quality gate: check library, results history, Data Docs."""


@quality.command("checks")
@click.option(
    "--zone", type=click.Choice(["raw", "research", "release"]), help="Only checks that run in this zone."
)
@click.option("--verbose", "-v", is_flag=True, help="Also print each check's note.")
def checks_cmd(zone: str | None, verbose: bool) -> None:
    """List the check library (schemas/checks)."""
    lib = catalog.library()
    click.echo(f"check library {catalog.library_version()[:12]}: {len(lib)} checks")
    for c in lib:
        if zone and zone not in c.zones:
            continue
        shown = catalog.resolve(c, zone) if zone else c
        limit = f"<={shown.threshold.max_failed_share:.2%}"
        if shown.threshold.max_failed_count is not None:
            limit += f",<={shown.threshold.max_failed_count}"
        q = " quarantine" if shown.quarantine else ""
        click.echo(
            f"{c.id:55s} {shown.severity:8s} {limit:>9s} {c.category}/{c.subcategory:11s} "
            f"{shown.table:24s} {','.join(c.zones)}{q}"
        )
        if verbose:
            click.echo(f"    {c.note}")


@quality.command("history")
@click.option("--check", "check_id", help="Only this check id.")
@click.option("--holder", help="Only this holder (or release id).")
@click.option("--zone", type=click.Choice(["raw", "research", "release"]))
@click.option("--limit", type=int, default=200, show_default=True, help="Most recent rows to show.")
@click.option("--all", "show_all", is_flag=True, help="Show every stored row (overrides --limit).")
def history_cmd(
    check_id: str | None, holder: str | None, zone: str | None, limit: int, show_all: bool
) -> None:
    """Results per run, oldest first, with the change in failed share since the previous run."""
    rows = store.history(get_settings().quality_dir, check_id=check_id, scope=holder, zone=zone)
    if not rows:
        click.echo("no quality results stored yet")
        return
    previous: dict[tuple[str, str, str], float] = {}
    lines = []
    for r in rows:
        key = (r["zone"], r["scope"], r["check_id"])
        share = float(r["failed_share"] or 0.0)
        delta = "" if key not in previous else f"{100 * (share - previous[key]):+.2f}pp"
        previous[key] = share
        lines.append(
            f"{r['started_at'][:19]}  {r['run_id'][:40]:40s} {r['zone']:8s} {r['scope'][:16]:16s} "
            f"{r['check_id'][:50]:50s} {r['verdict']:7s} {r['failed_rows']:>9d}/{r['total_rows']:<10d} "
            f"{100 * share:7.3f}% {delta}"
        )
    click.echo(
        f"{'started':19s}  {'run':40s} {'zone':8s} {'scope':16s} {'check':50s} {'verdict':7s} "
        f"{'failed/total':>20s} {'share':>8s} change"
    )
    shown = lines if show_all or limit >= len(lines) else lines[-limit:] if limit > 0 else []
    for line in shown:
        click.echo(line)
    if len(shown) < len(lines):
        # Never cut silently: say how much is left out and how to see it.
        click.echo(
            f"showing the {len(shown)} most recent of {len(lines)} rows; see more with --limit N or --all, "
            "or narrow with --check, --holder, --zone"
        )


@quality.command("docs")
@click.argument("run_id")
def docs_cmd(run_id: str) -> None:
    """Print the path of a run's Data Docs (index.html)."""
    path = docs_index(get_settings().quality_dir, run_id)
    if not path.exists():
        raise click.ClickException(f"no Data Docs for run {run_id!r} (looked for {path})")
    click.echo(str(path))


@quality.command("gate")
@click.argument("zone", type=click.Choice(["raw", "research", "release"]))
@click.option("--holder", help="Holder id (raw, research).")
@click.option(
    "--release-dir", type=click.Path(path_type=Path, file_okay=False), help="Release directory (release)."
)
@click.option("--run-id", required=True, help="Run id to file the results and Data Docs under.")
def gate_cmd(zone: str, holder: str | None, release_dir: Path | None, run_id: str) -> None:
    """Run the quality gate by hand; exits 1 when a blocking check fails."""
    result = run_gate(zone, holder_id=holder, release_dir=release_dir, run_id=run_id)
    for c in result.checks:
        if c.verdict != "pass":
            click.echo(c.describe())
    counts = result.counts()
    click.echo(
        f"{zone}/{result.scope}: {'passed' if result.passed else 'BLOCKED'} "
        f"(pass {counts['pass']}, warn {counts['warn']}, fail {counts['fail']}, "
        f"skipped {counts['skipped']}, error {counts['error']}); Data Docs: {result.docs_path}"
    )
    if not result.passed:
        raise SystemExit(1)
