"""Driving real cases through the real pipeline, for tests and demos (as Salmon's testing.py).

A customer's mail or Telegram update is spooled exactly as the channels spool it and processed
by `intake.pipeline.process` at a chosen moment, so a test can put a case in the past and
move the clock. Nothing here is mocked: the letters come out of the real outbox.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import itertools
import json
import struct
import zlib
from datetime import datetime
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import sqlite_utils

from refunddesk.desk import Desk
from refunddesk.intake import pipeline
from refunddesk.outbound.delivery import deliver_due
from refunddesk.outbound.email_sender import EmailSender
from refunddesk.policy.model import Case
from refunddesk.store import cases as case_store
from refunddesk.store import spool
from refunddesk.store.clock import utcnow
from refunddesk.store.evidence import sha256_of, write_blob


def tiny_png(width: int = 4, height: int = 3) -> bytes:
    """A real, decodable PNG (a browser must be able to show it inline)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\xc8\x45\x3b" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


PNG = tiny_png()
_serial = itertools.count(1)


def mail(
    sender: str,
    subject: str,
    text: str,
    *,
    to: str,
    html: str | None = None,
    attachments: tuple[tuple[str, str, bytes], ...] = (),
    in_reply_to: str | None = None,
) -> bytes:
    """An RFC 5322 message as a customer's client sends it; attachments are (name, mime, bytes)."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Message-ID"] = f"<t{next(_serial)}.{abs(hash((sender, subject, text))) % 10**9}@customer.test>"
    if in_reply_to:
        msg["In-Reply-To"] = msg["References"] = in_reply_to
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for name, mime, data in attachments:
        maintype, subtype = mime.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


def receive_mail(
    desk: Desk, db: sqlite_utils.Database, raw: bytes, when: datetime | None = None, to: str | None = None
) -> str | None:
    """Spool and process one mail at `when`; returns the case it landed on."""
    when = when or utcnow()
    envelope_from = parseaddr(email.message_from_bytes(raw)["From"] or "")[1]
    inbound_id, _ = spool.spool(
        db,
        "email",
        f"test:{next(_serial)}",
        raw,
        when,
        {"rcpt_tos": [to or desk.addresses.refunds], "mail_from": envelope_from},
    )
    status = pipeline.process(desk, db, inbound_id, when)
    row = db.execute("SELECT case_id, error FROM inbound WHERE id = ?", [inbound_id]).fetchone()
    if status == "dead":
        raise AssertionError(f"the pipeline dead-lettered the test mail: {row[1]}")
    return row[0]


def mail_case(
    desk: Desk,
    db: sqlite_utils.Database,
    sender: str,
    text: str,
    when: datetime | None = None,
    *,
    html: str | None = None,
    files: tuple[tuple[str, str, bytes], ...] = (("screenshot.png", "image/png", PNG),),
    subject: str = "Refund request",
) -> str:
    """A complete refund case by email: the request, then a reply carrying the evidence."""
    case_id = landed(receive_mail(desk, db, mail(sender, subject, text, to=desk.addresses.refunds, html=html), when))
    if files:
        receive_mail(
            desk,
            db,
            mail(
                sender,
                f"Re: [{case_id}] {subject}",
                "The evidence is attached.",
                to=desk.addresses.refunds,
                attachments=files,
            ),
            when,
        )
    return case_id


def telegram_update(
    chat_id: int,
    *,
    text: str | None = None,
    command: str | None = None,
    callback: str | None = None,
    language: str = "en",
) -> bytes:
    user = {"id": chat_id, "is_bot": False, "first_name": "Test", "language_code": language}
    chat = {"id": chat_id, "type": "private"}
    number = next(_serial)
    if callback is not None:
        update = {
            "update_id": number,
            "callback_query": {
                "id": str(number),
                "from": user,
                "data": callback,
                "message": {"message_id": number, "chat": chat, "date": 0},
            },
        }
    else:
        body = f"/{command}" + (f" {text}" if text else "") if command else (text or "")
        message = {"message_id": number, "from": user, "chat": chat, "date": 0, "text": body}
        if command:
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command) + 1}]
        update = {"update_id": number, "message": message}
    return json.dumps(update).encode()


def receive_chat(
    desk: Desk,
    db: sqlite_utils.Database,
    raw: bytes,
    when: datetime | None = None,
    files: tuple[tuple[str, str, bytes], ...] = (),
) -> str | None:
    """Spool and process one update, with files already downloaded as the bot adapter does."""
    when = when or utcnow()
    meta: dict[str, Any] = {"files": []}
    for name, mime, data in files:
        write_blob(desk.files, data)
        meta["files"].append({"filename": name, "content_type": mime, "size": len(data), "sha256": sha256_of(data)})
    update_id = json.loads(raw)["update_id"]
    inbound_id, _ = spool.spool(db, "telegram", str(update_id), raw, when, meta)
    if pipeline.process(desk, db, inbound_id, when) == "dead":
        error = db.execute("SELECT error FROM inbound WHERE id = ?", [inbound_id]).fetchone()[0]
        raise AssertionError(f"the pipeline dead-lettered the update: {error}")
    return db.execute("SELECT case_id FROM inbound WHERE id = ?", [inbound_id]).fetchone()[0]


def landed(case_id: str | None) -> str:
    """The case a request opened; a request that opened none fails the test here."""
    if case_id is None:
        raise AssertionError("the request landed on no case")
    return case_id


def loaded(db: sqlite_utils.Database, case_id: str) -> Case:
    case = case_store.load_case(db, case_id)
    if case is None:
        raise AssertionError(f"no case {case_id} in the store")
    return case


def chat_case(
    desk: Desk,
    db: sqlite_utils.Database,
    chat_id: int,
    answers: dict[str, str],
    when: datetime | None = None,
    language: str = "en",
) -> str:
    """A complete refund case in a Telegram chat: /refund, then answer whatever the bot asks."""
    case_id = landed(receive_chat(desk, db, telegram_update(chat_id, command="refund", language=language), when))
    for _ in range(30):
        case = loaded(db, case_id)
        if case.status == "queued":
            return case_id
        asking: str | None = case.dialog.get("asking")
        if asking is None:
            raise AssertionError(f"the chat dialog asks nothing, and {case_id} is not queued: {case}")
        spec = desk.policy.versions[-1].field(asking) if asking else None
        if asking == "evidence":
            if case.attachments:
                receive_chat(desk, db, telegram_update(chat_id, callback="done_evidence", language=language), when)
            else:
                receive_chat(
                    desk,
                    db,
                    telegram_update(chat_id, text="", language=language),
                    when,
                    files=(("screenshot.png", "image/png", PNG),),
                )
        elif asking == "confirm":
            receive_chat(desk, db, telegram_update(chat_id, callback="confirm", language=language), when)
        elif spec is not None and spec.type == "choice":
            receive_chat(
                desk,
                db,
                telegram_update(chat_id, callback=f"choose:{asking}:{answers[asking]}", language=language),
                when,
            )
        else:
            receive_chat(desk, db, telegram_update(chat_id, text=answers[asking], language=language), when)
    raise AssertionError(f"the chat dialog did not complete {case_id}: {case_store.load_case(db, case_id)}")


def send_email(desk: Desk, db: sqlite_utils.Database) -> list[Path]:
    """Run the real email sender once (no relay configured: each letter becomes an .eml file)."""
    asyncio.run(deliver_due(db, EmailSender.for_desk(desk)))
    return sorted(desk.config.email.outgoing.folder.glob("*.eml"))


def letters_to(folder: Path, recipient: str) -> list[email.message.EmailMessage]:
    """The letters written to the outgoing folder for one recipient, oldest first."""
    found = []
    for path in sorted(Path(folder).glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if recipient in str(msg["To"]):
            found.append(msg)
    return found


def body_of(msg: email.message.EmailMessage) -> str:
    body = msg.get_body(preferencelist=("plain",))
    if body is None:
        raise AssertionError(f"the letter has no text part: {msg['Subject']}")
    return body.get_content()
