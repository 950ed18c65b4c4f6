"""Mail HTML: sanitized with nh3 (Ammonia) before an agent sees it, reduced to text for the dialog."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import nh3

ALLOWED_TAGS = {
    "a", "b", "blockquote", "br", "code", "div", "em", "h1", "h2", "h3", "h4", "hr", "i", "li",
    "ol", "p", "pre", "span", "strong", "table", "tbody", "td", "th", "thead", "tr", "u", "ul",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan"}}
HIDDEN_TAGS = {"script", "style", "title", "head", "template", "noscript"}
MAX_HTML = 2_000_000
BLOCK_TAGS = {"p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "pre", "hr", "blockquote", "br"}
CELL_TAGS = {"td", "th"}
TEXT_TAGS = BLOCK_TAGS | CELL_TAGS | {"span", "b", "i", "u", "em", "strong", "a", "code"}


def sanitize(markup: str) -> str:
    """Markup safe to embed in the console: no script, no style, no event handlers, no remote images."""
    return nh3.clean(
        markup[:MAX_HTML],
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
    cleaned = nh3.clean(markup[:MAX_HTML], tags=TEXT_TAGS, clean_content_tags=HIDDEN_TAGS, attributes={}, strip_comments=True)
    writer = TextWriter()
    writer.feed(cleaned)
    writer.close()
    lines = [line.strip() for line in writer.lines]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
