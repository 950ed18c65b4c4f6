"""Opening the SQLite store: WAL, full sync where a client waits on our commit, migrations.

Every process and thread opens its own connection (SQLite connections are not shared across
threads here); `transaction()` starts with BEGIN IMMEDIATE so that read-then-write sequences
(allocating a case number, claiming a spool row) never fail half-way with "database is locked".
"""
from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Iterator

import sqlite_utils

from .schema import MIGRATIONS

BUSY_TIMEOUT_MS = 30_000


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
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")
