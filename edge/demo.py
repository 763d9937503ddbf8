"""The whole product on one machine: what ``make demo`` shows a new user.

1. generate synthetic deliveries for every data holder (with a few injected defects);
2. run the ingest and pseudonymise DAGs of every holder through Airflow;
3. create users (a researcher, stewards of each holder), record three citizens' opt-outs;
4. the researcher files two requests, one per output tier, and each holder's steward(s) approve them:
   * record-level (pseudonymised microdata, justified) over three holders;
   * aggregate-only (anonymised: no linkage variable, answers are disclosure-controlled cells);
5. run the release DAG: both releases are built, gated and published;
6. the researcher queries both through the access layer (the aggregate one with a grouped query);
   another researcher is refused.

The summary names both release ids, with a ready ``hdp query`` command for each, so both tiers
can be tried at once. Re-running the demo on the same data home re-uses the users and files a
fresh pair of requests (earlier releases stay until their permits end).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from access.app import create_app
from edge import orchestrate
from governance import consent, service, store
from hdp.settings import get_settings, open_private
from privacy.domains import consent_key
from synthetic_data.generate import generate

log = logging.getLogger(__name__)

RESEARCHER = "anna.forskare"
OTHER_RESEARCHER = "bertil.forskare"
STEWARDS = {
    "ndr": ["stina.ndr"],
    "region_uppsala": ["ulf.uppsala"],
    "region_orebro": ["olga.orebro", "oskar.orebro"],  # Örebro requires two reviewers
    "region_skane": ["sara.skane"],
}
DEMO_REQUEST: dict[str, Any] = {
    "project": "HbA1c, livskvalitet och vårdkontakter vid diabetes i Mellansverige",
    "purpose": "scientific_research",
    "legal_basis": "gdpr_6_1_e__9_2_j",
    "ethics_ref": "2025-01234-01",
    "holders": ["ndr", "region_uppsala", "region_orebro"],
    "variables": [
        "register_visit.birth_year",
        "register_visit.sex",
        "register_visit.visit_date",
        "register_visit.diabetes_type",
        "register_visit.hba1c_mmol_mol",
        "register_visit.bmi",
        "prom_response.visit_date",
        "prom_response.eq_vas",
        "prom_response.eq5d_mobility",
        "prom_response.eq5d_level_sum",
        "prom_response.eq5d_index_se_5l_tto_2020",
        "prom_response.prem_overall",
        "prom_response.prem_overall_positive",
        "condition.code",
        "condition.recorded_date",
    ],
    "period": ("2022-01-01", "2026-10-31"),
    "cohort_criteria": {"register_visit.diabetes_type": {"in": ["typ1", "typ2"]}},
    "data_form": "pseudonymised",
    "pseudonymisation_justification": (
        "Longitudinal linkage of register visits, PROM answers and journal diagnoses per person is "
        "the core of the study design; aggregates cannot answer the question."
    ),
    "output_tier": "record",
}
#: The aggregate-only request: anonymised data (no linkage variable, so no pseudonymisation
#: justification), answers only as disclosure-controlled cells. Two holders, so two stewards decide.
AGGREGATE_REQUEST: dict[str, Any] = {
    "project": "HbA1c och BMI per kön och diabetestyp – aggregerad uppföljning i NDR och Region Skåne",
    "purpose": "scientific_research",
    "legal_basis": "gdpr_6_1_e__9_2_j",
    "ethics_ref": "2025-01234-01",
    "holders": ["ndr", "region_skane"],
    "variables": [
        "register_visit.birth_year",
        "register_visit.sex",
        "register_visit.visit_date",
        "register_visit.diabetes_type",
        "register_visit.hba1c_mmol_mol",
        "register_visit.bmi",
        "patient.birth_year",
        "patient.sex",
        "patient.county",
    ],
    "period": ("2022-01-01", "2026-10-31"),
    "data_form": "anonymised",
    "output_tier": "aggregate",
}
#: A grouped query the aggregate tier answers (kept to the closed grammar: plain group key,
#: persons, rows and a mean).
AGGREGATE_QUERY = (
    "SELECT sex, count(DISTINCT person_id) AS persons, count(*) AS visits, avg(hba1c_mmol_mol) AS mean_hba1c "
    "FROM register_visit GROUP BY sex"
)
TIERS: dict[str, dict[str, Any]] = {"record": DEMO_REQUEST, "aggregate": AGGREGATE_REQUEST}
#: where the demos keep their users' sign-in tokens (owner-only), instead of printing them
CREDENTIALS_FILE = "demo-credentials.json"
DEMO_QUERY = (
    "SELECT diabetes_type, count(DISTINCT person_id) AS persons, count(*) AS visits, "
    "round(avg(hba1c_mmol_mol), 1) AS mean_hba1c FROM register_visit GROUP BY diabetes_type ORDER BY persons DESC"
)


def write_credentials(path: Path, url: str, users: list[dict[str, str]]) -> Path:
    """The demo's sign-in tokens in an owner-only (0600) file: never printed on the console."""
    fd = open_private(path)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"hub": url, "web": f"{url}/web/", "users": users}, fh, indent=2)
        fh.write("\n")
    return path


