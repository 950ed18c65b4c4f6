"""Processes opening one store at the same moment: `serve` and the CLI, on a fresh or an older store.

Every process that opens the store applies the pending migrations (store/db.py); they must take
turns, or two of them create the same table ("table counters already exists") or record the same
migration twice. The race is among the opens, so each round starts every process at once on a
store of its own; serve joins some rounds only, as its start and stop cost more than a command.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import sqlite_utils

from conftest import base_settings, write_config
from refunddesk.store import spool
from refunddesk.store.schema import MIGRATIONS
from serving import Served, wait_port_or_fail

ROUNDS = 20
SERVE_EVERY = 4  # serve starts with the commands in every 4th round
JSON_COMMANDS = (("cases", "list", "--json"), ("queue", "--json"), ("deadletters", "list", "--json"))
COMMANDS = (*JSON_COMMANDS, ("sla",), ("cases", "list"))
AT = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


def migration_names() -> list[str]:
    """Every migration in order, as a store that has none applied sees them."""
    return [migration.name for migration in MIGRATIONS.pending(sqlite_utils.Database(memory=True))]


def older_store(path: Path, stop_before: str) -> Path:
    """A store as an older version left it: every migration before `stop_before`, and mail in its spool
    (so that a rebuild of the spool table has rows to copy)."""
    path.parent.mkdir(parents=True)
    db = sqlite_utils.Database(sqlite3.connect(str(path), isolation_level=None))
    db.conn.execute("PRAGMA foreign_keys = ON")
    MIGRATIONS.apply(db, stop_before=stop_before)
    spool.spool(db, "email", "smtp:1", b"Subject: hi\r\n\r\nmy refund", AT, {"mail_from": "a@customer.test"})
    db.conn.close()
    return path


def start_command(config: Path, args: tuple[str, ...]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "refunddesk.cli", "--config", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def run_round(folder: Path, with_serve: bool) -> None:
    """serve (if asked) and the five commands, started at once on the store in `folder`."""
    folder.mkdir(exist_ok=True)
    settings = base_settings(folder, **{"email.smtp_intake.enabled": True})
    config = write_config(folder / "refunddesk.toml", settings)
    served = Served(config, folder / "serve.log").start() if with_serve else None
    try:
        running = [(args, start_command(config, args)) for args in COMMANDS]
        for args, process in running:
            out, err = process.communicate(timeout=60)
            shown = f"{' '.join(args)} in {folder.name} (exit {process.returncode}):\n{err.decode(errors='replace')}"
            assert process.returncode == 0, shown
            assert b"Traceback" not in err, shown
            if args in JSON_COMMANDS:
                assert isinstance(json.loads(out), list), shown
        if served is not None:
            wait_port_or_fail(served, settings["email.smtp_intake.port"])
    finally:
        code = served.stop() if served is not None else 0
    if served is not None:
        assert code == 0 and "Traceback" not in served.output(), served.output()[-3000:]
    db = sqlite_utils.Database(sqlite3.connect(str(folder / "refunddesk.db")))
    try:
        assert MIGRATIONS.pending(db) == []
        applied = [migration.name for migration in MIGRATIONS.applied(db)]
        assert applied == migration_names()  # each once, in order
    finally:
        db.conn.close()


def test_serve_and_commands_opening_a_fresh_store_at_once_all_start(tmp_path):
    for number in range(ROUNDS):
        run_round(tmp_path / f"round{number}", with_serve=number % SERVE_EVERY == 0)


def test_serve_and_commands_opening_an_older_store_at_once_all_start(tmp_path):
    # Older stores of three ages: before the latest migration, and before each of the two before it
    # (m008 rebuilds the spool outside a transaction: it must take its turn like the others).
    ages = migration_names()[-3:]
    templates = {name: older_store(tmp_path / "templates" / name / "refunddesk.db", name) for name in ages}
    for number in range(ROUNDS):
        folder = tmp_path / f"round{number}"
        folder.mkdir()  # run_round writes its configuration beside the copy
        shutil.copyfile(templates[ages[number % len(ages)]], folder / "refunddesk.db")
        run_round(folder, with_serve=number % SERVE_EVERY == 0)
        db = sqlite_utils.Database(sqlite3.connect(str(folder / "refunddesk.db")))
        try:
            assert [row["transport_id"] for row in db["inbound"].rows] == ["smtp:1"]  # the customer's mail survived
        finally:
            db.conn.close()
