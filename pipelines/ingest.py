"""Ingest delimited register/PROM extracts into a holder's raw zone.

The layout of each source is declared in ``schemas/sources/<source>.json``. Every line of
every delivered file ends up either as a row of the raw table or as a quarantine record with
a reason code; nothing is dropped silently. Whole files that cannot be read (wrong encoding)
are copied byte for byte into the quarantine area.

Each file's encoding is decided for the whole file before it is parsed (:mod:`pipelines.encoding`):
UTF-8 (a byte-order mark is skipped), UTF-16/32 (mark or NUL pattern), the source's declared
encoding, or, when the file is not UTF-8, cp1252 if its bytes are plausible cp1252 (Swedish
registers still deliver it; latin-1 reads the same). A file read through a conversion it did not
declare gets one file-level record (``encoding.converted_from_cp1252``, ``..._utf16``, ``..._utf32``:
a notice, counted in ``files_converted``, not as quarantined) and its original is kept; a file that
cannot be read gets one (``encoding.not_utf8``, ``encoding.mixed``, ``encoding.invalid``). Only a few
damaged lines in an otherwise UTF-8 file are quarantined line by line (``encoding.not_utf8``).

Parsing is split from I/O: :func:`parse_delimited` is a pure function over bytes, so the
rules can be unit- and property-tested without a database.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from typing import Any

import pyarrow as pa

from hdp.settings import SCHEMAS_DIR, Settings, get_settings
from pipelines import encoding as file_encoding
from pipelines import quarantine, warehouse
from pipelines.quarantine import QuarantineRecord

STAGE = "ingest"
#: The 8-bit encoding a file that is not UTF-8 may be in, when its source declares UTF-8.
DETECTED_8BIT = "cp1252"

_ARROW_TYPES = {"VARCHAR": pa.string(), "DATE": pa.date32(), "DOUBLE": pa.float64(), "INTEGER": pa.int32()}


class SourceSchemaError(ValueError):
    """A source declaration in schemas/sources/ is unusable."""


@dataclass(frozen=True)
class Column:
    name: str  # header name in the delivered file
    raw: str  # column name in the raw zone
    type: str
    required: bool


@dataclass(frozen=True)
class SourceSchema:
    source: str
    raw_table: str
    delimiter: str
    decimal: str
    encoding: str
    unique_key: tuple[str, ...]
    columns: tuple[Column, ...]

    @property
    def landing_subdir(self) -> str:
        return self.source

    @property
    def declares_8bit(self) -> bool:
        """The source declares an 8-bit encoding (cp1252, latin-1) rather than UTF-8."""
        return file_encoding.normalise(self.encoding) != "utf-8"

    def scan(self, data: bytes) -> file_encoding.Verdict:
        """How a delivered file of this source is read (see the module docstring)."""
        if self.declares_8bit:
            return file_encoding.scan([data], fallback=self.encoding, declared=True)
        return file_encoding.scan([data], fallback=DETECTED_8BIT)


@cache
def load_source_schema(source: str) -> SourceSchema:
    path = SCHEMAS_DIR / "sources" / f"{source}.json"
    if not path.exists():
        raise SourceSchemaError(f"no source declaration {path.name} in schemas/sources/")
    spec = json.loads(path.read_text(encoding="utf-8"))
    fmt = spec["format"]
    columns = tuple(
        Column(name=c["name"], raw=c["raw"], type=c["type"], required=bool(c.get("required", False)))
        for c in spec["columns"]
    )
    unknown_types = {c.type for c in columns} - set(_ARROW_TYPES)
    if unknown_types:
        raise SourceSchemaError(f"{path.name}: unsupported column types {sorted(unknown_types)}")
    return SourceSchema(
        source=spec["source"],
        raw_table=spec["raw_table"],
        delimiter=fmt["delimiter"],
        decimal=fmt.get("decimal", "."),
        encoding=fmt.get("encoding", "utf-8"),
        unique_key=tuple(spec.get("unique_key", ())),
        columns=columns,
    )


@dataclass(frozen=True)
class ParsedFile:
    """Rows (as raw-zone column dicts) and rejects of one delivered file."""

    rows: list[dict[str, Any]]
    line_numbers: list[int]
    rejects: list[QuarantineRecord]
    lines_read: int


@dataclass(frozen=True)
class IngestResult:
    """Counts only: safe for logs, XComs and run metrics."""

    holder: str
    source: str
    files: int
    lines_read: int
    rows_loaded: int
    quarantined: dict[str, int] = field(default_factory=dict)
    #: files read through a conversion to UTF-8 they did not declare, by notice code: each also has
    #: one file-level record in the quarantine table, with the original kept
    files_converted: dict[str, int] = field(default_factory=dict)

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())


class _LineRejected(ValueError):
    """A line goes to quarantine: its reason code and a detail naming the column or rule, never a value."""

    def __init__(self, reason_code: str, detail: str) -> None:
        super().__init__(reason_code)
        self.reason_code = reason_code
        self.detail = detail


def _convert(value: str, column: Column, decimal: str) -> Any:
    if value == "":
        if column.required:
            raise _LineRejected("csv.missing_required", f"column {column.name}")
        return None
    try:
        if column.type == "VARCHAR":
            return value
        if column.type == "DATE":
            return date.fromisoformat(value)
        if column.type == "DOUBLE":
            return float(value.replace(decimal, ".") if decimal != "." else value)
        if column.type == "INTEGER":
            return int(value)
    except ValueError:
        reason = "csv.bad_date" if column.type == "DATE" else "csv.bad_number"
        raise _LineRejected(reason, f"column {column.name}") from None
    raise SourceSchemaError(f"unsupported type {column.type}")  # pragma: no cover - checked at load


def _convert_line(line: str, schema: SourceSchema) -> dict[str, Any]:
    """One data line as a raw-zone row; _LineRejected when a field count or value is wrong."""
    fields = next(csv.reader([line], delimiter=schema.delimiter))
    if len(fields) != len(schema.columns):
        raise _LineRejected("csv.column_count", f"{len(fields)} fields, expected {len(schema.columns)}")
    return {
        c.raw: _convert(v.strip(), c, schema.decimal) for c, v in zip(schema.columns, fields, strict=True)
    }


@dataclass(frozen=True)
class _Delivery:
    """The delivered file being parsed: where its quarantine records say they come from, and the
    encoding it is read in (to give rejected lines back as the bytes delivered)."""

    schema: SourceSchema
    holder: str
    relative_name: str
    read_as: file_encoding.FileEncoding = file_encoding.FileEncoding("utf-8")

    def reject(
        self, reason: str, detail: str, line_no: int | None, original: bytes | None
    ) -> QuarantineRecord:
        return QuarantineRecord(
            stage=STAGE,
            holder=self.holder,
            source=self.schema.source,
            reason_code=reason,
            detail=detail,
            source_file=self.relative_name,
            line_no=line_no,
            original=original,
        )

    def original(self, line: str) -> bytes:
        """A line exactly as delivered (bytes that were not UTF-8 included)."""
        enc = self.read_as
        return line.encode(enc.codec, "surrogateescape" if enc.is_utf8 else "strict")

    def whole_file(self, reason: str, detail: str) -> ParsedFile:
        """The whole file quarantined, once, with its reason."""
        return ParsedFile([], [], [self.reject(reason, detail, None, None)], 0)

    def header_mismatch(
        self, header: list[str], raw_lines: list[str], notices: list[QuarantineRecord]
    ) -> ParsedFile:
        """The whole file quarantined: its header is not the declared columns in order."""
        expected = [c.name for c in self.schema.columns]
        missing = [n for n in expected if n not in header]
        extra = [n for n in header if n not in expected]
        detail = (
            f"header differs from schemas/sources/{self.schema.source}.json (missing {missing}, "
            f"unexpected {extra}); whole file quarantined"
        )
        original = self.original(raw_lines[0])
        rejects = [*notices, self.reject("csv.header_mismatch", detail, 1, original)]
        return ParsedFile([], [], rejects, len(raw_lines))


def parse_delimited(data: bytes, schema: SourceSchema, *, holder: str, relative_name: str) -> ParsedFile:
    """Parse one delivered file. Pure: no I/O.

    The file's encoding is decided first, for the whole file: one file-level record when it is
    read through a conversion (a notice) or not read at all. Rejected lines become quarantine
    records carrying the original line bytes; the ``detail`` text names the column and rule,
    never the value.
    """
    verdict = schema.scan(data)
    if verdict.encoding is None:
        unread = _Delivery(schema, holder, relative_name)
        return unread.whole_file(verdict.reason or "encoding.invalid", verdict.detail)
    delivery = _Delivery(schema, holder, relative_name, verdict.encoding)
    try:
        text = file_encoding.decode(data, verdict.encoding)
    except UnicodeDecodeError as exc:  # a declared 8-bit encoding with a byte it leaves undefined
        detail = (
            f"file is not valid {verdict.encoding.label} (byte at offset {exc.start}); whole file quarantined"
        )
        return delivery.whole_file("encoding.invalid", detail)
    notices = [] if verdict.reason is None else [delivery.reject(verdict.reason, verdict.detail, None, None)]
    if not text:
        return ParsedFile([], [], [*notices, delivery.reject("file.empty", "file is empty", None, None)], 0)
    raw_lines = text.splitlines(keepends=True)
    header = next(csv.reader([raw_lines[0]], delimiter=schema.delimiter))
    if header != [c.name for c in schema.columns]:
        return delivery.header_mismatch(header, raw_lines, notices)
    parsed = _parse_data_lines(raw_lines, delivery, check_bytes=verdict.damaged_lines > 0)
    parsed.rejects[:0] = notices
    return parsed


def _parse_data_lines(raw_lines: list[str], delivery: _Delivery, *, check_bytes: bool) -> ParsedFile:
    """The lines after the header: each one a row or a quarantine record (blank lines skipped).

    ``check_bytes``: the file has a few lines with bytes that are not UTF-8; those are rejected.
    """
    schema = delivery.schema
    truncated_line = len(raw_lines) if not raw_lines[-1].endswith(("\n", "\r")) else None
    rows: list[dict[str, Any]] = []
    line_numbers: list[int] = []
    rejects: list[QuarantineRecord] = []
    seen_keys: dict[tuple[Any, ...], int] = {}
    raw_key = _raw_unique_key(schema)  # once per file, not per row: this loop is the hot path
    for line_no, line in enumerate(raw_lines[1:], start=2):
        if not line.strip():
            continue
        try:
            if check_bytes and file_encoding.has_undecodable(line):
                raise _LineRejected("encoding.not_utf8", "line: not valid UTF-8")
            if line_no == truncated_line:
                raise _LineRejected("file.truncated", "last line has no line end: the file was cut off")
            row = _convert_line(line, schema)
            key = tuple(row[k] for k in raw_key)
            if schema.unique_key and key in seen_keys:
                raise _LineRejected(
                    "csv.duplicate", f"same {'+'.join(schema.unique_key)} as line {seen_keys[key]}"
                )
        except _LineRejected as rejected:
            original = delivery.original(line)
            rejects.append(delivery.reject(rejected.reason_code, rejected.detail, line_no, original))
            continue
        seen_keys[key] = line_no
        rows.append(row)
        line_numbers.append(line_no)
    return ParsedFile(rows, line_numbers, rejects, len(raw_lines))


def _raw_unique_key(schema: SourceSchema) -> tuple[str, ...]:
    """The raw-zone names of the schema's unique key columns."""
    return tuple(_raw_name(schema, k) for k in schema.unique_key)


