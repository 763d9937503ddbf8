"""``hdp-node``: run a data holder's node agent, show its public identity."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from types import FrameType

import click

from federation.identity import PartyKeys, node_party
from governance import store
from hdp.settings import Settings, get_settings
from privacy.audit_key import configure as configure_audit_key


def _node_settings() -> Settings:
    settings = get_settings()
    if settings.federation_role != "node" or settings.node_holder is None:
        raise click.UsageError(
            "set HDP_FEDERATION_ROLE=node and HDP_NODE_HOLDER (and HDP_HOME to the node's data home)"
        )
    return settings


@click.group()
def main() -> None:
    """A data holder's node in the federation."""


@main.command()
def run() -> None:
    """Connect out to the hub and act on what it routes here, until stopped (SIGTERM/SIGINT)."""
    from node.agent import Node

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = _node_settings()
    configure_audit_key()
    store.upgrade(settings.governance_url)
    node = Node(settings)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        # Out of the long poll (or a part build) at once: every task is acted on again after a
        # restart unless it was marked done, so stopping half-way loses nothing.
        node.stopping.set()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    node.run_forever()


@main.command()
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="write the JSON to a file"
)
def identity(output: Path | None) -> None:
    """Print this node's public identity (for the hub's operator: `hdp-hub register-node`)."""
    settings = _node_settings()
    assert settings.node_holder is not None
    doc = json.dumps(PartyKeys.load(node_party(settings.node_holder), settings).public.to_json(), indent=2)
    if output:
        output.write_text(doc + "\n", encoding="utf-8")
    click.echo(doc)


@main.command("key-figures-guard")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def key_figures_guard(fmt: str) -> None:
    """Show the PROM key figures' differencing guard: open or closed (and why), and per year how
    many versions of each cell family this node has published. Exit status 2 when the guard or a
    year is closed (its cells go out withheld): restore both guard files from the same backup."""
    import sys

    from pipelines.outcomes.differencing import NOT_STARTED, guard_status

    settings = _node_settings()
    assert settings.node_holder is not None
    status = guard_status(settings.restricted / "federation", settings.node_holder)
    if fmt == "json":
        click.echo(json.dumps(status, indent=2))
    else:
        state = "open" if status["open"] else f"closed ({status['reason']})"
        click.echo(f"key figures guard of {status['holder']}: {state}")
        for p in status["periods"]:
            if not p["verified"]:
                click.echo(f"  {p['period']}: withheld ({p['reason']})")
                continue
            versions = ", ".join(
                f"{name} {f['versions']}" + (" (no more versions)" if f["full"] else "")
                for name, f in p["families"].items()
            )
            click.echo(f"  {p['period']}: versions published: {versions}")
    closed = not status["open"] and status["reason"] != NOT_STARTED
    if closed or not all(p["verified"] for p in status["periods"]):
        sys.exit(2)


@main.command("opt-out")
@click.option("--personnummer", required=True, help="'-' reads it from stdin (keeps it out of shell history)")
@click.option(
    "--source", "source_ref", required=True, help="Source document reference (form id, 1177 case, ...)"
)
@click.option("--purpose", "scope", default="secondary_use", show_default=True)
def opt_out(personnummer: str, source_ref: str, scope: str) -> None:
    """Record a person's opt-out here and send it, sealed, to every other node."""
    import sys

    from node.agent import Node

    settings = _node_settings()
    configure_audit_key()
    if personnummer == "-":
        personnummer = sys.stdin.readline().strip()
    reached = Node(settings).opt_out(personnummer, scope=scope, source_ref=source_ref)
    click.echo(f"opt-out recorded here and sent to {len(reached)} other node(s)")
