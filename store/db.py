"""Opening the SQLite store: WAL, full sync where a client waits on our commit, migrations.

Every process and thread opens its own connection (SQLite connections are not shared across
threads here); `transaction()` starts with BEGIN IMMEDIATE so that read-then-write sequences
(allocating a case number, claiming a spool row) never fail half-way with "database is locked".

In `serve` (see `use_writer_turns`), the threads take turns in arrival order before they ask
SQLite for the write lock. SQLite's busy handler only polls, sleeping up to 100 ms between
tries, so a thread that writes back to back (the worker) could starve another one (the SMTP
spooler, whose client waits for its 250) until the busy timeout. Other processes still meet
the busy timeout as before.
"""
from __future__ import annotations

import collections
import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Iterator

import sqlite_utils

from .schema import MIGRATIONS

BUSY_TIMEOUT_MS = 30_000


class WriterTurns:
    """One writer at a time; a waiting writer wakes the moment the lock is free."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def acquire(self, timeout: float) -> bool:
        return self.lock.acquire(timeout=timeout)  # False: SQLite's busy timeout decides, as without turns

    def release(self) -> None:
        self.lock.release()


_turns: dict[str, WriterTurns] = {}
_turns_lock = threading.Lock()
_turns_in_use = False


def use_writer_turns() -> None:
    """From now on, connections this process opens take turns to write (serve calls this)."""
    global _turns_in_use
    _turns_in_use = True


def writer_turns(path: Path) -> WriterTurns | None:
    if not _turns_in_use:
        return None
    with _turns_lock:
        return _turns.setdefault(str(path.resolve()), WriterTurns())


def open_db(path: str | Path, *, migrate: bool = True) -> sqlite_utils.Database:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: an SMTP 250 or an IMAP move follows our commit, so the commit must survive power loss.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    db = sqlite_utils.Database(conn)
    db.writer_turns = writer_turns(path)
    if migrate:
        MIGRATIONS.apply(db)
    return db


@contextlib.contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """One atomic unit of work; nested calls join the outer transaction."""
    conn = db.conn
    if conn.in_transaction:
        with db.atomic():
            yield db
        return
    turns: WriterTurns | None = getattr(db, "writer_turns", None)
    has_turn = turns is not None and turns.acquire(BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")
    finally:
        if has_turn:
            turns.release()
