"""What can go wrong, as typed exceptions whose text is one line.

``ClientError`` is the base of all of them: catch it to print ``str(err)`` and exit. A refusal
by the access layer is an ``AccessError`` with the server's stable reason code (``reason``),
HTTP status and message; its subclasses say what kind of refusal it is, so a notebook can catch
``LimitExceeded`` without reading codes. Nothing here ever holds a token.
"""

from __future__ import annotations

#: How many characters of a server message a one-line error keeps.
MAX_MESSAGE = 500


def one_line(text: str) -> str:
    """``text`` on one line (runs of whitespace, newlines included, become one space), bounded."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= MAX_MESSAGE else flat[: MAX_MESSAGE - 1] + "…"


class ClientError(Exception):
    """Anything the client cannot do for you; ``str()`` is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class ServerUnreachable(ClientError):
    """No HTTP answer at all: refused, timed out, unknown host, TLS failure."""

    def __init__(self, url: str, why: str) -> None:
        super().__init__(f"cannot reach {url}: {why}")
        self.url = url
        self.why = why


class AccessError(ClientError):
    """The access layer refused the request (``reason``: its stable reason code)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else f"{reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = one_line(message)


class QueryError(AccessError):
    """The SQL is not acceptable: syntax, unknown names (with line, column and candidates),
    constructs outside the sandbox or the aggregate grammar."""


class LimitExceeded(AccessError):
    """A limit stopped the query: rows, time, memory, or the permit's query budget. ``limit``
    names it (``rows``, ``time``, ``memory``, ``budget``, ``stream``); the message gives its size."""

    @property
    def limit(self) -> str:
        if self.reason.startswith("limit."):
            return self.reason.removeprefix("limit.")
        if self.reason.startswith("ledger."):
            return "budget"
        return "stream"


class NotPermitted(AccessError):
    """No valid token, no active permit, or a role that may not do this (401, 403)."""


class NotFound(AccessError):
    """No such release, output or permit (404)."""


class ServiceUnavailable(AccessError):
    """The access layer could not ask something it depends on, so it refused (503)."""


class IntegrityError(AccessError):
    """What arrived does not match the SHA-256 the server audited."""


def refusal(status: int, reason: str, message: str) -> AccessError:
    """The typed ``AccessError`` for a refusal."""
    if reason.startswith("limit.") or reason in (
        "ledger.budget_exhausted",
        "result.incomplete",
        "stream.aborted",
    ):
        return LimitExceeded(status, reason, message)
    if status == 400 or reason.startswith(("sql.", "aggregate.")):
        return QueryError(status, reason, message)
    if status in (401, 403):
        return NotPermitted(status, reason, message)
    if status == 404:
        return NotFound(status, reason, message)
    if status == 503:
        return ServiceUnavailable(status, reason, message)
    return AccessError(status, reason, message)
