"""Controlled lists: EHDS secondary-use purposes and legal bases.

Purposes follow Regulation (EU) 2025/327 (EHDS) art. 53(1). Codes are stable (stored in requests,
permits, consent records and the public transparency register); descriptions are for people.
"""

from __future__ import annotations

from types import MappingProxyType

#: EHDS art. 53(1) secondary-use purposes, code -> short description.
PURPOSES: MappingProxyType[str, str] = MappingProxyType(
    {
        "public_health": (
            "Public interest in public and occupational health, e.g. protection against serious "
            "cross-border threats to health and public-health surveillance (art. 53(1)(a))"
        ),
        "policy_making": (
            "Policy making and regulatory activities to support public-sector bodies, including "
            "regulatory authorities, in the health or care sector (art. 53(1)(b))"
        ),
        "official_statistics": (
            "Statistics: official statistics at national, multinational and Union level related to "
            "the health or care sectors (art. 53(1)(c))"
        ),
        "education": (
            "Education or teaching activities in the health or care sectors at vocational or higher "
            "education level (art. 53(1)(d))"
        ),
        "scientific_research": (
            "Scientific research related to the health or care sectors that contributes to public "
            "health or health technology assessment, or ensures high levels of quality and safety "
            "of care, medicinal products or medical devices (art. 53(1)(e))"
        ),
        "care_improvement": (
            "Improvement of the delivery of care, optimisation of treatment and provision of health "
            "care, based on the health data of other natural persons (art. 53(1)(f))"
        ),
        "innovation": (
            "Development and innovation activities for products or services contributing to public "
            "health or social security, including training and testing of algorithms (art. 53(1)(e)(ii))"
        ),
    }
)

#: Legal bases a request may rest on (GDPR art. 6 + art. 9 combinations used for secondary use).
LEGAL_BASES: MappingProxyType[str, str] = MappingProxyType(
    {
        "gdpr_6_1_e__9_2_j": "Task in the public interest (6(1)(e)) + research/statistics with safeguards (9(2)(j), art. 89)",
        "gdpr_6_1_e__9_2_i": "Task in the public interest (6(1)(e)) + public interest in public health (9(2)(i))",
        "gdpr_6_1_e__9_2_h": "Task in the public interest (6(1)(e)) + management of health care systems (9(2)(h))",
        "gdpr_6_1_c__9_2_g": "Legal obligation (6(1)(c)) + substantial public interest by law (9(2)(g))",
        "gdpr_6_1_a__9_2_a": "Consent (6(1)(a)) + explicit consent (9(2)(a))",
    }
)

#: Consent scope meaning "all secondary use" (EHDS art. 71 opt-out).
SECONDARY_USE = "secondary_use"


def describe_purpose(code: str) -> str:
    """Description of a purpose code; KeyError names the known codes."""
    try:
        return PURPOSES[code]
    except KeyError:
        raise KeyError(f"unknown purpose {code!r}; known: {', '.join(PURPOSES)}") from None
