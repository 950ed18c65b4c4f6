"""An agent's decisions: approve, reject, ask the customer for more. Each is one transaction
that changes the case, records who decided in the event log and puts the letter in the outbox,
so a decision is never recorded without its letter, nor a letter sent without its decision.

Findings never decide money (both policies): these functions check only what the policy makes
a hard limit for the agent: the amount cap (P302-13, PIF-5), the reason codes the policy knows
(P302-12), and four eyes on appeals (the agent who decided a case does not decide its appeal).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlite_utils

from refunddesk.desk import Desk
from refunddesk.intake.pipeline import enqueue_reply
from refunddesk.policy.model import DECIDED_STATUSES, OPEN_STATUSES, Case, Reply
from refunddesk.policy.preset import PolicyVersion
from refunddesk.store import cases as case_store
from refunddesk.store import events
from refunddesk.store.clock import utcnow
from refunddesk.store.db import transaction

from . import letters

# Every open case, for each decision alike: an agent may decide a request the customer never
# completed (rejected as `incomplete`, P302-9; approved only with an amount on record, P302-13).
DECIDABLE = OPEN_STATUSES
MAX_TEXT = 4000
CENT = Decimal("0.01")


class DecisionError(ValueError):
    """The decision cannot be taken as asked; the message says why, in the agent's words."""


@dataclass(frozen=True)
class Decided:
    case: Case
    outbox_id: int


def approve(
    desk: Desk,
    db: sqlite_utils.Database,
    case_id: str,
    agent: str,
    amount: str | Decimal,
    note: str = "",
    now: datetime | None = None,
) -> Decided:
    now = now or utcnow()
    agent, note = agent_name(agent), clean_text(note, "note")
    value = money(amount)
    with transaction(db):
        case = load_open(db, case_id, DECIDABLE, "approve")
        check_four_eyes(db, case, agent)
        parent = parent_of(db, case)
        version = version_of(desk, case)
        requested = requested_amount(case, parent)
        cap_clause = version.decision.get("cap_clause", "")
        if requested is None:
            raise DecisionError(
                f"{case.id} has no requested amount on record, so the cap ({cap_clause}) cannot be checked; "
                "ask the customer first"
            )
        if value > requested:
            raise DecisionError(
                f"{value} exceeds the requested amount {requested}: "
                f"only the abnormally consumed amount is refunded ({cap_clause})"
            )
        currency = (
            case.fields.get("currency") or (parent.fields.get("currency") if parent else None) or desk.policy.currency
        )
        decided = case.evolve(status="approved", decided_at=now)
        context = letters.approved(
            desk,
            version,
            decided,
            parent,
            amount=value,
            requested=requested,
            currency=currency,
            note=note,
            decided_at=now,
        )
        summary = {
            "amount": f"{value:.2f}",
            "requested": f"{requested:.2f}",
            "currency": currency,
            "note": note,
            "clause": cap_clause,
        }
        return finish(
            desk,
            db,
            decided,
            agent,
            "approved",
            summary,
            Reply("decision_approved", context, "decision"),
            now,
            amount=f"{value:.2f}",
        )


def reject(
    desk: Desk,
    db: sqlite_utils.Database,
    case_id: str,
    agent: str,
    reason_code: str,
    note: str = "",
    now: datetime | None = None,
) -> Decided:
    now = now or utcnow()
    agent, note = agent_name(agent), clean_text(note, "note")
    with transaction(db):
        case = load_open(db, case_id, DECIDABLE, "reject")
        check_four_eyes(db, case, agent)
        parent = parent_of(db, case)
        version = version_of(desk, case)
        if reason_code not in version.reject_reasons:
            known = ", ".join(version.reject_reasons)
            raise DecisionError(f"unknown reason {reason_code!r}; the policy's reasons are: {known}")
        clause = version.reject_reasons[reason_code]
        decided = case.evolve(status="rejected", decided_at=now)
        context = letters.rejected(
            desk, version, decided, parent, reason=reason_code, clause=clause, note=note, decided_at=now
        )
        summary = {
            "reason": reason_code,
            "clause": clause,
            "note": note,
            **{k: context["decision"][k] for k in ("reapply_deadline", "appeal_deadline")},
        }
        return finish(
            desk, db, decided, agent, "rejected", summary, Reply("decision_rejected", context, "decision"), now
        )


def request_info(
    desk: Desk, db: sqlite_utils.Database, case_id: str, agent: str, message: str, now: datetime | None = None
) -> Decided:
    """Ask the customer for more; their answer, by mail or in chat, puts the case back in the queue."""
    now = now or utcnow()
    agent, message = agent_name(agent), clean_text(message, "message")
    if not message:
        raise DecisionError("the message to the customer is empty")
    with transaction(db):
        case = load_open(db, case_id, DECIDABLE, "ask about")
        asked = case.evolve(status="awaiting_customer")
        case_store.set_status(db, case.id, "awaiting_customer", now)
        events.record(db, case.id, agent, "info_requested", now, {"message": message})
        outbox_id = enqueue_reply(
            desk, db, asked, Reply("request_info", letters.info_request(desk, asked, message), "decision"), None, now
        )
        return Decided(asked, outbox_id)


