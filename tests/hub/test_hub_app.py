"""The hub's federation endpoints in-process: what a node may send, what it receives, and what is
refused (unregistered senders, replays, truncated or altered parts, decisions out of scope)."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from fastapi.testclient import TestClient

from federation.identity import PartyKeys, PublicIdentity, node_party
from federation.messages import MemoryNonceStore, sign, verify
from governance import service, store
from hdp.settings import get_settings

FIELDS = {
    "project": "Federated test study",
    "purpose": "scientific_research",
    "legal_basis": "gdpr_6_1_e__9_2_j",
    "ethics_ref": "2024-01234-01",
    "variables": ["register_visit.sex", "patient.sex"],
    "holders": ["ndr", "region_skane"],
    "output_tier": "aggregate",
}


@pytest.fixture
def hub(hdp_home, monkeypatch, tmp_path):
    monkeypatch.setenv("HDP_FEDERATION_ROLE", "hub")
    monkeypatch.setenv("HDP_HUB_URL", "http://127.0.0.1:8700")
    get_settings.cache_clear()
    settings = get_settings()
    store.upgrade(settings.governance_url)
    from hub.app import create_hub_app

    app = create_hub_app()
    nodes = {
        h: PartyKeys.from_seeds(node_party(h), sign_seed=bytes([i]) * 32, seal_seed=bytes([i + 9]) * 32)
        for i, h in enumerate(("ndr", "region_skane", "region_orebro"), start=1)
    }
    for keys in nodes.values():
        app.state.hub.register_node(keys.public)
    with TestClient(app) as client:
        client.nodes = nodes  # type: ignore[attr-defined]
        client.hub = app.state.hub  # type: ignore[attr-defined]
        yield client
    get_settings.cache_clear()


def _submitted_application() -> int:
    url = get_settings().governance_url
    with store.session_scope(url) as session:
        service.create_user(session, name="forskare", roles={"researcher"})
        request_id = service.file_request(session, applicant="forskare", **FIELDS)
        service.submit_request(session, request_id=request_id, actor="forskare")
    return request_id


def _poll(client, holder_id: str) -> list[str]:
    poll = sign(client.nodes[holder_id], "poll", {}, recipient="hub", permit=None)
    response = client.get("/federation/v1/inbox", params={"wait": 0}, headers={"X-HDP-Message": poll})
    assert response.status_code == 200, response.text
    return response.json()["messages"]


def _hub_identity(client) -> PublicIdentity:
    return PublicIdentity.from_json(client.get("/federation/v1/identity").json())


def test_the_hub_publishes_its_identity_and_holds_no_restricted_zone(hub):
    identity = _hub_identity(hub)
    assert identity.party == "hub"
    assert identity == hub.hub.keys.public
    assert not (get_settings().home / "restricted").exists()
    assert (get_settings().home / "secure").stat().st_mode & 0o777 == 0o700


def test_an_application_is_routed_only_to_the_nodes_in_scope_and_acknowledged_once(hub):
    request_id = _submitted_application()
    hub.hub.route()
    messages = _poll(hub, "ndr")
    assert len(messages) == 1
    message = verify(
        messages[0], recipient="node:ndr", sender_key=lambda p: _hub_identity(hub), nonces=MemoryNonceStore()
    )
    assert (message.type, message.permit, message.body["applicant"]) == (
        "application",
        request_id,
        "forskare",
    )
    assert _poll(hub, "region_orebro") == []  # not in scope
    # routed once, whatever the number of passes; delivered again until acknowledged
    hub.hub.route()
    assert len(_poll(hub, "ndr")) == 1
    ack = sign(hub.nodes["ndr"], "ack", {"ids": [message.body["outbox_id"]]}, recipient="hub", permit=None)
    assert hub.post("/federation/v1/messages", content=ack).status_code == 202
    assert _poll(hub, "ndr") == []


def test_a_nodes_verdict_becomes_its_holders_review_and_the_last_approval_issues_the_permit(hub):
    request_id = _submitted_application()
    for holder_id in ("ndr", "region_skane"):
        decision = sign(
            hub.nodes[holder_id],
            "decision",
            {
                "decision": "approve",
                "justification": "Ethics approval and variables match.",
                "review_round": 1,
            },
            recipient="hub",
            permit=request_id,
        )
        response = hub.post("/federation/v1/messages", content=decision)
        assert response.status_code == 202, response.text
    assert response.json()["status"] == "approved"
    with store.session_scope(get_settings().governance_url) as session:
        permit = service.permit_for_request(session, request_id=request_id)
    assert permit is not None and permit.status == "approved"
    hub.hub.route()
    nonces = MemoryNonceStore()
    types = [
        verify(m, recipient="node:region_skane", sender_key=lambda p: _hub_identity(hub), nonces=nonces).type
        for m in _poll(hub, "region_skane")
    ]
    assert "permit" in types


def test_a_stale_round_and_a_node_out_of_scope_are_refused(hub):
    request_id = _submitted_application()
    stale = sign(
        hub.nodes["ndr"],
        "decision",
        {"decision": "approve", "justification": "Fine by us here.", "review_round": 7},
        recipient="hub",
        permit=request_id,
    )
    assert hub.post("/federation/v1/messages", content=stale).json()["error"] == "decision.stale_round"
    outsider = sign(
        hub.nodes["region_orebro"],
        "decision",
        {"decision": "approve", "justification": "Fine by us here.", "review_round": 1},
        recipient="hub",
        permit=request_id,
    )
    refused = hub.post("/federation/v1/messages", content=outsider)
    assert (refused.status_code, refused.json()["error"]) == (409, "permit.not_in_scope")


def test_unregistered_replayed_and_expired_messages_are_refused(hub):
    stranger = PartyKeys.from_seeds(
        node_party("region_uppsala"), sign_seed=b"\x07" * 32, seal_seed=b"\x08" * 32
    )
    unknown = sign(stranger, "ack", {"ids": []}, recipient="hub", permit=None)
    assert hub.post("/federation/v1/messages", content=unknown).json()["error"] == "message.unknown_sender"
    ack = sign(hub.nodes["ndr"], "ack", {"ids": []}, recipient="hub", permit=None)
    assert hub.post("/federation/v1/messages", content=ack).status_code == 202
    assert hub.post("/federation/v1/messages", content=ack).json()["error"] == "message.replayed"
    old = sign(
        hub.nodes["ndr"], "ack", {"ids": []}, recipient="hub", permit=None, ttl=30, now=time.time() - 60
    )
    assert hub.post("/federation/v1/messages", content=old).json()["error"] == "message.expired"
    assert (
        hub.post("/federation/v1/messages", content=b"not a message").json()["error"] == "message.malformed"
    )


def _part_header(client, holder_id: str, permit_id: int, payload: bytes, **overrides) -> str:
    body = {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload), "facts": {"tier": "record"}}
    return sign(client.nodes[holder_id], "part", {**body, **overrides}, recipient="hub", permit=permit_id)


def test_a_truncated_or_altered_part_is_refused_and_nothing_is_recorded(hub):
    request_id = _submitted_application()
    payload = b"sealed bytes of a part" * 100
    truncated = hub.post(
        f"/federation/v1/parts/{request_id}",
        content=payload[:-10],
        headers={"X-HDP-Message": _part_header(hub, "ndr", request_id, payload)},
    )
    assert (truncated.status_code, truncated.json()["error"]) == (409, "part.truncated")
    altered = hub.post(
        f"/federation/v1/parts/{request_id}",
        content=payload[:-1] + b"X",
        headers={"X-HDP-Message": _part_header(hub, "ndr", request_id, payload)},
    )
    assert altered.json()["error"] == "part.truncated"
    other_permit = hub.post(
        f"/federation/v1/parts/{request_id + 1}",
        content=payload,
        headers={"X-HDP-Message": _part_header(hub, "ndr", request_id, payload)},
    )
    assert other_permit.json()["error"] == "part.mismatch"
    assert hub.hub.state.parts(request_id) == {}
    ok = hub.post(
        f"/federation/v1/parts/{request_id}",
        content=payload,
        headers={"X-HDP-Message": _part_header(hub, "ndr", request_id, payload)},
    )
    assert ok.status_code == 202, ok.text
    assert hub.hub.state.parts(request_id)["node:ndr"]["status"] == "delivered"
    assert (
        hub.get(f"/federation/v1/permits/{request_id}/status").json()["nodes"]["node:region_skane"]["part"]
        == "waiting"
    )


def test_the_catalogue_holds_what_nodes_published_and_only_for_their_own_holder(hub):
    from federation.catalogue import DatasetSummary, TableSummary, VariableSummary, utc_now

    def summary(holder_id: str) -> dict:
        return DatasetSummary(
            holder_id=holder_id,
            holder_name=holder_id,
            holder_kind="region",
            node_id=node_party(holder_id),
            tables=(
                TableSummary(
                    "patient",
                    "Patients",
                    (VariableSummary("sex", "Sex", "string", "quasi_identifier"),),
                    120,
                    40,
                    "2023-01",
                    "2025-06",
                ),
            ),
            persons=40,
            published_at=utc_now(),
            min_cell_count=10,
            rounding_base=10,
        ).to_json()

    own = sign(
        hub.nodes["region_skane"],
        "catalogue",
        {"summary": summary("region_skane")},
        recipient="hub",
        permit=None,
    )
    assert hub.post("/federation/v1/messages", content=own).status_code == 202
    foreign = sign(
        hub.nodes["region_skane"], "catalogue", {"summary": summary("ndr")}, recipient="hub", permit=None
    )
    assert hub.post("/federation/v1/messages", content=foreign).json()["error"] == "catalogue.not_own"
    doc = hub.get("/catalogue.jsonld")
    assert (
        doc.status_code == 200
        and "region_skane" in doc.text
        and "ndr" not in json.dumps(doc.json()).replace("region", "")
    )
    assert "numberOfUniqueIndividuals" in hub.get("/catalogue.ttl").text


def test_the_status_of_an_unknown_permit_is_404(hub):
    r = hub.get("/federation/v1/permits/987654/status")
    assert r.status_code == 404 and r.json()["error"] == "permit.unknown"


def _key_figures_documents(holder_id: str, persons: int = 30, periods=("year",)) -> list[dict]:
    from datetime import date

    import pyarrow as pa

    from pipelines.outcomes import key_figures
    from pipelines.outcomes.pooling import key_figures_document

    responses = pa.table(
        {
            "person_id": [f"{holder_id}-{i}" for i in range(persons)],
            "visit_date": pa.array([date(2024, 1 + i % 12, 5) for i in range(persons)], pa.date32()),
            "eq5d_index_se_5l_tto_2020": [0.5 + i / (2 * persons) for i in range(persons)],
            "eq_vas": [50 + i for i in range(persons)],
            "eq5d_profile": ["11111"] * persons,
        }
    )
    return [
        key_figures_document(key_figures(responses, holder=holder_id, threshold=5, period=period))
        for period in periods
    ]


def test_published_key_figures_are_pooled_and_only_a_nodes_own_are_taken(hub):
    def send(holder_id: str, body: dict):
        message = sign(hub.nodes[holder_id], "prom_key_figures", body, recipient="hub", permit=None)
        return hub.post("/federation/v1/messages", content=message)

    assert hub.get("/catalogue/prom-key-figures.json").json()["federation"] is None
    assert send("region_skane", {"figures": _key_figures_documents("region_skane")}).status_code == 202
    assert send("ndr", {"figures": _key_figures_documents("ndr", 40)}).status_code == 202
    foreign = send("region_skane", {"figures": _key_figures_documents("ndr")})
    assert foreign.json()["error"] == "keyfigures.not_own"
    malformed = _key_figures_documents("region_skane")
    malformed[0]["rows"][0]["persons"] = {"value": 3.0, "low": None, "high": None, "persons": 3}
    assert send("region_skane", {"figures": malformed}).json()["error"] == "keyfigures.invalid"
    # year and quarter together would give a withheld quarter back by subtraction: refused
    nested = _key_figures_documents("region_skane", periods=("year", "quarter"))
    assert send("region_skane", {"figures": nested}).json()["error"] == "keyfigures.one_period"
    twice = _key_figures_documents("region_skane")
    assert send("region_skane", {"figures": twice * 2}).json()["error"] == "keyfigures.one_period"
    doc = hub.get("/catalogue/prom-key-figures.json?period=year").json()
    assert sorted(h["holder"] for h in doc["holders"]) == ["ndr", "region_skane"]
    (row,) = doc["federation"]["rows"]
    assert row["responses"]["value"] == 70 and row["persons"]["persons"] == 70
    assert hub.get("/catalogue/prom-key-figures.json?period=quarter").json()["federation"] is None
    quarterly = _key_figures_documents("ndr", 40, periods=("quarter",))  # a node that publishes quarters
    assert send("ndr", {"figures": quarterly}).status_code == 202
    quarters = hub.get("/catalogue/prom-key-figures.json?period=quarter").json()["federation"]["rows"]
    assert [r["period"] for r in quarters] == ["2024-Q1", "2024-Q2", "2024-Q3", "2024-Q4"]
    assert [h["holder"] for h in hub.get("/catalogue/prom-key-figures.json").json()["holders"]] == [
        "region_skane"
    ]  # ndr's quarters replaced its year: the hub never holds both of one node
    assert hub.get("/catalogue/prom-key-figures.json?period=month").status_code == 400
    page = hub.get("/web/federation/prom?lang=sv")
    assert page.status_code == 200 and "PROM-nyckeltal i federationen" in page.text


def test_a_federated_query_needs_a_researcher_with_the_permit(hub):
    request_id = _submitted_application()
    response = hub.post(
        f"/federation/v1/permits/{request_id}/query", json={"sql": "SELECT count(*) FROM patient"}
    )
    assert response.status_code == 401
    assert (
        hub.post(f"/federation/v1/permits/{request_id}/query", content=b"{").json()["error"] == "request.body"
    )


def test_a_long_poll_whose_node_went_away_ends_and_does_not_hold_up_the_hubs_shutdown(hub):
    """A node stopped or crashed mid-poll: the hub's handler notices within its re-check interval
    instead of waiting out the poll, so stopping the hub right after its nodes is quick."""
    import socket
    import threading

    import uvicorn

    from hub.routes import RECHECK_S

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(hub.app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    poll = sign(hub.nodes["ndr"], "poll", {}, recipient="hub", permit=None)
    with socket.create_connection(("127.0.0.1", port)) as node:
        node.sendall(
            f"GET /federation/v1/inbox?wait=30 HTTP/1.1\r\nHost: hub\r\nX-HDP-Message: {poll}\r\n\r\n".encode()
        )
        time.sleep(0.5)  # the poll is waiting: nothing is pending for ndr
    # the node is gone; the hub is told to stop (as SIGTERM would) and waits for open requests
    server.should_exit = True
    thread.join(timeout=RECHECK_S + 6)
    assert not thread.is_alive(), "the hub waited out a poll whose node had gone"
