"""Agents' decisions from the CLI, end to end on both channels (issue 5; P302-11..13, PIF-4..8).

Cases come in through the real pipeline (a spooled mail or Telegram update), the real
`refunddesk cases approve|reject|request-info` command decides, and the customer's letter is
read where it really lands: the .eml the email sender writes, or the Telegram outbox row.
Every date a letter states is computed here independently with policy/deadlines.py.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from decimal import Decimal

from conftest import add_agents, run_cli
from refunddesk.policy.deadlines import window_deadline
from refunddesk.render import render
from refunddesk.review import letters
from refunddesk.review.decisions import version_of
from refunddesk.harness.driver import body_of, chat_case, letters_to, mail, mail_case, receive_chat, receive_mail, send_email, telegram_update
from refunddesk.store import cases as case_store
from refunddesk.store import events
from refunddesk.store.clock import utcnow

HAN = re.compile(r"[\u4e00-\u9fff]")
ENGLISH_RUN = re.compile(r"[A-Za-z][A-Za-z'’-]*(?:[ ,;:]+[A-Za-z][A-Za-z'’-]*){2,}")


def local(desk, moment: datetime) -> str:
    return moment.astimezone(desk.policy.timezone).strftime("%Y-%m-%d %H:%M")


def request_302ai(incident: datetime, desk, amount: str = "12.50 USD") -> str:
    return (
        "Hello,\n"
        "Reason: duplicate charge, I was charged twice\n"
        "Credit type: paid\n"
        f"Amount: {amount}\n"
        f"Time: {local(desk, incident)}\n"
        "Account ID: acme-prod-7\n"
        "Description: The same completion request was billed twice.\n"
    )


def request_ipfixed(purchase: datetime, desk, method: str = "PayPal") -> str:
    return (
        "Hello,\n"
        "Reason: outage, the service was down\n"
        "Outage: 36 hours\n"
        f"Purchase date: {local(desk, purchase)}\n"
        "Quota used: 10%\n"
        "Amount: 200 USD\n"
        "Account ID: hq_mei\n"
        f"Payment method: {method}\n"
        "Description: The API forwarding service was unavailable for 36 hours in a row.\n"
    )


def config_of(tmp_path):
    return tmp_path / "refunddesk.toml"


def outbox_rows(db, case_id):
    return list(db.query("SELECT * FROM outbox WHERE case_id = ? ORDER BY id", [case_id]))


def test_approve_by_cli_reaches_the_email_customer_with_payout_and_cap(make_desk, tmp_path):
    desk = make_desk()
    db = desk.open_db()
    add_agents(db, 'alice')
    when = utcnow() - timedelta(hours=2)
    incident = when - timedelta(days=1)
    case_id = mail_case(desk, db, "marta@lumen.test", request_302ai(incident, desk), when)
    assert case_store.load_case(db, case_id).status == "queued"

    done = run_cli(config_of(tmp_path), "cases", "approve", case_id, "--amount", "10", "--note", "One of the two calls was billed correctly.", "--agent", "alice")
    assert done.returncode == 0, done.stderr.decode()
    send_email(desk, db)

    letter = letters_to(desk.config.email.outgoing.folder, "marta@lumen.test")[-1]
    body = body_of(letter)
    assert letter["Subject"] == f"[{case_id}] Your refund request is approved"
    assert "Auto-Submitted" not in letter  # a person decided: not an automatic reply
    assert "10.00 USD" in body and "You asked for 12.50 USD" in body
    assert "P302-13" in body and "indirect losses are not covered" in body
    assert "within 1-7 working days" in body and "P302-11" in body
    assert "One of the two calls was billed correctly." in body
    # A partial refund may be appealed: the deadline is 7 working days from the incident (P302-12).
    appeal_by = window_deadline(desk.calendar, desk.policy.timezone, incident.replace(second=0, microsecond=0), 7, "working_days").day.isoformat()
    assert f"appeal until {appeal_by} (P302-12)" in body

    shown = json.loads(run_cli(config_of(tmp_path), "cases", "show", case_id, "--json").stdout)
    assert shown["status"] == "approved" and shown["decided_at"]
    row = db.execute("SELECT decided_by, decided_amount FROM cases WHERE id = ?", [case_id]).fetchone()
    assert row == ("alice", "10.00")
    approved = [e for e in events.for_case(db, case_id) if e["action"] == "approved"]
    assert approved and approved[0]["actor"] == "alice" and approved[0]["data"]["amount"] == "10.00"


def test_reject_by_cli_cites_the_clause_reason_and_deadline_dates(make_desk, tmp_path):
    desk = make_desk()
    db = desk.open_db()
    add_agents(db, 'alice', 'bea')
    when = utcnow() - timedelta(hours=1)
    incident = when - timedelta(days=2)
    case_id = mail_case(desk, db, "jo@pixel.test", request_302ai(incident, desk), when)

    unknown = run_cli(config_of(tmp_path), "cases", "reject", case_id, "--reason", "feeling_lucky", "--agent", "alice")
    assert unknown.returncode == 1 and b"not_platform_fault" in unknown.stderr
    before = len(outbox_rows(db, case_id))

    done = run_cli(config_of(tmp_path), "cases", "reject", case_id, "--reason", "not_platform_fault", "--note", "The logs show a single billed call.", env={"REFUNDDESK_AGENT": "bea"})
    assert done.returncode == 0, done.stderr.decode()
    assert len(outbox_rows(db, case_id)) == before + 1
    send_email(desk, db)

    body = body_of(letters_to(desk.config.email.outgoing.folder, "jo@pixel.test")[-1])
    assert "Reason (P302-4): the review found no technical problem" in body
    assert "The logs show a single billed call." in body
    reapply_by = window_deadline(desk.calendar, desk.policy.timezone, incident.replace(second=0, microsecond=0), 7, "working_days").day.isoformat()
    assert f"until {reapply_by} (P302-12)" in body and "apply again" in body and "appeal this decision" in body
    assert "appeals@desk.test" in body and case_id in body
    assert db.execute("SELECT decided_by FROM cases WHERE id = ?", [case_id]).fetchone()[0] == "bea"
    assert [e["actor"] for e in events.for_case(db, case_id) if e["action"] == "rejected"] == ["bea"]


def test_amount_over_the_request_is_refused_and_nothing_is_sent(make_desk, tmp_path):
    desk = make_desk()
    db = desk.open_db()
    add_agents(db, 'alice')
    when = utcnow() - timedelta(hours=1)
    case_id = mail_case(desk, db, "cap@lumen.test", request_302ai(when - timedelta(days=1), desk, "12.50 USD"), when)
    before = len(outbox_rows(db, case_id))
    over = run_cli(config_of(tmp_path), "cases", "approve", case_id, "--amount", "12.51", "--agent", "alice")
    assert over.returncode == 1
    assert b"P302-13" in over.stderr and b"12.50" in over.stderr
    assert case_store.load_case(db, case_id).status == "queued"
    assert len(outbox_rows(db, case_id)) == before
    assert run_cli(config_of(tmp_path), "cases", "approve", case_id, "--amount", "-3", "--agent", "alice").returncode == 1


def test_ipfixed_letters_state_arrival_per_method_and_the_appeal_date(make_desk, tmp_path):
    desk = make_desk(**{"policy.preset": "ipfixed"})
    db = desk.open_db()
    add_agents(db, 'alice')
    when = utcnow() - timedelta(hours=1)
    paid_by_paypal = mail_case(desk, db, "mei@ip.test", request_ipfixed(when - timedelta(days=5), desk), when)
    paid_by_card = mail_case(desk, db, "lin@ip.test", request_ipfixed(when - timedelta(days=5), desk, "credit card"), when)

    queue = json.loads(run_cli(config_of(tmp_path), "queue", "--json").stdout)
    suggestion = next(item["suggestion"] for item in queue if item["id"] == paid_by_paypal)
    assert suggestion["amount"] == "10.00" and "200.00 x 36 h / 720 h" in suggestion["steps"][0]

    assert run_cli(config_of(tmp_path), "cases", "approve", paid_by_paypal, "--amount", "10.00", "--agent", "alice").returncode == 0
    done = run_cli(config_of(tmp_path), "cases", "reject", paid_by_card, "--reason", "outage_too_short", "--agent", "alice")
    assert done.returncode == 0, done.stderr.decode()
    send_email(desk, db)
    folder = desk.config.email.outgoing.folder

    approved = body_of(letters_to(folder, "mei@ip.test")[-1])
    assert "5-10 business days after approval" in approved and "(PIF-4)" in approved
    assert "Expected arrival for your payment method (PayPal): 1-3 business days (PIF-6)" in approved
    assert "keep the refund as account balance" in approved  # PIF-7

    rejected = body_of(letters_to(folder, "lin@ip.test")[-1])
    decided = case_store.load_case(db, paid_by_card).decided_at
    appeal_by = (decided.astimezone(desk.policy.timezone).date() + timedelta(days=7)).isoformat()
    assert f"appeal until {appeal_by} (PIF-8)" in rejected
    assert "Reason (PIF-1)" in rejected and "apply again" not in rejected  # ipfixed has no re-application window


def test_telegram_decision_letters_go_to_the_chat(make_desk, tmp_path):
    desk = make_desk()
    db = desk.open_db()
    add_agents(db, 'alice')
    when = utcnow() - timedelta(hours=1)
    incident = when - timedelta(days=1)
    answers = {
        "reason": "duplicate_charge", "credit_type": "paid", "amount": "12.50 USD",
        "incident_at": local(desk, incident), "account_id": "tg-acct-9", "description": "I was charged twice for one API request.",
    }
    rejected_id = chat_case(desk, db, 5550001, answers, when)
    asked_id = chat_case(desk, db, 5550002, answers, when)

    done = run_cli(config_of(tmp_path), "cases", "reject", rejected_id, "--reason", "insufficient_evidence", "--agent", "alice")
    assert done.returncode == 0, done.stderr.decode()
    letter = outbox_rows(db, rejected_id)[-1]
    assert (letter["channel"], letter["recipient"], letter["kind"], letter["template"]) == ("telegram", "5550001", "decision", "decision_rejected")
    reapply_by = window_deadline(desk.calendar, desk.policy.timezone, datetime.fromisoformat(case_store.load_case(db, rejected_id).fields["incident_at"]), 7, "working_days").day.isoformat()
    assert "Reason (P302-7)" in letter["body"] and f"until {reapply_by} (P302-12)" in letter["body"]
    assert f"send /appeal {rejected_id} in this chat" in letter["body"]

    asked = run_cli(config_of(tmp_path), "cases", "request-info", asked_id, "--message", "Please send the invoice number of the top-up.", "--agent", "alice")
    assert asked.returncode == 0, asked.stderr.decode()
    assert case_store.load_case(db, asked_id).status == "awaiting_customer"
    question = outbox_rows(db, asked_id)[-1]
    assert question["channel"] == "telegram" and "Please send the invoice number of the top-up." in question["body"]
    assert "answer here in this chat" in question["body"]

    receive_chat(desk, db, telegram_update(5550002, text="The invoice number is INV-2291."))
    assert case_store.load_case(db, asked_id).status == "queued"
    assert outbox_rows(db, asked_id)[-1]["template"] == "resumed"


def test_request_info_by_email_and_the_emailed_answer_requeues(make_desk, tmp_path):
    desk = make_desk()
    db = desk.open_db()
    add_agents(db, 'alice')
    when = utcnow() - timedelta(hours=1)
    case_id = mail_case(desk, db, "ana@lumen.test", request_302ai(when - timedelta(days=1), desk), when)
    done = run_cli(config_of(tmp_path), "cases", "request-info", case_id, "--message", "Which API key was charged?", "--agent", "alice")
    assert done.returncode == 0, done.stderr.decode()
    assert case_store.load_case(db, case_id).status == "awaiting_customer"
    send_email(desk, db)
    letter = letters_to(desk.config.email.outgoing.folder, "ana@lumen.test")[-1]
    assert "Which API key was charged?" in body_of(letter)
    assert letter["Reply-To"] == f"refunds+{case_id}@desk.test"

    reply_to = str(letter["Reply-To"])
    receive_mail(desk, db, mail("ana@lumen.test", f"Re: {letter['Subject']}", "It was the key ending in 7f3a.", to=reply_to), to=reply_to)
    assert case_store.load_case(db, case_id).status == "queued"
    assert [e["actor"] for e in events.for_case(db, case_id) if e["action"] == "info_requested"] == ["alice"]


def test_a_chinese_customer_gets_the_decision_in_chinese(make_desk):
    """The decision templates in zh: rendered from real decision contexts, no English sentence left."""
    desk = make_desk(**{"policy.preset": "ipfixed"})
    db = desk.open_db()
    when = utcnow() - timedelta(hours=1)
    text = (
        f"原因：服务中断\n中断时长：36 小时\n购买日期：{local(desk, when - timedelta(days=3))}\n已使用额度：10%\n"
        "金额：200 USD\n账号：hq_mei\n支付方式：PayPal\n问题描述：API 转发服务连续 36 小时无法访问，影响了我们的业务。\n"
    )
    case_id = mail_case(desk, db, "wang@ip.test", text, when, subject="退款申请")
    case = case_store.load_case(db, case_id)
    assert case.language == "zh"
    version = version_of(desk, case)
    contexts = {
        "decision_approved": letters.approved(desk, version, case, None, amount=Decimal("10.00"), requested=Decimal("200.00"), currency="USD", note="", decided_at=when),
        "decision_rejected": letters.rejected(desk, version, case, None, reason="quota_exceeded", clause="PIF-2", note="", decided_at=when),
        "request_info": letters.info_request(desk, case, ""),
    }
    for template, context in contexts.items():
        context = {**context, "channel": "email", "style": "letter"}
        subject, body = render(template, "zh", context)
        assert case_id in subject and HAN.search(subject) and HAN.search(body)
        leftover = ENGLISH_RUN.findall(body.replace(desk.policy.name, "").replace(desk.addresses.appeals, ""))
        assert not leftover, (template, leftover, body)
    _, body = render("decision_rejected", "zh", {**contexts["decision_rejected"], "channel": "email", "style": "letter"})
    appeal_by = (when.astimezone(desk.policy.timezone).date() + timedelta(days=7)).isoformat()
    assert f"{appeal_by} 之前提出申诉（PIF-8）" in body and "本月额度的使用比例已超过一半" in body


def test_an_incomplete_request_can_be_rejected_and_still_gets_its_dates(make_desk, tmp_path):
    """A request that never told us the incident time: the deadlines count from the decision."""
    desk = make_desk()
    db = desk.open_db()
    add_agents(db, 'alice')
    case_id = receive_mail(desk, db, mail("vague@lumen.test", "refund", "Please refund me, something went wrong.", to=desk.addresses.refunds))
    assert case_store.load_case(db, case_id).status == "collecting"
    assert run_cli(config_of(tmp_path), "cases", "approve", case_id, "--amount", "1", "--agent", "alice").returncode == 1
    done = run_cli(config_of(tmp_path), "cases", "reject", case_id, "--reason", "incomplete", "--note", "No amount, time or evidence after two reminders.", "--agent", "alice")
    assert done.returncode == 0, done.stderr.decode()
    body = outbox_rows(db, case_id)[-1]["body"]
    decided = case_store.load_case(db, case_id).decided_at
    by = window_deadline(desk.calendar, desk.policy.timezone, decided, 7, "working_days").day.isoformat()
    assert "Reason (P302-9)" in body and f"until {by} (P302-12)" in body
