"""Group commit: writes from an event loop, run on one thread that owns its SQLite connection.

Each commit is an fsync and a turn at SQLite's one write lock, which the worker holds for a
few milliseconds per message. The SMTP receiver used to commit every message on its own, and
accepted them no faster than the worker processed them (~130/s, bench/smtp_intake.py). Here,
whatever arrived while the thread was busy is written in one transaction, each piece in a
savepoint of its own, and every caller gets its result after that one commit (as databases
do it for their clients).

A piece that fails gets its own exception and leaves nothing behind; if the commit fails,
every caller of the group gets that failure, and nothing of the group is stored.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import sqlite_utils

from .db import transaction

T = TypeVar("T")
GROUP_MAX = 200  # pieces committed together at the most
GROUP_BYTES = 64 * 1024 * 1024  # and their declared size: large mails are held in memory once, not twice


class GroupCommitter:
    def __init__(self, open_db: Callable[[], sqlite_utils.Database], name: str) -> None:
        self.open_db = open_db
        self.waiting: queue.SimpleQueue = queue.SimpleQueue()
        self.closed = False
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)
        self.thread.start()

    async def write(self, piece: Callable[[sqlite_utils.Database], T], size: int = 0) -> T:
        """Run `piece(db)` inside the next group's transaction; its result once committed."""
        if self.closed:
            raise RuntimeError("the committer is closed")
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self.waiting.put((piece, size, done, loop))
        return await done

    def run(self) -> None:
        db = None
        while True:
            group = self.next_group()
            if group is None:
                break
            outcomes: list[tuple[Any, BaseException | None]] = []
            try:
                if db is None:
                    db = self.open_db()
                with transaction(db):
                    for piece, _, _, _ in group:
                        try:
                            with db.atomic():  # a savepoint: a failed piece leaves nothing
                                outcomes.append((piece(db), None))
                        except Exception as exc:
                            outcomes.append((None, exc))
            except Exception as exc:  # the commit itself failed: nothing of the group is stored
                outcomes = [(None, exc)] * len(group)
            # One outcome per piece: appended one by one, or one for all when the commit failed.
            for (_, _, done, loop), (result, error) in zip(group, outcomes, strict=True):
                try:
                    loop.call_soon_threadsafe(settle, done, result, error)
                except RuntimeError:  # that caller's loop is closed: nobody waits any more
                    pass
        if db is not None:
            db.conn.close()

    def next_group(self) -> list[tuple] | None:
        """What is waiting now (at least one piece, waiting for it), or None when closed."""
        first = self.waiting.get()
        if first is None:
            return None
        group, size = [first], first[1]
        while len(group) < GROUP_MAX and size < GROUP_BYTES:
            try:
                item = self.waiting.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self.waiting.put(None)  # close after this group
                break
            group.append(item)
            size += item[1]
        return group

    def close(self) -> None:
        self.closed = True
        self.waiting.put(None)
        self.thread.join()


def settle(done: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if done.done():  # the caller went away meanwhile; what was committed stays committed
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)
