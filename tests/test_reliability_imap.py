"""Issue 6 item 5, the IMAP cases tests/test_email_imap.py does not already cover, against a
real Dovecot: a message expunged by another client in the middle of our fetch, and the move
to the processed folder failing for real after the commit (another client deleted the folder).

Already covered there: a UIDVALIDITY change, two pollers on one mailbox, a crash between the
commit and the move, the server dropping the connection mid-IDLE (see docs/reliability.md).
Also here: a forged Authentication-Results in mail read by IMAP is removed (item 9).
"""
from __future__ import annotations

import json
import threading

import pytest
from imapclient import IMAPClient

from conftest import wait_for
from dovecot import dovecot  # noqa: F401 (fixture)
from mail_fixtures import desk_from, letter, mail_settings
from refunddesk.intake import pipeline
from refunddesk.intake.email.imap import start_poller


def inbound_rows(db) -> list[dict]:
    return list(db.query("SELECT id, transport_id, raw, status, meta FROM inbound ORDER BY id"))


def subjects(folder: dict[int, dict]) -> list[str]:
    found = []
    for data in folder.values():
        for line in data[b"BODY[]"].splitlines():
            if line.startswith(b"Subject: "):
                found.append(line[9:].decode())
    return sorted(found)


@pytest.fixture
def imap_desk(tmp_path, dovecot):  # noqa: F811
    """start(**settings) -> (desk, db, poller) reading the test Dovecot; stopped at the end."""
    started = []

    def start(**overrides):
        desk, _ = desk_from(tmp_path, mail_settings(tmp_path, **dovecot.settings(**overrides)))
        db = desk.open_db()
        poller = start_poller(desk, lambda: None)
        started.append((poller, db))
        return desk, db, poller

    yield start
    for poller, db in started:
        poller.stop()
        db.conn.close()


@pytest.mark.parametrize("moment", ["before the size fetch", "between the size and the body fetch"])
def test_a_message_expunged_by_another_client_mid_fetch_costs_nothing_else(imap_desk, dovecot, monkeypatch, moment):  # noqa: F811
    for name in ("first", "victim", "last"):
        dovecot.append(letter(f"{name}@customer.test", name, f"request of {name}"))
    with dovecot.client() as other:
        other.select_folder("INBOX", readonly=True)
        (victim,) = other.search(["SUBJECT", "victim"])
    trigger = b"RFC822.SIZE" if moment == "before the size fetch" else b"BODY.PEEK[]"
    fired = threading.Event()
    original = IMAPClient.fetch

    def fetch(self, messages, data, modifiers=None):
        # Only the timing is ours: a person deletes the mail in their client at this instant.
        wanted = b" ".join(d.encode() if isinstance(d, str) else d for d in data)
        if threading.current_thread().name == "imap-poller" and trigger in wanted and not fired.is_set():
            fired.set()
            with dovecot.client() as other:
                other.select_folder("INBOX")
                other.delete_messages([victim])
                other.expunge()
        return original(self, messages, data, modifiers)

    monkeypatch.setattr(IMAPClient, "fetch", fetch)
    desk, db, poller = imap_desk()
    wait_for(fired.is_set, message="the expunge during the fetch")
    wait_for(lambda: not dovecot.folder("INBOX"), message="INBOX drained")
    wait_for(poller.idling.is_set, message="the poller idling again")
    rows = inbound_rows(db)
    stored = sorted(r["raw"].split(b"Subject: ")[1].split(b"\r\n")[0].decode() for r in rows)
    # The two others are stored once each; the deleted one at most once (if the server still
    # served it), never twice, and nothing is stuck.
    assert stored in (["first", "last"], ["first", "last", "victim"]), stored
    assert len({r["transport_id"] for r in rows}) == len(rows)
    assert subjects(dovecot.folder("Processed")) == stored
    dovecot.append(letter("after@customer.test", "after", "the poller still reads"))
    wait_for(lambda: len(inbound_rows(db)) == len(rows) + 1, message="the next mail")
    print(f"\nexpunged {moment}: stored {stored}, {poller.connections} connection(s)")


def test_the_move_failing_after_the_commit_is_retried_and_stores_nothing_twice(imap_desk, dovecot, caplog):  # noqa: F811
    caplog.set_level("WARNING", logger="refunddesk.imap")
    desk, db, poller = imap_desk(**{"email.imap.processed_folder": "Done"})
    wait_for(poller.idling.is_set, message="the poller idling")
    with dovecot.client() as other:
        other.delete_folder("Done")  # an admin tidies up: MOVE now fails with NO [TRYCREATE]
    raw = letter("moved@customer.test", "Refund", "My call froze and credit was deducted.")
    dovecot.append(raw)
    wait_for(lambda: poller.connections >= 2, message="the poller reconnecting after the failed move")
    assert any("move failed" in r.getMessage() and "TRYCREATE" in r.getMessage() for r in caplog.records)
    moved = dovecot.wait_for_count("Done", 1)
    assert [m[b"BODY[]"] for m in moved.values()] == [raw]
    assert dovecot.folder("INBOX") == {}
    (row,) = inbound_rows(db)  # spooled once, before the move failed; never again
    assert pipeline.process(desk, db, row["id"]) == "done"
    assert db.execute("SELECT count(*) FROM cases").fetchone()[0] == 1


def test_forged_authentication_results_are_removed_from_mail_read_by_imap(imap_desk, dovecot):  # noqa: F811
    forged = b"Authentication-Results: desk.test; dkim=pass; spf=pass; dmarc=pass\r\n"
    upstream = b"Authentication-Results: mx.upstream.test; dkim=fail; spf=fail; dmarc=fail\r\n"
    dovecot.append(upstream + forged + letter("spoof@customer.test", "Refund", "My call froze and credit was deducted."))
    desk, db, poller = imap_desk(**{"email.trusted_authserv_id": "mx.upstream.test"})
    wait_for(lambda: inbound_rows(db), message="the spoofed mail spooled")
    (row,) = inbound_rows(db)
    assert forged.strip() not in row["raw"] and upstream.strip() in row["raw"]
    verdict = json.loads(row["meta"])["authentication"]
    assert verdict["status"] == "unverified" and verdict["removed_forged"] == 1
    assert pipeline.process(desk, db, row["id"]) == "done"
    actions = [r[0] for r in db.execute("SELECT action FROM events ORDER BY id")]
    assert "sender_unverified" in actions and "forged_authentication_removed" in actions
