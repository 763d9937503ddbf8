"""A small Python client for the access layer.

    >>> from access.client import Client                              # doctest: +SKIP
    >>> c = Client("http://127.0.0.1:8000", token, release="rel_2026_0001")
    >>> df = c.query("SELECT sex, count(*) AS n FROM register_visit GROUP BY sex", as_="pandas")

Results travel as Arrow IPC (fast, typed); ``as_="arrow"`` returns a ``pyarrow.Table``.
Refusals raise ``AccessError`` carrying the server's reason code.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any, Literal

import httpx
import pyarrow as pa
import pyarrow.ipc as ipc


class AccessError(RuntimeError):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


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
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
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

    def _check(self, r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            try:
                body = r.json()
                raise AccessError(r.status_code, body.get("error", "unknown"), body.get("message", ""))
            except ValueError:
                raise AccessError(r.status_code, "http.error", r.text[:200]) from None
        return r

    def me(self) -> dict[str, Any]:
        return self._check(self._http.get("/me")).json()

    def releases(self) -> list[dict[str, Any]]:
        return self._check(self._http.get("/releases")).json()

    def schema(self, release: str | None = None) -> dict[str, Any]:
        return self._check(self._http.get(f"/releases/{self._release(release)}/schema")).json()

    def _release(self, release: str | None) -> str:
        rel = release or self.release
        if not rel:
            raise ValueError("name a release: Client(..., release=...) or query(..., release=...)")
        return rel

    def raw(self, sql: str, *, release: str | None = None, format: str = "arrow") -> httpx.Response:
        try:
            r = self._http.post(
                f"/releases/{self._release(release)}/query", json={"sql": sql, "format": format}
            )
        except httpx.RemoteProtocolError:
            # A streamed result is cut off when the server stops it (row or time limit):
            # never hand back a silently shortened table.
            raise AccessError(
                0,
                "result.incomplete",
                "the result stream was cut off (row or time limit); aggregate or filter, or narrow the query",
            ) from None
        r = self._check(r)
        expected = r.headers.get("X-HDP-Result-SHA256")
        if expected and hashlib.sha256(r.content).hexdigest() != expected:
            raise AccessError(
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
        r = self._http.post(
            f"/releases/{self._release(release)}/outputs",
            json={"sql": sql, "format": format, "title": title, "context": context},
        )
        return self._check(r).json()

    def outputs(self) -> list[dict[str, Any]]:
        """Your output requests, newest first."""
        return self._check(self._http.get("/outputs")).json()

    def output(self, output_id: int) -> dict[str, Any]:
        return self._check(self._http.get(f"/outputs/{output_id}")).json()

    def output_queue(self, *, all: bool = False) -> list[dict[str, Any]]:  # noqa: A002
        """Outputs awaiting your check (output checkers, stewards); ``all=True``: every one you may check."""
        return self._check(self._http.get("/outputs/check", params={"all": "true"} if all else None)).json()

    def output_preview(self, output_id: int) -> dict[str, Any]:
        return self._check(self._http.get(f"/outputs/{output_id}/preview")).json()

    def check_output(
        self, output_id: int, decision: Literal["approve", "reject", "return"], comment: str
    ) -> dict[str, Any]:
        return self._check(
            self._http.post(f"/outputs/{output_id}/checks", json={"decision": decision, "comment": comment})
        ).json()

    def resubmit_output(
        self, output_id: int, *, context: str, sql: str | None = None, format: str | None = None
    ) -> dict[str, Any]:
        body = {"context": context, **({"sql": sql} if sql else {}), **({"format": format} if format else {})}
        return self._check(self._http.post(f"/outputs/{output_id}/resubmit", json=body)).json()

    def withdraw_output(self, output_id: int) -> dict[str, Any]:
        return self._check(self._http.post(f"/outputs/{output_id}/withdraw")).json()

    def download_output(self, output_id: int, path: str | None = None) -> bytes:
        """The approved output's bytes (written to ``path`` too, if given); checked against the
        SHA-256 the server filed and the checkers saw."""
        r = self._check(self._http.get(f"/outputs/{output_id}/download"))
        expected = r.headers.get("X-HDP-Output-SHA256", "")
        if hashlib.sha256(r.content).hexdigest() != expected:
            raise AccessError(
                r.status_code, "client.hash_mismatch", "the download does not match its checked hash"
            )
        if path:
            with open(path, "wb") as fh:
                fh.write(r.content)
        return r.content

    def output_exceptions(self, permit_id: int) -> list[dict[str, Any]]:
        return self._check(self._http.get(f"/permits/{permit_id}/output-exceptions")).json()

    def record_output_exception(
        self, permit_id: int, justification: str, holder_id: str | None = None
    ) -> dict[str, Any]:
        """(Stewards) allow row-level outputs on a permit, with a justification."""
        body = {"justification": justification, **({"holder_id": holder_id} if holder_id else {})}
        return self._check(self._http.post(f"/permits/{permit_id}/output-exceptions", json=body)).json()
