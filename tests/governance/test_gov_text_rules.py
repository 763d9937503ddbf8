"""Free-text rules (governance.text): no control or invisible format character gets in, ordinary
Swedish text always does, and text stored earlier is made display-safe."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance import text
from governance.values import DecisionView, RequestView, TransparencyEntry

FORBIDDEN = text.FORBIDDEN_CATEGORIES


def _bad_chars(value: str, *, multiline: bool) -> list[str]:
    allowed = text.MULTILINE_CONTROLS if multiline else frozenset()
    return [c for c in value if unicodedata.category(c) in FORBIDDEN and c not in allowed]


#: Characters the trial used and their relatives: NUL, bidi overrides / embeddings / isolates /
#: marks, zero-width characters, BOM, soft hyphen, C1 control, line/paragraph separators, private
#: use, a noncharacter, a lone surrogate, a tag character.
HOSTILE = [
    "\x00",
    "\x1b",
    "\x7f",
    "\x85",
    "\u202e",
    "\u202d",
    "\u202a",
    "\u202b",
    "\u202c",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\u200e",
    "\u200f",
    "\u061c",
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2060",
    "\ufeff",
    "\u00ad",
    "\u2028",
    "\u2029",
    "\ue000",
    "\uffff",
    "\ud800",
    "\U000e0041",
]

SWEDISH_LETTERS = "abcdefghijklmnopqrstuvwxyzåäöéüABCDEFGHIJKLMNOPQRSTUVWXYZÅÄÖÉÜ"
PUNCTUATION = " .,;:!?-–—()[]/&%+'\"«»”’§°½0123456789\u00a0"
swedish = st.text(alphabet=SWEDISH_LETTERS + PUNCTUATION, min_size=1, max_size=200)


@given(st.text(max_size=300), st.booleans())
@settings(max_examples=500, deadline=None)
def test_no_accepted_text_contains_a_forbidden_character(value, multiline):
    cleaned, problem = text.check(value, code="request.project", label="project title", multiline=multiline)
    if problem is None:
        assert _bad_chars(cleaned, multiline=multiline) == []
        assert "\r" not in cleaned or not multiline
        assert unicodedata.is_normalized("NFC", cleaned)
    else:
        assert _bad_chars(value, multiline=multiline)
        assert problem[0] == "request.project.forbidden_character"


@given(swedish, st.booleans())
@settings(max_examples=300, deadline=None)
def test_ordinary_swedish_text_is_accepted_unchanged(value, multiline):
    assert text.check(value, code="request.project", label="project title", multiline=multiline) == (
        value,
        None,
    )


def test_known_swedish_titles():
    for title in (
        "Långtidsuppföljning av HbA1c hos barn med typ 1-diabetes i Örebro län",
        "Äldres läkemedelsanvändning – en registerstudie (2015–2024)",
        "Café-besök & blodtryck: “effekten” av koffein, 50 % fler?",
        "Études sur l'insuline: Müller, Ørsted, Ålander",
    ):
        assert text.check(title, code="request.project", label="project title") == (title, None)


def test_decomposed_letters_are_stored_composed():
    decomposed = "Lo\u0308pning och a\u030arsrapport"  # ö and å as base letter + combining mark
    cleaned, problem = text.check(decomposed, code="request.project", label="project title")
    assert problem is None and cleaned == "Löpning och årsrapport"


def test_emoji_decision():
    """Single emoji (with or without a variation selector) are accepted; emoji sequences glued with a
    zero-width joiner are refused, because the joiner is an invisible format character (Cf)."""
    assert text.check("Diabetes och hälsa 🩺❤️", code="request.project", label="t")[1] is None
    assert text.check("Familjer 👨\u200d👩\u200d👧", code="request.project", label="t")[1] is not None


@pytest.mark.parametrize("ch", HOSTILE)
@given(prefix=swedish, suffix=swedish)
@settings(max_examples=20, deadline=None)
def test_every_hostile_character_is_refused_anywhere(ch, prefix, suffix):
    for multiline in (False, True):
        value = prefix + "Qzxj" + ch + suffix
        cleaned, problem = text.check(
            value, code="decision.justification", label="justification", multiline=multiline
        )
        assert problem is not None and problem[0] == "decision.justification.forbidden_character"
        assert f"U+{ord(ch):04X}" in problem[1]
        assert f"position {len(prefix) + 5}" in problem[1]
        assert "Qzxj" not in problem[1]  # the message never echoes the submitted text


def test_line_breaks_only_in_multiline_fields():
    value = "Första stycket.\r\nAndra stycket,\tmed tabb.\rTredje."
    cleaned, problem = text.check(value, code="decision.justification", label="justification", multiline=True)
    assert problem is None and cleaned == "Första stycket.\nAndra stycket,\tmed tabb.\nTredje."
    for ch in "\n\t\r":
        _, problem = text.check(f"En titel{ch}med radbrytning", code="request.project", label="project title")
        assert problem is not None and problem[0] == "request.project.forbidden_character"


@given(st.text(max_size=200), st.booleans())
@settings(max_examples=300, deadline=None)
def test_display_text_is_safe_idempotent_and_keeps_clean_text(value, multiline):
    shown = text.display_text(value, multiline=multiline)
    assert _bad_chars(shown, multiline=multiline) == []
    assert len(shown) == len(value)
    assert text.display_text(shown, multiline=multiline) == shown
    if not _bad_chars(value, multiline=multiline):
        assert shown is value


def test_values_built_from_stored_text_are_display_safe():
    from datetime import date, datetime

    entry = TransparencyEntry(
        permit_id=1,
        request_id=1,
        project="Studie\u202e fdp.exe\x00",
        purpose="p",
        purpose_description="d",
        holders=("ndr",),
        issued_on=date(2025, 1, 1),
        expires_on=date(2026, 1, 1),
        released_on=None,
        status="active",
    )
    assert entry.project == "Studie\ufffd fdp.exe\ufffd"
    now = datetime(2025, 1, 1)
    d = DecisionView("ndr", "s", "approve", "Rad ett\nrad\u200btvå", now, 1)
    assert d.justification == "Rad ett\nrad\ufffdtvå"  # line breaks stay in a multi-line field
    view = RequestView(
        id=1,
        status="draft",
        applicant="a",
        members=(),
        project="\u2066Titel\u2069",
        purpose="p",
        legal_basis="b",
        ethics_ref="e",
        variables=(),
        holders=(),
        cohort_criteria={},
        period=(None, None),
        data_form="anonymised",
        pseudonymisation_justification=None,
        output_tier="aggregate",
        access_days=1,
        review_round=0,
        parent_id=None,
        amendment=None,
        created_at=now,
        submitted_at=None,
        decided_at=None,
        released_at=None,
    )
    assert view.project == "\ufffdTitel\ufffd"
