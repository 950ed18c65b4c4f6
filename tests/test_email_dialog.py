"""The email dialog end to end: smtplib -> the real `refunddesk serve` -> a recording relay.

One served desk for the module (each test writes from its own addresses, so tests do not
share cases or reply caps). Every assertion is on what a customer or an agent would see:
the letters that arrive at the relay, and the cases in the store.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import pytest

from conftest import run_cli, wait_for
from mail_fixtures import APPEALS, PNG, REFUNDS, MailDesk, letter, mail_settings, module_relay  # noqa: F401 (fixture: one relay per module)
from refunddesk.store import cases as case_store
from refunddesk.store.clock import utcnow
from refunddesk.store.db import transaction

SHANGHAI = ZoneInfo("Asia/Shanghai")
MAX_BYTES = 300_000


@pytest.fixture(scope="module")
def desk(tmp_path_factory, relay):
    tmp = tmp_path_factory.mktemp("dialog")
    served = MailDesk(tmp, mail_settings(tmp, relay, **{"email.smtp_intake.max_message_bytes": MAX_BYTES})).start()
    yield served
    served.stop()


def charge_time(days_ago: int = 1) -> str:
    """A charge time the customer would write, in the policy's time zone."""
    return (datetime.now(SHANGHAI) - timedelta(days=days_ago)).replace(hour=10, minute=0).strftime("%Y-%m-%d %H:%M")


def request_text(*, amount: bool = True, when: str | None = None, account: str = "acme-42") -> str:
    lines = [
        "Hello,",
        "",
        "my API call froze and timed out with no result, but credit was deducted.",
        "I paid for this credit with my card.",
    ]
    if amount:
        lines.append("Amount: 12.50 USD")
    lines.append(f"Time of the charge: {when or charge_time()}")
    lines.append(f"Account ID: {account}")
    return "\n".join(lines)


def body_of(msg: EmailMessage) -> str:
    return msg.get_body(("plain",)).get_content()


def section(body: str, heading: str) -> list[str]:
    """The '- item' lines under a heading of a letter."""
    lines = body.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    items = []
    for line in lines[start + 1 :]:
        if not line.startswith("- "):
            break
        items.append(line[2:])
    return items


def quoted(msg: EmailMessage) -> str:
    return "\n".join("> " + line for line in body_of(msg).splitlines())


def test_a_complete_request_is_queued_and_acknowledged_with_its_dates(desk, relay):
    customer = "complete@customer.test"
    raw = letter(f"Wei Zhang <{customer}>", "Refund for a failed call", request_text(), files=(("charge.png", PNG, "image/png"),), message_id="<complete-1@customer.test>")
    assert desk.send(raw, customer) == {}
    (ack,) = relay.wait_for(customer)
    (case,) = desk.cases_of(customer)
    assert case.status == "queued" and case.kind == "refund"
    assert case.fields["amount"] == "12.50" and case.fields["currency"] == "USD" and case.fields["account_id"] == "acme-42"
    assert [a["filename"] for a in case.attachments] == ["charge.png"]
    body = body_of(ack)
    assert ack["Subject"] == f"[{case.id}] We received your refund request"
    assert "Your request is complete" in body and "To review your request we still need" not in body
    deadline = case.deadline_at.astimezone(SHANGHAI).date().isoformat()
    review = case.review_due_at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
    assert f"deadline for this request is {deadline} (P302-5)" in body and f"review it by {review}" in body
    # Threading and loop safety: ours, answering theirs, with a reply-to that names the case.
    assert ack["From"] == REFUNDS and ack["To"] == customer
    assert ack["In-Reply-To"] == "<complete-1@customer.test>" and "<complete-1@customer.test>" in ack["References"]
    assert ack["Reply-To"] == f"refunds+{case.id}@desk.test"
    assert ack["Message-ID"].endswith("@desk.test>") and ack["Auto-Submitted"] == "auto-replied"
    assert case.acknowledged_at is not None or wait_for(lambda: desk.case(case.id).acknowledged_at, message="ack recorded")


