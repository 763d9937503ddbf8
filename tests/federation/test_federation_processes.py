"""The federation as its parties run it: the hub and four nodes as separate processes, each with its
own data home and key-encryption key, on loopback ports; every node's pipelines through its own
Airflow. One module-scoped federation; the tests run in order and build on each other's requests.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from edge.federation_local import LocalFederation
from federation.identity import PartyKeys, node_party
from federation.messages import sign
from hub.state import HubState
from tests.e2e.leakscan import find_byte_leaks, find_cell_leaks, landing_identifiers_and_names

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

PERSONS = 300
WHY = "Ethics approval and variable list match the purpose; data minimised."
REGIONS = ("region_uppsala", "region_orebro", "region_skane")


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    federation = LocalFederation(tmp_path_factory.mktemp("federation"))
    federation.deliver(persons=PERSONS, seed=11)
    federation.hub_home.mkdir(parents=True)
    federation.run_pipelines()
    federation.start_hub()
    federation.enrol_nodes()
    federation.start_nodes()
    federation.researcher = federation.add_user("hub", "forskare", "researcher")  # type: ignore[attr-defined]
    federation.stewards = {  # type: ignore[attr-defined]
        h: [federation.add_user(h, f"steward.{h}", "steward", [h])]
        + ([federation.add_user(h, f"steward2.{h}", "steward", [h])] if h == "region_orebro" else [])
        for h in federation.holder_ids
    }
    yield federation
    federation.stop()


def _file(fed: LocalFederation, *, holders: tuple[str, ...], variables: tuple[str, ...], tier: str) -> int:
    args = ["request", "file", "--project", f"Federated {tier} study", "--purpose", "scientific_research"]
    args += ["--legal-basis", "gdpr_6_1_e__9_2_j", "--ethics-ref", "2024-01234-01", "--output-tier", tier]
    if tier == "record":
        args += [
            "--data-form",
            "pseudonymised",
            "--pseudonymisation-justification",
            "Linkage of register visits with journal data per person is the study design",
        ]
    for v in variables:
        args += ["--variable", v]
    for h in holders:
        args += ["--holder", h]
    out = fed.command("hub", "hdp", *args, "--submit", token=fed.researcher)  # type: ignore[attr-defined]
    return int(out.split()[1])


def _mirrored(fed: LocalFederation, holder_id: str, request_id: int) -> bool:
    return fed.has_application(holder_id, request_id, token=fed.stewards[holder_id][0])  # type: ignore[attr-defined]


def _decide(fed: LocalFederation, holder_id: str, request_id: int, decision: str = "approve") -> None:
    fed.wait_for(
        f"application {request_id} at {holder_id}", lambda: _mirrored(fed, holder_id, request_id), timeout=60
    )
    for token in fed.stewards[holder_id]:  # type: ignore[attr-defined]
        fed.decide(holder_id, request_id, token=token, decision=decision, justification=WHY)


def _hub_request(fed: LocalFederation, request_id: int) -> str:
    return fed.command("hub", "hdp", "request", "show", str(request_id), token=fed.researcher)  # type: ignore[attr-defined]


def _parts_delivered(fed: LocalFederation, request_id: int, parties: list[str]):
    status = fed.status(request_id)
    return status if all(status["nodes"][p]["part"] == "delivered" for p in parties) else None


def _query(fed: LocalFederation, request_id: int, sql: str) -> httpx.Response:
    with fed.hub_api(fed.researcher) as api:  # type: ignore[attr-defined]
        return api.post(f"/federation/v1/permits/{request_id}/query", json={"sql": sql})


@pytest.fixture(scope="module")
def aggregate_permit(fed):
    holders = ("ndr", "region_uppsala", "region_skane")
    request_id = _file(
        fed,
        holders=holders,
        variables=(
            "register_visit.sex",
            "register_visit.hba1c_mmol_mol",
            "patient.sex",
            "patient.birth_year",
        ),
        tier="aggregate",
    )
    for h in holders[:-1]:
        _decide(fed, h, request_id)
    # two of three nodes approved: the hub has issued nothing
    fed.wait_for("two verdicts", lambda: _hub_request(fed, request_id).count(": approve -") == 2, timeout=60)
    assert "[under_review]" in _hub_request(fed, request_id)
    assert fed.status(request_id)["nodes"]["node:ndr"]["part"] == "waiting"
    _decide(fed, holders[-1], request_id)
    fed.wait_for("hub approval", lambda: "[approved]" in _hub_request(fed, request_id), timeout=60)
    fed.wait_for(
        "parts", lambda: _parts_delivered(fed, request_id, [node_party(h) for h in holders]), timeout=240
    )
    return request_id


def test_a_request_across_three_nodes_is_approved_only_when_each_node_approved_on_its_own(
    fed, aggregate_permit
):
    shown = _hub_request(fed, aggregate_permit)
    for h in ("ndr", "region_uppsala", "region_skane"):
        assert f"{h} node.{h}: approve" in shown  # the hub carries each node's verdict, signed by the node
    # the fourth node was never asked: the application was routed only to the scope
    assert not _mirrored(fed, "region_orebro", aggregate_permit)


def test_a_federated_aggregate_query_merges_every_node_under_disclosure_control(fed, aggregate_permit):
    response = _query(
        fed, aggregate_permit, "SELECT sex, count(*) AS patients FROM patient GROUP BY sex ORDER BY sex"
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["nodes_answered"] == ["node:region_skane", "node:region_uppsala"]
    assert result["nodes_without_these_tables"] == ["node:ndr"]  # no patient table at the register
    assert result["columns"] == ["sex", "patients", "nodes_in_cell"]
    assert result["rows"] and all(
        row[1] >= 10 for row in result["rows"]
    )  # Skåne's threshold is the strictest
    register = _query(
        fed,
        aggregate_permit,
        "SELECT sex, avg(hba1c_mmol_mol) AS mean_hba1c FROM register_visit GROUP BY sex",
    )
    assert register.status_code == 200, register.text
    assert register.json()["nodes_answered"] == ["node:ndr"]


def test_outside_the_grammar_is_refused_at_the_hub_with_a_reason(fed, aggregate_permit):
    response = _query(fed, aggregate_permit, "SELECT person_id FROM patient")
    assert response.status_code == 400
    assert response.json()["error"].startswith(("aggregate.", "sql."))


@pytest.fixture(scope="module")
def record_release(fed):
    holders = ("ndr", "region_uppsala", "region_orebro")
    request_id = _file(
        fed,
        holders=holders,
        variables=(
            "register_visit.person_id",
            "register_visit.hba1c_mmol_mol",
            "patient.person_id",
            "patient.sex",
        ),
        tier="record",
    )
    for h in holders:
        _decide(fed, h, request_id)  # Örebro's node requires two of its stewards
    fed.wait_for("the release", lambda: "[released]" in _hub_request(fed, request_id), timeout=300)
    return request_id


def test_a_federated_release_is_assembled_in_the_secure_environment_and_links_persons_across_nodes(
    fed, record_release
):
    release_id = f"rel-{record_release:05d}"
    assert (fed.hub_home / "releases" / release_id / "manifest.json").exists()
    with fed.hub_api(fed.researcher) as api:  # type: ignore[attr-defined]
        joined = api.post(
            f"/releases/{release_id}/query",
            json={
                "sql": "SELECT count(DISTINCT r.person_id) AS linked FROM register_visit r "
                "JOIN patient p ON p.person_id = r.person_id",
                "format": "json",
            },
        )
    assert joined.status_code == 200, joined.text
    linked = joined.json()["rows"][0][0]
    # the register's and the regions' parts were pseudonymised by different nodes with the one
    # project key they share: the same persons meet in a join
    assert linked > 0


def test_a_node_killed_mid_release_leaves_nothing_published_and_its_restart_completes_it(fed):
    holders = ("ndr", "region_skane")
    request_id = _file(
        fed,
        holders=holders,
        variables=("register_visit.person_id", "patient.person_id", "patient.sex"),
        tier="record",
    )
    staging = fed.node_home("region_skane") / "releases" / f".staging-rel-{request_id:05d}"
    for h in holders:
        _decide(fed, h, request_id)
    # killed while it builds its part (its staging directory exists only then)
    fed.wait_for("region_skane building its part", staging.exists, timeout=120, every=0.02)
    fed.kill("region_skane")
    time.sleep(3)
    status = fed.status(request_id)
    assert status["nodes"]["node:region_skane"]["part"] == "waiting"  # the status names who it waits for
    assert "[approved]" in _hub_request(fed, request_id)
    assert not (fed.hub_home / "releases" / f"rel-{request_id:05d}").exists()  # nothing partial
    fed.start_node("region_skane")
    fed.wait_for(
        "the release after restart", lambda: "[released]" in _hub_request(fed, request_id), timeout=300
    )
    manifest = json.loads((fed.hub_home / "releases" / f"rel-{request_id:05d}" / "manifest.json").read_text())
    assert sorted(manifest["request"]["holders"]) == ["ndr", "region_skane"]


def test_a_node_that_rejects_stops_the_application(fed):
    request_id = _file(
        fed,
        holders=("ndr", "region_orebro"),
        variables=("register_visit.sex", "patient.sex"),
        tier="aggregate",
    )
    _decide(fed, "ndr", request_id, "reject")
    fed.wait_for("rejection", lambda: "[rejected]" in _hub_request(fed, request_id), timeout=60)


def test_a_node_refuses_a_permit_its_own_stewards_did_not_approve(fed):
    """A compromised or mistaken hub routes a permit for an application the node never approved:
    the node checks its own store and refuses; it builds nothing."""
    request_id = _file(fed, holders=("region_orebro",), variables=("patient.sex",), tier="aggregate")
    fed.wait_for("mirrored", lambda: _mirrored(fed, "region_orebro", request_id), timeout=60)
    state = HubState(fed.hub_home / "hub.sqlite")
    state.enqueue(
        "node:region_orebro",
        "permit",
        {
            "request_id": request_id,
            "output_tier": "aggregate",
            "scope": {},
            "coordinator": "node:region_orebro",
        },
        permit=request_id,
    )
    fed.wait_for(
        "the node's refusal",
        lambda: (
            fed.status(request_id)["nodes"]["node:region_orebro"]["withdrawn"] == "permit.not_approved_here"
        ),
        timeout=60,
    )
    assert not (fed.node_home("region_orebro") / "releases" / f"rel-{request_id:05d}").exists()


def _in_node(fed: LocalFederation, holder_id: str, code: str) -> str:
    """Run ``code`` in a process of the node's own environment (its KEK is read only there)."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=fed.env(holder_id),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def _signed_by(
    fed: LocalFederation, holder_id: str, message_type: str, body: dict, *, permit=None, ttl=120, age=0.0
) -> str:
    """A message signed with the node's own key, in the node's own process."""
    return _in_node(
        fed,
        holder_id,
        "import time; from federation.identity import PartyKeys, node_party; from federation.messages import sign; "
        "from hdp.settings import get_settings; "
        f"keys = PartyKeys.load(node_party({holder_id!r}), get_settings()); "
        f"print(sign(keys, {message_type!r}, {body!r}, recipient='hub', permit={permit!r}, ttl={ttl}, now=time.time() - {age}))",
    )


