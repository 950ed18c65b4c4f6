"""Issue 6 item 6: the outgoing relay is down for an hour (the clock is moved, not waited for).

Acknowledgements are made by the real pipeline, sent by `deliver_due` (what `serve`'s send loop
calls) to an aiosmtpd relay that is stopped and started again on the same port. While it is
down every letter waits in the outbox (pending, retried with back-off, never given up); when
it returns each goes out exactly once, the case is marked acknowledged once, and one
`message_sent` event is recorded per letter.
"""
from __future__ import annotations

import asyncio
from datetime import timedelta


from conftest import free_port
from mail_fixtures import REFUNDS, RecordingHandler, desk_from, letter, mail_settings, relay_on
from refunddesk.intake import pipeline
from refunddesk.outbound.delivery import deliver_due
from refunddesk.outbound.email_sender import EmailSender
from refunddesk.store import spool
from refunddesk.store.clock import utcnow

REQUEST = "The chat model froze and gave no result, but credit was deducted.\nAmount: 3.00 USD\nAccount ID: u_77\n"


def test_relay_down_for_an_hour_acknowledgements_wait_and_go_out_exactly_once(tmp_path):
    port = free_port()
    handler = RecordingHandler()
    relay = relay_on(port, handler)
    desk, _ = desk_from(tmp_path, mail_settings(tmp_path, **{"email.outgoing.host": "127.0.0.1", "email.outgoing.port": port}))
    db = desk.open_db()
    sender = EmailSender(desk.config.email.outgoing, desk.addresses.refunds, desk.config.email.outgoing.folder)
    start = utcnow()

    def request(customer: str, at) -> None:
        raw = letter(customer, "Refund", REQUEST)
        inbound_id, _ = spool.spool(db, "email", f"pipe:{customer}", raw, at, {"source": "pipe", "rcpt_tos": [REFUNDS], "mail_from": customer})
        assert pipeline.process(desk, db, inbound_id, now=at) == "done"

    def deliver(at) -> int:
        return asyncio.run(deliver_due(db, sender, now=at))

    try:
        request("before@customer.test", start)
        assert deliver(start) == 1  # the relay works
        relay.stop()
        waiting = [f"wait{i}@customer.test" for i in range(3)]
        for customer in waiting:
            request(customer, start)
        for minute in range(0, 61):  # an hour without a relay, one sending pass a minute
            assert deliver(start + timedelta(minutes=minute)) == 0
        rows = list(db.query("SELECT recipient, status, attempts, last_error, sent_at FROM outbox WHERE recipient LIKE 'wait%' ORDER BY id"))
        assert [r["status"] for r in rows] == ["pending"] * 3  # waiting, never given up
        assert all(r["attempts"] >= 3 and r["last_error"].startswith("relay unreachable") for r in rows), rows
        assert db.execute("SELECT count(*) FROM cases WHERE contact LIKE 'wait%' AND acknowledged_at IS NULL").fetchone()[0] == 3

        relay = relay_on(port, handler)  # the relay is back
        delivered = sum(deliver(start + timedelta(minutes=minute)) for minute in range(61, 181))
        assert delivered == 3
        assert sum(deliver(start + timedelta(hours=hours)) for hours in range(3, 48)) == 0  # nothing twice
        got = [m.rcpt_tos[0] for m in handler.messages]
        assert sorted(got) == sorted(["before@customer.test", *waiting])
        ids = [m.message["Message-ID"] for m in handler.messages]
        assert len(set(ids)) == len(ids)
        assert db.execute("SELECT count(*) FROM outbox WHERE status != 'sent'").fetchone()[0] == 0
        acknowledged = db.execute("SELECT count(*) FROM cases WHERE acknowledged_at IS NOT NULL").fetchone()[0]
        assert acknowledged == 4
        sent_events = db.execute("SELECT count(*), count(DISTINCT json_extract(data, '$.outbox')) FROM events WHERE action = 'message_sent'").fetchone()
        assert sent_events == (4, 4)
        attempts = [r[0] for r in db.execute("SELECT attempts FROM outbox WHERE recipient LIKE 'wait%'")]
        print(f"\nrelay down 60 simulated minutes: attempts per letter {attempts}; each delivered once when it returned")
    finally:
        relay.stop()
        db.conn.close()
