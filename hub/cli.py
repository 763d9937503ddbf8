"""``hdp-hub``: run the hub, show its public identity, register a node's."""

from __future__ import annotations

import json
from pathlib import Path

import click

from federation.identity import HUB, PartyKeys, PublicIdentity
from governance import store
from hdp.settings import Settings, SettingsError, get_settings


def _hub_settings() -> Settings:
    settings = get_settings()
    if settings.federation_role != "hub":
        raise click.UsageError("set HDP_FEDERATION_ROLE=hub (and HDP_HOME to the hub's data home)")
    return settings


@click.group()
def main() -> None:
    """The federation's hub (health data access body)."""


#: seconds a stopping hub gives the requests still running (uploads of parts included)
GRACEFUL_SHUTDOWN_S = 10


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8700, show_default=True)
def serve(host: str, port: int) -> None:
    """Serve the hub: the access layer, the catalogue and the nodes' federation endpoints."""
    import uvicorn

    settings = _hub_settings()
    store.upgrade(settings.governance_url)
    # one worker: a node's long poll and what wakes it meet in one event loop (hub/app.py)
    uvicorn.run(
        "hub.app:create_hub_app",
        factory=True,
        host=host,
        port=port,
        workers=1,
        log_level="warning",
        access_log=False,
        # on SIGTERM, requests still running after this many seconds are cut off: a node's long
        # poll holds nothing that is lost (its messages stay queued until acknowledged), and an
        # operator stopping the hub should not wait out every open poll
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )


@main.command()
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="write the JSON to a file"
)
def identity(output: Path | None) -> None:
    """Print the hub's public identity (give it to each node's operator; compare the fingerprint)."""
    settings = _hub_settings()
    doc = json.dumps(PartyKeys.load(HUB, settings).public.to_json(), indent=2)
    if output:
        output.write_text(doc + "\n", encoding="utf-8")
    click.echo(doc)


@main.command("register-node")
@click.argument("identity_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def register_node(identity_file: Path) -> None:
    """Register a node's public identity (from `hdp-node identity`), received out of band."""
    from hub.coordinator import Hub

    settings = _hub_settings()
    store.upgrade(settings.governance_url)
    try:
        node = PublicIdentity.read(identity_file)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if node.party == HUB:
        raise SettingsError("that is the hub's own identity")
    Hub(settings).register_node(node)
    click.echo(f"registered {node.party} ({node.fingerprint})")
