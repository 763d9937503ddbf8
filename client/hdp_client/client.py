"""A small Python client for the access layer.

    >>> from hdp_client import Client                                 # doctest: +SKIP
    >>> c = Client("http://127.0.0.1:8000", token, release="rel_2026_0001")
    >>> c.describe()["variables"][0]["label"]["en"]
    >>> df = c.query("SELECT sex, count(*) AS n FROM register_visit GROUP BY sex", as_="pandas")

Results travel as Arrow IPC (fast, typed); ``as_="arrow"`` returns a ``pyarrow.Table``.
Refusals raise typed ``AccessError`` subclasses carrying the server's reason code; a server that
cannot be reached raises ``ServerUnreachable``. Every error's text is one line (``errors``).
"""

from __future__ import annotations

import errno
import hashlib
import io
import socket
import ssl
from typing import Any, Literal

import httpx
import pyarrow as pa
import pyarrow.ipc as ipc

from hdp_client.errors import (
    AccessError,
    IntegrityError,
    LimitExceeded,
    ServerUnreachable,
    refusal,
)


def unreachable_reason(err: httpx.TransportError) -> str:
    """A few words for why no HTTP answer came (``connection refused``, ``timed out``...)."""
    if isinstance(err, httpx.TimeoutException):
        return "timed out"
    cause: BaseException | None = err
    while cause is not None:  # httpx wraps the socket error (ConnectError <- OSError)
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name not resolved"
        if isinstance(cause, ssl.SSLError):
            return "TLS handshake failed"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        cause = cause.__cause__ or cause.__context__
    if isinstance(err, httpx.ConnectError):
        return "connection failed"
    return f"{type(err).__name__} (no HTTP answer)"


