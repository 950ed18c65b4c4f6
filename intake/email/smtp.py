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
from collections.abc import Callable
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from refunddesk.desk import Desk
from refunddesk.store import spool
from refunddesk.store.clock import utcnow
from refunddesk.store.committer import GroupCommitter

from . import authresults
from .body import MailRejected
from .parse import MAX_HEADER_BYTES, check_structure, mail_conversation, split_plus
from .receiving import MIN_RATE, Connections, NotStored, ReceiveBudget, Received, Spliced, TooSlow, read_data

log = logging.getLogger("refunddesk.smtp")
MAX_RECIPIENTS = 50
COMMAND_TIMEOUT = 120  # seconds a client may stay silent mid-conversation
LINE_LIMIT = 65_536  # real mail breaks RFC 5321's 1000; refusing it would lose customers' mail
REPLY_ACCEPTED = "250 2.0.0 Message accepted"
REPLY_UNKNOWN_RECIPIENT = "550 5.1.1 Recipient address rejected: no such mailbox here"
REPLY_TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
REPLY_TOO_BIG = "552 5.3.4 Message size exceeds fixed limit"
REPLY_TRY_LATER = "451 4.3.0 Temporary failure, please try again later"
REPLY_BUSY = "451 4.3.2 Too many large messages at once, please try again later"
REPLY_GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"
REPLY_TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, please try again later"
REPLY_TOO_SLOW = "451 4.4.2 Transfer too slow, please try again later"
REPLY_REFUSED_STRUCTURE = "554 5.6.0 Message refused: {reason}"
HEAD_BYTES = MAX_HEADER_BYTES + 4096  # read from a spilled message: its header block and the blank line


class IntakeEnvelope(Envelope):
    """aiosmtpd's envelope with the message as received (its content fields hold bytes, and
    stay unset: the message may be on disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.received: Received | None = None


class IntakeSMTP(SMTP):
    """aiosmtpd's SMTP with the message text read in pieces into one buffer.

    aiosmtpd reads DATA one line at a time (a Python round of its loop per 76-byte line of
    base64) and keeps the lines as a list until the end (~3 times the message's size). During
    a burst of 20 KB mails that reading was most of the receiver's time (py-spy), and a 28 MB
    mail took ~85 MB. Here the stream is read up to each ".<CR><LF>" (a few reads per
    message) and the replies, limits and hooks are aiosmtpd's own."""

    line_length_limit = LINE_LIMIT

    def _create_envelope(self) -> IntakeEnvelope:
        return IntakeEnvelope()

    async def _handle_client(self) -> None:
        """Past the receiver's caps on connections (in all, and per client address), a client
        is told 421 and closed before anything else: its MTA tries again later."""
        connections: Connections = self.event_handler.connections
        assert self.session is not None  # connection_made sets it before it runs this, for good
        client = peer_of(self.session)
        if not connections.admit(client):
            log.warning(
                "refused a connection from %s: too many connections (email.smtp_intake.max_connections%s)",
                client,
                "_per_client" if connections.count < connections.total else "",
            )
            await self.push(REPLY_TOO_MANY_CONNECTIONS)
            if self.transport is not None:  # None once the connection is lost
                self.transport.close()
            return
        try:
            await super()._handle_client()
        finally:
            connections.leave(client)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope, session = self.envelope, self.session
        # Both set for good by connection_made, the envelope by our _create_envelope.
        assert isinstance(envelope, IntakeEnvelope) and session is not None
        if not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push(REPLY_GO_AHEAD)
        handler = self.event_handler
        limit = self.data_size_limit
        assert limit is not None  # start_receiver sets it (email.smtp_intake.max_message_bytes)
        try:
            received = await read_data(self._reader, limit, handler.budget, handler.spill_dir, self._reset_timeout)
        except NotStored as exc:
            log.error("could not keep a message from %s while it arrived (%s); answered 451", peer_of(session), exc)
            self._set_post_data_state()
            await self.push(REPLY_TRY_LATER)
            return
        except TooSlow as exc:
            log.warning("cut a transfer from %s that fell under %d bytes/s (%s)", peer_of(session), MIN_RATE, exc)
            await self.push(REPLY_TOO_SLOW)
            if self.transport is not None:  # None once the connection is lost
                self.transport.close()
            return
        except asyncio.CancelledError:
            log.info("connection lost during DATA")
            self._writer.close()
            raise
        if received is None:
            await self.push(REPLY_TOO_BIG)  # the answer IntakeHandler.handle_DATA gives over the limit
            self._set_post_data_state()
            return
        envelope.received = received
        try:
            status = await self._call_handler_hook("DATA")
        finally:
            received.close()
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)


class IntakeController(Controller):
    def factory(self) -> SMTP:
        return IntakeSMTP(self.handler, **self.SMTP_kwargs)


