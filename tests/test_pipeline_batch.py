"""The worker processes a few spooled messages in one transaction: each still stands alone.

A message refused, a message our own code fails on, and good messages around them, in one
batch on a real SQLite store: each gets its own outcome, the good ones exactly what they
would get alone, and nothing of a failed one is left behind.
"""
from __future__ import annotations

from mail_fixtures import desk_from, letter, mail_settings
from refunddesk.intake import pipeline
from refunddesk.store import spool
from refunddesk.store.clock import utcnow

REQUEST = "The API froze and I was charged 12.50 USD on 2026-11-20 10:00, account acme-7.\n"


def nested(depth: int) -> bytes:
    """A mail nested deeper than the parser is allowed to go: refused, with a polite notice."""
    head = b"From: deep@customer.test\r\nTo: refunds@desk.test\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
    body = b"x\r\n"
    for level in range(depth):
        body = (b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (level, level)) + body + (b"\r\n--b%d--\r\n" % level)
    return head + body


def spooled(db, raws: list[bytes]) -> list[int]:
    """As the SMTP receiver spools them, the envelope sender being the From address."""
    def sender(raw: bytes) -> str:
        return raw.split(b"From: ", 1)[1].split(b"\r\n", 1)[0].decode()

    return [spool.spool(db, "email", f"test:{n}", raw, utcnow(), {"mail_from": sender(raw)})[0] for n, raw in enumerate(raws)]


def test_one_batch_one_outcome_each_and_a_failure_undoes_only_its_own_message(tmp_path):
    desk, _ = desk_from(tmp_path, mail_settings(tmp_path))
    db = desk.open_db()
    # A fault inside the store for one sender only: our own code failing half-way through
    # that message's writes (its case row is written before its message row).
    db.execute(
        "CREATE TEMP TRIGGER fail_for_boom BEFORE INSERT ON messages WHEN new.sender = 'boom@customer.test' "
        "BEGIN SELECT RAISE(ABORT, 'simulated failure'); END"
    )
    ids = spooled(db, [
        letter("first@customer.test", "Refund", REQUEST),
        nested(60),
        letter("boom@customer.test", "Refund", REQUEST),
        letter("last@customer.test", "Refund", REQUEST),
    ])
    assert pipeline.process_many(desk, db, ids) == ["done", "dead", "dead", "done"]
    rows = {r["id"]: r for r in db.query("SELECT id, status, case_id, error FROM inbound")}
    assert rows[ids[1]]["error"].startswith("refused: MIME nesting too deep")
    assert "simulated failure" in rows[ids[2]]["error"] and rows[ids[2]]["case_id"] is None
    contacts = {c for (c,) in db.execute("SELECT contact FROM cases")}
    assert contacts == {"first@customer.test", "last@customer.test"}  # the failed one left no case behind
    acks = sorted(r for (r,) in db.execute("SELECT recipient FROM outbox WHERE kind = 'ack'"))
    assert acks == ["first@customer.test", "last@customer.test"]
    notices = [r for (r,) in db.execute("SELECT recipient FROM outbox WHERE template = 'refused'")]
    assert notices == ["deep@customer.test"]
    assert pipeline.process_many(desk, db, ids) == ["done", "dead", "dead", "done"]  # nothing twice


def test_a_batch_ends_after_the_message_that_fills_it(tmp_path):
    desk, _ = desk_from(tmp_path, mail_settings(tmp_path))
    db = desk.open_db()
    big = letter("big@customer.test", "Refund", REQUEST, files=(("shot.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 300_000, "image/png"),))
    ids = spooled(db, [letter("small@customer.test", "Refund", REQUEST), big, letter("next@customer.test", "Refund", REQUEST)])
    assert pipeline.process_many(desk, db, ids, max_bytes=100_000) == ["done", "done"]  # the rest waits
    assert spool.pending_ids(db) == [ids[2]]
    assert pipeline.process_pending(desk, db) == 1
