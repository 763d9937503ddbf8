"""Published cells on the wire: an Arrow IPC stream (types kept, no pickling, no code)."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.ipc as ipc

#: A node's answer is a disclosure-controlled table of at most ``access.aggregate.MAX_CELLS``
#: cells; anything much larger is not an answer.
MAX_IPC_BYTES = 64 * 1024 * 1024


def to_ipc(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def from_ipc(raw: bytes) -> pa.Table:
    if len(raw) > MAX_IPC_BYTES:
        raise ValueError("an answer's cells exceed the size limit")
    return ipc.open_stream(io.BytesIO(raw)).read_all()
