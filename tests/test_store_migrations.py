"""Migrations that rebuild what a running desk already holds, on a real SQLite file."""
from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import pytest
import sqlite_utils

from conftest import base_settings, run_cli, write_config
from refunddesk.store import spool
from refunddesk.store.db import open_db
from refunddesk.store.schema import MIGRATIONS, m008_spool_raw_last

AT = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


def test_the_spool_rebuild_keeps_every_row_and_what_guards_it(tmp_path):
    path = tmp_path / "refunddesk.db"
    db = sqlite_utils.Database(sqlite3.connect(str(path), isolation_level=None))
    db.conn.execute("PRAGMA foreign_keys = ON")
    MIGRATIONS.apply(db, stop_before="m008_spool_raw_last")
    large = bytes(range(256)) * 8000  # ~2 MB: written into its row in pieces
    rows = [spool.spool(db, "email", "smtp:1", b"Subject: hi\r\n\r\nsmall", AT, {"mail_from": "a@x.test"})[0],
            spool.spool(db, "email", "smtp:2", large, AT, {"mail_from": "b@x.test"})[0],
            spool.spool(db, "telegram", "42", b"{}", AT, {}, conversation=-1001)[0]]
    db.execute("INSERT INTO messages (direction, channel, at, inbound_id) VALUES ('in', 'email', '2026-11-20T12:00:00', ?)", [rows[1]])
    # A dangling reference elsewhere (written once with foreign keys off) is none of this step's business.
    db.conn.execute("PRAGMA foreign_keys = OFF")
    db.execute("INSERT INTO message_ids (message_id, case_id) VALUES ('<x@y>', 'RF-404404')")
    db.conn.execute("PRAGMA foreign_keys = ON")
    before = [tuple(r) for r in db.execute("SELECT id, channel, transport_id, received_at, raw, meta, status, conversation FROM inbound ORDER BY id")]
    db.conn.close()

    db = open_db(path)  # as serve opens it: the pending migrations run
    assert [r[1] for r in db.execute("PRAGMA table_info(inbound)")][-1] == "raw"
    assert [tuple(r) for r in db.execute("SELECT id, channel, transport_id, received_at, raw, meta, status, conversation FROM inbound ORDER BY id")] == before
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'inbound'")}
    assert {"inbound_status", "inbound_dedup", "inbound_lanes", "inbound_retention"} <= names
    # What guarded the table still does: the 7-year retention, the references, one row per transport id.
    with pytest.raises(sqlite3.IntegrityError, match="7 years"):
        db.execute("DELETE FROM inbound WHERE id = ?", [rows[0]])
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        db.execute("INSERT INTO messages (direction, channel, at, inbound_id) VALUES ('in', 'email', '2026-11-20T12:00:00', 999)")
    assert spool.spool(db, "email", "smtp:2", b"again", AT)[0] == rows[1] and spool.spool(db, "email", "smtp:2", b"again", AT)[1] is False
    assert sorted(spool.pending_ids(db, 10, (0, 2)) + spool.pending_ids(db, 10, (1, 2))) == rows  # the lanes' index
    m008_spool_raw_last(db)  # a second run (cut off before it was recorded) changes nothing
    assert [tuple(r) for r in db.execute("SELECT id, raw FROM inbound ORDER BY id")] == [(r[0], r[4]) for r in before]
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert (path.parent / "refunddesk.db-wal").stat().st_size < len(large)  # the copy's log was given back


def test_only_a_spool_with_rows_to_copy_is_announced_as_a_long_rebuild(tmp_path):
    fresh = write_config(tmp_path / "fresh.toml", base_settings(tmp_path / "fresh"))
    result = run_cli(fresh, "init")
    assert result.returncode == 0, result.stderr
    assert b"spool" not in result.stderr, result.stderr  # a new store has nothing to rebuild

    path = tmp_path / "old" / "refunddesk.db"
    path.parent.mkdir()
    db = sqlite_utils.Database(sqlite3.connect(str(path), isolation_level=None))
    MIGRATIONS.apply(db, stop_before="m008_spool_raw_last")
    spool.spool(db, "email", "smtp:1", b"Subject: hi\r\n\r\nsmall", AT, {"mail_from": "a@x.test"})
    db.conn.close()
    upgraded = write_config(tmp_path / "old.toml", base_settings(tmp_path / "old", **{"store.path": str(path)}))
    result = run_cli(upgraded, "init")
    assert result.returncode == 0, result.stderr
    assert b"on a large spool this takes a while" in result.stderr, result.stderr
