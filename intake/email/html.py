"""Mail HTML: sanitized with nh3 (Ammonia) before an agent sees it, reduced to text for the dialog."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import nh3

ALLOWED_TAGS = {
    "a",
    "b",
    "blockquote",
    "br",
    "code",
    "div",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "hr",
    "i",
    "li",
    "ol",
    "p",
    "pre",
    "span",
    "strong",
    "table",
    "tbody",
    "td",
    "th",
    "thead",
    "tr",
    "u",
    "ul",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan"}}
HIDDEN_TAGS = {"script", "style", "title", "head", "template", "noscript"}
MAX_HTML = 2_000_000
BLOCK_TAGS = {
    "p",
    "div",
    "li",
    "tr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "ul",
    "ol",
    "pre",
    "hr",
    "blockquote",
    "br",
}
CELL_TAGS = {"td", "th"}
TEXT_TAGS = BLOCK_TAGS | CELL_TAGS | {"span", "b", "i", "u", "em", "strong", "a", "code"}


MAX_TAG_CHARS = 4096  # a tag with its attributes: an honest one, even with inline styles, is far shorter
MAX_NESTING = 100  # deeper than any honest mail (a forwarded thread of tables is ~30)
TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)[^<>]*>")  # stops at the next "<": one pass, even unclosed
SIBLING_TAGS = {"p", "li", "dt", "dd", "tr", "td", "th", "option"}  # HTML closes these by a sibling
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def flatten(markup: str) -> str:
    """The markup with every tag nested deeper than MAX_NESTING removed (its text stays), and
    every tag longer than MAX_TAG_CHARS stripped of its attributes, in one linear pass. nh3
    (and Lexbor-based parsers too) are quadratic in nesting depth: `<div>` x 100,000 (1.1 MB)
    ran 30 s in nh3; and in a tag's attributes (html5ever looks for a duplicate among all
    before it): one `<div>` with 150,000 attributes (1.4 MB) ran 5.5 s. The 2 MB cap bounds
    neither."""
    open_tags: list[str] = []
    dropped: dict[str, int] = {}  # start tags removed past the limit, by name: their end tags go too
    pieces: list[str] = []
    kept_to = 0
    for match in TAG.finditer(markup):
        closing, name = match.group(1), match.group(2).lower()
        keep = True
        if not closing:
            if name in SIBLING_TAGS and name in open_tags[-3:]:  # an unclosed <li> ends at the next <li>
                del open_tags[len(open_tags) - 1 - open_tags[::-1].index(name) :]
            if name not in VOID_TAGS and not match.group(0).endswith("/>"):
                if len(open_tags) < MAX_NESTING:
                    open_tags.append(name)
                else:
                    dropped[name] = dropped.get(name, 0) + 1
                    keep = False
        elif dropped.get(name):
            dropped[name] -= 1
            keep = False
        elif name in open_tags:  # at most MAX_NESTING to look through: still linear
            del open_tags[len(open_tags) - 1 - open_tags[::-1].index(name) :]
        if not keep or match.end() - match.start() > MAX_TAG_CHARS:
            pieces.append(markup[kept_to : match.start()])
            if keep:  # the tag stays, without its attributes
                pieces.append(f"<{closing}{name}>")
            kept_to = match.end()
    if kept_to == 0:
        return markup
    pieces.append(markup[kept_to:])
    return "".join(pieces)


def sanitize(markup: str) -> str:
    """Markup safe to embed in the console: no script, no style, no event handlers, no remote images."""
    return nh3.clean(
        flatten(markup[:MAX_HTML]),
        tags=ALLOWED_TAGS,
        clean_content_tags=HIDDEN_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


class TextWriter(HTMLParser):
    """Text with line breaks where blocks end and "> " before lines inside a blockquote."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = [""]
        self.quote_depth = 0

    def break_line(self) -> None:
        if self.lines[-1].strip():
            self.lines.append("")

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in BLOCK_TAGS:
            self.break_line()
        if tag == "blockquote":
            self.quote_depth += 1
        elif tag in CELL_TAGS and self.lines[-1].strip():
            self.lines[-1] += "  "

    def handle_endtag(self, tag: str) -> None:
        if tag == "blockquote":
            self.quote_depth = max(0, self.quote_depth - 1)
        if tag in BLOCK_TAGS:
            self.break_line()

    def handle_data(self, data: str) -> None:
        chunks = data.replace("\r", "").split("\n")
        for index, chunk in enumerate(chunks):
            if index:
                self.break_line()
            if chunk.strip():
                if not self.lines[-1] and self.quote_depth:
                    self.lines[-1] = "> " * self.quote_depth
                self.lines[-1] += re.sub(r"[ \t\xa0]+", " ", chunk)


def to_text(markup: str) -> str:
    """Readable text from HTML: block elements become line breaks, quotes keep their "> "."""
    cleaned = nh3.clean(
        flatten(markup[:MAX_HTML]), tags=TEXT_TAGS, clean_content_tags=HIDDEN_TAGS, attributes={}, strip_comments=True
    )
    writer = TextWriter()
    writer.feed(cleaned)
    writer.close()
    lines = [line.strip() for line in writer.lines]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
