"""What a page would load from outside the machine: the check behind "offline by default".

``external_loads(html)`` lists every URL an HTML page (or ``external_loads_css(css)`` a
stylesheet) makes the browser fetch that is neither relative, nor loopback, nor inline
(``data:``/``blob:``): ``src``, ``srcset``, ``href`` of anything but a plain ``<a>``/``<area>``
link, ``poster``, ``data`` (object), ``action``/``formaction`` with an absolute URL,
``<meta http-equiv=refresh>``, and ``url(...)``/``@import`` in ``<style>`` and ``style=""``.
A plain hyperlink (``<a href="https://…">``) loads nothing until someone clicks it, so it is
allowed.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "testserver"}  # testserver: Starlette's TestClient
# Attributes whose URL the browser fetches (or submits to) without a click on a link.
_LOADING_ATTRS = {
    "src",
    "href",
    "poster",
    "data",
    "action",
    "formaction",
    "background",
    "manifest",
    "xlink:href",
}
_CSS_URL = re.compile(r"""url\(\s*(['"]?)([^'")]*)\1\s*\)""", re.IGNORECASE)
_CSS_IMPORT = re.compile(r"""@import\s+(?:url\()?\s*['"]?([^'")\s;]+)""", re.IGNORECASE)


def is_local(url: str) -> bool:
    """True for a URL that stays on this machine: relative, fragment, data:/blob:/about:, loopback."""
    url = url.strip()
    if not url or url.startswith("#"):
        return True
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("data", "blob", "about", "javascript"):  # inline, nothing fetched
        return True
    if not scheme and not url.startswith("//"):
        return True  # relative to the page: same origin
    host = (parts.hostname or "").lower()
    if scheme in ("", "http", "https", "ws", "wss") and (host in LOOPBACK_HOSTS or host.startswith("127.")):
        return True
    return False


def external_loads_css(css: str) -> list[str]:
    urls = [m.group(2) for m in _CSS_URL.finditer(css)] + [m.group(1) for m in _CSS_IMPORT.finditer(css)]
    return [u for u in urls if not is_local(u)]


class _Loads(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): v or "" for k, v in attrs}
        for name, value in a.items():
            if name in _LOADING_ATTRS and not (name == "href" and tag in ("a", "area")):
                if not is_local(value):
                    self.found.append(f"<{tag} {name}={value}>")
            elif name in ("srcset", "imagesrcset"):
                for candidate in value.split(","):
                    url = candidate.strip().split(" ")[0]
                    if not is_local(url):
                        self.found.append(f"<{tag} {name}={url}>")
            elif name == "style":
                self.found += [f"<{tag} style> {u}" for u in external_loads_css(value)]
        if tag == "meta" and a.get("http-equiv", "").lower() == "refresh":
            target = a.get("content", "").partition("url=")[2]
            if target and not is_local(target):
                self.found.append(f"<meta refresh {target}>")
        self._in_style = tag == "style"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self._in_style = False

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.found += [f"<style> {u}" for u in external_loads_css(data)]


def external_loads(html: str) -> list[str]:
    """Every non-local URL the page would load, as ``<tag attr=url>`` (empty: the page is offline)."""
    parser = _Loads()
    parser.feed(html)
    parser.close()
    return parser.found
