"""The ``hdp`` command: one entry point for the platform's main workflows.

Each area contributes its own click group; this module only assembles them, and imports
them lazily so that ``hdp --help`` stays fast (Airflow and Great Expectations import slowly).
"""

from __future__ import annotations

import importlib
import os

import click

from hdp.settings import REPO_ROOT, get_settings

# command name -> ("module:attribute" of a click command or group, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "edge.commands.pipeline:demo",
        "Everything end to end: generate, run the DAGs, approve, release, query.",
    ),
    "federation-demo": (
        "edge.commands.pipeline:federation_demo",
        "The federation on one machine: hub and four nodes as processes, end to end (make demo).",
    ),
    "generate": ("edge.commands.generate:generate", "Generate synthetic deliveries for every data holder."),
    "run": ("edge.commands.pipeline:run", "Run the DAGs through Airflow (ingest, pseudonymise, release)."),
    "status": ("edge.commands.status:status", "Latest pipeline runs and their figures."),
    "airflow-ui": (
        "edge.commands.airflow_ui:airflow_ui",
        "Airflow's UI on this data home's Airflow (or a local federation node's: --node).",
    ),
    "keys": ("edge.commands.identity:keys", "Key store: list keys, rotate the key-encryption key."),
    "reid": ("edge.commands.identity:reid", "Authorised re-identification (two approvals)."),
    "fhir": ("edge.commands.fhir:fhir", "FHIR ingestion, validation and SQL-on-FHIR conformance."),
    "quality": ("edge.commands.quality:quality", "Quality checks, Data Docs and history."),
    "request": ("edge.commands.governance:request", "Extract requests: file, submit, decide, amend, revoke."),
    "consent": ("edge.commands.governance:consent", "Consent and opt-out registry."),
    "user": ("edge.commands.governance:user", "Users, roles and API tokens."),
    "governance": (
        "edge.commands.governance:governance",
        "Store migrations, overdue requests, key figures, transparency.",
    ),
    "serve": ("edge.commands.access:serve", "Serve the access layer (API and web pages)."),
    "query": ("edge.commands.access:query", "Query a release as a researcher."),
    "audit": (
        "edge.commands.access:audit",
        "Verify the keyed audit logs and checkpoints; access follow-up report.",
    ),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS:
            return None
        module_name, attr = SUBCOMMANDS[cmd_name][0].split(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing must not import every area (Airflow and GX take seconds to import).
        with formatter.section("Commands"):
            formatter.write_dl([(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)])


def configure_environment() -> None:
    """Defaults that must be in place before Airflow or Great Expectations is imported."""
    settings = get_settings()
    os.environ.setdefault("AIRFLOW_HOME", str(settings.airflow_home))
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO_ROOT / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def configure_audit() -> None:
    """Key every log under ``$HDP_HOME/audit`` with the audit key from the key store.

    ``hdp.audit`` imports nothing above ``hdp``; this edge names the key source the way it
    names the subcommands. It is light to import, and the key is read on the first append only.
    """
    importlib.import_module("privacy.audit_key").configure()


@click.group(cls=LazyGroup)
def main() -> None:
    """Health-data platform: generate, ingest, pseudonymise, validate, govern, release, query."""
    configure_environment()
    configure_audit()


if __name__ == "__main__":
    main()
