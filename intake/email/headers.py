"""Header values under a cap, before anything decodes or parses them.

The standard library's header parser is quadratic in a header's RFC 2047 encoded-words (each
word's token keeps the whole rest of the header: `get_encoded_word` sets `ew.cte = value`), and
`email.header.decode_header`'s lazy pattern rescans the rest of a line from every `=?` that is
never closed. A 264 KB Subject of 12,000 encoded-words held 1.45 GB in the worker. So every
value is cut here, in one linear scan, before either sees it: at most MAX_CHARS characters and
MAX_ENCODED_WORDS openings of an encoded-word. A real header is far below both (a Subject is
a line; the longest honest field, References, is a list of ids of which we keep the newest).
"""

from __future__ import annotations

from email.message import Message

MAX_CHARS = 8 * 1024
MAX_ENCODED_WORDS = 100  # an honest encoded Subject of 8 KB holds fewer than this (75-char words)
KEEP_NEWEST = frozenset({"references"})  # a list, newest last: keep its end, not its start


def cap(value: str, name: str = "") -> tuple[str, bool]:
    """(the value cut to the caps, whether anything was cut)."""
    keep_end = name.lower() in KEEP_NEWEST
    cut = False
    if len(value) > MAX_CHARS:
        value = value[-MAX_CHARS:] if keep_end else value[:MAX_CHARS]
        cut = True
    at = -1
    for _ in range(MAX_ENCODED_WORDS):
        at = value.find("=?", at + 1)
        if at < 0:
            return value, cut
    after = value.find("=?", at + 1)
    if after < 0:
        return value, cut
    return value[:after], True  # past the last encoded-word allowed, the rest is dropped


def first_raw(part: Message, name: str) -> str | None:
    """The first such header exactly as written, or None when there is none."""
    try:
        values = [v for k, v in part.raw_items() if k.lower() == name.lower()]
    except Exception:  # a header the parser could not split: as if it were absent
        return None
    return str(values[0]) if values else None


def raw_header(part: Message, name: str) -> str:
    """The first such header as written (encoded-words still encoded), capped, on one line."""
    value = first_raw(part, name)
    return " ".join(cap(value, name)[0].split()) if value is not None else ""


def was_cut(part: Message, name: str) -> bool:
    """Whether the first such header is over the caps (the case says so to the agent)."""
    value = first_raw(part, name)
    return value is not None and cap(value, name)[1]
