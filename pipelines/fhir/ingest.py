"""FHIR ingestion: landing NDJSON / Bundles -> validated ``fhir_resource`` + flattened ``fhir_*`` tables.

Flow for one holder (``ingest_fhir``):

1. Every ``fhir/*.ndjson``, ``fhir/*.ndjson.gz`` (one file per resource type, Bulk Data) and
   every ``fhir/bundles/*.json`` (collection / transaction / searchset) is read as a stream.
   Each file's encoding is decided first, for the whole file (:mod:`pipelines.encoding`; Bulk
   Data and FHIR JSON are UTF-8): a UTF-8 byte-order mark is skipped; UTF-16/32 (mark or NUL
   pattern) is converted to UTF-8 as it streams, with one file-level notice
   (``encoding.converted_from_utf16`` / ``_utf32``; counted in ``files_converted``, the original
   kept); a file that is not UTF-8 is quarantined once, whole (``encoding.not_utf8``,
   ``encoding.mixed``, ``encoding.invalid``), and no line of it is loaded. Only a few bad lines in
   a UTF-8 file stay line-level ``encoding.not_utf8`` records.
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

Progress goes to the task log every ``PROGRESS_EVERY_S`` seconds (files done of all, resources
read, valid and quarantined so far, rate): counts only. Memory stays bounded whatever the
delivery's size: files stream through in chunks, a bounded number in flight, rows are flushed to
DuckDB every ``FLUSH_RESOURCES`` under ``DUCKDB_MEMORY_LIMIT``.

Bad input never stops the run: it goes to ``quarantine`` (stage ``ingest``, source ``fhir``)
with a reason code and a detail that names paths only; ``original`` holds the raw bytes.
Re-running replaces the tables and this stage's quarantine rows.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import multiprocessing as mp
import os
import queue
import re
import resource
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import duckdb
import msgspec

from hdp.settings import SCHEMAS_DIR, Settings, get_settings
from pipelines import encoding, quarantine
from pipelines.fhir.fastvalid import CODED_TYPES, fast_decode, sql_safe, struct_unknown_code_paths
from pipelines.fhir.fastvalid import decoder as fast_decoder
from pipelines.fhir.terminology import code_lists, fill_mapped_columns, unknown_code_paths
from pipelines.fhir.validation import RESOURCE_TYPES, validate_resource
from pipelines.fhir.viewdef import CompiledView, ViewDefinitionError, load_view
from pipelines.fhir.viewsql import SQL_MACROS, Unsupported, compile_view_sql
from pipelines.warehouse import write_connection

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Int64Array = npt.NDArray[np.int64]

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
#: DuckDB's threads while the workers validate (see _configure_raw_zone).
LOADING_DUCKDB_THREADS = 1
#: Plain files are cut into chunks of ``chunk_lines * _AVG_LINE_BYTES`` bytes (whole lines).
_AVG_LINE_BYTES = 512
#: Chunks read ahead of the main process (bounds memory: ~IN_FLIGHT_CHUNKS x 1 MiB per side).
IN_FLIGHT_CHUNKS = 8
#: Seconds between two progress lines of an ingest in the task log.
PROGRESS_EVERY_S = 10.0
#: Resources buffered in the main process before one Arrow insert into DuckDB.
FLUSH_RESOURCES = 100_000
#: Input limits: a line (resource) larger than this is quarantined as ``fhir.too_large``, one
#: nested deeper than MAX_JSON_DEPTH as ``json.too_deep`` (before any recursive processing).
#: Real resources of the ingested types are a few kB and a few dozen levels deep at most.
MAX_RESOURCE_BYTES = 16 * 2**20
MAX_JSON_DEPTH = 100

# ViewDefinition column type -> DuckDB type. Dates load as VARCHAR: FHIR dates may be partial
# ("1970-06") and dateTimes carry their offset. A column tagged ansi/type DATE in its
# ViewDefinition (a calendar date in the research contract) is converted after loading
# (apply_column_types); the others stay as delivered.
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
    #: files read through a conversion to UTF-8, by notice code (``encoding.converted_from_utf16``):
    #: each also has one file-level record in the quarantine table, with the original kept
    files_converted: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)  # per flattened table
    dangling_references: int = 0
    unknown_codes: int = 0
    view_errors: int = 0
    #: flattened ``table.column`` -> rows whose code was filled from a mapping table (the delivered
    #: code and system are kept beside it; see pipelines.fhir.terminology.fill_mapped_columns)
    codes_mapped: dict[str, int] = field(default_factory=dict)


class FhirIngestError(RuntimeError):
    """The FHIR landing area or the view definitions cannot be used at all."""


# --------------------------------------------------------------------------- per-resource logic
#: View name -> the rows one resource gives in that view.
ViewRows = dict[str, list[tuple[Any, ...]]]


class Flag(NamedTuple):
    """A finding on an accepted resource: ``code.unknown`` (element path) or ``view.error`` (view name)."""

    code: str
    path: str


class IndexedFlag(NamedTuple):
    """A :class:`Flag` of the resource at ``position`` in its chunk's :class:`FastColumns`."""

    position: int
    code: str
    path: str


@dataclass
class ResourceOutcome:
    """Result of one resource; exactly one of ``valid`` / ``reason`` is set."""

    rtype: str | None = None
    rid: str | None = None
    valid: bool = False
    reason: str | None = None
    detail: str = ""
    rows: ViewRows | None = None
    flags: list[Flag] | None = None
    sql_flat: bool = False  # rows of the SQL-compiled views come from DuckDB, not from ``rows``


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


@dataclass(frozen=True)
class _Classifier:
    """What classifying a resource needs: built once per process (each worker builds its own)."""

    views_by_type: dict[str, list[CompiledView]]
    python_views_by_type: dict[str, list[CompiledView]]  # the views the SQL compiler could not take
    codes: dict[str, frozenset[str]]


_classifier: _Classifier | None = None


def init_classifier(views_dir: Path = VIEWS_DIR, plan: ViewPlan | None = None) -> None:
    """(Re)build this process's views (from ``plan`` if given) and code lists; an ingest builds
    them before forking its workers, which inherit them."""
    global _classifier
    plan = plan or view_plan(views_dir)
    by_type: dict[str, list[CompiledView]] = {}
    py_by_type: dict[str, list[CompiledView]] = {}
    for v in plan.views.values():
        by_type.setdefault(v.resource, []).append(v)
        if v.name in plan.python_only:
            py_by_type.setdefault(v.resource, []).append(v)
    _classifier = _Classifier(by_type, py_by_type, code_lists())


def _state() -> _Classifier:
    if _classifier is None:
        init_classifier()
    assert _classifier is not None
    return _classifier


def _record_key(rtype: Any, rid: Any) -> str | None:
    if isinstance(rtype, str) and isinstance(rid, str) and len(rid) <= 64 and rtype in RESOURCE_TYPES:
        return f"{rtype}/{rid}"
    return None


