"""RFC 3834 and friends: which mail must never get an automatic reply.

Such mail is still stored and shown to agents; we only keep quiet, so that two robots
(our acknowledgement and someone's vacation responder) cannot talk to each other forever.
"""

from __future__ import annotations

import re
from email.message import Message

ROBOT_LOCALPARTS = re.compile(
    r"^(mailer[-_]?daemon|postmaster|no-?reply|do-?not-?reply|bounces?|auto-?reply|autoresponder)([+.-].*)?$|.*-request$|^owner-.*",
    re.IGNORECASE,
)
LIST_HEADERS = ("List-Id", "List-Unsubscribe", "List-Post", "List-Help", "List-Subscribe", "List-Owner", "List-Archive")
AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response)|out of (the )?office|abwesenheitsnotiz|自动回复|自動回覆|自動回复)\b",
    re.IGNORECASE,
)
REPORT_TYPES = ("multipart/report", "message/delivery-status", "message/disposition-notification")


def header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:
        return ""
    try:
        return str(value or "").strip()
    except Exception:
        return ""


def is_null_sender(address: str | None) -> bool:
    return address is not None and address.strip() in ("", "<>")


def no_reply_reason(msg: Message, sender: str, envelope_from: str | None, our_addresses: tuple[str, ...]) -> str | None:
    """Why we must not answer this mail automatically, or None when a reply is fine."""
    auto = header(msg, "Auto-Submitted").lower()
    if auto and auto.split(";")[0].strip() != "no":
        return f"Auto-Submitted: {auto.split(';')[0].strip()[:40]}"
    if is_null_sender(envelope_from):
        return "null envelope sender (a bounce)"
    if msg.get("Return-Path") is not None and is_null_sender(header(msg, "Return-Path")):
        return "null Return-Path (a bounce)"
    if not sender:
        return "no sender address"
    local = sender.split("@", 1)[0]
    if ROBOT_LOCALPARTS.match(local):
        return f"robot sender {sender}"
    ours = {a.lower() for a in our_addresses}
    base = re.sub(r"\+[^@]*@", "@", sender.lower())
    if base in ours:
        return "mail from our own address"
    if envelope_from and re.sub(r"\+[^@]*@", "@", envelope_from.strip("<> ").lower()) in ours:
        return "mail from our own address (envelope)"
    if any(address in header(msg, "X-Loop").lower() for address in ours):
        return "X-Loop names our address"
    precedence = header(msg, "Precedence").lower() or header(msg, "X-Precedence").lower()
    if precedence in ("bulk", "list", "junk", "auto_reply"):
        return f"Precedence: {precedence}"
    for name in LIST_HEADERS:
        if header(msg, name):
            return f"mailing list ({name})"
    if msg.get_content_type() in REPORT_TYPES:
        return "delivery or read report"
    if (
        header(msg, "X-Autoreply")
        or header(msg, "X-Autorespond")
        or header(msg, "X-Auto-Response-Suppress").lower() in ("all", "autoreply", "oof")
    ):
        return "vendor auto-reply header"
    if AUTO_REPLY_SUBJECT.match(header(msg, "Subject")):
        return "auto-reply subject"
    return None


def bounced_message_ids(msg: Message) -> tuple[str, ...]:
    """Message-IDs that a delivery report returns (to attach the bounce to the case of our letter)."""
    found: list[str] = []
    for part in msg.walk():
        content_type = part.get_content_type()
        if content_type not in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
            continue
        try:
            payload = part.get_payload()
            if isinstance(payload, list):
                first = payload[0] if payload else None
                # A part that is no message names nothing (header() would find no field in it either).
                if isinstance(first, Message):
                    found.extend(re.findall(r"<([^<>\s]+)>", header(first, "Message-ID")))
            else:
                text = payload if isinstance(payload, str) else str(payload)
                found.extend(re.findall(r"(?im)^Message-ID:\s*<([^<>\s]+)>", text))
        except Exception:  # a broken report still counts as a report; it just names nothing
            continue
    return tuple(dict.fromkeys(found))