def _node_key_material(fed: LocalFederation, holder_id: str) -> set[str]:
    """Every data key of a node's key store, in the forms a file could hold it (hex, base64)."""
    out = _in_node(
        fed,
        holder_id,
        "import base64, json; from privacy.keys import KeyStore; s = KeyStore(); "
        "print(json.dumps([s.key(i.key_id).secret.hex() for i in s.list()]))",
    )
    forms = set()
    for hexed in json.loads(out):
        secret = bytes.fromhex(hexed)
        forms |= {
            hexed,
            base64.b64encode(secret).decode(),
            base64.urlsafe_b64encode(secret).decode().rstrip("="),
        }
    return forms


def _post(fed: LocalFederation, token: str) -> httpx.Response:
    return httpx.post(f"{fed.hub_url}/federation/v1/messages", content=token, timeout=30)


def test_forged_replayed_and_expired_messages_are_each_rejected(fed, aggregate_permit):
    genuine = _signed_by(fed, "ndr", "ack", {"ids": []})
    assert _post(fed, genuine).status_code == 202
    replayed = _post(fed, genuine)
    assert (replayed.status_code, replayed.json()["error"]) == (401, "message.replayed")
    expired = _signed_by(fed, "ndr", "ack", {"ids": []}, ttl=60, age=120)
    assert _post(fed, expired).json()["error"] == "message.expired"
    impostor = PartyKeys.from_seeds(node_party("ndr"), sign_seed=b"\x01" * 32, seal_seed=b"\x02" * 32)
    forged = sign(
        impostor,
        "decision",
        {"decision": "approve", "review_round": 1},
        recipient="hub",
        permit=aggregate_permit,
    )
    assert _post(fed, forged).json()["error"] == "message.bad_signature"
    # a real node deciding for an application outside its scope: believed as a message, refused as a task
    outsider = _signed_by(
        fed, "region_orebro", "decision", {"decision": "approve", "review_round": 1}, permit=aggregate_permit
    )
    refused = _post(fed, outsider)
    assert (refused.status_code, refused.json()["error"]) == (409, "permit.not_in_scope")
    # a node's poll is no credential for another node's inbox
    poll = _in_node(
        fed,
        "ndr",
        "from federation.identity import PartyKeys; from federation.messages import sign; from hdp.settings import get_settings; "
        "print(sign(PartyKeys.load('node:ndr', get_settings()), 'poll', {}, recipient='node:region_skane', permit=None))",
    )
    inbox = httpx.get(f"{fed.hub_url}/federation/v1/inbox", headers={"X-HDP-Message": poll}, timeout=30)
    assert inbox.json()["error"] == "message.wrong_recipient"


