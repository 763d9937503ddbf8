"""The ``hdp`` command: one entry point for the platform's main workflows.

Each area contributes its own click group; this module only assembles them, and imports
them lazily so that ``hdp --help`` stays fast (Airflow and Great Expectations import slowly).
"""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" of a click command or group
SUBCOMMANDS: dict[str, str] = {
    "generate": "synthetic_data.cli:generate",
    "run": "pipelines.cli:run",
    "demo": "pipelines.cli:demo",
    "keys": "pipelines.identity.cli:keys",
    "reid": "pipelines.identity.cli:reid",
    "fhir": "pipelines.fhir.cli:fhir",
    "quality": "pipelines.quality.cli:quality",
    "request": "governance.cli:request",
    "consent": "governance.cli:consent",
    "user": "governance.cli:user",
    "governance": "governance.cli:governance",
    "serve": "access.cli:serve",
    "query": "access.cli:query",
    "audit": "access.cli:audit",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup)
def main() -> None:
    """Health-data platform: generate, ingest, pseudonymise, validate, govern, release, query."""
