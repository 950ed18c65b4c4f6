"""Turning raw RFC 5322 bytes into one InboundMessage, for any MIME a real mail client produces.

The parser is defensive by construction: size, part-count and nesting limits are checked on
the raw bytes before the MIME tree is built; undecodable charsets fall back to a lossless
reading instead of failing; HTML is reduced to text for the dialog and sanitized for agents.
Nothing a customer writes reaches a header of ours except through `charsets.one_line`.
"""

from __future__ import annotations

import email
import email.parser
import email.policy
import hashlib
import re
from datetime import datetime
from email.message import Message
from email.utils import getaddresses, parseaddr
from typing import Any

from refunddesk.addresses import Addresses
from refunddesk.intake.parsed import Parsed
from refunddesk.policy.extract import detect_language
from refunddesk.policy.model import InboundMessage
from refunddesk.policy.text import READ_LIMIT

from . import charsets, loops, quoting
from . import html as mailhtml
from .body import MAX_DEPTH, MAX_PARTS, MailRejected, charset_hints, read_body
from .headers import raw_header, was_cut
from .reading import read_message

__all__ = ["Addresses", "MailRejected", "parse_mail", "split_plus", "route", "dedup_key"]

CASE_TAG = re.compile(r"\[((?:RF|AP)-\d{6})\]", re.IGNORECASE)
CASE_REF = re.compile(r"(?i)(RF|AP)-\d{6}")
MESSAGE_ID = re.compile(r"<([!-;=?-~]{1,250})>")  # printable ASCII but < and >: safe to echo in a header
MAX_BOUNDARY_LINES = MAX_PARTS * 2
MAX_MULTIPART_HEADERS = MAX_DEPTH * 4


PLUS_TAG = re.compile(r"\+[^@]*@")
MAX_HEADER_BYTES = 1024 * 1024  # honest headers are a few KB; a long thread's References tens of KB
CUT_SHOWN = ("Subject", "From", "References")  # a header the agent is told was cut (headers.py)


def parse_mail(raw: bytes, meta: dict[str, Any], addresses: Addresses, received_at: datetime) -> Parsed:
    if meta.get("oversized"):
        raise MailRejected(f"the message is too large ({meta['oversized']} bytes)")
    check_structure(raw)
    try:
        msg = read_message(raw)
    except RecursionError:  # nesting that check_structure did not count (e.g. past its window)
        raise MailRejected(f"MIME nesting too deep (over {MAX_DEPTH})") from None
    hints = charset_hints(msg)

    from_value = raw_header(msg, "From")
    if charsets.SURROGATES.search(from_value):  # 8-bit, as SMTPUTF8 mail writes it (RFC 6532): read as UTF-8
        from_value = charsets.decode_bytes(from_value.encode("ascii", "surrogateescape"), "utf-8", hints)
    from_name, sender = parseaddr(from_value)
    from_name = charsets.decode_header_value(from_name, hints)
    envelope_from = meta.get("mail_from", None)
    if not sender and envelope_from:
        sender = envelope_from
    sender = clean_address(sender)
    subject = header_text(msg, "Subject", hints)
    message_id = first_message_id(header_text(msg, "Message-ID"))
    references = tuple(
        reversed(MESSAGE_ID.findall(header_text(msg, "References") + " " + header_text(msg, "In-Reply-To")))
    )

    recipients = recipients_of(msg, meta)
    kind, plus_ref = route(recipients, addresses)
    tag = CASE_TAG.search(subject)
    case_ref = plus_ref or (tag.group(1).upper() if tag else None)

    body = read_body(msg)
    own, forwarded = quoting.split_forward(body.text, subject, READ_LIMIT)
    if forwarded:
        body.add_file(forwarded.encode("utf-8"), "forwarded-message.txt", "text/plain")
    language = detect_language(subject + "\n" + own[:READ_LIMIT])
    no_reply = meta.get("no_reply") or loops.no_reply_reason(msg, sender, envelope_from, addresses.ours())
    bounce_of = loops.bounced_message_ids(msg) if msg.get_content_type() == "multipart/report" else ()
    authentication = meta.get("authentication") or {"status": "unchecked"}
    if envelope_from and sender and not same_mailbox(clean_address(envelope_from), sender):
        # Anyone can write any From: a header naming another mailbox than the envelope is not
        # taken as that mailbox's word (the pipeline holds its fields for an existing case).
        authentication = {**authentication, "envelope_from": clean_address(envelope_from)[:254] or "(unreadable)"}

    inbound = InboundMessage(
        channel="email",
        sender=sender,
        text=own,
        received_at=received_at,
        transport_id=message_id,
        conversation_key=sender,
        kind_hint=kind,
        subject=subject,
        language=language,
        attachments=tuple(body.attachments),
        display_name=charsets.one_line(from_name)[:200],
        case_ref=case_ref,
        auto_submitted=bool(no_reply),
        meta={
            "message_id": message_id,
            "references": list(references),
            "recipients": recipients,
            "authentication": authentication,
            "forwarded": bool(forwarded) or any(a.content_type == "message/rfc822" for a in body.attachments),
            **({"headers_cut": cut} if (cut := [n for n in CUT_SHOWN if was_cut(msg, n)]) else {}),
        },
    )
    html = "\n".join(body.html)
    return Parsed(
        inbound=inbound,
        dedup_key=dedup_key(msg, raw, message_id),
        message_id=message_id,
        references=references,
        html=mailhtml.sanitize(html) if html.strip() else None,
        no_reply_reason=no_reply,
        bounce_of=bounce_of,
    )


