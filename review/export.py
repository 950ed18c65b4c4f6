"""Refund statements as CSV for a period (PIF-10: statements for enterprise accounting).

One row per approved refund decided in the period, dates read as local days in the policy's
time zone, both ends included. Cells that a spreadsheet would run as a formula are quoted
with a leading apostrophe: customer text must never become a formula in accounting's Excel.
"""
from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, time, timedelta
from typing import Any, Iterable

import sqlite_utils

from refunddesk.desk import Desk
from refunddesk.store.clock import parse_stamp, stamp

COLUMNS = (
    "case_id", "kind", "parent_id", "decided_at", "decided_by", "contact", "account_id", "channel",
    "reason", "payment_method", "requested_amount", "refund_amount", "currency", "policy_version", "note",
)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def period_bounds(desk: Desk, first: date, last: date) -> tuple[datetime, datetime]:
    tz = desk.policy.timezone
    return datetime.combine(first, time(0), tz), datetime.combine(last + timedelta(days=1), time(0), tz)


def statement_rows(desk: Desk, db: sqlite_utils.Database, first: date, last: date) -> list[dict[str, Any]]:
    if last < first:
        raise ValueError(f"the period ends ({last}) before it starts ({first})")
    start, end = period_bounds(desk, first, last)
    tz = desk.policy.timezone
    rows = db.query(
        "SELECT c.*, p.fields AS parent_fields FROM cases c LEFT JOIN cases p ON p.id = c.parent_id "
        "WHERE c.status = 'approved' AND c.decided_at >= ? AND c.decided_at < ? ORDER BY c.decided_at, c.id",
        [stamp(start), stamp(end)],
    )
    found = []
    for row in rows:
        fields = {**json.loads(row["parent_fields"] or "{}"), **json.loads(row["fields"])}
        decision = json.loads(row.get("decision") or "{}")
        found.append({
            "case_id": row["id"],
            "kind": row["kind"],
            "parent_id": row["parent_id"] or "",
            "decided_at": parse_stamp(row["decided_at"]).astimezone(tz).isoformat(timespec="seconds"),
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
        })
    return found


def to_csv(rows: Iterable[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: defuse(row.get(k, "")) for k in COLUMNS})
    return out.getvalue()


def defuse(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text
