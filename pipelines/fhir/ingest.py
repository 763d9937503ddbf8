"""FHIR ingestion: landing NDJSON / Bundles -> validated ``fhir_resource`` + flattened ``fhir_*`` tables.

Flow for one holder (``ingest_fhir``):

1. Every ``fhir/*.ndjson``, ``fhir/*.ndjson.gz`` (one file per resource type, Bulk Data) and
   every ``fhir/bundles/*.json`` (collection / transaction / searchset) is read as a stream.
2. Worker processes (chunks of whole lines; the machine has two cores) check each line's size
   and nesting depth (``fhir.too_large``, ``json.too_deep``), then validate it:
   * fast path (:mod:`pipelines.fhir.fastvalid`): decoding into msgspec Structs generated
     from the R4B models *is* the validation, in C; it only ever accepts;
   * otherwise the reference (:mod:`pipelines.fhir.validation`: ``fhir.resources`` R4B plus
     required-binding codes) decides, and gives the quarantine reason;
   and check codes against the shipped code lists (``code.unknown`` flags).
3. The main process keeps the order (first occurrence of a ``Type/id`` wins, later ones are
   ``fhir.duplicate_id``), and loads ``fhir_resource`` in Arrow batches into ``raw.duckdb``.
4. Flattening by the ViewDefinitions in ``schemas/views/``: each view is compiled to one DuckDB
   ``INSERT ... SELECT`` over ``fhir_resource`` (:mod:`pipelines.fhir.viewsql`) and run after
   loading, for every resource the fast path accepted with ``sql_safe``; the Python evaluator
   (:mod:`pipelines.fhir.viewdef`, the conformance reference) gives the rows of every other
   resource (reference-validated, or with JSON escapes / duplicate keys) and of any view the
   compiler cannot translate (logged by name). Both give identical rows (differential test).
5. Links: references to Patient / Encounter that resolve to no ingested resource are
   flagged in ``fhir_flag`` (``fhir.dangling_reference``); nothing is dropped for it.

Bad input never stops the run: it goes to ``quarantine`` (stage ``ingest``, source ``fhir``)
with a reason code and a detail that names paths only; ``original`` holds the raw bytes.
Re-running replaces the tables and this stage's quarantine rows.
"""

from __future__ import annotations

import gzip
import json
import logging
import multiprocessing as mp
import os
import re
import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from hdp.settings import SCHEMAS_DIR, Settings, get_settings
from pipelines import quarantine
from pipelines.fhir.fastvalid import decoder as fast_decoder
from pipelines.fhir.fastvalid import fast_decode, sql_safe, struct_unknown_code_paths
from pipelines.fhir.terminology import code_lists, unknown_code_paths
from pipelines.fhir.validation import RESOURCE_TYPES, validate_resource
from pipelines.fhir.viewdef import CompiledView, ViewDefinitionError, load_view
from pipelines.fhir.viewsql import SQL_MACROS, Unsupported, compile_view_sql
from pipelines.warehouse import write_connection

log = logging.getLogger(__name__)

VIEWS_DIR = SCHEMAS_DIR / "views"
STAGE = "ingest"
SOURCE = "fhir"
BUNDLE_TYPES = ("collection", "transaction", "searchset")

#: Lines per worker task: large enough that pickling and scheduling cost little per
#: resource, small enough that two workers stay busy and memory per task stays ~1-2 MB.
CHUNK_LINES = 2000
#: DuckDB's dictionary+FSST string compression makes the raw zone ~2.8x smaller but costs about
#: 4 CPU-seconds per million resources at commit, serially, after all the parallel work (measured:
#: 100,000 resources -> 32 MB in 0.6 CPU-s compressed, 89 MB in 0.2 CPU-s without). The raw zone
#: is rebuilt on every ingest and read by one stage, so speed wins; set True to trade back.
COMPRESS_RAW_STRINGS = False
DUCKDB_MEMORY_LIMIT = "1536MB"
#: Plain files are cut into chunks of ``chunk_lines * _AVG_LINE_BYTES`` bytes (whole lines).
_AVG_LINE_BYTES = 512
#: Chunks read ahead of the main process (bounds memory: ~IN_FLIGHT_CHUNKS x 1 MiB per side).
IN_FLIGHT_CHUNKS = 8
#: Resources buffered in the main process before one Arrow insert into DuckDB.
FLUSH_RESOURCES = 100_000
#: Input limits: a line (resource) larger than this is quarantined as ``fhir.too_large``, one
#: nested deeper than MAX_JSON_DEPTH as ``json.too_deep`` (before any recursive processing).
#: Real resources of the ingested types are a few kB and a few dozen levels deep at most.
MAX_RESOURCE_BYTES = 16 * 2**20
MAX_JSON_DEPTH = 100

# ViewDefinition column type -> DuckDB type. Dates stay VARCHAR on purpose: FHIR dates may be
# partial ("1970-06") and dateTimes carry their offset; the raw zone keeps them as delivered.
_DUCK_TYPES = {
    "boolean": "BOOLEAN",
    "integer": "BIGINT",
    "positiveInt": "BIGINT",
    "unsignedInt": "BIGINT",
    "integer64": "BIGINT",
    "decimal": "DOUBLE",
}

FLAG_DDL = """CREATE TABLE fhir_flag (resource_type VARCHAR, resource_key VARCHAR, flag_code VARCHAR,
    path VARCHAR)"""
RESOURCE_DDL = """CREATE TABLE fhir_resource (resource_type VARCHAR, id VARCHAR, resource JSON,
    _source_file VARCHAR, _line_no BIGINT)"""


