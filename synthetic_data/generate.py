"""Seeded, deterministic synthetic deliveries for every data holder, plus the defect manifest.

``generate()`` writes, under ``$HDP_HOME/restricted/`` (see docs/ARCHITECTURE.md, "Landing
layout" and "Injected defects")::

    ndr/landing/delivery.json
    ndr/landing/register/ndr_visits.csv            NDR visits (schemas/sources/register.json)
    ndr/landing/register/ndr_visits_tillagg.csv    extra cp1252 file (only when defect_rate > 0)
    ndr/landing/prom/prom_visits.csv               PROM/PREM (schemas/sources/prom.json)
    region_*/landing/delivery.json
    region_*/landing/fhir/<ResourceType>.ndjson[.gz]
    region_*/landing/fhir/bundles/{collection,transaction,searchset}.json
    synthetic/defects.jsonl                        ground truth of every injected defect

The same arguments always give byte-identical files. A run replaces earlier landing files
(it never appends). The returned summary holds counts only, never an identifier.
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

from hdp.settings import Settings, get_settings, holders
from synthetic_data import codes as cs
from synthetic_data import geo
from synthetic_data import identifiers as ids
from synthetic_data.csv_sources import (
    CsvRow,
    decimal_comma,
    prom_rows,
    register_rows,
    render,
    source_schema,
)
from synthetic_data.defects import DEFECT_CLASSES, Line, Tag, csv_lines, dumps, fhir_lines
from synthetic_data.fhir import (
    DEFAULT_EXTRACT_DATE,
    RESOURCE_TYPES,
    IdFactory,
    Resource,
    bundle_extra_resources,
    condition_resource,
    local_datetime,
    observation_resource,
    person_resources,
)
from synthetic_data.population import FIRST_YEAR, Population, build_population

NDR = "ndr"
SUPPLEMENT_FILE = "register/ndr_visits_tillagg.csv"
SUPPLEMENT_ENCODING = "cp1252"
MAX_DEFECT_RATE = 0.2
#: Visits start on 1 January FIRST_YEAR; an extract needs a few months of them.
EARLIEST_EXTRACT_DATE = date(FIRST_YEAR, 4, 1)
#: Share of region NDJSON files delivered gzip-compressed (at least one always is).
GZIP_SHARE = 0.2


class GenerationError(ValueError):
    """The requested generation cannot be done (bad argument or population too small)."""


@dataclass(frozen=True)
class FileCount:
    holder: str
    source: str
    file: str  # relative to the holder's landing dir
    records: int  # data lines (CSV without header, NDJSON lines) or Bundle entries
    compressed: bool = False


@dataclass(frozen=True)
class GenerationSummary:
    """What ``generate`` wrote: counts only, no identifiers or values."""

    seed: int
    persons: int
    defect_rate: float
    extract_date: date
    persons_from_test_list: int
    persons_generated_numbers: int
    samordningsnummer: int
    moved_region: int
    deceased: int
    files: tuple[FileCount, ...]
    defects: Mapping[str, int] = field(default_factory=dict)  # defect_class -> count (all classes)
    manifest_path: Path | None = None
    seconds: float = 0.0

    @property
    def total_defects(self) -> int:
        return sum(self.defects.values())

    def records(self, holder: str | None = None, source: str | None = None) -> int:
        return sum(
            f.records
            for f in self.files
            if (holder is None or f.holder == holder) and (source is None or f.source == source)
        )

    @property
    def note(self) -> str | None:
        if self.persons_generated_numbers:
            return (
                f"{self.persons_generated_numbers} of {self.persons} persons have generated numbers: the "
                f"Skatteverket test list supplies only {self.persons_from_test_list} in the birth years used"
            )
        return None

    def lines(self) -> list[str]:
        """A short human-readable report (counts only)."""
        out = [
            f"persons: {self.persons} (test list {self.persons_from_test_list}, generated "
            f"{self.persons_generated_numbers}, samordningsnummer {self.samordningsnummer}, moved "
            f"{self.moved_region}, deceased {self.deceased}); seed {self.seed}; extract "
            f"{self.extract_date.isoformat()}",
        ]
        for f in self.files:
            gz = " (gzip)" if f.compressed else ""
            out.append(f"  {f.holder:<15} {f.source:<9} {f.file:<42} {f.records:>8}{gz}")
        out.append(f"defects: {self.total_defects} (rate {self.defect_rate})")
        out.extend(f"  {cls:<28} {n:>6}" for cls, n in self.defects.items())
        if self.note:
            out.append(f"NOTE: {self.note}")
        out.append(f"done in {self.seconds:.1f} s")
        return out


@dataclass(frozen=True)
class _DefectLine:
    """A defective line of a written file: its 1-based number (None: the whole file) and tag."""

    line: int | None
    tag: Tag


@dataclass(frozen=True)
class _Written:
    relative: str
    source: str
    records: int
    compressed: bool
    defects: list[_DefectLine]


@dataclass(frozen=True)
class _StagedDelivery:
    """One holder's new landing area, written beside the old one until every holder's is done."""

    tmp: Path
    written: list[_Written]


@dataclass(frozen=True)
class _DefectEntry:
    """One line of the defect manifest (``defect_id`` is added when it is written, in order)."""

    defect_class: str
    holder: str
    source: str
    file: str
    line: int | None
    record_key: str | None
    column: str | None

    def sort_key(self) -> tuple[str, str, int, str]:
        return (self.holder, self.file, self.line or 0, self.defect_class)


def generate(
    settings: Settings | None = None,
    *,
    seed: int = 42,
    persons: int = 2000,
    defect_rate: float = 0.01,
    extract_date: date = DEFAULT_EXTRACT_DATE,
) -> GenerationSummary:
    """Write every holder's landing area and the defect manifest; return counts."""
    started = time.perf_counter()
    _check_arguments(persons, defect_rate, extract_date)
    settings = settings or get_settings()
    regions = _regions()
    population = build_population(seed=seed, persons=persons, extract_date=extract_date)
    staged = _stage_deliveries(settings, population, regions, seed, defect_rate, extract_date)

    manifest: list[_DefectEntry] = []
    files: list[FileCount] = []
    for holder_id, delivery in staged.items():
        _publish(settings, holder_id, delivery, extract_date)
        for w in sorted(delivery.written, key=lambda w: w.relative):
            files.append(FileCount(holder_id, w.source, w.relative, w.records, w.compressed))
            manifest.extend(
                _DefectEntry(
                    d.tag.defect_class,
                    holder_id,
                    w.source,
                    w.relative,
                    d.line,
                    d.tag.record_key,
                    d.tag.column,
                )
                for d in w.defects
            )
    manifest.sort(key=_DefectEntry.sort_key)
    _write_manifest(settings.defect_manifest, manifest)

    counts = Counter(d.defect_class for d in manifest)
    missing = [c for c in DEFECT_CLASSES if counts[c] == 0]
    if defect_rate > 0 and missing:
        raise GenerationError(
            f"population of {persons} is too small to inject every defect class (missing: "
            f"{', '.join(missing)}); use more persons"
        )
    people = population.persons
    return GenerationSummary(
        seed=seed,
        persons=persons,
        defect_rate=defect_rate,
        extract_date=extract_date,
        persons_from_test_list=population.from_test_list,
        persons_generated_numbers=population.generated,
        samordningsnummer=sum(1 for p in people if p.id_type == "samordningsnummer"),
        moved_region=sum(1 for p in people if p.previous_address is not None),
        deceased=sum(1 for p in people if p.death_date is not None),
        files=tuple(files),
        defects={c: counts[c] for c in DEFECT_CLASSES},
        manifest_path=settings.defect_manifest,
        seconds=round(time.perf_counter() - started, 2),
    )


