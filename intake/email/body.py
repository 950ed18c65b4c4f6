"""Walking a mail's MIME tree: the text the customer wrote, its HTML, and every file as evidence.

Attachments, inline images and forwarded messages all become evidence files; S/MIME and PGP
signatures and vCards do not (they prove nothing about a charge). The walk counts parts and
depth itself, so a hostile tree is refused before anything large is decoded.
"""

from __future__ import annotations

import binascii
import hashlib
import mimetypes
import re
from dataclasses import dataclass, field
from email.message import Message
from pathlib import PurePosixPath

from refunddesk.policy.model import Attachment
from refunddesk.store.evidence import safe_filename

from . import charsets
from . import html as mailhtml
from .headers import raw_header

MAX_PARTS = 500
MAX_DEPTH = 20
NOT_EVIDENCE = {
    "application/pkcs7-signature",
    "application/x-pkcs7-signature",
    "application/pgp-signature",
    "application/pgp-keys",
    "text/vcard",
    "text/x-vcard",
    "text/directory",
}
REPORT_PARTS = {
    "message/delivery-status",
    "text/rfc822-headers",
    "message/rfc822-headers",
    "message/disposition-notification",
    "message/feedback-report",
}
ENCODED_WORD_CHARSET = re.compile(r"=\?([A-Za-z0-9_.:-]{1,40})(?:\*[A-Za-z-]+)?\?[bBqQ]\?")
UNQUOTED_NAME = re.compile(r"""(?i)(?:^|;)\s*(?:file)?name\s*=\s*([^"';\r\n][^;\r\n]*)""")


class MailRejected(Exception):
    """The message breaks a hard limit; it is kept as a dead letter, never parsed further."""


@dataclass
class Body:
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    parts: int = 0

    @property
    def text(self) -> str:
        text = "\n\n".join(p for p in self.plain if p.strip())
        if not text.strip() and self.html:
            text = mailhtml.to_text("\n".join(self.html))
        return text

    def add_file(self, data: bytes, filename: str, content_type: str, inline: bool = False) -> None:
        fallback = f"attachment-{len(self.attachments) + 1}{extension_for(content_type)}"
        self.attachments.append(
            Attachment(
                filename=safe_filename(filename, fallback),
                content_type=content_type,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                data=data,
                inline=inline,
            )
        )


def read_body(msg: Message) -> Body:
    body = Body()
    walk(msg, 0, body, hints=charset_hints(msg), with_text=True)
    return body


def walk(part: Message, depth: int, body: Body, hints: tuple[str, ...], with_text: bool) -> None:
    body.parts += 1
    if body.parts > MAX_PARTS:
        raise MailRejected(f"too many MIME parts (over {MAX_PARTS})")
    if depth > MAX_DEPTH:
        raise MailRejected(f"MIME nesting too deep (over {MAX_DEPTH})")
    content_type = content_type_of(part)
    if content_type == "message/rfc822":
        add_forwarded(part, body)
        for inner in children(part):
            # A forwarded mail's files are evidence too; its text is not the customer's own words.
            walk(inner, depth + 1, body, hints, with_text=False)
        return
    if part.is_multipart():
        for child in children(part):
            walk(child, depth + 1, body, hints, with_text)
        return
    disposition = disposition_of(part)
    filename = filename_of(part)
    if content_type in ("text/plain", "text/html") and disposition != "attachment" and not filename:
        if with_text:
            text = charsets.decode_bytes(payload_bytes(part), charset_of(part), hints)
            (body.plain if content_type == "text/plain" else body.html).append(text)
        return
    if content_type in NOT_EVIDENCE or content_type in REPORT_PARTS or content_type.startswith("multipart/"):
        return
    data = payload_bytes(part)
    if data:
        body.add_file(data, filename, content_type, inline=disposition == "inline")


