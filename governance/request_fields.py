"""The fields of an access request, and their validation.

:func:`clean_fields` checks a complete request (every rule, in the order a form shows them) and
returns its normalised column values, or raises ``InvalidRequest`` listing every problem at once,
so an applicant fixes them all in one go. Each rule is one ``_check_*`` step; the steps that
depend on another's result (variables on the holders, the output tier on the data form) take it
as an argument.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any, TypedDict

from sqlalchemy.orm import Session

from governance import cohort
from governance import text as free_text
from governance.catalogue import load_catalogue, reviewers_required, table_holders
from governance.errors import InvalidRequest
from governance.models import RequestRow
from governance.purposes import LEGAL_BASES, PURPOSES
from governance.users import user_row

ETHICS_REF = re.compile(r"^(\d{4})-(\d{5})-(\d{2})$")
#: Shortest justification of a decision, an amendment or a revocation.
MIN_JUSTIFICATION = 10
MIN_PSEUDONYMISATION_JUSTIFICATION = 30
MAX_ACCESS_DAYS = 3650
DEFAULT_ACCESS_DAYS = 365
DATA_FORMS = ("anonymised", "pseudonymised")
OUTPUT_TIERS = ("record", "aggregate")
#: Fields of a permitted request that an amendment may change (new member, extension).
PERMIT_AMENDABLE = frozenset({"members", "access_days"})
REQUEST_FIELDS = (
    "project",
    "purpose",
    "legal_basis",
    "ethics_ref",
    "variables",
    "holders",
    "members",
    "cohort_criteria",
    "period",
    "data_form",
    "pseudonymisation_justification",
    "output_tier",
    "access_days",
)

#: (problem code, message a user can act on), as ``InvalidRequest`` lists them.
Problem = tuple[str, str]
#: The variable catalogue: "table.column" -> its entry (table, sensitivity, ...).
Catalogue = dict[str, dict[str, str]]


class RequestColumns(TypedDict):
    """A validated request's values, named as the ``RequestRow`` columns they are stored in."""

    project: str
    purpose: str
    legal_basis: str
    ethics_ref: str
    holders: list[str]
    variables: list[str]
    members: list[str]
    cohort_criteria: dict[str, Any]
    period_start: date | None
    period_end: date | None
    data_form: str
    pseudonymisation_justification: str | None
    output_tier: str
    access_days: int


def clean_fields(
    session: Session, applicant: str, fields: Mapping[str, Any], now: datetime
) -> RequestColumns:
    """Validate a complete request; return normalised column values or raise InvalidRequest (all problems)."""
    problems: list[Problem] = []
    catalogue = load_catalogue()
    project = _check_project(fields, problems)
    purpose, legal_basis = _check_purpose_and_basis(fields, problems)
    ethics_ref = _check_ethics_ref(fields, now, problems)
    holders = _check_holders(fields, problems)
    variables, known_variables = _check_variables(fields, holders, catalogue, problems)
    members = _check_members(session, applicant, fields, problems)
    criteria = _check_cohort_criteria(fields, catalogue, problems)
    period_start, period_end = _check_period(fields, problems)
    data_form, justification = _check_data_form(fields, known_variables, catalogue, problems)
    output_tier = _check_output_tier(fields, data_form, problems)
    access_days = _check_access_days(fields, problems)
    if problems:
        raise InvalidRequest(problems)
    return RequestColumns(
        project=project,
        purpose=purpose,
        legal_basis=legal_basis,
        ethics_ref=ethics_ref,
        holders=holders,
        variables=variables,
        members=members,
        cohort_criteria=criteria,
        period_start=period_start,
        period_end=period_end,
        data_form=data_form,
        pseudonymisation_justification=justification,
        output_tier=output_tier,
        access_days=access_days,
    )


def _names(raw: Any) -> list[str]:
    """One name or several, as a sorted list without duplicates."""
    return sorted(set([raw] if isinstance(raw, str) else raw or ()))


def _check_project(fields: Mapping[str, Any], problems: list[Problem]) -> str:
    project, problem = free_text.check(
        str(fields.get("project") or "").strip(), code="request.project", label="project title"
    )
    if problem:
        problems.append(problem)
    elif not 3 <= len(project) <= 200:
        problems.append(("request.project", "project title must be 3-200 characters"))
    return project


