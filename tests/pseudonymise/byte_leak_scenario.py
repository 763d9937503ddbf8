"""One run of pseudonymisation and release building on a heap full of identifiers.

Run as a script, in a process of its own (it changes glibc's allocator settings for the whole
process), by ``test_zone_bytes.py``::

    python tests/pseudonymise/byte_leak_scenario.py <home> <seed> <persons>

It builds the raw zones of ``ndr`` (register and PROM) and ``region_uppsala`` (FHIR) from the
synthetic population, pseudonymises both, assembles a release over both, and scans every
file outside ``restricted/`` byte by byte (and cell by cell) for every form of every
identifier of the population, every full name and every street address. It prints one JSON
line: ``{"needles": <count>, "leaks": [<path: hits>...], "files": <count>}``.

Two things make one run show what ordinary runs show only now and then. The row counts are
chosen (:func:`fit`) so that the last segment of each pseudonym column is 80-99 % full: DuckDB
writes such a segment's whole block, with the gap between its offsets and its strings as the
buffer held it (a segment under 80 % is compacted first). And the heap is made hostile: glibc
serves large blocks from its heap rather than from fresh zeroed mappings, with one arena for
every thread, and before every step 100 MiB of it is filled with identifiers, names and
addresses and freed. Before the fix, most runs put tens to hundreds of identifiers into
``research/ndr.duckdb`` (the person map's raw values, from DuckDB's own freed buffers).
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import json
import os
import random
import sys
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXTRACT_DATE = date(2026, 1, 15)
BLOCK = 256 * 1024

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.free.argtypes = [ctypes.c_void_p]


def hostile_allocator() -> None:
    """Large blocks from the heap (M_MMAP_THRESHOLD 32 MiB), kept after free (M_TRIM_THRESHOLD),
    one arena for all threads (M_ARENA_MAX 1): what is freed is what the next malloc gets."""
    for param, value in ((-3, 32 << 20), (-1, 1 << 30), (-8, 1)):
        _libc.mallopt(param, value)


def spray(payload: bytes, blocks: int = 400) -> None:
    """Fill ``blocks`` heap blocks of 256 KiB with ``payload`` (repeated), then free them."""
    fill = (payload * (BLOCK // max(len(payload), 1) + 1))[:BLOCK]
    ptrs = []
    for _ in range(blocks):
        p = _libc.malloc(BLOCK)
        if p:
            ctypes.memmove(p, fill, BLOCK)
            ptrs.append(p)
    for p in ptrs:
        _libc.free(p)


#: Rows of 64-character pseudonyms that fill one uncompressed string segment (a 256 KiB block).
SEGMENT_ROWS = 3854


def fit(rows: list, rng: random.Random) -> list:
    """The first n rows, n chosen so that the last segment of a pseudonym column is 80-99 % full:
    DuckDB writes such a segment without compacting it, gap included (smaller ones are moved up)."""
    tail = rng.randint(3100, 3800)
    segments = (len(rows) - tail) // SEGMENT_ROWS
    return rows[: segments * SEGMENT_ROWS + tail] if segments >= 0 else rows


def _forms(number: str) -> list[str]:
    return [number, f"{number[:8]}-{number[8:]}", f"{number[2:8]}-{number[8:]}"]


def build_raw_zones(settings, population, seed: int) -> None:
    import duckdb
    import pyarrow as pa

    rng = random.Random(seed)
    for holder in ("ndr", "region_uppsala"):
        landing = settings.ensure_restricted(settings.landing_dir(holder))
        (landing / "delivery.json").write_text(
            json.dumps({"holder": holder, "extract_date": str(EXTRACT_DATE), "files": []})
        )
    reg, prom = [], []
    for p in population.persons:
        for v in p.visits:
            ident = rng.choice(_forms(p.number))
            reg.append(
                (
                    ident,
                    p.given[0],
                    p.family,
                    p.address.postal_code,
                    v.day,
                    p.diabetes_type,
                    float(v.hba1c),
                    v.bmi,
                    v.systolic,
                    v.diastolic,
                    v.smoking,
                    v.treatment,
                    "register/ndr_visits.csv",
                    len(reg) + 2,
                )
            )
            if v.prom is not None:
                prom.append(
                    (
                        ident,
                        v.day,
                        *v.prom.levels,
                        v.prom.vas,
                        *v.prom.prem,
                        "prom/prom_visits.csv",
                        len(prom) + 2,
                    )
                )
    reg, prom = fit(reg, rng), fit(prom, rng)
    reg_cols = [
        "personnummer",
        "first_name",
        "family_name",
        "postal_code",
        "visit_date",
        "diabetes_type",
        "hba1c_mmol_mol",
        "bmi",
        "systolic_bp",
        "diastolic_bp",
        "smoking",
        "treatment",
        "_source_file",
        "_line_no",
    ]
    prom_cols = [
        "personnummer",
        "visit_date",
        "eq5d_mobility",
        "eq5d_self_care",
        "eq5d_usual_activities",
        "eq5d_pain_discomfort",
        "eq5d_anxiety_depression",
        "eq_vas",
        "prem_respect",
        "prem_involvement",
        "prem_information",
        "prem_accessibility",
        "prem_overall",
        "_source_file",
        "_line_no",
    ]
    path = settings.raw_db("ndr")
    con = duckdb.connect(str(path))
    for name, cols, rows in (("register_visit", reg_cols, reg), ("prom_response", prom_cols, prom)):
        con.register("_rows", pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)}))
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM _rows")
        con.unregister("_rows")
    con.close()

    region = "region_uppsala"
    patients, resources, encounters, conditions = [], [], [], []
    for idx in population.by_region[region]:
        p = population.persons[idx]
        pid = f"pat-{seed}-{idx}"
        patients.append(
            (
                pid,
                "http://electronichealth.se/identifier/personnummer",
                p.number,
                p.family,
                " ".join(p.given),
                p.sex,
                p.birth_date.isoformat(),
                p.address.postal_code,
                None,
            )
        )
        resources.append(
            (
                "Patient",
                pid,
                json.dumps(
                    {
                        "resourceType": "Patient",
                        "id": pid,
                        "identifier": [{"value": p.number}],
                        "name": [{"family": p.family, "given": list(p.given)}],
                        "address": [
                            {
                                "line": [p.address.line],
                                "postalCode": p.address.postal_code,
                                "city": p.address.city,
                            }
                        ],
                    },
                    ensure_ascii=False,
                ),
                "fhir/Patient.ndjson",
                len(resources) + 1,
            )
        )
        for k, v in enumerate(p.visits):
            if v.region != region:
                continue
            eid = f"enc-{seed}-{idx}-{k}"
            encounters.append(
                (
                    eid,
                    pid,
                    "finished",
                    "AMB",
                    f"{v.day.isoformat()}T10:00:00+01:00",
                    f"{v.day.isoformat()}T10:30:00+01:00",
                )
            )
            conditions.append(
                (
                    f"cond-{seed}-{idx}-{k}",
                    pid,
                    eid,
                    "http://hl7.org/fhir/sid/icd-10-se",
                    "E11.9" if p.diabetes_type == "typ2" else "E10.9",
                    v.day.isoformat(),
                )
            )
    encounters, conditions = fit(encounters, rng), fit(conditions, rng)
    path = settings.raw_db(region)
    con = duckdb.connect(str(path))
    for name, cols, rows in (
        ("fhir_resource", ["resource_type", "id", "resource", "_source_file", "_line_no"], resources),
        (
            "fhir_patient",
            [
                "patient_id",
                "identifier_system",
                "personnummer",
                "family_name",
                "given_name",
                "gender",
                "birth_date",
                "postal_code",
                "deceased_date",
            ],
            patients,
        ),
        (
            "fhir_encounter",
            ["encounter_id", "patient_id", "status", "class_code", "start_time", "end_time"],
            encounters,
        ),
        (
            "fhir_condition",
            ["condition_id", "patient_id", "encounter_id", "code_system", "code", "recorded_date"],
            conditions,
        ),
    ):
        columns = {
            c: pa.array([r[i] for r in rows], pa.string()) if c == "deceased_date" else [r[i] for r in rows]
            for i, c in enumerate(cols)
        }
        con.register("_rows", pa.table(columns))
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM _rows")
        con.unregister("_rows")
    con.close()


def needles_of(population) -> set[str]:
    from tests.e2e.leakscan import identifier_forms

    out: set[str] = set()
    for p in population.persons:
        out |= identifier_forms(p.number)
        out.add(f"{p.given[0]} {p.family}")
        out.add(f"{' '.join(p.given)} {p.family}")
        for a in (p.address, p.previous_address):
            if a is not None:
                out.add(a.line)
    return out


def run(home: Path, seed: int, persons: int) -> dict:
    hostile_allocator()
    os.environ["HDP_HOME"] = str(home)
    os.environ["HDP_KEK"] = base64.b64encode(os.urandom(32)).decode()
    os.environ.pop("HDP_KEK_FILE", None)
    sys.path.insert(0, str(REPO))

    from governance.values import ApprovedRequest
    from hdp.settings import get_settings
    from pipelines.pseudonymise import pseudonymise_holder
    from pipelines.release import assemble, release_domain, release_id_for
    from pipelines.release_identity import release_person_map
    from synthetic_data.population import build_population
    from tests.e2e.leakscan import find_leaks

    settings = get_settings()
    population = build_population(seed=seed, persons=persons, extract_date=EXTRACT_DATE)
    needles = needles_of(population)
    payload = "\n".join(sorted(needles)).encode("utf-8")
    build_raw_zones(settings, population, seed)
    for holder in ("ndr", "region_uppsala"):
        spray(payload)
        pseudonymise_holder(holder, settings=settings)
    spray(payload)
    request = ApprovedRequest(
        request_id=seed,
        project="leak scan",
        purpose="scientific_research",
        holders=("ndr", "region_uppsala"),
        variables=(
            "register_visit.birth_year",
            "register_visit.sex",
            "register_visit.county",
            "register_visit.visit_date",
            "register_visit.hba1c_mmol_mol",
            "prom_response.eq_vas",
            "patient.birth_year",
            "encounter.start_time",
            "condition.code",
        ),
        output_tier="aggregate",
        approvals=(),
        period=(None, None),
    )
    person_map = release_person_map(
        holder_ids=request.holders, release_domain=release_domain(seed), settings=settings
    )
    spray(payload)
    assemble(
        request,
        person_map=person_map,
        excluded_consent_keys=frozenset(),
        staging=settings.releases_dir / release_id_for(seed),
        settings=settings,
    )
    files = [p for p in home.rglob("*") if p.is_file() and settings.restricted not in p.parents]
    return {"needles": len(needles), "files": len(files), "leaks": find_leaks(home, needles)}


if __name__ == "__main__":
    result = run(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
    print(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)