def _raw_name(schema: SourceSchema, delivered_name: str) -> str:
    for c in schema.columns:
        if c.name == delivered_name:
            return c.raw
    raise SourceSchemaError(f"unique_key column {delivered_name!r} is not a declared column")


def to_arrow(schema: SourceSchema, parsed: list[tuple[str, ParsedFile]]) -> pa.Table:
    """All accepted rows of all files as one Arrow table, with provenance columns."""
    arrays: dict[str, list[Any]] = {c.raw: [] for c in schema.columns}
    source_files: list[str] = []
    line_nos: list[int] = []
    for relative_name, pf in parsed:
        for row, line_no in zip(pf.rows, pf.line_numbers, strict=True):
            for c in schema.columns:
                arrays[c.raw].append(row[c.raw])
            source_files.append(relative_name)
            line_nos.append(line_no)
    columns = {c.raw: pa.array(arrays[c.raw], type=_ARROW_TYPES[c.type]) for c in schema.columns}
    columns["_source_file"] = pa.array(source_files, type=pa.string())
    columns["_line_no"] = pa.array(line_nos, type=pa.int64())
    return pa.table(columns)


def _dedupe_across_files(schema: SourceSchema, parsed: list[tuple[str, ParsedFile]], holder: str) -> None:
    """A key delivered in two files is a duplicate too: keep the first (files in name order)."""
    if not schema.unique_key:
        return
    raw_key = _raw_unique_key(schema)  # once per file, not per row: this loop is the hot path
    seen: dict[tuple[Any, ...], str] = {}
    for relative_name, pf in parsed:
        keep_rows, keep_lines = [], []
        for row, line_no in zip(pf.rows, pf.line_numbers, strict=True):
            key = tuple(row[k] for k in raw_key)
            if key in seen:
                pf.rejects.append(
                    QuarantineRecord(
                        stage=STAGE,
                        holder=holder,
                        source=schema.source,
                        reason_code="csv.duplicate",
                        detail=f"same {'+'.join(schema.unique_key)} as a row of {seen[key]}",
                        source_file=relative_name,
                        line_no=line_no,
                    )
                )
                continue
            seen[key] = relative_name
            keep_rows.append(row)
            keep_lines.append(line_no)
        pf.rows[:] = keep_rows
        pf.line_numbers[:] = keep_lines


