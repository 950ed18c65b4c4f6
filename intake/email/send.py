"""Sending our letters: to the configured relay with aiosmtplib, or as .eml files in a folder.

Every header we write is built from our own values; customer text only ever reaches the body
and the subject, and the subject was already folded to one line when it was rendered. A
recipient that is not one plain address is a permanent failure, never a header.

Failure tiers for delivery.py: a 5xx for the recipient is permanent (retrying cannot help);
everything else (relay down, 4xx, a timeout, a relay refusing our login) is temporary and
retried with back-off, because a misconfigured relay must not cost customers their letters.
"""
from __future__ import annotations

import os
import tempfile
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosmtplib

from refunddesk.intake.delivery import PermanentFailure, TemporaryFailure

from .charsets import one_line

if TYPE_CHECKING:
    from refunddesk.desk import Desk

OUR_HEADERS = ("Message-ID", "In-Reply-To", "References", "Reply-To")
AUTOMATIC_KINDS = ("ack", "dialog", "notice")
SEND_TIMEOUT = 30


def address_of(value: str) -> Address:
    """One plain address, or PermanentFailure: nothing else may reach To or From."""
    value = (value or "").strip()
    if not value or any(ch.isspace() or not ch.isprintable() or ch in '<>,;"' for ch in value):
        raise PermanentFailure("not a plain email address")
    try:
        return Address(addr_spec=value)
    except (ValueError, IndexError, TypeError) as exc:
        raise PermanentFailure("not a plain email address") from exc


def compose(row: dict[str, Any], from_address: str, from_name: str = "") -> EmailMessage:
    msg = EmailMessage()
    headers = row["headers"]
    sender = address_of(headers.get("From") or from_address)
    msg["From"] = Address(display_name=one_line(from_name), username=sender.username, domain=sender.domain) if from_name else sender
    msg["To"] = address_of(row["recipient"])
    msg["Subject"] = one_line(row["subject"])
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    for name in OUR_HEADERS:
        if headers.get(name):
            msg[name] = one_line(str(headers[name]))
    if row["kind"] in AUTOMATIC_KINDS:
        # RFC 3834: mark automatic replies so other robots do not answer them.
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Auto-Response-Suppress"] = "All"
        msg["X-Loop"] = sender.addr_spec
    msg.set_content(row["body"], charset="utf-8")
    # After set_content, which clears every Content-* header.
    msg["Content-Language"] = "zh-CN" if row["language"] == "zh" else "en"
    return msg


class EmailSender:
    channel = "email"

    def __init__(self, settings: dict[str, Any], from_address: str, folder: Path, from_name: str = "") -> None:
        self.settings = settings
        self.from_address = from_address
        self.from_name = from_name
        self.folder = Path(folder)

    @classmethod
    def for_desk(cls, desk: "Desk") -> "EmailSender":
        """The sender `email.outgoing` configures: the relay, or the folder of .eml files."""
        config = desk.config
        return cls(config.section("email.outgoing"), desk.addresses.refunds, config.path("email.outgoing.folder"), config["email.from_name"])

    async def deliver(self, row: dict[str, Any]) -> None:
        msg = compose(row, self.from_address, self.from_name)
        if not self.settings.get("host"):
            write_eml(self.folder, row["id"], msg)
            return
        try:
            await aiosmtplib.send(
                msg,
                sender=self.from_address,
                recipients=[msg["To"].addresses[0].addr_spec],
                hostname=self.settings["host"],
                port=self.settings["port"],
                start_tls=bool(self.settings.get("starttls")),
                username=self.settings.get("username") or None,
                password=self.settings.get("password") or None,
                timeout=SEND_TIMEOUT,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [getattr(r, "code", 0) for r in exc.recipients]
            if codes and all(500 <= c < 600 for c in codes):
                raise PermanentFailure(f"recipient refused: {codes}") from exc
            raise TemporaryFailure(f"recipient deferred: {codes}") from exc
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise TemporaryFailure(f"relay refused our login: {exc.code}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise PermanentFailure(f"relay refused: {exc.code}") from exc
            raise TemporaryFailure(f"relay deferred: {exc.code}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TemporaryFailure(f"relay unreachable: {type(exc).__name__}") from exc


def write_eml(folder: Path, outbox_id: int, msg: EmailMessage) -> Path:
    """One file per outbox row; the name is ours, written atomically so readers never see half."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"outbox-{int(outbox_id):08d}.eml"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".sending-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(msg.as_bytes())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