def _check_purpose_and_basis(fields: Mapping[str, Any], problems: list[Problem]) -> tuple[str, str]:
    purpose = fields.get("purpose")
    if purpose not in PURPOSES:
        problems.append(
            ("request.purpose", f"purpose {purpose!r} is not in the controlled list: {', '.join(PURPOSES)}")
        )
    basis = fields.get("legal_basis")
    if basis not in LEGAL_BASES:
        problems.append(
            ("request.legal_basis", f"legal basis {basis!r} unknown; choose one of {', '.join(LEGAL_BASES)}")
        )
    return str(purpose), str(basis)  # as given when valid (a problem was recorded otherwise)


def _check_ethics_ref(fields: Mapping[str, Any], now: datetime, problems: list[Problem]) -> str:
    ethics = str(fields.get("ethics_ref") or "").strip()
    m = ETHICS_REF.match(ethics)
    if not m:
        problems.append(
            ("request.ethics_ref", "ethics approval reference must look like 2024-01234-01 (YYYY-NNNNN-NN)")
        )
    elif not 2000 <= int(m.group(1)) <= now.year + 1:
        problems.append(("request.ethics_ref", f"ethics approval year {m.group(1)} is not plausible"))
    return ethics


def _check_holders(fields: Mapping[str, Any], problems: list[Problem]) -> list[str]:
    known_holders = reviewers_required()
    holders = _names(fields.get("holders"))
    if not holders:
        problems.append(("request.holders", "name at least one data holder"))
    if unknown := [h for h in holders if h not in known_holders]:
        problems.append(
            ("request.holders", f"unknown data holder(s) {unknown}; known: {sorted(known_holders)}")
        )
    return holders


def _check_variables(
    fields: Mapping[str, Any], holders: list[str], catalogue: Catalogue, problems: list[Problem]
) -> tuple[list[str], list[str]]:
    """(every requested variable, those in the catalogue); each must be held by a holder in
    scope, and each holder in scope must deliver at least one of them."""
    t_holders = table_holders()
    variables = _names(fields.get("variables"))
    if not variables:
        problems.append(("request.variables", "choose at least one variable from schemas/variables.json"))
    if unknown := [v for v in variables if v not in catalogue]:
        problems.append(
            ("request.variables", f"{len(unknown)} variable(s) not in the catalogue: {unknown[:10]}")
        )
    known = [v for v in variables if v in catalogue]
    not_held = [v for v in known if not (t_holders[catalogue[v]["table"]] & set(holders))]
    if not_held and holders:
        problems.append(
            (
                "request.variable_not_held",
                f"{len(not_held)} variable(s) held by no data holder in scope: {not_held[:10]}",
            )
        )
    idle = [h for h in holders if known and not any(h in t_holders[catalogue[v]["table"]] for v in known)]
    if idle:
        problems.append(
            ("request.holder_without_variables", f"holder(s) {idle} deliver none of the requested variables")
        )
    return variables, known


def _check_members(
    session: Session, applicant: str, fields: Mapping[str, Any], problems: list[Problem]
) -> list[str]:
    """The project members besides the applicant; everyone named must be an active researcher."""
    members = sorted(set(_names(fields.get("members"))) - {applicant})
    for name in [applicant, *members]:
        row = user_row(session, name)
        if row is None or row.disabled_at is not None:
            problems.append(("request.unknown_user", f"user {name!r} does not exist"))
        elif "researcher" not in row.roles:
            problems.append(("request.not_researcher", f"user {name!r} does not have the researcher role"))
    return members


def _check_cohort_criteria(
    fields: Mapping[str, Any], catalogue: Catalogue, problems: list[Problem]
) -> dict[str, Any]:
    criteria = fields.get("cohort_criteria") or {}
    if not isinstance(criteria, Mapping):
        problems.append(
            ("request.cohort_criteria", "cohort criteria must be an object: variable -> condition")
        )
        return {}
    if bad := [k for k in criteria if k not in catalogue]:
        problems.append(("request.cohort_criteria", f"cohort criteria on unknown variable(s) {bad[:10]}"))
    else:
        try:
            cohort.parse(criteria)  # the release builder applies exactly what is accepted here
        except cohort.InvalidCriteria as exc:
            problems.append(("request.cohort_criteria", str(exc)))
    return dict(criteria)


def _check_period(fields: Mapping[str, Any], problems: list[Problem]) -> tuple[date | None, date | None]:
    period = fields.get("period") or (None, None)
    try:
        start, end = (
            None if d is None else (d if isinstance(d, date) else date.fromisoformat(str(d))) for d in period
        )
    except (TypeError, ValueError):
        problems.append(("request.period", "period must be (start, end) ISO dates, either may be empty"))
        return None, None
    if start and end and start > end:
        problems.append(("request.period", f"period starts {start} after it ends {end}"))
    return start, end