@pytest.mark.parametrize("threading", ["subject-tag", "in-reply-to", "plus-address"])
def test_missing_amount_and_evidence_are_asked_for_and_the_reply_completes_the_case(desk, relay, threading):
    customer = f"missing-{threading}@customer.test"
    desk.send(letter(customer, "Refund request", request_text(amount=False)), customer)
    (ask,) = relay.wait_for(customer)
    (case,) = desk.cases_of(customer)
    assert case.status == "collecting"
    body = body_of(ask)
    assert section(body, "To review your request we still need") == ["Amount charged", "Evidence files (screenshots, logs, top-up voucher)"]
    block = body.split("fill in the lines below", 1)[1]
    assert re.findall(r"(?m)^([A-Z][^:\n]*):\s*$", block) == ["Amount charged"]  # one fill-in line: exactly what is missing

    # The customer fills in the block, attaches the screenshot and replies; their client quotes our letter.
    reply_text = "Amount charged: 12.50 USD\n\nThanks,\nWei\n\nOn " + ask["Date"] + ", refunds@desk.test wrote:\n" + quoted(ask)
    headers, subject, rcpt = {}, "Re: " + ask["Subject"], REFUNDS
    if threading == "in-reply-to":
        subject, headers = "Re: my refund", {"In-Reply-To": ask["Message-ID"], "References": ask["Message-ID"]}
    elif threading == "plus-address":
        subject, rcpt = "the amount", ask["Reply-To"]
    desk.send(letter(customer, subject, reply_text, to=rcpt, headers=headers, files=(("screenshot.png", PNG, "image/png"),)), customer, rcpt)
    _, queued = relay.wait_for(customer, 2)
    (case,) = desk.cases_of(customer)
    assert case.status == "queued" and case.fields["amount"] == "12.50"
    assert [a["filename"] for a in case.attachments] == ["screenshot.png"]
    assert queued["Subject"] == f"[{case.id}] Your request is complete and queued for review"
    assert "Thanks" not in case.fields["description"] and "refunds@desk.test wrote" not in case.fields["description"]


def test_an_appeal_to_appeals_opens_an_appeal_linked_to_the_decided_case(desk, relay):
    customer = "appeal@customer.test"
    desk.send(letter(customer, "Refund", request_text(), files=(("charge.png", PNG, "image/png"),)), customer)
    relay.wait_for(customer)
    (refund,) = desk.cases_of(customer)
    with transaction(desk.db):
        case_store.set_status(desk.db, refund.id, "rejected", utcnow(), decided_at=utcnow())
    text = f"I disagree with the decision on case {refund.id}. The logs show the platform timed out.\nAccount ID: acme-42"
    desk.send(letter(customer, f"Appeal of {refund.id}", text, to=APPEALS), customer, APPEALS)
    _, answer = relay.wait_for(customer, 2)
    appeal = next(c for c in desk.cases_of(customer) if c.kind == "appeal")
    assert appeal.parent_id == refund.id and appeal.fields["parent_ref"] == refund.id
    assert desk.case(refund.id).status == "rejected"  # the decided case is not reopened
    assert answer["Subject"].startswith(f"[{appeal.id}]") and answer["Reply-To"] == f"appeals+{appeal.id}@desk.test"
    assert answer["From"] == APPEALS


def test_a_late_request_is_recorded_and_told_the_deadline(desk, relay):
    customer = "late@customer.test"
    desk.send(letter(customer, "Refund", request_text(when=charge_time(days_ago=60)), files=(("charge.png", PNG, "image/png"),)), customer)
    (ack,) = relay.wait_for(customer)
    (case,) = desk.cases_of(customer)
    late = [f for f in case.findings if f.code == "deadline_passed"]
    assert late and late[0].blocking and late[0].clause == "P302-5"
    deadline = late[0].params["deadline"][:10]
    assert f"accepts applications until {deadline}; your request arrived after that date" in body_of(ack)


