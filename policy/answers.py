"""Reading a direct answer to one question, guessing a choice from free text, and validating values.

Problems are returned as short codes ("not_a_number", "in_future", ...) that the templates turn
into a polite sentence in the customer's language, so the re-asked question says why.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation

from .extract import read_account_id, read_hours, read_moment, read_money, read_percent
from .preset import PolicyVersion

MAX_DESCRIPTION = 4000
MIN_DESCRIPTION = 8
CHOICE_ALIASES = {
    "credit_type": {
        "paid": ("paid", "top-up", "topup", "top up", "purchased", "付费", "充值", "自己充", "已付费"),
        "gifted": ("gift", "gifted", "free", "promo", "promotional", "bonus", "赠送", "免费", "活动", "赠金"),
    },
    "payment_method": {
        "card": ("card", "credit card", "visa", "mastercard", "信用卡", "银行卡"),
        "paypal": ("paypal",),
        "bank": ("bank transfer", "wire", "银行转账", "对公"),
        "balance": ("balance", "keep as balance", "account balance", "余额"),
    },
}


def read_answer(
    field: str, text: str, command: str | None, now: datetime, tz: tzinfo, version: PolicyVersion
) -> tuple[dict[str, str], str | None]:
    """Read `text` as the answer to the question for `field`: (values to set, problem code)."""
    spec = version.field(field)
    if command and command.startswith(f"choose:{field}:"):
        text = command.split(":", 2)[2]
    kind = spec.type if spec else "text"
    if kind == "choice":
        choice = exact_choice(field, text, version) or guess_choice(field, text, version)
        return ({field: choice}, None) if choice else ({}, "not_a_choice")
    if kind == "money":
        money = read_money(text, answer=True)
        if money is None:
            return {}, "not_an_amount"
        values = {"amount": str(money.amount)}
        if money.currency:
            values["currency"] = money.currency
        return values, None
    if kind == "moment":
        moment = read_moment(text, now, tz, answer=True)
        if moment is None:
            return {}, "not_a_time"
        values = {field: moment.at.isoformat()}
        if field == "incident_at":
            values["incident_date_only"] = "1" if moment.date_only else ""
        return values, None
    if kind == "percent":
        value = read_percent(text, answer=True)
        return ({field: str(value)}, None) if value is not None else ({}, "not_a_percent")
    if kind == "hours":
        value = read_hours(text, answer=True)
        return ({field: str(value)}, None) if value is not None else ({}, "not_a_duration")
    if kind == "case_ref":
        match = re.search(r"\b(RF|AP)-?(\d{1,9})\b", text, re.IGNORECASE)
        return (
            ({field: f"{match.group(1).upper()}-{int(match.group(2)):06d}"}, None) if match else ({}, "not_a_case_id")
        )
    if field == "account_id":
        account = read_account_id(text, answer=True)
        return ({field: account}, None) if account else ({}, "not_an_account")
    if field == "description":
        cleaned = describe(text)
        return ({field: cleaned}, None) if cleaned else ({}, "too_short")
    cleaned = text.strip()
    return ({field: cleaned[:200]}, None) if cleaned else ({}, "empty")


def exact_choice(field: str, text: str, version: PolicyVersion) -> str | None:
    spec = version.field(field)
    if spec is None:
        return None
    wanted = text.strip().lower()
    choices = version.choices_for(spec)
    if wanted.isdigit() and 1 <= int(wanted) <= len(choices):
        return choices[int(wanted) - 1]
    return wanted if wanted in choices else None


def guess_choice(field: str, text: str, version: PolicyVersion) -> str | None:
    """A choice named unambiguously by keywords; None when nothing or several compete."""
    lowered = text.lower()
    spec = version.field(field)
    named = [
        code
        for code in (version.choices_for(spec) if spec else ())
        if re.search(rf"(?<![a-z_]){re.escape(code)}(?![a-z_])", lowered) and "_" in code
    ]
    if len(named) == 1:
        return named[0]
    if field == "reason":
        hits = [r.code for r in version.reasons if any(k in lowered for k in r.keywords)]
    else:
        aliases = CHOICE_ALIASES.get(field, {})
        hits = [code for code, words in aliases.items() if any(w in lowered for w in words)]
    return hits[0] if len(hits) == 1 else None


def describe(text: str) -> str | None:
    """The customer's own words as a description: blank lines folded, length capped."""
    lines = [line.rstrip() for line in (text or "").strip().splitlines()]
    folded = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    if len(folded) < MIN_DESCRIPTION:
        return None
    return folded[:MAX_DESCRIPTION]


def validate(values: dict[str, str], now: datetime, version: PolicyVersion) -> tuple[dict[str, str], dict[str, str]]:
    """Split read values into acceptable ones and problems; an invalid value is never stored."""
    good: dict[str, str] = {}
    bad: dict[str, str] = {}
    for name, value in values.items():
        problem = _problem(name, value, now)
        if problem:
            bad[name] = problem
        else:
            good[name] = value
    if "amount" in bad:
        good.pop("currency", None)
    return good, bad


def _problem(name: str, value: str, now: datetime) -> str | None:
    if name == "amount":
        try:
            amount = Decimal(value)
        except InvalidOperation:
            return "not_an_amount"
        if amount <= 0:
            return "not_positive"
        if amount > Decimal("1000000"):
            return "too_large"
    if name in ("incident_at", "purchase_at"):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return "not_a_time"
        if moment - now > timedelta(hours=1):
            return "in_future"
    if name == "quota_used_pct":
        pct = Decimal(value)
        if pct < 0 or pct > 100:
            return "not_a_percent"
    if name == "outage_hours" and Decimal(value) < 0:
        return "not_a_duration"
    return None
