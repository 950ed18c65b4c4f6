"""Every dialog transition, in both styles: letter (email) and chat (Telegram). Pure: no store."""
from __future__ import annotations

import hashlib
from datetime import datetime
from zoneinfo import ZoneInfo

from refunddesk.policy.calendar import WorkingCalendar
from refunddesk.policy.context import Context
from refunddesk.policy.dialog import new_case, step
from refunddesk.policy.model import Attachment, InboundMessage
from refunddesk.policy.preset import load_preset
from refunddesk.render import render

SH = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=SH)
CTX = Context(load_preset("302ai"), WorkingCalendar("CN"))
PNG = b"\x89PNG\r\n\x1a\n" + b"0" * 64
SHOT = Attachment("charge.png", "image/png", len(PNG), hashlib.sha256(PNG).hexdigest())

COMPLETE_MAIL = """Hello,
The chat model froze and gave no result, but PTC was deducted.
Amount: 12.50 USD
Time of the charge: 2026-11-21 15:00
Account ID: u_88213
It was paid credit from my top-up.
"""


def mail(text: str, attachments=(), command=None, kind="refund") -> InboundMessage:
    return InboundMessage("email", "alice@example.com", text, NOW, "m1", conversation_key="alice@example.com", kind_hint=kind, attachments=tuple(attachments), command=command)


def chat(text: str = "", command=None, attachments=()) -> InboundMessage:
    return InboundMessage("telegram", "tg:7", text, NOW, "u1", conversation_key="7", language="en", attachments=tuple(attachments), command=command)


def first(inbound: InboundMessage, ctx=CTX):
    case = new_case("RF-000001", inbound, NOW)
    return step(case, inbound, NOW, ctx)


# --- letter style --------------------------------------------------------------------------------


def test_a_complete_first_mail_is_acknowledged_and_queued_with_its_dates():
    result = first(mail(COMPLETE_MAIL, [SHOT]))
    assert result.case.status == "queued"
    assert result.case.fields["amount"] == "12.50" and result.case.fields["currency"] == "USD"
    assert result.case.fields["reason"] == "service_failure"
    # Completed Sunday Nov 22 10:00: 3 working days later is Wednesday Nov 25 10:00.
    assert result.case.review_due_at == datetime(2026, 11, 25, 10, 0, tzinfo=SH)
    (reply,) = result.replies
    assert reply.template == "ack" and reply.kind == "ack"
    assert reply.context["missing"] == []
    assert {"code": "apply", "clause": "P302-5", "date": "2026-12-01", "covered": True} in reply.context["deadlines"]


def test_a_mail_missing_amount_and_evidence_gets_one_letter_listing_both_then_the_reply_completes_it():
    text = COMPLETE_MAIL.replace("Amount: 12.50 USD\n", "")
    result = first(mail(text))
    assert result.case.status == "collecting"
    assert result.replies[0].template == "ack"
    assert result.replies[0].context["missing"] == ["amount", "evidence"]
    reply = step(result.case, mail("Amount: 12.50 USD", [SHOT]), NOW, CTX)
    assert reply.case.status == "queued"
    assert reply.replies[0].template == "queued"
    assert reply.case.fields["incident_at"] == result.case.fields["incident_at"]


def test_a_reply_that_still_lacks_something_gets_a_missing_letter():
    result = first(mail(COMPLETE_MAIL.replace("Amount: 12.50 USD\n", "")))
    again = step(result.case, mail("Here is the screenshot.", [SHOT]), NOW, CTX)
    assert again.case.status == "collecting"
    assert again.replies[0].template == "missing"
    assert again.replies[0].context["missing"] == ["amount"]