def children(part: Message) -> list[Message]:
    payload = part.get_payload()
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def add_forwarded(part: Message, body: Body) -> None:
    inner = children(part)
    if not inner:
        data = payload_bytes(part)
        subject = ""
    else:
        subject = charsets.decode_header_value(str(inner[0].get("Subject", "") or ""))
        try:
            data = inner[0].as_bytes()
        except Exception:  # a defective inner message cannot be re-serialized; its text can
            data = str(inner[0].get_payload()).encode("utf-8", "surrogateescape")
    if data:
        body.add_file(data, f"{subject[:80] or 'forwarded-message'}.eml", "message/rfc822")


def content_type_of(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "application/octet-stream"


def disposition_of(part: Message) -> str:
    try:
        return (part.get_content_disposition() or "").lower()
    except Exception:
        return ""


def charset_of(part: Message) -> str | None:
    try:
        return part.get_content_charset()
    except Exception:
        return None


def charset_hints(msg: Message) -> tuple[str, ...]:
    """Every charset the message declares, in its parts or its encoded words: the best guess
    for unlabelled 8-bit text in it. Single-byte Latin charsets come last (they read anything)."""
    found: list[str] = []
    try:
        parts = list(msg.walk())[:MAX_PARTS]
    except Exception:
        parts = [msg]
    for part in parts:
        label = charset_of(part)
        if label:
            found.append(label)
    try:
        headers = " ".join(str(v) for _, v in msg.raw_items())
    except Exception:
        headers = ""
    found += ENCODED_WORD_CHARSET.findall(headers)
    names = [charsets.normalize(label) for label in found]
    names = [n for n in dict.fromkeys(names) if n and n != "ascii"]
    latin = [n for n in names if n in charsets.LATIN]
    return tuple([n for n in names if n not in latin] + latin)


def filename_of(part: Message) -> str:
    """The customer's name for a file, from RFC 2231 or RFC 2047 parameters, unquoted names
    with spaces, or Content-Location; "" when the part has none."""
    try:
        name = part.get_filename() or ""
    except Exception:
        name = ""
    if not name or " " not in name:
        # The parser stops unquoted names at the first space and drops `name==?utf-8?B?...?=`.
        for header_name in ("Content-Disposition", "Content-Type"):
            match = UNQUOTED_NAME.search(raw_header(part, header_name))
            if match and (not name or match.group(1).strip().startswith(name)):
                name = match.group(1).strip()
                break
    if "=?" in name:
        name = charsets.decode_header_value(name)
    if not name:
        location = str(part.get("Content-Location", "") or "").strip()
        name = PurePosixPath(location.split("?", 1)[0]).name if location else ""
    return charsets.one_line(name)


def extension_for(content_type: str) -> str:
    return mimetypes.guess_extension(content_type) or ""


def payload_bytes(part: Message) -> bytes:
    data = base64_payload(part)
    if data is not None:
        return data
    try:
        decoded = part.get_payload(decode=True)  # bytes, or None for a multipart
    except Exception:
        decoded = None
    if isinstance(decoded, bytes):
        return decoded
    raw = part.get_payload()
    return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""


def base64_payload(part: Message) -> bytes | None:
    """A base64 part decoded in one pass, or None to leave it to the standard library.

    get_payload(decode=True) splits the encoded text into lines and joins them again first:
    a 20 MB attachment cost ~110 MB on top of the message. binascii skips the line ends by
    itself; what it refuses (bad padding) goes the standard way, with its defects noted.
    The bytes are the same: the library's own decoder ends in this call."""
    if part.get("Content-Transfer-Encoding", "").strip().lower() != "base64" or part.is_multipart():
        return None
    payload = part.get_payload()
    if not isinstance(payload, str):
        return None
    try:
        return binascii.a2b_base64(payload)  # takes an ASCII str as is: no 25 MB bytes copy first
    except (binascii.Error, ValueError):  # bad padding; non-ASCII (raw 8-bit) text
        return None
