"""Rules: each looks at a case and records findings that cite a clause. Rules never act.

A finding is blocking when the policy, read plainly, says the request cannot succeed as it
stands (late, ineligible, over quota); an agent still decides, the finding explains why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation

from .context import Context
from .deadlines import Deadline, window_deadline
from .model import DECIDED_STATUSES, Case, Finding
from .preset import PolicyVersion, WindowSpec

Rule = Callable[[Case, PolicyVersion, Context, datetime], Iterable[Finding]]


def missing_items(case: Case, version: PolicyVersion) -> list[str]:
    """Required fields not yet given, in asking order, then "evidence" if files are still owed."""
    reason = case.fields.get("reason")
    missing = [spec.name for spec in version.fields_for(case.kind, reason) if not case.fields.get(spec.name)]
    if len(case.attachments) < version.evidence_required(case.kind):
        missing.append("evidence")
    return missing


def check_missing(case: Case, version: PolicyVersion, ctx: Context, now: datetime) -> Iterable[Finding]:
    for name in missing_items(case, version):
        if name == "evidence":
            clause = version.evidence.get("clause", "")
            yield Finding("missing_evidence", clause, "No evidence file yet (screenshot, log, voucher).", True)
        else:
            spec = version.field(name)
            yield Finding(
                "missing_field", spec.clause if spec else "", f"Required field missing: {name}.", True, {"field": name}
            )


def origin_of(window: WindowSpec, case: Case, ctx: Context) -> datetime | None:
    if window.origin == "incident":
        source = case.fields.get("incident_at")
        if not source and case.kind == "appeal":
            parent = ctx.known_cases.get(case.fields.get("parent_ref", ""))
            source = parent.fields.get("incident_at") if parent else None
        return datetime.fromisoformat(source) if source else None
    if window.origin == "purchase":
        source = case.fields.get("purchase_at")
        return datetime.fromisoformat(source) if source else None
    parent = ctx.known_cases.get(case.fields.get("parent_ref", ""))
    return parent.decided_at if parent else None


def applicable_windows(case: Case, version: PolicyVersion) -> list[WindowSpec]:
    reason = case.fields.get("reason")
    return [w for w in version.windows if case.kind in w.kinds and (not w.when_reason or reason in w.when_reason)]


def deadlines_of(case: Case, version: PolicyVersion, ctx: Context) -> list[tuple[WindowSpec, Deadline]]:
    found = []
    for window in applicable_windows(case, version):
        origin = origin_of(window, case, ctx)
        if origin is not None:
            found.append(
                (window, window_deadline(ctx.calendar, ctx.policy.timezone, origin, window.length, window.unit))
            )
    return found


def check_deadlines(case: Case, version: PolicyVersion, ctx: Context, now: datetime) -> Iterable[Finding]:
    # A case is judged by when the customer first wrote, not by when the dialog ended.
    asked_at = case.created_at or now
    for window, deadline in deadlines_of(case, version, ctx):
        if not deadline.covered:
            yield Finding(
                "calendar_unverified",
                window.clause,
                f"The official holiday calendar has no data for part of the {window.code} window; "
                f"the deadline {deadline.at.isoformat()} assumes plain weekends. Check it by hand.",
                False,
                {"window": window.code, "deadline": deadline.at.isoformat()},
            )
        if asked_at > deadline.at:
            code = "appeal_window_passed" if case.kind == "appeal" else "deadline_passed"
            yield Finding(
                code,
                window.clause,
                f"Received {asked_at.isoformat()}, after the {window.code} deadline {deadline.at.isoformat()} "
                f"({window.length} {window.unit.replace('_', ' ')} from the {window.origin}).",
                window.blocking,
                {"window": window.code, "deadline": deadline.at.isoformat()},
            )


def check_reason(case: Case, version: PolicyVersion, ctx: Context, now: datetime) -> Iterable[Finding]:
    reason = version.reason(case.fields.get("reason"))
    if reason and not reason.refundable:
        yield Finding(
            "ineligible_reason",
            reason.clause,
            f"The stated reason ({reason.code}) is not refundable under {reason.clause}.",
            True,
            {"reason": reason.code},
        )
    if case.fields.get("credit_type") == "gifted":
        spec = version.field("credit_type")
        yield Finding(
            "gifted_credit",
            spec.clause if spec else "",
            "The charge was on free or promotional credit, which is never refunded.",
            True,
        )
    if reason and reason.min_outage_hours and case.fields.get("outage_hours"):
        hours = as_decimal(case.fields["outage_hours"])
        if hours is not None and hours <= reason.min_outage_hours:
            yield Finding(
                "outage_too_short",
                reason.clause,
                f"Reported {hours} h; {reason.code} qualifies only beyond {reason.min_outage_hours} consecutive hours.",
                True,
                {"hours": str(hours), "threshold": reason.min_outage_hours},
            )


def check_limits(case: Case, version: PolicyVersion, ctx: Context, now: datetime) -> Iterable[Finding]:
    limits = version.limits
    used = as_decimal(case.fields.get("quota_used_pct"))
    if used is not None and "max_quota_used_pct" in limits and used > Decimal(str(limits["max_quota_used_pct"])):
        yield Finding(
            "quota_exceeded",
            limits.get("quota_clause", ""),
            f"{used}% of the monthly quota used; refunds end above {limits['max_quota_used_pct']}%.",
            True,
            {"used": str(used)},
        )
    amount = as_decimal(case.fields.get("amount"))
    if amount is not None and "minimum_refund" in limits and amount < Decimal(str(limits["minimum_refund"])):
        yield Finding(
            "below_minimum",
            limits.get("minimum_clause", ""),
            f"{amount} is below the minimum single refund of {limits['minimum_refund']}; "
            "it accumulates to the next one.",
            False,
        )


def check_appeal_parent(case: Case, version: PolicyVersion, ctx: Context, now: datetime) -> Iterable[Finding]:
    if case.kind != "appeal" or not case.fields.get("parent_ref"):
        return
    spec = version.field("parent_ref")
    clause = spec.clause if spec else ""
    parent = ctx.known_cases.get(case.fields["parent_ref"])
    if parent is None:
        yield Finding("appeal_parent_unknown", clause, f"No case {case.fields['parent_ref']} is known.", True)
    elif parent.status not in DECIDED_STATUSES:
        yield Finding(
            "appeal_parent_undecided", clause, f"Case {parent.id} has not been decided yet ({parent.status}).", True
        )
    elif parent.contact != case.contact:
        yield Finding("appeal_other_contact", clause, f"Case {parent.id} was filed by another contact.", False)


def check_signals(case: Case, version: PolicyVersion, ctx: Context, now: datetime) -> Iterable[Finding]:
    signals = version.signals
    threshold = signals.get("repeat_requests")
    count = ctx.history.recent_requests_from_contact
    if threshold and count >= int(threshold):
        yield Finding(
            "repeat_requests",
            signals.get("repeat_clause", ""),
            f"{count} requests from this contact in the last {signals.get('repeat_window_days', 30)} days.",
            False,
            {"count": count},
        )
    for attachment in case.attachments:
        others = ctx.history.evidence_elsewhere.get(attachment["sha256"], ())
        if others:
            yield Finding(
                "duplicate_evidence",
                signals.get("duplicate_evidence_clause", ""),
                f"The file {attachment['filename']!r} was also sent on {', '.join(others)}.",
                False,
                {"sha256": attachment["sha256"], "cases": list(others)},
            )


RULES: tuple[Rule, ...] = (
    check_missing,
    check_deadlines,
    check_reason,
    check_limits,
    check_appeal_parent,
    check_signals,
)


def evaluate(case: Case, version: PolicyVersion, ctx: Context, now: datetime) -> tuple[Finding, ...]:
    return tuple(finding for rule in RULES for finding in rule(case, version, ctx, now))


def as_decimal(value: str | None) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(value)
    except (InvalidOperation, TypeError):
        return None
