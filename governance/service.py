"""Governance service: the contract used by the access layer, the DAGs and the CLI.

Keyword-only functions over a SQLAlchemy ``Session`` (see ``governance.store.session_scope``);
they return frozen values from ``governance.values``. Callers own the transaction: every
function validates first and raises a specific ``governance.errors`` exception before writing,
and ``session_scope`` rolls back on any error, so nothing partial is stored. Row locks and
change counters: ``governance.transactions``.

This module only gathers the functions from the modules that hold them, one per concept:

* ``governance.users``: accounts, roles, API tokens (``create_user`` ... ``authenticate_token``,
  ``token_hash``).
* ``governance.request_fields``: the fields of a request and their validation (the constants).
* ``governance.requests``: filing, drafts, submission, reviews and decisions, amendments,
  decision deadlines, request views.
* ``governance.history``: a request's case history.
* ``governance.comments``: a request's comment thread (stewards of its holders, its applicant side).
* ``governance.permits``: permits in force, revocation, expiry.
* ``governance.releases``: requests ready for release, ``approved_request``, recording and
  deleting releases.
* ``governance.airlock``: output requests and their checks, row-level exceptions (the store
  side of the pure rules in ``governance.outputs``).
* ``governance.consent``: the consent registry.
* ``governance.reporting``: overdue reviews, key figures, the transparency register.
* ``governance.transactions``: ``change_versions`` (the change counters).
"""

from __future__ import annotations

from governance.airlock import (
    check_output,
    file_output_request,
    get_output_request,
    list_output_requests,
    output_check_queue,
    output_exception,
    output_exceptions,
    output_permit_scope,
    outputs_for_checker,
    record_output_download,
    record_output_exception,
    resubmit_output_request,
    withdraw_output_exception,
    withdraw_output_request,
)
from governance.comments import MAX_COMMENT, list_comments, may_take_part, post_comment
from governance.consent import (
    consent_records,
    excluded_consent_keys,
    is_excluded,
    next_validity_boundary,
    record_consent,
    withdraw_consent,
)
from governance.history import request_history
from governance.permits import (
    active_permit,
    expire_permits,
    overlapping_permits,
    permit_for_request,
    releases_for_user,
    revoke_permit,
)
from governance.releases import (
    RELEASE_ID,
    SHA256_HEX,
    approved_request,
    mark_release_deleted,
    record_release,
    releases_due_for_deletion,
    requests_ready_for_release,
)
from governance.reporting import key_figures, overdue_reviews, transparency_register
from governance.request_fields import (
    DATA_FORMS,
    DEFAULT_ACCESS_DAYS,
    ETHICS_REF,
    MAX_ACCESS_DAYS,
    MIN_JUSTIFICATION,
    MIN_PSEUDONYMISATION_JUSTIFICATION,
    OUTPUT_TIERS,
    PERMIT_AMENDABLE,
    REQUEST_FIELDS,
)
from governance.requests import (
    AT_RISK_ACKNOWLEDGED,
    CHECKLIST_ITEMS,
    DEFAULT_DEADLINE_DAYS,
    FIVE_SAFES,
    amend_request,
    decide,
    file_request,
    get_request,
    list_requests,
    set_decision_deadline,
    submit_request,
    update_draft,
)
from governance.transactions import change_versions
from governance.users import (
    USER_NAME,
    authenticate_token,
    create_user,
    disable_user,
    get_user,
    has_role,
    issue_token,
    list_users,
    revoke_tokens,
    set_organisation,
    token_hash,
    user_organisation,
)

__all__ = [
    # governance.users
    "USER_NAME",
    "authenticate_token",
    "create_user",
    "disable_user",
    "get_user",
    "has_role",
    "issue_token",
    "list_users",
    "revoke_tokens",
    "set_organisation",
    "token_hash",
    "user_organisation",
    # governance.request_fields
    "DATA_FORMS",
    "DEFAULT_ACCESS_DAYS",
    "ETHICS_REF",
    "MAX_ACCESS_DAYS",
    "MIN_JUSTIFICATION",
    "MIN_PSEUDONYMISATION_JUSTIFICATION",
    "OUTPUT_TIERS",
    "PERMIT_AMENDABLE",
    "REQUEST_FIELDS",
    # governance.requests
    "AT_RISK_ACKNOWLEDGED",
    "CHECKLIST_ITEMS",
    "DEFAULT_DEADLINE_DAYS",
    "FIVE_SAFES",
    "amend_request",
    "decide",
    "file_request",
    "get_request",
    "list_requests",
    "set_decision_deadline",
    "submit_request",
    "update_draft",
    # governance.history
    "request_history",
    # governance.comments
    "MAX_COMMENT",
    "list_comments",
    "may_take_part",
    "post_comment",
    # governance.permits
    "active_permit",
    "expire_permits",
    "overlapping_permits",
    "permit_for_request",
    "releases_for_user",
    "revoke_permit",
    # governance.releases
    "RELEASE_ID",
    "SHA256_HEX",
    "approved_request",
    "mark_release_deleted",
    "record_release",
    "releases_due_for_deletion",
    "requests_ready_for_release",
    # governance.airlock
    "check_output",
    "file_output_request",
    "get_output_request",
    "list_output_requests",
    "output_check_queue",
    "output_exception",
    "output_exceptions",
    "output_permit_scope",
    "outputs_for_checker",
    "record_output_download",
    "record_output_exception",
    "resubmit_output_request",
    "withdraw_output_exception",
    "withdraw_output_request",
    # governance.consent
    "consent_records",
    "excluded_consent_keys",
    "is_excluded",
    "next_validity_boundary",
    "record_consent",
    "withdraw_consent",
    # governance.reporting
    "key_figures",
    "overdue_reviews",
    "transparency_register",
    # governance.transactions
    "change_versions",
]
