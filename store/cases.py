"""Cases, their messages and the message IDs that thread email replies to them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlite_utils

from refunddesk.policy.model import OPEN_STATUSES, Case, Finding

from .clock import parse_stamp, stamp

ID_PREFIX = {"refund": "RF", "appeal": "AP"}
TIME_COLUMNS = ("created_at", "completed_at", "acknowledged_at", "review_due_at", "deadline_at", "decided_at")


def allocate_case_id(db: sqlite_utils.Database, kind: str) -> str:
    """The next human-friendly ID (RF-000123). Call inside a transaction (BEGIN IMMEDIATE)."""
    prefix = ID_PREFIX[kind]
    db.execute("INSERT OR IGNORE INTO counters (name, value) VALUES (?, 0)", [prefix])
    db.execute("UPDATE counters SET value = value + 1 WHERE name = ?", [prefix])
    (value,) = db.execute("SELECT value FROM counters WHERE name = ?", [prefix]).fetchone()
    return f"{prefix}-{value:06d}"


def save_case(db: sqlite_utils.Database, case: Case, now: datetime) -> None:
    row = {
        "id": case.id,
        "kind": case.kind,
        "status": case.status,
        "channel": case.channel,
        "contact": case.contact,
        "language": case.language,
        "amount": case.fields.get("amount"),
        "currency": case.fields.get("currency"),
        "description": case.fields.get("description"),
        "fields": json.dumps(case.fields, ensure_ascii=False),
        "attachments": json.dumps(list(case.attachments), ensure_ascii=False),
        "findings": json.dumps([f.to_dict() for f in case.findings], ensure_ascii=False, default=str),
        "dialog": json.dumps(case.dialog, ensure_ascii=False),
        "updated_at": stamp(now),
        "parent_id": case.parent_id,
        "conversation_key": case.conversation_key,
        "policy_version": case.policy_version,
    }
    for column in TIME_COLUMNS:
        row[column] = stamp(getattr(case, column))
    row["created_at"] = row["created_at"] or stamp(now)
    columns = ", ".join(row)
    placeholders = ", ".join("?" for _ in row)
    updates = ", ".join(f"{c} = excluded.{c}" for c in row if c not in ("id", "created_at"))
    db.execute(
        f"INSERT INTO cases ({columns}) VALUES ({placeholders}) ON CONFLICT (id) DO UPDATE SET {updates}",
        list(row.values()),
    )


def case_from_row(row: dict[str, Any]) -> Case:
    return Case(
        id=row["id"],
        kind=row["kind"],
        status=row["status"],
        channel=row["channel"],
        contact=row["contact"],
        language=row["language"],
        fields=json.loads(row["fields"]),
        attachments=tuple(json.loads(row["attachments"])),
        findings=tuple(Finding.from_dict(f) for f in json.loads(row["findings"])),
        dialog=json.loads(row["dialog"]),
        parent_id=row["parent_id"],
        conversation_key=row["conversation_key"],
        policy_version=row["policy_version"],
        **{column: parse_stamp(row[column]) for column in TIME_COLUMNS},
    )


def load_case(db: sqlite_utils.Database, case_id: str) -> Case | None:
    rows = list(db.query("SELECT * FROM cases WHERE id = ?", [case_id]))
    return case_from_row(rows[0]) if rows else None


def load_cases(db: sqlite_utils.Database, case_ids: Iterable[str]) -> dict[str, Case]:
    found = {}
    for case_id in set(case_ids):
        case = load_case(db, case_id)
        if case is not None:
            found[case_id] = case
    return found


def open_case_for(db: sqlite_utils.Database, channel: str, conversation_key: str) -> Case | None:
    """The case a chat conversation is currently filling in, if any."""
    placeholders = ", ".join("?" for _ in OPEN_STATUSES)
    rows = list(
        db.query(
            f"SELECT * FROM cases WHERE channel = ? AND conversation_key = ? AND status IN ({placeholders}) "
            "ORDER BY created_at DESC LIMIT 1",
            [channel, conversation_key, *OPEN_STATUSES],
        )
    )
    return case_from_row(rows[0]) if rows else None


def cases_of_contact(db: sqlite_utils.Database, contact: str) -> list[Case]:
    return [case_from_row(r) for r in db.query("SELECT * FROM cases WHERE contact = ? ORDER BY created_at", [contact])]


def count_recent_requests(db: sqlite_utils.Database, contact: str, since: datetime) -> int:
    (count,) = db.execute(
        "SELECT count(*) FROM cases WHERE contact = ? AND created_at >= ?", [contact, stamp(since)]
    ).fetchone()
    return count


def list_cases(
    db: sqlite_utils.Database, *, status: str | None = None, kind: str | None = None, limit: int | None = None
) -> list[Case]:
    clauses, params = [], []
    if status:
        clauses.append("status = ?")
        params.append(status)
    if kind:
        clauses.append("kind = ?")
        params.append(kind)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    tail = f" LIMIT {int(limit)}" if limit else ""
    return [case_from_row(r) for r in db.query(f"SELECT * FROM cases {where} ORDER BY created_at, id{tail}", params)]


def add_message(
    db: sqlite_utils.Database,
    case_id: str | None,
    direction: str,
    channel: str,
    at: datetime,
    text: str,
    *,
    sender: str = "",
    subject: str = "",
    html: str | None = None,
    inbound_id: int | None = None,
    outbox_id: int | None = None,
    meta: dict[str, Any] | None = None,
) -> int:
    cursor = db.execute(
        "INSERT INTO messages "
        "(case_id, direction, channel, at, sender, subject, text, html, inbound_id, outbox_id, meta) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        [
            case_id,
            direction,
            channel,
            stamp(at),
            sender,
            subject,
            text,
            html,
            inbound_id,
            outbox_id,
            json.dumps(meta or {}, ensure_ascii=False),
        ],
    )
    assert cursor.lastrowid is not None  # set by every INSERT that succeeded
    return cursor.lastrowid


def messages_of(db: sqlite_utils.Database, case_id: str) -> list[dict[str, Any]]:
    return list(db.query("SELECT * FROM messages WHERE case_id = ? ORDER BY at, id", [case_id]))


def remember_message_id(db: sqlite_utils.Database, message_id: str, case_id: str) -> None:
    if message_id:
        db.execute(
            "INSERT OR IGNORE INTO message_ids (message_id, case_id) VALUES (?, ?)", [message_id.strip("<> "), case_id]
        )


def case_for_message_ids(db: sqlite_utils.Database, message_ids: Iterable[str]) -> str | None:
    """The case a reply belongs to, from its In-Reply-To/References (newest reference first)."""
    for message_id in message_ids:
        row = db.execute("SELECT case_id FROM message_ids WHERE message_id = ?", [message_id.strip("<> ")]).fetchone()
        if row:
            return row[0]
    return None


def set_status(db: sqlite_utils.Database, case_id: str, status: str, now: datetime, **extra: Any) -> None:
    assignments = ", ".join(["status = ?", "updated_at = ?", *[f"{k} = ?" for k in extra]])
    values = [status, stamp(now), *[stamp(v) if isinstance(v, datetime) else v for v in extra.values()]]
    db.execute(f"UPDATE cases SET {assignments} WHERE id = ?", [*values, case_id])


def mark_acknowledged(db: sqlite_utils.Database, case_id: str, at: datetime) -> None:
    db.execute("UPDATE cases SET acknowledged_at = ? WHERE id = ? AND acknowledged_at IS NULL", [stamp(at), case_id])
