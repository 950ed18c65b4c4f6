"""The email sender against real relays: what our letters carry, and how failures are retried.

Rows go through the outbox and `deliver_due`, exactly as `serve` sends them.
"""
from __future__ import annotations

import asyncio
import email
import email.policy
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller

from conftest import free_port
from mail_fixtures import REFUNDS, RecordingHandler, desk_from, mail_settings, relay, relay_on  # noqa: F401 (fixture)
from refunddesk.outbound.delivery import deliver_due
from refunddesk.outbound.email_sender import EmailSender
from refunddesk.store import outbox
from refunddesk.store.clock import utcnow
from refunddesk.store.db import transaction


class PickyHandler(RecordingHandler):
    """A relay that knows some recipients are gone for good and some only for now."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("gone@"):
            return "550 5.1.1 No such user"
        if address.startswith("later@"):
            return "451 4.2.0 Mailbox busy"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def store(tmp_path):
    def open_(settings_relay=None, **overrides):
        desk, _ = desk_from(tmp_path, mail_settings(tmp_path, settings_relay, **overrides))
        db = desk.open_db()
        outgoing = desk.config.email.outgoing
        sender = EmailSender(outgoing, desk.addresses.refunds, outgoing.folder, "302.AI Support")
        return desk, db, sender

    return open_


def enqueue(db, recipient: str, *, subject: str = "[RF-000001] We received your refund request", kind: str = "ack", headers: dict | None = None) -> int:
    with transaction(db):
        return outbox.enqueue(
            db, case_id=None, channel="email", recipient=recipient, kind=kind, template="ack", language="en",
            subject=subject, body="Hello,\nwe received your request.\n", now=utcnow(),
            headers=headers or {"Message-ID": "<ours-1@desk.test>", "From": REFUNDS, "Reply-To": "refunds+RF-000001@desk.test",
                                "In-Reply-To": "<theirs@customer.test>", "References": "<first@customer.test> <theirs@customer.test>"},
        )


def row(db, outbox_id: int) -> dict:
    return db["outbox"].get(outbox_id)


def test_an_automatic_reply_carries_threading_and_rfc3834_headers_and_nothing_else_of_theirs(store, relay):  # noqa: F811
    desk, db, sender = store(relay)
    enqueue(db, "wei@customer.test", subject="[RF-000001] Re: refund\r\nBcc: victim@x.test")
    assert asyncio.run(deliver_due(db, sender)) == 1
    (received,) = relay.messages
    assert received.mail_from == REFUNDS and received.rcpt_tos == ["wei@customer.test"]
    msg = received.message
    assert msg["From"].addresses[0].display_name == "302.AI Support" and msg["From"].addresses[0].addr_spec == REFUNDS and msg["To"] == "wei@customer.test"
    assert msg["Subject"] == "[RF-000001] Re: refund Bcc: victim@x.test" and msg["Bcc"] is None
    assert msg["Auto-Submitted"] == "auto-replied" and msg["X-Loop"] == REFUNDS
    assert msg["In-Reply-To"] == "<theirs@customer.test>" and msg["References"] == "<first@customer.test> <theirs@customer.test>"
    assert msg["Reply-To"] == "refunds+RF-000001@desk.test" and msg["Message-ID"] == "<ours-1@desk.test>"
    assert msg["Content-Language"] == "en" and msg.get_content().startswith("Hello,")


def test_a_decision_letter_is_not_marked_automatic(store, relay):  # noqa: F811
    desk, db, sender = store(relay)
    enqueue(db, "wei@customer.test", kind="decision")
    asyncio.run(deliver_due(db, sender))
    assert relay.messages[0].message["Auto-Submitted"] is None


def test_a_recipient_that_is_not_one_plain_address_fails_for_good_and_sends_nothing(store, relay):  # noqa: F811
    desk, db, sender = store(relay)
    bad = enqueue(db, "wei@customer.test\r\nBcc: all@x.test")
    asyncio.run(deliver_due(db, sender))
    assert row(db, bad)["status"] == "failed" and relay.messages == []


def test_gone_recipients_fail_for_good_busy_ones_and_a_dead_relay_are_retried(store):
    handler = PickyHandler()
    port = free_port()
    server = Controller(handler, hostname="127.0.0.1", port=port)
    desk, db, sender = store(None, **{"email.outgoing.host": "127.0.0.1", "email.outgoing.port": port})
    gone, later, fine = enqueue(db, "gone@customer.test"), enqueue(db, "later@customer.test"), enqueue(db, "fine@customer.test")
    # The relay is down: everything waits, nothing is lost.
    assert asyncio.run(deliver_due(db, sender)) == 0
    assert {row(db, i)["status"] for i in (gone, later, fine)} == {"pending"}
    assert all("relay unreachable" in row(db, i)["last_error"] for i in (gone, later, fine))
    server.start()
    try:
        assert asyncio.run(deliver_due(db, sender)) == 0  # not due yet: back-off holds
        assert asyncio.run(deliver_due(db, sender, now=utcnow() + timedelta(minutes=1))) == 1
        assert row(db, fine)["status"] == "sent"
        assert row(db, gone)["status"] == "failed" and "550" in row(db, gone)["last_error"]
        assert row(db, later)["status"] == "pending" and "451" in row(db, later)["last_error"]
        assert asyncio.run(deliver_due(db, sender, now=utcnow() + timedelta(hours=1))) == 0
        assert [m.rcpt_tos for m in handler.messages] == [["fine@customer.test"]]  # exactly once
    finally:
        server.stop()


def test_without_a_relay_letters_are_written_as_eml_files(store, tmp_path):
    desk, db, sender = store(None)
    first = enqueue(db, "wei@customer.test")
    asyncio.run(deliver_due(db, sender))
    files = sorted((tmp_path / "outgoing").iterdir())
    assert [f.name for f in files] == [f"outbox-{first:08d}.eml"]
    msg = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert msg["To"] == "wei@customer.test" and msg["Auto-Submitted"] == "auto-replied"
    assert row(db, first)["status"] == "sent"


class SlowHandler(RecordingHandler):
    """A relay that takes its time over each letter and notes how many it holds at once."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = 0
        self.most_at_once = 0

    async def handle_DATA(self, server, session, envelope):
        self.holding += 1
        self.most_at_once = max(self.most_at_once, self.holding)
        try:
            await asyncio.sleep(0.1)
            return await super().handle_DATA(server, session, envelope)
        finally:
            self.holding -= 1


