"""The web pages' gettext catalogues (access/web/locale/<lang>/LC_MESSAGES/messages.po, Babel):
both languages hold the same keys, every text is translated, placeholders agree, no entry is
fuzzy or obsolete, the catalogue is what the translator serves, and numbers follow the locale."""

from __future__ import annotations

import re
import string

import pytest
from babel.messages.pofile import read_po

from access.web import i18n

FIELDS = string.Formatter()


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in FIELDS.parse(text) if name}


def _catalogue(lang: str):
    with i18n.catalogue_path(lang).open("rb") as f:
        return read_po(f, locale=lang)


def test_both_catalogues_hold_the_same_keys_all_translated():
    keys = {lang: [m.id for m in _catalogue(lang) if m.id] for lang in i18n.LANGUAGES}
    assert keys["sv"] == keys["en"] and len(keys["sv"]) > 300
    for lang in i18n.LANGUAGES:
        cat = _catalogue(lang)
        assert not cat.obsolete, lang
        for m in cat:
            if m.id:
                assert isinstance(m.string, str) and m.string.strip(), (lang, m.id)
                assert not m.fuzzy, (lang, m.id)
                assert re.fullmatch(r"[a-z0-9_.]+", m.id), m.id  # stable keys, not sentences


def test_placeholders_agree_between_languages():
    # (no python-brace-format flag: Babel derives it from the msgid, and ours are keys)
    sv, en = _catalogue("sv"), _catalogue("en")
    for m in sv:
        if m.id:
            assert _fields(m.string) == _fields(en[m.id].string), m.id


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_the_translator_serves_the_catalogue_through_gettext(lang):
    t = i18n.translator(lang)
    for m in _catalogue(lang):
        if m.id and not _fields(m.string):
            assert t(m.id) == m.string
    assert t("prom_holder_title", holder="NDR").endswith("NDR")
    with pytest.raises(KeyError):
        t("no_such_key")


def test_numbers_follow_the_page_locale():
    assert i18n.format_number(12012, "en") == "12,012"
    assert i18n.format_number(12012, "sv").replace("\u00a0", " ") == "12 012"
    assert i18n.format_number(0.8512, "sv", digits=3) == "0,851"
    assert i18n.format_number(0.8512, "en", digits=3) == "0.851"


@pytest.mark.parametrize(
    ("query", "cookie", "header", "expected"),
    [
        ("en", "sv", None, "en"),
        (None, "en", "sv", "en"),
        (None, None, "en-GB,en;q=0.9,sv;q=0.5", "en"),
        (None, None, "de, sv;q=0.4, en;q=0.8", "en"),  # by weight, not by position
        (None, None, "sv;q=0, en;q=0.1", "en"),  # q=0: not acceptable
        (None, None, "en;q=bogus, sv", "sv"),
        ("xx", None, "de", "sv"),
    ],
)
def test_language_negotiation(query, cookie, header, expected):
    assert i18n.negotiate(query, cookie, header) == expected
