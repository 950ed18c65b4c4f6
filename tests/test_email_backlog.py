"""`refunddesk import`: an old refunds mailbox moves in without a storm of acknowledgements.

The real command on a real mbox file and a real Maildir; the store is read afterwards.
"""
from __future__ import annotations

import mailbox
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

from conftest import run_cli
from mail_fixtures import PNG, desk_from, letter, mail_settings
from test_email_dialog import charge_time, request_text


def dated(raw: bytes, days_ago: int) -> bytes:
    """The mail as the old mailbox holds it: delivered (Received) `days_ago` days ago."""
    when = format_datetime(datetime.now(timezone.utc) - timedelta(days=days_ago))
    return f"Received: from mx.customer.test by mx.desk.test; {when}\r\n".encode() + raw.replace(b"Date: ", b"X-Original-Date: ", 1)


def outbox_of(db, recipient: str) -> list[dict]:
    return list(db.query("SELECT status, last_error, kind FROM outbox WHERE recipient = ? ORDER BY id", [recipient]))


def test_an_mbox_backlog_is_imported_once_and_only_mail_inside_the_windows_is_answered(tmp_path):
    desk, config = desk_from(tmp_path, mail_settings(tmp_path))
    recent = letter("recent@customer.test", "Refund", request_text(), files=(("charge.png", PNG, "image/png"),))
    box = mailbox.mbox(str(tmp_path / "refunds.mbox"))
    box.add(dated(recent, 0))
    box.add(dated(letter("late@customer.test", "Refund", request_text(when=charge_time(days_ago=60))), 59))
    box.add(dated(letter("vague@customer.test", "Refund", "My call froze and credit was deducted."), 60))
    box.add(dated(recent, 0).replace(b"mx.desk.test", b"mx2.desk.test"))  # the same mail, delivered twice
    box.flush()
    box.close()

    done = run_cli(config, "import", str(tmp_path / "refunds.mbox"))
    assert done.returncode == 0, done.stderr.decode()
    assert "imported 4 messages" in done.stdout.decode()
    assert "1 answered" in done.stdout.decode() and "2 stored without reply" in done.stdout.decode() and "1 duplicates" in done.stdout.decode()
    db = desk.open_db()
    assert db.execute("SELECT count(*) FROM cases").fetchone()[0] == 3
    assert [r["status"] for r in outbox_of(db, "recent@customer.test")] == ["pending"]
    for old in ("late@customer.test", "vague@customer.test"):
        (held,) = outbox_of(db, old)
        assert held["status"] == "suppressed" and "outside the policy's windows" in held["last_error"]
    (late,) = db.query("SELECT created_at FROM cases WHERE contact = 'late@customer.test'")
    assert late["created_at"] < (datetime.now(timezone.utc) - timedelta(days=58)).isoformat()  # dated by arrival

    again = run_cli(config, "import", str(tmp_path / "refunds.mbox"))
    assert "4 already imported" in again.stdout.decode()
    assert db.execute("SELECT count(*) FROM inbound").fetchone()[0] == 4
    db.conn.close()


def test_a_maildir_with_no_reply_is_stored_and_answered_not_at_all(tmp_path):
    desk, config = desk_from(tmp_path, mail_settings(tmp_path))
    box = mailbox.Maildir(str(tmp_path / "Maildir"), create=True)
    box.add(letter("quiet@customer.test", "Refund", request_text()))
    box.close()
    done = run_cli(config, "import", "--no-reply", str(tmp_path / "Maildir"))
    assert done.returncode == 0, done.stderr.decode()
    db = desk.open_db()
    (held,) = outbox_of(db, "quiet@customer.test")
    assert held["status"] == "suppressed" and "--no-reply" in held["last_error"]
    assert run_cli(config, "import", str(tmp_path / "nowhere")).returncode == 1
    db.conn.close()
