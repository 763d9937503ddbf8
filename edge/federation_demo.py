"""``make demo``: the federation on one machine, told step by step.

The hub and four nodes run as separate processes, each with its own data home under ``$HDP_HOME``
(``hub/``, ``nodes/<holder>/``) and its own key-encryption key (outside every data home). The
story:

1. one synthetic population; each holder receives its own delivery at its own node;
2. each node runs its own ingest and pseudonymisation DAGs through its own Airflow;
3. the hub and the nodes start; the operators exchange public identities (enrolment);
4. a researcher files two applications at the hub: record level across three holders, aggregate
   only across all four;
5. each node's stewards decide at their own node (Örebro's node requires two);
6. the hub issues the permits; the nodes share each project key among themselves, build their
   parts and deliver them; the secure environment assembles the record-level release;
7. the researcher queries the release in the secure environment, and asks a federated
   aggregate question that every node holding its table answers under its own thresholds (the
   register NDR holds no FHIR patient table: the answer names it as left out, not as a gap);
8. everything is stopped; tables show each node's pipeline figures (rows, quarantine by reason,
   quality gate), the approvals per steward and the releases; the last lines say where the logs
   and the (owner-only) credentials file are, and how to start each part again.

Only the story reaches the console: what the parties print (Airflow, Great Expectations, the hub
and the node agents) goes to ``$HDP_HOME/logs/<party>.log``; tokens go to the credentials file.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from edge.demo import (
    AGGREGATE_REQUEST,
    CREDENTIALS_FILE,
    DEMO_REQUEST,
    RESEARCHER,
    STEWARDS,
    write_credentials,
)
from edge.federation_local import BIN, HUB_PORT, LocalFederation, free_port, port_is_free

FEDERATED_AGGREGATE = {
    **AGGREGATE_REQUEST,
    "holders": ["ndr", "region_uppsala", "region_orebro", "region_skane"],
}
FEDERATED_QUERY = "SELECT sex, count(*) AS patients FROM patient GROUP BY sex ORDER BY sex"
LINKED_QUERY = (
    "SELECT r.diabetes_type, count(DISTINCT r.person_id) AS persons, round(avg(r.hba1c_mmol_mol), 1) AS mean_hba1c "
    "FROM register_visit r GROUP BY r.diabetes_type ORDER BY persons DESC"
)
WHY = "Ethics approval and variable list match the purpose; data minimised."


#: the demo's synthetic deliveries carry a few injected defects, so that quarantine has reasons to show
DEFECT_RATE = 0.01
STAGES = ("ingest", "pseudonymise")
GATES = {"ingest": "validate_raw", "pseudonymise": "validate_research"}


class Story:
    """One line per step: ✓ or ✗, what happened, and how long it took. On a terminal a spinner
    runs while the step does; elsewhere (CI logs, pipes) only the finished lines are printed."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def step(self, text: str, action: Callable[[], Any], done: Callable[[Any], str] | None = None) -> Any:
        started = time.perf_counter()
        waiting = self.console.status(text) if self.console.is_terminal else contextlib.nullcontext()
        try:
            with waiting:
                result = action()
        except Exception:
            self.line("✗", "red", text, time.perf_counter() - started)
            raise
        self.line("✓", "green", f"{text}{done(result) if done else ''}", time.perf_counter() - started)
        return result

    def line(self, mark: str, colour: str, text: str, seconds: float) -> None:
        self.console.print(
            Text.assemble((f"{mark} ", f"bold {colour}"), text, (f" ({seconds:.1f} s)", "dim"))
        )


def _approve(fed: LocalFederation, tokens: dict[str, str], request_id: int, holders: list[str]) -> list[str]:
    """Every steward of every holder in scope approves at their own node; returns who approved."""
    approved = []
    for holder_id in holders:
        steward_token = tokens[STEWARDS[holder_id][0]]
        fed.wait_for(
            f"application {request_id} at {holder_id}",
            lambda h=holder_id, t=steward_token: fed.has_application(h, request_id, token=t),
            timeout=120,
        )
        for steward in STEWARDS[holder_id]:
            fed.decide(holder_id, request_id, token=tokens[steward], justification=WHY)
            approved.append(steward)
    return approved