def _check_arguments(persons: int, defect_rate: float, extract_date: date) -> None:
    if persons < 1:
        raise GenerationError(f"persons must be at least 1 (got {persons})")
    if not 0 <= defect_rate <= MAX_DEFECT_RATE:
        raise GenerationError(f"defect_rate must be between 0 and {MAX_DEFECT_RATE} (got {defect_rate})")
    if extract_date < EARLIEST_EXTRACT_DATE:
        raise GenerationError(
            f"extract_date must be on or after {EARLIEST_EXTRACT_DATE.isoformat()} (visits start in {FIRST_YEAR})"
        )


def _regions() -> list[str]:
    """The region holders of schemas/holders.json, which must be the generator's regions."""
    regions = [h.id for h in holders() if h.kind == "region"]
    if tuple(regions) != geo.REGIONS:
        raise GenerationError(
            f"schemas/holders.json regions {regions} differ from the generator's {geo.REGIONS}"
        )
    return regions


def _stage_deliveries(
    settings: Settings,
    population: Population,
    regions: list[str],
    seed: int,
    defect_rate: float,
    extract_date: date,
) -> dict[str, _StagedDelivery]:
    """Every holder's delivery, written to staging folders (all removed if one fails)."""
    staged: dict[str, _StagedDelivery] = {}
    try:
        staged[NDR] = _write_ndr(settings, population, seed, defect_rate, extract_date)
        gz_files = _gzip_choice(seed)
        for region in regions:
            staged[region] = _write_region(
                settings, population, region, seed, defect_rate, extract_date, gz_files
            )
    except BaseException:
        for delivery in staged.values():
            shutil.rmtree(delivery.tmp, ignore_errors=True)
        raise
    return staged