def test_free_text_never_overwrites_a_field_already_held_but_a_labelled_line_corrects_it():
    result = first(mail(COMPLETE_MAIL))
    held = step(result.case, mail("By the way my friend was charged $99 too."), NOW, CTX)
    assert held.case.fields["amount"] == "12.50"
    corrected = step(result.case, mail("Amount: 13.00 USD"), NOW, CTX)
    assert corrected.case.fields["amount"] == "13.00"
    assert ("field_changed", {"field": "amount", "from": "12.50", "to": "13.00"}) in corrected.events


def test_an_ineligible_reason_is_told_and_still_recorded():
    result = first(mail("I topped up too much by mistake, please refund 100 USD. Account ID: u_1", [SHOT]))
    assert result.case.fields["reason"] == "accidental_topup"
    notices = result.replies[0].context["notices"]
    assert any(n["code"] == "ineligible_reason" and n["clause"] == "P302-1" for n in notices)


def test_cancel_withdraws_an_open_case():
    result = first(mail(COMPLETE_MAIL))
    cancelled = step(result.case, mail("", command="cancel"), NOW, CTX)
    assert cancelled.case.status == "withdrawn"
    assert cancelled.replies[0].template == "cancelled"


def test_an_answer_after_an_agents_question_returns_the_case_to_the_queue():
    result = first(mail(COMPLETE_MAIL, [SHOT]))
    waiting = result.case.evolve(status="awaiting_customer", review_due_at=datetime(2026, 11, 1, 10, 0, tzinfo=SH))
    answered = step(waiting, mail("The request id was req_991, see the log."), NOW, CTX)
    assert answered.case.status == "queued"
    # The review clock restarts from the answer: 3 working days after Sunday Nov 22 is Nov 25.
    assert answered.case.review_due_at == datetime(2026, 11, 25, 10, 0, tzinfo=SH)
    assert answered.case.completed_at == result.case.completed_at
    assert answered.replies[0].template == "resumed"
    assert ("customer_answered", {}) in answered.events


def test_a_message_on_a_decided_case_is_kept_and_answered_with_how_to_appeal():
    result = first(mail(COMPLETE_MAIL, [SHOT]))
    decided = result.case.evolve(status="rejected")
    later = step(decided, mail("Why?"), NOW, CTX)
    assert later.case.status == "rejected"
    assert later.replies[0].template == "closed"


def test_an_appeal_links_to_the_decided_case_it_names():
    parent = first(mail(COMPLETE_MAIL, [SHOT])).case.evolve(status="rejected", decided_at=NOW)
    ctx = Context(CTX.policy, CTX.calendar, {parent.id: parent})
    inbound = mail("I appeal the decision on RF-000001, the crash was on your side.\nAccount ID: u_88213", kind="appeal")
    appeal = step(new_case("AP-000001", inbound, NOW, "appeal"), inbound, NOW, ctx)
    assert appeal.case.fields["parent_ref"] == "RF-000001"
    assert appeal.case.status == "queued"
    assert not [f for f in appeal.findings if f.blocking]


# --- chat style ----------------------------------------------------------------------------------


def test_chat_asks_one_thing_at_a_time_with_buttons_and_confirms():
    result = first(chat(command="refund"))
    ask = result.replies[0]
    assert ask.template == "ask" and ask.context["field"] == "reason"
    assert ("service_failure", "choose:reason:service_failure") in ask.buttons
    case = result.case
    for inbound in [
        chat(command="choose:reason:service_failure"),
        chat(command="choose:credit_type:paid"),
        chat("12.50 USD"),
        chat("2026-11-21 15:00"),
        chat("u_88213"),
        chat("The model froze and PTC was deducted anyway."),
    ]:
        case = step(case, inbound, NOW, CTX).case
    evidence = step(case, chat(attachments=[SHOT]), NOW, CTX)
    assert evidence.replies[0].template == "evidence_received"
    assert ("done", "done_evidence") in evidence.replies[0].buttons
    summary = step(evidence.case, chat(command="done_evidence"), NOW, CTX)
    assert summary.replies[0].template == "summary"
    assert ("confirm", "confirm") in summary.replies[0].buttons
    done = step(summary.case, chat(command="confirm"), NOW, CTX)
    assert done.case.status == "queued"
    assert done.replies[0].template == "queued" and done.replies[0].kind == "ack"


