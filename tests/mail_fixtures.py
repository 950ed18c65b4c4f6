"""Mail test helpers: a recording relay, customer letters, SMTP sends, store queries.

Everything talks over real loopback sockets; nothing here replaces code of ours.
"""
from __future__ import annotations

import email
import email.policy
import json
import smtplib
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from conftest import base_settings, free_port, wait_for, write_config
from refunddesk.config import load
from refunddesk.desk import Desk
from refunddesk.store import cases as case_store
from serving import Served

REFUNDS = "refunds@desk.test"
APPEALS = "appeals@desk.test"
# A small PNG: a real signature and IHDR, so the type sniffer sees an image.
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000") + b"\x1f\x15\xc4\x89" + b"\x00" * 64 + bytes.fromhex("0000000049454e44ae426082")

# A self-signed certificate for 127.0.0.1/localhost, for STARTTLS tests only (valid to 2125).
TEST_CERT = """-----BEGIN CERTIFICATE-----
MIIDJzCCAg+gAwIBAgIUQ74GcG2MoQ3bIJug5z6jMwziWgYwDQYJKoZIhvcNAQEL
BQAwFDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyMjA1MzQwNVoYDzIxMjYx
MDI5MDUzNDA1WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwggEiMA0GCSqGSIb3DQEB
AQUAA4IBDwAwggEKAoIBAQDAvQvvXu16xs02c6aJA4Uef95p0KSHrAbi0q859EZ2
wj3o9FCfkNt0Rw1h7sPkoAVzraM9nLicYhD9ioa/BsA4Nvlxkn3pDDLkeI201CpR
4CCcB8Kx8MPEvSuZA5RJaXGQRd0T9RF3iO4Mm3ldlU5KcfOg3v0Kr/tOISwCbGmI
dx+nG3qEl2uP7eWM7VflKbL/QvsDcAVioX5uqbV8XBaNhhZWl0/xbWfP6P7YZ7Yh
jz7BdvVMIiwiwGrnqMK+eJImp33quiyH2HefzqR5ZOb7YbM6PzAlX2npWn6og3JG
iTIpjSsxBdCd970WHDeV6zotV+OXn09WGR70XbzESAHPAgMBAAGjbzBtMB0GA1Ud
DgQWBBRhuVbvyTJooLba/ihJgE/cfpM/eTAfBgNVHSMEGDAWgBRhuVbvyTJooLba
/ihJgE/cfpM/eTAPBgNVHRMBAf8EBTADAQH/MBoGA1UdEQQTMBGCCWxvY2FsaG9z
dIcEfwAAATANBgkqhkiG9w0BAQsFAAOCAQEAMe/TnCwrEVkocHVnhlUpxB4oytDp
e283gGO8PvfQPNWRW3RwUO0k/ApO5U90Hq5t5di3la7DB6YZJO20jVYLkYNkFxz5
0H/+ZdvQQf0MfRpecNhca7LVLNhdINR1GBZeCYlLrQErmxVxRaUfqjPX9q5dKc1C
eTgsruUagQPUQnkNFbOEJcfY4uN7anphj0QBOEpkQHZm6NfbgnLRxHqf9BxXRyJt
/UgYP3zoAm8OGwNc4p3MNrmt6DQnoQnmr6U+b9K7ZPmQzmOU4AW8WUO7k9tpghGA
m4/b25xKvemDeGl5C9k9Lxr25z8J5FZqrmIStsGqC0Fr+vyVIr9fj1hAMw==
-----END CERTIFICATE-----
"""
TEST_KEY = """-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDAvQvvXu16xs02
c6aJA4Uef95p0KSHrAbi0q859EZ2wj3o9FCfkNt0Rw1h7sPkoAVzraM9nLicYhD9
ioa/BsA4Nvlxkn3pDDLkeI201CpR4CCcB8Kx8MPEvSuZA5RJaXGQRd0T9RF3iO4M
m3ldlU5KcfOg3v0Kr/tOISwCbGmIdx+nG3qEl2uP7eWM7VflKbL/QvsDcAVioX5u
qbV8XBaNhhZWl0/xbWfP6P7YZ7Yhjz7BdvVMIiwiwGrnqMK+eJImp33quiyH2Hef
zqR5ZOb7YbM6PzAlX2npWn6og3JGiTIpjSsxBdCd970WHDeV6zotV+OXn09WGR70
XbzESAHPAgMBAAECggEAHHGp2b/jgeY7Rykb2jDxS+DTakABkAjfaUkY1WTgo0p4
8ttfgfT8ViAy8Dwu9Rt37SxNINzIp+zsafvaypqh8onhF+rmdxFhpLMf4qBvGxnd
u3kvuVf5ZEcGBfUab20cITkWQ97mdC16nX9dEru5S/ueLfnKqUbzFQLd6QD74B4c
Mon+druTioyzgBloPKtwAU2QKdjo+MvwYmoQVqDNQ1y0LSenPZGxFVWWFLNjYSOP
nzSBK8hRHv5NXlbI9PKaCStr8XTBIfcfeaX6mD0KenYaxLNRRURGV4eve+84a1YZ
o3+UVFWFfmYBy1VxyD+hldkZDL4T8deVWUTgxRVQEQKBgQDjSOshR5RxU2U5oJfM
BtLsNjKoEiSNkfsM4PuRDxYNJjWav4+gIBbnxLKSS+TZIfnlRTTi6zXLf5q6AeFD
GpH4EPztRRDxH5v4cCruhVnwfGzJHUdggf0ncD9eOXqf0q92XdSFk6k4ypqSkWwm
9GMEQ5QXVayLi8UfUQEB8uIa/wKBgQDZFsslUYzao2/6vR77MqeO+XEyEidUdfLy
QIsS0fTbILAssxh+InmMpYZHFFFq9AbqQLjw8hB2D1FRwJ4iMOkoE7+YhBSU/SD0
EZcLIwMfV2JJGdaJUVWXcCVG65qDe2A8B3kJ4U0+7tRagpclZ1s6KFGMf7tCdB59
3K2slVIpMQKBgQChTGiB77irTFH0OcJAqz8ZH8WHfYivZ8BQ/YHLCnfN0SYNspEN
RHi89tz78hxw9CnSyfCkceR1jROTmi3xX3PkJro48OD7HkGkaIYvTDft8X+Kotq6
5MVyLbjq98PMlMqtKB3gxlA7250jE007wAhdSFBa1xRi3EiC1wvuBB7upQKBgBYo
NmnDrg2uusIrxVq8K8/y87O5mJwNQdOp9Mfh+AzZhEG7sddF64QIbPEaSMkSyRXl
rzqgaj+yholCkKFKvrFhep+1c2hVgaSHmxP+6dWsFJMDeRsg2wyO3K8lYurij8rw
tFDm1vyCYdgvFgAyUWRZMyGU8+bvdSFBgdRolS8xAoGBAJ5MnJ3V89A/asGJhGhP
g2Z1X7N/FH1aF+r2oP57cXK5amMP4Om1rl/Lgg0trBNoArDREzL5VzXx5uipwzUO
uBtvEBnoj8ahHzewzCJ6JjgpCeLobS8V5IlSEKq8etRczBQOnCv/QWa+sTMnSfFQ
jcC9gcgg2BoT2XtALangr/aB
-----END PRIVATE KEY-----
"""


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    peer: tuple | None = None  # the client's address and port: one per SMTP connection
    mail_options: tuple[str, ...] = ()  # MAIL FROM's parameters (SMTPUTF8, SIZE=...)

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)


