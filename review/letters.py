"""What a decision letter needs to know: plain values for the decision templates.

The templates own every word the customer reads; this module only works out the facts: the
amount and its cap clause (P302-13, PIF-5), how and when the money arrives (P302-11, PIF-4/6/7),
the specific reason with its clause, and the re-application and appeal deadlines as dates on
the policy's working-day calendar (P302-12, PIF-8).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, overload

from refunddesk.desk import Desk
from refunddesk.policy.deadlines import window_deadline
from refunddesk.policy.model import Case
from refunddesk.policy.preset import PolicyVersion
from refunddesk.render import language_of


def base(desk: Desk, case: Case) -> dict[str, Any]:
    """The keys every customer letter shares (a subset of what the dialog's letters carry)."""
    return {
        "case_id": case.id,
        "kind": case.kind,
        "status": case.status,
        "policy": desk.policy.id,
        "policy_name": desk.policy.name,
        "fields": dict(case.fields),
        "timezone": str(desk.policy.timezone),
    }


@overload
def local_date(desk: Desk, moment: datetime) -> str: ...
@overload
def local_date(desk: Desk, moment: datetime | None) -> str | None: ...
def local_date(desk: Desk, moment: datetime | None) -> str | None:
    return moment.astimezone(desk.policy.timezone).date().isoformat() if moment else None


def origin(name: str, case: Case, parent: Case | None, decided_at: datetime) -> datetime | None:
    """The moment a window counts from: the incident, the purchase, or this decision."""
    if name == "decision":
        return decided_at
    field = "purchase_at" if name == "purchase" else "incident_at"
    value = case.fields.get(field) or (parent.fields.get(field) if parent else None)
    return datetime.fromisoformat(value) if value else None


def deadline(desk: Desk, start: datetime | None, length: int, unit: str, decided_at: datetime) -> str:
    """The window's last day. A case that never got its starting moment (an incomplete request
    rejected as such) counts from the decision: the letter always states a date (P302-12)."""
    return local_date(desk, window_deadline(desk.calendar, desk.policy.timezone, start or decided_at, length, unit).at)


def appeal_deadline(
    desk: Desk, version: PolicyVersion, case: Case, parent: Case | None, decided_at: datetime
) -> tuple[str | None, str]:
    """PIF-8 / P302-12: the last day to appeal this decision. None for a decision on an appeal."""
    terms = version.decision
    if case.kind == "appeal" or "appeal_window_days" not in terms:
        return None, terms.get("appeal_clause", "")
    start = origin(terms.get("appeal_from", "decision"), case, parent, decided_at)
    return deadline(
        desk, start, int(terms["appeal_window_days"]), terms.get("appeal_unit", "calendar_days"), decided_at
    ), terms.get("appeal_clause", "")


def reapply_deadline(
    desk: Desk, version: PolicyVersion, case: Case, parent: Case | None, decided_at: datetime
) -> tuple[str | None, str]:
    """P302-12: the last day to apply again with more material, when the policy has such a window."""
    window = next((w for w in version.windows if w.code == "reapply"), None)
    if window is None or case.kind == "appeal":
        return None, window.clause if window else ""
    return deadline(
        desk, origin(window.origin, case, parent, decided_at), window.length, window.unit, decided_at
    ), window.clause


def worded(terms: dict[str, Any], key: str, language: str) -> Any:
    """A policy text in the customer's language (`payout_zh`), English when there is none."""
    if language != "en" and f"{key}_{language}" in terms:
        return terms[f"{key}_{language}"]
    return terms.get(key)


def approved(
    desk: Desk,
    version: PolicyVersion,
    case: Case,
    parent: Case | None,
    *,
    amount: Decimal,
    requested: Decimal,
    currency: str,
    note: str,
    decided_at: datetime,
) -> dict[str, Any]:
    terms = version.decision
    language = language_of(case.language)
    method = case.fields.get("payment_method") or (parent.fields.get("payment_method") if parent else None)
    arrivals = worded(terms, "arrival", language) or {}
    method_spec = version.field("payment_method")
    minimum = version.limits.get("minimum_refund")
    partial = amount < requested
    appeal_by, appeal_clause = (
        appeal_deadline(desk, version, case, parent, decided_at) if partial else (None, terms.get("appeal_clause", ""))
    )
    context = base(desk, case)
    context["decision"] = {
        "outcome": "approved",
        "amount": f"{amount:.2f}",
        "requested": f"{requested:.2f}",
        "currency": currency,
        "partial": partial,
        "cap_clause": terms.get("cap_clause", ""),
        "payout": worded(terms, "payout", language) or "",
        "payout_clause": terms.get("payout_clause", ""),
        "payment_method": method,
        "arrival": arrivals.get(method) if method else None,
        # The presets name no clause for the arrival table; it belongs to the payment method (PIF-6).
        "arrival_clause": terms.get("arrival_clause") or (method_spec.clause if method_spec else ""),
        "balance_option": "balance" in arrivals and method not in (None, "balance"),
        "below_minimum": str(minimum) if minimum is not None and amount < Decimal(str(minimum)) else None,
        "minimum_clause": version.limits.get("minimum_clause", ""),
        "note": note,
        "decided_on": local_date(desk, decided_at),
        "parent_id": case.parent_id,
        "appeal_deadline": appeal_by,
        "appeal_clause": appeal_clause,
        "appeals_address": desk.addresses.appeals,
    }
    return context


def rejected(
    desk: Desk,
    version: PolicyVersion,
    case: Case,
    parent: Case | None,
    *,
    reason: str,
    clause: str,
    note: str,
    decided_at: datetime,
) -> dict[str, Any]:
    appeal_by, appeal_clause = appeal_deadline(desk, version, case, parent, decided_at)
    reapply_by, reapply_clause = reapply_deadline(desk, version, case, parent, decided_at)
    context = base(desk, case)
    context["decision"] = {
        "outcome": "rejected",
        "reason": reason,
        "clause": clause,
        "note": note,
        "decided_on": local_date(desk, decided_at),
        "parent_id": case.parent_id,
        "reapply_deadline": reapply_by,
        "reapply_clause": reapply_clause,
        "appeal_deadline": appeal_by,
        "appeal_clause": appeal_clause,
        # 302.AI's re-application and appeal are one step with one deadline (P302-12): one sentence.
        "combined": bool(reapply_by and (reapply_by, reapply_clause) == (appeal_by, appeal_clause)),
        "appeals_address": desk.addresses.appeals,
    }
    return context


def info_request(desk: Desk, case: Case, message: str) -> dict[str, Any]:
    context = base(desk, case)
    context["decision"] = {"outcome": "request_info", "message": message}
    return context
