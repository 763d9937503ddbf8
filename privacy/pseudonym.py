"""Keyed pseudonyms: HMAC-SHA256 (hex) with precomputed inner/outer states.

HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m)). The two padded-key blocks are hashed
once per key; each value then costs two ``copy()``-and-update steps instead of the four
compressions of ``hmac.new`` per value, about twice as fast. The output is bit-identical to
``hmac.new(key, m, sha256).hexdigest()`` (tested).

The batch path reads the Arrow buffers directly and builds the result as one fixed-width
buffer, so no Python ``str`` is created per value on either side.
"""

from __future__ import annotations

import binascii
import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HEX_LEN = 64


class Pseudonymiser:
    """Computes keyed pseudonyms under one data key. Holds the key; never print it."""

    __slots__ = ("_inner", "_outer", "key_id")

    def __init__(self, secret: bytes, *, key_id: str) -> None:
        if len(secret) > 64:  # RFC 2104: longer keys are hashed first; ours are 32 bytes
            secret = hashlib.sha256(secret).digest()
        block = secret.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        self.key_id = key_id

    def __repr__(self) -> str:
        return f"Pseudonymiser(key_id={self.key_id!r})"

    def __reduce__(self) -> None:  # type: ignore[override]
        raise TypeError("a Pseudonymiser holds key material and must not be pickled")

    def digest(self, message: bytes) -> bytes:
        h = self._inner.copy()
        h.update(message)
        o = self._outer.copy()
        o.update(h.digest())
        return o.digest()

    def one(self, value: str) -> str:
        """Pseudonym of one value (UTF-8 encoded)."""
        return self.digest(value.encode()).hex()

    def many(self, values: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Pseudonyms of a string array, same order; nulls stay null."""
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks() if values.num_chunks else pa.array([], pa.string())
        if pa.types.is_large_string(values.type):
            values = values.cast(pa.string())
        n = len(values)
        if n == 0:
            return pa.array([], pa.string())
        valid = values.is_valid()
        dense = values.filter(valid) if values.null_count else values
        m = len(dense)
        if m == 0:
            return pa.nulls(n, pa.string())
        offsets = np.frombuffer(dense.buffers()[1], dtype=np.int32, count=m + 1, offset=dense.offset * 4)
        data = memoryview(dense.buffers()[2] or b"")
        ic, oc = self._inner.copy, self._outer.copy
        out: list[bytes] = []
        append = out.append
        starts = offsets.tolist()
        for i in range(m):
            h = ic()
            h.update(data[starts[i] : starts[i + 1]])
            o = oc()
            o.update(h.digest())
            append(o.digest())
        hexed = binascii.hexlify(b"".join(out))
        result = pa.Array.from_buffers(
            pa.string(),
            m,
            [None, pa.py_buffer(np.arange(0, HEX_LEN * m + 1, HEX_LEN, dtype=np.int32)), pa.py_buffer(hexed)],
        )
        if values.null_count:
            # scatter back into the original positions
            idx = np.cumsum(np.asarray(valid, dtype=np.int64)) - 1
            taken = result.take(pa.array(np.clip(idx, 0, m - 1)))
            return pc.if_else(valid, taken, pa.scalar(None, pa.string()))
        return result
