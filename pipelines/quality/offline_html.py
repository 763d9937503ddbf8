"""Make a generated HTML page self-contained: nothing in it loads from outside the machine.

Great Expectations' Data Docs pages pull Bootstrap, jQuery, Vega, Font Awesome and more from
five CDNs, and a logo from GX's S3 bucket whose URL carries the project's data-context id (a
tracking pixel). Inside a closed network none of it arrives, and a request to one tells the
outside that someone is reading quality results. :func:`offline_page` rewrites such a page:

* every ``<script>`` goes (the pages are static: GX draws them server side), and with it
  ``<noscript>``, ``<iframe>``, ``<object>``, ``<embed>``, every ``on...=`` handler and every
  comment;
* every ``<link>`` goes (stylesheets, fonts, icons); the page gets one local stylesheet instead;
* an ``<img>``/``<source>``/``<video>``/``<audio>`` whose source is not relative goes whole;
* any other attribute that would load a non-relative URL goes (``src``, ``srcset``, ``poster``,
  ``background``, ``action``, ...); ``<a href>`` stays: a link loads nothing until it is clicked;
* ``url(...)`` and ``@import`` of a non-relative URL inside ``<style>`` and ``style=""`` become
  ``none`` / nothing.

Pure text in, text out: the caller reads and writes the files.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

#: Elements dropped with everything inside them.
_DROP_WITH_CONTENT = {"script", "noscript", "iframe", "object", "embed", "template", "video", "audio"}
#: Elements dropped whole (they are void) when they would load from elsewhere; ``link`` always.
_DROP_IF_REMOTE = {"img", "source", "input", "track"}
#: Attributes whose URL the browser fetches or submits to without a click on a link.
_LOADING_ATTRS = {
    "src",
    "srcset",
    "imagesrcset",
    "href",
    "poster",
    "background",
    "data",
    "action",
    "formaction",
    "manifest",
    "xlink:href",
    "ping",
    "longdesc",
}
_CSS_URL = re.compile(r"""url\(\s*(['"]?)([^'")]*)\1\s*\)""", re.IGNORECASE)
_CSS_IMPORT = re.compile(r"""@import\s+[^;]*;?""", re.IGNORECASE)


def is_relative(url: str) -> bool:
    """True for a URL that stays inside the site: relative path, fragment or inline ``data:``."""
    url = url.strip()
    if url.startswith("//"):
        return False  # protocol-relative: another host
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", url)
    return scheme is None or scheme.group(1).lower() == "data"


def _urls(value: str, attr: str) -> list[str]:
    if attr in ("srcset", "imagesrcset"):
        return [c.strip().split(" ")[0] for c in value.split(",") if c.strip()]
    if attr == "ping":
        return value.split()
    return [value]


def offline_css(css: str) -> str:
    """``css`` without a fetch from elsewhere: remote ``url(...)`` becomes ``none``, ``@import`` goes."""
    css = _CSS_IMPORT.sub(lambda m: m.group(0) if _import_is_relative(m.group(0)) else "", css)
    return _CSS_URL.sub(lambda m: m.group(0) if is_relative(m.group(2)) else "none", css)


def _import_is_relative(rule: str) -> bool:
    target = re.search(r"""@import\s+(?:url\()?\s*['"]?([^'")\s;]+)""", rule, re.IGNORECASE)
    return target is not None and is_relative(target.group(1))


class _Rewriter(HTMLParser):
    def __init__(self, stylesheet_href: str | None) -> None:
        super().__init__(convert_charrefs=False)
        self.out: list[str] = []
        self._stylesheet = stylesheet_href
        self._skip: str | None = None  # the element being dropped with its content
        self._skip_depth = 0
        self._in_style = False

    def _tag(self, tag: str, attrs: list[tuple[str, str | None]], close: bool) -> str | None:
        """The start tag to write, or None to drop the element."""
        if tag == "link":
            return None
        kept: list[tuple[str, str | None]] = []
        for name, value in attrs:
            if name.startswith("on"):
                continue  # an event handler: the page has no script left for it to call
            value_text = value or ""
            if name in _LOADING_ATTRS and not (name == "href" and tag in ("a", "area")):
                if not all(is_relative(u) for u in _urls(value_text, name)):
                    if tag in _DROP_IF_REMOTE:
                        return None
                    continue
            if name == "style":
                value = offline_css(value_text)
            kept.append((name, value))
        if kept == attrs:
            return self.get_starttag_text()
        parts = "".join(f" {n}" if v is None else f' {n}="{html.escape(v, quote=True)}"' for n, v in kept)
        return f"<{tag}{parts}{' /' if close else ''}>"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip is not None:
            self._skip_depth += tag == self._skip
            return
        if tag in _DROP_WITH_CONTENT:
            self._skip, self._skip_depth = tag, 1
            return
        text = self._tag(tag, attrs, close=False)
        if text is not None:
            self.out.append(text)
            self._in_style = tag == "style"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip is not None or tag in _DROP_WITH_CONTENT:
            return
        text = self._tag(tag, attrs, close=True)
        if text is not None:
            self.out.append(text)

    def handle_endtag(self, tag: str) -> None:
        if self._skip is not None:
            if tag == self._skip:
                self._skip_depth -= 1
                if self._skip_depth == 0:
                    self._skip = None
            return
        if tag in ("link", *_DROP_WITH_CONTENT):
            return
        if tag == "head" and self._stylesheet is not None:
            self.out.append(f'<link rel="stylesheet" href="{html.escape(self._stylesheet, quote=True)}">')
        self._in_style = False
        self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if self._skip is None:
            self.out.append(offline_css(data) if self._in_style else data)

    def handle_entityref(self, name: str) -> None:
        if self._skip is None:
            self.out.append(f"&{name};")

    def handle_charref(self, name: str) -> None:
        if self._skip is None:
            self.out.append(f"&#{name};")

    def handle_decl(self, decl: str) -> None:
        self.out.append(f"<!{decl}>")

    def handle_comment(self, data: str) -> None:
        pass  # a comment can hide a conditional <script src> or a note; none is needed

    def unknown_decl(self, data: str) -> None:
        pass

    def handle_pi(self, data: str) -> None:
        pass


def offline_page(page: str, stylesheet_href: str | None = None) -> str:
    """``page`` with nothing left that loads from elsewhere (see the module's docstring), and
    ``<link rel="stylesheet" href=stylesheet_href>`` at the end of its ``<head>`` when given."""
    rewriter = _Rewriter(stylesheet_href)
    rewriter.feed(page)
    rewriter.close()
    return "".join(rewriter.out)