def test_a_node_that_withdraws_its_approval_leaves_the_permit_at_the_next_query(fed, aggregate_permit):
    before = _query(
        fed, aggregate_permit, "SELECT sex, count(*) AS patients FROM patient GROUP BY sex"
    ).json()
    assert "node:region_uppsala" in before["nodes_answered"]
    fed.command(
        "region_uppsala",
        "hdp",
        "request",
        "revoke",
        str(aggregate_permit),
        "--justification",
        "Steward withdraws approval for this node",
        token=fed.stewards["region_uppsala"][0],  # type: ignore[attr-defined]
    )
    fed.wait_for(
        "withdrawal at the hub",
        lambda: fed.status(aggregate_permit)["nodes"]["node:region_uppsala"]["withdrawn"],
        timeout=60,
    )
    after = _query(fed, aggregate_permit, "SELECT sex, count(*) AS patients FROM patient GROUP BY sex").json()
    assert after["nodes_answered"] == ["node:region_skane"]
    assert "node:region_uppsala" in after["nodes_withdrawn"]


def test_the_hub_holds_no_identifier_no_name_and_no_node_key(fed, record_release):
    ids, names = set(), set()
    for h in fed.holder_ids:
        i, n = landing_identifiers_and_names(fed.node_home(h))
        ids |= i
        names |= n
    assert ids and names
    keys: set[str] = set()
    for h in fed.holder_ids:
        keys |= _node_key_material(fed, h)
        keys.add((fed.kek_dir(h) / "kek").read_text().strip())
    hub = fed.hub_home
    assert not (hub / "restricted").exists()
    assert find_cell_leaks(hub, ids | names) == []
    assert find_byte_leaks(hub, ids | names) == []
    for path in (p for p in hub.rglob("*") if p.is_file()):
        data = path.read_bytes()
        leaked = [k for k in keys if k.encode() in data or (len(k) == 64 and bytes.fromhex(k) in data)]
        assert not leaked, f"{path.relative_to(hub)} holds a node key"
    # each node's secrets stayed in its own zone, owner-only
    for h in fed.holder_ids:
        assert (fed.node_home(h) / "restricted").stat().st_mode & 0o777 == 0o700


