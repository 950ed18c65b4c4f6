"""Issue 6 items 2 and 3: the store failing under a delivery, and an exception inside processing.

2. A locked database or a full disk while a mail is delivered: the client gets a 4xx (never a
   250), no partial row remains, and the same delivery succeeds once the fault is gone.
3. A processing error (a policy file that makes a rule fail at run time): the message becomes
   a dead letter with its raw bytes, the worker carries on with the next message, and an
   agent re-runs it with `refunddesk deadletters retry` once the policy is fixed.

Plus the claim that makes item 3's retry safe while `serve` runs: two workers that pick up the
same spooled message (serve's worker and the MTA pipe, or an agent's retry) make one case.
"""
from __future__ import annotations

import io
import json
import os
import resource
import smtplib
import sqlite3
import subprocess
import sys
import threading
import time
from importlib import resources
from pathlib import Path

import pytest

from conftest import base_settings, run_cli, write_config
from mail_fixtures import PNG, REFUNDS, MailDesk, desk_from, letter, mail_settings, relay, send  # noqa: F401 (fixture)
from refunddesk import cli
from refunddesk.intake.email.commands import EX_TEMPFAIL
from refunddesk.intake import pipeline
from refunddesk.intake.email.smtp import start_receiver
from refunddesk.store import db as store_db
from refunddesk.store import spool
from refunddesk.store.clock import utcnow

COMPLETE = (
    "The chat model froze and gave no result, but credit was deducted.\nAmount: 12.50 USD\n"
    "Time of the charge: 2026-11-20 10:00\nAccount ID: u_4711\nIt was paid credit from my top-up.\n"
)


def inbound_count(db) -> int:
    return db.execute("SELECT count(*) FROM inbound").fetchone()[0]


# --- item 2: a locked database ---------------------------------------------------------------------


@pytest.fixture
def short_busy_timeout(monkeypatch):
    """Scale SQLite's 30 s busy timeout down to 0.3 s for this process (not a new setting: a
    real sender waits up to 10 minutes for the answer to DATA, so 30 s is right in service)."""
    monkeypatch.setattr(store_db, "BUSY_TIMEOUT_MS", 300)


def lock_exclusively(path: Path) -> sqlite3.Connection:
    holder = sqlite3.connect(str(path), isolation_level=None, timeout=5)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def test_a_locked_database_gets_451_never_250_and_the_retry_is_stored(tmp_path, short_busy_timeout):
    desk, _ = desk_from(tmp_path, mail_settings(tmp_path))
    db = desk.open_db()
    receiver = start_receiver(desk, lambda: None)
    port = desk.config.email.smtp_intake.port
    try:
        before = letter("a@customer.test", "Refund", COMPLETE)
        assert send(port, before, "a@customer.test") == {}  # the spooler's connection is open
        blocked = letter("b@customer.test", "Refund", COMPLETE, files=(("charge.png", PNG, "image/png"),))
        holder = lock_exclusively(desk.db_path)
        try:
            started = time.monotonic()
            with pytest.raises(smtplib.SMTPDataError) as refused:
                send(port, blocked, "b@customer.test")
            waited = time.monotonic() - started
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert refused.value.smtp_code == 451  # a 4xx: the sender keeps the mail and retries
        assert b"locked" not in refused.value.smtp_error  # and learns nothing of our internals
        assert [r[0] for r in db.execute("SELECT raw FROM inbound ORDER BY id")] == [before]
        assert send(port, blocked, "b@customer.test") == {}  # the fault is gone: the retry is stored
        assert [r[0] for r in db.execute("SELECT raw FROM inbound ORDER BY id")] == [before, blocked]
        print(f"\nlocked database: 451 after {waited:.2f} s (busy timeout scaled to 0.3 s)")
    finally:
        receiver.stop()
        db.conn.close()