def test_chat_reasks_an_invalid_answer_with_the_reason_and_keeps_the_rest():
    result = first(chat("The service crashed and charged me. Paid credit.", command=None))
    case = result.case
    while case.dialog.get("asking") != "amount":
        field = case.dialog["asking"]
        answer = {"reason": "choose:reason:service_failure", "credit_type": "choose:credit_type:paid"}.get(field)
        case = step(case, chat(command=answer), NOW, CTX).case
    bad = step(case, chat("lots of money"), NOW, CTX)
    assert bad.replies[0].context["field"] == "amount"
    assert bad.replies[0].context["problem"] == "not_an_amount"
    assert bad.case.fields.get("reason") == "service_failure"


def test_chat_edit_asks_the_field_again_and_returns_to_the_summary():
    case = first(chat(COMPLETE_MAIL, attachments=[SHOT])).case
    summary = step(case, chat(command="done_evidence"), NOW, CTX)
    assert summary.replies[0].template == "summary"
    edit = step(summary.case, chat(command="edit:amount"), NOW, CTX)
    assert edit.replies[0].context["field"] == "amount"
    back = step(edit.case, chat("20 USD"), NOW, CTX)
    assert back.case.fields["amount"] == "20"
    assert back.replies[0].template == "summary"


def test_where_the_reader_chose_an_amount_the_letter_names_the_others_in_both_languages():
    text = "我充值了500元，但是被多扣了128元，请退还128元。昨天下午三点扣的。账号 u_777"
    result = first(mail(text))
    assert result.case.fields["amount"] == "128"
    assert result.case.dialog["read_choices"] == {"amount": {"value": "128", "others": ["500"]}}
    assert ("field_chosen", {"field": "amount", "value": "128", "others": ["500"]}) in result.events
    (reply,) = result.replies
    context = {**reply.context, "style": "letter", "channel": "email"}
    context["letter"] = context  # as intake.pipeline.enqueue_reply hands it to the templates
    _, zh_body = render(reply.template, "zh", context)
    assert "（您的来信中还提到 500 CNY；我们采用了 128 CNY。如有误，请回复一行“金额：”并写上正确的值。）" in zh_body
    _, en_body = render(reply.template, "en", context)
    assert "(Your message also mentions 500 CNY; we took 128 CNY." in en_body


def test_a_single_amount_is_no_choice_and_a_labelled_correction_drops_the_choice():
    assert "read_choices" not in first(mail(COMPLETE_MAIL)).case.dialog
    result = first(mail("I paid $50 for credit and $20 of it was charged twice, refund $20 please"))
    assert result.case.dialog["read_choices"]["amount"]["others"] == ["50"]
    corrected = step(result.case, mail("Amount charged: 40 USD"), NOW, CTX)
    assert corrected.case.fields["amount"] == "40"
    assert corrected.case.dialog["read_choices"] == {}
    (reply,) = corrected.replies
    assert reply.context["read_choices"] == {}


def test_where_the_reader_chose_a_date_the_letter_names_the_other_date():
    result = first(mail("I was charged $5 twice on Nov 14 at 3pm. I submitted a ticket on Nov 16 and got no answer."))
    assert result.case.fields["incident_at"] == "2026-11-14T15:00:00+08:00"
    assert result.case.dialog["read_choices"]["incident_at"] == {"value": "2026-11-14T15:00:00+08:00", "others": ["2026-11-16"]}
    (reply,) = result.replies
    context = {**reply.context, "style": "letter", "channel": "email"}
    context["letter"] = context
    _, body = render(reply.template, "en", context)
    assert "(Your message also mentions 2026-11-16; we took 2026-11-14 15:00." in body
