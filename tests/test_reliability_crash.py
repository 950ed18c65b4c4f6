"""Issue 6 item 1: `kill -9` of the real `refunddesk serve` in the middle of an SMTP burst.

Four threads of smtplib clients deliver 300 requests, each with its own screenshot (so the
worker writes evidence files while it is killed). The service is killed with SIGKILL part-way,
then started again. The clients behave like MTAs: a delivery that did not get its 250 (the
connection died under it) is sent again once the port answers. Afterwards every mail is one
case, every mail that got 250 at the first try has exactly one spool row, nothing is pending
or dead, every case has one acknowledgement, and the files under `store.files` are exactly
the evidence rows' files (no orphan, no temporary file, no dangling row).
"""
from __future__ import annotations

import hashlib
import re
import signal
import smtplib
import threading
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import wait_for, wait_for_port
from mail_fixtures import PNG, REFUNDS, desk_from, letter, mail_settings
from serving import Served

THREADS = 4
PER_THREAD = 75
KILL_AFTER = 110          # accepted deliveries before the kill: well inside the burst
MESSAGE_ID = re.compile(rb"(?im)^Message-ID:\s*<(burst-[0-9]+-[0-9]+)@customer\.test>")


def burst_mail(thread: int, index: int) -> tuple[str, str, bytes]:
    sender = f"burst{thread}-{index}@customer.test"
    shot = PNG + f"screenshot of charge {thread}-{index}".encode()  # a different file for each case
    raw = letter(
        sender,
        f"Refund for failed call {thread}-{index}",
        "The chat model froze and gave no result, but credit was deducted.\n"
        "Amount: 1.50 USD\nTime of the charge: 2026-11-20 10:00\nAccount ID: u_" + f"{thread}{index:03d}\n"
        "It was paid credit from my top-up.\n",
        files=(("charge.png", shot, "image/png"),),
        message_id=f"<burst-{thread}-{index}@customer.test>",
    )
    return f"burst-{thread}-{index}", sender, raw


