"""Several worker processes (worker.processes): the spool shared out, one chat with one worker.

The store-level share (spool.pending_ids with a lane) on a real SQLite file, then the real
`refunddesk serve` with two workers taking a burst of whole Telegram dialogs and mail at once.
"""
from __future__ import annotations

import email
import email.policy
import smtplib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import wait_for
from fake_telegram import BotUnderTest, fake_telegram  # noqa: F401 (fixture)
from mail_fixtures import letter, relay  # noqa: F401 (fixture)
from processes import process_tree
from refunddesk.config import ConfigError, validate
from refunddesk.store import spool
from refunddesk.store.clock import utcnow
from refunddesk.store.db import open_db, transaction

from test_telegram_dialog import PNG, yesterday_at_ten


@pytest.fixture(scope="module")
def spooled(tmp_path_factory):
    return open_db(tmp_path_factory.mktemp("lanes") / "refunddesk.db")


@given(st.lists(st.one_of(st.none(), st.integers(-10**13, 10**13)), min_size=1, max_size=40), st.integers(1, 5))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_lanes_share_out_every_pending_row_once_and_a_conversation_never_splits(spooled, conversations, lanes):
    with transaction(spooled):
        spooled.execute("UPDATE inbound SET status = 'done' WHERE status = 'pending'")
    rows = {}
    for conversation in conversations:
        row_id, _ = spool.spool(spooled, "telegram" if conversation is not None else "email", f"t:{len(rows)}:{utcnow().timestamp()}", b"raw", utcnow(), {}, conversation)
        rows[row_id] = conversation
    shares = [spool.pending_ids(spooled, 1000, (k, lanes)) for k in range(lanes)]
    assert sorted(i for share in shares for i in share) == sorted(rows)  # every row, exactly once
    assert all(share == sorted(share) for share in shares)  # each lane oldest first
    for conversation in {c for c in conversations if c is not None}:
        holding = [k for k, share in enumerate(shares) if any(rows[i] == conversation for i in share)]
        assert len(holding) == 1, (conversation, holding)


def test_one_senders_mail_is_one_conversation_however_it_arrives():
    from refunddesk.intake.email.parse import mail_conversation

    by_envelope = mail_conversation(b"From: someone-else@x.test\r\n\r\nhi", {"mail_from": "Wei@Customer.test"})
    by_header = mail_conversation(b"From: =?utf-8?b?546L?= <wei@customer.TEST>\r\nSubject: x\r\n\r\nhi", {})
    assert by_envelope == by_header and by_envelope is not None and by_envelope >= 0
    assert mail_conversation(b"Subject: x\r\n\r\nhi", {"mail_from": ""}) is None  # no address: spread by row id
    assert mail_conversation(b"\xff\xfe garbage", {}) is None
    assert mail_conversation(b"From: ada@customer.test\r\n\r\n", {}) != by_header


def test_worker_processes_is_checked():
    base = {"email": {"refunds_address": "r@x.test", "appeals_address": "a@x.test"}}
    assert validate({**base, "worker": {"processes": 3}}, "t.toml", environ={}).worker.processes == 3
    assert validate(base, "t.toml", environ={}).worker.processes == 1
    for wrong in (0, 99):
        with pytest.raises(ConfigError, match="worker.processes"):
            validate({**base, "worker": {"processes": wrong}}, "t.toml", environ={})


def workers_of(served) -> list[int]:
    found = []
    for pid in process_tree(served.process.pid)[1:]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if b"refunddesk.worker" in handle.read():
                    found.append(pid)
        except FileNotFoundError:
            continue
    return found