def classify(obj: Any, raw: bytes | str, expected: str | None) -> ResourceOutcome:
    """Validate, flatten and terminology-check one decoded resource (pure, no I/O)."""
    if type(obj) is not dict:
        return ResourceOutcome(reason="fhir.invalid", detail="resource: not a JSON object")
    rtype = obj.get("resourceType")
    if type(rtype) is not str:
        return ResourceOutcome(reason="fhir.invalid", detail="resourceType: required element missing")
    if expected is not None and rtype != expected:
        return ResourceOutcome(
            rtype=rtype,
            reason="fhir.wrong_resource_type",
            detail=f"resourceType: not the file's resource type ({expected})",
        )
    if rtype not in RESOURCE_TYPES:
        return ResourceOutcome(
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
        return ResourceOutcome(
            rtype=rtype, rid=rid if isinstance(rid, str) else None, reason="fhir.invalid", detail=detail
        )
    if type(rid) is not str:
        return ResourceOutcome(
            rtype=rtype, reason="fhir.invalid", detail=f"{rtype}.id: required for ingestion"
        )
    rows, flags = _python_rows(obj, rtype)
    return ResourceOutcome(rtype=rtype, rid=rid, valid=True, rows=rows, flags=flags)


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


def _python_only_rows(body: bytes, rtype: str, flags: list[Flag]) -> ViewRows:
    """Rows of the views the SQL compiler could not take (the others come from DuckDB)."""
    views = _state().python_views_by_type.get(rtype)
    if not views:
        return {}
    obj = _decode(body)
    rows: ViewRows = {}
    for view in views:
        try:
            rows[view.name] = view.rows(obj)
        except ViewDefinitionError:
            flags.append(Flag("view.error", view.name))
    return rows


def _fast_outcome(body: bytes, expected: str) -> ResourceOutcome | None:
    """The fast path: a certainly valid resource (rows left to SQL where possible), or None."""
    struct = fast_decode(body, expected)
    if struct is None:
        return None
    flags = [Flag("code.unknown", p) for p in struct_unknown_code_paths(expected, struct, _state().codes)]
    if sql_safe(body, struct):
        rows = _python_only_rows(body, expected, flags)
        return ResourceOutcome(
            rtype=expected, rid=struct.id, valid=True, rows=rows, flags=flags, sql_flat=True
        )
    # Valid, but possibly with duplicate keys (DuckDB would read another value): Python views.
    rows, flags = _python_rows(_decode(body), expected)
    return ResourceOutcome(rtype=expected, rid=struct.id, valid=True, rows=rows, flags=flags)


def _python_rows(obj: dict[str, Any], rtype: str) -> tuple[ViewRows, list[Flag]]:
    """Rows of every view of ``rtype`` evaluated in Python, and the resource's flags."""
    rows: ViewRows = {}
    flags: list[Flag] = []
    state = _state()
    for view in state.views_by_type.get(rtype, ()):
        try:
            rows[view.name] = view.rows(obj)
        except ViewDefinitionError:
            # The resource is valid FHIR but breaks the view's assumptions (e.g. a
            # repeated element where the view expects one): keep it, flag it.
            flags.append(Flag("view.error", view.name))
    for path in unknown_code_paths(obj, state.codes):
        flags.append(Flag("code.unknown", path))
    return rows, flags


def classify_line(line: bytes, expected: str | None, unterminated: bool) -> ResourceOutcome | None:
    """Check, validate and flatten one NDJSON line (None: a blank line).

    ``expected``: the file's resource type; ``unterminated``: the line is the file's last and has
    no line end (so a JSON error means the file was cut).
    """
    body = line.rstrip(b"\r\n")
    if not body.strip():
        return None
    if len(body) > MAX_RESOURCE_BYTES:
        return ResourceOutcome(
            reason="fhir.too_large", detail=f"line: larger than {MAX_RESOURCE_BYTES} bytes"
        )
    # Cheap bound first: depth cannot exceed the number of opening brackets.
    if body.count(b"{") + body.count(b"[") > MAX_JSON_DEPTH and json_depth(body) > MAX_JSON_DEPTH:
        return ResourceOutcome(
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
            return ResourceOutcome(reason="encoding.not_utf8", detail="line: not valid UTF-8")
        if unterminated:
            return ResourceOutcome(
                reason="file.truncated", detail="last line: incomplete (file cut mid-record)"
            )
        return ResourceOutcome(reason="json.malformed", detail="line: not valid JSON")
    return classify(obj, body, expected)


# --------------------------------------------------------------------------- chunks of lines
class Chunk(NamedTuple):
    """Whole lines of one file as they travel to a worker (one bytes object: pickled as one copy)."""

    source_file: str
    expected: str | None  # the file's resource type (None: the file name names none)
    first_line_no: int
    blob: bytes
    last_unterminated: bool  # the last line has no line end: the file may have been cut
    #: Where ``blob`` lies in the file as it is (a plain UTF-8 file), or None. A worker is sent the
    #: chunk without its blob and reads it there (see :func:`_chunk_blob`): the text then crosses
    #: no pipe at all, the main process keeps its copy for loading.
    where: FileSlice | None = None


class FileSlice(NamedTuple):
    path: str
    offset: int
    length: int
    adler32: int  # of the bytes the main process read: the worker checks that it reads the same


def _chunk_blob(chunk: Chunk) -> bytes:
    """The chunk's lines (read from the file when the chunk was sent without them)."""
    where = chunk.where
    if chunk.blob or where is None:
        return chunk.blob
    with open(where.path, "rb") as f:
        blob = os.pread(f.fileno(), where.length, where.offset)
    if len(blob) != where.length or zlib.adler32(blob) != where.adler32:
        raise FhirIngestError(f"{chunk.source_file}: the file changed while it was being ingested")
    return blob


@dataclass(slots=True)
class ValidResource:
    """A valid resource read one by one (reference path, bundle entry, or a fast one unpacked)."""

    line_no: int | None  # None for a bundle entry
    rtype: str
    rid: str
    text: bytes
    rows: ViewRows
    flags: list[Flag]
    sql_flat: bool  # rows of the SQL-compiled views come from DuckDB, not from ``rows``


@dataclass(slots=True)
class QuarantinedLine:
    line_no: int
    reason: str
    detail: str
    record_key: str | None
    rtype: str | None
    original: bytes


@dataclass(slots=True)
class FastColumns:
    """The fast-path resources of a chunk, column-wise: cheap to pickle, and loaded without any
    per-resource work in the main process."""

    line_nos: list[int]
    ids: list[str]
    data: bytes  # the raw lines concatenated: resource i is data[offsets[i]:offsets[i + 1]]
    offsets: Int64Array
    flags: list[IndexedFlag]
    python_rows: dict[int, ViewRows]  # rows of the Python-only views, by index
    id_digests: bytes  # id_digest of each id, concatenated (made by the worker, for SeenIds)
    #: ``data`` is left empty by the worker: it is the chunk's blob without its line ends (every
    #: line of the chunk took the fast path, none has a ``\r``); the main process, which read the
    #: blob, restores it (:meth:`restore_data`), so the text does not travel back through the pipe
    from_blob: bool = False

    def restore_data(self, blob: bytes) -> None:
        if self.from_blob:
            self.data = blob.replace(b"\n", b"")
            self.from_blob = False
            if len(self.data) != int(self.offsets[-1]):  # never expected: the worker checked
                raise RuntimeError("fhir ingest: a chunk's text does not match its offsets")

    def one_by_one(self, rtype: str) -> list[ValidResource]:
        """The same resources as :class:`ValidResource` (for the rare chunk that needs order or a
        duplicate check per resource)."""
        flags: dict[int, list[Flag]] = {}
        for f in self.flags:
            flags.setdefault(f.position, []).append(Flag(f.code, f.path))
        data, offsets = self.data, self.offsets
        return [
            ValidResource(
                self.line_nos[i],
                rtype,
                rid,
                data[offsets[i] : offsets[i + 1]],
                self.python_rows.get(i, {}),
                flags.get(i, []),
                True,
            )
            for i, rid in enumerate(self.ids)
        ]


@dataclass(slots=True)
class ChunkResult:
    """What a worker returns for one :class:`Chunk` (every line is in exactly one of the lists)."""

    source_file: str
    expected: str | None
    fast: FastColumns  # accepted by the fast validator, rows of the compiled views left to SQL
    valid: list[ValidResource]  # other valid resources, in line order
    quarantined: list[QuarantinedLine]


def split_lines(blob: bytes) -> list[bytes]:
    """The lines of a chunk (without their ``\\n``; a ``\\r`` is stripped later)."""
    lines = blob.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the blob ends with a line end
    return lines


#: Deleted from a line, all but its opening brackets: what is left bounds the nesting depth (one
#: C pass; two ``count`` calls took a fifth longer).
_ALL_BUT_OPENING = bytes(b for b in range(256) if b not in b"{[")


def process_chunk(chunk: Chunk) -> ChunkResult:
    """Worker: classify every line of one chunk."""
    blob = _chunk_blob(chunk)
    lines = split_lines(blob)
    expected, first = chunk.expected, chunk.first_line_no
    valid: list[ValidResource] = []
    quarantined: list[QuarantinedLine] = []
    line_nos: list[int] = []
    ids: list[str] = []
    texts: list[bytes] = []
    fflags: list[IndexedFlag] = []
    pyrows: dict[int, ViewRows] = {}
    dec = fast_decoder(expected) if expected is not None else None
    state = _state()
    codes = state.codes
    py_views = state.python_views_by_type.get(expected, ()) if expected is not None else ()
    last = len(lines) - 1 if chunk.last_unterminated else -1
    coded = expected in CODED_TYPES
    for i, line in enumerate(lines):
        body = line.rstrip(b"\r\n")
        # The hot loop: the same checks as classify_line + _fast_outcome, inlined.
        if (
            dec is not None
            and expected is not None
            and i != last
            and len(body) <= MAX_RESOURCE_BYTES
            and len(body.translate(None, _ALL_BUT_OPENING)) <= MAX_JSON_DEPTH
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
                if coded:
                    for path in struct_unknown_code_paths(expected, struct, codes):
                        fflags.append(IndexedFlag(idx, "code.unknown", path))
                if py_views:
                    obj = _decode(body)
                    rows: ViewRows = {}
                    for view in py_views:
                        try:
                            rows[view.name] = view.rows(obj)
                        except ViewDefinitionError:
                            fflags.append(IndexedFlag(idx, "view.error", view.name))
                    pyrows[idx] = rows
                continue
        out = classify_line(line, expected, i == last)
        if out is None:
            continue
        line_no = first + i
        if out.valid:
            assert out.rtype is not None and out.rid is not None  # a valid outcome has both
            valid.append(
                ValidResource(
                    line_no, out.rtype, out.rid, body, out.rows or {}, out.flags or [], out.sql_flat
                )
            )
        else:
            quarantined.append(
                QuarantinedLine(
                    line_no,
                    out.reason or "fhir.invalid",
                    out.detail,
                    _record_key(out.rtype, out.rid),
                    out.rtype or expected,
                    body,
                )
            )
    digests = b"".join(map(id_digest, ids))
    if not valid and not quarantined and len(ids) == len(lines) and b"\r" not in blob:
        # Every line is a fast-path resource as it stands: the text is the blob without its line
        # ends, which the main process still holds (see FastColumns.from_blob).
        fast = FastColumns(line_nos, ids, b"", _offsets(texts), fflags, pyrows, digests, True)
    else:
        fast = FastColumns(line_nos, ids, b"".join(texts), _offsets(texts), fflags, pyrows, digests)
    return ChunkResult(chunk.source_file, expected, fast, valid, quarantined)


def _offsets(texts: list[bytes]) -> Int64Array:
    import numpy as np

    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, texts), np.int64, len(texts)), out=offsets[1:])
    return offsets


