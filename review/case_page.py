"""What the console's case page shows: the case, its conversation with the sanitized mail HTML,
evidence, findings with clauses, the suggestion, the event log, and whether the four-eyes rule
keeps an agent from deciding it. Apart from case_view.py, so that `cases list --json` does not
load the decisions, the pipeline behind them and the HTML sanitizer.
"""

from __future__ import annotations

import json
from datetime import datetime, tzinfo
from typing import Any

import sqlite_utils

from refunddesk.desk import Desk
from refunddesk.intake.email.html import sanitize
from refunddesk.policy.dialog import read_choices
from refunddesk.policy.model import Case
from refunddesk.policy.preset import PolicyVersion
from refunddesk.store import cases as case_store
from refunddesk.store import events

from .case_view import case_json
from .decisions import parent_of, version_of
from .labels import SHOWN_WITH, event_details, field_text, label
from .suggest import suggest


def agent_view(desk: Desk, db: sqlite_utils.Database, case_id: str, now: datetime) -> dict[str, Any] | None:
    case = case_store.load_case(db, case_id)
    if case is None:
        return None
    row = db.execute(
        "SELECT decided_by, decided_amount, decision, agent_flags FROM cases WHERE id = ?", [case.id]
    ).fetchone()
    parent = parent_of(db, case)
    version = version_of(desk, case)
    zone = desk.policy.timezone
    evidence = list(
        db.query(
            "SELECT sha256, filename, content_type, size, created_at FROM evidence WHERE case_id = ? ORDER BY id",
            [case.id],
        )
    )
    messages = []
    for message in case_store.messages_of(db, case.id):
        # Sanitized when stored; sanitized again here, so a row written by an older version is safe too.
        message["html"] = sanitize(message["html"]) if message.get("html") else None
        message["meta"] = json.loads(message.get("meta") or "{}")
        messages.append(message)
    outbox = db.query(
        "SELECT id, kind, template, status, channel, recipient, created_at, sent_at, last_error, attempts"
        " FROM outbox WHERE case_id = ? ORDER BY id",
        [case.id],
    )
    kinds = {spec.name: spec.type for spec in version.fields}
    logged = [{**e, "details": event_details(e["data"] or {}, zone, kinds)} for e in events.for_case(db, case.id)]
    parent_decided_by = None
    if parent:
        parent_decided_by = db.execute("SELECT decided_by FROM cases WHERE id = ?", [parent.id]).fetchone()[0]
    return {
        "case": case,
        "json": case_json(case),
        "fields": field_rows(case, version, zone),
        "decided_by": row[0],
        "decided_amount": row[1],
        "decision": json.loads(row[2] or "{}"),
        "flags": json.loads(row[3] or "{}"),
        "parent": parent,
        "parent_decided_by": parent_decided_by,
        "appeals": [r[0] for r in db.execute("SELECT id FROM cases WHERE parent_id = ? ORDER BY id", [case.id])],
        "evidence": evidence,
        "messages": messages,
        "outbox": list(outbox),
        "events": logged,
        "suggestion": suggest(case, version, desk.policy.currency, parent).to_dict()
        if case.kind == "refund" or parent
        else None,
        "reject_reasons": dict(version.reject_reasons),
        "special_flags": list(version.special.get("flags", ())),
        "special_clause": version.special.get("clause", ""),
        "requested": case.fields.get("amount") or (parent.fields.get("amount") if parent else None),
        "overdue": bool(case.status == "queued" and case.review_due_at and case.review_due_at <= now),
    }


def field_rows(case: Case, version: PolicyVersion, zone: tzinfo) -> list[dict[str, Any]]:
    """What the customer told us, one labelled row per detail: first those the policy asks for,
    in its asking order, then any other the reader found; with the values it chose between."""
    asked = [spec.name for spec in version.fields if case.kind in spec.kinds]
    names = [n for n in asked if n in case.fields] + [n for n in case.fields if n not in asked]
    choices = read_choices(case)
    rows = []
    for name in names:
        if SHOWN_WITH.get(name) in case.fields:
            continue
        spec = version.field(name)
        kind = spec.type if spec else None
        others = choices[name]["others"] if name in choices else []
        rows.append(
            {
                "name": name,
                "label": label("fields", name),
                "value": field_text(name, case.fields[name], case.fields, kind, zone),
                "others": [field_text(name, other, {}, kind, zone) for other in others],
            }
        )
    return rows