def test_two_workers_take_a_burst_of_whole_dialogs_each_in_order_and_mail_once(tmp_path, fake_telegram, monkeypatch):  # noqa: F811
    """Every update of eight chats' dialogs is pushed at once, interleaved: answered out of
    order, a dialog would take an answer for the wrong question or confirm before the
    evidence. With two workers each chat still ends queued with exactly its own answers."""
    monkeypatch.setenv("REFUNDDESK_TELEGRAM_TOKEN", fake_telegram.token)
    smtp_port = 0
    bot = BotUnderTest(tmp_path, fake_telegram, **{"worker.processes": 2, "email.smtp_intake.enabled": True})
    smtp_port = bot.desk.config.email.smtp_intake.port
    bot.start()
    try:
        wait_for(lambda: len(workers_of(bot.served)) == 2, 30, message="two worker processes")
        people = [bot.person(5000 + n) for n in range(8)]
        dialogs = [
            [p.text("/refund"), p.press("choose:reason:duplicate_charge"), p.press("choose:credit_type:paid"), p.text(f"{10 + n}.50 USD"),
             p.text(yesterday_at_ten()), p.text(f"acct-{n}"), p.text("I was charged twice for the same request."), p.photo(PNG),
             p.press("done_evidence"), p.press("confirm")]
            for n, p in enumerate(people)
        ]
        for step in range(len(dialogs[0])):
            for dialog in dialogs:
                fake_telegram.push(dialog[step])
        customers = [f"mailer{n}@customer.test" for n in range(10)]
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            for customer in customers:
                client.sendmail(customer, ["refunds@desk.test"], letter(customer, "Refund", "I was charged 3 USD twice on 2026-11-20, account m-1.\n"))

        def settled() -> bool:
            (pending,) = bot.db.execute("SELECT count(*) FROM inbound WHERE status = 'pending'").fetchone()
            (unsent,) = bot.db.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()
            (spooled,) = bot.db.execute("SELECT count(*) FROM inbound").fetchone()
            return spooled == 8 * 10 + 10 and pending == 0 and unsent == 0

        wait_for(settled, 120, message="every update and mail processed and answered")
        for n, person in enumerate(people):
            case = bot.case_of(person)
            assert case.status == "queued", (person.id, case.status, case.fields)
            assert case.fields["amount"] == f"{10 + n}.50" and case.fields["account_id"] == f"acct-{n}"
            assert len(case.attachments) == 1
        assert len(workers_of(bot.served)) == 2
        folder = bot.desk.config.email.outgoing.folder
        acks = [email.message_from_bytes(f.read_bytes(), policy=email.policy.default) for f in folder.glob("*.eml")]
        assert sorted(str(m["To"]) for m in acks) == sorted(customers)  # one acknowledgement each
        (cases,) = bot.db.execute("SELECT count(*) FROM cases WHERE channel = 'email'").fetchone()
        assert cases == 10
    finally:
        bot.close()


def test_a_second_worker_that_dies_is_started_again_and_its_share_answered(tmp_path, relay):  # noqa: F811
    import json
    import os
    import signal

    from mail_fixtures import REFUNDS, desk_from, mail_settings, send
    from serving import Served

    settings = mail_settings(tmp_path, relay, **{"worker.processes": 2})
    _, config = desk_from(tmp_path, settings)
    port = settings["email.smtp_intake.port"]
    served = Served(config, tmp_path / "serve.log").start(wait_ports=(port,))
    lane_file = tmp_path / "refunddesk.db-inhand-1"  # the second lane's in-hand record names its worker

    def second_worker() -> int | None:
        try:
            pid = json.loads(lane_file.read_text() or "{}").get("worker")
        except (OSError, ValueError):
            return None
        return pid if pid in workers_of(served) else None

    try:
        first = wait_for(second_worker, 30, message="the second worker")
        os.kill(first, signal.SIGKILL)
        customers = [f"after{n}@customer.test" for n in range(6)]  # ids spread over both lanes
        for customer in customers:
            assert send(port, letter(customer, "Refund", "Charged 12.50 USD on 2026-11-20 10:00, account acme-7.\n"), customer, REFUNDS) == {}
        for customer in customers:
            (ack,) = relay.wait_for(customer, timeout=60)
            assert "[RF-" in ack["Subject"]
        assert wait_for(lambda: (pid := second_worker()) and pid != first and pid, 30, message="a new second worker") != first
        assert "the worker ended unexpectedly (exit code -9)" in served.output()
    finally:
        assert served.stop() == 0, served.output()[-3000:]