def test_the_mta_pipe_exits_75_while_the_database_is_locked_and_stores_on_the_retry(tmp_path, short_busy_timeout, capsys):
    config = write_config(tmp_path / "refunddesk.toml", base_settings(tmp_path))
    raw = letter("pipe@customer.test", "Refund", COMPLETE)

    def deliver() -> int:
        stdin = sys.stdin
        sys.stdin = io.TextIOWrapper(io.BytesIO(raw))
        try:
            return cli.main(["--config", str(config), "deliver", "--recipient", REFUNDS])
        finally:
            sys.stdin = stdin

    assert run_cli(config, "init").returncode == 0
    holder = lock_exclusively(tmp_path / "refunddesk.db")
    try:
        assert deliver() == EX_TEMPFAIL  # sendmail/postfix keep the mail queued and retry
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "temporary failure" in capsys.readouterr().err
    assert deliver() == 0
    assert capsys.readouterr().out.strip().startswith("RF-")
    db = sqlite3.connect(str(tmp_path / "refunddesk.db"))
    assert db.execute("SELECT count(*), min(status) FROM inbound").fetchone() == (1, "done")
    db.close()


# --- item 2: a full disk ---------------------------------------------------------------------------


class FullDisk:
    """A store whose disk can be filled and emptied again. A small tmpfs when we may mount one
    (root), else the same effect through RLIMIT_FSIZE on the serve process (writes past the
    current file sizes fail)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(root)], capture_output=True)
        self.tmpfs = mounted.returncode == 0
        self.filler = root / "filler"
        self.pid: int | None = None

    def fill(self, pid: int) -> None:
        self.pid = pid
        if not self.tmpfs:
            biggest = max(p.stat().st_size for p in self.root.glob("refunddesk.db*"))
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (biggest, resource.RLIM_INFINITY))
            return
        # Unbuffered: a buffered file would try to write its last partial block again on close.
        with open(self.filler, "wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(b"\0" * 65536)
            except OSError:
                pass  # ENOSPC: the disk is full
        assert os.statvfs(self.root).f_bavail == 0

    def empty(self) -> None:
        if self.tmpfs:
            self.filler.unlink(missing_ok=True)
        elif self.pid is not None:
            resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    def release(self) -> None:
        if self.tmpfs:
            subprocess.run(["umount", "-l", str(self.root)], capture_output=True)


@pytest.fixture
def full_disk(tmp_path):
    disk = FullDisk(tmp_path / "store")
    yield disk
    disk.release()


def test_a_full_disk_gets_451_never_250_leaves_no_row_and_delivery_resumes_with_space(tmp_path, full_disk, relay):  # noqa: F811
    settings = mail_settings(tmp_path, relay, **{
        "store.path": str(full_disk.root / "refunddesk.db"),
        "store.files": str(full_disk.root / "files"),
    })
    served = MailDesk(tmp_path, settings).start()
    try:
        served.send(letter("first@customer.test", "Refund", COMPLETE), "first@customer.test")
        served.settled(1)
        relay.wait_for("first@customer.test")
        # Larger than anything the store has written so far: it cannot fit in reused pages.
        big = letter("full@customer.test", "Refund", COMPLETE, files=(("log.png", PNG + os.urandom(1_500_000), "image/png"),))
        full_disk.fill(served.served.process.pid)
        started = time.monotonic()
        with pytest.raises(smtplib.SMTPResponseException) as refused:
            served.send(big, "full@customer.test")
        waited = time.monotonic() - started
        assert 400 <= refused.value.smtp_code < 500, refused.value
        assert served.served.process.poll() is None  # the service lives on
        assert inbound_count(served.db) == 1  # no partial row
        full_disk.empty()
        assert served.send(big, "full@customer.test") == {}
        rows = served.settled(2)
        assert [r["status"] for r in rows] == ["done", "done"]
        (case,) = served.cases_of("full@customer.test")
        (path,) = [r[0] for r in served.db.execute("SELECT path FROM evidence WHERE case_id = ?", [case.id])]
        assert (full_disk.root / "files" / path).stat().st_size == len(PNG) + 1_500_000
        relay.wait_for("full@customer.test")
        assert served.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        print(f"\nfull disk ({'tmpfs' if full_disk.tmpfs else 'RLIMIT_FSIZE'}): {refused.value.smtp_code} after {waited:.2f} s")
    finally:
        full_disk.empty()
        served.stop()


# --- item 3: an exception inside processing --------------------------------------------------------


def policy_file(path: Path, minimum_refund: str) -> Path:
    """The 302.AI preset plus a limits table; a minimum that is not a number breaks the limits
    rule at run time, for every request that names an amount (loading does not check it)."""
    text = resources.files("refunddesk.policy").joinpath("presets/302ai.toml").read_text("utf-8")
    path.write_text(text + f"\n[versions.limits]\nminimum_refund = {minimum_refund}\nminimum_clause = \"P302-9\"\n", "utf-8")
    return path


def test_an_exception_in_processing_is_a_dead_letter_the_worker_goes_on_and_a_retry_runs_it(tmp_path, relay):  # noqa: F811
    policy = policy_file(tmp_path / "policy.toml", '"not-a-number"')
    served = MailDesk(tmp_path, mail_settings(tmp_path, relay, **{"policy.file": str(policy)})).start()
    try:
        broken = letter("broken@customer.test", "Refund", COMPLETE, files=(("charge.png", PNG, "image/png"),))
        served.send(broken, "broken@customer.test")
        # No amount in it: this one does not reach the broken rule, and must not wait for the other.
        served.send(letter("fine@customer.test", "Refund please", "My chat call froze and I got nothing back."), "fine@customer.test")
        dead, fine = served.settled(2)
        assert (dead["status"], fine["status"]) == ("dead", "done")
        assert dead["error"].startswith("InvalidOperation")
        relay.wait_for("fine@customer.test")
        assert served.served.process.poll() is None

        listed = json.loads(run_cli(served.config, "deadletters", "list", "--json").stdout)
        assert [(d["id"], d["size"]) for d in listed] == [(dead["id"], len(broken))]
        (raw,) = served.db.execute("SELECT raw FROM inbound WHERE id = ?", [dead["id"]]).fetchone()
        assert raw == broken  # the raw bytes are kept for the agent and for the retry
        assert served.cases_of("broken@customer.test") == []  # nothing half-made
        assert relay.to("broken@customer.test") == []

        # The operator fixes the policy and restarts the service; an agent re-runs the letter.
        policy_file(policy, "1")
        served.served.stop()
        served.served.start(wait_ports=(served.smtp_port,))
        retried = run_cli(served.config, "deadletters", "retry", str(dead["id"]))
        assert retried.returncode == 0, retried.stderr
        assert retried.stdout.decode().strip() == f"inbound {dead['id']}: done"
        (case,) = served.cases_of("broken@customer.test")
        assert case.fields["amount"] == "12.50" and len(case.attachments) == 1
        assert json.loads(run_cli(served.config, "deadletters", "list", "--json").stdout) == []
        (ack,) = relay.wait_for("broken@customer.test")
        assert f"[{case.id}]" in ack["Subject"]
        again = run_cli(served.config, "deadletters", "retry", str(dead["id"]))
        assert again.returncode == 1 and b"not a dead letter" in again.stderr
    finally:
        served.stop()


# --- the claim: one spooled message, two workers ---------------------------------------------------


def test_two_workers_taking_the_same_spooled_mail_make_one_case_and_one_reply(make_desk):
    """serve's worker and the MTA pipe (or `deadletters retry`) may both load a pending row
    before either commits. Both wait for the write lock here, held by a third connection, so
    the interleaving is certain; the second to get it must find the row taken."""
    desk = make_desk()
    db = desk.open_db()
    raw = letter("race@customer.test", "Refund", COMPLETE, files=(("charge.png", PNG, "image/png"),))
    inbound_id, _ = spool.spool(db, "email", "pipe:race", raw, utcnow(), {"source": "pipe", "rcpt_tos": [REFUNDS], "mail_from": "race@customer.test"})
    holder = lock_exclusively(desk.db_path)
    waiting = threading.Semaphore(0)
    results: list[str] = []

    def worker() -> None:
        own = desk.open_db()
        own.conn.set_trace_callback(lambda sql: waiting.release() if sql.startswith("BEGIN IMMEDIATE") else None)
        try:
            results.append(pipeline.process(desk, own, inbound_id))
        finally:
            own.conn.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for _ in threads:  # both have loaded the row as pending and wait to write
            assert waiting.acquire(timeout=20)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == ["done", "done"]
    assert db.execute("SELECT count(*) FROM cases").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM messages WHERE direction = 'in'").fetchone()[0] == 1
    assert [r[0] for r in db.execute("SELECT action FROM events WHERE action = 'case_opened'")] == ["case_opened"]
    db.conn.close()
