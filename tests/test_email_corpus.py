"""Every mail of the corpus in tests/data/corpus (real-world oddities: bad encodings, TNEF, bounces, broken
boundaries, CJK charsets, nameless attachments) through SMTP into the real `refunddesk serve`.

Nothing may be lost or crash the service: every file is accepted, and every spooled message
ends as a case, a duplicate or a dead letter that still holds its raw bytes; the letters we
answer with go out or fail cleanly; and the worker still serves a customer afterwards.
"""
from __future__ import annotations

import re
import smtplib

from conftest import CORPUS, CORPUS_MAILS, wait_for
from mail_fixtures import REFUNDS, MailDesk, letter, mail_settings, relay  # noqa: F401 (fixture)

FILES = CORPUS_MAILS


def as_an_mta_sends(raw: bytes) -> bytes:
    """SMTP carries CRLF lines: an MTA converts a file's bare LF endings and ends the last line."""
    raw = re.sub(rb"\r?\n", b"\r\n", raw)
    return raw if raw.endswith(b"\r\n") else raw + b"\r\n"


def test_every_corpus_mail_is_a_case_a_duplicate_or_a_dead_letter(tmp_path, relay):  # noqa: F811
    assert len(FILES) >= 100, f"the corpus is missing: {CORPUS}"
    served = MailDesk(tmp_path, mail_settings(tmp_path, relay, **{"email.auto_reply_limit": 1000})).start()
    try:
        sent = []
        with smtplib.SMTP("127.0.0.1", served.smtp_port, timeout=30) as client:
            for path in FILES:  # one connection, one transaction per file, as a relay flushing its queue
                raw = as_an_mta_sends(path.read_bytes())
                assert client.sendmail("corpus@sender.test", [REFUNDS], raw) == {}, path
                sent.append(raw)
        rows = served.settled(len(FILES), timeout=60)
        assert len(rows) == len(FILES)
        statuses = {row["status"] for row in rows}
        assert statuses <= {"done", "duplicate", "dead"}, statuses
        stored = {r[0]: r[1] for r in served.db.execute("SELECT id, raw FROM inbound")}
        for row, raw in zip(rows, sent):
            assert stored[row["id"]] == raw  # the raw bytes are kept, whatever became of the mail
            if row["status"] == "done":
                assert row["case_id"], row
            if row["status"] == "dead":
                assert row["error"], row
        # The answers to the odd senders' addresses are delivered or fail cleanly; none stays stuck.
        wait_for(lambda: not [r for r in served.outbox() if r["status"] == "pending"], timeout=30, message="every letter delivered or failed")

        customer = "after-corpus@customer.test"
        served.send(letter(customer, "Refund", "My call froze and credit was deducted."), customer)
        relay.wait_for(customer)
        assert served.served.process.poll() is None
        counts = {s: sum(1 for r in rows if r["status"] == s) for s in ("done", "duplicate", "dead")}
        print(f"corpus: {len(FILES)} files -> {counts}")
    finally:
        served.stop()
