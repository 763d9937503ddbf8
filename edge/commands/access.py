"""CLI: ``hdp serve``, ``hdp query``, ``hdp audit verify|report``.

Three imports wait for the command that needs them: uvicorn (only ``serve``), the HTTP client
(``query`` against a server) and the in-process access engine with its DuckDB, SQLAlchemy and
sqlglot (``query --in-process``, and the access log's file name for ``audit report``).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from access.errors import Refusal
from edge.commands.followup import follow_up
from governance import store
from governance.auditing import StoreCheckpoints, checkpoint_table_exists
from hdp.audit import AuditLog, KeyRing, build_report, render_report
from hdp.settings import get_settings
from privacy.audit_key import key_ring
from privacy.keys import KeyStoreError


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers",
    default=lambda: get_settings().access_workers,
    show_default="2",
    type=int,
    help="uvicorn worker processes (each keeps its own release engines and memory); "
    "2 on the 2-core reference machine halves p50 under 20 researchers (bench/bench_access.py)",
)
def serve(host: str, port: int, workers: int) -> None:
    """Serve the access layer (FastAPI on uvicorn)."""
    import uvicorn

    store.upgrade(get_settings().governance_url)  # idempotent; a fresh data home works at once
    if workers > 1:  # every worker counts what it serves; any worker's /metrics sums them all
        from access.metrics import prepare_multiprocess_dir

        prepare_multiprocess_dir(get_settings().home / "monitoring" / "prometheus")

    uvicorn.run(
        "access.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )  # uvicorn's access log would hold URLs only,
    # but the audit log is the record of access; keep one.


@click.command()
@click.option("--release", "-r", required=True, help="release id")
@click.option("--token", "-t", envvar="HDP_TOKEN", required=True, help="API token (or $HDP_TOKEN)")
@click.option("--url", envvar="HDP_URL", default="http://127.0.0.1:8000", show_default=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "arrow", "parquet"]),
    default="csv",
    show_default=True,
)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="write to a file")
@click.option("--in-process", is_flag=True, help="run in this process against $HDP_HOME, no server")
@click.argument("sql")
def query(
    release: str, token: str, url: str, fmt: str, output: Path | None, in_process: bool, sql: str
) -> None:
    """Run SQL against a release you hold a permit for."""
    if in_process:
        from access.governance_adapter import ServiceGovernance
        from access.service import AccessService, AccessSettings, QueryResult

        svc = AccessService(AccessSettings.from_env(), ServiceGovernance(get_settings().governance_url))
        try:
            user = svc.authenticate(token, endpoint="cli")
            result = svc.query(user, release, sql, fmt)
            assert isinstance(result, QueryResult)  # only a query with stream=True is streamed
            body = result.body
        except Refusal as r:
            raise click.ClickException(f"refused ({r.reason}): {r.message}") from None
        finally:
            svc.close()
    else:
        from access.client import AccessError, Client, ClientError

        with Client(url, token) as c:
            try:
                body = c.raw(sql, release=release, format=fmt).content
            except AccessError as e:
                raise click.ClickException(f"refused ({e.reason}): {e.message}") from None
            except ClientError as e:  # unreachable: one line, no traceback
                raise click.ClickException(str(e)) from None
    if output:
        output.write_bytes(body)
        click.echo(f"wrote {len(body)} bytes to {output}", err=True)
    elif fmt in ("arrow", "parquet"):
        raise click.UsageError("binary formats need --output")
    else:
        sys.stdout.write(body.decode())


def _audit_paths(path: Path | None) -> list[Path]:
    if path:
        return [path]
    return sorted(get_settings().audit_dir.glob("*.jsonl"))


@click.group()
def audit() -> None:
    """Verify the keyed audit logs against their anchors and checkpoints; report unusual access."""


audit.add_command(follow_up)  # hdp audit follow-up: per holder (edge/commands/followup.py)


def _audit_backends(no_checkpoints: bool) -> tuple[KeyRing, StoreCheckpoints | None]:
    """The data home's audit key ring and checkpoint store (None: checked without)."""
    settings = get_settings()
    try:
        ring = key_ring(settings)
    except KeyStoreError as err:
        raise click.ClickException(f"the audit key cannot be read: {err}") from None
    if no_checkpoints:
        click.echo("note: not compared with the governance store's checkpoints (--no-checkpoints)", err=True)
        return ring, None
    if not checkpoint_table_exists(settings.governance_url):
        raise click.ClickException(
            "the governance store has no audit checkpoints table: run 'hdp governance "
            "upgrade' (or pass --no-checkpoints to check against the anchors only)"
        )
    return ring, StoreCheckpoints(settings.governance_url)