def ensure_users(session: Session) -> dict[str, str]:
    """Create the demo's users if missing; returns fresh tokens for the two researchers."""
    existing = {u.name for u in service.list_users(session)}
    wanted: list[tuple[str, list[str], list[str]]] = [
        (RESEARCHER, ["researcher"], []),
        (OTHER_RESEARCHER, ["researcher"], []),
    ]
    wanted += [(name, ["steward"], [holder]) for holder, names in STEWARDS.items() for name in names]
    for name, roles, holder_ids in wanted:
        if name not in existing:
            service.create_user(session, name=name, roles=roles, holder_ids=holder_ids, actor="demo")
    return {name: service.issue_token(session, user_name=name) for name in (RESEARCHER, OTHER_RESEARCHER)}


def record_opt_outs(session: Session, count: int = 3) -> int:
    """Three persons from the register extract opt out of secondary use (EHDS art. 71).

    Reads identifiers inside the restricted zone and stores only their consent keys.
    """
    path = get_settings().landing_dir("ndr") / "register" / "ndr_visits.csv"
    keys: list[str] = []
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter=";"):
            try:
                key = consent_key(row["personnummer"])
            except ValueError:
                continue  # an injected invalid identifier: it cannot opt out through this path
            if key not in keys:
                keys.append(key)
            if len(keys) == count:
                break
    for key in keys:
        consent.record_consent(
            session,
            consent_key=key,
            scope="secondary_use",
            choice="opt_out",
            source_ref="demo-blankett-1177",
            actor="demo",
        )
    return len(keys)


def file_and_approve(url: str, fields: dict[str, Any]) -> int:
    """The researcher files and submits the request; every steward of every holder in scope approves."""
    with store.session_scope(url) as session:
        request_id = service.file_request(session, applicant=RESEARCHER, **fields)
        service.submit_request(session, request_id=request_id, actor=RESEARCHER)
    why = (
        "Aggregate-only output of anonymised data; ethics approval and variables match the purpose."
        if fields["output_tier"] == "aggregate"
        else "Ethics approval and variable list match the purpose; data minimised."
    )
    for holder in fields["holders"]:
        for name in STEWARDS[holder]:
            with store.session_scope(url) as session:
                service.decide(
                    session,
                    request_id=request_id,
                    holder_id=holder,
                    reviewer=name,
                    decision="approve",
                    justification=why,
                )
    return request_id