def finish(
    desk: Desk,
    db: sqlite_utils.Database,
    decided: Case,
    agent: str,
    action: str,
    summary: dict[str, Any],
    reply: Reply,
    now: datetime,
    amount: str | None = None,
) -> Decided:
    case_store.set_status(
        db,
        decided.id,
        decided.status,
        now,
        decided_at=now,
        decided_by=agent,
        decided_amount=amount,
        decision=json.dumps({"outcome": action, **summary}, ensure_ascii=False),
    )
    events.record(db, decided.id, agent, action, now, summary)
    outbox_id = enqueue_reply(desk, db, decided, reply, None, now)
    return Decided(decided, outbox_id)


# --- checks --------------------------------------------------------------------------------------


def load_open(db: sqlite_utils.Database, case_id: str, allowed: tuple[str, ...], verb: str) -> Case:
    case = case_store.load_case(db, (case_id or "").strip().upper())
    if case is None:
        raise DecisionError(f"no case {case_id}")
    if case.status in DECIDED_STATUSES:
        raise DecisionError(f"{case.id} was already decided ({case.status} by {decided_by(db, case.id) or 'unknown'})")
    if case.status not in allowed:
        raise DecisionError(f"cannot {verb} {case.id} while it is {case.status}")
    return case


def check_four_eyes(db: sqlite_utils.Database, case: Case, agent: str) -> None:
    """An appeal is decided by someone other than the agent who decided the appealed case."""
    if case.kind != "appeal" or not case.parent_id:
        return
    first = decided_by(db, case.parent_id)
    if first and first.casefold() == agent.casefold():
        raise DecisionError(
            f"{agent} decided {case.parent_id}, so another agent must decide its appeal {case.id} (four eyes)"
        )


def decided_by(db: sqlite_utils.Database, case_id: str) -> str | None:
    row = db.execute("SELECT decided_by FROM cases WHERE id = ?", [case_id]).fetchone()
    return row[0] if row else None


def parent_of(db: sqlite_utils.Database, case: Case) -> Case | None:
    ref = case.parent_id or case.fields.get("parent_ref")
    return case_store.load_case(db, ref) if ref else None


def version_of(desk: Desk, case: Case) -> PolicyVersion:
    return desk.policy.version_of(case)


def requested_amount(case: Case, parent: Case | None) -> Decimal | None:
    """What the customer asked for; an appeal asks again for its refund case's amount."""
    raw = case.fields.get("amount") or (parent.fields.get("amount") if parent else None)
    try:
        return Decimal(raw).quantize(CENT) if raw else None
    except InvalidOperation:
        return None


MAX_AMOUNT = Decimal(10) ** 9  # no refund of API credit is a billion


def money(amount: str | Decimal) -> Decimal:
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation:
        raise DecisionError(f"not an amount: {amount!r}") from None
    if not value.is_finite() or value <= 0:
        raise DecisionError(f"the amount must be a positive number, not {amount!r}")
    if value > MAX_AMOUNT:  # also keeps quantize() within Decimal's precision (1E+30 answered 500)
        raise DecisionError(f"the amount is not plausible: {amount!r} (at most {MAX_AMOUNT:,})")
    if value != value.quantize(CENT):
        raise DecisionError(f"the amount has more than two decimals: {amount!r}")
    return value.quantize(CENT)


def agent_name(agent: str) -> str:
    name = " ".join((agent or "").split())
    if not name or len(name) > 100:
        raise DecisionError("the acting agent's name is missing or too long")
    return name


def clean_text(text: str | None, what: str) -> str:
    text = (text or "").replace("\r\n", "\n").strip()
    if len(text) > MAX_TEXT:
        raise DecisionError(f"the {what} is longer than {MAX_TEXT} characters")
    return text


def set_special_flags(
    db: sqlite_utils.Database,
    case_id: str,
    agent: str,
    flags: list[str],
    allowed: list[str],
    now: datetime | None = None,
) -> list[str]:
    """PIF-9 special consideration, as the agent sees it: recorded and shown, with no automatic effect."""
    now = now or utcnow()
    agent = agent_name(agent)
    unknown = sorted(set(flags) - set(allowed))
    if unknown:
        raise DecisionError(f"unknown special-consideration flag {unknown[0]!r}; known: {', '.join(allowed)}")
    with transaction(db):
        row = db.execute("SELECT agent_flags FROM cases WHERE id = ?", [case_id]).fetchone()
        if row is None:
            raise DecisionError(f"no case {case_id}")
        current = json.loads(row[0] or "{}")
        chosen = [f for f in allowed if f in flags]
        if current.get("special", []) != chosen:
            current["special"] = chosen
            db.execute("UPDATE cases SET agent_flags = ? WHERE id = ?", [json.dumps(current), case_id])
            events.record(db, case_id, agent, "special_consideration", now, {"flags": chosen})
        return chosen
