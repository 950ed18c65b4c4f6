"""Group commit (store/committer.py) on a real SQLite file: what arrives together is committed
together, a failing piece costs only itself, and every caller learns its own outcome."""
from __future__ import annotations

import asyncio
import threading

import pytest

from refunddesk.store.committer import GroupCommitter
from refunddesk.store.db import open_db


def test_a_failing_piece_costs_only_itself_and_every_caller_gets_its_own_outcome(tmp_path):
    path = tmp_path / "store.db"
    open_db(path).conn.close()
    gate = threading.Event()

    def opened():
        db = open_db(path)
        db.execute("CREATE TABLE IF NOT EXISTS notes (text TEXT NOT NULL)")
        return db

    committer = GroupCommitter(opened, "test-commits")

    def held(db):  # keeps the thread busy until the other pieces are queued behind it
        gate.wait(10)
        db.execute("INSERT INTO notes (text) VALUES ('first')")
        return "first"

    def note(text):
        def piece(db):
            db.execute("INSERT INTO notes (text) VALUES (?)", [text])
            return text
        return piece

    def failing(db):
        db.execute("INSERT INTO notes (text) VALUES ('half-done')")
        db.execute("INSERT INTO notes (text) VALUES (NULL)")  # NOT NULL: fails after one write

    async def run():
        first = asyncio.ensure_future(committer.write(held))
        await asyncio.sleep(0)  # the committer thread takes `held` and blocks on the gate
        rest = [asyncio.ensure_future(committer.write(piece)) for piece in (note("a"), failing, note("b"))]
        gate.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    try:
        results = asyncio.run(run())
    finally:
        committer.close()
    assert results[0] == "first" and results[1] == "a" and results[3] == "b"
    assert isinstance(results[2], Exception) and "NOT NULL" in str(results[2])
    db = open_db(path)
    assert sorted(r[0] for r in db.execute("SELECT text FROM notes")) == ["a", "b", "first"]  # no 'half-done'


def test_a_closed_committer_refuses_new_work(tmp_path):
    path = tmp_path / "store.db"
    committer = GroupCommitter(lambda: open_db(path), "test-commits")

    async def run():
        return await committer.write(lambda db: db.execute("SELECT 41 + 1").fetchone()[0])

    assert asyncio.run(run()) == 42
    committer.close()
    assert not committer.thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(committer.write(lambda db: 1))