# --------------------------------------------------------------------------- reading files
@dataclass(frozen=True)
class FileProblem:
    """Something about a whole file, found while reading it: its encoding (a conversion notice,
    ``encoding.converted_from_*``, or a reason the file is not read at all; ``line_no`` None), or a
    cut or corrupt compressed stream (``line_no``: the first line lost)."""

    source_file: str
    line_no: int | None
    reason: str
    detail: str
    rtype: str | None

    @property
    def is_notice(self) -> bool:
        """The file was read (after a conversion): nothing in it was rejected for this."""
        return self.reason.startswith(encoding.CONVERTED_PREFIX)


def _expected_type(path: Path) -> str | None:
    stem = path.name.split(".", 1)[0]
    return stem if stem in RESOURCE_TYPES else None


class _StreamDamaged(Exception):
    """A compressed stream ended early or is corrupt: what came before it was read."""


def _raw_blocks(path: Path, size: int) -> Iterator[bytes]:
    """The file's bytes (decompressed for ``.gz``) in blocks of about ``size``."""
    if not path.name.endswith(".gz"):
        with open(path, "rb") as f:
            while block := f.read(size):
                yield block
        return
    with gzip.open(path, "rb") as g:
        try:
            # read1: one decompression step per call, so a damaged stream loses nothing decoded before it
            while block := g.read1(size):
                yield block
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
            raise _StreamDamaged from exc


def _scan_encoding(path: Path, block: int) -> encoding.Verdict:
    """The whole file's encoding, in a first pass (a damaged gzip stream is judged on what it holds;
    the second pass reports the damage, at the line where it starts)."""

    def readable() -> Iterator[bytes]:
        try:
            yield from _raw_blocks(path, block)
        except _StreamDamaged:
            return

    return encoding.scan(readable())


def ndjson_chunks(
    path: Path, rel: str, chunk_lines: int, file_problems: list[FileProblem]
) -> Iterator[Chunk]:
    """Chunks of whole lines as one bytes object each (pickled to a worker as a single copy).

    The file's encoding is decided first, for the whole file (:mod:`pipelines.encoding`): a file
    that is not read at all, or is read through a conversion to UTF-8, adds its one record to
    ``file_problems``. Then the file (decompressed, converted) is read in blocks of about
    ``chunk_lines`` average lines, cut after the last line end; a cut or corrupt compressed stream
    keeps every line decoded before the damage (the damage is added to ``file_problems``).
    """
    expected = _expected_type(path)
    block = max(1, chunk_lines) * _AVG_LINE_BYTES
    verdict = _scan_encoding(path, block)
    if verdict.reason is not None:
        file_problems.append(FileProblem(rel, None, verdict.reason, verdict.detail, expected))
    if verdict.encoding is None:
        return
    # A plain UTF-8 file is read as it is (but its mark): each chunk knows where it lies in it.
    direct = verdict.encoding.is_utf8 and not path.name.endswith(".gz")
    offset = verdict.encoding.bom

    def where(blob: bytes) -> FileSlice | None:
        return FileSlice(str(path), offset, len(blob), zlib.adler32(blob)) if direct else None

    first = 1
    parts: list[bytes] = []  # read since the last chunk (joined once per chunk, not per piece)
    size = 0
    try:
        for data in encoding.to_utf8(_raw_blocks(path, block), verdict.encoding):
            parts.append(data)
            size += len(data)
            if size < block:  # a small piece (gzip, a conversion): read on
                continue
            joined = b"".join(parts)
            cut = joined.rfind(b"\n") + 1
            if cut == 0:  # no line end yet (a very long line): read on
                parts = [joined]
                continue
            blob, rest = joined[:cut], joined[cut:]
            parts, size = ([rest], len(rest)) if rest else ([], 0)
            yield Chunk(rel, expected, first, blob, False, where(blob))
            first += blob.count(b"\n")
            offset += len(blob)
    except _StreamDamaged:
        pending = b"".join(parts)
        lost = first + pending.count(b"\n") + (1 if pending and not pending.endswith(b"\n") else 0)
        file_problems.append(
            FileProblem(rel, lost, "file.truncated", "compressed stream ends early or is corrupt", expected)
        )
        if pending:
            # The last decoded line may be partial: treat it as the truncated record.
            yield Chunk(rel, expected, first, pending, not pending.endswith(b"\n"))
        return
    pending = b"".join(parts)
    if pending:
        # Without a line end, the last line may have been cut: a worker decides.
        yield Chunk(rel, expected, first, pending, not pending.endswith(b"\n"), where(pending))


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


class BundleEntry(NamedTuple):
    entry_index: int  # in ``Bundle.entry``
    resource: Any
    raw: str  # the resource as JSON text (after references between entries are resolved)