class Burst:
    """MTA-like clients: one connection per thread, a new one (after the port answers again)
    whenever a delivery fails for a reason other than a permanent refusal."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lock = threading.Lock()
        self.accepted = 0
        self.attempts: dict[str, list[str]] = defaultdict(list)
        self.permanent: list[tuple[str, str]] = []
        self.threads = [threading.Thread(target=self.run, args=(t,), name=f"burst-{t}", daemon=True) for t in range(THREADS)]

    def start(self) -> "Burst":
        for thread in self.threads:
            thread.start()
        return self

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            thread.join(timeout)
        assert not any(t.is_alive() for t in self.threads), "a client thread is stuck"

    def note(self, mid: str, outcome: str) -> None:
        with self.lock:
            self.attempts[mid].append(outcome)
            if outcome == "250":
                self.accepted += 1

    def run(self, thread: int) -> None:
        client: smtplib.SMTP | None = None
        for index in range(PER_THREAD):
            mid, sender, raw = burst_mail(thread, index)
            for _ in range(20):
                try:
                    if client is None:
                        wait_for_port(self.port, timeout=60)
                        client = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
                    client.sendmail(sender, [REFUNDS], raw)
                except smtplib.SMTPResponseException as exc:
                    if exc.smtp_code >= 500:
                        with self.lock:
                            self.permanent.append((mid, f"{exc.smtp_code} {exc.smtp_error!r}"))
                        break
                    self.note(mid, str(exc.smtp_code))
                except (smtplib.SMTPException, OSError) as exc:
                    self.note(mid, type(exc).__name__)
                else:
                    self.note(mid, "250")
                    break
                close_quietly(client)
                client = None
        close_quietly(client)


def close_quietly(client: smtplib.SMTP | None) -> None:
    if client is None:
        return
    try:
        client.quit()
    except Exception:
        client.close()


@pytest.fixture
def services():
    started: list[Served] = []
    yield started
    for served in started:
        served.stop(signal.SIGKILL)


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def test_kill_9_mid_burst_then_restart_loses_nothing_and_doubles_nothing(tmp_path, services):
    settings = mail_settings(tmp_path, **{"email.auto_reply_limit": 1000})
    desk, config = desk_from(tmp_path, settings)
    port = settings["email.smtp_intake.port"]
    db = desk.open_db()
    first = Served(config, tmp_path / "serve.log")
    services.append(first)
    first.start(wait_ports=(port,))

    burst = Burst(port).start()
    wait_for(lambda: burst.accepted >= KILL_AFTER, timeout=60, message=f"{KILL_AFTER} accepted deliveries")
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    at_kill = dict(db.execute("SELECT status, count(*) FROM inbound GROUP BY status").fetchall())
    # What a kill between an evidence write and its commit leaves (the kill above may or may
    # not have hit that instant): a half-written temporary file and a blob no row refers to.
    stray = hashlib.sha256(b"written, never committed").hexdigest()
    planted = [desk.files / stray[:2] / stray[2:4] / stray, desk.files / stray[:2] / stray[2:4] / ".incoming-k9x"]
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"written, never committed")
    second = Served(config, tmp_path / "serve.log")
    services.append(second)
    second.start(wait_ports=(port,))
    burst.join(timeout=120)
    assert burst.permanent == [], burst.permanent

    total = THREADS * PER_THREAD
    wait_for(
        lambda: db.execute("SELECT count(*) FROM inbound WHERE status = 'pending'").fetchone()[0] == 0
        and db.execute("SELECT count(DISTINCT dedup_key) FROM inbound WHERE status = 'done'").fetchone()[0] >= total,
        timeout=90,
        message="every delivery processed",
    )
    rows = list(db.query("SELECT id, raw, status, case_id, dedup_key FROM inbound ORDER BY id"))
    by_mail: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        (mid,) = MESSAGE_ID.findall(row["raw"])
        by_mail[mid.decode()].append(row)

    assert set(by_mail) == set(burst.attempts) and len(by_mail) == total
    resent = {mid for mid, outcomes in burst.attempts.items() if outcomes != ["250"]}
    for mid, outcomes in burst.attempts.items():
        assert outcomes[-1] == "250", (mid, outcomes)  # every mail got its 250 in the end
        stored = by_mail[mid]
        if mid not in resent:
            assert len(stored) == 1, (mid, stored)  # 250 at the first try: stored exactly once
        assert len(stored) <= len(outcomes)
        assert sorted(r["status"] for r in stored) == ["done"] + ["duplicate"] * (len(stored) - 1), (mid, stored)
        assert len({r["case_id"] for r in stored}) == 1 and stored[0]["case_id"]

    cases = db.execute("SELECT count(*), count(DISTINCT contact) FROM cases").fetchone()
    assert cases == (total, total)
    acks = db.execute("SELECT case_id, count(*) FROM outbox WHERE template = 'ack' GROUP BY case_id").fetchall()
    assert len(acks) == total and {count for _, count in acks} == {1}  # one acknowledgement per case

    evidence = list(db.query("SELECT case_id, sha256, path FROM evidence"))
    assert len(evidence) == total and len({e["case_id"] for e in evidence}) == total
    on_disk = files_under(desk.files)
    assert on_disk == {e["path"] for e in evidence}  # no orphan and no temporary file is left
    assert not any(path.exists() for path in planted)
    for row in evidence:
        assert hashlib.sha256((desk.files / row["path"]).read_bytes()).hexdigest() == row["sha256"]
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    second.stop()
    services.clear()
    db.conn.close()
    swept = re.findall(r"removed (\d+) evidence files", (tmp_path / "serve.log").read_text("utf-8", "replace"))
    print(
        f"\nkill -9 burst: {total} mails, {burst.accepted} x 250, killed after {KILL_AFTER} accepted; "
        f"spool at the kill {at_kill}; resent after an error: {len(resent)}; "
        f"spool rows {len(rows)} ({len(rows) - total} duplicates); orphan files swept at restart: {sum(map(int, swept))} (2 planted)"
    )
