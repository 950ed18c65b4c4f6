"""Issue 21 items 3 and 4: the SMTP receiver's memory and connections are bounded, and an
honest large mail is neither held up by a slow client nor cut while its bytes still flow.

Through the real `serve` (memory is read from /proc) and, where a timeout is scaled down,
through the real receiver in this process, as test_reliability_hostile.py does.
"""
from __future__ import annotations

import hashlib
import select
import smtplib
import socket
import threading
import time
import uuid

import pytest

from conftest import wait_for
from mail_fixtures import REFUNDS, MailDesk, Wire, desk_from, mail_settings
from processes import vm_status
from refunddesk.intake.email import receiving
from refunddesk.intake.email import smtp as smtp_module
from refunddesk.intake.email.receiving import Unstuffer
from refunddesk.intake.email.smtp import start_receiver

MB = 2**20


def big_mail(sender: str, size: int) -> bytes:
    line = b"A" * 76 + b"\r\n"
    head = (f"From: {sender}\r\nTo: {REFUNDS}\r\nSubject: logs\r\nMessage-ID: <{uuid.uuid4().hex}@customer.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
            "Please refund 5 USD.\r\n--b\r\nContent-Type: application/octet-stream; name=log.bin\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n").encode()
    return head + line * (size // len(line)) + b"--b--\r\n"


def test_unstuffing_in_pieces_is_unstuffing_of_the_whole():
    stuffed = b"..first line\r\nplain\r\n..\r\n...three\r\nend.\r\n"
    whole = stuffed[1:].replace(b"\r\n.", b"\r\n")
    for cut in range(1, len(stuffed)):
        unstuff = Unstuffer()
        assert unstuff.feed(stuffed[:cut]) + unstuff.feed(stuffed[cut:], final=True) == whole, cut


def test_parallel_large_transfers_without_size_keep_serve_small_and_every_accepted_mail_stored(tmp_path):
    """60 parallel 2 MB transfers declaring no SIZE (the issue's 150 x 10 MB, scaled; the
    benchmark runs it in full): the receiver holds at most its budget in memory, however many
    transfers are under way (each alone may hold up to 1 MiB before it spills to disk)."""
    settings = mail_settings(tmp_path, **{"email.smtp_intake.buffer_bytes": 8 * MB, "email.smtp_intake.max_connections_per_client": 100})
    desk = MailDesk(tmp_path, settings).start()
    try:
        pid = desk.served.process.pid
        before = vm_status(pid)["VmHWM"] * 1024
        mails = {f"big{n}@customer.test": big_mail(f"big{n}@customer.test", 2 * MB) for n in range(60)}
        accepted: dict[str, bytes] = {}
        errors: list[BaseException] = []

        def deliver(sender: str, raw: bytes) -> None:
            try:
                with smtplib.SMTP("127.0.0.1", desk.smtp_port, timeout=120) as client:
                    client.sendmail(sender, [REFUNDS], raw)
                accepted[sender] = raw
            except (smtplib.SMTPException, OSError) as exc:
                errors.append(exc)

        threads = [threading.Thread(target=deliver, args=item) for item in mails.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        growth = vm_status(pid)["VmHWM"] * 1024 - before
        assert not errors and len(accepted) == 60, errors[:3]
        # 120 MB arrived at once: buffered whole (before) serve grew by more than that; measured
        # 42 MB with the budget (57 MB without it: each transfer's 1 MiB before spilling, in all).
        assert growth < 90 * MB, f"serve grew by {growth / MB:.0f} MB"
        raws = [bytes(r[0]) for r in desk.db.execute("SELECT raw FROM inbound")]
        assert sorted(hashlib.sha256(r).hexdigest() for r in raws) == sorted(hashlib.sha256(r).hexdigest() for r in accepted.values())
    finally:
        desk.stop()


def test_connections_past_the_cap_are_told_421(tmp_path):
    settings = mail_settings(tmp_path, **{"email.smtp_intake.max_connections_per_client": 3})
    desk = MailDesk(tmp_path, settings).start()
    held = []
    try:
        held = [Wire(desk.smtp_port) for _ in range(3)]  # each got its 220 greeting
        with socket.create_connection(("127.0.0.1", desk.smtp_port), timeout=10) as extra:
            assert extra.makefile("rb").readline().startswith(b"421 4.7.0")
        held.pop().close()
        wait_for(lambda: _greeted(desk.smtp_port), 10, message="a place freed by a closed connection")
    finally:
        for wire in held:
            wire.close()
        desk.stop()


def _greeted(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        return sock.makefile("rb").readline().startswith(b"220")


def test_a_slow_holder_does_not_stop_an_honest_large_mail(tmp_path):
    desk = MailDesk(tmp_path, mail_settings(tmp_path)).start()
    holder = Wire(desk.smtp_port)
    try:
        assert holder.say(b"EHLO slow.test\r\n").startswith(b"250")
        assert holder.say(f"MAIL FROM:<slow@customer.test> SIZE=2000000\r\n".encode()).startswith(b"250")
        assert holder.say(f"RCPT TO:<{REFUNDS}>\r\n".encode()).startswith(b"250")
        assert holder.say(b"DATA\r\n").startswith(b"354")
        holder.write(b"Subject: slow\r\n\r\n" + b"x" * 1000)
        started = time.monotonic()
        raw = big_mail("honest@customer.test", 3 * MB)
        with smtplib.SMTP("127.0.0.1", desk.smtp_port, timeout=60) as client:
            client.sendmail("honest@customer.test", [REFUNDS], raw)
        assert time.monotonic() - started < 30  # it was told 451 after 61 s
        holder.write(b"y")  # the holder is still connected: nobody waited for it
        wait_for(lambda: desk.cases_of("honest@customer.test"), 30, message="the honest mail's case")
    finally:
        holder.close()
        desk.stop()


@pytest.fixture
def quick_receiver(tmp_path, monkeypatch):
    """The real receiver with its command timeout scaled from 120 s to 1 s, and the minimum rate's
    grace from 60 s to 2 s."""
    monkeypatch.setattr(smtp_module, "COMMAND_TIMEOUT", 1.0)
    monkeypatch.setattr(receiving, "RATE_GRACE", 2.0)
    desk, _ = desk_from(tmp_path, mail_settings(tmp_path))
    receiver = start_receiver(desk, lambda: None)
    yield desk
    receiver.stop()


def test_a_transfer_that_keeps_flowing_is_not_cut_by_the_command_timeout(quick_receiver):
    raw = big_mail("steady@customer.test", 3 * MB)
    wire = Wire(quick_receiver.config.email.smtp_intake.port)
    try:
        wire.open_data("steady@customer.test")
        started = time.monotonic()
        for start in range(0, len(raw), 256 * 1024):  # 3 MB over ~3.5 s: longer than the 1 s timeout
            wire.write(raw[start : start + 256 * 1024])
            time.sleep(0.25)  # the client's pace is what is tested, not a wait for the server
        reply = wire.say(b".\r\n")
        assert time.monotonic() - started > 2 * smtp_module.COMMAND_TIMEOUT
        assert reply.startswith(b"250"), reply
    finally:
        wire.close()
    db = quick_receiver.open_db()
    assert db.execute("SELECT raw FROM inbound").fetchone()[0] == raw


def test_a_drip_under_the_minimum_rate_is_cut(tmp_path, monkeypatch):
    """A transfer that never falls silent for the command timeout but averages under the minimum
    rate (scaled: 64 KB/s past a grace of 2 s; in service 1 KB/s past 60 s) is told 451."""
    monkeypatch.setattr(smtp_module, "COMMAND_TIMEOUT", 5.0)
    monkeypatch.setattr(receiving, "RATE_GRACE", 2.0)
    monkeypatch.setattr(receiving, "MIN_RATE", 64 * 1024)
    desk, _ = desk_from(tmp_path, mail_settings(tmp_path))
    receiver = start_receiver(desk, lambda: None)
    wire = Wire(desk.config.email.smtp_intake.port)
    try:
        wire.open_data("drip@customer.test")
        started = time.monotonic()
        reply = b""
        while time.monotonic() - started < 20 and not reply:
            try:
                wire.write(b"x" * 16 * 1024)  # 16 KB every half second: 32 KB/s, never silent for long
            except OSError:
                break
            readable, _, _ = select.select([wire.sock], [], [], 0.5)  # the drip's pace: a reply or half a second
            if readable:
                reply = wire.stream.readline()
        assert reply.startswith(b"451 4.4.2"), reply
        assert time.monotonic() - started < 15
    finally:
        wire.close()
        receiver.stop()
