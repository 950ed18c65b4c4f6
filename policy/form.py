"""The fill-in block of our letters, read back from the customer's reply.

Our letters end with lines such as `Amount charged:` or `金额：` for the customer to complete.
The labels here must stay the ones the templates print (tests/test_form.py renders every
label in both languages and reads it back), so a filled-in block always round-trips.
"""

from __future__ import annotations

import re

FORM_LABELS: dict[str, tuple[str, ...]] = {
    "reason": ("Reason for the refund", "退款原因"),
    "credit_type": ("Was the charge on paid or gifted credit", "扣费额度类型"),
    "amount": ("Amount charged", "金额"),
    "currency": ("Currency", "币种"),
    "incident_at": ("Time of the charge", "异常扣费时间"),
    "account_id": ("Account ID", "账号"),
    "description": ("Description of the problem", "问题描述"),
    "parent_ref": ("Case ID of the decision you appeal", "申诉的原案件编号"),
    "purchase_at": ("Purchase date", "购买日期"),
    "quota_used_pct": ("Share of the monthly quota used", "本月额度已使用比例"),
    "outage_hours": ("How long the outage lasted", "服务中断时长"),
    "payment_method": ("Payment method", "支付方式"),
}
# "Label (hint): value" or "标签（提示）：值"; the hint in brackets is ours and is ignored.
LINE = re.compile(r"^[ \t]{0,8}(?P<label>[^:：()（）\n]{2,60}?)\s*(?:[(（][^)）\n]*[)）]\s*)?[:：]\s*(?P<value>.*)$")
_BY_LABEL = {label.casefold(): name for name, labels in FORM_LABELS.items() for label in labels}


def read_form(text: str) -> dict[str, str]:
    """Fields the customer filled in on our form lines; empty lines are not answers."""
    found: dict[str, str] = {}
    for line in (text or "").splitlines():
        if line.lstrip().startswith(">"):
            continue
        match = LINE.match(line)
        if not match:
            continue
        name = _BY_LABEL.get(match.group("label").strip().casefold())
        value = match.group("value").strip()
        if name and value and name not in found:
            found[name] = value
    return found