class Spooler:
    """Commits raw messages together with whatever else arrived meanwhile (store/committer.py):
    every sender in a group gets its 250 after that group's one commit."""

    def __init__(self, desk: Desk) -> None:
        self.committer = GroupCommitter(desk.open_db, "smtp-spool")

    async def store(self, raw: bytes | Spliced, meta: dict[str, Any]) -> int:
        transport_id, now = f"smtp:{uuid.uuid4().hex}", utcnow()
        conversation = mail_conversation(raw if isinstance(raw, bytes) else raw.start, meta)
        size = len(raw) if isinstance(raw, bytes) else raw.size
        return await self.committer.write(
            lambda db: spool.spool(db, "email", transport_id, raw, now, meta, conversation)[0], size
        )

    def close(self) -> None:
        self.committer.close()


class IntakeHandler:
    def __init__(self, desk: Desk, wake: Callable[[], None], spooler: Spooler) -> None:
        self.desk = desk
        self.wake = wake
        self.spooler = spooler
        self.limit = desk.config.email.smtp_intake.max_message_bytes
        self.trusted_authserv_id = desk.config.email.trusted_authserv_id
        self.our_authserv_ids = authresults.our_authserv_ids(desk.addresses.ours(), desk.mail_domain)
        intake = desk.config.email.smtp_intake
        self.budget = ReceiveBudget(intake.buffer_bytes)
        self.connections = Connections(intake.max_connections, intake.max_connections_per_client)
        self.spill_dir = desk.db_path.parent / "incoming"  # unnamed files of transfers past 1 MiB

    def accepts(self, address: str) -> bool:
        base, _ = split_plus(address.strip().lower())
        return base in self.desk.addresses.ours()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if not self.accepts(address):
            return REPLY_UNKNOWN_RECIPIENT
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return REPLY_TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: IntakeEnvelope) -> str:
        try:
            received = envelope.received
            assert received is not None  # IntakeSMTP.smtp_DATA set it before this hook
            if received.size > self.limit:
                return REPLY_TOO_BIG
            spilled = received.spill is not None
            start = received.start(HEAD_BYTES) if spilled else bytes(received.head)
            try:
                # Refused now, in the DATA reply, so the sender's MTA bounces with the reason
                # (over IMAP, where nothing can be refused, the worker answers with a notice).
                check_structure(start)
            except MailRejected as exc:
                log.warning("refused a message from %s in its DATA reply: %s", peer_of(session), exc)
                return REPLY_REFUSED_STRUCTURE.format(reason=exc)
            cleaned, verdict = authresults.examine(start, self.our_authserv_ids, self.trusted_authserv_id)
            raw: bytes | Spliced = Spliced(cleaned, received, len(start)) if spilled else cleaned
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
                meta["auth_user"] = (
                    str(session.auth_data.login, "utf-8", "replace")
                    if isinstance(session.auth_data, LoginPassword)
                    else True
                )
            inbound_id = await self.spooler.store(raw, meta)
        except Exception:
            # Ours to fix, never the sender's: a 4xx makes the sender keep the mail and retry.
            log.exception("could not store a message from %s; answered 451", peer_of(session))
            return REPLY_TRY_LATER
        log.info(
            "stored inbound %s (%d bytes) from %s for %s",
            inbound_id,
            received.size,
            peer_of(session),
            ", ".join(envelope.rcpt_tos),
        )
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
        "data_size_limit": config.email.smtp_intake.max_message_bytes,
        "enable_SMTPUTF8": True,
        "decode_data": False,  # keeps 8BITMIME on and the bytes exactly as sent
        "server_hostname": desk.mail_domain,
        "timeout": COMMAND_TIMEOUT,
    }
    intake = config.email.smtp_intake
    if intake.tls_cert:
        key = intake.tls_key or intake.tls_cert  # one PEM may hold both
        options["tls_context"] = tls_context(str(intake.tls_cert), str(key))
    if intake.auth_username:
        options["authenticator"] = password_checker(intake.auth_username, intake.auth_password)
        options["auth_required"] = True
        # Without TLS, AUTH in the clear is the operator's choice (a relay on a private link).
        options["auth_require_tls"] = "tls_context" in options
    if not log.isEnabledFor(logging.DEBUG):
        # aiosmtpd logs every command of every client at INFO (8 lines a mail, on the loop that
        # answers the clients); our own line per stored message is kept. --verbose shows them.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
    spooler = Spooler(desk)
    handler = IntakeHandler(desk, wake, spooler)
    controller = IntakeController(handler, hostname=intake.host, port=intake.port, **options)
    try:
        controller.start()
    except BaseException:
        spooler.close()
        raise
    return Receiver(controller, spooler)
