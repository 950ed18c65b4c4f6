"""Opening the SQLite store: WAL, full sync where a client waits on our commit, migrations.

Every process and thread opens its own connection (SQLite connections are not shared across
threads here); `transaction()` starts with BEGIN IMMEDIATE so that read-then-write sequences
(allocating a case number, claiming a spool row) never fail half-way with "database is locked".

In `serve` and its worker process (see `use_writer_turns`), writers take turns before they
ask SQLite for the write lock. SQLite's busy handler only polls, sleeping up to 100 ms between
tries, so a writer that writes back to back (the worker) starved another one (the SMTP
spooler, whose clients wait for their 250): mail was accepted no faster than it was
processed. Threads of one process queue on a lock and wake the moment it is free; processes
take turns with flock(2) on a file beside the database, polled every half millisecond (the
worker's pauses between two messages are a few milliseconds long). Other processes, and
writers that take no turns, still meet SQLite's busy timeout as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from .schema import MIGRATIONS

T = TypeVar("T")
BUSY_TIMEOUT_MS = 30_000


class WriterTurns:
    """One writer at a time, among the threads of this process and every process taking turns."""

    def __init__(self, path: Path) -> None:
        self.lock = threading.Lock()
        self.fd = open_turn_file(path)

    def acquire(self, timeout: float) -> bool:
        """False after `timeout` among this process's threads: then SQLite's busy timeout
        decides, as without turns. Between processes it blocks in the kernel without a
        timeout: flock is released when its holder exits, however it exits, and a holder that
        hangs inside its transaction holds SQLite's own lock too, so a timeout would not help.
        (Polling it every half millisecond instead cost ~10 % of each process's CPU during a burst.)"""
        if not self.lock.acquire(timeout=timeout):
            return False
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self.lock.release()
            raise
        return True

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.lock.release()


TURN_FILE_SUFFIX = "-turn"


def open_turn_file(path: Path) -> int:
    """A descriptor of the turn file beside the store, named after the store's real path so that
    every way of naming the store (a symlink, a relative path) takes turns on the same file."""
    return os.open(f"{path.resolve()}{TURN_FILE_SUFFIX}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


_turns: dict[str, WriterTurns] = {}
_turns_lock = threading.Lock()
_turns_in_use = False


def use_writer_turns() -> None:
    """From now on, connections this process opens take turns to write (serve and its worker)."""
    global _turns_in_use
    _turns_in_use = True


def writer_turns(path: Path) -> WriterTurns | None:
    if not _turns_in_use:
        return None
    key = str(path.resolve())
    with _turns_lock:
        if key not in _turns:
            _turns[key] = WriterTurns(Path(key))
        return _turns[key]


class Store(sqlite_utils.Database):
    """A store opened by open_db(), with the writers' turns its transactions take (None: none).
    transaction() also takes any other sqlite_utils.Database, which takes no turns."""

    writer_turns: WriterTurns | None = None


def open_db(path: str | Path, *, migrate: bool = True, durable: bool = True) -> sqlite_utils.Database:
    """durable=False for writers on whose commit no client waits (the worker, the senders):
    their commits skip the fsync; the next durable commit of any connection syncs them too.
    A power cut (not a crash: SQLite's WAL survives those) may undo their last moments, which
    are done again: a spool row is still pending and is processed again, a letter is sent
    again. During a burst their fsyncs, one per message, held the one write lock for longer
    than the writing did (py-spy of bench/telegram.py)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        # A fresh store: switching it to WAL needs its exclusive lock, for which SQLite's busy
        # handler may not wait while another process holds a lock on it ("database is locked",
        # seen in 1 of 20 rounds of test_startup_race): the switch takes the migrating turn too.
        with migrating_turn(path):
            conn.execute("PRAGMA journal_mode = WAL")
    # FULL: an SMTP 250 or an IMAP move follows our commit, so the commit must survive power loss.
    conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
    conn.execute("PRAGMA foreign_keys = ON")
    db = Store(conn)
    db.writer_turns = writer_turns(path)
    if migrate:
        apply_migrations(db, path)
    return db


def apply_migrations(db: sqlite_utils.Database, path: Path) -> None:
    """Apply what is pending, one process at a time: serve, its worker and any number of commands
    may open a fresh or an older store at the same moment, and two of them applying one migration
    fail ("table counters already exists", a UNIQUE constraint on _sqlite_migrations). They take
    the writers' turn for it, whether or not they take turns to write, and read again what is
    applied once they hold it: the one before them may have applied everything meanwhile. A store
    already migrated costs one read and no lock: reading without it is safe, as a migration is
    recorded with its changes (in their transaction) or after them (m008, which runs outside a
    transaction and is a no-op once done), so a store that has every record has every change."""
    if not MIGRATIONS.pending(db):
        return
    with migrating_turn(path):
        MIGRATIONS.apply(db)  # it reads what is pending again, now that no one else migrates


@contextlib.contextmanager
def migrating_turn(path: Path) -> Iterator[None]:
    """The writers' turn (flock on the turn file) for migrating, on a descriptor of its own: a lock
    on another descriptor of the same file, in this process or another, excludes it as well (so a
    thread holding a writer's turn must not open a store that needs migrating: serve migrates
    before it takes turns, refunddesk/service.py)."""
    fd = open_turn_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """One atomic unit of work; nested calls join the outer transaction."""
    conn = db.conn
    if conn.in_transaction:
        with db.atomic():
            yield db
        return
    turns = db.writer_turns if isinstance(db, Store) else None
    held = turns if turns is not None and turns.acquire(BUSY_TIMEOUT_MS / 1000) else None
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
        if held is not None:
            held.release()


class ThreadedConnection:
    """A store connection that one asyncio task uses from worker threads (asyncio.to_thread).

    Each use holds a lock, and closing waits for the use in flight: when `serve` stops, the task
    is cancelled while its thread may still be inside a query, and closing the connection under
    that query crashed serve with SIGSEGV (the SLA watcher, about 1 stop in 4 under load)."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        self.lock = threading.Lock()

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(self._locked, work, *args)

    def _locked(self, work: Callable[..., T], *args: Any) -> T:
        with self.lock:
            return work(*args)

    async def close(self) -> None:
        await asyncio.shield(asyncio.to_thread(self._locked, self.db.conn.close))
