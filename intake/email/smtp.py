"""The SMTP receiver: a thin edge that accepts mail for our addresses and spools it, nothing more.

It answers 250 only after the raw message is committed (WAL, synchronous=FULL), and 451 for
any failure of ours, so a sender retries instead of bouncing a good mail; a reply never
carries internal detail. Parsing, policy and answers happen later, in the worker.

aiosmtpd runs its event loop in a thread of its own. SQLite work must not block that loop
(other clients are mid-conversation), so commits run on one dedicated thread that owns its
own connection and commits what arrived together (store/committer.py).
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import ssl
import uuid
from typing import Any, Callable

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from refunddesk.desk import Desk
from refunddesk.store import spool
from refunddesk.store.committer import GroupCommitter
from refunddesk.store.clock import utcnow

from . import authresults
from .parse import mail_conversation, split_plus

log = logging.getLogger("refunddesk.smtp")
MAX_RECIPIENTS = 50
COMMAND_TIMEOUT = 120  # seconds a client may stay silent mid-conversation
LINE_LIMIT = 65_536    # real mail breaks RFC 5321's 1000; refusing it would lose customers' mail
REPLY_ACCEPTED = "250 2.0.0 Message accepted"
REPLY_UNKNOWN_RECIPIENT = "550 5.1.1 Recipient address rejected: no such mailbox here"
REPLY_TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
REPLY_TOO_BIG = "552 5.3.4 Message size exceeds fixed limit"
REPLY_TRY_LATER = "451 4.3.0 Temporary failure, please try again later"
REPLY_BUSY = "451 4.3.2 Too many large messages at once, please try again later"
REPLY_GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"
# A message being received is held whole in its buffer until it is spooled. Transfers
# declared larger than LARGE_MESSAGE (RFC 1870 SIZE, which MTAs send) take turns; small mail
# never waits.
LARGE_MESSAGE = 1024 * 1024
LARGE_TRANSFERS = 1
LARGE_WAIT = 60  # seconds a large transfer may wait for its turn; then 451 and the sender retries
END_OF_DATA = b".\r\n"  # the terminating line when it begins a line (RFC 5321 4.1.1.4)


class IntakeSMTP(SMTP):
    """aiosmtpd's SMTP with the message text read in pieces into one buffer.

    aiosmtpd reads DATA one line at a time (a Python round of its loop per 76-byte line of
    base64) and keeps the lines as a list until the end (~3 times the message's size). During
    a burst of 20 KB mails that reading was most of the receiver's time (py-spy), and a 28 MB
    mail took ~85 MB. Here the stream is read up to each ".<CR><LF>" (a few reads per
    message) and the replies, limits and hooks are aiosmtpd's own."""

    line_length_limit = LINE_LIMIT

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        turns = getattr(self.event_handler, "large_transfers", None)
        if turns is None or declared_size(self.envelope) <= LARGE_MESSAGE:
            return await self.receive_data()
        try:
            await asyncio.wait_for(turns.acquire(), LARGE_WAIT)
        except asyncio.TimeoutError:
            await self.push(REPLY_BUSY)
            return
        try:
            await self.receive_data()
        finally:
            turns.release()

    async def receive_data(self) -> None:
        await self.push(REPLY_GO_AHEAD)
        try:
            content = await read_data(self._reader, self.data_size_limit)
        except asyncio.CancelledError:
            log.info("connection lost during DATA")
            self._writer.close()
            raise
        if content is None:
            await self.push(REPLY_TOO_BIG)  # the answer IntakeHandler.handle_DATA gives over the limit
            self._set_post_data_state()
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)


async def read_data(reader: asyncio.StreamReader, limit: int | None) -> bytearray | None:
    """The message up to the line holding one dot, dot-unstuffed (RFC 5321 4.5.2); None when
    it was longer than `limit` (then it is read to its end and dropped, as RFC 5321 4.2.5 asks)."""
    buffer = bytearray()
    dropped = 0
    while True:
        try:
            piece = await reader.readuntil(END_OF_DATA)
        except asyncio.LimitOverrunError as exc:  # no dot line in the reader's window yet
            piece = await reader.read(exc.consumed)
        buffer += piece
        dot = len(buffer) - len(END_OF_DATA)
        if buffer.endswith(END_OF_DATA) and (dot == 0 or buffer[dot - 2 : dot] == b"\r\n"):
            del buffer[dot:]
            break
        if limit and dropped + len(buffer) > limit:
            dropped += len(buffer) - 2
            del buffer[:-2]  # the last line end, to recognize the dot line after it
    if dropped:
        return None
    if buffer.startswith(b"."):
        del buffer[0]
    if b"\r\n." in buffer:
        buffer = buffer.replace(b"\r\n.", b"\r\n")
    return buffer  # not bytes(buffer): that would be a second copy of a 28 MB mail


def declared_size(envelope: Envelope | None) -> int:
    for option in (envelope.mail_options if envelope is not None else ()):
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return 0


class IntakeController(Controller):
    def factory(self) -> SMTP:
        return IntakeSMTP(self.handler, **self.SMTP_kwargs)


