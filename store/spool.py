"""The inbound spool: every raw message exactly as it arrived, stored before anything parses it.

A row moves pending -> done | duplicate | dead. Transport identities that are stable
(IMAP UIDVALIDITY+UID, Telegram update_id) are unique, so a re-fetch never spools twice;
SMTP deliveries are each recorded, and deduplicated by content when processed.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlite_utils
from sqlite_utils.db import NotFoundError

from .clock import stamp
from .db import transaction


BLOB_PIECE = 1024 * 1024  # a raw message larger than this is written into its row piece by piece


def spool(
    db: sqlite_utils.Database,
    channel: str,
    transport_id: str,
    raw: bytes | bytearray,
    received_at: datetime,
    meta: dict[str, Any] | None = None,
    conversation: int | None = None,
) -> tuple[int, bool]:
    """Store one raw message durably. Returns (row id, True if new, False if already spooled).
    `conversation` (a Telegram chat's id, a key of a mail's sender) keeps one conversation's
    rows with one worker."""
    # SQLite copies a bound value before it writes it: a 28 MB mail was in the receiver's
    # memory twice. A large one is inserted as zeros of its length and written in place.
    large = len(raw) > BLOB_PIECE
    with transaction(db):
        cursor = db.execute(
            f"INSERT OR IGNORE INTO inbound (channel, transport_id, received_at, raw, meta, conversation) VALUES (?, ?, ?, {'zeroblob(?)' if large else '?'}, ?, ?)",
            [channel, transport_id, stamp(received_at), len(raw) if large else raw, json.dumps(meta or {}, ensure_ascii=False), conversation],
        )
        if cursor.rowcount:
            if large:
                write_in_pieces(db, cursor.lastrowid, raw)
            return cursor.lastrowid, True
        row = db.execute("SELECT id FROM inbound WHERE channel = ? AND transport_id = ?", [channel, transport_id]).fetchone()
        return row[0], False


def write_in_pieces(db: sqlite_utils.Database, inbound_id: int, raw: bytes | bytearray) -> None:
    view = memoryview(raw)
    with db.conn.blobopen("inbound", "raw", inbound_id) as blob:
        for start in range(0, len(view), BLOB_PIECE):
            blob.write(view[start : start + BLOB_PIECE])


def pending_ids(db: sqlite_utils.Database, limit: int = 100, lane: tuple[int, int] = (0, 1)) -> list[int]:
    """The oldest pending rows; with `lane` = (k, n), only worker k's share of n workers: all
    of a conversation's rows (a chat's, a mail sender's) fall to one worker, which takes them
    in order, and rows of no conversation are spread by id."""
    k, n = lane
    if n == 1:
        return [r[0] for r in db.execute("SELECT id FROM inbound WHERE status = 'pending' ORDER BY id LIMIT ?", [limit])]
    return [
        r[0]
        for r in db.execute(
            "SELECT id FROM inbound INDEXED BY inbound_lanes WHERE status = 'pending' AND abs(coalesce(conversation, id)) % ? = ? ORDER BY id LIMIT ?",
            [n, k, limit],
        )
    ]


def load(db: sqlite_utils.Database, inbound_id: int) -> dict[str, Any]:
    # A plain query: Table.get() first introspects the schema (five queries) on every call.
    rows = list(db.query("SELECT * FROM inbound WHERE id = ?", [inbound_id]))
    if not rows:
        raise NotFoundError(f"no inbound row {inbound_id}")
    row = rows[0]
    row["meta"] = json.loads(row["meta"] or "{}")
    return row


def finish(db: sqlite_utils.Database, inbound_id: int, status: str, now: datetime, *, case_id: str | None = None, dedup_key: str | None = None, error: str | None = None) -> None:
    db.execute(
        "UPDATE inbound SET status = ?, processed_at = ?, case_id = ?, dedup_key = COALESCE(?, dedup_key), error = ?, attempts = attempts + 1 WHERE id = ?",
        [status, stamp(now), case_id, dedup_key, error, inbound_id],
    )


def first_with_key(db: sqlite_utils.Database, dedup_key: str, before_id: int) -> dict[str, Any] | None:
    """The earliest processed message with the same identity, if this one is a duplicate."""
    rows = list(
        db.query(
            "SELECT id, case_id FROM inbound WHERE dedup_key = ? AND id != ? AND status IN ('done', 'duplicate') ORDER BY id LIMIT 1",
            [dedup_key, before_id],
        )
    )
    return rows[0] if rows else None


def dead_letters(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    return list(
        db.query(
            "SELECT id, channel, transport_id, received_at, length(raw) AS size, error, attempts FROM inbound WHERE status = 'dead' ORDER BY id"
        )
    )


def requeue(db: sqlite_utils.Database, inbound_id: int) -> bool:
    cursor = db.execute("UPDATE inbound SET status = 'pending', error = NULL WHERE id = ? AND status = 'dead'", [inbound_id])
    return bool(cursor.rowcount)