def check_structure(raw: bytes) -> None:
    """Cheap limits on the raw bytes, before the MIME tree is built in memory. Each is one
    linear scan, so a hostile message costs no more to refuse than to receive."""
    # message/rfc822 nests too (a forward of a forward ...): the stdlib parser recurses on both.
    if len(re.findall(rb"(?im)^content-type:\s*(?:multipart|message)/", raw[:4_000_000])) > MAX_MULTIPART_HEADERS:
        raise MailRejected(f"MIME nesting too deep (over {MAX_DEPTH})")
    if header_block_size(raw) > MAX_HEADER_BYTES:
        raise MailRejected(f"the message's header is too large (over {MAX_HEADER_BYTES // 1024} KB)")
    if raw.count(b"\n--") > MAX_BOUNDARY_LINES and boundary_lines(raw) > MAX_BOUNDARY_LINES:
        raise MailRejected(f"too many MIME parts (over {MAX_PARTS})")


def header_block_size(raw: bytes) -> int:
    """Bytes before the blank line that ends the header (the whole message when there is none)."""
    ends = [
        at
        for at in (raw.find(b"\n\n", 0, MAX_HEADER_BYTES + 2), raw.find(b"\n\r\n", 0, MAX_HEADER_BYTES + 3))
        if at >= 0
    ]
    return min(ends) if ends else len(raw)


def boundary_lines(raw: bytes) -> int:
    """Lines that open or close a MIME part, for the boundaries the message declares."""
    boundaries = {b.strip() for b in re.findall(rb'(?i)boundary\s*=\s*"?([^";\r\n]{1,70})', raw)}
    if len(boundaries) > MAX_MULTIPART_HEADERS:
        return MAX_BOUNDARY_LINES + 1
    delimiters = re.findall(rb"(?m)^--([^\r\n]{1,72})", raw)
    return sum(1 for d in delimiters if d.rstrip().removesuffix(b"--") in boundaries)


def header_text(msg: Message, name: str, hints: tuple[str, ...] = ()) -> str:
    """A header as one line of text; a malformed header must not cost us the message."""
    return charsets.decode_header_value(raw_header(msg, name), hints)


def same_mailbox(a: str, b: str) -> bool:
    """One mailbox, whatever +tag either carries (refunds+RF-1@ is refunds@)."""
    return PLUS_TAG.sub("@", a.lower()) == PLUS_TAG.sub("@", b.lower())


def clean_address(address: str) -> str:
    """A bare, lowercased address; anything that could break a header becomes nothing."""
    address = address.strip().strip("<>").lower()
    if not address or any(ch.isspace() or not ch.isprintable() or ch in '<>,;"' for ch in address):
        return ""
    return address if address.count("@") == 1 and address[0] != "@" and address[-1] != "@" else ""


def first_message_id(value: str) -> str:
    """`<id>` as written, or "" when the header holds nothing usable as a Message-ID."""
    match = MESSAGE_ID.search(value)
    if match:
        return f"<{match.group(1)}>"
    bare = value.strip()
    return f"<{bare}>" if MESSAGE_ID.fullmatch(f"<{bare}>") else ""


