"""Refund statements as CSV for a period (PIF-10: statements for enterprise accounting).

One row per approved refund decided in the period, dates read as local days in the policy's
time zone, both ends included. Cells that a spreadsheet would run as a formula are quoted
with a leading apostrophe: customer text must never become a formula in accounting's Excel.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import date, datetime, time, timedelta
from typing import Any, TextIO

import sqlite_utils

from refunddesk.desk import Desk
from refunddesk.progress import Progress
from refunddesk.store.clock import required_stamp, stamp

COLUMNS = (
    "case_id",
    "kind",
    "parent_id",
    "decided_at",
    "decided_by",
    "contact",
    "account_id",
    "channel",
    "reason",
    "payment_method",
    "requested_amount",
    "refund_amount",
    "currency",
    "policy_version",
    "note",
)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
APPROVED_WITHIN = "c.status = 'approved' AND c.decided_at >= ? AND c.decided_at < ?"


def period_bounds(desk: Desk, first: date, last: date) -> tuple[datetime, datetime]:
    tz = desk.policy.timezone
    return datetime.combine(first, time(0), tz), datetime.combine(last + timedelta(days=1), time(0), tz)


def check_period(first: date, last: date) -> None:
    if last < first:
        raise ValueError(f"the period ends ({last}) before it starts ({first})")


def statement_rows(desk: Desk, db: sqlite_utils.Database, first: date, last: date) -> list[dict[str, Any]]:
    """The whole statement as a list, for a short period (`export` streams it instead)."""
    return list(statement(desk, db, first, last)[1])


def statement(
    desk: Desk,
    db: sqlite_utils.Database,
    first: date,
    last: date,
) -> tuple[int, Iterator[dict[str, Any]]]:
    """How many refunds the period has, and their rows one at a time: a year of them is never all
    in memory. Raises ValueError for a period that ends before it starts, before anything is read."""
    check_period(first, last)
    start, end = period_bounds(desk, first, last)
    within = [stamp(start), stamp(end)]
    (total,) = db.execute(f"SELECT count(*) FROM cases c WHERE {APPROVED_WITHIN}", within).fetchone()
    rows = db.query(
        "SELECT c.*, p.fields AS parent_fields FROM cases c LEFT JOIN cases p ON p.id = c.parent_id "
        f"WHERE {APPROVED_WITHIN} ORDER BY c.decided_at, c.id",
        within,
    )
    return total, (statement_row(desk, row) for row in rows)


def statement_row(desk: Desk, row: dict[str, Any]) -> dict[str, Any]:
    tz = desk.policy.timezone
    fields = {**json.loads(row["parent_fields"] or "{}"), **json.loads(row["fields"])}
    decision = json.loads(row.get("decision") or "{}")
    return {
        "case_id": row["id"],
        "kind": row["kind"],
        "parent_id": row["parent_id"] or "",
        # APPROVED_WITHIN selects decided cases only.
        "decided_at": required_stamp(row["decided_at"]).astimezone(tz).isoformat(timespec="seconds"),
        "decided_by": row["decided_by"] or "",
        "contact": row["contact"],
        "account_id": fields.get("account_id", ""),
        "channel": row["channel"],
        "reason": fields.get("reason", ""),
        "payment_method": fields.get("payment_method", ""),
        "requested_amount": decision.get("requested") or fields.get("amount", ""),
        "refund_amount": row["decided_amount"] or "",
        "currency": decision.get("currency") or fields.get("currency", ""),
        "policy_version": row["policy_version"],
        "note": decision.get("note", ""),
    }


def to_csv(rows: Iterable[dict[str, Any]]) -> str:
    out = io.StringIO()
    write_csv(rows, out)
    return out.getvalue()


def write_csv(rows: Iterable[dict[str, Any]], out: TextIO, progress: Progress | None = None) -> int:
    """Write the statement row by row; returns how many refunds it holds."""
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    written = 0
    for row in rows:
        writer.writerow({k: defuse(row.get(k, "")) for k in COLUMNS})
        written += 1
        if progress is not None:
            progress.advance()
    return written


def write_statement(desk: Desk, db: sqlite_utils.Database, first: date, last: date, out: TextIO) -> str:
    """`refunddesk export`: the period's statement into `out`, with progress on stderr while it runs;
    returns the summary. ValueError (a backwards period) comes before anything is written."""
    total, rows = statement(desk, db, first, last)
    with Progress("exported", "refund", total) as progress:
        written = write_csv(rows, out, progress)
    return f"{written} refund{'' if written == 1 else 's'} approved from {first} to {last}"


def defuse(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text
