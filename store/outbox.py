"""The outbox: every message we send, written in the same transaction as the change that caused it.

Senders pick due rows, deliver, and record the result; a failed delivery is retried with
exponential back-off. A row is never deleted: it is the record of what the customer was told.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import sqlite_utils

from .clock import parse_stamp, stamp

BACKOFF_SECONDS = (5, 15, 60, 300, 900, 1800, 3600)
RECIPIENT_TURN = 8  # due rows of one recipient in one pass of a sender (outbound/delivery.py)


def enqueue(
    db: sqlite_utils.Database,
    *,
    case_id: str | None,
    channel: str,
    recipient: str,
    kind: str,
    template: str,
    language: str,
    subject: str,
    body: str,
    now: datetime,
    buttons: list[list[str]] | None = None,
    headers: dict[str, Any] | None = None,
    status: str = "pending",
) -> int:
    cursor = db.execute(
        "INSERT INTO outbox (case_id, channel, recipient, kind, template, language, subject, body, buttons, headers, "
        "status, created_at, next_attempt_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [
            case_id,
            channel,
            recipient,
            kind,
            template,
            language,
            subject,
            body,
            json.dumps(buttons or [], ensure_ascii=False),
            json.dumps(headers or {}, ensure_ascii=False),
            status,
            stamp(now),
            stamp(now),
        ],
    )
    assert cursor.lastrowid is not None  # set by every INSERT that succeeded
    return cursor.lastrowid


def decode(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["buttons"] = json.loads(row["buttons"])
    row["headers"] = json.loads(row["headers"])
    return row


def due(
    db: sqlite_utils.Database, channel: str, now: datetime, limit: int = 50, per_recipient: int = RECIPIENT_TURN
) -> list[dict[str, Any]]:
    """The oldest due rows, at most `per_recipient` of any one recipient (its oldest, in order):
    a recipient with a backlog takes its turn beside the others instead of filling the pass. A
    chat that sent 1,000 messages had 600 replies due, and a new customer's welcome waited 2 s
    behind them (tests/test_telegram_fairness.py)."""
    return [
        decode(r)
        for r in db.query(
            "SELECT * FROM outbox WHERE id IN (SELECT id FROM"
            " (SELECT id, row_number() OVER (PARTITION BY recipient ORDER BY id) AS turn FROM outbox"
            "  WHERE channel = ? AND status = 'pending' AND next_attempt_at <= ?)"
            " WHERE turn <= ? ORDER BY id LIMIT ?) ORDER BY id",
            [channel, stamp(now), per_recipient, limit],
        )
    ]


def mark_sent(db: sqlite_utils.Database, outbox_id: int, now: datetime) -> bool:
    """Record delivery; False when another sender already recorded it (so side effects run once)."""
    cursor = db.execute(
        "UPDATE outbox SET status = 'sent', sent_at = ?, attempts = attempts + 1, last_error = NULL "
        "WHERE id = ? AND status = 'pending'",
        [stamp(now), outbox_id],
    )
    return bool(cursor.rowcount)


def mark_failed(
    db: sqlite_utils.Database,
    outbox_id: int,
    now: datetime,
    error: str,
    *,
    permanent: bool = False,
    delay: float | None = None,
    attempted: bool = True,
) -> None:
    """A failed try, or (`attempted=False`) one the sender held back without calling the
    transport: `attempts` counts only what reached it."""
    (attempts,) = db.execute("SELECT attempts FROM outbox WHERE id = ?", [outbox_id]).fetchone()
    wait = delay if delay is not None else BACKOFF_SECONDS[min(attempts, len(BACKOFF_SECONDS) - 1)]
    db.execute(
        "UPDATE outbox SET attempts = attempts + ?, last_error = ?, next_attempt_at = ?, status = ? WHERE id = ?",
        [
            int(attempted),
            error[:500],
            stamp(now + timedelta(seconds=wait)),
            "failed" if permanent else "pending",
            outbox_id,
        ],
    )


def auto_replies_since(db: sqlite_utils.Database, recipient: str, since: datetime) -> int:
    (count,) = db.execute(
        "SELECT count(*) FROM outbox WHERE recipient = ? AND kind IN ('ack', 'dialog', 'notice') AND created_at >= ? "
        "AND status != 'suppressed'",
        [recipient, stamp(since)],
    ).fetchone()
    return count


def for_case(db: sqlite_utils.Database, case_id: str) -> list[dict[str, Any]]:
    return [decode(r) for r in db.query("SELECT * FROM outbox WHERE case_id = ? ORDER BY id", [case_id])]


def next_due_at(db: sqlite_utils.Database, channel: str) -> datetime | None:
    row = db.execute(
        "SELECT min(next_attempt_at) FROM outbox WHERE channel = ? AND status = 'pending'", [channel]
    ).fetchone()
    return parse_stamp(row[0]) if row and row[0] else None