def recipients_of(msg: Message, meta: dict[str, Any]) -> list[str]:
    """The envelope recipients first (they decide), then the headers that name a recipient."""
    found = [r.lower() for r in meta.get("rcpt_tos", []) if isinstance(r, str)]
    for name in ("Delivered-To", "X-Original-To", "To", "Cc"):
        try:
            values = [charsets.one_line(str(v)) for k, v in msg.raw_items() if k.lower() == name.lower()]
            found.extend(addr.lower() for _, addr in getaddresses(values) if addr)
        except Exception:
            continue
    return list(dict.fromkeys(found))


def split_plus(address: str) -> tuple[str, str | None]:
    local, _, domain = address.partition("@")
    base, plus, tag = local.partition("+")
    return f"{base}@{domain}", (tag if plus else None)


def route(recipients: list[str], addresses: Addresses) -> tuple[str, str | None]:
    """refund or appeal by the first of our addresses the mail was sent to; a plus tag names a case."""
    for recipient in recipients:
        base, tag = split_plus(recipient.lower())
        ref = tag.upper() if tag and CASE_REF.fullmatch(tag) else None
        if base == addresses.appeals.lower():
            return "appeal", ref
        if base == addresses.refunds.lower():
            return "refund", ref
    return "refund", None


WHITESPACE = frozenset(b" \t\n\r\x0b\x0c")  # what bytes.rstrip() strips
DIGEST_PIECE = 1024 * 1024


def body_digest(raw: bytes, start: int, piece: int = DIGEST_PIECE) -> str:
    """sha256 of raw[start:] with CRLF as LF and trailing whitespace stripped, read in pieces:
    the same digest as hashing `body.replace(b"\r\n", b"\n").rstrip()`, without the three
    copies of a 28 MB body that would take. (Trailing whitespace holds every CR and LF that
    the stripping removes, so stripping first and replacing after gives the same bytes.)"""
    end = len(raw)
    while end > start and raw[end - 1] in WHITESPACE:
        end -= 1
    view, digest, carry = memoryview(raw), hashlib.sha256(), b""
    for at in range(start, end, piece):
        chunk = carry + bytes(view[at : min(at + piece, end)])
        carry = b"\r" if chunk.endswith(b"\r") else b""  # its LF may open the next piece
        digest.update(chunk[: len(chunk) - len(carry)].replace(b"\r\n", b"\n"))
    digest.update(carry)
    return digest.hexdigest()


def dedup_key(msg: Message, raw: bytes, message_id: str) -> str:
    """The identity of one mail across retries, addresses and channels.

    Relays add trace headers, so an SMTP delivery and the IMAP copy of the same mail differ
    above the body: the key is the Message-ID plus a hash of the body, or without a
    Message-ID the hash of the body and the headers the author wrote. Two different mails
    that reuse a Message-ID (broken clients do) stay two mails.
    """
    separator = b"\r\n\r\n" if b"\r\n\r\n" in raw else b"\n\n"
    at = raw.find(separator)
    head, body_start = (raw, len(raw)) if at < 0 else (raw[:at], at + len(separator))
    body_hash = body_digest(raw, body_start)[:32]
    if message_id:
        return f"mid:{message_id.strip('<>').lower()}:{body_hash}"
    stable = [
        line.strip()
        for line in head.replace(b"\r\n", b"\n").split(b"\n")
        if line[:1] not in (b" ", b"\t") and line.split(b":", 1)[0].lower() in (b"from", b"to", b"subject", b"date")
    ]
    digest = hashlib.sha256(b"\n".join(sorted(stable)) + b"\n\n" + body_hash.encode()).hexdigest()
    return "sha:" + digest


def mail_conversation(raw: bytes, meta: dict[str, Any]) -> int | None:
    """The spool's conversation key of a mail: its sender's, so that with several workers
    (worker.processes) one customer's letters are taken by one worker in the order they came
    ("Amount: 20", then "sorry, 25" must not be applied the other way round). The envelope
    sender when there is one (the SMTP receiver, the MTA pipe), else the From header; a
    stable hash, the same in every process. None when neither names an address."""
    sender = clean_address(meta.get("mail_from") or "")
    if not sender:
        try:
            head = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(bytes(raw[:65536]))
            sender = clean_address(parseaddr(str(head.get("From") or ""))[1])
        except Exception:  # a key only orders the work: never a reason to refuse a message
            sender = ""
    if not sender:
        return None
    return int.from_bytes(hashlib.blake2b(sender.encode("utf-8", "surrogateescape"), digest_size=7).digest(), "big")
