"""``hdp airflow-ui``: Airflow's UI (``airflow standalone``) on a data home's own Airflow.

``airflow standalone`` starts its scheduler, DAG processor, triggerer and API server as
``airflow …`` subprocesses found on ``PATH``, so the virtual environment's ``bin`` must be on it
(a bare ``.venv/bin/airflow standalone`` dies with ``FileNotFoundError: 'airflow'``); and it must
see the platform's DAGs (``AIRFLOW__CORE__DAGS_FOLDER``) and the same ``AIRFLOW_HOME`` the DAG
runs wrote their metadata and task logs to. This command builds that environment and replaces
itself with Airflow.

For the local federation ``make demo`` leaves (``$HDP_HOME/nodes/<holder>/``), ``--node`` picks
whose Airflow: each node has its own, with the node's own environment (role, holder, KEK).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from edge.federation_local import HUB_PORT, LocalFederation
from hdp.settings import REPO_ROOT, get_settings

#: the file where Airflow's simple auth manager writes the generated admin password
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"


def venv_bin() -> Path:
    """The directory of this interpreter's executables (``.venv/bin``): ``airflow`` lives there."""
    return Path(sys.executable).parent


def local_federation(home: Path, kek_dir: Path) -> LocalFederation:
    """The federation ``make demo`` lays out under ``home`` (same KEK root as ``hdp federation-demo``)."""
    return LocalFederation(home, kek_root=kek_dir / "federation", port=HUB_PORT)


def node_ids(home: Path) -> list[str]:
    nodes = home / "nodes"
    return sorted(p.name for p in nodes.iterdir() if p.is_dir()) if nodes.is_dir() else []


def airflow_environment(
    *, node: str | None, host: str, port: int, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment ``airflow standalone`` needs for this data home (or one node of its federation)."""
    settings = get_settings()
    base = dict(os.environ if base is None else base)
    if node:
        if node not in node_ids(settings.home):
            known = ", ".join(node_ids(settings.home)) or "none"
            raise click.UsageError(f"no node {node!r} under {settings.home / 'nodes'} (nodes: {known})")
        env = local_federation(settings.home, settings.kek_dir).env(node)
    else:
        if not settings.airflow_home.exists() and node_ids(settings.home):
            raise click.UsageError(
                f"{settings.home} holds a local federation: each node has its own Airflow; "
                f"choose one with --node NAME or make airflow NODE=NAME ({', '.join(node_ids(settings.home))})"
            )
        env = base | {"AIRFLOW_HOME": str(settings.airflow_home)}
    return env | {
        "PATH": os.pathsep.join([str(venv_bin()), *filter(None, [env.get("PATH", "")])]),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API__HOST": host,
        "AIRFLOW__API__PORT": str(port),
        "GX_ANALYTICS_ENABLED": "false",
    }


@click.command("airflow-ui")
@click.option("--node", default=None, help="Which node of the local federation (make demo): e.g. ndr.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface the UI listens on.")
@click.option("--port", default=8080, show_default=True, help="Port of the UI (Airflow's API server).")
@click.option(
    "--print-env", is_flag=True, help="Only print the environment (shell assignments) and the command."
)
def airflow_ui(node: str | None, host: str, port: int, print_env: bool) -> None:
    """Start Airflow's UI (airflow standalone) with this data home's AIRFLOW_HOME and the platform's DAGs."""
    env = airflow_environment(node=node, host=host, port=port)
    command = [str(venv_bin() / "airflow"), "standalone"]
    keys = sorted(k for k in env if k.startswith(("AIRFLOW", "HDP_", "GX_")) or k == "PATH")
    if print_env:
        for key in keys:
            click.echo(f"{key}={env[key]}")
        click.echo(" ".join(command))
        return
    airflow_home = Path(env["AIRFLOW_HOME"])
    click.echo(
        f"Airflow UI for {airflow_home}: http://{host}:{port}/ (sign in as admin; the password is in "
        f"{airflow_home / PASSWORDS_FILE} once Airflow has started). Stop with Ctrl+C.",
        err=True,
    )
    os.execve(command[0], command, env)