def _publish(settings: Settings, holder_id: str, delivery: _StagedDelivery, extract_date: date) -> None:
    """Add ``delivery.json`` to the staged delivery and put it in place of the holder's landing area."""
    landing = settings.landing_dir(holder_id)
    manifest = {
        "holder": holder_id,
        "extract_date": extract_date.isoformat(),
        "files": sorted(w.relative for w in delivery.written),
    }
    (delivery.tmp / "delivery.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    # replace the old delivery as a whole: never append to or mix with an earlier run
    if landing.exists():
        shutil.rmtree(landing)
    delivery.tmp.rename(landing)


def _write_manifest(path: Path, entries: list[_DefectEntry]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for n, entry in enumerate(entries, start=1):
            out.write(json.dumps({"defect_id": n, **asdict(entry)}, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------------------------------------
# writing


def _staging_dir(settings: Settings, holder_id: str) -> Path:
    tmp = settings.holder_dir(holder_id) / "landing.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _write_lines(
    path: Path,
    lines: list[Line],
    *,
    header: str | None,
    trailing_newline: bool,
    compressed: bool = False,
    encoding: str = "utf-8",
) -> list[_DefectLine]:
    """Write lines and return the defective ones (1-based line number and tag)."""
    texts = ([header] if header is not None else []) + [t for t, _ in lines]
    data = "\n".join(texts)
    if trailing_newline and texts:
        data += "\n"
    raw = data.encode(encoding)
    path.parent.mkdir(parents=True, exist_ok=True)
    if compressed:
        with (
            path.open("wb") as fh,
            gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=6) as gz,
        ):
            gz.write(raw)
    else:
        path.write_bytes(raw)
    offset = 2 if header is not None else 1
    return [_DefectLine(i + offset, tag) for i, (_, tag) in enumerate(lines) if tag is not None]


def _write_ndr(
    settings: Settings, population: Population, seed: int, rate: float, extract_date: date
) -> _StagedDelivery:
    tmp = _staging_dir(settings, NDR)
    written: list[_Written] = []
    reg_schema, prom_schema = source_schema("register"), source_schema("prom")
    reg = register_rows(population, seed=seed, extract_date=extract_date)
    prom = prom_rows(population, seed=seed, extract_date=extract_date)
    truncate_prom = rate > 0 and len(prom) >= 2
    for schema, rows, truncate in (
        (reg_schema, reg, rate > 0 and not truncate_prom),
        (prom_schema, prom, truncate_prom),
    ):
        lines = csv_lines(
            schema,
            rows,
            rate=rate,
            rng=random.Random(f"{seed}:defects:{schema.file}"),
            extract_date=extract_date,
            truncate=truncate,
        )
        defects = _write_lines(tmp / schema.file, lines, header=schema.header, trailing_newline=not truncate)
        written.append(_Written(schema.file, schema.source, len(lines), False, defects))
    if rate > 0:
        lines = _supplement_lines(population, reg, seed, extract_date)
        _write_lines(
            tmp / SUPPLEMENT_FILE,
            lines,
            header=reg_schema.header,
            trailing_newline=True,
            encoding=SUPPLEMENT_ENCODING,
        )
        written.append(
            _Written(
                SUPPLEMENT_FILE, "register", len(lines), False, [_DefectLine(None, Tag("file.not_utf8"))]
            )
        )
    return _StagedDelivery(tmp, written)


def _supplement_lines(population: Population, reg: list[CsvRow], seed: int, extract_date: date) -> list[Line]:
    """A late supplementary delivery in cp1252 (as some older register exports still are)."""
    schema = source_schema("register")
    col = {raw: i for i, raw in enumerate(schema.raws)}
    rng = random.Random(f"{seed}:supplement")
    alive = [p for p in population.persons if p.death_date is None]
    out: list[Line] = []
    for p in rng.sample(alive, min(5, len(alive))):
        taken = {v.day for v in p.visits}
        day = extract_date - timedelta(days=rng.randint(3, 25))
        while day in taken:
            day -= timedelta(days=1)
        last = p.visits[-1]
        f = [""] * len(schema.raws)
        f[col["personnummer"]] = p.number
        f[col["first_name"]] = rng.choice(geo.NON_ASCII_GIVEN_NAMES)  # å/ä/ö: not valid UTF-8 in cp1252
        f[col["family_name"]] = rng.choice(geo.NON_ASCII_FAMILY_NAMES)
        f[col["postal_code"]] = p.address.postal_code
        f[col["visit_date"]] = day.isoformat()
        f[col["diabetes_type"]] = p.diabetes_type
        f[col["hba1c_mmol_mol"]] = str(last.hba1c)
        f[col["bmi"]] = decimal_comma(last.bmi)
        f[col["systolic_bp"]] = str(last.systolic)
        f[col["diastolic_bp"]] = str(last.diastolic)
        f[col["smoking"]] = last.smoking
        f[col["treatment"]] = last.treatment
        out.append((render(schema, f), None))
    return out


def _gzip_choice(seed: int) -> set[tuple[str, str]]:
    rng = random.Random(f"{seed}:gzip")
    chosen = {(r, t) for r in geo.REGIONS for t in RESOURCE_TYPES if rng.random() < GZIP_SHARE}
    return chosen or {(geo.REGIONS[-1], "Observation")}


def _write_region(
    settings: Settings,
    population: Population,
    region: str,
    seed: int,
    rate: float,
    extract_date: date,
    gz_files: set[tuple[str, str]],
) -> _StagedDelivery:
    tmp = _staging_dir(settings, region)
    new_id = IdFactory(seed, region)
    by_type: dict[str, list[Resource]] = {t: [] for t in RESOURCE_TYPES}
    for index in population.by_region[region]:
        for r in person_resources(population.persons[index], region, seed=seed, new_id=new_id):
            by_type[r["resourceType"]].append(r)

    misplaced_day = extract_date - timedelta(days=40)
    written: list[_Written] = []
    for rtype in RESOURCE_TYPES:
        compressed = (region, rtype) in gz_files
        relative = f"fhir/{rtype}.ndjson" + (".gz" if compressed else "")
        lines = fhir_lines(
            rtype,
            by_type[rtype],
            rate=rate,
            rng=random.Random(f"{seed}:defects:{region}:{rtype}"),
            new_id=new_id,
            misplaced=_misplaced_builder(rtype, new_id, misplaced_day),
        )
        defects = _write_lines(
            tmp / relative, lines, header=None, trailing_newline=True, compressed=compressed
        )
        written.append(_Written(relative, "fhir", len(lines), compressed, defects))

    for name, bundle in _bundles(population, region, seed, extract_date).items():
        relative = f"fhir/bundles/{name}.json"
        path = tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(bundle, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        written.append(_Written(relative, "fhir", len(bundle["entry"]), False, []))
    return _StagedDelivery(tmp, written)


def _misplaced_builder(resource_type: str, new_id: IdFactory, day: date) -> Callable[[str, str], Resource]:
    """For the wrong-resource-type defect in ``resource_type``'s file: ``build(pid, tag)`` makes a
    valid resource of another type for patient ``pid``."""

    def build(pid: str, tag: str) -> Resource:
        if resource_type == "Observation":  # a Condition in the Observation file
            return condition_resource(
                new_id("Condition", "misplaced", tag),
                pid,
                code="I10",
                recorded=day,
                onset=None,
                encounter=None,
                category="problem-list-item",
            )
        return observation_resource(  # an Observation in another type's file
            new_id("Observation", "misplaced", tag),
            pid,
            None,
            system=cs.LOINC_SYSTEM,
            code=cs.BMI_LOINC[0],
            display=cs.BMI_LOINC[1],
            value=27.5,
            unit="kg/m2",
            when=local_datetime(day, 600),
            lab=False,
        )

    return build


def _bundles(population: Population, region: str, seed: int, extract_date: date) -> dict[str, Resource]:
    """Collection, transaction and searchset Bundles with extra resources of existing patients."""
    rng = random.Random(f"{seed}:bundles:{region}")
    new_id = IdFactory(seed, region)
    candidates = [
        i
        for i in population.by_region[region]
        if population.persons[i].death_date is None and population.persons[i].regions[-1] == region
    ]
    chosen = rng.sample(candidates, min(6, len(candidates)))
    base = f"https://fhir.{region.replace('_', '-')}.example.se/fhir"
    timestamp = local_datetime(extract_date, 0)
    bundles: dict[str, Resource] = {}
    for b, kind in enumerate(("collection", "transaction", "searchset")):
        resources: list[Resource] = []
        for index in chosen[2 * b : 2 * b + 2]:
            when = extract_date - timedelta(days=rng.randint(2, 20))
            resources.extend(
                bundle_extra_resources(population.persons[index], region, seed=seed, tag=kind, when=when)
            )
        bundle: Resource = {
            "resourceType": "Bundle",
            "id": new_id("Bundle", kind),
            "type": kind,
            "timestamp": timestamp,
        }
        if kind == "searchset":
            matches = [r for r in resources if r["resourceType"] == "Observation"]
            bundle["total"] = len(matches)
            bundle["link"] = [
                {
                    "relation": "self",
                    "url": f"{base}/Observation?code=59261-8,NPU27300&_include=Observation:encounter",
                }
            ]
            bundle["entry"] = [
                {
                    "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
                    "resource": r,
                    "search": {"mode": "match" if r["resourceType"] == "Observation" else "include"},
                }
                for r in resources
            ]
        elif kind == "transaction":
            bundle["entry"] = [
                {
                    "fullUrl": f"urn:uuid:{r['id']}",
                    "resource": r,
                    "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                }
                for r in resources
            ]
        else:
            bundle["entry"] = [
                {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r} for r in resources
            ]
        bundles[kind] = bundle
    return bundles


__all__ = [
    "FileCount",
    "GenerationError",
    "GenerationSummary",
    "generate",
    "dumps",
    "ids",
]
