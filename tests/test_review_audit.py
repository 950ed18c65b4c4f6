"""Records: the event log cannot be edited through any command, nothing is deleted before
seven years (PIF-10), and refund statements export as CSV for a period (PIF-10)."""
from __future__ import annotations

import csv
import io
import sqlite3
from datetime import timedelta

import pytest

from conftest import add_agents, run_cli
from refunddesk.cli import build_parser
from refunddesk.review.decisions import approve, reject
from refunddesk.harness.driver import mail_case
from refunddesk.store.clock import utcnow

from test_review_decisions import request_302ai


def all_events(db):
    return [tuple(r) for r in db.execute("SELECT id, at, case_id, actor, action, data FROM events ORDER BY id")]


def command_names(parser, prefix=()):
    """Every command path of the `refunddesk` CLI, e.g. ("cases", "approve")."""
    import argparse

    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(prefix + (name,))
                found += command_names(sub, prefix + (name,))
    return found


def test_the_event_log_cannot_be_edited_through_any_command(make_desk, tmp_path):
    desk = make_desk()
    db = desk.open_db()
    add_agents(db, "alice")
    config = tmp_path / "refunddesk.toml"
    when = utcnow() - timedelta(hours=1)
    first = mail_case(desk, db, "a@lumen.test", request_302ai(when - timedelta(days=1), desk), when)
    second = mail_case(desk, db, "b@lumen.test", request_302ai(when - timedelta(days=1), desk), when)
    before = all_events(db)

    # No command is about changing or removing records.
    names = {" ".join(path) for path in command_names(build_parser())}
    assert not [n for n in names if any(word in n for word in ("delete", "remove", "purge", "edit", "update", "events"))], names

    # Every review command appends; what was logged before stays byte for byte.
    for args in (
        ("cases", "request-info", first, "--message", "Which key?", "--agent", "alice"),
        ("cases", "approve", second, "--amount", "12.50", "--agent", "alice"),
        ("cases", "reject", first, "--reason", "late", "--agent", "alice"),
        ("cases", "flag", first, "--clear", "--agent", "alice"),
        ("queue", "--json"), ("sla", "--json"), ("cases", "list", "--json"),
        ("export", "--from", "2000-01-01", "--to", "2100-01-01", "--output", str(tmp_path / "s.csv")),
    ):
        assert run_cli(config, *args).returncode == 0, args
    after = all_events(db)
    assert after[: len(before)] == before and len(after) > len(before)

    # And the database itself refuses, whoever asks.
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE events SET actor = 'mallory' WHERE id = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM events")
    assert all_events(db) == after


@pytest.mark.parametrize("table", ["cases", "messages", "evidence", "outbox", "inbound"])
def test_records_younger_than_seven_years_are_never_deleted(make_desk, table):
    desk = make_desk()
    db = desk.open_db()
    when = utcnow() - timedelta(days=400)
    mail_case(desk, db, "old@lumen.test", request_302ai(when - timedelta(days=1), desk), when)
    count = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    assert count
    with pytest.raises(sqlite3.DatabaseError, match="PIF-10"):
        db.execute(f"DELETE FROM {table}")
    assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == count


def test_export_lists_the_approved_refunds_of_the_period(make_desk, tmp_path):
    desk = make_desk()
    db = desk.open_db()
    tz = desk.policy.timezone
    when = utcnow() - timedelta(days=40)
    paid = mail_case(desk, db, "a@lumen.test", request_302ai(when - timedelta(days=1), desk), when)
    refused = mail_case(desk, db, "b@lumen.test", request_302ai(when - timedelta(days=1), desk), when)
    earlier = mail_case(desk, db, "c@lumen.test", request_302ai(when - timedelta(days=1), desk), when)
    day = when + timedelta(days=10)
    approve(desk, db, paid, "alice", "10.00", "=HYPERLINK(\"http://evil.test\")", now=day)
    reject(desk, db, refused, "alice", "late", now=day)
    approve(desk, db, earlier, "bob", "12.50", now=day - timedelta(days=5))

    first = day.astimezone(tz).date()
    done = run_cli(tmp_path / "refunddesk.toml", "export", "--from", first.isoformat(), "--to", first.isoformat(), "--output", str(tmp_path / "statement.csv"))
    assert done.returncode == 0, done.stderr.decode()
    rows = list(csv.DictReader(io.StringIO((tmp_path / "statement.csv").read_text("utf-8"))))
    assert [r["case_id"] for r in rows] == [paid]
    row = rows[0]
    assert (row["refund_amount"], row["requested_amount"], row["currency"], row["decided_by"], row["account_id"]) == ("10.00", "12.50", "USD", "alice", "acme-prod-7")
    assert row["note"].startswith("'=")  # a spreadsheet must not run customer or agent text as a formula

    everything = run_cli(tmp_path / "refunddesk.toml", "export", "--from", (first - timedelta(days=30)).isoformat(), "--to", first.isoformat())
    assert [r["case_id"] for r in csv.DictReader(io.StringIO(everything.stdout.decode()))] == [earlier, paid]
    backwards = run_cli(tmp_path / "refunddesk.toml", "export", "--from", first.isoformat(), "--to", (first - timedelta(days=1)).isoformat())
    assert backwards.returncode == 1