_NO_CHECKPOINTS = click.option(
    "--no-checkpoints", is_flag=True, help="do not compare with the governance store's checkpoints"
)


@audit.command()
@click.option("--path", type=click.Path(dir_okay=False, path_type=Path), help="one log (default: every log)")
@_NO_CHECKPOINTS
def verify(path: Path | None, no_checkpoints: bool) -> None:
    """Check every entry's keyed hash, link and sequence, the keyed anchor and the checkpoints."""
    ring, checkpoints = _audit_backends(no_checkpoints)
    paths = _audit_paths(path)
    if path is None and checkpoints is not None:  # a log deleted from the folder still counts
        audit_dir = get_settings().audit_dir
        paths = sorted({*paths, *(audit_dir / name for name in checkpoints.log_ids())})
    if not paths:
        click.echo("no audit logs found")
        return
    bad = 0
    for p in paths:
        r = AuditLog(p, key=ring, checkpoints=checkpoints).verify()
        if r.ok:
            click.echo(f"OK    {p.name}: {r.entries} entries, keyed, {r.checkpoints} checkpoints agree")
        else:
            bad += 1
            click.echo(
                f"FAIL  {p.name}: first bad entry seq {r.first_bad_seq}: {r.reason} "
                f"({r.entries} entries verified before it)"
            )
    if bad:
        sys.exit(1)


@audit.command()
@click.option("--path", type=click.Path(dir_okay=False, path_type=Path), help="one log (default: every log)")
@_NO_CHECKPOINTS
def seal(path: Path | None, no_checkpoints: bool) -> None:
    """Key the head of logs written before audit keys (once their plain chain checks out).

    The seal is a keyed entry; its keyed hash covers the link to the entries before it, so
    from then on they cannot be re-chained either.
    """
    ring, checkpoints = _audit_backends(no_checkpoints)
    bad = 0
    for p in _audit_paths(path):
        log = AuditLog(p, key=ring, checkpoints=checkpoints)
        if log.verify().ok:
            click.echo(f"keyed {p.name}: nothing to seal")
            continue
        plain = AuditLog(p, key=None).verify()
        if not plain.ok:
            bad += 1
            click.echo(
                f"FAIL  {p.name}: not sealed, its chain is broken at seq {plain.first_bad_seq}: {plain.reason}"
            )
            continue
        entry = log.append({"event": "audit.sealed", "sealed_entries": plain.entries})
        log.close()
        click.echo(f"sealed {p.name}: {plain.entries} entries, seal at seq {entry['seq']}")
    if bad:
        sys.exit(1)


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    dt = datetime.fromisoformat(value)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@audit.command()
@click.option("--path", type=click.Path(dir_okay=False, path_type=Path), help="log (default: access.jsonl)")
@click.option("--since", help="ISO date/time")
@click.option("--until", help="ISO date/time")
@click.option("--json", "as_json", is_flag=True)
def report(path: Path | None, since: str | None, until: str | None, as_json: bool) -> None:
    """Follow-up of access (Patient Data Act): per-user volume, time of day, refusals."""
    if path is None:
        from access.service import AUDIT_FILE

        path = get_settings().audit_dir / AUDIT_FILE
    rep = build_report(AuditLog(path).entries(), since=_when(since), until=_when(until))
    click.echo(json.dumps(rep, indent=2) if as_json else render_report(rep))


__all__ = ["serve", "query", "audit"]