def test_the_catalogue_is_healthdcat_ap_built_from_what_the_nodes_published(fed, aggregate_permit):
    doc = fed.wait_for(
        "the nodes' catalogue summaries",
        lambda: (lambda d: d if len(d.get("@graph", [])) > 0 and "region_skane" in json.dumps(d) else None)(
            httpx.get(f"{fed.hub_url}/catalogue.jsonld", timeout=30).json()
        ),
        timeout=60,
    )
    text = json.dumps(doc)
    assert "numberOfUniqueIndividuals" in text and "NON_PUBLIC" in text


def test_the_hub_pools_the_prom_key_figures_the_nodes_published(fed, aggregate_permit):
    """Issue 17: every node with scored PROM data publishes its key figures (cells under its own
    threshold); the hub pools them and shows them on a public page, and holds no response."""
    from pipelines.outcomes.pooling import key_figures_from_document

    doc = fed.wait_for(
        "the nodes' PROM key figures",
        lambda: (lambda d: d if d.get("federation") else None)(
            httpx.get(f"{fed.hub_url}/catalogue/prom-key-figures.json", timeout=30).json()
        ),
        timeout=60,
    )
    holders = [key_figures_from_document(h)[0] for h in doc["holders"]]
    pooled, _ = key_figures_from_document(doc["federation"])
    assert {kf.holder for kf in holders} <= set(fed.holder_ids) and holders
    assert pooled.threshold == max(kf.threshold for kf in holders)
    # a pooled count is the sum of the nodes' counts wherever every node showed its own
    for row in pooled.rows:
        cells = [r.responses for kf in holders for r in kf.rows if r.period == row.period]
        if row.responses.shown:
            assert row.responses.value == sum(c.value for c in cells)
        else:
            assert any(not c.shown for c in cells)
    page = httpx.get(f"{fed.hub_url}/web/federation/prom?lang=en", timeout=30)
    assert page.status_code == 200 and 'data-testid="prom-table-federation"' in page.text
    assert not (fed.hub_home / "research").exists() or not any((fed.hub_home / "research").iterdir())