class BundleProblem(NamedTuple):
    entry_index: int | None  # the entry, or None: the whole file
    reason: str
    detail: str


def bundle_entries(data: bytes) -> tuple[list[BundleEntry], list[BundleProblem]]:
    """The entries of a Bundle, and its problems (of the file, or of single entries).

    Transaction entries without an id get the uuid of their ``urn:uuid:`` fullUrl as id, so
    that re-runs give the same keys; references between entries are rewritten accordingly.
    A Bundle in UTF-16/32 is read through a conversion, noted as a problem of the whole file
    (``encoding.converted_from_*``: a notice, its entries are read).
    """
    text, notice = _bundle_text(data)
    problems: list[BundleProblem] = [] if notice is None else [notice]
    if text is None:
        return [], problems
    entries = _bundle_entry_list(text)
    if isinstance(entries, BundleProblem):
        return [], [*problems, entries]
    urls: dict[str, str] = {}
    prepared: list[tuple[int, Any]] = []
    for i, e in enumerate(entries):
        res = _entry_resource(i, e, problems)
        if res is None:
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
        out.append(BundleEntry(i, res, json.dumps(res, ensure_ascii=False, separators=(",", ":"))))
    return out, problems


def _bundle_text(data: bytes) -> tuple[str | None, BundleProblem | None]:
    """A Bundle file's text (None: unreadable) and its file-level encoding record, if any.

    A Bundle is one JSON document: a byte that is not UTF-8 anywhere in it makes the whole file
    unreadable (``encoding.not_utf8``), unlike a line of NDJSON.
    """
    verdict = encoding.scan([data])
    if verdict.encoding is None:
        return None, BundleProblem(None, verdict.reason or "encoding.not_utf8", verdict.detail)
    if verdict.damaged_lines:
        return None, BundleProblem(None, "encoding.not_utf8", "file: not valid UTF-8")
    notice = None if verdict.reason is None else BundleProblem(None, verdict.reason, verdict.detail)
    return encoding.decode(data, verdict.encoding), notice


def _bundle_entry_list(text: str) -> list[Any] | BundleProblem:
    """``Bundle.entry`` of a file's text, or why the file as a whole cannot be read as a Bundle."""
    try:
        bundle = json.loads(text)
    except json.JSONDecodeError:
        return BundleProblem(None, "json.malformed", "file: not valid JSON")
    if type(bundle) is not dict or bundle.get("resourceType") != "Bundle":
        return BundleProblem(
            None, "fhir.wrong_resource_type", "resourceType: a file under bundles/ must be a Bundle"
        )
    if bundle.get("type") not in BUNDLE_TYPES:
        return BundleProblem(None, "fhir.invalid", "Bundle.type: not collection, transaction or searchset")
    entries = bundle.get("entry") or []
    if type(entries) is not list:
        return BundleProblem(None, "fhir.invalid", "Bundle.entry: not an array")
    return entries


def _entry_resource(i: int, entry: Any, problems: list[BundleProblem]) -> Any:
    """The resource of entry ``i``; None for an entry that carries no data (or a problem, added)."""
    if type(entry) is not dict:
        problems.append(BundleProblem(i, "fhir.invalid", f"Bundle.entry[{i}]: not an object"))
        return None
    req = entry.get("request")
    if type(req) is dict and req.get("method") == "DELETE":
        return None
    if type(entry.get("search")) is dict and entry["search"].get("mode") == "outcome":
        return None  # OperationOutcome of a search: not data
    res = entry.get("resource")
    if res is None:
        problems.append(
            BundleProblem(i, "fhir.invalid", f"Bundle.entry[{i}].resource: required element missing")
        )
    return res


# --------------------------------------------------------------------------- loading
@dataclass
class _ResourceBuffer:
    """Resources added one by one since the last flush, column-wise."""

    rtype: list[str] = field(default_factory=list)
    rid: list[str] = field(default_factory=list)
    text: list[bytes] = field(default_factory=list)
    source_file: list[str] = field(default_factory=list)
    line_no: list[int | None] = field(default_factory=list)
    sql_flat: list[bool] = field(default_factory=list)


@dataclass
class _FlagBuffer:
    """``fhir_flag`` rows since the last flush, column-wise."""

    rtype: list[str] = field(default_factory=list)
    resource_key: list[str] = field(default_factory=list)
    code: list[str] = field(default_factory=list)
    path: list[str] = field(default_factory=list)

    def add(self, rtype: str, resource_key: str, code: str, path: str) -> None:
        self.rtype.append(rtype)
        self.resource_key.append(resource_key)
        self.code.append(code)
        self.path.append(path)