class Spooler:
    """Commits raw messages together with whatever else arrived meanwhile (store/committer.py):
    every sender in a group gets its 250 after that group's one commit."""

    def __init__(self, desk: Desk) -> None:
        self.committer = GroupCommitter(desk.open_db, "smtp-spool")

    async def store(self, raw: bytes, meta: dict[str, Any]) -> int:
        transport_id, now = f"smtp:{uuid.uuid4().hex}", utcnow()
        conversation = mail_conversation(raw, meta)
        return await self.committer.write(lambda db: spool.spool(db, "email", transport_id, raw, now, meta, conversation)[0], len(raw))

    def close(self) -> None:
        self.committer.close()


class IntakeHandler:
    def __init__(self, desk: Desk, wake: Callable[[], None], spooler: Spooler) -> None:
        self.desk = desk
        self.wake = wake
        self.spooler = spooler
        self.limit = desk.config["email.smtp_intake.max_message_bytes"]
        self.trusted_authserv_id = desk.config["email.trusted_authserv_id"]
        self.our_authserv_ids = authresults.our_authserv_ids(desk.addresses.ours(), desk.mail_domain)
        self.large_transfers = asyncio.Semaphore(LARGE_TRANSFERS)

    def accepts(self, address: str) -> bool:
        base, _ = split_plus(address.strip().lower())
        return base in self.desk.addresses.ours()

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]) -> str:
        if not self.accepts(address):
            return REPLY_UNKNOWN_RECIPIENT
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return REPLY_TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        try:
            raw = envelope.original_content or b""
            if len(raw) > self.limit:
                return REPLY_TOO_BIG
            raw, verdict = authresults.examine(raw, self.our_authserv_ids, self.trusted_authserv_id)
            meta = {
                "source": "smtp",
                "mail_from": envelope.mail_from or "",
                "rcpt_tos": list(envelope.rcpt_tos),
                "peer": peer_of(session),
                "helo": (session.host_name or "")[:200],
                "tls": session.ssl is not None,
                "authentication": verdict,
            }
            if session.authenticated:
                meta["auth_user"] = str(session.auth_data.login, "utf-8", "replace") if isinstance(session.auth_data, LoginPassword) else True
            inbound_id = await self.spooler.store(raw, meta)
        except Exception:
            # Ours to fix, never the sender's: a 4xx makes the sender keep the mail and retry.
            log.exception("could not store a message from %s; answered 451", peer_of(session))
            return REPLY_TRY_LATER
        log.info("stored inbound %s (%d bytes) from %s for %s", inbound_id, len(raw), peer_of(session), ", ".join(envelope.rcpt_tos))
        try:
            self.wake()
        except Exception:  # the worker also polls; a failed doorbell only delays processing
            log.exception("could not wake the worker")
        return REPLY_ACCEPTED


def peer_of(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def password_checker(username: str, password: str) -> Callable[..., AuthResult]:
    expected_user, expected_password = username.encode(), password.encode()

    def authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        good_user = hmac.compare_digest(auth_data.login, expected_user)
        good_password = hmac.compare_digest(auth_data.password, expected_password)
        if good_user and good_password:
            return AuthResult(success=True, auth_data=auth_data)
        # handled=False: aiosmtpd itself answers 535 (True would leave the client waiting).
        return AuthResult(success=False, handled=False)

    return authenticate


class Receiver:
    def __init__(self, controller: Controller, spooler: Spooler) -> None:
        self.controller = controller
        self.spooler = spooler

    @property
    def port(self) -> int:
        return self.controller.port

    def stop(self) -> None:
        self.controller.stop()
        self.spooler.close()


def start_receiver(desk: Desk, wake: Callable[[], None]) -> Receiver:
    """Listen on email.smtp_intake.host:port in a thread of its own; returns an object with stop()."""
    config = desk.config
    options: dict[str, Any] = {
        "data_size_limit": config["email.smtp_intake.max_message_bytes"],
        "enable_SMTPUTF8": True,
        "decode_data": False,  # keeps 8BITMIME on and the bytes exactly as sent
        "server_hostname": desk.mail_domain,
        "timeout": COMMAND_TIMEOUT,
    }
    if config["email.smtp_intake.tls_cert"]:
        cert = config.path("email.smtp_intake.tls_cert")
        key = config.path("email.smtp_intake.tls_key") if config["email.smtp_intake.tls_key"] else cert  # one PEM may hold both
        options["tls_context"] = tls_context(str(cert), str(key))
    if config["email.smtp_intake.auth_username"]:
        options["authenticator"] = password_checker(config["email.smtp_intake.auth_username"], config["email.smtp_intake.auth_password"])
        options["auth_required"] = True
        # Without TLS, AUTH in the clear is the operator's choice (a relay on a private link).
        options["auth_require_tls"] = "tls_context" in options
    if not log.isEnabledFor(logging.DEBUG):
        # aiosmtpd logs every command of every client at INFO (8 lines a mail, on the loop that
        # answers the clients); our own line per stored message is kept. --verbose shows them.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
    spooler = Spooler(desk)
    handler = IntakeHandler(desk, wake, spooler)
    controller = IntakeController(handler, hostname=config["email.smtp_intake.host"], port=config["email.smtp_intake.port"], **options)
    try:
        controller.start()
    except BaseException:
        spooler.close()
        raise
    return Receiver(controller, spooler)
