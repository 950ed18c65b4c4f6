"""Reminding a customer who went quiet, once, before the policy deadline runs out.

The case stays `collecting`: the reminder is a nudge, not a decision. Choosing whom to remind
is pure (cases with the time of their last inbound message in, cases to remind out). Sending
is one transaction per case: the outbox row and the `reminded` mark commit together, so a
reminder is never sent twice and never lost.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlite_utils

from refunddesk.desk import Desk
from refunddesk.intake.pipeline import enqueue_reply
from refunddesk.policy.context import Context
from refunddesk.policy.model import Case, Reply
from refunddesk.policy.rules import deadlines_of, missing_items
from refunddesk.store import cases as case_store
from refunddesk.store import events
from refunddesk.store.clock import parse_stamp, stamp, utcnow
from refunddesk.store.db import ThreadedConnection, transaction

if TYPE_CHECKING:
    from refunddesk.outbound.delivery import Bell

log = logging.getLogger("refunddesk.reminders")
QUIET_FOR = timedelta(hours=24)
DEADLINE_WITHIN = timedelta(days=2)
CHECK_EVERY_SECONDS = 300


def needs_reminder(
    case: Case,
    last_inbound_at: datetime | None,
    now: datetime,
    quiet_for: timedelta = QUIET_FOR,
    within: timedelta = DEADLINE_WITHIN,
) -> bool:
    if case.status != "collecting" or case.dialog.get("reminded"):
        return False
    if case.deadline_at is None or not (now < case.deadline_at <= now + within):
        return False  # no deadline known yet, already past, or still far away
    last = last_inbound_at or case.created_at
    return last is not None and now - last >= quiet_for


def due_reminders(
    cases: Iterable[tuple[Case, datetime | None]],
    now: datetime,
    quiet_for: timedelta = QUIET_FOR,
    within: timedelta = DEADLINE_WITHIN,
) -> list[Case]:
    """The collecting cases whose customer went quiet while their deadline draws near."""
    return [case for case, last in cases if needs_reminder(case, last, now, quiet_for, within)]


def collecting_cases(
    db: sqlite_utils.Database, now: datetime, within: timedelta = DEADLINE_WITHIN
) -> list[tuple[Case, datetime | None]]:
    """The collecting cases whose deadline falls in (now, now + within], with the time of their
    last inbound message: only those can need a reminder (needs_reminder decides). Reading
    every collecting case each pass held serve's interpreter ~90 ms on a store of 1,000,000
    cases, and the console stalled meanwhile (bench/queue_scale.py)."""
    rows = db.query(
        "SELECT c.*, (SELECT max(m.at) FROM messages m WHERE m.case_id = c.id AND m.direction = 'in') "
        "AS last_inbound_at "
        "FROM cases c WHERE c.status = 'collecting' AND c.deadline_at > ? AND c.deadline_at <= ? ORDER BY c.id",
        [stamp(now), stamp(now + within)],
    )
    return [(case_store.case_from_row(row), parse_stamp(row["last_inbound_at"])) for row in rows]


def last_inbound_at(db: sqlite_utils.Database, case_id: str) -> datetime | None:
    (value,) = db.execute("SELECT max(at) FROM messages WHERE case_id = ? AND direction = 'in'", [case_id]).fetchone()
    return parse_stamp(value)


def send_reminders(desk: Desk, db: sqlite_utils.Database, now: datetime) -> int:
    """Queue the reminders due now; returns how many were queued."""
    sent = 0
    for candidate in due_reminders(collecting_cases(db, now), now):
        with transaction(db):
            # Read again under the write lock: the customer may have answered meanwhile.
            case = case_store.load_case(db, candidate.id)
            if case is None or not needs_reminder(case, last_inbound_at(db, case.id), now):
                continue
            enqueue_reply(desk, db, case, Reply("reminder", reminder_context(desk, db, case), "reminder"), None, now)
            case_store.save_case(db, case.evolve(dialog={**case.dialog, "reminded": stamp(now)}), now)
            events.record(db, case.id, "system", "reminder_sent", now, {"deadline": stamp(case.deadline_at)})
        sent += 1
    return sent


def reminder_context(desk: Desk, db: sqlite_utils.Database, case: Case) -> dict[str, Any]:
    version = desk.policy.version_named(case.policy_version)
    parent = case.fields.get("parent_ref")
    ctx = Context(desk.policy, desk.calendar, case_store.load_cases(db, [parent] if parent else []))
    tz = desk.policy.timezone
    return {
        "case_id": case.id,
        "kind": case.kind,
        "policy_name": desk.policy.name,
        "missing": missing_items(case, version),
        "deadlines": [
            {"code": w.code, "clause": w.clause, "date": d.at.astimezone(tz).date().isoformat(), "covered": d.covered}
            for w, d in deadlines_of(case, version, ctx)
        ],
    }


async def watch(desk: Desk, stopping: threading.Event, outbound: Bell, every: float = CHECK_EVERY_SECONDS) -> None:
    """The service's periodic task: look for due reminders, and ring the senders if any."""
    store = ThreadedConnection(desk.open_db())
    try:
        while not stopping.is_set():
            try:
                sent = await store.run(send_reminders, desk, store.db, utcnow())
            except Exception:
                log.exception("reminder pass failed; trying again later")
            else:
                if sent:
                    log.info("queued %d reminder(s)", sent)
                    outbound.set()
            await asyncio.sleep(every)
    finally:
        await store.close()
