"""Delivering the outbox: each channel's sender takes due rows, and the result is recorded.

A sender raises `TemporaryFailure` to be retried with back-off (relay down, flood limit) and
`PermanentFailure` when retrying cannot help (the address does not exist). Recording happens
after the transport accepted the message; `mark_sent` is conditional, so two runners never
both record one message, and the acknowledgement time is set once.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Protocol

import sqlite_utils

from refunddesk.store import cases as case_store
from refunddesk.store import events, outbox
from refunddesk.store.clock import utcnow
from refunddesk.store.db import transaction

log = logging.getLogger("refunddesk.delivery")


class TemporaryFailure(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentFailure(Exception):
    pass


class Sender(Protocol):
    channel: str

    async def deliver(self, row: dict[str, Any]) -> None: ...


async def deliver_due(db: sqlite_utils.Database, sender: Sender, now: datetime | None = None, limit: int = 50) -> int:
    """Deliver what is due on one channel; returns how many were delivered."""
    delivered = 0
    for row in outbox.due(db, sender.channel, now or utcnow(), limit):
        try:
            await sender.deliver(row)
        except TemporaryFailure as exc:
            log.warning("outbox %s to %s: temporary failure, will retry: %s", row["id"], sender.channel, exc)
            with transaction(db):
                outbox.mark_failed(db, row["id"], utcnow(), str(exc), delay=exc.retry_after)
            continue
        except PermanentFailure as exc:
            log.error("outbox %s to %s: permanent failure: %s", row["id"], sender.channel, exc)
            with transaction(db):
                outbox.mark_failed(db, row["id"], utcnow(), str(exc), permanent=True)
                events.record(db, row["case_id"], "system", "delivery_failed", utcnow(), {"outbox": row["id"], "error": str(exc)[:300]})
            continue
        except Exception as exc:  # a sender bug must not stop the other messages
            log.exception("outbox %s to %s: unexpected error", row["id"], sender.channel)
            with transaction(db):
                outbox.mark_failed(db, row["id"], utcnow(), f"{type(exc).__name__}: {exc}")
            continue
        record_delivery(db, row, utcnow())
        delivered += 1
    return delivered


def record_delivery(db: sqlite_utils.Database, row: dict[str, Any], now: datetime) -> None:
    with transaction(db):
        if not outbox.mark_sent(db, row["id"], now):
            return
        if row["case_id"]:
            if row["kind"] == "ack":
                case_store.mark_acknowledged(db, row["case_id"], now)
            events.record(db, row["case_id"], "system", "message_sent", now, {"outbox": row["id"], "template": row["template"], "channel": row["channel"]})
