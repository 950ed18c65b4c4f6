"""A customer who goes quiet in the chat is reminded once before the policy deadline runs out."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from refunddesk.intake import reminders
from refunddesk.policy.context import Context
from refunddesk.policy.model import Case
from refunddesk.policy.rules import deadlines_of
from refunddesk.store import cases as case_store
from refunddesk.store import events, outbox
from refunddesk.store.db import transaction

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)


def collecting(**changes) -> Case:
    base = Case(id="RF-000001", kind="refund", status="collecting", channel="telegram", contact="tg:42",
                created_at=NOW - timedelta(days=3), deadline_at=NOW + timedelta(days=1), conversation_key="42")
    return base.evolve(**changes)


def test_who_is_reminded():
    quiet = NOW - timedelta(hours=30)
    assert reminders.needs_reminder(collecting(), quiet, NOW)
    assert reminders.needs_reminder(collecting(), None, NOW)  # never wrote since the case opened
    assert not reminders.needs_reminder(collecting(), NOW - timedelta(hours=2), NOW)  # still talking
    assert not reminders.needs_reminder(collecting(deadline_at=NOW + timedelta(days=5)), quiet, NOW)  # far away
    assert not reminders.needs_reminder(collecting(deadline_at=NOW - timedelta(hours=1)), quiet, NOW)  # too late
    assert not reminders.needs_reminder(collecting(deadline_at=None), quiet, NOW)  # no deadline known
    assert not reminders.needs_reminder(collecting(dialog={"reminded": "2026-11-23T00:00:00+00:00"}), quiet, NOW)
    assert not reminders.needs_reminder(collecting(status="queued"), quiet, NOW)
    due = reminders.due_reminders([(collecting(), quiet), (collecting(id="RF-000002", status="withdrawn"), quiet)], NOW)
    assert [c.id for c in due] == ["RF-000001"]


def test_a_quiet_chat_gets_one_reminder_through_the_outbox(make_desk):
    desk = make_desk()
    db = desk.open_db()
    version = desk.policy.versions[-1]
    incident = datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc)
    case = collecting(fields={"reason": "service_failure", "credit_type": "paid", "amount": "12.50", "currency": "USD", "incident_at": incident.isoformat()},
                      dialog={"style": "chat", "asking": "account_id"}, policy_version=version.version)
    ((_, deadline),) = deadlines_of(case, version, Context(desk.policy, desk.calendar))
    now = deadline.at - timedelta(days=1)
    case = case.evolve(deadline_at=deadline.at, created_at=now - timedelta(days=2))
    with transaction(db):
        case_store.save_case(db, case, now)
        case_store.add_message(db, case.id, "in", "telegram", now - timedelta(hours=25), "12.50 USD", sender="tg:42")

    assert reminders.send_reminders(desk, db, now) == 1
    (row,) = outbox.for_case(db, case.id)
    assert (row["kind"], row["template"], row["channel"], row["recipient"], row["status"]) == ("reminder", "reminder", "telegram", "42", "pending")
    assert case.id in row["body"] and "Account ID" in row["body"] and deadline.at.astimezone(desk.policy.timezone).date().isoformat() in row["body"]
    stored = case_store.load_case(db, case.id)
    assert stored.status == "collecting" and stored.dialog["reminded"] and stored.dialog["asking"] == "account_id"
    assert [e["action"] for e in events.for_case(db, case.id)] == ["reminder_sent"]

    # Once only, however often the service looks.
    assert reminders.send_reminders(desk, db, now + timedelta(hours=1)) == 0
    assert len(outbox.for_case(db, case.id)) == 1
    db.conn.close()