class RecordingHandler:
    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope) -> str:
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content, tuple(session.peer),
                                          tuple(envelope.mail_options)))
        return "250 2.0.0 OK"


def relay_on(port: int, handler: "RecordingHandler") -> Controller:
    """A relay with a handler of the test's own, started on `port` (stopped by the test)."""
    server = Controller(handler, hostname="127.0.0.1", port=port)
    server.start()
    return server


class Relay:
    """A second aiosmtpd standing in for the outgoing relay; it records what we send."""

    def __init__(self) -> None:
        self.handler = RecordingHandler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=True)

    def start(self) -> "Relay":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.messages)

    def to(self, address: str) -> list[EmailMessage]:
        return [m.message for m in self.messages if address.lower() in [r.lower() for r in m.rcpt_tos]]

    def wait_for(self, address: str, count: int = 1, timeout: float = 15) -> list[EmailMessage]:
        return wait_for(lambda: (lambda got: got if len(got) >= count else None)(self.to(address)), timeout, message=f"{count} letter(s) to {address}")


@pytest.fixture
def relay():
    server = Relay().start()
    yield server
    server.stop()


@pytest.fixture(scope="module", name="relay")
def module_relay():
    """The same, one for a whole module: import this for tests that share one served desk."""
    server = Relay().start()
    yield server
    server.stop()