def run_demo(*, persons: int, seed: int, defect_rate: float) -> dict[str, Any]:
    """Run the whole demo on the data home; the summary names both releases and how to query them."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    summary: dict[str, Any] = {}

    generated = generate(settings, seed=seed, persons=persons, defect_rate=defect_rate)
    summary["generated_defects"] = {k: v for k, v in generated.defects.items() if v}

    orchestrate.migrate_metadata_db()
    ingest_runs = orchestrate.run_dags(
        orchestrate.pipeline_dag_ids("ingest") + orchestrate.pipeline_dag_ids("pseudonymise")
    )
    summary["dag_runs"] = {o.dag_id: o.state for o in ingest_runs}

    store.upgrade(settings.governance_url)
    with store.session_scope(settings.governance_url) as session:
        tokens = ensure_users(session)
        summary["opted_out_persons"] = record_opt_outs(session)
    request_ids = {tier: file_and_approve(settings.governance_url, fields) for tier, fields in TIERS.items()}
    summary["request_id"] = request_ids["record"]
    summary["aggregate_request_id"] = request_ids["aggregate"]

    release_runs = orchestrate.run_dags(["release"])  # builds every approved request: both tiers
    summary["dag_runs"].update({o.dag_id: o.state for o in release_runs})
    release_ids = _release_ids(settings.governance_url, request_ids)
    summary["release_id"] = release_ids["record"]
    summary["aggregate_release_id"] = release_ids["aggregate"]

    summary.update(_query_both_tiers(release_ids, tokens))
    # The tokens go to an owner-only file: the summary is printed, and a token is a secret.
    summary["credentials"] = str(
        write_credentials(
            settings.home / CREDENTIALS_FILE,
            "http://127.0.0.1:8000",
            [
                {"name": name, "role": "researcher", "party": "this data home", "token": token}
                for name, token in tokens.items()
            ],
        )
    )
    # Both tiers at once: one token ($HDP_TOKEN), two releases, a command for each (no server needed).
    # A record-level result comes back only as a preview (json/arrow); aggregate cells leave as csv.
    summary["releases"] = {
        tier: {
            "release_id": release_ids[tier],
            "request_id": request_ids[tier],
            "output_tier": tier,
            "try": f"HDP_TOKEN=<researcher_token> .venv/bin/hdp query --in-process --release {release_ids[tier]}"
            f'{" --format json" if tier == "record" else ""} "{sql}"',
        }
        for tier, sql in (("record", DEMO_QUERY), ("aggregate", AGGREGATE_QUERY))
    }
    return summary


def _release_ids(url: str, request_ids: dict[str, int]) -> dict[str, str | None]:
    """The release bound to each tier's permit (None if the release DAG did not publish it)."""
    release_ids: dict[str, str | None] = {}
    with store.session_scope(url) as session:
        for tier, request_id in request_ids.items():
            permit = service.permit_for_request(session, request_id=request_id, at=datetime.now(UTC))
            release_ids[tier] = permit.release_id if permit else None
    return release_ids


def _query_both_tiers(release_ids: dict[str, str | None], tokens: dict[str, str]) -> dict[str, Any]:
    """The researcher queries both releases through the access layer; the other researcher is refused."""
    from fastapi.testclient import TestClient  # slow to import, and only the demo needs it

    client = TestClient(create_app())

    def query(release_id: str | None, sql: str, user: str) -> Any:
        return client.post(
            f"/releases/{release_id}/query",
            json={"sql": sql, "format": "json"},
            headers={"Authorization": f"Bearer {tokens[user]}"},
        )

    answer = query(release_ids["record"], DEMO_QUERY, RESEARCHER)
    aggregate = query(release_ids["aggregate"], AGGREGATE_QUERY, RESEARCHER)
    refused = query(release_ids["record"], DEMO_QUERY, OTHER_RESEARCHER)
    return {
        "researcher_query": {"status": answer.status_code, "sql": DEMO_QUERY, "result": answer.json()},
        "aggregate_query": {
            "status": aggregate.status_code,
            "sql": AGGREGATE_QUERY,
            "result": aggregate.json(),
        },
        "other_researcher_status": refused.status_code,
    }
