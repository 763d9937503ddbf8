"""Shared set-up for the web page tests: a migrated governance store, users, tokens, a request,
and a tiny hand-made research zone (random synthetic values; only counts reach a page)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

STEWARDS = {"s-ndr": ("ndr",), "s-upp": ("region_uppsala",), "s-ore": ("region_orebro",)}


@dataclass
class World:
    url: str
    tokens: dict[str, str] = field(default_factory=dict)
    request_id: int = 0  # alice's request, ndr only, submitted
    dual_request_id: int = 0  # filed by "dual", a steward of ndr who is also a researcher


def request_fields(**over):
    fields = dict(
        project="HbA1c trajectories in type 1 diabetes",
        purpose="scientific_research",
        legal_basis="gdpr_6_1_e__9_2_j",
        ethics_ref="2024-01234-01",
        variables=[
            "register_visit.hba1c_mmol_mol",
            "register_visit.birth_year",
            "register_visit.sex",
            "register_visit.county",
        ],
        holders=["ndr"],
        members=["bob"],
        period=("2015-01-01", "2024-12-31"),
        output_tier="aggregate",
        access_days=365,
    )
    fields.update(over)
    return fields


def seed(url: str, *, migrate: bool = True) -> World:
    from governance import service
    from governance.store import session_scope, upgrade

    if migrate:
        upgrade(url)
    world = World(url=url)
    with session_scope(url) as s:
        for name in ("alice", "bob", "carol"):
            service.create_user(s, name=name, roles=["researcher"])
        for name, holders in STEWARDS.items():
            service.create_user(s, name=name, roles=["steward"], holder_ids=holders)
        service.create_user(s, name="dual", roles=["researcher", "steward"], holder_ids=["ndr"])
        for name in ("alice", "bob", "carol", "dual", *STEWARDS):
            world.tokens[name] = service.issue_token(s, user_name=name)
        world.request_id = service.file_request(s, applicant="alice", **request_fields())
        service.submit_request(s, request_id=world.request_id, actor="alice")
        world.dual_request_id = service.file_request(
            s, applicant="dual", **request_fields(project="Dual role steward's own project", members=[])
        )
        service.submit_request(s, request_id=world.dual_request_id, actor="dual")
    return world


def write_research_zone(path: Path, *, persons: int = 60, singleton: bool = True) -> None:
    """A small research/<holder>.duckdb with register_visit; one person alone in a group if ``singleton``."""
    import duckdb

    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute("""CREATE TABLE register_visit (person_id VARCHAR, birth_year INTEGER, sex VARCHAR, id_type VARCHAR,
        county VARCHAR, visit_date DATE, diabetes_type INTEGER, hba1c_mmol_mol DOUBLE, bmi DOUBLE,
        systolic_bp INTEGER, diastolic_bp INTEGER, smoking VARCHAR, treatment VARCHAR)""")
    rows = []
    for i in range(persons):
        pid = hashlib.sha256(f"web-test-person-{i}".encode()).hexdigest()
        birth_year, sex, county = 1960 + (i % 3), ("F", "M")[i % 2], "03"
        for v in range(2):  # two visits each: persons, not rows, are counted
            rows.append(
                (
                    pid,
                    birth_year,
                    sex,
                    "personnummer",
                    county,
                    f"2020-0{v + 1}-15",
                    1,
                    50.0 + v,
                    25.0,
                    120,
                    80,
                    "no",
                    "insulin",
                )
            )
    if singleton:
        rows.append(
            (
                hashlib.sha256(b"web-test-lonely").hexdigest(),
                1931,
                "F",
                "personnummer",
                "25",
                "2020-03-01",
                1,
                60.0,
                22.0,
                130,
                85,
                "no",
                "insulin",
            )
        )
    con.executemany("INSERT INTO register_visit VALUES (" + ", ".join("?" * 13) + ")", rows)
    con.close()


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "page has no CSRF token"
    return m.group(1)


def login(client, token: str):
    """Log in through the form like a browser; returns the final response."""
    form = client.get("/web/login")
    return client.post(
        "/web/login",
        data={"token": token, "csrf_token": csrf_of(form.text), "next": ""},
        follow_redirects=True,
    )
