"""Delivered letters are recorded a few at a time, not only when the whole pass is over:
a worker killed while one delivery hangs must not send every letter of that pass again."""
from __future__ import annotations

import asyncio
import threading

from conftest import wait_for
from refunddesk.outbound.delivery import RECORD_EVERY, deliver_due
from refunddesk.store import outbox
from refunddesk.store.clock import utcnow
from refunddesk.store.db import transaction


class HangingTransport:
    """A channel whose peer accepts every letter at once, except those to one recipient,
    which it holds until told to go on (a relay that stopped answering)."""

    channel = "email"

    def __init__(self, stuck: str) -> None:
        self.stuck = stuck
        self.release = threading.Event()
        self.accepted: list[str] = []

    async def deliver(self, row):
        if row["recipient"] == self.stuck:
            await asyncio.to_thread(self.release.wait, 30)
        self.accepted.append(row["recipient"])


def test_letters_delivered_while_one_hangs_are_recorded_before_the_pass_ends(make_desk):
    desk = make_desk()
    db = desk.open_db()
    # The stuck one last: the sender's window opens one success at a time (intake/delivery.Window).
    recipients = [f"c{n}@customer.test" for n in range(2 * RECORD_EVERY)] + ["stuck@customer.test"]
    with transaction(db):
        for recipient in recipients:
            outbox.enqueue(db, case_id=None, channel="email", recipient=recipient, kind="notice", template="help", language="en", subject="s", body="b", now=utcnow())
    transport = HangingTransport("stuck@customer.test")
    passing = threading.Thread(target=lambda: asyncio.run(deliver_due(desk.open_db(), transport)))
    passing.start()
    try:
        reader = desk.open_db()
        sent = lambda: reader.execute("SELECT count(*) FROM outbox WHERE status = 'sent'").fetchone()[0]  # noqa: E731
        # Every letter but the stuck one went out, and is recorded while that one still hangs.
        wait_for(lambda: len(transport.accepted) == len(recipients) - 1, 20, message="the other letters")
        wait_for(lambda: sent() == 2 * RECORD_EVERY, 20, message="their records, while one delivery hangs")
        assert reader.execute("SELECT status FROM outbox WHERE recipient = 'stuck@customer.test'").fetchone()[0] == "pending"
    finally:
        transport.release.set()
        passing.join(30)
    assert sent() == len(recipients)