def _check_data_form(
    fields: Mapping[str, Any], known_variables: list[str], catalogue: Catalogue, problems: list[Problem]
) -> tuple[str, str | None]:
    """(data form, pseudonymisation justification): pseudonymised data, and any linkage key,
    needs a written justification."""
    data_form = fields.get("data_form") or "anonymised"
    justification = (fields.get("pseudonymisation_justification") or "").strip() or None
    if justification is not None:
        justification, problem = free_text.check(
            justification,
            code="request.pseudonymisation_justification",
            label="pseudonymisation justification",
            multiline=True,
        )
        if problem:
            problems.append(problem)
    if data_form not in DATA_FORMS:
        problems.append(("request.data_form", f"data form must be one of {DATA_FORMS}"))
    if data_form == "pseudonymised" and len(justification or "") < MIN_PSEUDONYMISATION_JUSTIFICATION:
        problems.append(
            (
                "request.pseudonymisation_justification",
                f"pseudonymised data needs a justification of at least {MIN_PSEUDONYMISATION_JUSTIFICATION} "
                "characters (anonymised is the default)",
            )
        )
    linkage = [v for v in known_variables if catalogue[v]["sensitivity"] == "pseudonym"]
    if linkage and data_form != "pseudonymised":
        problems.append(
            (
                "request.pseudonym_needs_justification",
                f"{linkage[:5]} are linkage keys: ask for pseudonymised data and justify it",
            )
        )
    return data_form, justification


def _check_output_tier(fields: Mapping[str, Any], data_form: str, problems: list[Problem]) -> str:
    tier = fields.get("output_tier") or "aggregate"
    if tier not in OUTPUT_TIERS:
        problems.append(("request.output_tier", f"output tier must be one of {OUTPUT_TIERS}"))
    if tier == "record" and data_form != "pseudonymised":
        # Record-level rows carry each person's release pseudonym (the access layer needs it to
        # apply withdrawals), so they are pseudonymised data whatever the request calls them.
        problems.append(
            (
                "request.record_needs_pseudonymised",
                "record-level output carries each person's release pseudonym: ask for pseudonymised "
                "data and justify it, or choose aggregate output",
            )
        )
    return str(tier)


def _check_access_days(fields: Mapping[str, Any], problems: list[Problem]) -> int:
    access_days = fields.get("access_days", DEFAULT_ACCESS_DAYS)
    if (
        isinstance(access_days, int)
        and not isinstance(access_days, bool)
        and 1 <= access_days <= MAX_ACCESS_DAYS
    ):
        return access_days
    problems.append(("request.access_days", f"access period must be 1-{MAX_ACCESS_DAYS} days"))
    return DEFAULT_ACCESS_DAYS  # never stored: the request is refused with the problem


def row_fields(row: RequestRow) -> dict[str, Any]:
    """A stored request as the fields ``clean_fields`` takes (to re-validate it, or change some)."""
    return {
        "project": row.project,
        "purpose": row.purpose,
        "legal_basis": row.legal_basis,
        "ethics_ref": row.ethics_ref,
        "variables": list(row.variables),
        "holders": list(row.holders),
        "members": list(row.members),
        "cohort_criteria": dict(row.cohort_criteria),
        "period": (row.period_start, row.period_end),
        "data_form": row.data_form,
        "pseudonymisation_justification": row.pseudonymisation_justification,
        "output_tier": row.output_tier,
        "access_days": row.access_days,
    }


def check_field_names(changes: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse a change of any field not in ``allowed``."""
    allowed = set(allowed)
    if unknown := sorted(set(changes) - allowed):
        raise InvalidRequest(
            [("request.unknown_field", f"cannot change {unknown}; changeable: {sorted(allowed)}")]
        )


def check_justification(text: str, *, code: str, label: str, too_short: str) -> tuple[str, Problem | None]:
    """(normalised text, None) or (text, its problem): a justification or reason has at least
    ``MIN_JUSTIFICATION`` characters, and only characters ``governance.text`` allows.
    ``too_short`` says who needs it ("every decision needs a justification")."""
    if len((text or "").strip()) < MIN_JUSTIFICATION:
        return text, (code, f"{too_short} (at least {MIN_JUSTIFICATION} characters)")
    return free_text.check(text, code=code, label=label, multiline=True)
