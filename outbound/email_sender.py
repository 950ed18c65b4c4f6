"""Sending our letters: to the configured relay with aiosmtplib, or as .eml files in a folder.

Every header we write is built from our own values; customer text only ever reaches the body
and the subject, and the subject was already folded to one line when it was rendered. A
recipient that is not one plain address is a permanent failure, never a header.

Failure tiers for delivery.py: a 5xx for the recipient is permanent (retrying cannot help);
everything else (relay down, 4xx, a timeout, a relay refusing our login) is temporary and
retried with back-off, because a misconfigured relay must not cost customers their letters.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import tempfile
import time
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosmtplib

from refunddesk.config import OutgoingSettings
from refunddesk.intake.email.charsets import one_line
from refunddesk.intake.email.registry import WRITING, WRITING_UTF8
from refunddesk.outbound.delivery import PermanentFailure, TemporaryFailure, Window

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
    if not value.isascii():
        # The standard library's parser refuses a UTF-8 local part (RFC 6532 allows it): the two
        # halves are taken as they are, once the checks above have passed.
        local, at, domain = value.rpartition("@")
        if not at or not local or not domain or "@" in local:
            raise PermanentFailure("not a plain email address")
        return Address(username=local, domain=domain)
    try:
        return Address(addr_spec=value)
    except (ValueError, IndexError, TypeError) as exc:
        raise PermanentFailure("not a plain email address") from exc


def compose(row: dict[str, Any], from_address: str, from_name: str = "") -> EmailMessage:
    # An internationalised address (josé@exämple.test) is written as UTF-8 (RFC 6532) and sent
    # with SMTPUTF8 (RFC 6531); nothing else changes for ASCII mail.
    international = not (row["recipient"] or "").isascii() or not (row["headers"].get("From") or from_address).isascii()
    msg = EmailMessage(policy=WRITING_UTF8 if international else WRITING)
    headers = row["headers"]
    sender = address_of(headers.get("From") or from_address)
    msg["From"] = (
        Address(display_name=one_line(from_name), username=sender.username, domain=sender.domain)
        if from_name
        else sender
    )
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
    """Letters to the relay over a few SMTP sessions kept open between letters (or .eml files).

    A fresh connection per letter (connect, banner, EHLO, STARTTLS and login where set, QUIT)
    was half of the sender's CPU during a burst (py-spy of bench/smtp_intake.py) and three
    extra round trips per letter to a remote relay. As Postfix's connection cache does, a
    session is reused for the next letter while it is fresh: at most SESSION_LETTERS letters
    and SESSION_IDLE seconds apart; one idle longer is asked NOOP first, since a relay drops
    an idle client (RFC 5321 allows it after five minutes). A session that failed in any way
    is closed, never reused."""

    channel = "email"
    window: Window | None = None  # deliver_due's
    SESSION_IDLE = 5.0  # seconds: past this an idle session is closed (close_idle) or probed
    SESSION_LETTERS = 100  # letters per session, then a fresh one (as Postfix's reuse limit)

    def __init__(self, settings: OutgoingSettings, from_address: str, folder: Path, from_name: str = "") -> None:
        self.settings = settings
        self.from_address = from_address
        self.from_name = from_name
        self.folder = Path(folder)
        self.idle: list[Session] = []  # open sessions no letter is using, the freshest last
        self.quitting: set[asyncio.Task] = set()
        self.loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def for_desk(cls, desk: Desk) -> EmailSender:
        """The sender `email.outgoing` configures: the relay, or the folder of .eml files."""
        email = desk.config.email
        return cls(email.outgoing, desk.addresses.refunds, email.outgoing.folder, email.from_name)

    async def deliver(self, row: dict[str, Any]) -> None:
        msg = compose(row, self.from_address, self.from_name)
        if not self.settings.host:
            write_eml(self.folder, row["id"], msg)
            return
        try:
            session = await self.session()
            try:
                await session.smtp.send_message(
                    msg, sender=self.from_address, recipients=[msg["To"].addresses[0].addr_spec]
                )
            except BaseException:
                session.smtp.close()  # whatever state it is in, it is not reused
                raise
            session.letters += 1
            self.put_back(session)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [getattr(r, "code", 0) for r in exc.recipients]
            if codes and all(500 <= c < 600 for c in codes):
                raise PermanentFailure(f"recipient refused: {codes}") from exc
            raise TemporaryFailure(f"recipient deferred: {codes}") from exc
        except aiosmtplib.SMTPNotSupported as exc:  # an international address, a relay without SMTPUTF8
            raise PermanentFailure(f"relay cannot send to this address: {exc}") from exc
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise TemporaryFailure(f"relay refused our login: {exc.code}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise PermanentFailure(f"relay refused: {exc.code}") from exc
            raise TemporaryFailure(f"relay deferred: {exc.code}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TemporaryFailure(f"relay unreachable: {type(exc).__name__}") from exc

    async def session(self) -> Session:
        """An open session for one letter: the freshest idle one that still answers, or a new one."""
        if self.loop is not asyncio.get_running_loop():  # sessions belong to the loop that opened them
            self.forget_sessions()
            self.loop = asyncio.get_running_loop()
        while self.idle:
            session = self.idle.pop()
            if not session.smtp.is_connected:  # the relay closed it while it waited
                session.smtp.close()
                continue
            if session.idle_for() <= self.SESSION_IDLE:
                return session
            try:
                await session.smtp.noop()
                return session
            except (aiosmtplib.SMTPException, OSError):
                session.smtp.close()
        smtp = aiosmtplib.SMTP(
            hostname=self.settings.host,
            port=self.settings.port,
            start_tls=self.settings.starttls,
            username=self.settings.username or None,
            password=self.settings.password or None,
            local_hostname=local_hostname(),
            timeout=SEND_TIMEOUT,
        )
        await smtp.connect()
        return Session(smtp)

    def put_back(self, session: Session) -> None:
        if session.letters >= self.SESSION_LETTERS:
            quitting = asyncio.get_running_loop().create_task(quit_quietly(session.smtp))
            self.quitting.add(quitting)  # held, or the loop may drop the task before it ran
            quitting.add_done_callback(self.quitting.discard)
            return
        session.last_used = time.monotonic()
        self.idle.append(session)

    async def close_idle(self, older_than: float | None = None) -> None:
        """QUIT the sessions idle longer than `older_than` seconds (SESSION_IDLE; 0: all)."""
        limit = self.SESSION_IDLE if older_than is None else older_than
        if self.loop is not asyncio.get_running_loop():
            self.forget_sessions()
            return
        keep: list[Session] = []
        stale: list[Session] = []
        for session in self.idle:
            (stale if session.idle_for() >= limit else keep).append(session)
        self.idle = keep
        await asyncio.gather(*(quit_quietly(s.smtp) for s in stale))

    async def close(self) -> None:
        await self.close_idle(0)
        await asyncio.gather(*self.quitting, return_exceptions=True)

    def forget_sessions(self) -> None:
        """Sessions of another event loop (one asyncio.run each, as tests and the CLI send)."""
        for session in self.idle:
            try:
                session.smtp.close()
            except RuntimeError:  # that loop is closed: its sockets went with it
                pass
        self.idle = []


@dataclass
class Session:
    smtp: aiosmtplib.SMTP
    letters: int = 0
    last_used: float = field(default_factory=time.monotonic)

    def idle_for(self) -> float:
        return time.monotonic() - self.last_used


async def quit_quietly(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.quit()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()


@functools.lru_cache(maxsize=1)
def local_hostname() -> str:
    """The name we greet the relay with, looked up once (aiosmtplib looks it up per connection)."""
    return socket.getfqdn()


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