@pytest.mark.parametrize("charset", ["gb2312", "gb18030"])
def test_chinese_mail_is_read_and_answered_in_chinese(desk, relay, charset):
    customer = f"{charset}@customer.test"
    text = f"您好，\n我的接口调用卡住了，没有结果，但是扣费了。我用的是自己充值的余额。\n金额：88元\n扣费时间：{charge_time()}\n账号：wang-{charset}\n"
    desk.send(letter(f"王伟 <{customer}>", "退款申请：调用失败扣费", text, charset=charset, files=(("截图.png", PNG, "image/png"),)), customer)
    (ack,) = relay.wait_for(customer)
    (case,) = desk.cases_of(customer)
    assert case.language == "zh" and case.fields["amount"] == "88" and case.fields["account_id"] == f"wang-{charset}"
    assert [a["filename"] for a in case.attachments] == ["截图.png"]
    (message,) = [m for m in desk.messages(case.id) if m["direction"] == "in"]
    assert "卡住了" in message["text"] and message["subject"] == "退款申请：调用失败扣费"
    assert ack["Content-Language"] == "zh-CN" and case.id in ack["Subject"]
    assert re.search(r"[\u4e00-\u9fff]", body_of(ack))


def test_html_only_mail_is_read_and_kept_sanitized_for_agents(desk, relay):
    customer = "html@customer.test"
    html = (
        "<html><body><p>My API call <b>froze</b> with no result but credit was deducted. I paid for the credit.</p>"
        f"<p>Amount: 12.50 USD<br>Time of the charge: {charge_time()}<br>Account ID: html-1</p>"
        '<img src="https://tracker.test/p.gif"><script>document.cookie</script></body></html>'
    )
    desk.send(letter(customer, "Refund", html=html), customer)
    relay.wait_for(customer)
    (case,) = desk.cases_of(customer)
    assert case.fields["amount"] == "12.50" and case.fields["account_id"] == "html-1"
    (message,) = [m for m in desk.messages(case.id) if m["direction"] == "in"]
    assert "froze" in message["text"] and "<b>froze</b>" in message["html"]
    assert "<script" not in message["html"] and "tracker.test" not in message["html"]


def test_oversized_mail_is_refused_and_nothing_is_stored(desk):
    before = len(desk.inbound())
    raw = letter("big@customer.test", "Refund", "see the attached logs", files=(("logs.bin", b"\0" * MAX_BYTES, "application/octet-stream"),))
    with pytest.raises(Exception) as refused:
        desk.send(raw, "big@customer.test")
    assert getattr(refused.value, "smtp_code", None) == 552
    assert len(desk.inbound()) == before


def test_the_same_mail_to_both_addresses_and_retried_is_one_case(desk, relay):
    customer = "both@customer.test"
    raw = letter(customer, "Refund", request_text(), to=f"{REFUNDS}, {APPEALS}")
    before = len(desk.inbound())
    desk.send(raw, customer, REFUNDS)
    desk.send(raw, customer, APPEALS)  # the same mail's other envelope (some MTAs split them)
    desk.send(raw, customer, REFUNDS)  # a retry
    rows = desk.settled(before + 3)[before:]
    assert sorted(r["status"] for r in rows) == ["done", "duplicate", "duplicate"]
    (case,) = desk.cases_of(customer)
    assert {r["case_id"] for r in rows} == {case.id}
    relay.wait_for(customer)
    assert len(desk.outbox(customer)) == 1