class Client:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        release: str | None = None,
        timeout_s: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.release = release
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:  # never the token
        return f"Client({self.base_url!r}, release={self.release!r})"

    # -- the transport: every request goes through here ------------------------------
    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.RemoteProtocolError:
            # A streamed result is cut off when the server stops it (row or time limit):
            # never hand back a silently shortened table.
            raise LimitExceeded(
                0,
                "result.incomplete",
                "the result stream was cut off by a row or time limit; aggregate or filter, or narrow the query",
            ) from None
        except httpx.TransportError as err:
            raise ServerUnreachable(self.base_url, unreachable_reason(err)) from None
        return self._check(r)

    @staticmethod
    def _check(r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and "error" in body:
                raise refusal(r.status_code, str(body.get("error")), str(body.get("message", "")))
            raise refusal(r.status_code, "http.error", r.text[:200] or r.reason_phrase)
        return r

    def _get(self, path: str, **kwargs: Any) -> Any:
        return self._send("GET", path, **kwargs).json()

    def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._send("POST", path, json=body).json()

    def _release(self, release: str | None) -> str:
        rel = release or self.release
        if not rel:
            raise ValueError("name a release: Client(..., release=...) or query(..., release=...)")
        return rel

    # -- who am I, my releases, what is in them ------------------------------------------
    def me(self) -> dict[str, Any]:
        return self._get("/me")

    def releases(self) -> list[dict[str, Any]]:
        return self._get("/releases")

    def schema(self, release: str | None = None) -> dict[str, Any]:
        return self._get(f"/releases/{self._release(release)}/schema")

    def describe(self, release: str | None = None) -> dict[str, Any]:
        """The release's codebook: per variable its label (sv, en), type, unit, value set, code
        system and disclosure class; and the release's provenance (holders, extract dates,
        quality gates passed, exclusions, disclosure settings)."""
        return self._get(f"/releases/{self._release(release)}/codebook")

    def manifest(self, release: str | None = None) -> dict[str, Any]:
        """The release's manifest as researchers may read it (files and their SHA-256, counts,
        policy, quality label; nothing identifying, no key material, no internal paths)."""
        return self._get(f"/releases/{self._release(release)}/manifest")

    # -- queries ---------------------------------------------------------------------
    def raw(self, sql: str, *, release: str | None = None, format: str = "arrow") -> httpx.Response:
        r = self._send(
            "POST", f"/releases/{self._release(release)}/query", json={"sql": sql, "format": format}
        )
        expected = r.headers.get("X-HDP-Result-SHA256")
        if expected and hashlib.sha256(r.content).hexdigest() != expected:
            raise IntegrityError(
                r.status_code, "client.hash_mismatch", "the result does not match its audited hash"
            )
        return r

    def query(
        self, sql: str, *, release: str | None = None, as_: Literal["arrow", "pandas"] = "arrow"
    ) -> pa.Table | Any:
        """Run ``sql`` on the release; a ``pyarrow.Table`` (or pandas DataFrame with ``as_="pandas"``)."""
        r = self.raw(sql, release=release, format="arrow")
        table = ipc.open_stream(io.BytesIO(r.content)).read_all()
        return table.to_pandas() if as_ == "pandas" else table

    # -- the airlock: record-level results leave only as checked outputs ----------------
    def request_output(
        self, sql: str, *, title: str, context: str, format: str = "csv", release: str | None = None
    ) -> dict[str, Any]:
        """File an output request: the server runs ``sql``, keeps the result file, and two output
        checkers decide. ``context``: what it is and why it is not disclosive (cell counts...)."""
        return self._post(
            f"/releases/{self._release(release)}/outputs",
            {"sql": sql, "format": format, "title": title, "context": context},
        )

    def outputs(self) -> list[dict[str, Any]]:
        """Your output requests, newest first."""
        return self._get("/outputs")

    def output(self, output_id: int) -> dict[str, Any]:
        return self._get(f"/outputs/{output_id}")

    def output_queue(self, *, all: bool = False) -> list[dict[str, Any]]:  # noqa: A002
        """Outputs awaiting your check (output checkers, stewards); ``all=True``: every one you may check."""
        return self._get("/outputs/check", params={"all": "true"} if all else None)

    def output_preview(self, output_id: int) -> dict[str, Any]:
        return self._get(f"/outputs/{output_id}/preview")

    def check_output(
        self, output_id: int, decision: Literal["approve", "reject", "return"], comment: str
    ) -> dict[str, Any]:
        return self._post(f"/outputs/{output_id}/checks", {"decision": decision, "comment": comment})

    def resubmit_output(
        self, output_id: int, *, context: str, sql: str | None = None, format: str | None = None
    ) -> dict[str, Any]:
        body = {"context": context, **({"sql": sql} if sql else {}), **({"format": format} if format else {})}
        return self._post(f"/outputs/{output_id}/resubmit", body)

    def withdraw_output(self, output_id: int) -> dict[str, Any]:
        return self._post(f"/outputs/{output_id}/withdraw")

    def download_output(self, output_id: int, path: str | None = None) -> bytes:
        """The approved output's bytes (written to ``path`` too, if given); checked against the
        SHA-256 the server filed and the checkers saw."""
        r = self._send("GET", f"/outputs/{output_id}/download")
        expected = r.headers.get("X-HDP-Output-SHA256", "")
        if hashlib.sha256(r.content).hexdigest() != expected:
            raise IntegrityError(
                r.status_code, "client.hash_mismatch", "the download does not match its checked hash"
            )
        if path:
            with open(path, "wb") as fh:
                fh.write(r.content)
        return r.content

    def output_exceptions(self, permit_id: int) -> list[dict[str, Any]]:
        return self._get(f"/permits/{permit_id}/output-exceptions")

    def record_output_exception(
        self, permit_id: int, justification: str, holder_id: str | None = None
    ) -> dict[str, Any]:
        """(Stewards) allow row-level outputs on a permit, with a justification."""
        body = {"justification": justification, **({"holder_id": holder_id} if holder_id else {})}
        return self._post(f"/permits/{permit_id}/output-exceptions", body)


__all__ = ["AccessError", "Client"]
