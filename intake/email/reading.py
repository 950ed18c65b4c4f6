"""The email policy we read customers' mail with: the standard library's `policy.default`,
except that each header is capped (headers.py) and parsed once per message, not at every access.

With `policy.default` every `msg[name]` parses the header afresh, and both the parser itself
and our body walk ask each part for its Content-Type, charset, filename and disposition many
times: a plain mail with a screenshot had ~50 header parses, a quarter of the worker's time
(docs/performance.md). Parsed headers are immutable (a `str` subclass with read-only
attributes), so sharing one object between accesses changes nothing else.
"""

from __future__ import annotations

import email.feedparser
import email.policy
from typing import Any

from .headers import cap
from .registry import REGISTRY


class ReadingPolicy(email.policy.EmailPolicy):
    """Each message gets a policy of its own (`read_message`), so the cache of its parsed
    headers lives and dies with that message: a module-level cache kept the parse trees of
    hostile headers alive after their message was done."""

    cache: dict[tuple[str, str], Any] | None = None

    def header_fetch_parse(self, name: str, value: Any) -> Any:
        if hasattr(value, "name") or not isinstance(value, str):
            return super().header_fetch_parse(name, value)
        value, _ = cap(value, name)
        if self.cache is None:
            return super().header_fetch_parse(name, value)
        key = (name, value)
        parsed = self.cache.get(key)
        if parsed is None:
            parsed = self.cache[key] = super().header_fetch_parse(name, value)
        return parsed


READING = ReadingPolicy(header_factory=REGISTRY)
SLICE = 64 * 1024


def read_message(raw: bytes) -> Any:
    """`email.message_from_bytes(raw, policy=READING)`, in slices: the standard library first
    decodes all of it to one string and reads that through a StringIO, which keeps four bytes
    per character, so a 28 MB mail took ~220 MB to parse, ~100 MB this way."""
    # clone() takes any attribute of the policy's class; typeshed lists only EmailPolicy's own.
    parser = email.feedparser.BytesFeedParser(policy=READING.clone(cache={}))  # type: ignore[call-arg]
    view = memoryview(raw)
    for start in range(0, len(raw), SLICE):
        parser.feed(bytes(view[start : start + SLICE]))
    return parser.close()
