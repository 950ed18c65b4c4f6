"""The JSON shape of a case, as `cases list/show --json` print it. A public interface: add, never rename."""
from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from refunddesk.policy.dialog import read_choices
from refunddesk.policy.model import Case
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
        "attachments": [
            {k: a[k] for k in ("filename", "content_type", "size", "sha256")} for a in case.attachments
        ],
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
        {"id": r["id"], "kind": r["kind"], "template": r["template"], "status": r["status"], "created_at": r["created_at"], "sent_at": r["sent_at"], "subject": r["subject"]}
        for r in db.query("SELECT * FROM outbox WHERE case_id = ? ORDER BY id", [case.id])
    ]
    return data


def agent_view(desk, db: sqlite_utils.Database, case_id: str, now) -> dict[str, Any] | None:
    """Everything the console's case page shows: the case, its conversation with the sanitized
    mail HTML, evidence, findings with clauses, the suggestion, the event log, and whether the
    four-eyes rule keeps an agent from deciding it."""
    from refunddesk.intake.email.html import sanitize
    from refunddesk.store import events

    from .decisions import parent_of, version_of
    from .suggest import suggest

    case = case_store.load_case(db, case_id)
    if case is None:
        return None
    row = db.execute("SELECT decided_by, decided_amount, decision, agent_flags FROM cases WHERE id = ?", [case.id]).fetchone()
    parent = parent_of(db, case)
    version = version_of(desk, case)
    evidence = list(db.query("SELECT sha256, filename, content_type, size, created_at FROM evidence WHERE case_id = ? ORDER BY id", [case.id]))
    messages = []
    for message in case_store.messages_of(db, case.id):
        # Sanitized when stored; sanitized again here, so a row written by an older version is safe too.
        message["html"] = sanitize(message["html"]) if message.get("html") else None
        message["meta"] = json.loads(message.get("meta") or "{}")
        messages.append(message)
    return {
        "case": case,
        "json": case_json(case),
        "decided_by": row[0],
        "decided_amount": row[1],
        "decision": json.loads(row[2] or "{}"),
        "flags": json.loads(row[3] or "{}"),
        "parent": parent,
        "parent_decided_by": db.execute("SELECT decided_by FROM cases WHERE id = ?", [parent.id]).fetchone()[0] if parent else None,
        "appeals": [r[0] for r in db.execute("SELECT id FROM cases WHERE parent_id = ? ORDER BY id", [case.id])],
        "evidence": evidence,
        "messages": messages,
        "outbox": list(db.query("SELECT id, kind, template, status, channel, recipient, created_at, sent_at, last_error, attempts FROM outbox WHERE case_id = ? ORDER BY id", [case.id])),
        "events": events.for_case(db, case.id),
        "suggestion": suggest(case, version, desk.policy.currency, parent).to_dict() if case.kind == "refund" or parent else None,
        "reject_reasons": dict(version.reject_reasons),
        "special_flags": list(version.special.get("flags", ())),
        "special_clause": version.special.get("clause", ""),
        "requested": case.fields.get("amount") or (parent.fields.get("amount") if parent else None),
        "overdue": bool(case.status == "queued" and case.review_due_at and case.review_due_at <= now),
    }
