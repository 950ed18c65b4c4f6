"""Reading text in whatever charset a mail claims, or should have claimed.

Real mail lies about its charset: GB2312 labels on GBK/GB18030 text, ISO-8859-1 labels on
UTF-8, raw 8-bit headers with no label at all, names Python does not know. Decoding never
fails here: the declared charset is tried first (mapped to its superset), then UTF-8, then
the other charsets the message uses, and finally a lossless single-byte reading.
"""

from __future__ import annotations

import codecs
import email.header
import re

# Labels whose text is routinely written in a superset; reading with the superset is lossless.
SUPERSETS = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-cn": "gb18030",
    "cp936": "gb18030",
    "csgb2312": "gb18030",
    "chinese": "gb18030",
    "hz-gb-2312": "hz",
    "big5": "big5hkscs",
    "x-big5": "big5hkscs",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "ks_c_5601": "cp949",
    "korean": "cp949",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "x-sjis": "cp932",
    "sjis": "cp932",
    "ms_kanji": "cp932",
    "iso-2022-jp": "iso2022_jp_ext",
    "euc-jp": "euc_jis_2004",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "iso-8859-8-i": "iso-8859-8",
    "unicode-1-1-utf-7": "utf-7",
    "utf8": "utf-8",
}
# Labels that say nothing about the bytes.
MEANINGLESS = {"", "unknown", "unknown-8bit", "x-unknown", "default", "none", "charset", "8bit", "binary", "us"}
# Tried after the declared charset, in this order, for text that is not valid in it.
GUESSES = ("utf-8", "gb18030", "big5hkscs", "cp932", "cp949")
LATIN = {"cp1252", "latin-1", "iso8859-1", "iso8859-15", "iso8859-2", "cp1250", "mac-roman"}
SURROGATES = re.compile(r"[\udc80-\udcff]")


def normalize(label: str | None) -> str:
    """A Python codec name for a MIME charset label, or "" when the label is of no use."""
    name = (label or "").strip().strip("\"'").lower()
    name = SUPERSETS.get(name, name)
    if name in MEANINGLESS:
        return ""
    try:
        return codecs.lookup(name).name
    except LookupError:
        return ""


def decode_bytes(data: bytes, label: str | None = None, hints: tuple[str, ...] = ()) -> str:
    """Text from bytes, never raising."""
    declared = normalize(label)
    if declared in ("cp1252", "iso8859-15", "ascii") and not data.isascii():
        # Latin-1 labels on UTF-8 text are the most common charset lie of all.
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    candidates = [declared] if declared else []
    if declared == "cp1252":
        candidates.append("latin-1")  # the five bytes cp1252 leaves undefined
    candidates.append("utf-8")
    candidates += [normalize(h) for h in hints]
    candidates += list(GUESSES)
    for candidate in dict.fromkeys(c for c in candidates if c):
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode(declared or "cp1252", "replace")


def decode_header_value(value: str, hints: tuple[str, ...] = ()) -> str:
    """A header as one line of text: RFC 2047 words decoded, raw 8-bit bytes read with hints."""
    if SURROGATES.search(value):
        value = decode_bytes(value.encode("ascii", "surrogateescape"), None, hints)
    if "=?" not in value:
        return one_line(value)
    try:
        chunks = email.header.decode_header(value)
    except Exception:  # a broken encoded word leaves the text as it is
        return one_line(value)
    parts = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            parts.append(chunk)
        elif charset is None:
            parts.append(chunk.decode("raw-unicode-escape", "replace"))
        else:
            parts.append(decode_bytes(chunk, charset, hints))
    return one_line("".join(parts))


def one_line(text: str) -> str:
    """Header text folded to one line: no CR, LF or other control characters survive."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
