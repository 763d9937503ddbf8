"""Free text that people type and others read: project titles, justifications, reasons.

Such text ends up on the public transparency register, in the web pages stewards review, in
CLI tables and JSON. A title with a NUL, a right-to-left override (U+202E) or a zero-width
space can make a register entry read differently from what is stored, hide words from a
reviewer, or break a consumer. So the service refuses, at input and for every entry path
(HTTP API, web form, CLI all call ``governance.service``), any character in the Unicode
categories

* ``Cc`` control characters (NUL, ESC, DEL, C1 controls ...), except tab, line feed and
  carriage return in *multi-line* fields (justifications, reasons); a single-line field (the
  project title) refuses those too;
* ``Cf`` invisible format characters: bidirectional embeddings, overrides and isolates
  (U+202A-U+202E, U+2066-U+2069), marks (U+200E, U+200F, U+061C), zero-width space / joiners
  (U+200B-U+200D), word joiner, BOM (U+FEFF), soft hyphen, tag characters;
* ``Cs`` surrogates (a lone surrogate also cannot be stored as UTF-8), ``Co`` private use,
  ``Cn`` unassigned code points and noncharacters;
* ``Zl`` / ``Zp`` (U+2028, U+2029): line breaks that are not line feeds.

Everything else is accepted: letters of any script (å ä ö é ü ...), digits, punctuation,
symbols, ordinary and no-break spaces, combining marks. Emoji are accepted when they are a
single symbol (with or without a variation selector); emoji *sequences* joined by a zero-width
joiner (U+200D) or spelled with tag characters are refused, because the joiner is itself an
invisible format character. Accepted text is stored in Unicode NFC, and a multi-line field's
line endings as ``\\n``.

The refusal's reason code is ``<field code>.forbidden_character`` (for example
``request.project.forbidden_character``); its message names the first offending code point
and its position, never the submitted text.

For text stored before this rule, :func:`display_text` replaces each such character with
U+FFFD (�) so that what a reader sees is visibly marked and cannot reorder or hide the rest;
the public register's values apply it (``governance.values.TransparencyEntry``), and so do the
request views the web pages render.
"""

from __future__ import annotations

import unicodedata

#: Unicode general categories refused in free text (see the module docstring).
FORBIDDEN_CATEGORIES: frozenset[str] = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
#: Control characters a multi-line field may hold.
MULTILINE_CONTROLS: frozenset[str] = frozenset("\t\n\r")
#: Shown in place of a forbidden character in text stored before the rule existed.
REPLACEMENT = "\ufffd"
REASON_SUFFIX = "forbidden_character"
_MULTILINE_ASCII = {ord(c): " " for c in MULTILINE_CONTROLS}
_CONTROL_NAMES = {
    "\x00": "NULL",
    "\t": "TAB",
    "\n": "LINE FEED",
    "\r": "CARRIAGE RETURN",
    "\x1b": "ESCAPE",
    "\x7f": "DELETE",
}


def _forbidden(ch: str, multiline: bool) -> bool:
    if ch.isascii():
        if " " <= ch <= "~":
            return False
        return not (multiline and ch in MULTILINE_CONTROLS)
    return unicodedata.category(ch) in FORBIDDEN_CATEGORIES


def first_forbidden(text: str, *, multiline: bool = False) -> tuple[int, str] | None:
    """(0-based position, character) of the first forbidden character, or None when clean."""
    if text.isascii() and (
        text.isprintable() if not multiline else text.translate(_MULTILINE_ASCII).isprintable()
    ):
        return None
    for i, ch in enumerate(text):
        if _forbidden(ch, multiline):
            return i, ch
    return None


def describe(ch: str) -> str:
    """``U+202E RIGHT-TO-LEFT OVERRIDE`` (the code point and its name, never the text around it)."""
    name = unicodedata.name(ch, "") if unicodedata.category(ch) not in ("Cs", "Co", "Cn") else ""
    if not name and ch in _CONTROL_NAMES:
        name = _CONTROL_NAMES[ch]
    return f"U+{ord(ch):04X}" + (f" {name}" if name else "")


def normalise(text: str, *, multiline: bool = False) -> str:
    """NFC, and for multi-line text ``\\r\\n`` / ``\\r`` line endings as ``\\n``.

    Only call this on text :func:`first_forbidden` accepted: NFC is undefined for lone surrogates.
    """
    if multiline and "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def check(text: str, *, code: str, label: str, multiline: bool = False) -> tuple[str, tuple[str, str] | None]:
    """Validate one field: (normalised text, None) or (text unchanged, (reason code, message)).

    ``code`` is the field's problem code (``request.project``); the reason code is
    ``<code>.forbidden_character``.
    """
    bad = first_forbidden(text, multiline=multiline)
    if bad is None:
        return normalise(text, multiline=multiline), None
    pos, ch = bad
    allowed = " (tab and line breaks are allowed)" if multiline else ""
    return text, (
        f"{code}.{REASON_SUFFIX}",
        f"{label} contains a control or invisible formatting character ({describe(ch)} at position "
        f"{pos + 1}): remove it; ordinary letters, digits, punctuation and spaces are fine{allowed}",
    )


def display_text(text: str | None, *, multiline: bool = False) -> str | None:
    """Text for display: each forbidden character replaced by U+FFFD (for values stored earlier)."""
    if text is None or first_forbidden(text, multiline=multiline) is None:
        return text
    return "".join(REPLACEMENT if _forbidden(ch, multiline) else ch for ch in text)
