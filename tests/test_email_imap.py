"""The IMAP poller against a real Dovecot: nothing lost, nothing doubled, whatever fails when.

End-to-end tests run the real `refunddesk serve`; the failure tests run the poller in-process
(start_poller, what `serve` calls) so they can watch it idle and cut its connection.
"""
from __future__ import annotations

import json

import pytest

from conftest import wait_for
from dovecot import dovecot, start_dovecot  # noqa: F401 (fixture)
from mail_fixtures import MailDesk, desk_from, letter, mail_settings, relay  # noqa: F401 (fixture)
from refunddesk.intake import pipeline
from refunddesk.intake.email.imap import load_watermark, start_poller, transport_id
from refunddesk.store import spool
from refunddesk.store.clock import utcnow

SEEN = b"\\Seen"


def inbound_rows(db) -> list[dict]:
    return list(db.query("SELECT id, transport_id, status, case_id, meta FROM inbound ORDER BY id"))


@pytest.fixture
def poller_desk(tmp_path, dovecot):  # noqa: F811
    """A desk whose poller reads the test Dovecot, with its own store connection for asserts."""
    desk, _ = desk_from(tmp_path, mail_settings(tmp_path, **dovecot.settings()))
    db = desk.open_db()
    pollers = []

    def poll():
        poller = start_poller(desk, lambda: None)
        pollers.append(poller)
        return poller

    yield desk, db, poll
    for poller in pollers:
        poller.stop()
    db.conn.close()


def test_imap_mail_read_or_unread_becomes_a_case_is_answered_and_moved_untouched(tmp_path, dovecot, relay):  # noqa: F811
    unread = letter("unread@customer.test", "My API call failed", "The call froze and credit was deducted. Account ID: u-1")
    read = letter("read@customer.test", "Refund please", "Charged twice for one call. Account ID: r-2")
    dovecot.append(unread)
    dovecot.append(read, flags=(SEEN,))  # a person opened it in their mail client first
    served = MailDesk(tmp_path, mail_settings(tmp_path, relay, **dovecot.settings(**{"email.smtp_intake.enabled": False}))).start()
    try:
        processed = dovecot.wait_for_count("Processed", 2)
        assert dovecot.folder("INBOX") == {}
        flags = {data[b"BODY[]"]: set(data[b"FLAGS"]) for data in processed.values()}
        assert SEEN not in flags[unread] and SEEN in flags[read]  # BODY.PEEK: we never mark mail read
        rows = served.settled(2)
        assert [r["status"] for r in rows] == ["done", "done"]
        assert all(json.loads(r["meta"])["source"] == "imap" for r in rows)
        for address in ("unread@customer.test", "read@customer.test"):
            (case,) = served.cases_of(address)
            (ack,) = relay.wait_for(address)
            assert f"[{case.id}]" in ack["Subject"] and ack["Auto-Submitted"] == "auto-replied"
    finally:
        served.stop()


def test_same_mail_by_smtp_twice_and_by_imap_once_is_one_case_with_three_receipts(tmp_path, dovecot, relay):  # noqa: F811
    raw = letter("twice@customer.test", "Refund for a failed call", "The call froze and credit was deducted. Account ID: t-1")
    served = MailDesk(tmp_path, mail_settings(tmp_path, relay, **dovecot.settings())).start()
    try:
        served.send(raw, "twice@customer.test")
        served.send(raw, "twice@customer.test")  # the sender's retry after a lost 250
        dovecot.append(raw)                      # and the copy that also landed in the mailbox
        rows = served.settled(3)
        assert sorted(r["status"] for r in rows) == ["done", "duplicate", "duplicate"]
        (case,) = served.cases_of("twice@customer.test")
        assert {r["case_id"] for r in rows} == {case.id}
        assert [e["action"] for e in served.events(case.id)].count("duplicate_receipt") == 2
        relay.wait_for("twice@customer.test")
        wait_for(lambda: not dovecot.folder("INBOX"), message="the IMAP copy moved")
        assert len(served.outbox("twice@customer.test")) == 1  # one acknowledgement, not three
    finally:
        served.stop()
    assert len(relay.to("twice@customer.test")) == 1


def test_a_crash_between_commit_and_move_makes_no_second_spool_row_or_case(poller_desk, dovecot):  # noqa: F811
    desk, db, poll = poller_desk
    raw = letter("crash@customer.test", "Refund", "The call froze and credit was deducted.")
    dovecot.append(raw)
    with dovecot.client() as client:
        info = client.select_folder("INBOX", readonly=True)
        (uid,) = client.search("ALL")
    # The state a crash right after the commit leaves: spooled, processed, still in INBOX.
    account = f"{desk.config.email.imap.username}@{desk.config.email.imap.host}"
    key = transport_id(account, "INBOX", info[b"UIDVALIDITY"], uid)
    inbound_id, _ = spool.spool(db, "email", key, raw, utcnow(), {"source": "imap"})
    pipeline.process(desk, db, inbound_id)
    poll()
    dovecot.wait_for_count("Processed", 1)
    assert dovecot.folder("INBOX") == {}
    rows = inbound_rows(db)
    assert len(rows) == 1 and rows[0]["transport_id"] == key
    assert db.execute("SELECT count(*) FROM cases").fetchone()[0] == 1