def letter(
    sender: str,
    subject: str,
    text: str | None = None,
    *,
    to: str = REFUNDS,
    html: str | None = None,
    files: tuple[tuple[str, bytes, str], ...] = (),
    charset: str = "utf-8",
    headers: dict[str, str] | None = None,
    message_id: str | None = None,
) -> bytes:
    """A customer's mail as a mail client writes it."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(timezone.utc))
    msg["Message-ID"] = message_id or make_msgid(domain="customer.test")
    for name, value in (headers or {}).items():
        msg[name] = value
    if text is not None:
        msg.set_content(text, charset=charset)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    for filename, data, content_type in files:
        maintype, subtype = content_type.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=email.policy.SMTP)


def send(port: int, raw: bytes, mail_from: str, rcpt_tos: list[str] | str = REFUNDS, **options: Any) -> dict:
    """Deliver raw bytes with smtplib, as an MTA would; returns the refused recipients."""
    recipients = [rcpt_tos] if isinstance(rcpt_tos, str) else rcpt_tos
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        return client.sendmail(mail_from, recipients, raw, **options)


def mail_settings(tmp: Path, relay: Relay | None = None, **overrides: Any) -> dict[str, Any]:
    settings = base_settings(tmp)
    settings.update({
        "email.smtp_intake.enabled": True,
        "email.smtp_intake.port": free_port(),
        "email.auto_reply_limit": 5,
    })
    if relay is not None:
        settings["email.outgoing.host"] = "127.0.0.1"
        settings["email.outgoing.port"] = relay.port
    settings.update({k.replace("__", "."): v for k, v in overrides.items()})
    return settings


def desk_from(tmp: Path, settings: dict[str, Any]) -> tuple[Desk, Path]:
    path = write_config(tmp / "refunddesk.toml", settings)
    return Desk.from_config(load(path, environ={})), path


class MailDesk:
    """The real `refunddesk serve` with SMTP intake, plus read access to its store."""

    def __init__(self, tmp: Path, settings: dict[str, Any]) -> None:
        self.desk, self.config = desk_from(tmp, settings)
        self.smtp_port = settings["email.smtp_intake.port"]
        self.served = Served(self.config, tmp / "serve.log")
        self.db = self.desk.open_db()

    def start(self, **options: Any) -> "MailDesk":
        ports = (self.smtp_port,) if self.desk.config.email.smtp_intake.enabled else ()
        self.served.start(wait_ports=ports, **options)
        return self

    def stop(self) -> None:
        code = self.served.stop()
        self.db.conn.close()
        assert code == 0, f"serve exited with {code}:\n{self.served.output()[-3000:]}"

    def send(self, raw: bytes, mail_from: str, rcpt_tos: list[str] | str = REFUNDS, **options: Any) -> dict:
        return send(self.smtp_port, raw, mail_from, rcpt_tos, **options)

    # --- the store, as agents see it ----------------------------------------------------------

    def inbound(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT id, transport_id, status, case_id, error, dedup_key, meta FROM inbound ORDER BY id"))

    def settled(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        """Wait until `count` spooled messages are processed (none pending); returns them."""
        def done():
            rows = self.inbound()
            return rows if len(rows) >= count and all(r["status"] != "pending" for r in rows) else None

        try:
            return wait_for(done, timeout, message=f"{count} processed inbound messages")
        except AssertionError:
            raise AssertionError(f"inbound: {self.inbound()}\n{self.served.output()[-3000:]}")

    def cases_of(self, contact: str) -> list:
        return case_store.cases_of_contact(self.db, contact.lower())

    def case(self, case_id: str):
        return case_store.load_case(self.db, case_id)

    def outbox(self, recipient: str | None = None) -> list[dict[str, Any]]:
        if recipient is None:
            return list(self.db.query("SELECT * FROM outbox ORDER BY id"))
        return list(self.db.query("SELECT * FROM outbox WHERE recipient = ? ORDER BY id", [recipient.lower()]))

    def events(self, case_id: str) -> list[dict[str, Any]]:
        rows = list(self.db.query("SELECT action, data FROM events WHERE case_id = ? ORDER BY id", [case_id]))
        return [{"action": r["action"], "data": json.loads(r["data"])} for r in rows]

    def messages(self, case_id: str) -> list[dict[str, Any]]:
        return case_store.messages_of(self.db, case_id)


class Wire:
    """A raw SMTP conversation: bytes exactly as we write them, every reply line as it comes."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.stream = self.sock.makefile("rb")
        self.reply()  # greeting

    def write(self, data: bytes) -> None:
        """Bytes on the wire, no reply awaited (one segment each, as far as TCP keeps them)."""
        self.sock.sendall(data)

    def say(self, data: bytes) -> bytes:
        self.write(data)
        return self.reply()

    def reply(self) -> bytes:
        line = self.stream.readline()
        while line[3:4] == b"-":
            line = self.stream.readline()
        return line

    def rest(self) -> list[bytes]:
        """Every reply line until the server closes the connection."""
        lines = []
        while True:
            line = self.stream.readline()
            if not line:
                return lines
            lines.append(line)

    def open_data(self, sender: str) -> None:
        assert self.say(b"EHLO client.test\r\n").startswith(b"250")
        assert self.say(f"MAIL FROM:<{sender}>\r\n".encode()).startswith(b"250")
        assert self.say(f"RCPT TO:<{REFUNDS}>\r\n".encode()).startswith(b"250")
        assert self.say(b"DATA\r\n").startswith(b"354")

    def close(self) -> None:
        self.stream.close()
        self.sock.close()