def test_letters_to_different_people_go_out_together_and_one_persons_in_order(store):
    handler = SlowHandler()
    port = free_port()
    server = Controller(handler, hostname="127.0.0.1", port=port)
    desk, db, sender = store(None, **{"email.outgoing.host": "127.0.0.1", "email.outgoing.port": port})
    mine = [enqueue(db, "ada@customer.test", subject=f"[RF-000001] letter {n}") for n in range(3)]
    others = [enqueue(db, f"person{n}@customer.test") for n in range(12)]
    server.start()
    try:
        assert asyncio.run(deliver_due(db, sender)) == 15
    finally:
        server.stop()
    assert all(row(db, i)["status"] == "sent" for i in mine + others)
    subjects = [m.message["Subject"] for m in handler.messages if m.rcpt_tos == ["ada@customer.test"]]
    assert subjects == [f"[RF-000001] letter {n}" for n in range(3)]  # one person's letters in order
    # Several recipients at once (the window opens with each success), never more than its limit.
    assert 2 < handler.most_at_once <= 8, handler.most_at_once


def test_letters_share_a_few_smtp_sessions_which_are_closed_when_idle(store):
    handler = RecordingHandler()
    port = free_port()
    server = relay_on(port, handler)
    desk, db, sender = store(None, **{"email.outgoing.host": "127.0.0.1", "email.outgoing.port": port})
    letters = [enqueue(db, f"person{n}@customer.test") for n in range(30)]

    async def burst() -> tuple[int, int, int]:
        sent = await deliver_due(db, sender)
        open_after_burst = len(sender.idle)
        await sender.close_idle(0)
        return sent, open_after_burst, len(sender.idle)

    try:
        sent, open_after_burst, open_after_rest = asyncio.run(burst())
    finally:
        server.stop()
    assert sent == 30 and all(row(db, i)["status"] == "sent" for i in letters)
    assert sorted(m.rcpt_tos[0] for m in handler.messages) == sorted(f"person{n}@customer.test" for n in range(30))
    sessions = {m.peer for m in handler.messages}
    assert 1 <= len(sessions) <= 8, sessions  # at most one per delivery in flight, not one per letter
    assert open_after_burst == len(sessions) and open_after_rest == 0


@pytest.mark.parametrize("probe", [True, False], ids=["idle session probed", "fresh session reused"])
def test_a_session_the_relay_dropped_costs_no_letter_and_sends_none_twice(store, probe):
    first_relay, second_relay = RecordingHandler(), RecordingHandler()
    port = free_port()
    server = relay_on(port, first_relay)
    desk, db, sender = store(None, **{"email.outgoing.host": "127.0.0.1", "email.outgoing.port": port})
    if probe:
        sender.SESSION_IDLE = 0  # every reused session is asked NOOP first

    async def scenario():
        nonlocal server
        enqueue(db, "first@customer.test")
        assert await deliver_due(db, sender) == 1 and len(sender.idle) == 1
        server.stop()  # the relay restarts: our open session is dead
        server = relay_on(port, second_relay)
        second = enqueue(db, "second@customer.test")
        sent_now = await deliver_due(db, sender)
        if probe:
            assert sent_now == 1  # the NOOP found it dead: a new session at once
        elif sent_now == 0:  # found dead while sending: a temporary failure, retried on a new session
            assert "relay unreachable" in row(db, second)["last_error"]
            sent_now = await deliver_due(db, sender, now=utcnow() + timedelta(minutes=1))
        await sender.close()
        return second, sent_now

    try:
        second, sent_now = asyncio.run(scenario())
    finally:
        server.stop()
    assert sent_now == 1 and row(db, second)["status"] == "sent"
    assert [m.rcpt_tos for m in first_relay.messages] == [["first@customer.test"]]
    assert [m.rcpt_tos for m in second_relay.messages] == [["second@customer.test"]]


def test_a_refused_recipient_closes_its_session_and_the_next_letter_opens_another(store):
    handler = PickyHandler()
    port = free_port()
    server = relay_on(port, handler)
    desk, db, sender = store(None, **{"email.outgoing.host": "127.0.0.1", "email.outgoing.port": port})

    async def one_by_one():
        results = []
        for recipient in ("fine@customer.test", "gone@customer.test", "fine2@customer.test"):
            enqueue(db, recipient)
            results.append(await deliver_due(db, sender))
        await sender.close()
        return results

    try:
        results = asyncio.run(one_by_one())
    finally:
        server.stop()
    assert results == [1, 0, 1]
    first, last = handler.messages
    assert first.rcpt_tos == ["fine@customer.test"] and last.rcpt_tos == ["fine2@customer.test"]
    assert first.peer != last.peer  # the session that saw the 550 was not reused
