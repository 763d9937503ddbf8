"""Swedish and English text of the web pages, from gettext catalogues.

The texts live in ``access/web/locale/<lang>/LC_MESSAGES/messages.po``, one gettext catalogue per
language (edit them with any PO editor; Babel reads them). The message ids
are stable keys (``prom_title``), not English sentences, so that fixing an English wording never
orphans the Swedish one. Each catalogue is read and compiled in memory once, at import (Babel's
``read_po`` / ``write_mo``, then :class:`babel.support.Translations`, the gettext API), so a
``.po`` edit needs no build step and a compiled ``.mo`` can never be stale.

Tests (``tests/web/test_web_catalogues.py``, ``test_templates_use_only_known_strings``) check that
both catalogues hold the same keys, all translated and none fuzzy, that every key a template uses
exists, and that the ``{field}`` placeholders agree between the languages: a page is never half
translated. Swedish is the default: the platform serves Swedish regions; English is for visiting
researchers and reviewers. Numbers and dates are formatted by Babel in the page's locale
(:func:`format_number`: ``12 012`` in Swedish, ``12,012`` in English).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import Translations

LANGUAGES = ("sv", "en")
DEFAULT_LANGUAGE = "sv"
LANG_COOKIE = "hdp_lang"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"
#: Babel locales of the page languages (number and date formats).
LOCALES = {"sv": "sv_SE", "en": "en_GB"}


def catalogue_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


@cache
def catalogue(lang: str) -> Catalog:
    """The parsed catalogue of ``lang`` (message id -> text)."""
    with catalogue_path(lang).open("rb") as f:
        return read_po(f, locale=lang, domain=DOMAIN)


@cache
def translations(lang: str) -> Translations:
    """``lang``'s catalogue compiled in memory, behind the gettext API."""
    buffer = io.BytesIO()
    write_mo(buffer, catalogue(lang))
    buffer.seek(0)
    return Translations(buffer, domain=DOMAIN)


def _strings() -> Mapping[str, Mapping[str, str]]:
    keys = [str(m.id) for m in catalogue(DEFAULT_LANGUAGE) if m.id]
    return {
        key: {lang: str(catalogue(lang)[key].string) if key in catalogue(lang) else "" for lang in LANGUAGES}
        for key in keys
    }


#: Every key with its text in each language (read-only view of the catalogues, for tests and tools).
STRINGS: Mapping[str, Mapping[str, str]] = _strings()


def negotiate(query_lang: str | None, cookie_lang: str | None, accept_language: str | None) -> str:
    """The page language: explicit choice (query), then remembered choice (cookie), then the browser.

    >>> negotiate("en", "sv", None)
    'en'
    >>> negotiate(None, None, "en-GB,en;q=0.9,sv;q=0.5")
    'en'
    >>> negotiate(None, None, "de, sv;q=0.4, en;q=0.8")
    'en'
    >>> negotiate("xx", None, "de")
    'sv'
    """
    for candidate in (query_lang, cookie_lang):
        if candidate in LANGUAGES:
            return candidate
    if accept_language:
        ranked = []
        for position, part in enumerate(accept_language.split(",")):
            code, _, params = part.strip().partition(";")
            weight = 1.0
            if params.strip().startswith("q="):
                try:
                    weight = float(params.strip()[2:])
                except ValueError:
                    weight = 0.0
            ranked.append((-weight, position, code.strip().lower()[:2]))
        for weight, _, code in sorted(ranked):
            if weight < 0 and code in LANGUAGES:
                return code
    return DEFAULT_LANGUAGE


def translator(lang: str) -> Callable[..., str]:
    """``t(key, **fields)`` in ``lang``; a key missing from the catalogue raises KeyError (the tests
    catch it), never a page showing a bare key."""
    if lang not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, not {lang!r}")
    known = catalogue(lang)
    gettext = translations(lang).gettext

    def t(key: str, **fields: object) -> str:
        if key not in known:
            raise KeyError(key)
        text = gettext(key)
        return text.format(**fields) if fields else text

    return t


def format_number(value: float | int, lang: str, *, digits: int | None = None) -> str:
    """A number in the page's locale (``12 012`` / ``12,012``; ``0,85`` / ``0.85``)."""
    pattern = None if digits is None else "#,##0." + "0" * digits if digits else "#,##0"
    return format_decimal(value, format=pattern, locale=LOCALES[lang])