def test_a_stranger_naming_someone_elses_case_cannot_add_to_it(desk, relay):
    owner, stranger = "owner@customer.test", "stranger@elsewhere.test"
    desk.send(letter(owner, "Refund", request_text(amount=False)), owner)
    relay.wait_for(owner)
    (case,) = desk.cases_of(owner)
    desk.send(letter(stranger, f"Re: [{case.id}] update", "Amount charged: 9999 USD"), stranger, f"refunds+{case.id}@desk.test")
    relay.wait_for(stranger)
    assert "amount" not in desk.case(case.id).fields
    (own,) = desk.cases_of(stranger)
    assert own.id != case.id


FILL_IN_ANSWERS = {
    "Reason for the refund": "service_failure",
    "Was the charge on paid or gifted credit": "paid",
    "Amount charged": "12.50 USD",
    "Account ID": "acme-7",
}


def test_a_reply_filling_in_every_line_of_the_block_completes_the_case(desk, relay):
    customer = "fill-in@customer.test"
    desk.send(letter(customer, "Refund", "My account was charged but the API gave me nothing back."), customer)
    (ask,) = relay.wait_for(customer)
    block = body_of(ask).split("fill in the lines below", 1)[1]
    answers = {**FILL_IN_ANSWERS, "Time of the charge": charge_time()}
    # The customer writes after each empty line of the block, keeping our hint in brackets.
    form_lines = re.findall(r"(?m)^(([A-Z][^:(,\n]*?)(?: \([^)\n]*\))?):[ \t]*\r?$", block)
    assert {label for _, label in form_lines} == set(answers), form_lines
    filled = "\n".join(f"{line}: {answers[label]}" for line, label in form_lines)
    reply = filled + "\n\nOn Fri, refunds@desk.test wrote:\n" + quoted(ask)
    desk.send(letter(customer, "Re: " + ask["Subject"], reply, files=(("screenshot.png", PNG, "image/png"),)), customer)
    relay.wait_for(customer, 2)
    (case,) = desk.cases_of(customer)
    assert case.status == "queued", case.fields
    assert case.fields["reason"] == "service_failure"
    assert case.fields["credit_type"] == "paid"
    assert case.fields["amount"] == "12.50" and case.fields["currency"] == "USD"
    assert case.fields["account_id"] == "acme-7"


def test_where_the_reader_chose_between_two_amounts_the_letter_says_so_and_a_reply_corrects_it(desk, relay):
    customer = "two-amounts@customer.test"
    text = ("Hello,\n\nI was charged $1,050 total for the bundle, but the duplicate part was only $700,\n"
            f"so please refund $700. It happened on {charge_time()}.\nAccount ID: acme-77\n")
    desk.send(letter(customer, "Refund of a duplicate charge", text), customer)
    (ack,) = relay.wait_for(customer)
    (case,) = desk.cases_of(customer)
    assert case.fields["amount"] == "700" and case.fields["currency"] == "USD"
    body = body_of(ack)
    assert "Amount charged: 700 USD" in section(body, "What we have so far")
    assert ('(Your message also mentions 1050 USD; we took 700 USD. If that is not right, reply with the line '
            '"Amount charged: " and the right value.)') in body
    # The agent sees the candidates too, in the case's JSON (the console's case page shows the same).
    shown = json.loads(run_cli(desk.config, "cases", "show", case.id, "--json").stdout)
    assert shown["read_choices"] == {"amount": {"value": "700", "others": ["1050"]}}
    assert {"action": "field_chosen", "data": {"field": "amount", "value": "700", "others": ["1050"]}} in desk.events(case.id)

    # The customer says the whole 1,050 was wrong: a labelled line corrects the choice.
    reply = "Amount charged: 1050 USD\n\nOn " + ack["Date"] + ", refunds@desk.test wrote:\n" + quoted(ack)
    desk.send(letter(customer, "Re: " + ack["Subject"], reply), customer)
    _, second = relay.wait_for(customer, 2)
    case = desk.case(case.id)
    assert case.fields["amount"] == "1050"
    assert "also mentions" not in body_of(second)
    shown = json.loads(run_cli(desk.config, "cases", "show", case.id, "--json").stdout)
    assert shown["read_choices"] == {}
