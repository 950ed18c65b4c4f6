"""SLA compliance as numbers: acknowledged within the promise (PIF-12), reviewed within the
review time (P302-10, PIF-4, PIF-8), and cases per day by channel, for `refunddesk sla` and the
console's dashboard.

An acknowledgement counts from the moment the customer wrote (email) or, in chat, from the
moment the dialog completed: the chat answers every message at once, and its acknowledgement
is the "your request is complete" message. A review counts as done at the agent's first
answer: a decision or a request for more information.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from statistics import median
from typing import Any

import sqlite_utils

from refunddesk.desk import Desk
from refunddesk.policy.model import CHANNELS
from refunddesk.store import spool
from refunddesk.store.clock import parse_stamp, required_stamp, stamp

from .sla import ack_promise

AGENT_ANSWERS = ("approved", "rejected", "info_requested")


@dataclass
class Compliance:
    on_time: int = 0
    late: int = 0
    missed: int = 0  # promise passed, still not done
    pending: int = 0  # not done, promise still open
    median_hours: float | None = None

    @property
    def percent(self) -> float | None:
        judged = self.on_time + self.late + self.missed
        return round(100 * self.on_time / judged, 1) if judged else None


@dataclass
class SlaReport:
    since: str
    until: str
    cases: int
    ack_limit_hours: float
    acknowledgement: Compliance
    review: Compliance
    open_overdue: list[str]
    per_day: list[dict[str, Any]] = field(default_factory=list)
    ack_times: list[dict[str, Any]] = field(default_factory=list)
    review_times: list[dict[str, Any]] = field(default_factory=list)
    # Messages that could not be processed, newest first (at most DEAD_SHOWN): their raw bytes
    # are kept, and an agent retries them once the cause is gone.
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    dead_letter_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["acknowledgement"]["percent"] = self.acknowledgement.percent
        data["review"]["percent"] = self.review.percent
        return data


DEAD_SHOWN = 50


def report(desk: Desk, db: sqlite_utils.Database, now: datetime, days: int = 30) -> SlaReport:
    start = now - timedelta(days=days)
    rows = list(db.query("SELECT * FROM cases WHERE created_at >= ? ORDER BY created_at", [stamp(start)]))
    acks = first_acks(db, [r["id"] for r in rows])
    answers = first_answers(db, [r["id"] for r in rows])
    limit = ack_promise(desk)
    ack, ack_times = Compliance(), []
    review, review_times, overdue = Compliance(), [], []
    for row in rows:
        created = required_stamp(row["created_at"])
        if row["id"] in acks:
            queued_at, sent_at = acks[row["id"]]
            began = created if row["channel"] == "email" else queued_at
            judge(ack, sent_at, began + limit, now)
            if sent_at:
                ack_times.append({"case_id": row["id"], "hours": hours(sent_at - began)})
        due, completed = parse_stamp(row["review_due_at"]), parse_stamp(row["completed_at"])
        if due and completed:
            answered = answers.get(row["id"])
            judge(review, answered, due, now)
            if answered:
                review_times.append(
                    {
                        "case_id": row["id"],
                        "hours": hours(answered - completed),
                        "allowed_hours": hours(due - completed),
                    }
                )
            elif due < now and row["status"] == "queued":
                overdue.append(row["id"])
    ack.median_hours = round(median(t["hours"] for t in ack_times), 2) if ack_times else None
    review.median_hours = round(median(t["hours"] for t in review_times), 2) if review_times else None
    return SlaReport(
        since=start.isoformat(),
        until=now.isoformat(),
        cases=len(rows),
        ack_limit_hours=hours(limit),
        acknowledgement=ack,
        review=review,
        open_overdue=overdue,
        per_day=per_day(desk, rows, now, min(days, 14)),
        ack_times=ack_times[-50:],
        review_times=review_times[-50:],
        dead_letters=spool.dead_letters(db, newest=DEAD_SHOWN),
        dead_letter_count=spool.dead_letter_count(db),
    )


def judge(tally: Compliance, done: datetime | None, promised: datetime, now: datetime) -> None:
    if done is not None:
        if done <= promised:
            tally.on_time += 1
        else:
            tally.late += 1
    elif now > promised:
        tally.missed += 1
    else:
        tally.pending += 1


def first_acks(db: sqlite_utils.Database, case_ids: list[str]) -> dict[str, tuple[datetime, datetime | None]]:
    """Per case: when its acknowledgement was queued and when it was delivered (None: not yet)."""
    found: dict[str, tuple[datetime, datetime | None]] = {}
    for chunk in chunks(case_ids):
        marks = ",".join("?" for _ in chunk)
        for row in db.query(
            "SELECT case_id, min(created_at) AS queued, min(sent_at) AS sent FROM outbox "
            f"WHERE kind = 'ack' AND status != 'suppressed' AND case_id IN ({marks}) GROUP BY case_id",
            chunk,
        ):
            # Every group has a row, and created_at is NOT NULL: `queued` is set.
            found[row["case_id"]] = (required_stamp(row["queued"]), parse_stamp(row["sent"]))
    return found


def first_answers(db: sqlite_utils.Database, case_ids: list[str]) -> dict[str, datetime]:
    found: dict[str, datetime] = {}
    actions = ",".join("?" for _ in AGENT_ANSWERS)
    for chunk in chunks(case_ids):
        marks = ",".join("?" for _ in chunk)
        for row in db.query(
            f"SELECT case_id, min(at) AS at FROM events WHERE action IN ({actions}) AND case_id IN ({marks}) "
            "GROUP BY case_id",
            [*AGENT_ANSWERS, *chunk],
        ):
            found[row["case_id"]] = required_stamp(row["at"])
    return found


def per_day(desk: Desk, rows: list[dict[str, Any]], now: datetime, days: int) -> list[dict[str, Any]]:
    tz = desk.policy.timezone
    today = now.astimezone(tz).date()
    counts = {(today - timedelta(days=n)).isoformat(): dict.fromkeys(CHANNELS, 0) for n in range(days - 1, -1, -1)}
    for row in rows:
        day = required_stamp(row["created_at"]).astimezone(tz).date().isoformat()
        if day in counts and row["channel"] in counts[day]:
            counts[day][row["channel"]] += 1
    return [{"date": day, **by_channel} for day, by_channel in counts.items()]


def hours(delta: timedelta) -> float:
    return round(delta.total_seconds() / 3600, 2)


def chunks(items: list[str], size: int = 500) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
