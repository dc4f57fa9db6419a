"""Email quality: CSS inlined into HTML, a text part made from HTML, UTM parameters on links.

Pure functions over rendered strings; nothing here fetches anything, so a
render never waits on the network.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import css_inline

# keep_at_rules keeps @media queries in <style> (they cannot be inlined);
# stylesheets behind <link> are neither fetched nor read from disk.
_INLINER = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


def inline_css(document: str) -> str:
    """``document`` with its ``<style>`` rules moved into ``style`` attributes.

    Many mail clients drop ``<style>``; at-rules such as ``@media`` stay in it
    for the clients that read them. A fragment comes back as a whole document.
    """
    return _INLINER.inline(document)


# --- text from HTML -------------------------------------------------------------

# Elements that stand apart with a blank line, and those that only start a new line.
_BLOCKS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "blockquote", "pre", "hr"}
)
_LINES = frozenset({"div", "tr", "li", "section", "article", "header", "footer"})
_HIDDEN = frozenset({"head", "style", "script", "title", "template"})


def text_from_html(document: str) -> str:
    """A readable plain-text part for an HTML email that has none.

    Paragraphs, headings and ``<br>`` become line breaks, list items ``- item``,
    links ``text (url)``; ``<head>``, ``<style>`` and ``<script>`` are dropped,
    entities decoded, runs of spaces collapsed and at most one blank line kept.
    """
    converter = _Text()
    converter.feed(document)
    converter.close()
    lines = (" ".join(line.split()) for line in "".join(converter.parts).split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0
        self._breaks = 0  # line breaks since the last text
        self._links: list[tuple[str | None, int]] = []  # href, index of the link's first part

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self.parts.append("\n")
            self._breaks += 1
        self._break_around(tag)
        if tag == "li":
            self.parts.append("- ")
        elif tag in ("td", "th"):
            self.parts.append(" ")
        elif tag == "a":
            self._links.append((dict(attrs).get("href"), len(self.parts)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <br/> and the like: no end tag follows.
        if tag not in _HIDDEN:
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        self._break_around(tag)
        if tag == "a" and self._links:
            href, start = self._links.pop()
            label = " ".join("".join(self.parts[start:]).split())
            if href and not href.startswith("#") and href.removeprefix("mailto:") != label:
                self.parts.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        # Line breaks in the source are formatting; the tags say where lines end.
        self.parts.append(re.sub(r"\s+", " ", data))
        if data.strip():
            self._breaks = 0

    def _break_around(self, tag: str) -> None:
        # Adjacent elements share their breaks: </li><li> is one line break, not two.
        wanted = 2 if tag in _BLOCKS else 1 if tag in _LINES else 0
        if wanted > self._breaks:
            self.parts.append("\n" * (wanted - self._breaks))
            self._breaks = wanted


# --- UTM parameters -------------------------------------------------------------

_HREF = re.compile(
    r"""(<a\b[^>]*?\shref\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s>"']+))""", re.IGNORECASE
)
_BARE_URL = re.compile(r"""https?://[^\s<>"']+""", re.IGNORECASE)
# Punctuation ending a sentence, or closing text_from_html's "text (url)", is not the URL's.
_TRAILING = ".,;:!?)]}"


def add_utm(document: str, params: dict[str, str]) -> str:
    """``document`` with ``params`` added to the query of every http(s) ``<a href>``.

    See :func:`with_utm` for what is left alone. Keys may be given with or
    without their ``utm_`` prefix.
    """

    def replace(match: re.Match[str]) -> str:
        quote = "'" if match[3] is not None else '"'  # an unquoted value gets quotes
        url = html.unescape(match[2] or match[3] or match[4] or "")
        tagged = with_utm(url, params)
        if tagged == url:
            return match[0]
        return f"{match[1]}{quote}{html.escape(tagged, quote=True)}{quote}"

    return _HREF.sub(replace, document)


def add_utm_text(text: str, params: dict[str, str]) -> str:
    """``text`` with ``params`` added to every bare http(s) URL in it, as :func:`add_utm` does."""

    def replace(match: re.Match[str]) -> str:
        url, tail = match[0], ""
        while url and url[-1] in _TRAILING and not (url[-1] == ")" and "(" in url):
            url, tail = url[:-1], url[-1] + tail
        return with_utm(url, params) + tail

    return _BARE_URL.sub(replace, text)


def with_utm(url: str, params: dict[str, str]) -> str:
    """``url`` with the utm_* ``params`` appended to its query.

    Existing parameters and the fragment are kept, a utm_* parameter already
    there wins, and anything but http(s) (mailto:, tel:, ``#anchor``) is
    returned as is, as are unsubscribe links (``/v1/unsubscribe/``): they are
    signed and must reach the hub unchanged.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or "/v1/unsubscribe/" in parts.path:
        return url
    present = {key for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
    added = [
        (name, value)
        for key, value in params.items()
        if (name := key if key.startswith("utm_") else f"utm_{key}") not in present
    ]
    if not added:
        return url
    query = f"{parts.query}&{urlencode(added)}" if parts.query else urlencode(added)
    return urlunsplit(parts._replace(query=query))
