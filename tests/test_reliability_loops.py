"""Issue 6 item 7: robots answering robots. Two real `refunddesk serve` instances whose letters
reach each other, and a customer's vacation responder: the exchange stops by itself. A robot
that marks its mail (RFC 3834) gets exactly one automatic reply from us; one whose marks are
lost gets at most `email.auto_reply_limit` in the cap window (exactly one with a limit of 1).

The "hops" are MTAs on loopback: each takes a desk's outgoing letter and hands it to the other
desk's SMTP intake. One kind passes letters on untouched (RFC 3834's Auto-Submitted is what
stops the loop); the other drops the loop-guard headers on the way, as some gateways and list
servers do (then the per-sender cap is what stops it). The vacation responders reply to every
letter, one marking its replies as RFC 3834 asks and one marking nothing at all.
"""
from __future__ import annotations

import email
import email.policy
import json
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller

from conftest import free_port, wait_for
from mail_fixtures import MailDesk, letter, mail_settings

LOOP_GUARDS = {b"auto-submitted", b"x-auto-response-suppress", b"x-loop", b"precedence"}
REQUEST = "My chat call froze and gave no result, but credit was deducted."


def strip_fields(raw: bytes, names: set[bytes]) -> bytes:
    head, separator, body = raw.partition(b"\r\n\r\n")
    kept: list[bytes] = []
    dropping = False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line.split(b":", 1)[0].strip().lower() in names
        if not dropping:
            kept.append(line)
    return b"\r\n".join(kept) + separator + body


class Hop:
    """An MTA between two desks. It answers our sender only after the next hop accepted the
    letter, so "sent" in one store means "spooled" in the other."""

    def __init__(self, strip: bool) -> None:
        self.strip = strip
        self.target = 0
        self.passed: list[bytes] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope) -> str:
        raw = envelope.original_content
        if self.strip:
            raw = strip_fields(raw, LOOP_GUARDS)
        try:
            await aiosmtplib.send(raw, sender=envelope.mail_from, recipients=envelope.rcpt_tos, hostname="127.0.0.1", port=self.target, timeout=30)
        except aiosmtplib.SMTPResponseException as exc:
            return f"{exc.code} {exc.message}"
        except (aiosmtplib.SMTPException, OSError):
            return "451 4.4.1 next hop unreachable"
        self.passed.append(raw)
        return "250 2.0.0 passed on"


class Vacation:
    """The customer's mail server with a vacation responder that answers every letter."""

    def __init__(self, customer: str, marked: bool) -> None:
        self.customer = customer
        self.marked = marked
        self.desk_port = 0
        self.received: list[EmailMessage] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope) -> str:
        ours = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        self.received.append(ours)
        reply = EmailMessage()
        reply["From"] = self.customer
        reply["To"] = envelope.mail_from
        reply["Message-ID"] = make_msgid(domain="customer.test")
        reply["In-Reply-To"] = ours["Message-ID"]
        reply["References"] = ours["Message-ID"]
        if self.marked:
            reply["Subject"] = f"Automatic reply: {ours['Subject']}"
            reply["Auto-Submitted"] = "auto-replied"
        else:
            reply["Subject"] = f"Re: {ours['Subject']}"  # no mark at all: the worst responders
        reply.set_content("I am away until Monday with limited access to email.")
        await aiosmtplib.send(reply, sender=self.customer, recipients=[envelope.mail_from], hostname="127.0.0.1", port=self.desk_port, timeout=30)
        return "250 2.0.0 OK"


def desk_settings(tmp: Path, domain: str, relay_port: int, limit: int) -> dict:
    tmp.mkdir()
    return mail_settings(tmp, **{
        "email.refunds_address": f"refunds@{domain}",
        "email.appeals_address": f"appeals@{domain}",
        "email.outgoing.host": "127.0.0.1",
        "email.outgoing.port": relay_port,
        "email.auto_reply_limit": limit,
        "email.auto_reply_window_minutes": 60,
    })


def snapshot(desk: MailDesk) -> tuple:
    inbound = tuple(r[0] for r in desk.db.execute("SELECT status FROM inbound ORDER BY id"))
    outbox = tuple(r[0] for r in desk.db.execute("SELECT status FROM outbox ORDER BY id"))
    return inbound, outbox


def quiet(*desks: MailDesk):
    """Every desk has processed and sent (or held back) everything, twice in a row alike."""
    first = [snapshot(d) for d in desks]
    busy = any("pending" in inbound or "pending" in outbox for inbound, outbox in first)
    return not busy and [snapshot(d) for d in desks] == first