def ingest_delimited_source(holder_id: str, source: str, *, settings: Settings | None = None) -> IngestResult:
    """Load every ``landing/<source>/*.csv`` of one holder into its raw zone; idempotent."""
    settings = settings or get_settings()
    schema = load_source_schema(source)
    landing = settings.landing_dir(holder_id)
    files = sorted((landing / schema.landing_subdir).glob("*.csv"))
    parsed: list[tuple[str, ParsedFile]] = []
    for path in files:
        relative_name = path.relative_to(landing).as_posix()
        parsed.append(
            (
                relative_name,
                parse_delimited(path.read_bytes(), schema, holder=holder_id, relative_name=relative_name),
            )
        )
    _dedupe_across_files(schema, parsed, holder_id)

    rejects: list[QuarantineRecord] = []
    for (relative_name, pf), path in zip(parsed, files, strict=True):
        file_level = [r for r in pf.rejects if r.line_no is None or r.reason_code in ("file.truncated",)]
        kept = None
        if file_level:  # keep the whole original for the operator
            kept = quarantine.keep_original_file(path, settings.quarantine_dir(holder_id), relative_name)
        for r in pf.rejects:
            if r.line_no is None and kept is not None:
                r = QuarantineRecord(**{**r.__dict__, "original_path": str(kept)})
            rejects.append(r)

    table = to_arrow(schema, parsed)
    with warehouse.write_connection(settings.raw_db(holder_id)) as con:
        con.execute("BEGIN")
        con.register("incoming", table)
        con.execute(f'CREATE OR REPLACE TABLE "{schema.raw_table}" AS SELECT * FROM incoming')
        con.unregister("incoming")
        quarantine.reset(con, stage=STAGE, source=source)
        quarantine.add(con, rejects)
        con.execute("COMMIT")

    notices = Counter(
        r.reason_code for r in rejects if r.reason_code.startswith(file_encoding.CONVERTED_PREFIX)
    )
    return IngestResult(
        holder=holder_id,
        source=source,
        files=len(files),
        lines_read=sum(max(pf.lines_read - 1, 0) for _, pf in parsed),
        rows_loaded=table.num_rows,
        quarantined=dict(Counter(r.reason_code for r in rejects if r.reason_code not in notices)),
        files_converted=dict(sorted(notices.items())),
    )
