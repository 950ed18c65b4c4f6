"""The JSON shape of a case, as `cases list/show --json` print it. A public interface: add, never rename."""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from refunddesk.policy.model import Case, read_choices
from refunddesk.store import cases as case_store


def iso(value) -> str | None:
    return value.isoformat() if value else None


def case_json(case: Case, incident_tz=None) -> dict[str, Any]:
    incident = case.fields.get("incident_at")
    return {
        "id": case.id,
        "kind": case.kind,
        "status": case.status,
        "channel": case.channel,
        "contact": case.contact,
        "language": case.language,
        "amount": case.fields.get("amount"),
        "currency": case.fields.get("currency"),
        "incident_at": incident,
        "description": case.fields.get("description"),
        "fields": dict(case.fields),
        # Where the reader chose among several values in the customer's text: which, and the others.
        "read_choices": read_choices(case),
        "attachments": [{k: a[k] for k in ("filename", "content_type", "size", "sha256")} for a in case.attachments],
        "findings": [f.to_dict() for f in case.findings],
        "created_at": iso(case.created_at),
        "completed_at": iso(case.completed_at),
        "acknowledged_at": iso(case.acknowledged_at),
        "review_due_at": iso(case.review_due_at),
        "deadline_at": iso(case.deadline_at),
        "decided_at": iso(case.decided_at),
        "parent_id": case.parent_id,
        "policy_version": case.policy_version,
    }


def case_detail_json(db: sqlite_utils.Database, case: Case) -> dict[str, Any]:
    data = case_json(case)
    data["messages"] = [
        {
            "direction": m["direction"],
            "channel": m["channel"],
            "at": m["at"],
            "text": m["text"],
            "subject": m["subject"],
            "sender": m["sender"],
        }
        for m in case_store.messages_of(db, case.id)
    ]
    decided = db.execute("SELECT decided_by, decided_amount, decision FROM cases WHERE id = ?", [case.id]).fetchone()
    data["decided_by"] = decided[0]
    data["decided_amount"] = decided[1]
    data["decision"] = json.loads(decided[2] or "{}")
    data["outbox"] = [
        {
            "id": r["id"],
            "kind": r["kind"],
            "template": r["template"],
            "status": r["status"],
            "created_at": r["created_at"],
            "sent_at": r["sent_at"],
            "subject": r["subject"],
        }
        for r in db.query("SELECT * FROM outbox WHERE case_id = ? ORDER BY id", [case.id])
    ]
    return data