@dataclass(frozen=True)
class FhirIngestResult:
    """Counts only (travels as an XCom): never an identifier or a value."""

    holder: str
    files: int
    resources_read: dict[str, int] = field(default_factory=dict)
    resources_valid: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)  # by reason code
    quarantined_by_type: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)  # per flattened table
    dangling_references: int = 0
    unknown_codes: int = 0
    view_errors: int = 0


class FhirIngestError(RuntimeError):
    """The FHIR landing area or the view definitions cannot be used at all."""


# --------------------------------------------------------------------------- per-resource logic
@dataclass
class _Outcome:
    """Result of one resource; exactly one of ``valid`` / ``reason`` is set."""

    rtype: str | None = None
    rid: str | None = None
    valid: bool = False
    reason: str | None = None
    detail: str = ""
    rows: dict[str, list[tuple[Any, ...]]] | None = None
    flags: list[tuple[str, str]] | None = None  # (flag_code, path)
    sql_flat: bool = False  # rows of the SQL-compiled views come from DuckDB, not from ``rows``


_state: dict[str, Any] = {}


@dataclass(frozen=True)
class ViewPlan:
    """Which views run as compiled SQL in DuckDB and which in Python (per resource)."""

    views: dict[str, CompiledView]
    sql: dict[str, str]  # view name -> INSERT ... SELECT (over fhir_resource)
    python_only: dict[str, str]  # view name -> why the SQL compiler could not take it


#: The compiled views read from this name: at each flush, the Arrow batch of the resources whose
#: rows come from SQL (fast path, ``sql_safe``), so flattening runs batch by batch during loading.
_FLAT_SOURCE = "_fhir_flat_batch"


def view_plan(views_dir: Path) -> ViewPlan:
    views: dict[str, CompiledView] = {}
    sql: dict[str, str] = {}
    python_only: dict[str, str] = {}
    for p in sorted(views_dir.glob("*.json")):
        raw, cv = load_view(p)
        views[cv.name] = cv
        try:
            sql[cv.name] = compile_view_sql(raw, cv, source=_FLAT_SOURCE)
        except Unsupported as exc:
            python_only[cv.name] = str(exc)
    return ViewPlan(views, sql, python_only)


def _init_worker(views_dir: str) -> None:
    plan = view_plan(Path(views_dir))
    by_type: dict[str, list[CompiledView]] = {}
    py_by_type: dict[str, list[CompiledView]] = {}
    for v in plan.views.values():
        by_type.setdefault(v.resource, []).append(v)
        if v.name in plan.python_only:
            py_by_type.setdefault(v.resource, []).append(v)
    _state["views_by_type"] = by_type
    _state["py_views_by_type"] = py_by_type
    _state["codes"] = code_lists()


def _record_key(rtype: Any, rid: Any) -> str | None:
    if isinstance(rtype, str) and isinstance(rid, str) and len(rid) <= 64 and rtype in RESOURCE_TYPES:
        return f"{rtype}/{rid}"
    return None


def classify(obj: Any, raw: bytes | str, expected: str | None) -> _Outcome:
    """Validate, flatten and terminology-check one decoded resource (pure, no I/O)."""
    if type(obj) is not dict:
        return _Outcome(reason="fhir.invalid", detail="resource: not a JSON object")
    rtype = obj.get("resourceType")
    if type(rtype) is not str:
        return _Outcome(reason="fhir.invalid", detail="resourceType: required element missing")
    if expected is not None and rtype != expected:
        return _Outcome(
            rtype=rtype,
            reason="fhir.wrong_resource_type",
            detail=f"resourceType: not the file's resource type ({expected})",
        )
    if rtype not in RESOURCE_TYPES:
        return _Outcome(
            rtype=None,
            reason="fhir.wrong_resource_type",
            detail="resourceType: not a resource type this platform ingests",
        )
    rid = obj.get("id")
    issues = validate_resource(obj, raw)
    if issues:
        detail = "; ".join(str(i) for i in issues[:5]) + (
            f" (+{len(issues) - 5} more)" if len(issues) > 5 else ""
        )
        return _Outcome(
            rtype=rtype, rid=rid if isinstance(rid, str) else None, reason="fhir.invalid", detail=detail
        )
    if type(rid) is not str:
        return _Outcome(rtype=rtype, reason="fhir.invalid", detail=f"{rtype}.id: required for ingestion")
    rows: dict[str, list[tuple[Any, ...]]] = {}
    flags: list[tuple[str, str]] = []
    _python_rows(obj, rtype, rows, flags)
    return _Outcome(rtype=rtype, rid=rid, valid=True, rows=rows, flags=flags)


_decode = msgspec.json.Decoder().decode
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(rb"[\[\]{}]")


def json_depth(body: bytes) -> int:
    """Maximum nesting depth of JSON text (brackets inside strings ignored; any input)."""
    depth = best = 0
    for b in _BRACKETS.findall(_STRINGS.sub(b"", body)):
        if b in (b"[", b"{"):
            depth += 1
            best = max(best, depth)
        else:
            depth -= 1
    return best


