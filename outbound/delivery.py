"""Delivering the outbox: each channel's sender takes due rows, and the result is recorded.

A sender raises `TemporaryFailure` to be retried with back-off (relay down, flood limit) and
`PermanentFailure` when retrying cannot help (the address does not exist). Recording happens
after the transport accepted the message; `mark_sent` is conditional, so two runners never
both record one message, and the acknowledgement time is set once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Protocol

import sqlite_utils

from refunddesk.store import cases as case_store
from refunddesk.store import events, outbox
from refunddesk.store.clock import utcnow
from refunddesk.store.db import transaction

log = logging.getLogger("refunddesk.delivery")
WINDOW_LIMIT = 8  # deliveries in flight at once, at the most, per sender
RECORD_EVERY = 8  # delivered letters recorded together (record_deliveries)


class TemporaryFailure(Exception):
    """Try again later. `attempted=False` when the sender held the message back itself
    (Telegram's flood wait still running, the bot not connected yet): the transport never
    saw it, so it is no delivery attempt and the row's `attempts` does not count it."""

    def __init__(self, message: str, retry_after: float | None = None, *, attempted: bool = True) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.attempted = attempted


class PermanentFailure(Exception):
    pass


class Bell(Protocol):
    """What the watchers ring when letters are due: the worker processes in serve (their
    lane 0 sends), or a threading.Event where the senders wait on one."""

    def set(self) -> None: ...


class Sender(Protocol):
    channel: str
    window: Window | None  # deliver_due's, kept between its passes (None until the first)

    async def deliver(self, row: dict[str, Any]) -> None: ...


class Window:
    """How many deliveries of one sender may be in flight at once.

    Sent one after another, letters waited for each other's round trip: a Telegram burst was
    answered at ~190 messages/s where an echo bot managed ~430 (bench/telegram.py). The
    window opens by one with each success, up to `limit`, and closes to one after a temporary
    failure: after a flood wait or a relay outage one call probes first, and a storm of 429s
    still costs one refused call per wait, not one per message in flight."""

    def __init__(self, limit: int = WINDOW_LIMIT) -> None:
        self.limit = limit
        self.size = 1
        self.in_flight = 0
        self.changed: asyncio.Condition | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[Window]:
        loop = asyncio.get_running_loop()
        if self.loop is not loop or self.changed is None:  # a Condition belongs to one loop
            self.loop, self.changed, self.in_flight = loop, asyncio.Condition(), 0
        changed = self.changed
        async with changed:
            await changed.wait_for(lambda: self.in_flight < self.size)
            self.in_flight += 1
        try:
            yield self
        finally:
            async with changed:
                self.in_flight -= 1
                changed.notify_all()

    def succeeded(self) -> None:
        self.size = min(self.limit, self.size + 1)

    def failed(self) -> None:
        self.size = 1


async def deliver_due(db: sqlite_utils.Database, sender: Sender, now: datetime | None = None, limit: int = 50) -> int:
    """Deliver what is due on one channel; returns how many were delivered.

    Letters to one recipient go one after another, in the order they were written (a chat
    never sees the second question before the first); different recipients' at once, as
    many as the sender's window allows."""
    window = getattr(sender, "window", None)  # a sender that declares none (a test's) gets one too
    if window is None:
        window = sender.window = Window()
    chains: dict[str, list[dict[str, Any]]] = {}
    for row in outbox.due(db, sender.channel, now or utcnow(), limit):
        chains.setdefault(row["recipient"], []).append(row)
    delivered: list[tuple[dict[str, Any], datetime]] = []  # not recorded yet
    count = 0

    async def deliver_chain(rows: list[dict[str, Any]]) -> None:
        nonlocal count
        for row in rows:
            async with window.slot():
                sent_at = await deliver_one(db, sender, row, window)
            if sent_at is not None:
                delivered.append((row, sent_at))
                count += 1
            if len(delivered) >= RECORD_EVERY:
                record_deliveries(db, delivered)

    try:
        results = await asyncio.gather(*(deliver_chain(rows) for rows in chains.values()), return_exceptions=True)
    finally:
        record_deliveries(db, delivered)  # what the last RECORD_EVERY left
    for result in results:  # every chain has finished; a failure of the store itself is raised
        if isinstance(result, BaseException):
            raise result
    return count


async def deliver_one(
    db: sqlite_utils.Database, sender: Sender, row: dict[str, Any], window: Window
) -> datetime | None:
    """Hand one row to its sender; the moment it was accepted, or None (the failure is recorded)."""
    try:
        await sender.deliver(row)
    except TemporaryFailure as exc:
        window.failed()
        if exc.attempted:
            log.warning("outbox %s to %s: temporary failure, will retry: %s", row["id"], sender.channel, exc)
        else:
            log.info("outbox %s to %s: held back: %s", row["id"], sender.channel, exc)
        with transaction(db):
            outbox.mark_failed(db, row["id"], utcnow(), str(exc), delay=exc.retry_after, attempted=exc.attempted)
        return None
    except PermanentFailure as exc:
        log.error("outbox %s to %s: permanent failure: %s", row["id"], sender.channel, exc)
        with transaction(db):
            outbox.mark_failed(db, row["id"], utcnow(), str(exc), permanent=True)
            events.record(
                db,
                row["case_id"],
                "system",
                "delivery_failed",
                utcnow(),
                {"outbox": row["id"], "error": str(exc)[:300]},
            )
        return None
    except Exception as exc:  # a sender bug must not stop the other messages
        window.failed()
        log.exception("outbox %s to %s: unexpected error", row["id"], sender.channel)
        with transaction(db):
            outbox.mark_failed(db, row["id"], utcnow(), f"{type(exc).__name__}: {exc}")
        return None
    window.succeeded()
    return utcnow()


def record_deliveries(db: sqlite_utils.Database, delivered: list[tuple[dict[str, Any], datetime]]) -> None:
    """Record delivered letters a few at a time, and empty the list.

    One transaction per letter was a third of the turns at the write lock during a Telegram
    burst (py-spy); one per pass left up to 50 letters unrecorded for as long as the slowest
    delivery took, to be sent again if the worker died meanwhile. A crash between a delivery
    and its record sends that letter again, as it always could (at least once, never lost);
    a record that fails costs its own row only."""
    taken, delivered[:] = list(delivered), []
    if not taken:
        return
    with transaction(db):
        for row, sent_at in taken:
            try:
                with db.atomic():
                    record_delivery(db, row, sent_at)
            except Exception:
                log.exception("outbox %s: delivered, but the delivery could not be recorded", row["id"])


def record_delivery(db: sqlite_utils.Database, row: dict[str, Any], now: datetime) -> None:
    with transaction(db):
        if not outbox.mark_sent(db, row["id"], now):
            return
        if row["case_id"]:
            if row["kind"] == "ack":
                case_store.mark_acknowledged(db, row["case_id"], now)
            events.record(
                db,
                row["case_id"],
                "system",
                "message_sent",
                now,
                {"outbox": row["id"], "template": row["template"], "channel": row["channel"]},
            )
