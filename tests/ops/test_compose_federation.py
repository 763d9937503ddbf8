"""docker-compose.yml's federation stacks: a hub stack and a node stack, the number of nodes set by
env files alone (one per holder), rendered with ``docker-compose config`` from the example env files
exactly as an operator fills them in."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hdp.settings import REPO_ROOT, SettingsError, load_settings

COMPOSE = REPO_ROOT / "docker-compose.yml"
DEPLOY = REPO_ROOT / "deploy"
STACKS = ("single", "hub", "node")
SINGLE_SERVICES = {
    "postgres",
    "redis",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "access-api",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|_KEY$|KEK", re.I)
#: The hub's env file gives the Airflow stacks' required variables this value (compose substitutes
#: every service's variables, whatever the profile); no hub container may ever receive it.
UNUSED_AT_THE_HUB = "unused-by-the-hub"
HOLDERS = ("ndr", "region_skane")


# -- env files, as an operator fills them in ------------------------------------------------------
def _read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    return env


def _write_env(path: Path, env: Mapping[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()), encoding="utf-8")
    return path


def _filled(example: str, party: str, host_dir: Path, **overrides: str) -> dict[str, str]:
    """The example's placeholders replaced by values of this party only, and its host files created
    (KEK, Airflow UI passwords, the hub's identity) under ``host_dir``, as on the party's host."""
    env = _read_env(DEPLOY / example)
    env = {k: (f"{party}-{k.lower()}" if v.startswith("<") else v) for k, v in env.items()}
    host_dir.mkdir(parents=True, exist_ok=True)
    for name in ("HDP_KEK_FILE_HOST", "AIRFLOW_UI_PASSWORDS_FILE_HOST", "HDP_HUB_IDENTITY_FILE_HOST"):
        if name in env and env[name] != "/dev/null":
            file = host_dir / Path(env[name]).name
            file.write_text("{}")
            env[name] = str(file)
    return env | overrides


def _node_env(tmp_path: Path, holder: str) -> dict[str, str]:
    """A holder's env file: the node example with the holder and its project name set; nothing else
    of the compose configuration changes from one holder to the next."""
    return _filled(
        "node.env.example",
        f"node-{holder}",
        tmp_path / "hosts" / f"node-{holder}",
        HDP_NODE_HOLDER=holder,
        COMPOSE_PROJECT_NAME=f"hdp-node-{holder}",
    )


# -- rendering ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stack:
    """One rendered deployment: the services its profile selects, and the file's top level."""

    env: dict[str, str]
    services: dict[str, dict[str, Any]]
    doc: dict[str, Any]

    def environment(self, service: str) -> dict[str, str]:
        return {k: str(v) for k, v in (self.services[service].get("environment") or {}).items()}

    def secrets(self, service: str) -> set[str]:
        return {
            s["source"] if isinstance(s, dict) else s for s in self.services[service].get("secrets") or []
        }

    def volume_names(self, service: str) -> set[str]:
        """Named volumes the service mounts (bind mounts excluded)."""
        names = set()
        for v in self.services[service].get("volumes") or []:
            source = v.get("source", "") if isinstance(v, dict) else v.split(":")[0]
            if source in (self.doc.get("volumes") or {}):
                names.add(source)
        return names

    def bind_sources(self, service: str) -> dict[str, str]:
        """target -> host source of the service's bind mounts."""
        out = {}
        for v in self.services[service].get("volumes") or []:
            if isinstance(v, dict):
                if v.get("type") == "bind":
                    out[v["target"]] = v["source"]
            elif v.split(":")[0] not in (self.doc.get("volumes") or {}):
                out[v.split(":")[1]] = v.split(":")[0]
        return out

    def secret_file(self, name: str) -> str:
        return str(self.doc["secrets"][name]["file"])


def _compose_config(env_file: Path) -> dict[str, Any]:
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    result = subprocess.run(
        [shutil.which("docker-compose") or "docker-compose", "-f", str(COMPOSE)]
        + ["--project-directory", str(REPO_ROOT), "--env-file", str(env_file), "config"],
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return dict(yaml.safe_load(result.stdout))


_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _interpolated(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's substitution (``$$``, ``${X}``, ``${X:-default}``, ``${X:?error}``), for machines
    without docker-compose: the same variables are required and the same defaults apply."""
    if isinstance(value, dict):
        return {k: _interpolated(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolated(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.groups()
        present = env.get(name, "") != "" if operator and operator.startswith(":") else name in env
        if present:
            return env[name]
        if operator and operator.endswith("?"):
            raise AssertionError(f"required variable {name} is missing a value: {argument}")
        return argument if operator else ""

    return _VARIABLE.sub(substitute, value)


def _render(tmp_path: Path, env: dict[str, str]) -> Stack:
    """``docker-compose config`` with the env file, then the services its profile selects. Compose
    1.29 (Debian's, CI's) prints every service whatever the profile; Compose v2 prints only the
    selected ones: filtering by COMPOSE_PROFILES gives the same set from both."""
    env_file = _write_env(tmp_path / "envs" / f"{env.get('COMPOSE_PROJECT_NAME', 'single')}.env", env)
    if shutil.which("docker-compose"):
        doc = _compose_config(env_file)
    elif os.environ.get("CI"):
        pytest.fail("docker-compose is not installed (CI installs Debian's docker-compose)")
    else:  # no compose here: the file itself, substituted as compose would
        doc = _interpolated(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")), env)
    active = set(env.get("COMPOSE_PROFILES", "").split(",")) - {""}
    services = {
        name: service
        for name, service in doc["services"].items()
        if not service.get("profiles") or active & set(service["profiles"])
    }
    return Stack(env=env, services=services, doc=doc)


@pytest.fixture
def hub(tmp_path: Path) -> Stack:
    return _render(tmp_path, _filled("hub.env.example", "hub", tmp_path / "hosts" / "hub"))


@pytest.fixture
def nodes(tmp_path: Path) -> dict[str, Stack]:
    return {holder: _render(tmp_path, _node_env(tmp_path, holder)) for holder in HOLDERS}


def _hdp_services(stack: Stack) -> list[str]:
    """Services running the platform's image (not Postgres or Redis)."""
    return [n for n, s in stack.services.items() if not str(s["image"]).startswith(("postgres:", "redis:"))]


def _published_ports(stack: Stack) -> dict[str, list[Any]]:
    return {name: list(s.get("ports") or []) for name, s in stack.services.items() if s.get("ports")}


# -- the file -------------------------------------------------------------------------------------
def test_every_service_belongs_to_a_stack_so_that_no_stack_starts_another_stacks_services():
    services = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    for name, service in services.items():
        assert service.get("profiles") and set(service["profiles"]) <= set(STACKS), name
    hub_services = {n for n, s in services.items() if "hub" in s["profiles"]}
    assert hub_services == {"hub", "hub-postgres"}  # nothing of a data home or of Airflow
    for name in hub_services:
        assert services[name]["profiles"] == ["hub"], name


def test_the_single_home_env_selects_exactly_todays_production_shape(tmp_path):
    env = _filled("hdp.env.example", "single", tmp_path / "hosts" / "single")
    assert env["COMPOSE_PROFILES"] == "single"
    single = _render(tmp_path, env)
    assert set(single.services) == SINGLE_SERVICES
    for name in _hdp_services(single):
        e = single.environment(name)
        assert "HDP_FEDERATION_ROLE" not in e and "HDP_NODE_HOLDER" not in e  # the default role: single
    # the access layer's audit and web-session keys are wrapped under the KEK, so it holds it too
    assert single.secrets("airflow-worker") >= {"hdp_kek"} and single.secrets("access-api") == {"hdp_kek"}
    assert set(_published_ports(single)) == {"airflow-apiserver", "access-api"}


# -- the hub --------------------------------------------------------------------------------------
def test_the_hub_stack_serves_the_hub_behind_the_access_port_with_its_own_database_and_volume(hub):
    assert set(hub.services) == {"hub", "hub-postgres"}
    service = hub.services["hub"]
    command = service["command"]
    assert command[:2] == ["hdp-hub", "serve"] and command[command.index("--host") + 1] == "0.0.0.0"
    port = command[command.index("--port") + 1]
    (published,) = _published_ports(hub)["hub"]
    target = published["target"] if isinstance(published, dict) else str(published).split(":")[-1]
    assert str(target) == port  # the access port reaches the hub's listener

    e = hub.environment("hub")
    assert e["HDP_FEDERATION_ROLE"] == "hub" and e["HDP_HUB_URL"] == hub.env["HDP_HUB_URL"]
    assert "@hub-postgres:5432/" in e["HDP_GOVERNANCE_URL"] and "@hub-postgres:5432/" in e["HDP_METRICS_URL"]
    settings = load_settings(e)
    assert settings.federation_role == "hub" and settings.private_zone_name == "secure"
    assert settings.node_holder is None and settings.is_production
    assert hub.volume_names("hub") == {"hub-data"} and hub.volume_names("hub-postgres") == {
        "hub-postgres-data"
    }
    assert service["depends_on"].keys() <= hub.services.keys()
    # the hub's Postgres creates no Airflow role: it is never given the Airflow password
    assert "AIRFLOW_DB_PASSWORD" not in hub.environment("hub-postgres")


def test_the_hub_holds_only_its_own_kek_and_nothing_of_airflow_or_a_node(hub, nodes):
    assert hub.secrets("hub") == {"hdp_kek"} and hub.secrets("hub-postgres") == set()
    hub_kek = hub.secret_file("hdp_kek")
    assert hub_kek == hub.env["HDP_KEK_FILE_HOST"]
    assert hub_kek not in {node.secret_file("hdp_kek") for node in nodes.values()}
    for name in hub.services:
        e = hub.environment(name)
        assert not any(k.startswith("AIRFLOW__") for k in e), name
        assert "HDP_NODE_HOLDER" not in e and "HDP_HUB_IDENTITY" not in e, name
        # the Airflow values the hub's env file gives only to satisfy compose reach no hub container
        assert UNUSED_AT_THE_HUB not in json.dumps(hub.services[name]), name
    node_volumes = {v for node in nodes.values() for n in node.services for v in node.volume_names(n)}
    assert not node_volumes & {v for n in hub.services for v in hub.volume_names(n)}


# -- the nodes ------------------------------------------------------------------------------------
def test_each_holders_env_file_renders_its_own_node_from_the_same_file(nodes):
    ndr, skane = nodes["ndr"], nodes["region_skane"]
    assert set(ndr.services) == set(skane.services)  # a second holder: a second env file, no YAML edit
    assert {"node-agent", "node-airflow-scheduler", "node-airflow-worker", "postgres", "redis"} <= set(
        ndr.services
    )
    assert not set(ndr.services) & {"hub", "hub-postgres", "access-api", "airflow-scheduler"}
    for holder, node in nodes.items():
        assert node.env["COMPOSE_PROFILES"] == "node"
        for name in _hdp_services(node):
            e = node.environment(name)
            assert e["HDP_FEDERATION_ROLE"] == "node" and e["HDP_NODE_HOLDER"] == holder, name
            settings = load_settings(e)
            assert settings.node_holder == holder and settings.private_zone_name == "restricted"
            assert "@postgres:5432/" in e["HDP_GOVERNANCE_URL"], name
            for dependency in node.services[name].get("depends_on") or {}:
                assert dependency in node.services, (name, dependency)
        for name in _hdp_services(node):
            if name != "node-agent":
                e = node.environment(name)
                assert e["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
                assert (
                    e["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
                    == "http://node-airflow-apiserver:8080/execution/"
                )
                assert e["AIRFLOW__CELERY__BROKER_URL"].endswith("@redis:6379/0")


def test_a_node_publishes_no_port_and_its_agent_connects_out_to_the_hub(nodes):
    for node in nodes.values():
        assert _published_ports(node) == {}
        agent = node.services["node-agent"]
        assert agent["command"] == ["hdp-node", "run"]
        e = node.environment("node-agent")
        assert e["HDP_HUB_URL"] == node.env["HDP_HUB_URL"]
        assert (
            node.bind_sources("node-agent")[e["HDP_HUB_IDENTITY"]] == node.env["HDP_HUB_IDENTITY_FILE_HOST"]
        )


def test_each_node_has_its_own_kek_project_and_volumes(nodes):
    ndr, skane = nodes["ndr"], nodes["region_skane"]
    for node in nodes.values():
        holding_kek = {name for name in node.services if "hdp_kek" in node.secrets(name)}
        assert holding_kek == {"node-agent", "node-airflow-worker"}  # they pseudonymise and sign
        for name in holding_kek:
            assert node.environment(name)["HDP_KEK_FILE"] == "/run/secrets/hdp_kek"
        assert node.secret_file("hdp_kek") == node.env["HDP_KEK_FILE_HOST"]
    assert ndr.secret_file("hdp_kek") != skane.secret_file("hdp_kek")
    assert ndr.env["COMPOSE_PROJECT_NAME"] != skane.env["COMPOSE_PROJECT_NAME"]
    # Every volume is the project's own: compose prefixes it with the project name unless the
    # file pins a name or an external volume, which would let two nodes share a data home.
    for node in nodes.values():
        project = node.env["COMPOSE_PROJECT_NAME"]
        used = {v for n in node.services for v in node.volume_names(n)}
        assert used == {"postgres-data", "hdp-data", "airflow-logs"}
        for volume in used:
            declared = node.doc["volumes"][volume] or {}
            assert not declared.get("external"), volume
            assert declared.get("name", f"{project}_{volume}") == f"{project}_{volume}", volume
        if "name" in node.doc:  # Compose v2 prints the project name it took from the env file
            assert node.doc["name"] == project


def test_a_node_env_without_its_holder_is_refused_naming_the_variable(tmp_path):
    env = _node_env(tmp_path, "ndr")
    del env["HDP_NODE_HOLDER"]
    node = _render(tmp_path, env)
    # node-airflow-init reads the settings first; the rest of the stack waits for it to succeed
    with pytest.raises(SettingsError, match="HDP_NODE_HOLDER"):
        load_settings(node.environment("node-airflow-init"))
    for name in _hdp_services(node):
        if name != "node-airflow-init":
            assert node.services[name]["depends_on"]["node-airflow-init"]["condition"] == (
                "service_completed_successfully"
            )


# -- example env files and the image ----------------------------------------------------------------
def test_the_example_env_files_hold_no_secret():
    for example in ("node.env.example", "hub.env.example"):
        for name, value in _read_env(DEPLOY / example).items():
            if SECRET_NAME.search(name) and not name.endswith("_HOST"):
                if example == "hub.env.example" and name.startswith(("AIRFLOW_", "REDIS_")):
                    assert value == UNUSED_AT_THE_HUB, name
                else:
                    assert value.startswith("<"), f"{name} in {example} must be a placeholder"


def test_the_image_holds_every_package_the_hub_and_the_nodes_run():
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.MULTILINE))
    assert packages <= copied, f"deploy/Dockerfile does not copy {sorted(packages - copied)}"
    scripts = pyproject["project"]["scripts"]
    assert {"hdp-hub", "hdp-node"} <= scripts.keys()