def _fast_outcome(body: bytes, expected: str) -> _Outcome | None:
    """The fast path: a certainly valid resource (rows left to SQL where possible), or None."""
    struct = fast_decode(body, expected)
    if struct is None:
        return None
    flags = [("code.unknown", p) for p in struct_unknown_code_paths(expected, struct, _state["codes"])]
    if sql_safe(body, struct):
        rows: dict[str, list[tuple[Any, ...]]] = {}
        py_views = _state["py_views_by_type"].get(expected, ())
        if py_views:
            obj = _decode(body)
            for view in py_views:
                try:
                    rows[view.name] = view.rows(obj)
                except ViewDefinitionError:
                    flags.append(("view.error", view.name))
        return _Outcome(rtype=expected, rid=struct.id, valid=True, rows=rows, flags=flags, sql_flat=True)
    # Valid, but possibly with duplicate keys (DuckDB would read another value): Python views.
    obj = _decode(body)
    rows = {}
    flags = []
    _python_rows(obj, expected, rows, flags)
    return _Outcome(rtype=expected, rid=struct.id, valid=True, rows=rows, flags=flags)


def _python_rows(
    obj: dict[str, Any], rtype: str, rows: dict[str, list[tuple[Any, ...]]], flags: list[tuple[str, str]]
) -> None:
    for view in _state["views_by_type"].get(rtype, ()):
        try:
            rows[view.name] = view.rows(obj)
        except ViewDefinitionError:
            # The resource is valid FHIR but breaks the view's assumptions (e.g. a
            # repeated element where the view expects one): keep it, flag it.
            flags.append(("view.error", view.name))
    for path in unknown_code_paths(obj, _state["codes"]):
        flags.append(("code.unknown", path))


def _classify_line(line: bytes, expected: str | None, unterminated: bool) -> _Outcome | None:
    body = line.rstrip(b"\r\n")
    if not body.strip():
        return None
    if len(body) > MAX_RESOURCE_BYTES:
        return _Outcome(reason="fhir.too_large", detail=f"line: larger than {MAX_RESOURCE_BYTES} bytes")
    # Cheap bound first: depth cannot exceed the number of opening brackets.
    if body.count(b"{") + body.count(b"[") > MAX_JSON_DEPTH and json_depth(body) > MAX_JSON_DEPTH:
        return _Outcome(
            reason="json.too_deep", detail=f"line: JSON nested deeper than {MAX_JSON_DEPTH} levels"
        )
    if expected is not None and not unterminated:
        fast = _fast_outcome(body, expected)
        if fast is not None:
            return fast
    try:
        obj = _decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec raises the latter for bad UTF-8
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return _Outcome(reason="encoding.not_utf8", detail="line: not valid UTF-8")
        if unterminated:
            return _Outcome(reason="file.truncated", detail="last line: incomplete (file cut mid-record)")
        return _Outcome(reason="json.malformed", detail="line: not valid JSON")
    return classify(obj, body, expected)


# A chunk travels to a worker as (source_file, expected_type, first_line_no, whole lines as one
# bytes object, last_unterminated).
_Chunk = tuple[str, str | None, int, bytes, bool]
# Fast-path resources of a chunk, column-wise (cheap to pickle, no per-resource work in the main
# process): line_nos, ids, the raw lines concatenated, their int64 Arrow offsets, flags
# [(index, flag_code, path)], rows of Python-only views {index: {view: rows}}.
_FastCols = tuple[
    list[int], list[str], bytes, Any, list[tuple[int, str, str]], dict[int, dict[str, list[tuple[Any, ...]]]]
]


def split_lines(blob: bytes) -> list[bytes]:
    """The lines of a chunk (without their ``\\n``; a ``\\r`` is stripped later)."""
    lines = blob.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the blob ends with a line end
    return lines