class _Loader:
    """Buffers rows and writes them to DuckDB in Arrow batches."""

    def __init__(self, con: duckdb.DuckDBPyConnection, plan: ViewPlan) -> None:
        # pyarrow and numpy are imported where loading needs them: each takes about as long to
        # import as the rest of this module, and ``hdp fhir validate`` needs neither.
        import pyarrow as pa
        import pyarrow.compute as pc

        self.pa = pa
        self.pc = pc
        self.con = con
        self.views = plan.views
        self.sql = plan.sql
        self.sql_types = {plan.views[name].resource for name in plan.sql}
        self.sql_by_type: dict[str, list[tuple[str, str]]] = {}  # type -> its compiled views
        for name, sql in plan.sql.items():
            self.sql_by_type.setdefault(plan.views[name].resource, []).append((name, sql))
        self.json_type = pa.json_(pa.large_string())
        for macro in SQL_MACROS:
            con.execute(macro)
        self.res = _ResourceBuffer()
        self.batches: list[Any] = []  # fhir_resource record batches built column-wise (add_columns)
        self.batch_types: list[str | None] = []  # each batch's resource type (None: several)
        self.rows: dict[str, list[tuple[Any, ...]]] = {n: [] for n in self.views}
        self.flags = _FlagBuffer()
        self.row_counts: Counter[str] = Counter()
        self.pending = 0

    def add(self, source_file: str, r: ValidResource) -> None:
        res = self.res
        res.rtype.append(r.rtype)
        res.rid.append(r.rid)
        res.text.append(r.text)
        res.source_file.append(source_file)
        res.line_no.append(r.line_no)
        res.sql_flat.append(r.sql_flat)
        for name, rs in r.rows.items():
            self.rows[name].extend(rs)
        for code, path in r.flags:
            self.flags.add(r.rtype, r.rid, code, path)
        self.pending += 1
        if self.pending >= FLUSH_RESOURCES:
            self.flush()

    def add_columns(self, source_file: str, rtype: str, cols: FastColumns) -> None:
        import numpy as np

        pa = self.pa
        ids = cols.ids
        n = len(ids)
        self.batch_types.append(rtype)
        self.batches.append(
            pa.record_batch(
                {
                    "resource_type": pa.repeat(pa.scalar(rtype, pa.string()), n),
                    "id": _ascii_string_array(pa, ids),
                    "resource": _buffer_string_array(pa, cols.data, cols.offsets),
                    "_source_file": pa.repeat(pa.scalar(source_file, pa.string()), n),
                    # (numpy first: pyarrow converts a list of Python ints ~20x slower)
                    "_line_no": pa.array(np.fromiter(cols.line_nos, np.int64, len(cols.line_nos))),
                }
            )
        )
        for rows in cols.python_rows.values():
            for name, rs in rows.items():
                self.rows[name].extend(rs)
        for idx, code, path in cols.flags:
            self.flags.add(rtype, ids[idx], code, path)
        self.pending += n
        if self.pending >= FLUSH_RESOURCES:
            self.flush()

    def use_every_core(self) -> None:
        """DuckDB's default threads again (loading ran on one: see _configure_raw_zone)."""
        self.con.execute("RESET threads")

    def flush(self) -> None:
        python_flat = self._split_single_resources()
        if self.batches:
            self._load_flat_batches()
        if python_flat is not None and python_flat.num_rows:
            self._insert(
                python_flat,
                "INSERT INTO fhir_resource SELECT resource_type, id, resource::JSON, _source_file,"
                " _line_no FROM _fhir_batch",
            )
        self._load_python_rows()
        if self.flags.rtype:
            self._load_flags()
        self.res = _ResourceBuffer()
        self.batches = []
        self.batch_types = []
        self.rows = {n: [] for n in self.views}
        self.flags = _FlagBuffer()
        self.pending = 0

    def _split_single_resources(self) -> Any:
        """Resources added one by one: those whose rows come from SQL join the flat batches; the
        rest (rows already made in Python) are returned as one record batch (None: there are none)."""
        res = self.res
        if not res.rtype:
            return None
        pa = self.pa
        single = pa.record_batch(
            {
                "resource_type": pa.array(res.rtype, pa.string()),
                "id": pa.array(res.rid, pa.large_string()),
                "resource": _string_array(pa, res.text),
                "_source_file": pa.array(res.source_file, pa.string()),
                "_line_no": pa.array(res.line_no, pa.int64()),
            }
        )
        sql_mask = pa.array(res.sql_flat, pa.bool_())
        self.batches.append(single.filter(sql_mask))
        self.batch_types.append(None)
        return single.filter(self.pc.invert(sql_mask))

    def _load_flat_batches(self) -> None:
        """Run the SQL-compiled views over the flat batches, then store their resources.

        Consecutive batches of one resource type go to DuckDB together, and only to that type's
        views (a view scanning the whole flush for its type cost as much as parsing it); the
        groups are loaded in order, so ``fhir_resource`` keeps the batches' order.
        """
        for name in self.sql:
            self.row_counts[name] += 0  # every compiled view ran once anything was loaded
        groups: list[tuple[str | None, list[Any]]] = []
        for rtype, b in zip(self.batch_types, self.batches, strict=True):
            if groups and rtype is not None and groups[-1][0] == rtype:
                groups[-1][1].append(b)
            else:
                groups.append((rtype, [b]))
        for rtype, batches in groups:
            self._load_flat_group(rtype, batches)

    def _load_flat_group(self, rtype: str | None, batches: list[Any]) -> None:
        pa = self.pa
        flat = pa.Table.from_batches(batches)
        if not flat.num_rows:
            return
        if rtype is not None:
            types = {rtype}
        else:
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
                pa.chunked_array(
                    [pa.ExtensionArray.from_storage(self.json_type, c) for c in flat.column(i).chunks],
                    type=self.json_type,
                ),
            )
        batch = self.con.from_arrow(flat)  # a relation, not a registered name: see _insert
        for t in sorted(types & self.sql_types):
            for name, sql in self.sql_by_type[t]:
                inserted = batch.query(_FLAT_SOURCE, sql)  # runs now; its one row is the row count
                n = inserted.fetchall() if inserted is not None else []
                self.row_counts[name] += int(n[0][0]) if n else 0
        cast = "" if parsed else "::JSON"
        batch.query(
            _FLAT_SOURCE,
            f"INSERT INTO fhir_resource SELECT resource_type, id, resource{cast}, _source_file,"
            f" _line_no FROM {_FLAT_SOURCE}",
        )

    def _load_python_rows(self) -> None:
        pa = self.pa
        for name, rows in self.rows.items():
            if not rows:
                continue
            view = self.views[name]
            cols = list(zip(*rows, strict=True))
            arrays = {}
            for c, values in zip(view.columns, cols, strict=True):
                arrays[c.name] = pa.array(values, type=_arrow_type(pa, c.type))
            self._insert(pa.table(arrays), f'INSERT INTO "{name}" SELECT * FROM _fhir_batch')
            self.row_counts[name] += len(rows)

    def _load_flags(self) -> None:
        flags = self.flags
        table = self.pa.table(
            {
                "resource_type": flags.rtype,
                "resource_key": flags.resource_key,
                "flag_code": flags.code,
                "path": flags.path,
            }
        )
        self._insert(table, "INSERT INTO fhir_flag SELECT * FROM _fhir_batch")

    def _insert(self, table: Any, sql: str) -> None:
        """Run ``sql`` with the Arrow ``table`` as ``_fhir_batch``.

        Through a relation, not ``con.register``: a registered name is a catalog entry, and inside
        the ingest's one transaction DuckDB keeps dropped entries (and so the Arrow data they
        reference, out of its memory limit's sight) until the commit: the whole delivery's text
        stayed in memory (measured: ~0.6 GB per million resources).
        """
        self.con.from_arrow(table).query("_fhir_batch", sql)


