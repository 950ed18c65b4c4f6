"""The guided refund and appeal dialog in a Telegram chat, end to end.

The real `refunddesk serve` (telegram.enabled, api_url pointing at the fake Bot API server)
polls the fake with the real python-telegram-bot; each test talks to it as a customer would
and reads the outcome from the store and from what the fake was asked to send.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from conftest import wait_for
from fake_telegram import bot, fake_telegram  # noqa: F401 (fixtures)

from refunddesk.intake.pipeline import enqueue_reply
from refunddesk.policy.model import Case, Reply
from refunddesk.render import environment
from refunddesk.store import cases as case_store
from refunddesk.store import evidence, outbox
from refunddesk.store.db import transaction

SHANGHAI = ZoneInfo("Asia/Shanghai")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 64 + b"large screenshot"
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n" + b"log " * 50


def yesterday_at_ten() -> str:
    return (datetime.now(SHANGHAI) - timedelta(days=1)).strftime("%Y-%m-%d 10:00")


def texts(replies) -> str:
    return "\n---\n".join(r.text for r in replies)


def test_full_refund_with_a_photo_and_a_pdf(bot):
    ada = bot.person(1001)
    chat = bot.conversation(ada)

    (welcome,) = chat.say("/start")
    assert "refund requests and appeals" in welcome.text
    assert welcome.buttons == [("Request a refund", "refund"), ("Appeal a decision", "appeal"), ("My cases", "status")]

    (question,) = chat.press("refund")
    assert "choose the reason" in question.text
    assert ("Service failed, still charged", "choose:reason:service_failure") in question.buttons
    (question,) = chat.press("choose:reason:service_failure")
    assert question.commands == ["choose:credit_type:paid", "choose:credit_type:gifted"]
    (question,) = chat.press("choose:credit_type:paid")
    assert "How much was charged" in question.text
    (question,) = chat.say("12.50 USD")
    assert "When did the abnormal charge happen" in question.text
    (question,) = chat.say(yesterday_at_ten())
    assert "account ID" in question.text
    (question,) = chat.say("acme-42")
    assert "describe the problem" in question.text
    (question,) = chat.say("The chat completion API timed out three times but the credit was still deducted.")
    assert "Please send evidence" in question.text

    (received,) = chat.say(ada.photo(PNG, thumbnail=b"tiny thumbnail"))
    assert "Received 1 file(s)" in received.text and received.commands == ["done_evidence"]
    (received,) = chat.say(ada.document(PDF, "api-log.pdf", "application/pdf"))
    assert "Received 2 file(s)" in received.text

    (summary,) = chat.press("done_evidence")
    assert "Please check your refund request" in summary.text
    assert "12.50 USD" in summary.text and "acme-42" in summary.text and "api-log.pdf" in summary.text
    assert summary.buttons[0] == ("✅ Confirm and send", "confirm")
    assert ("✏️ Change: amount", "edit:amount") in summary.buttons

    (queued,) = chat.press("confirm")
    case = bot.case_of(ada)
    assert case.id in queued.text and "We will review it by" in queued.text and "policy deadline" in queued.text
    assert case.status == "queued" and case.kind == "refund" and case.channel == "telegram"
    assert case.conversation_key == "1001" and case.contact == "tg:1001"
    assert case.fields["reason"] == "service_failure" and case.fields["credit_type"] == "paid"
    assert (case.fields["amount"], case.fields["currency"], case.fields["account_id"]) == ("12.50", "USD", "acme-42")
    assert case.fields["incident_at"].startswith(yesterday_at_ten().replace(" ", "T"))
    assert case.review_due_at is not None and case.deadline_at is not None

    # The evidence is the largest photo size (not the thumbnail) and the PDF, stored by content.
    stored = {row["filename"]: row for row in bot.db.query("SELECT * FROM evidence WHERE case_id = ?", [case.id])}
    assert len(stored) == 2 and "api-log.pdf" in stored and any(name.startswith("photo-") for name in stored)
    assert stored["api-log.pdf"]["content_type"] == "application/pdf"
    contents = {evidence.read_blob(bot.desk.files, row["sha256"]) for row in stored.values()}
    assert contents == {PNG, PDF}
    assert not [c for c in bot.fake.calls_of("GET file") if c.params["path"].startswith("photos/") and "tiny" in c.params["path"]]

    # Every button press was answered at once; the acknowledgement was recorded when delivered.
    assert len(bot.fake.calls_of("answerCallbackQuery")) == 5
    wait_for(lambda: case_store.load_case(bot.db, case.id).acknowledged_at, message="acknowledged_at")
    assert all(row["status"] == "sent" for row in outbox.for_case(bot.db, case.id))


def test_a_customer_who_answers_each_question_finishes_in_seven_exchanges(bot):
    """Issue 4's target. A customer answering in sentences, as people do in a chat, has every
    field a sentence names taken at once; the remaining questions are asked one by one."""
    ada = bot.person(1002)
    chat = bot.conversation(ada)
    chat.say("/refund")
    (question,) = chat.say(f"The API timed out every time and I was still charged 12.50 USD on {yesterday_at_ten()}")
    assert question.commands == ["choose:credit_type:paid", "choose:credit_type:gifted"]
    (question,) = chat.press("choose:credit_type:paid")
    assert "account ID" in question.text
    (question,) = chat.say("acme-42")
    assert "Please send evidence" in question.text
    chat.say(ada.photo(PNG))
    chat.press("done_evidence")
    (queued,) = chat.press("confirm")

    case = bot.case_of(ada)
    assert case.status == "queued" and case.id in queued.text
    assert chat.exchanges == 7
    assert case.fields["reason"] == "service_failure"
    assert case.fields["amount"] == "12.50" and case.fields["account_id"] == "acme-42"
    assert case.fields["description"].startswith("The API timed out every time")


def test_one_fact_per_message_also_completes(bot):
    """The strict path, one field per message with the buttons, for the record: 10 exchanges
    (start, 6 fields, 1 file, done, confirm)."""
    ada = bot.person(1003)
    chat = bot.conversation(ada)
    chat.say("/refund")
    chat.press("choose:reason:duplicate_charge")
    chat.press("choose:credit_type:paid")
    chat.say("12.50 USD")
    chat.say(yesterday_at_ten())
    chat.say("acme-42")
    chat.say("I was charged twice for the same request.")
    chat.say(ada.photo(PNG))
    chat.press("done_evidence")
    chat.press("confirm")
    assert bot.case_of(ada).status == "queued"
    assert chat.exchanges == 10


def test_an_invalid_amount_is_asked_again_with_the_reason(bot):
    ada = bot.person(1004)
    chat = bot.conversation(ada)
    chat.say("/refund")
    chat.press("choose:reason:duplicate_charge")
    (question,) = chat.press("choose:credit_type:paid")
    assert "How much was charged" in question.text

    (again,) = chat.say("quite a lot, honestly")
    assert "I could not read an amount there" in again.text and "How much was charged" in again.text
    assert "amount" not in bot.case_of(ada).fields

    (again,) = chat.say("2000000 USD")
    assert "That amount looks too large" in again.text and "How much was charged" in again.text
    assert "amount" not in bot.case_of(ada).fields

    (question,) = chat.say("$7.20")
    assert "When did the abnormal charge happen" in question.text
    assert bot.case_of(ada).fields["amount"] == "7.20"


def test_an_appeal_naming_a_decided_case(bot):
    ada = bot.person(1005)
    decided_at = datetime.now(timezone.utc) - timedelta(hours=3)
    incident = (datetime.now(SHANGHAI) - timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
    with transaction(bot.db):
        refund_id = case_store.allocate_case_id(bot.db, "refund")
        case_store.save_case(bot.db, Case(
            id=refund_id, kind="refund", status="rejected", channel="telegram", contact="tg:1005",
            fields={"amount": "30.00", "currency": "USD", "incident_at": incident.isoformat(), "account_id": "acme-42"},
            created_at=decided_at - timedelta(days=1), decided_at=decided_at, conversation_key="1005",
        ), decided_at)

    chat = bot.conversation(ada)
    (question,) = chat.say("/appeal")
    assert "account ID" in question.text
    (question,) = chat.say("acme-42")
    assert "describe the problem" in question.text
    (question,) = chat.say("The outage was on your side: your status page showed it for two days.")
    assert "Which case are you appealing" in question.text
    (summary,) = chat.say(f"It is {refund_id}, please look again")
    assert "Please check your appeal" in summary.text and refund_id in summary.text
    (queued,) = chat.press("confirm")

    appeal = bot.case_of(ada)
    assert appeal.kind == "appeal" and appeal.id.startswith("AP-") and appeal.id in queued.text
    assert appeal.status == "queued" and appeal.fields["parent_ref"] == refund_id and appeal.parent_id == refund_id
    assert not {f.code for f in appeal.findings} & {"appeal_parent_unknown", "appeal_parent_undecided"}
    assert case_store.load_case(bot.db, refund_id).status == "rejected"  # the appeal does not reopen it


def test_status_lists_only_the_users_own_cases(bot):
    ada, bob = bot.person(1006), bot.person(1007)
    now = datetime.now(timezone.utc)
    with transaction(bot.db):
        ids = {}
        for person, status, amount in ((ada, "queued", "12.50"), (ada, "approved", "3.00"), (bob, "queued", "99.00")):
            case_id = case_store.allocate_case_id(bot.db, "refund")
            ids.setdefault(person.id, []).append(case_id)
            case_store.save_case(bot.db, Case(id=case_id, kind="refund", status=status, channel="telegram", contact=f"tg:{person.id}", fields={"amount": amount, "currency": "USD"}, created_at=now, conversation_key=str(person.id)), now)

    # Ada has a case waiting for review: /status is still answered, not swallowed by it.
    (status,) = bot.conversation(ada).say("/status")
    assert all(case_id in status.text for case_id in ids[ada.id])
    assert "waiting for review" in status.text and "approved" in status.text
    assert ids[bob.id][0] not in status.text and "99.00" not in status.text

    (status,) = bot.conversation(bob).press("status")
    assert ids[bob.id][0] in status.text
    assert not any(case_id in status.text for case_id in ids[ada.id])

    (status,) = bot.conversation(bot.person(1008)).say("/status")
    assert "You have no cases yet" in status.text


def test_an_agents_question_reaches_the_chat_and_the_answer_lands_in_the_case(bot):
    ada = bot.person(1009)
    chat = bot.conversation(ada)
    chat.say(f"I was charged twice, 12.50 USD on {yesterday_at_ten()}, account acme-42")
    chat.press("choose:credit_type:paid")
    chat.say(ada.photo(PNG))
    chat.press("done_evidence")
    chat.press("confirm")
    case = bot.case_of(ada)
    assert case.status == "queued"

    # The agent (as review/ will do it): ask the customer, through the outbox.
    question = "Which request ID did the second charge belong to?"
    now = datetime.now(timezone.utc)
    with transaction(bot.db):
        case_store.set_status(bot.db, case.id, "awaiting_customer", now)
        context = {"case_id": case.id, "kind": case.kind, "policy_name": bot.desk.policy.name, "decision": {"message": question}}
        enqueue_reply(bot.desk, bot.db, case_store.load_case(bot.db, case.id), Reply("request_info", context, "decision"), None, now)
    delivered = wait_for(lambda: [c for c in bot.fake.sent_to(ada.id) if question in c.params["text"]], message="the agent's question in the chat")
    assert case.id in delivered[0].params["text"] and "answer here in this chat" in delivered[0].params["text"]

    (thanks,) = chat.say("It was request req_7f3a9 at 10:02, the first one at 10:01 succeeded.")
    assert case.id in thanks.text and "back in the review queue" in thanks.text
    case = case_store.load_case(bot.db, case.id)
    assert case.status == "queued"
    answers = [m["text"] for m in case_store.messages_of(bot.db, case.id) if m["direction"] == "in"]
    assert answers[-1] == "It was request req_7f3a9 at 10:02, the first one at 10:01 succeeded."


def test_edit_a_field_and_cancel(bot):
    ada = bot.person(1010)
    chat = bot.conversation(ada)
    chat.say(f"The API froze and I was charged 12.50 USD on {yesterday_at_ten()}, account acme-42")
    chat.press("choose:credit_type:paid")
    chat.say(ada.photo(PNG))
    (summary,) = chat.press("done_evidence")
    assert "edit:amount" in summary.commands

    (question,) = chat.press("edit:amount")
    assert "How much was charged" in question.text
    (summary,) = chat.say("10 USD")
    assert "Please check your refund request" in summary.text and "10 USD" in summary.text
    assert bot.case_of(ada).fields["amount"] == "10"

    (cancelled,) = chat.say("/cancel")
    case = bot.case_of(ada)
    assert case.status == "withdrawn" and case.id in cancelled.text


def test_chinese_speaker_gets_chinese_buttons(bot):
    zh = environment().get_template("zh/buttons.j2").module
    li = bot.person(1011, language="zh-hans", first_name="李")
    (welcome,) = bot.conversation(li).say("/start")
    assert welcome.buttons == [(zh.ACTIONS["refund"], "refund"), (zh.ACTIONS["appeal"], "appeal"), (zh.ACTIONS["status"], "status")]
    assert all(re.search(r"[\u4e00-\u9fff]", label) for label, _ in welcome.buttons)
    menus = {c.params.get("language_code", ""): c.json("commands") for c in bot.fake.calls_of("setMyCommands")}
    assert {"command": "refund", "description": zh.COMMANDS["refund"]} in menus["zh"]
    assert {"command": "refund", "description": "Request a refund"} in menus[""]
    assert [c["command"] for c in menus[""]] == ["refund", "appeal", "status", "cancel", "help"]


def test_a_chinese_customer_completes_in_chinese_typing_instead_of_pressing(bot):
    li = bot.person(1012, language="zh-hans", first_name="李")
    chat = bot.conversation(li)
    yesterday = (datetime.now(SHANGHAI) - timedelta(days=1)).strftime("%Y-%m-%d 10:00")
    (question,) = chat.say("/refund")
    assert re.search(r"[\u4e00-\u9fff]", question.text)
    chat.say(f"调用接口一直超时没有结果，但还是被扣了 12.50 美元，时间是 {yesterday}")
    chat.say("1")  # the first option, typed: paid credit
    chat.say("账号 acme-42")
    chat.say(li.photo(PNG))
    (summary,) = chat.say("好了")
    assert "confirm" in summary.commands
    (queued,) = chat.say("确认")
    case = bot.case_of(li)
    assert chat.exchanges == 7 and case.status == "queued" and case.language == "zh" and case.id in queued.text
    assert case.fields["credit_type"] == "paid" and case.fields["reason"] == "service_failure"
    assert case.fields["account_id"] == "acme-42" and case.fields["amount"] == "12.50"
