"""Long commands say how far they are: `import` and `export` run by cron, systemd or CI (no terminal)
print a line every few seconds and a summary, and on a terminal draw tqdm's bar.

The real commands on a real mbox and a real store; $REFUNDDESK_PROGRESS_SECONDS=0 asks for a line
after every item, so that no test waits the 5 seconds an operator gets.
"""
from __future__ import annotations

import csv
import fcntl
import io
import mailbox
import os
import pty
import struct
import subprocess
import sys
import termios
from datetime import timedelta

from conftest import REPO, run_cli
from mail_fixtures import desk_from, letter, mail_settings
from refunddesk.harness.driver import mail_case
from refunddesk.progress import Progress
from refunddesk.review.decisions import approve
from refunddesk.store.clock import utcnow
from test_email_dialog import request_text
from test_review_decisions import request_302ai

AT_ONCE = {"REFUNDDESK_PROGRESS_SECONDS": "0"}
# A MIME tree nested past the parser's limit: refused before it is parsed, kept as a dead letter.
TOO_DEEP = b"\r\n".join(b"Content-Type: multipart/mixed; boundary=x" for _ in range(100))


def backlog(tmp_path):
    """A configuration and an mbox of four mails, the second of them one that becomes a dead letter."""
    _, config = desk_from(tmp_path, mail_settings(tmp_path))
    box = mailbox.mbox(str(tmp_path / "refunds.mbox"))
    box.add(letter("one@customer.test", "Refund", request_text()))
    box.add(letter("deep@customer.test", "Refund", "See below.\r\n" + TOO_DEEP.decode()))
    box.add(letter("two@customer.test", "Refund", "My call froze and credit was deducted."))
    box.add(letter("three@customer.test", "Refund", request_text()))
    box.flush()
    box.close()
    return config, tmp_path / "refunds.mbox"


def lines_starting(text: str, start: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(start)]


def test_import_without_a_terminal_prints_progress_lines_and_a_summary(tmp_path):
    config, path = backlog(tmp_path)

    done = run_cli(config, "import", str(path), env=AT_ONCE)

    assert done.returncode == 0, done.stderr.decode()
    assert lines_starting(done.stderr.decode(), "imported ") == [
        "imported 1 of 4 mails (0 dead letters)",
        "imported 2 of 4 mails (1 dead letter)",
        "imported 3 of 4 mails (1 dead letter)",
        "imported 4 of 4 mails (1 dead letter)",
    ]
    (summary,) = done.stdout.decode().splitlines()
    assert summary.startswith(f"imported 4 messages from {path}: ") and "1 dead letters" in summary
    assert "\r" not in done.stderr.decode()  # no bar redrawn into a log


def test_import_prints_no_line_before_the_interval_has_passed(tmp_path):
    config, path = backlog(tmp_path)

    done = run_cli(config, "import", str(path), env={"REFUNDDESK_PROGRESS_SECONDS": "3600"})

    assert done.returncode == 0, done.stderr.decode()
    assert lines_starting(done.stderr.decode(), "imported ") == []
    assert done.stdout.decode().startswith("imported 4 messages")


def test_import_on_a_terminal_draws_the_bar(tmp_path):
    config, path = backlog(tmp_path)
    controller, terminal = pty.openpty()
    # A terminal's size, 24 rows of 100 columns: a new pseudo-terminal has none, and tqdm draws nothing in 0.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    command = [sys.executable, "-m", "refunddesk.cli", "--config", str(config), "import", str(path)]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=terminal,
                               cwd=REPO, env={**os.environ, **AT_ONCE})
    os.close(terminal)
    shown = b""
    while True:  # until the command closes its end of the terminal
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: no writer left
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    summary = process.communicate(timeout=60)[0].decode()

    assert process.returncode == 0
    text = shown.decode(errors="replace")
    assert "imported: 100%" in text and "4/4" in text and "1 dead letter" in text  # tqdm's bar, not lines
    assert lines_starting(text.replace("\r", "\n"), "imported 4 of 4") == []
    assert summary.startswith("imported 4 messages")


def test_a_line_comes_every_interval_not_every_item():
    now = [0.0]
    out = io.StringIO()
    progress = Progress("imported", "mail", 6, every=5.0, stream=out, clock=lambda: now[0])
    for moment in (1.0, 4.9, 5.0, 6.0, 9.9, 10.0):
        now[0] = moment
        progress.advance()
    progress.close()

    assert out.getvalue().splitlines() == ["imported 3 of 6 mails", "imported 6 of 6 mails"]


def test_export_without_a_terminal_prints_progress_beside_a_clean_csv(make_desk, tmp_path):
    desk = make_desk()
    db = desk.open_db()
    when = utcnow() - timedelta(days=40)
    day = when + timedelta(days=10)
    paid = []
    for n in range(3):
        case = mail_case(desk, db, f"c{n}@lumen.test", request_302ai(when - timedelta(days=1), desk), when)
        approve(desk, db, case, "alice", "10.00", now=day + timedelta(minutes=n))
        paid.append(case)
    db.conn.close()
    first = last = day.astimezone(desk.policy.timezone).date()
    period = ("export", "--from", first.isoformat(), "--to", last.isoformat())

    done = run_cli(tmp_path / "refunddesk.toml", *period, env=AT_ONCE)

    assert done.returncode == 0, done.stderr.decode()
    assert [r["case_id"] for r in csv.DictReader(io.StringIO(done.stdout.decode()))] == paid
    said = done.stderr.decode().splitlines()
    assert lines_starting("\n".join(said), "exported ") == [
        "exported 1 of 3 refunds", "exported 2 of 3 refunds", "exported 3 of 3 refunds",
        f"exported 3 refunds approved from {first} to {last}",
    ]

    statement = tmp_path / "statement.csv"
    written = run_cli(tmp_path / "refunddesk.toml", *period, "--output", str(statement))
    assert written.returncode == 0, written.stderr.decode()
    assert written.stdout == b""
    assert written.stderr.decode().splitlines() == [f"wrote {statement}: 3 refunds approved from {first} to {last}"]
    assert statement.read_bytes() == done.stdout  # the same CSV, CRLF and all