class _LoaderThread:
    """A :class:`_Loader` run by one thread of its own, fed through a bounded queue: the DuckDB
    inserts and the views' SQL (which release the GIL) overlap with the main thread receiving the
    workers' results, instead of stopping it (and so the workers) at every flush.

    The loader thread is the only one to use the connection until :meth:`close` or :meth:`abort`
    has returned. Its first error stops it (what is queued after it is dropped) and is raised again
    in the main thread, at its next call or at :meth:`close`, so the ingest rolls back.
    """

    #: Calls queued ahead of the loader thread (each about one chunk: ~2 MiB).
    QUEUE_CALLS = 32

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader
        self._queue: queue.Queue[tuple[Callable[..., None], tuple[Any, ...]] | None] = queue.Queue(
            self.QUEUE_CALLS
        )
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fhir-loader", daemon=True)
        self._thread.start()

    @property
    def row_counts(self) -> Counter[str]:
        return self.loader.row_counts

    def add(self, source_file: str, r: ValidResource) -> None:
        self._put((self.loader.add, (source_file, r)))

    def add_columns(self, source_file: str, rtype: str, cols: FastColumns) -> None:
        self._put((self.loader.add_columns, (source_file, rtype, cols)))

    def close(self) -> None:
        """Flush what is left, wait for the loader thread; raises its error, if any."""
        try:
            self._put((self.loader.use_every_core, ()))
            self._put((self.loader.flush, ()))
        finally:
            self._stop()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Drop what is queued and wait for the loader thread (before a rollback)."""
        if self._error is None:
            self._error = RuntimeError("fhir ingest: loading aborted")
        self._stop()

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)  # the thread drains the queue even after an error: never blocks long
            self._thread.join()

    def _put(self, call: tuple[Callable[..., None], tuple[Any, ...]]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(call)

    def _run(self) -> None:
        while (call := self._queue.get()) is not None:
            if self._error is not None:
                continue  # stopped: drop the rest
            fn, args = call
            try:
                fn(*args)
            except BaseException as exc:  # raised again in the main thread
                self._error = exc


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


class ReferenceLink(NamedTuple):
    """A reference the link check follows: ``table.column`` must be some ``target.target_key``."""

    table: str
    rtype: str
    key: str  # the table's own key (names the flagged resource)
    column: str
    target: str
    target_key: str
    path: str  # the element that holds the reference (the flag's path)


def _to_patient(table: str, rtype: str, key: str, element: str = "subject") -> ReferenceLink:
    return ReferenceLink(table, rtype, key, "patient_id", "fhir_patient", "patient_id", f"{rtype}.{element}")


def _to_encounter(table: str, rtype: str, key: str, element: str = "encounter") -> ReferenceLink:
    return ReferenceLink(
        table, rtype, key, "encounter_id", "fhir_encounter", "encounter_id", f"{rtype}.{element}"
    )


_LINKS = (
    _to_patient("fhir_encounter", "Encounter", "encounter_id"),
    _to_patient("fhir_condition", "Condition", "condition_id"),
    _to_encounter("fhir_condition", "Condition", "condition_id"),
    _to_patient("fhir_observation", "Observation", "observation_id"),
    _to_encounter("fhir_observation", "Observation", "observation_id"),
    _to_patient("fhir_medication_request", "MedicationRequest", "medication_request_id"),
    _to_encounter("fhir_medication_request", "MedicationRequest", "medication_request_id"),
    _to_patient("fhir_procedure", "Procedure", "procedure_id"),
    _to_encounter("fhir_procedure", "Procedure", "procedure_id"),
    _to_patient("fhir_eq5d_response", "QuestionnaireResponse", "questionnaire_response_id"),
    _to_encounter("fhir_eq5d_response", "QuestionnaireResponse", "questionnaire_response_id"),
    _to_patient("fhir_immunization", "Immunization", "immunization_id", element="patient"),
    _to_encounter("fhir_immunization", "Immunization", "immunization_id"),
    _to_patient(
        "fhir_allergy_intolerance", "AllergyIntolerance", "allergy_intolerance_id", element="patient"
    ),
    _to_encounter("fhir_allergy_intolerance", "AllergyIntolerance", "allergy_intolerance_id"),
    _to_patient("fhir_diagnostic_report", "DiagnosticReport", "diagnostic_report_id"),
    _to_encounter("fhir_diagnostic_report", "DiagnosticReport", "diagnostic_report_id"),
    _to_patient("fhir_document_reference", "DocumentReference", "document_reference_id"),
    _to_encounter(
        "fhir_document_reference", "DocumentReference", "document_reference_id", element="context.encounter"
    ),
)


def apply_column_types(con: duckdb.DuckDBPyConnection, views: dict[str, CompiledView]) -> list[str]:
    """Convert the columns whose ViewDefinition asks for an SQL type (``ansi/type`` tag), in the
    ingest's transaction; returns them as ``table.column``.

    Both evaluators load dates as the delivered text, so they stay identical; the research
    contract wants a calendar date where a column is one (``*_date``): every zone downstream then
    types it DATE like the register's dates, and releases shift it as a DATE. ``DATE`` takes the
    date a FHIR date or dateTime starts with, as written (``2022-10-20T23:30:00-05:00`` ->
    2022-10-20, no time-zone shift, the same reading as the quality checks' ``hdp_date``); a
    partial date (``2022-10``) names no day and becomes NULL, its delivered text kept in
    ``fhir_resource``.
    """
    converted = []
    for name, view in views.items():
        for c in view.columns:
            if c.sql_type == "DATE":
                con.execute(
                    f'ALTER TABLE "{name}" ALTER COLUMN "{c.name}" SET DATA TYPE DATE '
                    f'USING TRY_CAST(left(CAST("{c.name}" AS VARCHAR), 10) AS DATE)'
                )
                converted.append(f"{name}.{c.name}")
    return converted


def _flag_dangling(con: duckdb.DuckDBPyConnection, views: dict[str, CompiledView]) -> int:
    total = 0
    for link in _LINKS:
        if link.table not in views or link.target not in views:
            continue
        n = con.execute(
            f"""INSERT INTO fhir_flag
                SELECT ?, t."{link.key}", 'fhir.dangling_reference', ?
                FROM "{link.table}" t
                WHERE t."{link.column}" IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM "{link.target}" r
                                  WHERE r."{link.target_key}" = t."{link.column}")""",
            [link.rtype, link.path],
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


# --------------------------------------------------------------------------- one ingest, step by step
@dataclass
class IngestTally:
    """The counts of one ingest (what :class:`FhirIngestResult` reports)."""

    read: Counter[str] = field(default_factory=Counter)  # by resource type
    valid: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)  # by reason code
    quarantined_by_type: Counter[str] = field(default_factory=Counter)
    converted: Counter[str] = field(default_factory=Counter)  # files, by notice code
    unknown_codes: int = 0
    view_errors: int = 0

    def count_flags(self, codes: Iterable[str]) -> None:
        for code in codes:
            if code == "code.unknown":
                self.unknown_codes += 1
            elif code == "view.error":
                self.view_errors += 1


def id_digest(rid: str) -> bytes:
    """The 128-bit digest :class:`SeenIds` remembers an id by."""
    return hashlib.blake2b(rid.encode(), digest_size=16).digest()


class SeenIds:
    """The ids of one resource type delivered so far, remembered by 128-bit digests.

    A region's delivery has ~15 M ids: as ``str`` in a ``set`` they took ~130 bytes each (~2 GB),
    as digests in a sorted array 16 bytes (~0.25 GB). Two different ids share a digest with
    probability ~n²/2^129 (about 1e-25 for 15 M ids): the check stays exact in practice. Digests
    added since the last merge wait in a small ``set``; every ``MERGE_AT`` of them are merged into
    the sorted array (one copy of it).
    """

    MERGE_AT = 1 << 20

    def __init__(self) -> None:
        import numpy as np

        self._np = np
        self._sorted = np.empty(0, dtype="S16")
        # As numpy gives S16 items back: without trailing NUL bytes (still one key per digest).
        self._recent: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)

    def __contains__(self, digest: bytes) -> bool:
        key = digest.rstrip(b"\0")
        if key in self._recent:
            return True
        i = int(self._np.searchsorted(self._sorted, digest))
        return i < len(self._sorted) and self._sorted[i] == key

    def add(self, digest: bytes) -> None:
        self._recent.add(digest.rstrip(b"\0"))
        self._merge_if_due()

    def add_new(self, digests: bytes) -> bool:
        """Add a chunk's digests if none of them was seen before and none repeats; otherwise add
        nothing and return False (the caller goes one by one)."""
        np = self._np
        batch = np.frombuffer(digests, dtype="S16")
        keys = batch.tolist()
        if len(set(keys)) != len(keys) or not self._recent.isdisjoint(keys):
            return False
        if len(self._sorted):
            at = np.searchsorted(self._sorted, batch)
            at[at == len(self._sorted)] = 0
            if bool((self._sorted[at] == batch).any()):
                return False
        self._recent.update(keys)
        self._merge_if_due()
        return True

    def _merge_if_due(self) -> None:
        if len(self._recent) < self.MERGE_AT:
            return
        np = self._np
        new = np.sort(np.array(list(self._recent), dtype="S16"))
        self._sorted = np.insert(self._sorted, np.searchsorted(self._sorted, new), new)
        self._recent = set()


class _Intake:
    """The main process's side of one ingest: keeps the delivery order (the first ``Type/id`` wins,
    later ones are ``fhir.duplicate_id``), counts, passes accepted resources to the loader and
    collects the quarantine records."""

    def __init__(self, holder: str, loader: _Loader | _LoaderThread) -> None:
        self.holder = holder
        self.loader = loader
        self.tally = IngestTally()
        self.seen: dict[str, SeenIds] = {}  # ids so far, by type
        self.records: list[quarantine.QuarantineRecord] = []

    def quarantine(
        self,
        source_file: str,
        line_no: int | None,
        reason: str,
        detail: str,
        *,
        record_key: str | None = None,
        rtype: str | None = None,
        original: bytes | None = None,
        original_path: str | None = None,
    ) -> None:
        if reason.startswith(encoding.CONVERTED_PREFIX):
            self.tally.converted[reason] += 1  # a notice: the file was read, nothing rejected
        else:
            self.tally.quarantined[reason] += 1
            self.tally.quarantined_by_type[rtype or "unknown"] += 1
        self.records.append(
            quarantine.QuarantineRecord(
                stage=STAGE,
                holder=self.holder,
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

    def reject(self, source_file: str, line: QuarantinedLine) -> None:
        self.tally.read[line.rtype or "unknown"] += 1
        self.quarantine(
            source_file,
            line.line_no,
            line.reason,
            line.detail,
            record_key=line.record_key,
            rtype=line.rtype,
            original=line.original,
        )

    def accept(self, source_file: str, res: ValidResource) -> None:
        rtype, rid = res.rtype, res.rid
        self.tally.read[rtype] += 1
        seen_ids = self._seen(rtype)
        digest = id_digest(rid)
        if digest in seen_ids:
            self.quarantine(
                source_file,
                res.line_no,
                "fhir.duplicate_id",
                f"{rtype}.id: already delivered earlier in this extract",
                record_key=f"{rtype}/{rid}",
                rtype=rtype,
                original=res.text,
            )
            return
        seen_ids.add(digest)
        self.tally.valid[rtype] += 1
        self.tally.count_flags(f.code for f in res.flags)
        self.loader.add(source_file, res)

    def accept_fast(self, source_file: str, rtype: str, cols: FastColumns) -> None:
        """The fast-path resources of one chunk, in bulk when none of them is a duplicate."""
        if not self._seen(rtype).add_new(cols.id_digests):  # a duplicate in there somewhere
            for res in cols.one_by_one(rtype):
                self.accept(source_file, res)
            return
        self.tally.read[rtype] += len(cols.ids)
        self.tally.valid[rtype] += len(cols.ids)
        self.tally.count_flags(f.code for f in cols.flags)
        self.loader.add_columns(source_file, rtype, cols)

    def _seen(self, rtype: str) -> SeenIds:
        seen = self.seen.get(rtype)
        if seen is None:
            seen = self.seen[rtype] = SeenIds()
        return seen

    def take_chunk(self, result: ChunkResult) -> None:
        for line in result.quarantined:
            self.reject(result.source_file, line)
        if result.expected is None or not result.fast.ids:
            for res in result.valid:
                self.accept(result.source_file, res)
        elif not result.valid:
            self.accept_fast(result.source_file, result.expected, result.fast)
        else:
            # Mixed chunk (rare): accept in line order, so the first delivery of an id wins.
            merged = result.valid + result.fast.one_by_one(result.expected)
            merged.sort(key=lambda r: r.line_no or 0)
            for res in merged:
                self.accept(result.source_file, res)

    def result(self, files: int, dangling: int, mapped: dict[str, int]) -> FhirIngestResult:
        t = self.tally
        return FhirIngestResult(
            holder=self.holder,
            files=files,
            resources_read=dict(sorted(t.read.items())),
            resources_valid=dict(sorted(t.valid.items())),
            quarantined=dict(sorted(t.quarantined.items())),
            quarantined_by_type=dict(sorted(t.quarantined_by_type.items())),
            files_converted=dict(sorted(t.converted.items())),
            rows=dict(sorted(self.loader.row_counts.items())),
            dangling_references=dangling,
            unknown_codes=t.unknown_codes,
            view_errors=t.view_errors,
            codes_mapped=dict(sorted(mapped.items())),
        )


class Progress:
    """Progress of the NDJSON files of one ingest in the task log: a line every ``every`` seconds
    (a region's delivery runs for many minutes), counts only (and this process's peak memory: the
    main process holds DuckDB and the buffers; its workers stay small).

    Files are read in order, so a result from the ``i``-th file means the ``i`` before it are done.
    """

    def __init__(
        self,
        holder: str,
        files: list[str],
        tally: IngestTally,
        *,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.holder = holder
        self.position = {name: i for i, name in enumerate(files)}
        self.total = len(files)
        self.tally = tally
        self.every = PROGRESS_EVERY_S if every is None else every
        self.clock = clock
        self.started = clock()
        self.due = self.started + self.every
        self.files_done = 0

    def update(self, source_file: str) -> None:
        """After each chunk: log when the time has come (one clock read; the hot path)."""
        self.files_done = self.position.get(source_file, self.files_done)
        if self.clock() >= self.due:
            self.report()

    def report(self, files_done: int | None = None) -> None:
        now = self.clock()
        self.due = now + self.every
        t = self.tally
        read = sum(t.read.values())
        elapsed = max(now - self.started, 1e-9)
        log.info(
            "fhir ingest %s progress: %d/%d files done, %d resources read, %d valid, %d quarantined, "
            "%.0f resources/s, %.0f s, peak memory of this process %d MiB",
            self.holder,
            self.files_done if files_done is None else files_done,
            self.total,
            read,
            sum(t.valid.values()),
            sum(t.quarantined.values()),
            read / elapsed,
            elapsed,
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,  # KiB on Linux
        )


class _ReadAhead:
    """Bounds the chunks read ahead of the main process.

    The feeder sends its input to the workers as fast as they take it: without a bound, whole files
    would sit in memory, queued for the workers. At most ``limit`` chunks are in flight.
    """

    def __init__(self, limit: int) -> None:
        self._slots = threading.BoundedSemaphore(limit)
        self._stopped = threading.Event()
        self._blobs: deque[bytes] = deque()  # of the chunks in flight, in input order

    def feed(self, chunks: Iterable[Chunk], by_reference: bool = False) -> Iterator[Chunk]:
        """The chunks, as the slots allow; ``by_reference``: without the blob of a chunk that
        knows where it lies in its file (worker processes read it there)."""
        for chunk in chunks:
            while not self._slots.acquire(timeout=0.2):
                if self._stopped.is_set():  # the consumer gave up: let the feeder stop
                    return
            self._blobs.append(chunk.blob)
            yield chunk._replace(blob=b"") if by_reference and chunk.where is not None else chunk

    def consume(self, results: Iterable[ChunkResult]) -> Iterator[ChunkResult]:
        """The results in input order (as ``_ChunkWorkers.imap`` and ``map`` give them), with their text."""
        for result in results:
            result.fast.restore_data(self._blobs.popleft())
            self._slots.release()
            yield result

    def stop(self) -> None:
        self._stopped.set()


def _chunk_worker(conn: Any, views_dir: Path) -> None:
    """A worker process of :class:`_ChunkWorkers`: classifies the chunks it is sent, in order, and
    sends back ``(True, result)`` or ``(False, exception)`` for each; stops at ``None`` or EOF."""
    if _classifier is None:  # (forked workers inherit the parent's)
        init_classifier(views_dir)
    while True:
        try:
            chunk = conn.recv()
        except EOFError:
            return
        if chunk is None:
            return
        try:
            out: tuple[bool, Any] = (True, process_chunk(chunk))
        except Exception as exc:  # raised again in the main process
            out = (False, exc)
        try:
            conn.send(out)
        except Exception as exc:  # (pickling fails before anything is written)
            conn.send((False, RuntimeError(f"fhir ingest worker: {type(exc).__name__} sending a result")))


class _ChunkWorkers:
    """Worker processes that classify chunks, results read in input order by the consuming thread
    itself.

    (``multiprocessing.Pool`` cost about 10 % of the ingest's CPU here: its worker-handler thread
    wakes on every result waiting in the shared result pipe, and its result-handler thread adds a
    hop; both contend for the main process's GIL with the loader and the reader.)

    One feeder thread reads the input and sends each chunk to the worker with the fewest chunks
    pending (so a worker that gets less of a shared machine gets less work, as with ``imap``); the
    consumer receives each result from the worker that holds it. Each worker answers in the order
    it was sent. No deadlock: chunks are sent and read in one order, so the oldest chunk in flight
    is always fully sent and its worker can always deliver its result.
    """

    def __init__(self, n: int, views_dir: Path) -> None:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        self._conns: list[Any] = []
        self._procs: list[Any] = []
        for _ in range(n):
            parent, child = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=_chunk_worker, args=(child, views_dir), daemon=True)
            proc.start()
            child.close()  # the worker's end lives in the worker only: its death reads as EOF here
            self._conns.append(parent)
            self._procs.append(proc)
        self._order: queue.SimpleQueue[int | None] = queue.SimpleQueue()  # worker of each chunk sent
        self._pending = [0] * n  # chunks sent to each worker whose result is not read yet
        self._lock = threading.Lock()
        self._feed_error: BaseException | None = None
        self._feeder: threading.Thread | None = None

    def imap(self, chunks: Iterable[Chunk]) -> Iterator[ChunkResult]:
        """The results of ``chunks``, in input order (the input is read by a thread of its own)."""
        self._feeder = threading.Thread(target=self._feed, args=(chunks,), name="fhir-feeder", daemon=True)
        self._feeder.start()
        while (w := self._order.get()) is not None:
            try:
                ok, out = self._conns[w].recv()
            except EOFError:
                raise RuntimeError("fhir ingest: a worker process died") from None
            with self._lock:
                self._pending[w] -= 1
            if not ok:
                raise out
            yield out
        if self._feed_error is not None:
            raise self._feed_error

    def _feed(self, chunks: Iterable[Chunk]) -> None:
        pending = self._pending
        try:
            for chunk in chunks:
                with self._lock:
                    w = min(range(len(pending)), key=pending.__getitem__)
                    pending[w] += 1
                self._conns[w].send(chunk)
                self._order.put(w)
        except BaseException as exc:  # a file could not be read (or a worker is gone): the consumer raises it
            self._feed_error = exc
        finally:
            self._order.put(None)

    def close(self, *, terminate: bool = False) -> None:
        """Stop the workers (at once with ``terminate``) and wait for them and the feeder."""
        for conn, proc in zip(self._conns, self._procs, strict=True):
            if terminate:
                proc.terminate()
            else:
                try:
                    conn.send(None)
                except OSError:  # already gone
                    proc.terminate()
        for proc in self._procs:
            proc.join()
        if self._feeder is not None:
            self._feeder.join()  # returns: its sends fail once the workers are gone
        for conn in self._conns:
            conn.close()


@contextmanager
def _processed_chunks(
    chunks: Iterable[Chunk], n_workers: int, plan: ViewPlan | None = None
) -> Iterator[Iterator[ChunkResult]]:
    """The chunks' results in input order, from ``n_workers`` worker processes (0: this process)."""
    read_ahead = _ReadAhead(IN_FLIGHT_CHUNKS)
    fed = read_ahead.feed(chunks, by_reference=n_workers > 0)
    init_classifier(VIEWS_DIR, plan)  # before forking: the workers inherit it
    if n_workers == 0:
        yield read_ahead.consume(map(process_chunk, fed))
        return
    workers = _ChunkWorkers(n_workers, VIEWS_DIR)
    try:
        yield read_ahead.consume(workers.imap(fed))
    except BaseException:
        read_ahead.stop()
        workers.close(terminate=True)
        raise
    read_ahead.stop()  # (nothing is left to feed)
    workers.close()


def _ingest_ndjson(
    intake: _Intake,
    files: list[Path],
    landing_root: Path,
    chunk_lines: int,
    workers: int | None,
    plan: ViewPlan | None = None,
) -> list[FileProblem]:
    """Read, validate and flatten every NDJSON file; returns the problems of whole files."""
    problems: list[FileProblem] = []
    names = [str(p.relative_to(landing_root)) for p in files]
    chunks = (
        chunk
        for p, rel in zip(files, names, strict=True)
        for chunk in ndjson_chunks(p, rel, chunk_lines, problems)
    )
    for t in {_expected_type(p) for p in files} - {None}:
        fast_decoder(t)  # build the Structs once, before forking: workers inherit them
    progress = Progress(intake.holder, names, intake.tally)
    with _processed_chunks(chunks, _worker_count(workers), plan) as results:
        for result in results:
            intake.take_chunk(result)
            progress.update(result.source_file)
    progress.report(files_done=len(names))
    return problems


def _quarantine_files(intake: _Intake, problems: list[FileProblem], settings: Settings) -> None:
    """Keep a copy of each damaged or converted file and record its problem (or notice)."""
    for p in problems:
        kept = quarantine.keep_original_file(
            settings.landing_dir(intake.holder) / p.source_file,
            settings.quarantine_dir(intake.holder),
            p.source_file,
        )
        intake.quarantine(
            p.source_file, p.line_no, p.reason, p.detail, rtype=p.rtype, original_path=str(kept)
        )


def _ingest_bundles(intake: _Intake, bundles: list[Path], settings: Settings) -> None:
    """Validate and flatten every Bundle's entries, in this process."""
    landing_root = settings.landing_dir(intake.holder)
    for p in bundles:
        rel = str(p.relative_to(landing_root))
        entries, problems = bundle_entries(p.read_bytes())
        for problem in problems:
            if problem.entry_index is None:  # the whole file
                kept = quarantine.keep_original_file(p, settings.quarantine_dir(intake.holder), rel)
                intake.quarantine(
                    rel, None, problem.reason, problem.detail, rtype="Bundle", original_path=str(kept)
                )
            else:
                intake.quarantine(rel, None, problem.reason, problem.detail)
        for entry in entries:
            raw = entry.raw.encode("utf-8")
            out = classify(entry.resource, entry.raw, None)
            if out.valid:
                res = ValidResource(
                    None, out.rtype or "", out.rid or "", raw, out.rows or {}, out.flags or [], False
                )
                intake.accept(rel, res)
            else:
                intake.tally.read[out.rtype or "unknown"] += 1
                intake.quarantine(
                    rel,
                    None,
                    out.reason or "fhir.invalid",
                    f"Bundle.entry[{entry.entry_index}].resource: {out.detail}",
                    record_key=_record_key(out.rtype, out.rid),
                    rtype=out.rtype,
                    original=raw,
                )


def _configure_raw_zone(con: duckdb.DuckDBPyConnection) -> None:
    # Bound DuckDB's memory whatever the delivery's size (it spills the open transaction to
    # disk beyond this); the workers and buffers add ~0.5 GiB, the ids seen ~16 B per resource
    # (goal: under 4 GiB in all; measured by bench/bench_fhir_region.py: 16.1 M resources, a
    # 300,000-patient region, peaked at 2.4 GiB in this process and 2.5 GiB with its workers).
    con.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
    if not COMPRESS_RAW_STRINGS:
        con.execute("SET disabled_compression_methods = 'dict_fsst'")
    # While the worker processes keep every core busy, DuckDB's own threads only add the cost of
    # parallel inserts (thread-local storage merged per statement): one thread loads for ~1.7
    # CPU-seconds less per million resources. The steps after loading get every core back.
    con.execute(f"SET threads = {LOADING_DUCKDB_THREADS}")


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
    landing_root = settings.landing_dir(holder_id)
    landing = landing_root / "fhir"
    plan = view_plan(VIEWS_DIR)
    if not plan.views:
        raise FhirIngestError(f"no ViewDefinitions found in {VIEWS_DIR}")
    if plan.python_only:
        log.info("fhir views evaluated in Python (not compiled to SQL): %s", sorted(plan.python_only))
    ndjson, bundles = landing_files(landing) if landing.is_dir() else ([], [])

    with write_connection(settings.raw_db(holder_id)) as con:
        _configure_raw_zone(con)
        con.execute("BEGIN TRANSACTION")
        try:
            _create_tables(con, plan.views)
            quarantine.reset(con, stage=STAGE, source=SOURCE)
            loader = _LoaderThread(_Loader(con, plan))
            try:
                intake = _Intake(holder_id, loader)
                file_problems = _ingest_ndjson(intake, ndjson, landing_root, chunk_lines, workers, plan)
                _quarantine_files(intake, file_problems, settings)
                _ingest_bundles(intake, bundles, settings)
            except BaseException:
                loader.abort()  # the connection is this thread's again before the rollback
                raise
            loader.close()  # (its last flush runs on every core: the workers are done)
            quarantine.add(con, intake.records)
            mapped = fill_mapped_columns(con)
            apply_column_types(con, plan.views)
            dangling = _flag_dangling(con, plan.views)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    result = intake.result(files=len(ndjson) + len(bundles), dangling=dangling, mapped=mapped)
    log.info(
        "fhir ingest %s: %d files, %d valid, %d quarantined, %d dangling references, %d unknown codes",
        holder_id,
        result.files,
        sum(result.resources_valid.values()),
        sum(result.quarantined.values()),
        dangling,
        result.unknown_codes,
    )
    return result
