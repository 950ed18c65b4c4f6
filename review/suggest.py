"""A suggested refund amount, with its arithmetic, for the agent (PIF-5; P302-13 for 302ai).

ipfixed's policy computes the amount: full within 24 hours of purchase when unused, prorated
by the remaining days of the (monthly) service period, in proportion to the outage time for
interruptions, minus the payment platform's fee, and never a single refund under the minimum
(smaller amounts accumulate). 302.AI refunds only the abnormally consumed credit, so the
suggestion there is the requested amount, which is also the cap. The agent decides; this only
shows the sums, step by step, so they can be checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from refunddesk.policy.model import Case
from refunddesk.policy.preset import PolicyVersion

CENT = Decimal("0.01")
PERIOD_DAYS = 30  # ipfixed sells monthly plans: "calculated daily based on remaining service period"
FULL_REFUND_WINDOW = timedelta(hours=24)
OUTAGE_REASONS = ("outage", "core_failure")


@dataclass(frozen=True)
class Suggestion:
    amount: Decimal | None
    currency: str
    basis: str  # full | prorated | outage | requested | unknown
    steps: tuple[str, ...] = field(default_factory=tuple)
    clause: str = ""

    def to_dict(self) -> dict:
        return {
            "amount": f"{self.amount:.2f}" if self.amount is not None else None,
            "currency": self.currency,
            "basis": self.basis,
            "steps": list(self.steps),
            "clause": self.clause,
        }


def suggest(
    case: Case, version: PolicyVersion, currency: str, parent: Case | None = None, fee: Decimal | None = None
) -> Suggestion:
    fields = {**(parent.fields if parent else {}), **case.fields}
    currency = fields.get("currency") or currency
    paid = decimal(fields.get("amount"))
    limits = version.limits
    if "minimum_refund" not in limits:
        clause = version.decision.get("cap_clause", "")
        if paid is None:
            return Suggestion(None, currency, "unknown", ("No requested amount on record.",), clause)
        return Suggestion(
            paid,
            currency,
            "requested",
            (
                "Only the abnormally consumed amount is refunded: "
                f"at most the requested {paid:.2f} {currency} ({clause}).",
            ),
            clause,
        )

    clause = limits.get("minimum_clause", "")
    if paid is None:
        return Suggestion(None, currency, "unknown", ("No amount paid on record; ask the customer.",), clause)
    steps: list[str] = []
    basis, value = prorate(fields, paid, currency, (parent or case).created_at, steps)
    value = value.quantize(CENT, ROUND_HALF_UP)
    if fields.get("payment_method") == "balance":
        steps.append("Kept as account balance: no payment platform fee.")
    elif fee is None:
        steps.append("Minus the payment platform's processing fee: not on record; deduct it when known.")
    else:
        value = max(Decimal("0"), value - fee).quantize(CENT, ROUND_HALF_UP)
        steps.append(f"Minus the payment platform's processing fee {fee:.2f} = {value:.2f} {currency}.")
    minimum = decimal(str(limits["minimum_refund"])) or Decimal("0")
    if value < minimum:
        steps.append(
            f"{value:.2f} is under the minimum single refund of {minimum:.2f}: "
            "pay 0.00 now; it accumulates to the next refund."
        )
        value = Decimal("0.00")
    return Suggestion(value, currency, basis, tuple(steps), clause)


def prorate(
    fields: dict[str, str], paid: Decimal, currency: str, asked_at: datetime | None, steps: list[str]
) -> tuple[str, Decimal]:
    purchase = moment(fields.get("purchase_at"))
    used_pct = decimal(fields.get("quota_used_pct"))
    reason = fields.get("reason")
    hours = decimal(fields.get("outage_hours"))
    if reason in OUTAGE_REASONS and hours is not None:
        period_hours = PERIOD_DAYS * 24
        share = min(hours, Decimal(period_hours))
        steps.append(
            f"Partial refund for the interruption: {paid:.2f} x {share} h / {period_hours} h "
            f"= {paid * share / period_hours:.2f} {currency}."
        )
        return "outage", paid * share / period_hours
    if purchase is not None and asked_at is not None:
        since = asked_at - purchase
        if reason == "mistaken_purchase" and since <= FULL_REFUND_WINDOW and (used_pct is None or used_pct == 0):
            steps.append(
                f"Full refund: asked {hours_of(since)} h after purchase (within 24 h) "
                f"and unused: {paid:.2f} {currency}."
            )
            return "full", paid
        used_days = min(PERIOD_DAYS, max(0, math.ceil(since.total_seconds() / 86400)))
        remaining = PERIOD_DAYS - used_days
        value = paid * remaining / PERIOD_DAYS
        steps.append(
            f"Prorated by remaining days: {paid:.2f} x {remaining} / {PERIOD_DAYS} days = {value:.2f} {currency} "
            f"({used_days} days since purchase)."
        )
        return "prorated", value
    steps.append(
        f"No purchase date on record: starting from the full {paid:.2f} {currency}; check the service period used."
    )
    return "unknown", paid


def hours_of(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f}"


def decimal(value: str | None) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        number = Decimal(value)
    except (InvalidOperation, TypeError):
        return None
    return number if number.is_finite() else None


def moment(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
