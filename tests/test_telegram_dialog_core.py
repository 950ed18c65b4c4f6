"""The chat style of the pure dialog (policy/dialog.py), without any transport: fast checks of
the two rules the Telegram channel added, and that the email letter style kept its own."""
from __future__ import annotations

from datetime import datetime, timezone

from refunddesk.policy import dialog
from refunddesk.policy.calendar import WorkingCalendar
from refunddesk.policy.context import Context
from refunddesk.policy.model import InboundMessage
from refunddesk.policy.preset import load_preset

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)
POLICY = load_preset("302ai")
CTX = Context(POLICY, WorkingCalendar(POLICY.country))


def say(text: str = "", command: str | None = None, channel: str = "telegram") -> InboundMessage:
    return InboundMessage(channel, "tg:42", text, NOW, "1", "42", language="en", command=command)


def talk(*messages: InboundMessage):
    case = dialog.new_case("RF-000001", messages[0], NOW, "refund")
    replies = []
    for message in messages:
        result = dialog.step(case, message, NOW, CTX)
        case, replies = result.case, result.replies
    return case, replies


def test_a_sentence_answering_what_happened_is_also_the_description():
    case, (reply,) = talk(say(command="refund"), say("The API timed out and I was still charged 12.50 USD on 2026-11-20 10:00"))
    assert case.fields["reason"] == "service_failure" and case.fields["amount"] == "12.50"
    assert case.fields["description"].startswith("The API timed out and")
    assert reply.context["field"] == "credit_type"
    # The opening message of a chat counts too.
    case, _ = talk(say("I was charged twice for one request, please refund me"))
    assert case.fields["description"] == "I was charged twice for one request, please refund me"
    case, _ = talk(say("我的请求超时了但是还是被扣费了"))
    assert case.fields["description"] == "我的请求超时了但是还是被扣费了"


def test_a_short_or_numbered_answer_is_not_taken_as_the_description():
    for answer in ("2", "duplicate_charge", "charged twice"):
        case, _ = talk(say(command="refund"), say(answer))
        assert "description" not in case.fields, answer
    case, (reply,) = talk(say(command="refund"), say("2"))
    assert case.fields["reason"] == "duplicate_charge" and reply.context["field"] == "credit_type"


def test_an_old_button_for_another_question_changes_that_field_and_re_asks_without_blame():
    case, (reply,) = talk(say(command="refund"), say(command="choose:reason:service_failure"), say(command="choose:credit_type:paid"), say(command="choose:reason:duplicate_charge"))
    assert case.fields["reason"] == "duplicate_charge"
    assert reply.context["field"] == "amount" and reply.context["problem"] is None
    case, (reply,) = talk(say(command="refund"), say(command="choose:reason:other"), say(command="done_evidence"))
    assert reply.context["field"] == "credit_type" and reply.context["problem"] is None


def test_the_letter_style_still_reads_the_whole_mail_as_the_description():
    mail = InboundMessage("email", "ada@example.com", "Hi, please help: 2", NOW, "m1", "", language="en")
    case, (reply,) = talk(mail)
    assert case.fields["description"] == "Hi, please help: 2" and reply.template == "ack"