def automatic_sent(desk: MailDesk, recipient: str) -> list[dict]:
    return [r for r in desk.outbox(recipient) if r["status"] == "sent" and r["kind"] in ("ack", "dialog", "notice")]


@pytest.mark.parametrize(("hops", "limit"), [("pass headers on", 5), ("drop loop guards", 1), ("drop loop guards", 5)])
def test_two_desks_answering_each_other_stop_within_the_per_sender_cap(tmp_path, hops, limit):
    strip = hops == "drop loop guards"
    a_to_b, b_to_a = Hop(strip), Hop(strip)
    desk_a = MailDesk(tmp_path / "a", desk_settings(tmp_path / "a", "a.test", a_to_b.port, limit))
    desk_b = MailDesk(tmp_path / "b", desk_settings(tmp_path / "b", "b.test", b_to_a.port, limit))
    a_to_b.target, b_to_a.target = desk_b.smtp_port, desk_a.smtp_port
    a_to_b.controller.start()
    b_to_a.controller.start()
    try:
        desk_a.start()
        desk_b.start()
        # Someone writes to desk A in desk B's name: A's acknowledgement goes to desk B.
        desk_a.send(letter("refunds@b.test", "Refund", REQUEST, to="refunds@a.test"), "refunds@b.test", "refunds@a.test")
        wait_for(lambda: len(a_to_b.passed) >= 1, timeout=20, message="desk A's acknowledgement reaching desk B")
        wait_for(lambda: quiet(desk_a, desk_b), timeout=30, message="both desks quiet")
        to_b, to_a = automatic_sent(desk_a, "refunds@b.test"), automatic_sent(desk_b, "refunds@a.test")
        assert (len(a_to_b.passed), len(b_to_a.passed)) == (len(to_b), len(to_a))
        held_a = [r for r in desk_a.outbox("refunds@b.test") if r["status"] == "suppressed"]
        held_b = [r for r in desk_b.outbox("refunds@a.test") if r["status"] == "suppressed"]
        if strip:
            # Nothing marks the letters as automatic any more: the per-sender cap ends the
            # exchange, after `limit` automatic replies each way in the window.
            assert (len(to_b), len(to_a)) == (limit, limit)
            assert [r["last_error"] for r in held_a] == ["not sent: per-sender automatic reply limit reached"]
        else:
            assert (len(to_b), len(to_a)) == (1, 0)
            assert [r["last_error"] for r in held_b] == ["not sent: Auto-Submitted: auto-replied"]
        print(f"\ntwo desks ({hops}): A->B {len(a_to_b.passed)}, B->A {len(b_to_a.passed)}; held back A {len(held_a)}, B {len(held_b)}")
    finally:
        for desk in (desk_a, desk_b):
            if desk.served.process is not None:
                desk.stop()
        a_to_b.controller.stop()
        b_to_a.controller.stop()


@pytest.mark.parametrize(("responder", "limit", "reason"), [
    ("marks its replies (RFC 3834)", 5, "not sent: Auto-Submitted: auto-replied"),
    ("marks nothing", 1, "not sent: per-sender automatic reply limit reached"),
])
def test_a_vacation_responder_gets_one_automatic_reply_and_the_exchange_stops(tmp_path, responder, limit, reason):
    customer = "away@customer.test"
    vacation = Vacation(customer, marked=responder.startswith("marks its"))
    desk = MailDesk(tmp_path / "desk", desk_settings(tmp_path / "desk", "desk.test", vacation.port, limit))
    vacation.desk_port = desk.smtp_port
    vacation.controller.start()
    try:
        desk.start()
        desk.send(letter(customer, "Refund", REQUEST), customer)
        wait_for(lambda: vacation.received, timeout=20, message="our acknowledgement")
        wait_for(lambda: len(desk.inbound()) == 2 and quiet(desk), timeout=30, message="the vacation reply processed")
        assert len(vacation.received) == 1 and vacation.received[0]["Auto-Submitted"] == "auto-replied"
        rows = desk.outbox(customer)
        assert [r["status"] for r in rows] == ["sent", "suppressed"] and rows[1]["last_error"] == reason
        (case,) = desk.cases_of(customer)  # the vacation reply is kept on the customer's case
        assert [m["direction"] for m in desk.messages(case.id)].count("in") == 2
        assert all(json.loads(r["meta"])["source"] == "smtp" for r in desk.inbound())
    finally:
        if desk.served.process is not None:
            desk.stop()
        vacation.controller.stop()