def _process_chunk(
    chunk: _Chunk,
) -> tuple[str, str | None, _FastCols, list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Worker: returns (source_file, expected, fast, valid, quarantined) for one chunk of lines.

    fast: the resources the fast validator accepted and SQL can flatten (see ``_FastCols``);
    valid: other valid ones, (line_no, rtype, rid, raw bytes, rows_by_view, flags, sql_flat);
    quarantined: (line_no, reason, detail, record_key, rtype, original bytes).
    """
    source_file, expected, first, blob, last_unterminated = chunk
    lines = split_lines(blob)
    valid: list[tuple[Any, ...]] = []
    quar: list[tuple[Any, ...]] = []
    line_nos: list[int] = []
    ids: list[str] = []
    texts: list[bytes] = []
    fflags: list[tuple[int, str, str]] = []
    pyrows: dict[int, dict[str, list[tuple[Any, ...]]]] = {}
    dec = fast_decoder(expected) if expected is not None else None
    codes = _state["codes"]
    py_views = _state["py_views_by_type"].get(expected, ()) if expected is not None else ()
    last = len(lines) - 1 if last_unterminated else -1
    for i, line in enumerate(lines):
        body = line.rstrip(b"\r\n")
        # The hot loop: the same checks as _classify_line + _fast_outcome, inlined.
        if (
            dec is not None
            and i != last
            and len(body) <= MAX_RESOURCE_BYTES
            and body.count(b"{") + body.count(b"[") <= MAX_JSON_DEPTH
        ):
            try:
                struct = dec.decode(body)
            except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
                struct = None
            if struct is not None and sql_safe(body, struct):
                idx = len(ids)
                line_nos.append(first + i)
                ids.append(struct.id)
                texts.append(body)
                for path in struct_unknown_code_paths(expected, struct, codes):  # type: ignore[arg-type]
                    fflags.append((idx, "code.unknown", path))
                if py_views:
                    obj = _decode(body)
                    rows: dict[str, list[tuple[Any, ...]]] = {}
                    for view in py_views:
                        try:
                            rows[view.name] = view.rows(obj)
                        except ViewDefinitionError:
                            fflags.append((idx, "view.error", view.name))
                    pyrows[idx] = rows
                continue
        out = _classify_line(line, expected, last_unterminated and i == len(lines) - 1)
        if out is None:
            continue
        line_no = first + i
        if out.valid:
            valid.append((line_no, out.rtype, out.rid, body, out.rows, out.flags, out.sql_flat))
        else:
            quar.append(
                (
                    line_no,
                    out.reason,
                    out.detail,
                    _record_key(out.rtype, out.rid),
                    out.rtype or expected,
                    body,
                )
            )
    return (
        source_file,
        expected,
        (line_nos, ids, b"".join(texts), _offsets(texts), fflags, pyrows),
        valid,
        quar,
    )


def _offsets(texts: list[bytes]) -> Any:
    import numpy as np

    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, texts), np.int64, len(texts)), out=offsets[1:])
    return offsets


# --------------------------------------------------------------------------- reading files
def _expected_type(path: Path) -> str | None:
    stem = path.name.split(".", 1)[0]
    return stem if stem in RESOURCE_TYPES else None


class _TruncatedGzip(Exception):
    def __init__(self, line_no: int) -> None:
        self.line_no = line_no


def _ndjson_chunks(
    path: Path, rel: str, chunk_lines: int, file_problems: list[tuple[Any, ...]]
) -> Iterator[_Chunk]:
    """Chunks of whole lines as one bytes object each (pickled to a worker as a single copy).

    Plain files are read in blocks of about ``chunk_lines`` average lines and cut after the last
    newline; compressed files line by line, so that a cut or corrupt stream keeps every line
    decoded before the damage.
    """
    expected = _expected_type(path)
    if path.name.endswith(".gz"):
        yield from _gzip_chunks(path, rel, expected, chunk_lines, file_problems)
        return
    block = max(1, chunk_lines) * _AVG_LINE_BYTES
    first = 1
    pending = b""
    with open(path, "rb") as f:
        data = f.read(block)
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        while data:
            data = pending + data if pending else data
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # no line end yet (a very long line): read on
                pending = data
            else:
                blob, pending = data[:cut], data[cut:]
                yield rel, expected, first, blob, False
                first += blob.count(b"\n")
            data = f.read(block)
    if pending:
        yield rel, expected, first, pending, True  # the last line has no line end: maybe cut


def _gzip_chunks(
    path: Path, rel: str, expected: str | None, chunk_lines: int, file_problems: list[tuple[Any, ...]]
) -> Iterator[_Chunk]:
    lines: list[bytes] = []
    first = 1
    line_no = 0
    try:
        with gzip.open(path, "rb") as f:
            for line in f:
                line_no += 1
                if line_no == 1 and line.startswith(b"\xef\xbb\xbf"):
                    line = line[3:]
                lines.append(line)
                if len(lines) >= chunk_lines:
                    yield rel, expected, first, b"".join(lines), not lines[-1].endswith(b"\n")
                    first += len(lines)
                    lines = []
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError):
        # Compressed stream cut or corrupt: what was decoded is kept; the rest is a file-level issue.
        file_problems.append(
            (rel, line_no + 1, "file.truncated", "compressed stream ends early or is corrupt", expected)
        )
        if lines:
            # The last decoded line may be partial: treat it as the truncated record.
            yield rel, expected, first, b"".join(lines), True
        return
    if lines:
        yield rel, expected, first, b"".join(lines), not lines[-1].endswith(b"\n")


def landing_files(landing: Path) -> tuple[list[Path], list[Path]]:
    ndjson = sorted(
        p
        for p in landing.glob("*")
        if p.is_file() and (p.name.endswith(".ndjson") or p.name.endswith(".ndjson.gz"))
    )
    bundles = sorted(p for p in (landing / "bundles").glob("*.json") if p.is_file())
    return ndjson, bundles


# --------------------------------------------------------------------------- bundles
def _rewrite_refs(node: Any, urls: dict[str, str]) -> Any:
    """Resolve intra-bundle ``urn:uuid:`` references to ``Type/id`` (what a FHIR server does)."""
    if type(node) is dict:
        out = {}
        for k, v in node.items():
            if k == "reference" and type(v) is str and v in urls:
                out[k] = urls[v]
            else:
                out[k] = _rewrite_refs(v, urls)
        return out
    if type(node) is list:
        return [_rewrite_refs(x, urls) for x in node]
    return node


def bundle_entries(data: bytes) -> tuple[list[tuple[int, Any, str]], list[tuple[int | None, str, str]]]:
    """Entries of a Bundle as (index, resource, raw_json) and bundle-level problems (index, reason, detail).

    Transaction entries without an id get the uuid of their ``urn:uuid:`` fullUrl as id, so
    that re-runs give the same keys; references between entries are rewritten accordingly.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return [], [(None, "encoding.not_utf8", "file: not valid UTF-8")]
    try:
        bundle = json.loads(text)
    except json.JSONDecodeError:
        return [], [(None, "json.malformed", "file: not valid JSON")]
    if type(bundle) is not dict or bundle.get("resourceType") != "Bundle":
        return [], [
            (None, "fhir.wrong_resource_type", "resourceType: a file under bundles/ must be a Bundle")
        ]
    if bundle.get("type") not in BUNDLE_TYPES:
        return [], [(None, "fhir.invalid", "Bundle.type: not collection, transaction or searchset")]
    entries = bundle.get("entry") or []
    if type(entries) is not list:
        return [], [(None, "fhir.invalid", "Bundle.entry: not an array")]
    urls: dict[str, str] = {}
    prepared: list[tuple[int, Any]] = []
    problems: list[tuple[int | None, str, str]] = []
    for i, e in enumerate(entries):
        if type(e) is not dict:
            problems.append((i, "fhir.invalid", f"Bundle.entry[{i}]: not an object"))
            continue
        req = e.get("request")
        if type(req) is dict and req.get("method") == "DELETE":
            continue
        if type(e.get("search")) is dict and e["search"].get("mode") == "outcome":
            continue  # OperationOutcome of a search: not data
        res = e.get("resource")
        if res is None:
            problems.append((i, "fhir.invalid", f"Bundle.entry[{i}].resource: required element missing"))
            continue
        full_url = e.get("fullUrl")
        if type(res) is dict and type(res.get("resourceType")) is str:
            if "id" not in res and type(full_url) is str and full_url.startswith("urn:uuid:"):
                res = dict(res, id=full_url[len("urn:uuid:") :])
            if type(full_url) is str and type(res.get("id")) is str:
                urls[full_url] = f"{res['resourceType']}/{res['id']}"
        prepared.append((i, res))
    out = []
    for i, res in prepared:
        res = _rewrite_refs(res, urls) if urls else res
        out.append((i, res, json.dumps(res, ensure_ascii=False, separators=(",", ":"))))
    return out, problems


# --------------------------------------------------------------------------- loading
class _Loader:
    """Buffers rows and writes them to DuckDB in Arrow batches."""

    def __init__(self, con: Any, plan: ViewPlan) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        self.pa = pa
        self.pc = pc
        self.con = con
        self.views = plan.views
        self.sql = plan.sql
        self.sql_types = {plan.views[name].resource for name in plan.sql}
        self.json_type = pa.json_(pa.large_string())
        views = plan.views
        for macro in SQL_MACROS:
            con.execute(macro)
        # One-by-one resources: [rtype, id, text, source_file, line_no, rows come from SQL?]
        self.res: list[list[Any]] = [[], [], [], [], [], []]
        self.batches: list[Any] = []  # fhir_resource record batches built column-wise (add_columns)
        self.rows: dict[str, list[tuple[Any, ...]]] = {n: [] for n in views}
        self.flags: list[list[Any]] = [[], [], [], []]
        self.row_counts: Counter[str] = Counter()
        self.pending = 0

    def add(
        self,
        rtype: str,
        rid: str,
        text: bytes,
        source_file: str,
        line_no: int | None,
        rows: dict[str, list[tuple[Any, ...]]],
        flags: list[tuple[str, str]],
        sql_flat: bool,
    ) -> None:
        for col, v in zip(self.res, (rtype, rid, text, source_file, line_no, sql_flat), strict=True):
            col.append(v)
        for name, rs in rows.items():
            self.rows[name].extend(rs)
        for code, path in flags:
            for col, v in zip(self.flags, (rtype, rid, code, path), strict=True):
                col.append(v)
        self.pending += 1
        if self.pending >= FLUSH_RESOURCES:
            self.flush()

    def add_columns(
        self,
        rtype: str,
        ids: list[str],
        data: bytes,
        offsets: Any,
        source_file: str,
        line_nos: list[int],
        rows_by_idx: dict[int, dict[str, list[tuple[Any, ...]]]],
        flags: list[tuple[int, str, str]],
    ) -> None:
        import numpy as np

        pa = self.pa
        n = len(ids)
        self.batches.append(
            pa.record_batch(
                {
                    "resource_type": pa.repeat(pa.scalar(rtype, pa.string()), n),
                    "id": _ascii_string_array(pa, ids),
                    "resource": _buffer_string_array(pa, data, offsets),
                    "_source_file": pa.repeat(pa.scalar(source_file, pa.string()), n),
                    # (numpy first: pyarrow converts a list of Python ints ~20x slower)
                    "_line_no": pa.array(np.fromiter(line_nos, np.int64, len(line_nos))),
                }
            )
        )
        for rows in rows_by_idx.values():
            for name, rs in rows.items():
                self.rows[name].extend(rs)
        for idx, code, path in flags:
            for col, v in zip(self.flags, (rtype, ids[idx], code, path), strict=True):
                col.append(v)
        self.pending += n
        if self.pending >= FLUSH_RESOURCES:
            self.flush()

    def flush(self) -> None:
        pa = self.pa
        python_flat = None
        if self.res[0]:
            single = pa.record_batch(
                {
                    "resource_type": pa.array(self.res[0], pa.string()),
                    "id": pa.array(self.res[1], pa.large_string()),
                    "resource": _string_array(pa, self.res[2]),
                    "_source_file": pa.array(self.res[3], pa.string()),
                    "_line_no": pa.array(self.res[4], pa.int64()),
                }
            )
            sql_mask = pa.array(self.res[5], pa.bool_())
            self.batches.append(single.filter(sql_mask))
            python_flat = single.filter(self.pc.invert(sql_mask))
        if self.batches:
            # Rows of the SQL-compiled views, from this batch (Python gave the rest, see self.rows).
            flat = pa.Table.from_batches(self.batches)
            types = set(self.pc.unique(flat.column("resource_type")).to_pylist())
            parsed = types <= self.sql_types
            if parsed:
                # Every row is about to be parsed by DuckDB's JSON reader in a view below (which
                # fails the run on anything it cannot read): tag the text as JSON, so that the
                # insert does not parse all of it a second time for the ::JSON cast.
                i = flat.schema.get_field_index("resource")
                flat = flat.set_column(
                    i,
                    "resource",
                    self.pa.chunked_array(
                        [pa.ExtensionArray.from_storage(self.json_type, c) for c in flat.column(i).chunks],
                        type=self.json_type,
                    ),
                )
            self.con.register(_FLAT_SOURCE, flat)
            for name, sql in self.sql.items():
                n = self.con.execute(sql).fetchall()
                self.row_counts[name] += int(n[0][0]) if n else 0
            cast = "" if parsed else "::JSON"
            self.con.execute(
                f"INSERT INTO fhir_resource SELECT resource_type, id, resource{cast}, _source_file,"
                " _line_no FROM _fhir_flat_batch"
            )
            self.con.unregister(_FLAT_SOURCE)
        if python_flat is not None and python_flat.num_rows:
            self.con.register("_fhir_batch", python_flat)
            self.con.execute(
                "INSERT INTO fhir_resource SELECT resource_type, id, resource::JSON, _source_file,"
                " _line_no FROM _fhir_batch"
            )
            self.con.unregister("_fhir_batch")
        for name, rows in self.rows.items():
            if not rows:
                continue
            view = self.views[name]
            cols = list(zip(*rows, strict=True))
            arrays = {}
            for c, values in zip(view.columns, cols, strict=True):
                arrays[c.name] = pa.array(values, type=_arrow_type(pa, c.type))
            self.con.register("_fhir_batch", pa.table(arrays))
            self.con.execute(f'INSERT INTO "{name}" SELECT * FROM _fhir_batch')
            self.con.unregister("_fhir_batch")
            self.row_counts[name] += len(rows)
        if self.flags[0]:
            t = pa.table(
                {
                    "resource_type": self.flags[0],
                    "resource_key": self.flags[1],
                    "flag_code": self.flags[2],
                    "path": self.flags[3],
                }
            )
            self.con.register("_fhir_batch", t)
            self.con.execute("INSERT INTO fhir_flag SELECT * FROM _fhir_batch")
            self.con.unregister("_fhir_batch")
        self.res = [[], [], [], [], [], []]
        self.batches = []
        self.rows = {n: [] for n in self.views}
        self.flags = [[], [], [], []]
        self.pending = 0


def _string_array(pa: Any, texts: list[bytes]) -> Any:
    """An Arrow string array over UTF-8 byte strings, built from one buffer (10x faster than
    ``pa.array(texts, pa.string())``, which converts object by object); UTF-8 is still checked."""
    return _buffer_string_array(pa, b"".join(texts), _offsets(texts))


def _buffer_string_array(pa: Any, data: bytes, offsets: Any) -> Any:
    arr = pa.Array.from_buffers(
        pa.large_string(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    arr.validate(full=True)  # raises on invalid UTF-8: never expected (every line was decoded)
    return arr


def _ascii_string_array(pa: Any, strings: list[str]) -> Any:
    """Like :func:`_string_array` for ``str`` values that are ASCII (FHIR ids on the fast path)."""
    import numpy as np

    data = "".join(strings).encode("utf-8")
    offsets = np.zeros(len(strings) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, strings), np.int64, len(strings)), out=offsets[1:])
    if offsets[-1] != len(data):  # some value was not ASCII: character and byte lengths differ
        return pa.array(strings, pa.large_string())
    return pa.Array.from_buffers(
        pa.large_string(), len(strings), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _arrow_type(pa: Any, fhir_type: str | None) -> Any:
    duck = _DUCK_TYPES.get(fhir_type or "")
    if duck == "BOOLEAN":
        return pa.bool_()
    if duck == "BIGINT":
        return pa.int64()
    if duck == "DOUBLE":
        return pa.float64()
    return pa.string()


def _create_tables(con: Any, views: dict[str, CompiledView]) -> None:
    con.execute("DROP TABLE IF EXISTS fhir_resource")
    con.execute(RESOURCE_DDL)
    con.execute("DROP TABLE IF EXISTS fhir_flag")
    con.execute(FLAG_DDL)
    for name, view in views.items():
        cols = ", ".join(f'"{c.name}" {_DUCK_TYPES.get(c.type or "", "VARCHAR")}' for c in view.columns)
        con.execute(f'DROP TABLE IF EXISTS "{name}"')
        con.execute(f'CREATE TABLE "{name}" ({cols})')


# (table, resource type, column, referenced table, key, path) for the link check.
_LINKS = (
    (
        "fhir_encounter",
        "Encounter",
        "encounter_id",
        "patient_id",
        "fhir_patient",
        "patient_id",
        "Encounter.subject",
    ),
    (
        "fhir_condition",
        "Condition",
        "condition_id",
        "patient_id",
        "fhir_patient",
        "patient_id",
        "Condition.subject",
    ),
    (
        "fhir_condition",
        "Condition",
        "condition_id",
        "encounter_id",
        "fhir_encounter",
        "encounter_id",
        "Condition.encounter",
    ),
    (
        "fhir_observation",
        "Observation",
        "observation_id",
        "patient_id",
        "fhir_patient",
        "patient_id",
        "Observation.subject",
    ),
    (
        "fhir_observation",
        "Observation",
        "observation_id",
        "encounter_id",
        "fhir_encounter",
        "encounter_id",
        "Observation.encounter",
    ),
    (
        "fhir_medication_request",
        "MedicationRequest",
        "medication_request_id",
        "patient_id",
        "fhir_patient",
        "patient_id",
        "MedicationRequest.subject",
    ),
    (
        "fhir_medication_request",
        "MedicationRequest",
        "medication_request_id",
        "encounter_id",
        "fhir_encounter",
        "encounter_id",
        "MedicationRequest.encounter",
    ),
    (
        "fhir_procedure",
        "Procedure",
        "procedure_id",
        "patient_id",
        "fhir_patient",
        "patient_id",
        "Procedure.subject",
    ),
    (
        "fhir_procedure",
        "Procedure",
        "procedure_id",
        "encounter_id",
        "fhir_encounter",
        "encounter_id",
        "Procedure.encounter",
    ),
    (
        "fhir_eq5d_response",
        "QuestionnaireResponse",
        "questionnaire_response_id",
        "patient_id",
        "fhir_patient",
        "patient_id",
        "QuestionnaireResponse.subject",
    ),
    (
        "fhir_eq5d_response",
        "QuestionnaireResponse",
        "questionnaire_response_id",
        "encounter_id",
        "fhir_encounter",
        "encounter_id",
        "QuestionnaireResponse.encounter",
    ),
)


def _flag_dangling(con: Any, views: dict[str, CompiledView]) -> int:
    total = 0
    for table, rtype, key, col, target, target_key, path in _LINKS:
        if table not in views or target not in views:
            continue
        n = con.execute(
            f"""INSERT INTO fhir_flag
                SELECT ?, t."{key}", 'fhir.dangling_reference', ?
                FROM "{table}" t
                WHERE t."{col}" IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM "{target}" r WHERE r."{target_key}" = t."{col}")""",
            [rtype, path],
        ).fetchall()
        total += int(n[0][0]) if n else 0
    return total


def _worker_count(requested: int | None) -> int:
    if requested is not None:
        return max(0, requested)
    # A daemonic process (a Celery prefork worker runs tasks in one) may not start a pool.
    if mp.current_process().daemon:
        return 0
    return max(1, min(os.cpu_count() or 1, 8))


def ingest_fhir(
    holder_id: str,
    *,
    settings: Settings | None = None,
    workers: int | None = None,
    chunk_lines: int = CHUNK_LINES,
) -> FhirIngestResult:
    """Ingest ``restricted/<holder>/landing/fhir/`` into ``restricted/<holder>/raw.duckdb``.

    ``workers=0`` runs everything in this process (tests, debugging).
    """
    settings = settings or get_settings()
    landing = settings.landing_dir(holder_id) / "fhir"
    plan = view_plan(VIEWS_DIR)
    views = plan.views
    if not views:
        raise FhirIngestError(f"no ViewDefinitions found in {VIEWS_DIR}")
    if plan.python_only:
        log.info("fhir views evaluated in Python (not compiled to SQL): %s", sorted(plan.python_only))
    ndjson, bundles = landing_files(landing) if landing.is_dir() else ([], [])

    read: Counter[str] = Counter()
    valid_n: Counter[str] = Counter()
    q_reason: Counter[str] = Counter()
    q_type: Counter[str] = Counter()
    seen: dict[str, set[str]] = {t: set() for t in RESOURCE_TYPES}  # ids delivered so far, by type
    qrecords: list[quarantine.QuarantineRecord] = []
    unknown_codes = 0
    view_errors = 0

    def q(
        source_file: str,
        line_no: int | None,
        reason: str,
        detail: str,
        record_key: str | None,
        rtype: str | None,
        original: bytes | None,
        original_path: str | None = None,
    ) -> None:
        q_reason[reason] += 1
        q_type[rtype or "unknown"] += 1
        qrecords.append(
            quarantine.QuarantineRecord(
                stage=STAGE,
                holder=holder_id,
                source=SOURCE,
                reason_code=reason,
                detail=detail,
                source_file=source_file,
                line_no=line_no,
                record_key=record_key,
                original=original,
                original_path=original_path,
            )
        )

    with write_connection(settings.raw_db(holder_id)) as con:
        # Bound DuckDB's memory whatever the delivery's size (it spills the open transaction to
        # disk beyond this); the workers and buffers add ~0.5 GiB (goal: under 4 GiB in all).
        con.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
        if not COMPRESS_RAW_STRINGS:
            con.execute("SET disabled_compression_methods = 'dict_fsst'")
        con.execute("BEGIN TRANSACTION")
        try:
            _create_tables(con, views)
            quarantine.reset(con, stage=STAGE, source=SOURCE)
            loader = _Loader(con, plan)

            def accept(
                source_file: str,
                line_no: int | None,
                rtype: str,
                rid: str,
                text: bytes,
                rows: dict[str, list[tuple[Any, ...]]],
                flags: list[tuple[str, str]],
                sql_flat: bool,
            ) -> None:
                nonlocal unknown_codes, view_errors
                read[rtype] += 1
                seen_ids = seen[rtype]
                if rid in seen_ids:
                    q(
                        source_file,
                        line_no,
                        "fhir.duplicate_id",
                        f"{rtype}.id: already delivered earlier in this extract",
                        f"{rtype}/{rid}",
                        rtype,
                        text,
                    )
                    return
                seen_ids.add(rid)
                valid_n[rtype] += 1
                unknown_codes += sum(1 for c, _ in flags if c == "code.unknown")
                view_errors += sum(1 for c, _ in flags if c == "view.error")
                loader.add(rtype, rid, text, source_file, line_no, rows, flags, sql_flat)

            def accept_fast(source_file: str, rtype: str, cols: _FastCols) -> None:
                """The fast-path resources of one chunk, in bulk when none of them is a duplicate."""
                nonlocal unknown_codes, view_errors
                line_nos, ids, data, offsets, fflags, pyrows = cols
                seen_ids = seen[rtype]
                if not seen_ids.isdisjoint(ids) or len(set(ids)) != len(ids):
                    by_idx: dict[int, list[tuple[str, str]]] = {}
                    for idx, code, path in fflags:
                        by_idx.setdefault(idx, []).append((code, path))
                    for i in range(len(ids)):
                        accept(
                            source_file,
                            line_nos[i],
                            rtype,
                            ids[i],
                            data[offsets[i] : offsets[i + 1]],
                            pyrows.get(i, {}),
                            by_idx.get(i, []),
                            True,
                        )
                    return
                seen_ids.update(ids)
                read[rtype] += len(ids)
                valid_n[rtype] += len(ids)
                for _idx, code, _path in fflags:
                    if code == "code.unknown":
                        unknown_codes += 1
                    else:
                        view_errors += 1
                loader.add_columns(rtype, ids, data, offsets, source_file, line_nos, pyrows, fflags)

            file_problems: list[tuple[Any, ...]] = []

            # Pool.imap pulls its input as fast as it can: without a bound, whole files would sit
            # in memory, queued for the workers. At most IN_FLIGHT chunks are read ahead.
            in_flight = threading.BoundedSemaphore(IN_FLIGHT_CHUNKS)
            stop = threading.Event()

            def chunks() -> Iterator[_Chunk]:
                for p in ndjson:
                    for chunk in _ndjson_chunks(
                        p, str(p.relative_to(settings.landing_dir(holder_id))), chunk_lines, file_problems
                    ):
                        while not in_flight.acquire(timeout=0.2):
                            if stop.is_set():  # the consumer gave up: let the pool shut down
                                return
                        yield chunk

            n_workers = _worker_count(workers)
            for t in {_expected_type(p) for p in ndjson} - {None}:
                fast_decoder(t)  # build the Structs once, before forking: workers inherit them
            if n_workers == 0:
                _init_worker(str(VIEWS_DIR))
                results: Iterator[Any] = map(_process_chunk, chunks())
                pool = None
            else:
                ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
                pool = ctx.Pool(n_workers, initializer=_init_worker, initargs=(str(VIEWS_DIR),))
                results = pool.imap(_process_chunk, chunks(), chunksize=1)
            try:
                for source_file, expected, fast, valid, quar in results:
                    in_flight.release()
                    for line_no, reason, detail, record_key, rtype, original in quar:
                        read[rtype or "unknown"] += 1
                        q(source_file, line_no, reason, detail, record_key, rtype, original)
                    if not valid:
                        if fast[1]:
                            accept_fast(source_file, expected, fast)
                        continue
                    # Mixed chunk (rare): accept in line order, so the first delivery of an id wins.
                    line_nos, ids, data, offsets, fflags, pyrows = fast
                    by_idx: dict[int, list[tuple[str, str]]] = {}
                    for idx, code, path in fflags:
                        by_idx.setdefault(idx, []).append((code, path))
                    merged = valid + [
                        (
                            line_nos[i],
                            expected,
                            ids[i],
                            data[offsets[i] : offsets[i + 1]],
                            pyrows.get(i, {}),
                            by_idx.get(i, []),
                            True,
                        )
                        for i in range(len(ids))
                    ]
                    merged.sort(key=lambda r: r[0])
                    for line_no, rtype, rid, text, rows, flags, sql_flat in merged:
                        accept(source_file, line_no, rtype, rid, text, rows, flags, sql_flat)
            except BaseException:
                stop.set()
                if pool is not None:
                    pool.terminate()
                raise
            finally:
                stop.set()
                if pool is not None:
                    pool.close()
                    pool.join()
            for rel, line_no, reason, detail, rtype in file_problems:
                kept = quarantine.keep_original_file(
                    settings.landing_dir(holder_id) / rel, settings.quarantine_dir(holder_id), rel
                )
                q(rel, line_no, reason, detail, None, rtype, None, str(kept))

            if "views_by_type" not in _state:
                _init_worker(str(VIEWS_DIR))
            for p in bundles:
                rel = str(p.relative_to(settings.landing_dir(holder_id)))
                data = p.read_bytes()
                entries, problems = bundle_entries(data)
                for idx, reason, detail in problems:
                    if idx is None:
                        kept = quarantine.keep_original_file(p, settings.quarantine_dir(holder_id), rel)
                        q(rel, None, reason, detail, None, "Bundle", None, str(kept))
                    else:
                        q(rel, None, reason, detail, None, None, None)
                for idx, res, raw in entries:
                    out = classify(res, raw, None)
                    if out.valid:
                        accept(
                            rel,
                            None,
                            out.rtype or "",
                            out.rid or "",
                            raw.encode("utf-8"),
                            out.rows or {},
                            out.flags or [],
                            False,
                        )
                    else:
                        read[out.rtype or "unknown"] += 1
                        q(
                            rel,
                            None,
                            out.reason or "fhir.invalid",
                            f"Bundle.entry[{idx}].resource: {out.detail}",
                            _record_key(out.rtype, out.rid),
                            out.rtype,
                            raw.encode("utf-8"),
                        )
            loader.flush()
            quarantine.add(con, qrecords)
            dangling = _flag_dangling(con, views)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    result = FhirIngestResult(
        holder=holder_id,
        files=len(ndjson) + len(bundles),
        resources_read=dict(sorted(read.items())),
        resources_valid=dict(sorted(valid_n.items())),
        quarantined=dict(sorted(q_reason.items())),
        quarantined_by_type=dict(sorted(q_type.items())),
        rows=dict(sorted(loader.row_counts.items())),
        dangling_references=dangling,
        unknown_codes=unknown_codes,
        view_errors=view_errors,
    )
    log.info(
        "fhir ingest %s: %d files, %d valid, %d quarantined, %d dangling references, %d unknown codes",
        holder_id,
        result.files,
        sum(valid_n.values()),
        sum(q_reason.values()),
        dangling,
        unknown_codes,
    )
    return result
