"""The SLA watch and report with the clock moved (PIF-12 acknowledgement within 24 hours;
P302-10 / PIF-4 review within 3 working days). No sleeping: every function takes `now`."""
from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta

from conftest import run_cli, wait_for
from refunddesk.outbound.delivery import record_delivery
from refunddesk.review import sla
from refunddesk.review.decisions import approve, request_info
from refunddesk.review.queue import Filters, list_queue
from refunddesk.review.sla_report import report
from refunddesk.harness.driver import mail, mail_case, receive_mail, send_email
from refunddesk.store import events
from refunddesk.store import outbox
from refunddesk.store.cases import load_case
from refunddesk.store.clock import utcnow

from test_review_decisions import request_302ai


def actions(db, case_id):
    return [e["action"] for e in events.for_case(db, case_id)]


def test_an_undelivered_acknowledgement_is_raised_as_the_promise_nears(make_desk):
    desk = make_desk()
    db = desk.open_db()
    start = utcnow()
    case_id = receive_mail(desk, db, mail("slow@relay.test", "Refund", "I was charged twice for one request.", to=desk.addresses.refunds), start)
    ack = next(r for r in outbox.for_case(db, case_id) if r["kind"] == "ack")
    # The relay refuses for hours: the outbox retries with back-off, nobody is bothered yet.
    outbox.mark_failed(db, ack["id"], start + timedelta(minutes=1), "relay deferred: 451")
    assert sla.scan(desk, db, start + timedelta(hours=1)) == []
    assert sla.scan(desk, db, start + timedelta(hours=19, minutes=59)) == []

    raised = sla.scan(desk, db, start + timedelta(hours=20, minutes=1))
    assert [(r["case_id"], r["what"]) for r in raised] == [(case_id, "ack_at_risk")]
    assert raised[0]["last_error"] == "relay deferred: 451"
    assert sla.scan(desk, db, start + timedelta(hours=23)) == []  # raised once, not every pass
    assert actions(db, case_id).count("sla_ack_at_risk") == 1
    [event] = [e for e in events.for_case(db, case_id) if e["action"] == "sla_ack_at_risk"]
    assert event["actor"] == "sla-watch" and event["data"]["promised_by"].startswith((start + timedelta(hours=24)).isoformat()[:16])

    queued = {item.id: item for item in list_queue(desk, db, start + timedelta(hours=23), Filters(status=None))}
    assert "ack_at_risk" in queued[case_id].flags["sla"] and queued[case_id].ack_pending


def test_an_acknowledgement_failed_for_good_is_raised_at_once(make_desk):
    desk = make_desk()
    db = desk.open_db()
    start = utcnow()
    case_id = receive_mail(desk, db, mail("gone@nowhere.test", "Refund", "Charged twice.", to=desk.addresses.refunds), start)
    ack = next(r for r in outbox.for_case(db, case_id) if r["kind"] == "ack")
    outbox.mark_failed(db, ack["id"], start, "recipient refused: [550]", permanent=True)
    raised = sla.scan(desk, db, start + timedelta(minutes=5))
    assert raised and raised[0]["failed_for_good"] and raised[0]["case_id"] == case_id


def test_review_due_dates_near_and_past_are_raised(make_desk):
    desk = make_desk()
    db = desk.open_db()
    start = utcnow() - timedelta(hours=1)
    case_id = mail_case(desk, db, "due@lumen.test", request_302ai(start - timedelta(days=1), desk), start)
    case = load_case(db, case_id)
    due = case.review_due_at
    send_email(desk, db)  # acknowledgements delivered: only the review is at stake

    assert sla.scan(desk, db, due - timedelta(hours=9)) == []
    soon = sla.scan(desk, db, due - timedelta(hours=2))
    assert [(r["case_id"], r["what"]) for r in soon] == [(case_id, "review_due_soon")]
    item = list_queue(desk, db, due - timedelta(hours=2))[0]
    assert item.due_soon and not item.overdue and "review_due_soon" in item.flags["sla"]

    late = sla.scan(desk, db, due + timedelta(minutes=1))
    assert [(r["case_id"], r["what"]) for r in late] == [(case_id, "review_overdue")]
    assert sla.scan(desk, db, due + timedelta(hours=5)) == []
    item = list_queue(desk, db, due + timedelta(hours=1))[0]
    assert item.overdue and "review_overdue" in item.flags["sla"]
    assert actions(db, case_id).count("sla_review_overdue") == 1

    numbers = report(desk, db, due + timedelta(hours=1))
    assert numbers.review.missed == 1 and numbers.review.percent == 0.0 and numbers.open_overdue == [case_id]
    assert numbers.acknowledgement.on_time == 1 and numbers.acknowledgement.percent == 100.0
    assert sum(day["email"] for day in numbers.per_day) == 1 and len(numbers.per_day) == 14


def test_report_counts_late_acknowledgements_and_reviews(make_desk, tmp_path):
    desk = make_desk()
    db = desk.open_db()
    start = utcnow() - timedelta(days=25)  # long enough that 20 days is late across any holiday
    prompt = mail_case(desk, db, "a@lumen.test", request_302ai(start - timedelta(hours=20), desk), start)
    slow = mail_case(desk, db, "b@lumen.test", request_302ai(start - timedelta(hours=20), desk), start)
    for row in db.query("SELECT * FROM outbox WHERE status = 'pending' ORDER BY id"):
        # The first customer's letters leave at once; the second's only after 30 hours.
        sent = start + (timedelta(minutes=1) if row["recipient"] == "a@lumen.test" else timedelta(hours=30))
        record_delivery(db, outbox.decode(row), sent)
    approve(desk, db, prompt, "alice", "12.50", now=start + timedelta(hours=5))
    request_info(desk, db, slow, "alice", "Which key?", now=start + timedelta(days=20))

    numbers = report(desk, db, utcnow())
    assert (numbers.acknowledgement.on_time, numbers.acknowledgement.late) == (1, 1)
    assert numbers.acknowledgement.percent == 50.0
    assert (numbers.review.on_time, numbers.review.late) == (1, 1)
    assert sorted(t["case_id"] for t in numbers.ack_times) == sorted([prompt, slow])
    assert sum(day["email"] for day in numbers.per_day) == 0  # the chart shows the last 14 days

    printed = run_cli(tmp_path / "refunddesk.toml", "sla", "--json")
    assert printed.returncode == 0, printed.stderr.decode()
    data = json.loads(printed.stdout)
    assert data["acknowledgement"]["percent"] == 50.0 and data["review"]["percent"] == 50.0 and data["cases"] == 2
    text = run_cli(tmp_path / "refunddesk.toml", "sla").stdout.decode()
    assert "acknowledged within 24 h: 50.0%" in text and "reviewed by the review due date: 50.0%" in text


def test_the_watch_runs_inside_serve_and_wakes_the_senders(make_desk):
    """`serve` runs sla.watch as a task; it raises what is due and stops with the service."""
    desk = make_desk()
    db = desk.open_db()
    case_id = receive_mail(desk, db, mail("late@relay.test", "Refund", "Charged twice.", to=desk.addresses.refunds), utcnow() - timedelta(hours=21))
    stopping, outbound = threading.Event(), threading.Event()

    async def run_until_raised() -> None:
        task = asyncio.create_task(sla.watch(desk, stopping, outbound))
        await asyncio.to_thread(wait_for, lambda: "sla_ack_at_risk" in actions(desk.open_db(), case_id), 10, 0.02, "the watch to raise")
        stopping.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(run_until_raised())
    assert outbound.is_set()  # the acknowledgement is due for another attempt: the senders were woken