# -- the closing tables: pure functions over what the parties report -------------------------


def _sum(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def gate_verdict(task: dict[str, Any] | None) -> str:
    """The quality gate's verdict from its task in ``hdp status --json``."""
    if task is None:
        return "-"
    checks = task.get("checks") or {}
    if task["state"] == "success":
        warned = checks.get("warn", 0)
        return f"passed, {warned} warned" if warned else "passed"
    if task["state"] == "failed":
        return f"BLOCKED, {task.get('checks_failed') or checks.get('fail', 0)} failed"
    return str(task["state"])


def reasons_text(reasons: dict[str, int], shown: int = 2) -> str:
    """``6 csv.bad_date, 4 csv.duplicate_key +3 more`` (largest first)."""
    ordered = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{n} {code}" for code, n in ordered[:shown])
    return text + (f" +{len(ordered) - shown} more" if len(ordered) > shown else "")


def pipeline_rows(holder_id: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per stage of one holder's latest runs (``hdp status --json`` at its node): rows in and out
    (the stage's own tasks), quarantined by reason (the stage's and its gate's) and the gate verdict."""
    out: list[dict[str, Any]] = []
    for stage in STAGES:
        run = next((r for r in runs if r["dag_id"] == f"{stage}__{holder_id}"), None)
        if run is None:
            out.append({"holder": holder_id, "stage": stage, "state": "not run"})
            continue
        work = [t for t in run["tasks"] if t["task_id"] != GATES[stage]]
        gate = next((t for t in run["tasks"] if t["task_id"] == GATES[stage]), None)
        reasons: dict[str, int] = {}
        for q in run["quarantined_by_reason"]:
            reasons[q["reason_code"]] = reasons.get(q["reason_code"], 0) + q["rows"]
        out.append(
            {
                "holder": holder_id,
                "stage": stage,
                "state": run["state"],
                "rows_in": _sum([t["rows_in"] for t in work]),
                "rows_out": _sum([t["rows_out"] for t in work]),
                "quarantined": sum(reasons.values()),
                "reasons": reasons,
                "files_converted": sum(c["files"] for c in run.get("files_converted", [])),
                "gate": gate_verdict(gate),
            }
        )
    return out


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}".replace(",", " ")


def pipelines_table(rows: list[dict[str, Any]], width: int = 160) -> Table:
    """Per holder and stage; on a narrow terminal (< 120 columns) without the files-converted column
    and with only the largest reason, so that the verdict and the totals always show."""
    wide = width >= 120
    table = _table("Each node's pipelines (hdp status at the node)")
    table.add_column("holder", no_wrap=True)
    table.add_column("stage", no_wrap=True)
    table.add_column("rows in", justify="right", no_wrap=True)
    table.add_column("rows out", justify="right", no_wrap=True)
    table.add_column("quality gate", no_wrap=True)
    if wide:
        table.add_column("converted", justify="right", no_wrap=True)
    # The one column a narrow terminal may cut (on one line, with an ellipsis): the reasons.
    table.add_column("quarantined (by reason)" if wide else "quarantined", min_width=16, max_width=66)
    for row in rows:
        if "rows_in" not in row:
            table.add_row(
                row["holder"],
                row["stage"],
                "-",
                "-",
                row["state"],
                *(["-"] if wide else []),
                "-",
                style="red",
            )
            continue
        reasons = f": {reasons_text(row['reasons'], shown=2 if wide else 1)}" if row["reasons"] else ""
        table.add_row(
            row["holder"],
            row["stage"],
            _n(row["rows_in"]),
            _n(row["rows_out"]),
            row["gate"],
            *([_n(row["files_converted"]) if row["files_converted"] else "-"] if wide else []),
            Text(_n(row["quarantined"]) + reasons, no_wrap=True, overflow="ellipsis"),
            style="red" if row["state"] == "failed" else None,
        )
    return table


def _table(title: str) -> Table:
    # No top and bottom edge lines: the demo's whole story fits in 60 lines.
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, title_style="bold")


def approvals_table(approvals: dict[str, dict[str, Any]]) -> Table:
    table = _table("Approvals per steward (each at their own node)")
    for name in ("steward", "node", "approved"):
        table.add_column(name, no_wrap=True)
    for steward, seen in approvals.items():
        table.add_row(steward, seen["holder"], ", ".join(seen["applications"]))
    return table


def releases_table(releases: list[dict[str, Any]]) -> Table:
    table = _table("Releases and permits")
    for name, justify in (
        ("release", "left"),
        ("tier", "left"),
        ("holders", "left"),
        ("persons", "right"),
        ("rows", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in releases:
        table.add_row(r["release"], r["tier"], ", ".join(r["holders"]), r["persons"], r["rows"])
    return table


def _release_row(manifest: dict[str, Any]) -> dict[str, Any]:
    request = manifest.get("request", {})
    return {
        "release": manifest["release_id"],
        "tier": f"{request.get('output_tier', 'record')} level (application {request.get('request_id')})",
        "holders": request.get("holders", []),
        "persons": _n(manifest.get("persons")),
        "rows": _n(sum((manifest.get("rows") or {}).values())),
    }


# -- the story -------------------------------------------------------------------------------


def run_federated_demo(
    root: Path,
    *,
    kek_root: Path,
    persons: int,
    seed: int,
    console: Console | None = None,
    defect_rate: float = DEFECT_RATE,
) -> dict[str, Any]:
    console = console or demo_console()
    # the hub on its usual port when it is free, so that the commands printed at the end work as shown
    fed = LocalFederation(root, kek_root=kek_root, port=HUB_PORT if port_is_free(HUB_PORT) else free_port())
    story = Story(console)
    summary: dict[str, Any] = {
        "hub": fed.hub_url,
        "data_homes": {"hub": str(fed.hub_home)},
        "logs": str(fed.logs_dir),
    }
    console.print(
        Text.assemble(
            ("Federation demo", "bold"),
            f": a hub and {len(fed.holder_ids)} nodes as processes on this machine, data under {root}",
        ),
        soft_wrap=True,
    )
    users: list[dict[str, str]] = []
    approvals: dict[str, dict[str, Any]] = {}
    try:
        story.step(
            f"{persons} synthetic persons (defect rate {defect_rate:.0%}); each holder's delivery handed to its own node",
            lambda: fed.deliver(persons=persons, seed=seed, defect_rate=defect_rate),
        )
        fed.hub_home.mkdir(parents=True, exist_ok=True)
        took = story.step(
            "each node ran its own ingest and pseudonymisation DAGs (its own Airflow)", fed.run_pipelines
        )
        summary["node_pipeline_s"] = {h: round(s, 1) for h, s in took.items()}
        story.step(f"hub started on {fed.hub_url} (no identifier, no node key)", fed.start_hub)
        story.step("nodes enrolled: public identities exchanged out of band", fed.enrol_nodes)
        story.step("four node agents connected out to the hub (no inbound port)", fed.start_nodes)

        def add_users() -> dict[str, str]:
            tokens = {RESEARCHER: fed.add_user("hub", RESEARCHER, "researcher")}
            users.append(
                {"name": RESEARCHER, "role": "researcher", "party": "hub", "token": tokens[RESEARCHER]}
            )
            for holder_id, stewards in STEWARDS.items():
                for steward in stewards:
                    tokens[steward] = fed.add_user(holder_id, steward, "steward", [holder_id])
                    users.append(
                        {"name": steward, "role": "steward", "party": holder_id, "token": tokens[steward]}
                    )
            return tokens

        tokens = story.step("users: a researcher at the hub, each node's stewards at their node", add_users)
        with fed.hub_api(tokens[RESEARCHER]) as api:
            ids: dict[str, int] = {}

            def file_applications() -> None:
                for tier, fields in (("record", DEMO_REQUEST), ("aggregate", FEDERATED_AGGREGATE)):
                    response = api.post("/governance/requests", json={**fields, "submit": True})
                    response.raise_for_status()
                    ids[tier] = int(response.json()["request_id"])

            story.step(
                f"{RESEARCHER} filed two applications at the hub",
                file_applications,
                lambda _: (
                    f": {ids['record']} record level ({len(DEMO_REQUEST['holders'])} holders), "
                    f"{ids['aggregate']} aggregate ({len(FEDERATED_AGGREGATE['holders'])} holders)"
                ),
            )
            for tier, fields in (("record", DEMO_REQUEST), ("aggregate", FEDERATED_AGGREGATE)):
                request_id, holders = ids[tier], list(fields["holders"])
                who = story.step(
                    f"application {request_id}: every node's stewards approved at their own node",
                    lambda: _approve(fed, tokens, request_id, holders),  # noqa: B023 - called at once
                    lambda who: f" ({len(who)} stewards)",
                )
                for steward in who:
                    holder_id = next(h for h, names in STEWARDS.items() if steward in names)
                    seen = approvals.setdefault(steward, {"holder": holder_id, "applications": []})
                    seen["applications"].append(f"{request_id} ({tier})")
            summary["applications"] = ids
            release_id = f"rel-{ids['record']:05d}"
            story.step(
                f"project keys shared among the nodes, parts sealed and delivered, {release_id} assembled in the secure environment",
                lambda: fed.wait_for(
                    "the federated release",
                    lambda: (fed.hub_home / "releases" / release_id / "manifest.json").exists(),
                    timeout=600,
                ),
            )

            def query_release() -> dict[str, Any]:
                response = api.post(
                    f"/releases/{release_id}/query", json={"sql": LINKED_QUERY, "format": "json"}
                )
                response.raise_for_status()
                return dict(response.json())

            record = story.step(
                f"{RESEARCHER} queried {release_id} in the secure environment",
                query_release,
                lambda r: (
                    ": "
                    + ", ".join(
                        f"{row[0]} {row[1]} persons (HbA1c {row[2]})" for row in r.get("rows", [])[:3]
                    )
                ),
            )

            def federated_query() -> dict[str, Any]:
                fed.wait_for(
                    "every node's aggregate part",
                    lambda: all(
                        v["part"] == "delivered" for v in fed.status(ids["aggregate"])["nodes"].values()
                    ),
                    timeout=600,
                )
                response = api.post(
                    f"/federation/v1/permits/{ids['aggregate']}/query", json={"sql": FEDERATED_QUERY}
                )
                response.raise_for_status()
                return dict(response.json())

            federated = story.step(
                "federated aggregate query (patients by sex)",
                federated_query,
                lambda r: (
                    f" answered by {len(r.get('nodes_answered', []))} nodes"
                    + (
                        f" ({', '.join(r['nodes_without_these_tables'])} without the table)"
                        if r.get("nodes_without_these_tables")
                        else ""
                    )
                    + ": "
                    + ", ".join(f"{row[0]} {row[1]}" for row in r.get("rows", [])[:4])
                ),
            )
        summary |= {"release_id": release_id, "record_query": record, "federated_query": federated}

        def collect() -> list[dict[str, Any]]:
            with ThreadPoolExecutor(max_workers=4) as pool:
                reports = pool.map(
                    lambda h: (h, json.loads(fed.command(h, "hdp", "status", "--json", "--limit", "20"))),
                    fed.holder_ids,
                )
                return [row for holder_id, runs in reports for row in pipeline_rows(holder_id, runs)]

        summary["pipelines"] = story.step(
            "each node's run figures collected (hdp status at the node)", collect
        )
        manifest = json.loads((fed.hub_home / "releases" / release_id / "manifest.json").read_text())
        summary["releases"] = [
            _release_row(manifest),
            {
                "release": f"permit {ids['aggregate']}",
                "tier": f"aggregate (application {ids['aggregate']})",
                "holders": list(FEDERATED_AGGREGATE["holders"]),
                "persons": "cells only",
                "rows": "-",
            },
        ]
    finally:
        story.step("hub and nodes stopped", fed.stop)
        if users:
            summary["credentials"] = str(write_credentials(root / CREDENTIALS_FILE, fed.hub_url, users))
    summary["approvals"] = approvals
    summary["next"] = next_steps(fed, summary, kek_root)
    print_closing(console, summary)
    return summary


def next_steps(fed: LocalFederation, summary: dict[str, Any], kek_root: Path) -> dict[str, str]:
    """Commands that start things again, each in its party's own environment (pasteable as shown)."""
    aggregate = summary.get("applications", {}).get("aggregate", "N")
    query = json.dumps({"sql": FEDERATED_QUERY})
    return {
        "hub": fed.shell_command("hub", "hdp-hub", "serve", "--port", str(fed.port)),
        "node": fed.shell_command("ndr", "hdp-node", "run"),
        "node status": fed.shell_command("ndr", "hdp", "status"),
        "airflow": " ".join(
            [
                "env",
                f"HDP_HOME={shlex.quote(str(fed.root))}",
                f"HDP_KEK_DIR={shlex.quote(str(kek_root.parent))}",
                shlex.join([str(BIN / "hdp"), "airflow-ui", "--node", "ndr"]),
            ]
        ),
        "federated query": f'curl -H "Authorization: Bearer $HDP_TOKEN" -d {shlex.quote(query)} '
        f"{fed.hub_url}/federation/v1/permits/{aggregate}/query",
        "demo": shlex.join([str(BIN / "hdp"), "federation-demo"]),
    }


def print_closing(console: Console, summary: dict[str, Any]) -> None:
    """The tables, then where things are and how to start them again (no token, no secret)."""
    tables: dict[str, Callable[[Any], Table]] = {
        "pipelines": lambda rows: pipelines_table(rows, console.width),
        "approvals": approvals_table,
        "releases": releases_table,
    }
    for key, table in tables.items():
        if summary.get(key):
            console.print()
            console.print(table(summary[key]))
    console.print()
    stewards = ", ".join(f"{name}@{seen['holder']}" for name, seen in summary.get("approvals", {}).items())
    lines = [
        ("Logs (Airflow, Great Expectations, hub, nodes)", f"{summary['logs']}/<party>.log"),
        ("Tokens (owner-only file, not shown here)", summary.get("credentials", "-")),
        ("Sign in at the hub", f"{summary['hub']}/web/ as {RESEARCHER} (researcher) with her token"),
        ("Stewards (each at their node)", stewards or "-"),
        ("PROM key figures, pooled (public, at the hub)", f"{summary['hub']}/web/federation/prom"),
        ("Start the hub again", summary["next"]["hub"]),
        ("Start a node again (ndr)", summary["next"]["node"]),
        ("A node's runs", summary["next"]["node status"]),
        (
            "A node's Airflow UI (http://127.0.0.1:8080, admin)",
            f"{summary['next']['airflow']}  (or: make airflow NODE=ndr)",
        ),
        ("Federated query (HDP_TOKEN=researcher's)", summary["next"]["federated query"]),
    ]
    console.print(Text("Next steps", style="bold"))
    for label, value in lines:
        console.print(Text.assemble((f"  {label}: ", "cyan"), str(value)), soft_wrap=True)


def demo_console() -> Console:
    """Rich on a terminal; plain, wide lines elsewhere (CI logs: no colours, no spinner, no wrapping)."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=160, no_color=True)
    return console
