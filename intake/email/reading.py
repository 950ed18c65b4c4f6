"""The email policy we read customers' mail with: the standard library's `policy.default`,
except that each header is parsed once, not at every access.

With `policy.default` every `msg[name]` parses the header afresh, and both the parser itself
and our body walk ask each part for its Content-Type, charset, filename and disposition many
times: a plain mail with a screenshot had ~50 header parses, a quarter of the worker's time
(docs/performance.md). Parsed headers are immutable (a `str` subclass with read-only
attributes), so sharing one object between accesses changes nothing else.
"""
from __future__ import annotations

import email.feedparser
import email.policy
import functools
from typing import Any

from .registry import REGISTRY


class ReadingPolicy(email.policy.EmailPolicy):
    def header_fetch_parse(self, name: str, value: Any) -> Any:
        if hasattr(value, "name") or not isinstance(value, str):
            return super().header_fetch_parse(name, value)
        return _parsed(self, name, value)


@functools.lru_cache(maxsize=1024)
def _parsed(policy: ReadingPolicy, name: str, value: str) -> Any:
    return email.policy.EmailPolicy.header_fetch_parse(policy, name, value)


READING = ReadingPolicy(header_factory=REGISTRY)
SLICE = 64 * 1024


def read_message(raw: bytes) -> Any:
    """`email.message_from_bytes(raw, policy=READING)`, in slices: the standard library first
    decodes all of it to one string and reads that through a StringIO, which keeps four bytes
    per character, so a 28 MB mail took ~220 MB to parse, ~100 MB this way."""
    parser = email.feedparser.BytesFeedParser(policy=READING)
    view = memoryview(raw)
    for start in range(0, len(raw), SLICE):
        parser.feed(bytes(view[start : start + SLICE]))
    return parser.close()
