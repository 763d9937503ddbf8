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
   aggregate question that every node answers under its own thresholds;
8. everything is stopped; the summary says how to start it again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.demo import AGGREGATE_REQUEST, DEMO_REQUEST, RESEARCHER, STEWARDS
from edge.federation_local import HUB_PORT, LocalFederation, free_port, port_is_free

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


class Story:
    """One line per step: ✓ or ✗, what happened, and how long it took."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo

    def step(self, text: str, action: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            result = action()
        except Exception:
            self.echo(f"✗ {text} ({time.perf_counter() - started:.1f} s)")
            raise
        self.echo(f"✓ {text} ({time.perf_counter() - started:.1f} s)")
        return result


def _approve(fed: LocalFederation, tokens: dict[str, str], request_id: int, holders: list[str]) -> list[str]:
    lines = []
    for holder_id in holders:
        steward_token = tokens[STEWARDS[holder_id][0]]
        fed.wait_for(
            f"application {request_id} at {holder_id}",
            lambda h=holder_id, t=steward_token: fed.has_application(h, request_id, token=t),
            timeout=120,
        )
        for steward in STEWARDS[holder_id]:
            fed.decide(holder_id, request_id, token=tokens[steward], justification=WHY)
            lines.append(f"{steward}@{holder_id}")
    return lines


def run_federated_demo(
    root: Path, *, kek_root: Path, persons: int, seed: int, echo: Callable[[str], None]
) -> dict[str, Any]:
    # the hub on its usual port when it is free, so that the commands printed at the end work as shown
    fed = LocalFederation(root, kek_root=kek_root, port=HUB_PORT if port_is_free(HUB_PORT) else free_port())
    story = Story(echo)
    summary: dict[str, Any] = {"hub": fed.hub_url, "data_homes": {"hub": str(fed.hub_home)}}
    try:
        story.step(
            f"{persons} synthetic persons; each holder's delivery handed to its own node",
            lambda: fed.deliver(persons=persons, seed=seed),
        )
        fed.hub_home.mkdir(parents=True, exist_ok=True)
        took = story.step(
            "each node ran its own ingest and pseudonymisation DAGs (its own Airflow)", fed.run_pipelines
        )
        summary["node_pipeline_s"] = {h: round(s, 1) for h, s in took.items()}
        story.step(f"hub started on {fed.hub_url} (no identifier, no node key)", fed.start_hub)
        story.step("nodes enrolled: public identities exchanged out of band", fed.enrol_nodes)
        story.step("four node agents connected out to the hub (no inbound port)", fed.start_nodes)
        tokens = {RESEARCHER: fed.add_user("hub", RESEARCHER, "researcher")}
        for holder_id, stewards in STEWARDS.items():
            for steward in stewards:
                tokens[steward] = fed.add_user(holder_id, steward, "steward", [holder_id])
        with fed.hub_api(tokens[RESEARCHER]) as api:
            ids = {}
            for tier, fields in (("record", DEMO_REQUEST), ("aggregate", FEDERATED_AGGREGATE)):
                response = api.post("/governance/requests", json={**fields, "submit": True})
                response.raise_for_status()
                ids[tier] = int(response.json()["request_id"])
                echo(
                    f"✓ {RESEARCHER} filed application {ids[tier]} ({tier}) at the hub for {', '.join(fields['holders'])}"
                )
            for tier, fields in (("record", DEMO_REQUEST), ("aggregate", FEDERATED_AGGREGATE)):
                request_id, holders = ids[tier], list(fields["holders"])
                who = story.step(
                    f"application {request_id}: every node's stewards approved at their own node",
                    lambda: _approve(fed, tokens, request_id, holders),  # noqa: B023 - called at once
                )
                echo(f"    {', '.join(who)}")
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
            fed.wait_for(
                "every node's aggregate part",
                lambda: all(v["part"] == "delivered" for v in fed.status(ids["aggregate"])["nodes"].values()),
                timeout=600,
            )
            record = api.post(
                f"/releases/{release_id}/query", json={"sql": LINKED_QUERY, "format": "json"}
            ).json()
            federated = api.post(
                f"/federation/v1/permits/{ids['aggregate']}/query", json={"sql": FEDERATED_QUERY}
            ).json()
        echo(f"✓ record-level release {release_id}, queried in the secure environment:")
        for row in record.get("rows", [])[:5]:
            echo(f"    {row}")
        echo(f"✓ federated aggregate query, answered by {', '.join(federated.get('nodes_answered', []))}:")
        echo(f"    {federated.get('columns')}")
        for row in federated.get("rows", [])[:5]:
            echo(f"    {row}")
        summary |= {"release_id": release_id, "record_query": record, "federated_query": federated}
        summary["researcher_token"] = tokens[RESEARCHER]
    finally:
        fed.stop()
        echo("✓ hub and nodes stopped")
    summary["next"] = {
        "hub": f"HDP_HOME={fed.hub_home} HDP_FEDERATION_ROLE=hub HDP_HUB_URL={fed.hub_url} HDP_KEK_DIR={fed.kek_dir('hub')} "
        f".venv/bin/hdp-hub serve --port {fed.port}",
        "node": f"HDP_HOME={fed.node_home('ndr')} HDP_FEDERATION_ROLE=node HDP_NODE_HOLDER=ndr HDP_HUB_URL={fed.hub_url} "
        f"HDP_HUB_IDENTITY={fed.node_home('ndr') / 'hub-identity.json'} HDP_KEK_DIR={fed.kek_dir('ndr')} .venv/bin/hdp-node run",
        "federated query": f"curl -H 'Authorization: Bearer <researcher_token>' -d '{json.dumps({'sql': FEDERATED_QUERY})}' "
        f"{fed.hub_url}/federation/v1/permits/{summary.get('applications', {}).get('aggregate', 'N')}/query",
    }
    return summary
