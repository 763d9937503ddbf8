"""Controlled lists: EHDS secondary-use purposes and legal bases.

Purposes follow Regulation (EU) 2025/327 (EHDS) art. 53(1). Codes are stable (stored in requests,
permits, consent records and the public transparency register); descriptions are for people.
"""

from __future__ import annotations

from types import MappingProxyType

#: EHDS art. 53(1) secondary-use purposes, code -> description in each page language ("en", "sv").
PURPOSE_LABELS: MappingProxyType[str, MappingProxyType[str, str]] = MappingProxyType(
    {
        code: MappingProxyType(labels)
        for code, labels in {
            "public_health": {
                "en": "Public interest in public and occupational health, e.g. protection against serious "
                "cross-border threats to health and public-health surveillance (art. 53(1)(a))",
                "sv": "Allmänintresse för folkhälsa och hälsa i arbetslivet, t.ex. skydd mot allvarliga "
                "gränsöverskridande hot mot hälsan och folkhälsoövervakning (art. 53.1 a)",
            },
            "policy_making": {
                "en": "Policy making and regulatory activities to support public-sector bodies, including "
                "regulatory authorities, in the health or care sector (art. 53(1)(b))",
                "sv": "Policyutformning och regleringsverksamhet till stöd för offentliga organ, "
                "däribland tillsynsmyndigheter, inom hälso- och omsorgssektorn (art. 53.1 b)",
            },
            "official_statistics": {
                "en": "Statistics: official statistics at national, multinational and Union level related to "
                "the health or care sectors (art. 53(1)(c))",
                "sv": "Statistik: officiell statistik på nationell, multinationell och unionsnivå med "
                "anknytning till hälso- eller omsorgssektorn (art. 53.1 c)",
            },
            "education": {
                "en": "Education or teaching activities in the health or care sectors at vocational or higher "
                "education level (art. 53(1)(d))",
                "sv": "Utbildnings- eller undervisningsverksamhet inom hälso- eller omsorgssektorn på yrkes- "
                "eller högskolenivå (art. 53.1 d)",
            },
            "scientific_research": {
                "en": "Scientific research related to the health or care sectors that contributes to public "
                "health or health technology assessment, or ensures high levels of quality and safety "
                "of care, medicinal products or medical devices (art. 53(1)(e))",
                "sv": "Vetenskaplig forskning med anknytning till hälso- eller omsorgssektorn som bidrar till "
                "folkhälsan eller till utvärdering av medicinska metoder, eller säkerställer hög kvalitet "
                "och säkerhet i vården, läkemedel eller medicintekniska produkter (art. 53.1 e)",
            },
            "care_improvement": {
                "en": "Improvement of the delivery of care, optimisation of treatment and provision of health "
                "care, based on the health data of other natural persons (art. 53(1)(f))",
                "sv": "Förbättring av vårdens tillhandahållande, optimering av behandling och "
                "tillhandahållande av hälso- och sjukvård, utifrån andra fysiska personers hälsodata "
                "(art. 53.1 f)",
            },
            "innovation": {
                "en": "Development and innovation activities for products or services contributing to public "
                "health or social security, including training and testing of algorithms (art. 53(1)(e)(ii))",
                "sv": "Utvecklings- och innovationsverksamhet för produkter eller tjänster som bidrar till "
                "folkhälsa eller social trygghet, däribland träning och testning av algoritmer "
                "(art. 53.1 e ii)",
            },
        }.items()
    }
)

#: Legal bases a request may rest on (GDPR art. 6 + art. 9 combinations used for secondary use),
#: code -> description in each page language.
LEGAL_BASIS_LABELS: MappingProxyType[str, MappingProxyType[str, str]] = MappingProxyType(
    {
        code: MappingProxyType(labels)
        for code, labels in {
            "gdpr_6_1_e__9_2_j": {
                "en": "Task in the public interest (6(1)(e)) + research/statistics with safeguards "
                "(9(2)(j), art. 89)",
                "sv": "Uppgift av allmänt intresse (6.1 e) + forskning/statistik med skyddsåtgärder "
                "(9.2 j, art. 89)",
            },
            "gdpr_6_1_e__9_2_i": {
                "en": "Task in the public interest (6(1)(e)) + public interest in public health (9(2)(i))",
                "sv": "Uppgift av allmänt intresse (6.1 e) + allmänintresse på folkhälsoområdet (9.2 i)",
            },
            "gdpr_6_1_e__9_2_h": {
                "en": "Task in the public interest (6(1)(e)) + management of health care systems (9(2)(h))",
                "sv": "Uppgift av allmänt intresse (6.1 e) + förvaltning av hälso- och sjukvårdssystem (9.2 h)",
            },
            "gdpr_6_1_c__9_2_g": {
                "en": "Legal obligation (6(1)(c)) + substantial public interest by law (9(2)(g))",
                "sv": "Rättslig förpliktelse (6.1 c) + viktigt allmänintresse enligt lag (9.2 g)",
            },
            "gdpr_6_1_a__9_2_a": {
                "en": "Consent (6(1)(a)) + explicit consent (9(2)(a))",
                "sv": "Samtycke (6.1 a) + uttryckligt samtycke (9.2 a)",
            },
        }.items()
    }
)

#: The English descriptions, code -> text: what the API, the CLI and the public register show
#: (stable; the web pages show :func:`purpose_label` / :func:`legal_basis_label` in their language).
PURPOSES: MappingProxyType[str, str] = MappingProxyType({c: v["en"] for c, v in PURPOSE_LABELS.items()})
LEGAL_BASES: MappingProxyType[str, str] = MappingProxyType(
    {c: v["en"] for c, v in LEGAL_BASIS_LABELS.items()}
)


def _label(labels: MappingProxyType[str, MappingProxyType[str, str]], code: str, lang: str) -> str:
    entry = labels.get(code)
    if entry is None:
        return ""  # an unknown code shows as its code alone
    return entry.get(lang) or entry["en"]


def purpose_label(code: str, lang: str) -> str:
    """The purpose's description in ``lang`` ("sv" or "en"; English otherwise); "" for an unknown code.

    >>> purpose_label("education", "sv").startswith("Utbildnings")
    True
    """
    return _label(PURPOSE_LABELS, code, lang)


def legal_basis_label(code: str, lang: str) -> str:
    """The legal basis's description in ``lang``; "" for an unknown code."""
    return _label(LEGAL_BASIS_LABELS, code, lang)


#: Consent scope meaning "all secondary use" (EHDS art. 71 opt-out).
SECONDARY_USE = "secondary_use"


def describe_purpose(code: str) -> str:
    """Description of a purpose code; KeyError names the known codes."""
    try:
        return PURPOSES[code]
    except KeyError:
        raise KeyError(f"unknown purpose {code!r}; known: {', '.join(PURPOSES)}") from None
