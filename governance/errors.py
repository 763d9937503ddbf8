"""Specific, actionable governance errors.

Every error carries a stable dotted ``code`` (for clients and tests) and the HTTP status the
access layer maps it to. Messages name the problem (field, state, id) but never a personal
identifier or a consent key.
"""

from __future__ import annotations


class GovernanceError(Exception):
    """Base class: ``code`` is stable and machine-readable, ``http_status`` the 4xx to answer."""

    code = "governance.error"
    http_status = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class NotFound(GovernanceError):
    code = "not_found"
    http_status = 404


class InvalidRequest(GovernanceError):
    """Malformed input: every problem found is listed, nothing was stored."""

    code = "request.invalid"
    http_status = 422

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        text = "; ".join(f"{c}: {m}" for c, m in problems)
        super().__init__(f"{len(problems)} problem(s): {text}", code=problems[0][0] if problems else None)


class InvalidTransition(GovernanceError):
    code = "transition.invalid"
    http_status = 409


class PermissionDenied(GovernanceError):
    code = "auth.forbidden"
    http_status = 403


class SelfDecision(PermissionDenied):
    """Separation of duties: nobody decides on a request they applied for or work on."""

    code = "decision.self_decision"


class DuplicateDecision(GovernanceError):
    code = "decision.duplicate"
    http_status = 409


class AlreadyReleased(GovernanceError):
    code = "release.already_recorded"
    http_status = 409


class ConcurrencyConflict(GovernanceError):
    """Another transaction changed the same request first; retry on fresh state."""

    code = "concurrency.conflict"
    http_status = 409


class InvalidConsent(GovernanceError):
    code = "consent.invalid"
    http_status = 422
