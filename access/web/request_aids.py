"""What the request page shows besides the request itself, read from the governance store:
the applicant's organisation, the comment thread, the applicant's overlapping permits; and the
decision form's checklist (the Five Safes, the acknowledgement of groups at risk).

The Five Safes (safe projects, people, settings, data, outputs) are what a steward weighs; the
page lists next to each what the platform knows about it (ethics reference and purpose; the
applicant, organisation and other permits; the output tier and secure environment; the
disclosure settings and pre-check; output checking), and the steward ticks each one. The ticks
are stored with the decision (``governance.requests.decide``'s ``checklist``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from governance import service
from governance.errors import NotFound
from governance.values import RequestView

FIVE_SAFES = service.FIVE_SAFES


def request_extras(session: Session, r: RequestView, user_name: str, *, steward_view: bool) -> dict[str, Any]:
    """Page context: ``organisation``, ``comments``, ``projected_end`` (the permit's end if it were
    approved now: a permit runs ``access_days`` from approval) and (stewards only) ``overlaps``."""
    try:
        comments = service.list_comments(session, request_id=r.id, reader=user_name)
    except NotFound:
        comments = []  # the caller sees the request but is not on its thread (cannot happen today)
    return {
        "organisation": service.user_organisation(session, r.applicant),
        "projected_end": datetime.now(UTC) + timedelta(days=r.access_days),
        "comments": comments,
        "five_safes": FIVE_SAFES,
        "overlaps": service.overlapping_permits(session, request_id=r.id) if steward_view else [],
    }


def checklist_from_form(safes: Iterable[str], ack_at_risk: str) -> dict[str, bool]:
    """The decision's checklist from the form: each of the Five Safes ticked or not, and the
    acknowledgement of groups at risk; unknown values are ignored (the form sends only these)."""
    ticked = set(safes)
    out = {item: item in ticked for item in FIVE_SAFES}
    out[service.AT_RISK_ACKNOWLEDGED] = ack_at_risk == "yes"
    return out
