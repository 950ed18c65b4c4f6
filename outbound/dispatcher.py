"""The senders of `serve`: every enabled channel's outbox delivered, in the worker's process.

They used to share the channels' process. Profiled during an SMTP burst (py-spy, 3,000
mails), composing each letter, its SMTP dialogue with the relay and recording the delivery
took ~15 % of that process, beside ~24 % for the receiver itself: the interpreter that
answers the customers' SMTP clients was also talking to the relay. Next to the worker,
sending competes only with processing, and a letter the worker has just written is rung
for within the process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable

from refunddesk.desk import Desk
from refunddesk.outbound.delivery import Sender, deliver_due
from refunddesk.store.clock import utcnow
from refunddesk.store.outbox import next_due_at

log = logging.getLogger("refunddesk.outbound")
IDLE_WAIT = 1.0  # rows written by other processes (an agent's CLI) are found at this pace
STOP_TIMEOUT = 30
Closer = Callable[[], Awaitable[None]]


class Outbound:
    """The send loop in a thread of its own, with its own event loop."""

    def __init__(self, desk: Desk, open_senders: Callable[[Desk], tuple[list[Sender], list[Closer]]]) -> None:
        self.desk = desk
        self.open_senders = open_senders  # every enabled channel's sender (worker/senders.py)
        self.due = threading.Event()  # a reply was written, or a retry may be due
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=asyncio.run, args=(self.run(),), name="refunddesk-outbound", daemon=True)
        self.thread.start()

    def wake(self) -> None:
        self.due.set()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """After the delivery in hand; what is still pending is sent by the next run."""
        self.stopping.set()
        self.due.set()
        if self.thread is not None:
            self.thread.join(timeout)
            if self.thread.is_alive():
                log.warning("the senders did not finish within %s s", timeout)

    async def run(self) -> None:
        senders, closers = self.open_senders(self.desk)
        db = self.desk.open_db(durable=False)  # a delivery record lost to a power cut means one letter twice
        try:
            while not self.stopping.is_set():
                self.due.clear()
                for sender in senders:
                    try:
                        await deliver_due(db, sender)
                        await rest(sender)
                    except Exception:
                        log.exception("sender %s failed a pass", sender.channel)
                await asyncio.to_thread(self.due.wait, next_wait(db, senders))
        finally:
            for close in closers:
                await close()
            db.conn.close()


async def rest(sender: Sender) -> None:
    """Between passes: a sender that keeps connections (the relay's SMTP sessions) closes
    those left idle, instead of holding them open until the relay drops them."""
    close_idle = getattr(sender, "close_idle", None)
    if close_idle is not None:
        await close_idle()


def next_wait(db, senders: list[Sender]) -> float:
    due = [next_due_at(db, s.channel) for s in senders]
    soonest = [s for s in due if s is not None]
    if not soonest:
        return IDLE_WAIT
    return max(0.05, min(IDLE_WAIT, (min(soonest) - utcnow()).total_seconds()))