def test_the_server_dropping_the_connection_mid_idle_loses_nothing(poller_desk, dovecot):  # noqa: F811
    desk, db, poll = poller_desk
    poller = poll()
    wait_for(poller.idling.is_set, message="the poller idling")
    dovecot.kick()  # BYE, then the server closes the connection
    dovecot.append(letter("after-kick@customer.test", "Refund", "sent while the poller reconnects"))
    wait_for(lambda: len(inbound_rows(db)) == 1, message="the mail after the kick")
    wait_for(poller.idling.is_set, message="idling again")
    dovecot.restart()  # the server dies without a word (connection reset), then comes back
    dovecot.append(letter("after-restart@customer.test", "Refund", "sent after the restart"))
    wait_for(lambda: len(inbound_rows(db)) == 2, message="the mail after the restart")
    assert poller.connections == 3
    assert dovecot.folder("INBOX") == {}


def test_without_idle_or_move_it_polls_and_moves_by_copy_and_expunge(tmp_path):
    server = start_dovecot(capabilities="IMAP4rev1 LITERAL+ UIDPLUS")
    try:
        desk, _ = desk_from(tmp_path, mail_settings(tmp_path, **server.settings()))
        db = desk.open_db()
        poller = start_poller(desk, lambda: None)
        try:
            server.append(letter("poll@customer.test", "Refund", "first"))
            wait_for(lambda: len(inbound_rows(db)) == 1, message="the first mail, polled")
            server.append(letter("poll@customer.test", "Refund", "second"))
            wait_for(lambda: len(inbound_rows(db)) == 2, timeout=15, message="the second mail, polled")
            server.wait_for_count("Processed", 2)
            assert not poller.idling.is_set()
            assert server.folder("INBOX") == {}
        finally:
            poller.stop()
            db.conn.close()
    finally:
        server.cleanup()


def test_a_new_uidvalidity_resets_the_watermark_and_rereads_the_folder(tmp_path, dovecot):  # noqa: F811
    desk, _ = desk_from(tmp_path, mail_settings(tmp_path, **dovecot.settings(**{"email.imap.folder": "Refunds", "email.imap.processed_folder": ""})))
    db = desk.open_db()
    with dovecot.client() as client:
        client.create_folder("Refunds")
    dovecot.append(letter("v@customer.test", "Refund", "one"), folder="Refunds")
    poller = start_poller(desk, lambda: None)
    try:
        wait_for(lambda: len(inbound_rows(db)) == 1, message="the first mail")
        wait_for(poller.idling.is_set, message="idling")
        account = f"{desk.config.email.imap.username}@{desk.config.email.imap.host}"
        first_validity, _ = load_watermark(db, account, "Refunds")
    finally:
        poller.stop()
    # Another client recreates the folder: UIDs restart, so old watermarks mean nothing.
    with dovecot.client() as client:
        client.delete_folder("Refunds")
        client.create_folder("Refunds")
    dovecot.append(letter("v@customer.test", "Refund", "two"), folder="Refunds")
    poller = start_poller(desk, lambda: None)
    try:
        wait_for(lambda: len(inbound_rows(db)) == 2, message="the mail in the new folder")
        validity, last_uid = load_watermark(db, account, "Refunds")
        assert validity != first_validity and last_uid == 1
        wait_for(poller.idling.is_set, message="idling")
        assert len(inbound_rows(db)) == 2  # left in place (no processed folder), never spooled twice
    finally:
        poller.stop()
        db.conn.close()


def test_two_pollers_on_one_mailbox_spool_each_message_once(poller_desk, dovecot):  # noqa: F811
    desk, db, poll = poller_desk
    for index in range(6):
        dovecot.append(letter(f"pair{index}@customer.test", "Refund", f"request {index}"))
    first, second = poll(), poll()
    wait_for(lambda: not dovecot.folder("INBOX"), message="INBOX drained")
    wait_for(lambda: first.idling.is_set() and second.idling.is_set(), message="both idling")
    rows = inbound_rows(db)
    assert len(rows) == 6 and len({r["transport_id"] for r in rows}) == 6
    # Both may MOVE one message at the same instant; the server can then leave two copies in
    # Processed. That is the server's copy, never a second spool row or case.
    assert len({data[b"BODY[]"] for data in dovecot.folder("Processed").values()}) == 6


def test_a_message_too_large_stays_on_the_server_and_becomes_a_dead_letter(tmp_path, dovecot):  # noqa: F811
    desk, _ = desk_from(tmp_path, mail_settings(tmp_path, **dovecot.settings(**{"email.smtp_intake.max_message_bytes": 4000})))
    db = desk.open_db()
    big = letter("big@customer.test", "Refund", "logs attached", files=(("log.txt", b"x" * 20_000, "text/plain"),))
    dovecot.append(big)
    poller = start_poller(desk, lambda: None)
    try:
        (moved,) = dovecot.wait_for_count("Processed", 1).values()
        assert moved[b"BODY[]"] == big  # the original is kept whole on the server
        (row,) = inbound_rows(db)
        assert json.loads(row["meta"])["oversized"] == len(big)
        assert pipeline.process(desk, db, row["id"]) == "dead"
        (error,) = db.execute("SELECT error FROM inbound WHERE id = ?", [row["id"]]).fetchone()
        assert error.startswith("refused: the message is too large")
    finally:
        poller.stop()
        db.conn.close()
