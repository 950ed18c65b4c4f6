"""The fill-in block of our letters round-trips: what a customer writes on our lines is read back."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from refunddesk.policy.calendar import WorkingCalendar
from refunddesk.policy.context import Context
from refunddesk.policy.dialog import new_case, step
from refunddesk.policy.form import read_form
from refunddesk.policy.model import InboundMessage
from refunddesk.policy.preset import load_preset
from refunddesk.render import render

SH = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=SH)
ANSWERS = {
    "reason": "duplicate_charge", "credit_type": "paid", "amount": "12.50 USD", "incident_at": "2026-11-20 10:00",
    "account_id": "u_88213", "description": "Charged twice for one request.", "purchase_at": "2026-11-15",
    "quota_used_pct": "30", "outage_hours": "30", "payment_method": "paypal", "reason_ipfixed": "outage",
}


def inbound(text: str, language: str) -> InboundMessage:
    return InboundMessage("email", "c@example.com", text, NOW, "m", kind_hint="refund", language=language)


def fill(letter: str, policy: str) -> str:
    """Write an answer after each empty form line of our letter, as a customer would."""
    lines = []
    for line in letter.splitlines():
        stripped = line.rstrip()
        if stripped.endswith((":", "：")) and read_form(stripped + " x"):
            (name,) = read_form(stripped + " x")
            key = "reason_ipfixed" if (name == "reason" and policy == "ipfixed") else name
            lines.append(f"{stripped} {ANSWERS[key]}")
        else:
            lines.append(line)
    return "\n".join(lines)


@pytest.mark.parametrize("policy", ["302ai", "ipfixed"])
@pytest.mark.parametrize("language", ["en", "zh"])
def test_a_customer_who_fills_in_our_letter_completes_every_field(policy, language):
    ctx = Context(load_preset(policy), WorkingCalendar("CN"))
    opening = inbound("Please refund me, something went wrong." if language == "en" else "请帮我退款，出问题了。", language)
    first = step(new_case("RF-000001", opening, NOW), opening, NOW, ctx)
    (ack,) = first.replies
    context = {**ack.context, "style": "letter", "channel": "email"}
    context["letter"] = context
    _, body = render("ack", language, context)
    reply = fill(body, policy)
    answered = step(first.case, inbound(reply, language), NOW, ctx)
    missing = answered.replies[0].context["missing"]
    # ipfixed asks the outage duration only once it knows the reason is an outage (PIF-1).
    assert missing == (["outage_hours", "evidence"] if policy == "ipfixed" else ["evidence"]), (missing, reply)
    assert answered.case.fields["amount"] == "12.50"
    assert answered.case.fields["reason"] == ("outage" if policy == "ipfixed" else "duplicate_charge")


def test_an_unfilled_form_line_is_not_an_answer():
    assert read_form("Amount charged:\nTime of the charge (e.g. 2026-11-20):\n金额：") == {}
    assert read_form("Amount charged: 5 USD\n> Account ID: quoted") == {"amount": "5 USD"}
