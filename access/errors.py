"""Refusals: every request the access layer does not serve gets one, with a stable reason code.

Reason codes are dotted, lower-case and stable (they go into the audit log and the operator
report). Messages are for the caller and never contain a value from the data; they may name
a table, column or function the caller wrote, nothing else.
"""

from __future__ import annotations


class Refusal(Exception):
    """A request the access layer refuses (fails closed), with a reason code and HTTP status."""

    status: int = 403

    def __init__(self, reason: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        if status is not None:
            self.status = status


class Unauthenticated(Refusal):
    status = 401


class Forbidden(Refusal):
    status = 403


class NotFound(Refusal):
    status = 404


class QueryRefused(Refusal):
    """The SQL is not acceptable (sandbox) or its result may not be released (disclosure)."""

    status = 400


class QueryCutOff(Refusal):
    """The query exceeded a resource limit (time, rows, memory) and was stopped."""

    status = 422