def _a_registered_personnummer(fed: LocalFederation) -> str:
    """A valid identifier the register delivered (read inside the node's restricted zone, as its
    operator would take an opt-out form)."""
    from privacy.personnummer import InvalidIdentifier, parse

    landing = fed.node_home("ndr") / "restricted" / "ndr" / "landing" / "register"
    for path in sorted(landing.glob("*.csv")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
            for field in line.split(";"):
                try:
                    return parse(field).normalised
                except InvalidIdentifier:
                    continue
    raise AssertionError("no valid identifier in the register's delivery")


def test_an_opt_out_at_one_node_reaches_every_node_and_the_release_at_the_next_query(fed, record_release):
    release_id = f"rel-{record_release:05d}"
    sql = {"sql": "SELECT count(DISTINCT person_id) AS persons FROM register_visit", "format": "json"}

    def persons() -> int:
        with fed.hub_api(fed.researcher) as api:  # type: ignore[attr-defined]
            return int(api.post(f"/releases/{release_id}/query", json=sql).json()["rows"][0][0])

    before = persons()
    personnummer = _a_registered_personnummer(fed)
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "hdp-node"),
            "opt-out",
            "--personnummer",
            "-",
            "--source",
            "1177-test-case",
        ],
        input=personnummer + "\n",
        env=fed.env("region_uppsala"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "3 other node(s)" in done.stdout
    # recorded at every node, in its own consent registry (by its own consent key)
    for h in fed.holder_ids:
        fed.wait_for(
            f"the opt-out at {h}",
            lambda h=h: (
                "opt_out"
                in fed.command(
                    h,
                    "hdp",
                    "consent",
                    "show",
                    "--personnummer",
                    personnummer,
                    token=fed.stewards[h][0],  # type: ignore[attr-defined]
                    check=False,
                )
            ),
            timeout=60,
        )
    # the register's node sent the person's project pseudonym: the secure environment drops it
    fed.wait_for("the release to drop the person", lambda: persons() == before - 1, timeout=60)
    # the hub's files never held the identifier in clear (sealed per node, relayed)
    hub_bytes = b"".join(p.read_bytes() for p in fed.hub_home.rglob("*") if p.is_file())
    assert personnummer.encode() not in hub_bytes and personnummer[2:].encode() not in hub_bytes


def test_a_node_withdrawing_from_an_assembled_release_takes_its_rows_out_at_the_next_query(
    fed, record_release
):
    release_id = f"rel-{record_release:05d}"
    sql = {
        "sql": "SELECT holder, count(*) AS n FROM patient GROUP BY holder ORDER BY holder",
        "format": "json",
    }

    def holders() -> set[str]:
        with fed.hub_api(fed.researcher) as api:  # type: ignore[attr-defined]
            return {row[0] for row in api.post(f"/releases/{release_id}/query", json=sql).json()["rows"]}

    assert holders() == {"region_orebro", "region_uppsala"}
    fed.command(
        "region_orebro",
        "hdp",
        "request",
        "revoke",
        str(record_release),
        "--justification",
        "The region's steward withdraws approval for its data",
        token=fed.stewards["region_orebro"][0],  # type: ignore[attr-defined]
    )
    fed.wait_for("the release without Örebro's rows", lambda: holders() == {"region_uppsala"}, timeout=120)
    manifest = json.loads((fed.hub_home / "releases" / release_id / "manifest.json").read_text())
    assert sorted(manifest["request"]["holders"]) == ["ndr", "region_uppsala"]
