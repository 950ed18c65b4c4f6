"""The customer's text made ready for the readers: one spelling of every space and digit, and a
bounded length. Pure and linear: each step is one pass of a pattern without backtracking.

Customer text is hostile until proven otherwise. A run of 5,000 blank lines once held the
worker for minutes, because patterns that may start anywhere in a run of spaces retry the
whole run from each position. Collapsing the runs here keeps every later pattern's work
proportional to the text, and the cap bounds it.
"""

from __future__ import annotations

import re

# The readers read this many characters of the customer's own words (quotes, signatures and
# forwarded headers already set aside), about six pages of a letter. A refund request states
# its amount and time early; the rest of a longer text is stored and shown to agents, not read.
OWN_WORDS_LIMIT = 16_000
# Before anything reads a message (the quote cut, the language, the form, the fields), its text
# is cut to this many characters: room for the own words above and a quote they sit under.
# A 10 MB plain mail was normalised 8 times and quote-cut 7 times over its whole length (~9 s
# of the worker) before the cap above applied. The whole text is still stored.
READ_LIMIT = 4 * OWN_WORDS_LIMIT

# Full-width digits, letters and signs (common in Chinese input methods) become ASCII, one
# character for one.
FULL_WIDTH = str.maketrans(
    {
        **{chr(0xFF10 + i): str(i) for i in range(10)},
        **{chr(0xFF21 + i): chr(0x41 + i) for i in range(26)},
        **{chr(0xFF41 + i): chr(0x61 + i) for i in range(26)},
        "￥": "¥",
        "＄": "$",
        "％": "%",
        "．": ".",
        "／": "/",
        "－": "-",
        "＞": ">",
        "＃": "#",
        "＠": "@",
    }
)

# These passes read the whole text, before the cap. Each is one character class, repeated, so
# Python's engine cannot backtrack in it. (RE2's Python binding substitutes ~75 times slower
# per match: measured 3.4 s against 45 ms on a megabyte of blank lines.)
_OTHER_SPACES = re.compile(r"[^\S\n ]+")  # every whitespace but the line break and space: tabs, NBSP, U+3000...
# A gap of two or more is kept as two: it is how a pasted or converted table sets its cells apart.
_WIDE_GAPS = re.compile(r" {3,}")
_LINE_EDGES = re.compile(r" {0,2}\n {0,2}")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize(text: str) -> str:
    """Line breaks as \\n, full-width forms folded, every run of other whitespace one space, or
    two where it was wider (a table's cell gap), no space at a line's ends, and at most one
    blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(FULL_WIDTH)
    text = _OTHER_SPACES.sub(lambda gap: "  " if len(gap.group()) > 1 else " ", text)
    text = _WIDE_GAPS.sub("  ", text)
    text = _LINE_EDGES.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", text)
