"""The SLA watch and report: the promises the policies make about time, kept visible.

PIF-12 promises receipt within 24 hours; P302-10 and PIF-4/PIF-8 promise a review within 3
(appeals: 5) working days. The outbox already retries every acknowledgement with back-off; the
watch raises to agents what retrying has not fixed while there is still time: an
acknowledgement undelivered as its promise nears (or failed for good), and reviews whose due
date is near or past. Raising means an event in the log and a flag on the case that the queue
shows; each is raised once. Every function takes `now`, so tests move the clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlite_utils

from refunddesk.desk import Desk
from refunddesk.store import events
from refunddesk.store.clock import required_stamp, stamp, utcnow
from refunddesk.store.db import ThreadedConnection, transaction

if TYPE_CHECKING:
    from refunddesk.outbound.delivery import Bell

log = logging.getLogger("refunddesk.sla")
ACK_WARN_BEFORE = timedelta(hours=4)  # raise when less than this is left of the 24-hour promise
REVIEW_WARN_BEFORE = timedelta(hours=8)  # raise a review due within this
SCAN_SECONDS = 30
ACTOR = "sla-watch"


def ack_promise(desk: Desk) -> timedelta:
    return timedelta(hours=int(desk.policy.versions[-1].acknowledgement.get("hours", 24)))


def scan(desk: Desk, db: sqlite_utils.Database, now: datetime) -> list[dict[str, Any]]:
    """Raise what needs an agent now; returns what was raised in this pass."""
    return raise_acknowledgements(desk, db, now) + raise_reviews(db, now)


def raise_acknowledgements(desk: Desk, db: sqlite_utils.Database, now: datetime) -> list[dict[str, Any]]:
    promise = ack_promise(desk)
    threshold = now - (promise - ACK_WARN_BEFORE)
    rows = list(
        db.query(
            "SELECT id, case_id, created_at, status, attempts, last_error FROM outbox "
            "WHERE kind = 'ack' AND escalated_at IS NULL AND case_id IS NOT NULL "
            "AND (status = 'failed' OR (status = 'pending' AND created_at <= ?)) ORDER BY id",
            [stamp(threshold)],
        )
    )
    raised = []
    for row in rows:
        promised_by = required_stamp(row["created_at"]) + promise
        detail = {
            "outbox": row["id"],
            "attempts": row["attempts"],
            "last_error": row["last_error"],
            "promised_by": promised_by.isoformat(),
            "failed_for_good": row["status"] == "failed",
        }
        with transaction(db):
            claimed = db.execute(
                "UPDATE outbox SET escalated_at = ? WHERE id = ? AND escalated_at IS NULL", [stamp(now), row["id"]]
            ).rowcount
            if not claimed:
                continue
            flag(db, row["case_id"], "ack_at_risk", {**detail, "raised_at": now.isoformat()})
            events.record(db, row["case_id"], ACTOR, "sla_ack_at_risk", now, detail)
        raised.append({"case_id": row["case_id"], "what": "ack_at_risk", **detail})
    return raised


def raise_reviews(db: sqlite_utils.Database, now: datetime) -> list[dict[str, Any]]:
    # The store leaves out what is flagged already for this due date (the loop below still
    # decides): decoding the flags of every overdue case each pass held serve's interpreter
    # ~60 ms on a backlog of 12,000, and the console stalled meanwhile (bench/queue_scale.py).
    rows = list(
        db.query(
            "SELECT id, review_due_at, agent_flags FROM cases "
            "WHERE status = 'queued' AND review_due_at IS NOT NULL AND review_due_at <= ? "
            "AND coalesce(json_extract(agent_flags, CASE WHEN review_due_at <= ? "
            "THEN '$.sla.review_overdue.due' ELSE '$.sla.review_due_soon.due' END), '') "
            "IS NOT review_due_at ORDER BY review_due_at",
            [stamp(now + REVIEW_WARN_BEFORE), stamp(now)],
        )
    )
    raised = []
    for row in rows:
        due = required_stamp(row["review_due_at"])  # the query selects only cases that have one
        what = "review_overdue" if due <= now else "review_due_soon"
        sla = json.loads(row["agent_flags"] or "{}").get("sla", {})
        # Flags are keyed by the due date, so a case that comes back with a new due date is raised again.
        if sla.get(what, {}).get("due") == due.isoformat():
            continue
        detail = {"due": due.isoformat(), "hours_left": round((due - now).total_seconds() / 3600, 1)}
        with transaction(db):
            flag(db, row["id"], what, {**detail, "raised_at": now.isoformat()})
            events.record(db, row["id"], ACTOR, f"sla_{what}", now, detail)
        raised.append({"case_id": row["id"], "what": what, **detail})
    return raised


def flag(db: sqlite_utils.Database, case_id: str, what: str, detail: dict[str, Any]) -> None:
    row = db.execute("SELECT agent_flags FROM cases WHERE id = ?", [case_id]).fetchone()
    flags = json.loads((row[0] if row else None) or "{}")
    flags.setdefault("sla", {})[what] = detail
    db.execute("UPDATE cases SET agent_flags = ? WHERE id = ?", [json.dumps(flags, ensure_ascii=False), case_id])


def retries_due(db: sqlite_utils.Database, now: datetime) -> bool:
    row = db.execute(
        "SELECT 1 FROM outbox WHERE status = 'pending' AND next_attempt_at <= ? LIMIT 1", [stamp(now)]
    ).fetchone()
    return row is not None


async def watch(desk: Desk, stopping: threading.Event, outbound_wake: Bell) -> None:
    """Inside `serve`: scan every SCAN_SECONDS until the service stops."""
    store = ThreadedConnection(desk.open_db())
    try:
        while not stopping.is_set():
            try:
                now = utcnow()
                raised = await store.run(scan, desk, store.db, now)
                for item in raised:
                    log.warning(
                        "SLA: %s on %s (%s)", item["what"], item["case_id"], item.get("due") or item.get("promised_by")
                    )
                if await store.run(retries_due, store.db, now):
                    outbound_wake.set()
            except Exception:
                log.exception("SLA scan failed; trying again next round")
            await asyncio.to_thread(stopping.wait, SCAN_SECONDS)
    finally:
        await store.close()
