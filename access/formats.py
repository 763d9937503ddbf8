"""Result serialisation: JSON, CSV, Arrow IPC stream, Parquet."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import math
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from access.errors import QueryRefused

MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/vnd.apache.parquet",
}
#: Chunk size when streaming a body: large enough for few syscalls, small enough that the
#: server never holds a second copy of a big result in a single write buffer.
STREAM_CHUNK = 1 << 20


def _json_default(v: object) -> object:
    if isinstance(v, dt.date | dt.datetime | dt.time):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, dt.timedelta):
        return v.total_seconds()
    if isinstance(v, bytes):
        return v.hex()
    return str(v)


def _clean(v: object) -> object:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN/Infinity
    return v


def serialise(table: pa.Table, fmt: str, *, meta: dict | None = None) -> bytes:
    if fmt == "json":
        columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
        rows = [[_clean(col[r]) for col in columns] for r in range(table.num_rows)]
        doc = {
            "columns": [{"name": f.name, "type": str(f.type)} for f in table.schema],
            "rows": rows,
            "row_count": table.num_rows,
            **(meta or {}),
        }
        return json.dumps(doc, default=_json_default, ensure_ascii=False, separators=(",", ":")).encode()
    if fmt == "csv":
        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        return buf.getvalue()
    if fmt == "arrow":
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=65_536)
        return sink.getvalue().to_pybytes()
    if fmt == "parquet":
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        return buf.getvalue()
    raise QueryRefused("format.unknown", f"format must be one of {sorted(MEDIA_TYPES)}")


def chunks(body: bytes) -> Iterator[bytes]:
    view = memoryview(body)
    for start in range(0, len(body), STREAM_CHUNK):
        yield bytes(view[start : start + STREAM_CHUNK])
