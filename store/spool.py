"""The inbound spool: every raw message exactly as it arrived, stored before anything parses it.

A row moves pending -> done | duplicate | dead. Transport identities that are stable
(IMAP UIDVALIDITY+UID, Telegram update_id) are unique, so a re-fetch never spools twice;
SMTP deliveries are each recorded, and deduplicated by content when processed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

import sqlite_utils
from sqlite_utils.db import NotFoundError

from .clock import stamp
from .db import transaction

BLOB_PIECE = 1024 * 1024  # a raw message larger than this is written into its row piece by piece


class Pieces(Protocol):
    """A raw message too large to hold whole in memory: its length, and its bytes in order."""

    @property
    def size(self) -> int: ...

    def chunks(self) -> Iterable[bytes]: ...


def spool(
    db: sqlite_utils.Database,
    channel: str,
    transport_id: str,
    raw: bytes | bytearray | Pieces,
    received_at: datetime,
    meta: dict[str, Any] | None = None,
    conversation: int | None = None,
) -> tuple[int, bool]:
    """Store one raw message durably. Returns (row id, True if new, False if already spooled).
    `conversation` (a Telegram chat's id, a key of a mail's sender) keeps one conversation's
    rows with one worker."""
    # SQLite copies a bound value before it writes it: a 28 MB mail was in the receiver's
    # memory twice. A large one is inserted as zeros of its length and written in place.
    size = len(raw) if isinstance(raw, (bytes, bytearray)) else raw.size
    large = size > BLOB_PIECE or not isinstance(raw, (bytes, bytearray))
    with transaction(db):
        cursor = db.execute(
            "INSERT OR IGNORE INTO inbound (channel, transport_id, received_at, raw, meta, conversation) "
            f"VALUES (?, ?, ?, {'zeroblob(?)' if large else '?'}, ?, ?)",
            [
                channel,
                transport_id,
                stamp(received_at),
                size if large else raw,
                json.dumps(meta or {}, ensure_ascii=False),
                conversation,
            ],
        )
        if cursor.rowcount:
            inbound_id = cursor.lastrowid
            assert inbound_id is not None  # the row was inserted just now
            if large:
                write_in_pieces(db, inbound_id, raw)
            return inbound_id, True
        row = db.execute(
            "SELECT id FROM inbound WHERE channel = ? AND transport_id = ?", [channel, transport_id]
        ).fetchone()
        return row[0], False


def write_in_pieces(db: sqlite_utils.Database, inbound_id: int, raw: bytes | bytearray | Pieces) -> None:
    with db.conn.blobopen("inbound", "raw", inbound_id) as blob:
        if isinstance(raw, (bytes, bytearray)):
            view = memoryview(raw)
            for start in range(0, len(view), BLOB_PIECE):
                blob.write(view[start : start + BLOB_PIECE])
            return
        for chunk in raw.chunks():
            blob.write(chunk)


def pending_ids(db: sqlite_utils.Database, limit: int = 100, lane: tuple[int, int] = (0, 1)) -> list[int]:
    """The next pending rows, oldest first, each conversation (a chat's, a mail sender's) taking
    its turn: every conversation waiting has its oldest row in (the `limit` that waited longest),
    and the places left go to the oldest rows after them. So one chat's 1,000 messages fill a
    batch only when nobody else waits, and a new customer's /start is in the next batch (it
    waited 44 s behind such a flood); a conversation's rows are still taken oldest first, in
    order. Rows of no conversation are each their own.

    With `lane` = (k, n), only worker k's share of n workers: all of a conversation's rows fall
    to one worker, and rows of no conversation are spread by id. A pass costs a query per
    conversation found, each one index range skipping the rows of those found before it."""
    k, n = lane
    share = "" if n == 1 else " AND abs(coalesce(conversation, id)) % ? = ?"
    share_args = [] if n == 1 else [n, k]
    heads: list[int] = []
    found: list[int] = []  # the conversations that have their head
    after = 0
    while len(heads) < limit:
        marks = ",".join("?" * len(found))
        others = f" AND (conversation IS NULL OR conversation NOT IN ({marks}))" if found else ""
        row = db.execute(
            "SELECT id, conversation FROM inbound INDEXED BY inbound_lanes"
            f" WHERE status = 'pending' AND id > ?{others}{share} ORDER BY id LIMIT 1",
            [after, *found, *share_args],
        ).fetchone()
        if row is None:
            break
        after = row[0]
        heads.append(row[0])
        if row[1] is not None:
            found.append(row[1])
    if len(heads) == limit or not heads:
        return heads
    # Every waiting conversation has its head: the rest of the batch in plain order of arrival.
    marks = ",".join("?" * len(heads))
    rest = db.execute(
        "SELECT id FROM inbound INDEXED BY inbound_lanes"
        f" WHERE status = 'pending' AND id NOT IN ({marks}){share} ORDER BY id LIMIT ?",
        [*heads, *share_args, limit - len(heads)],
    )
    return sorted(heads + [r[0] for r in rest])


def load(db: sqlite_utils.Database, inbound_id: int, raw_bytes: int | None = None) -> dict[str, Any]:
    """The row; with `raw_bytes`, only that many of its raw bytes (a message too large to load)."""
    # A plain query: Table.get() first introspects the schema (five queries) on every call.
    if raw_bytes is None:
        rows = list(db.query("SELECT * FROM inbound WHERE id = ?", [inbound_id]))
    else:
        # Every column but raw, whose first bytes are read through the blob (substr() would load it whole).
        names = [r[1] for r in db.execute("PRAGMA table_info(inbound)") if r[1] != "raw"]
        rows = list(db.query(f"SELECT {', '.join(names)} FROM inbound WHERE id = ?", [inbound_id]))
        if rows:
            with db.conn.blobopen("inbound", "raw", inbound_id, readonly=True) as blob:
                rows[0]["raw"] = blob.read(raw_bytes)
    if not rows:
        raise NotFoundError(f"no inbound row {inbound_id}")
    row = rows[0]
    row["meta"] = json.loads(row["meta"] or "{}")
    return row


def finish(
    db: sqlite_utils.Database,
    inbound_id: int,
    status: str,
    now: datetime,
    *,
    case_id: str | None = None,
    dedup_key: str | None = None,
    error: str | None = None,
) -> None:
    db.execute(
        "UPDATE inbound SET status = ?, processed_at = ?, case_id = ?, dedup_key = COALESCE(?, dedup_key), error = ?, "
        "attempts = attempts + 1 WHERE id = ?",
        [status, stamp(now), case_id, dedup_key, error, inbound_id],
    )


def first_with_key(db: sqlite_utils.Database, dedup_key: str, before_id: int) -> dict[str, Any] | None:
    """The earliest processed message with the same identity, if this one is a duplicate."""
    rows = list(
        db.query(
            "SELECT id, case_id FROM inbound WHERE dedup_key = ? AND id != ? AND status IN ('done', 'duplicate') "
            "ORDER BY id LIMIT 1",
            [dedup_key, before_id],
        )
    )
    return rows[0] if rows else None


def dead_letters(db: sqlite_utils.Database, newest: int | None = None) -> list[dict[str, Any]]:
    """Every dead letter, oldest first; with `newest`, only that many of the latest, newest first."""
    columns = "id, channel, transport_id, received_at, length(raw) AS size, error, attempts"
    if newest is None:
        return list(db.query(f"SELECT {columns} FROM inbound WHERE status = 'dead' ORDER BY id"))
    return list(db.query(f"SELECT {columns} FROM inbound WHERE status = 'dead' ORDER BY id DESC LIMIT ?", [newest]))


def dead_letter_count(db: sqlite_utils.Database) -> int:
    return db.execute("SELECT count(*) FROM inbound WHERE status = 'dead'").fetchone()[0]


def requeue(db: sqlite_utils.Database, inbound_id: int) -> bool:
    cursor = db.execute(
        "UPDATE inbound SET status = 'pending', error = NULL WHERE id = ? AND status = 'dead'", [inbound_id]
    )
    return bool(cursor.rowcount)


def reopen_confirmed(db: sqlite_utils.Database, inbound_id: int, case_id: str, agent: str) -> bool:
    """A held message (an unverified sender's, on `case_id`) back to pending, confirmed by `agent`:
    processed again, it is applied to its case like any verified message, once."""
    cursor = db.execute(
        "UPDATE inbound SET status = 'pending', error = NULL, meta = json_set(meta, '$.confirmed_by', ?) "
        "WHERE id = ? AND case_id = ? AND status = 'done' AND json_extract(meta, '$.confirmed_by') IS NULL",
        [agent, inbound_id, case_id],
    )
    return bool(cursor.rowcount)
