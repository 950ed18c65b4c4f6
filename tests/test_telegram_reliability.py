"""Telegram under stress: restarts, kills, replays, groups, huge files and flood limits.

Every test runs the real `refunddesk serve` against the fake Bot API server, and every test
also checks (in the fixture's teardown) that no update was acknowledged to Telegram before
it was committed to the spool.
"""
from __future__ import annotations

import json
import signal
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from conftest import wait_for
from fake_telegram import BotUnderTest, Reply, bot, fake_telegram  # noqa: F401 (fixtures)

from refunddesk.store import evidence, spool
from refunddesk.store.clock import utcnow

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200 + b"screenshot of the charge"
MB = 1024 * 1024


def yesterday_at_ten() -> str:
    return (datetime.now(ZoneInfo("Asia/Shanghai")) - timedelta(days=1)).strftime("%Y-%m-%d 10:00")


def test_a_restart_in_the_middle_of_a_dialog_resumes_it(bot):
    ada = bot.person(2001)
    chat = bot.conversation(ada)
    chat.say("/refund")
    chat.press("choose:reason:service_failure")
    (question,) = chat.press("choose:credit_type:paid")
    assert "How much was charged" in question.text

    assert bot.stop(sig=signal.SIGTERM) == 0
    assert bot.fake.pending_updates() == []  # a clean stop acknowledged everything it stored
    # The customer answers while the service is down; Telegram keeps the update for us.
    answer = bot.fake.push(ada.text("12.50 USD"))
    bot.start()

    wait_for(lambda: chat.settled(answer), 15, message="the answer sent during the restart processed")
    (question,) = chat_replies_since(bot, ada, "How much was charged")
    assert "When did the abnormal charge happen" in question.text
    case = bot.case_of(ada)
    assert case.status == "collecting" and case.fields["amount"] == "12.50" and case.dialog["asking"] == "incident_at"

    # ... and the dialog goes on to the end, in the same case.
    chat.say(yesterday_at_ten())
    chat.say("acme-42")
    chat.say("The API timed out but the credit was deducted anyway.")
    chat.say(ada.photo(PNG))
    chat.press("done_evidence")
    chat.press("confirm")
    assert bot.case_of(ada).id == case.id and bot.case_of(ada).status == "queued"
    assert [r["status"] for r in bot.inbound_rows()].count("done") == len(bot.inbound_rows())


def chat_replies_since(bot, person, marker: str):
    """The replies sent to a person after the last message containing `marker`."""
    sent = [c.params["text"] for c in bot.fake.sent_to(person.id)]
    last = max(i for i, text in enumerate(sent) if marker in text)
    return [Reply.of(c) for c in bot.fake.sent_to(person.id)[last + 1 :]]


def test_a_kill_during_a_file_download_loses_nothing_and_duplicates_nothing(bot):
    ada = bot.person(2002)
    chat = bot.conversation(ada)
    chat.say(f"The API froze and I was charged 12.50 USD on {yesterday_at_ten()}, account acme-42")
    (question,) = chat.press("choose:credit_type:paid")
    assert "Please send evidence" in question.text

    photo = ada.photo(PNG)
    large_id = photo["message"]["photo"][-1]["file_id"]
    release = bot.fake.hold_file(large_id)
    update_id = bot.fake.push(photo)
    wait_for(lambda: bot.fake.calls_of("GET file", file_id=large_id), message="the download to start")

    bot.stop(sig=signal.SIGKILL)  # mid-download: nothing spooled, nothing acknowledged
    assert update_id in bot.fake.pending_updates()
    assert not [r for r in bot.inbound_rows() if r["transport_id"] == str(update_id)]
    release.set()
    bot.start()

    wait_for(lambda: chat.settled(update_id), 15, message="the photo fetched again and processed")
    rows = [r for r in bot.inbound_rows() if r["transport_id"] == str(update_id)]
    assert len(rows) == 1 and rows[0]["status"] == "done"
    assert len(bot.fake.calls_of("GET file", file_id=large_id)) == 2  # fetched again after the kill
    case = bot.case_of(ada)
    stored = list(bot.db.query("SELECT sha256 FROM evidence WHERE case_id = ?", [case.id]))
    assert len(stored) == 1 and evidence.read_blob(bot.desk.files, stored[0]["sha256"]) == PNG
    assert "Received 1 file(s)" in bot.fake.sent_to(ada.id)[-1].params["text"]
    assert not list(bot.db.query("SELECT id FROM inbound WHERE status = 'dead'"))


def test_a_kill_after_the_spool_commit_replays_the_update_once(bot):
    """Killed between the spool commit and the acknowledgement (the worst moment): Telegram
    sends the update again after the restart, and the customer still gets one answer."""
    ada = bot.person(2003)
    chat = bot.conversation(ada)
    chat.say("/refund")
    first = bot.fake.push(ada.press("choose:reason:duplicate_charge"))
    wait_for(lambda: chat.settled(first), message="the press processed")
    # Forget the acknowledgement, as if the process had died before its next getUpdates.
    bot.stop(sig=signal.SIGKILL)
    bot.fake.acknowledged = first
    replies_before = len(bot.fake.sent_to(ada.id))
    bot.start()
    wait_for(lambda: bot.fake.acknowledged > first, message="the replayed update acknowledged")
    (question,) = chat.press("choose:credit_type:paid")
    assert "How much was charged" in question.text
    assert len(bot.fake.sent_to(ada.id)) == replies_before + 1
    assert [r["transport_id"] for r in bot.inbound_rows()].count(str(first)) == 1


def test_a_replayed_update_id_is_taken_once(bot):
    ada = bot.person(2004)
    chat = bot.conversation(ada)
    chat.say("/refund")
    (question,) = chat.press("choose:reason:service_failure")
    update_id = bot.fake.updates[-1]["update_id"]
    sends = len(bot.fake.sent_to(ada.id))

    bot.fake.replay(update_id)
    bot.fake.replay(update_id)
    wait_for(lambda: not bot.fake.replays, message="the replays fetched")
    (question,) = chat.press("choose:credit_type:paid")  # a later update: the replays are behind us
    assert "How much was charged" in question.text
    assert len(bot.fake.sent_to(ada.id)) == sends + 1
    assert [r["transport_id"] for r in bot.inbound_rows()].count(str(update_id)) == 1
    assert bot.case_of(ada).fields["credit_type"] == "paid"


def test_group_and_channel_messages_are_ignored(bot):
    ada = bot.person(2005)
    group_chat = -100777
    photo = ada.photo(PNG)
    photo["message"]["chat"] = ada.chat("group", group_chat)
    press = ada.press("refund")
    press["callback_query"]["message"]["chat"] = ada.chat("group", group_chat)
    ignored = [
        bot.fake.push(ada.text("/refund", chat_type="group", chat_id=group_chat)),
        bot.fake.push(ada.text("I want my money back, 12.50 USD", chat_type="supergroup", chat_id=group_chat)),
        bot.fake.push(ada.text("News from the channel", chat_type="channel", chat_id=group_chat)),
        bot.fake.push(photo),
        bot.fake.push(press),
    ]

    (welcome,) = bot.conversation(ada).say("/start")  # the private chat still works, after them
    assert "refund requests and appeals" in welcome.text
    assert bot.fake.acknowledged > max(ignored)
    assert {r["transport_id"] for r in bot.inbound_rows()}.isdisjoint({str(i) for i in ignored})
    assert not bot.fake.calls_of("sendMessage", chat_id=group_chat)
    assert not bot.fake.calls_of("getFile") and not bot.fake.calls_of("answerCallbackQuery")
    assert not list(bot.db.query("SELECT id FROM cases"))


def test_a_25_mb_file_is_refused_politely_without_downloading_it(bot):
    ada = bot.person(2006)
    chat = bot.conversation(ada)
    chat.say(f"The API froze and I was charged 12.50 USD on {yesterday_at_ten()}, account acme-42")
    chat.press("choose:credit_type:paid")

    huge = ada.document(None, "screen-recording.mp4", "video/mp4", size=25 * MB)
    replies = chat.say(huge)
    refusal, question = replies
    assert "screen-recording.mp4" in refusal.text and "25.0 MB" in refusal.text and "20 MB at most" in refusal.text
    assert "Please send evidence" in question.text  # the dialog goes on where it was
    assert not bot.fake.calls_of("getFile") and not bot.fake.calls_of("GET file")

    case = bot.case_of(ada)
    assert case.attachments == () and case.status == "collecting"
    (row,) = [r for r in bot.inbound_rows() if json.loads(r["meta"]).get("refused_files")]
    assert json.loads(row["meta"])["refused_files"] == [{"filename": "screen-recording.mp4", "size": 25 * MB, "limit": 20 * MB}]

    (received,) = chat.say(ada.document(b"%PDF-1.4 small log", "log.pdf", "application/pdf"))
    assert "Received 1 file(s)" in received.text


def test_a_retry_after_delays_the_message_and_it_is_delivered(bot):
    ada = bot.person(2007)
    bot.fake.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    (welcome,) = bot.conversation(ada).say("/start")
    assert "refund requests and appeals" in welcome.text

    (row,) = wait_for(lambda: [r for r in bot.db.query("SELECT status, attempts FROM outbox WHERE recipient = ?", [str(ada.id)]) if r["status"] == "sent"], message="the row recorded as sent")
    # What Telegram saw (the fake's own record): the one 429 it returned, then the same text once.
    calls = bot.fake.calls_of("sendMessage", chat_id=ada.id)
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].params["text"] == calls[0].params["text"]
    assert calls[1].at - calls[0].at >= 0.9  # Telegram's wait was honoured
    # The row's attempts are the calls Telegram saw: the tries our sender held back itself while
    # Telegram's wait ran never reached it and are not counted, however busy the machine.
    assert row["attempts"] == len(calls) == 2


def test_a_retry_after_storm_drops_nothing_reorders_nothing_and_does_not_hammer(bot):
    people = [bot.person(2100 + i) for i in range(3)]
    bot.fake.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1, times=4)
    chats = [bot.conversation(p) for p in people]
    for chat in chats:  # three customers at once, two messages each
        bot.fake.push(chat.person.text("/start"))
        bot.fake.push(chat.person.text("/help"))
    wait_for(lambda: all(len(bot.fake.sent_to(p.id)) == 2 for p in people), 30, message="every message delivered")

    for person in people:
        delivered = [c.params["text"] for c in bot.fake.sent_to(person.id)]
        assert "refund requests and appeals" in delivered[0] and "/refund" in delivered[1]  # in order
    wait_for(lambda: [r["status"] for r in bot.db.query("SELECT status FROM outbox")] == ["sent"] * 6, message="every row recorded as sent")
    # One rejected call per flood wait, not one per queued message: the sender holds back.
    calls = bot.fake.calls_of("sendMessage")
    assert [c.status for c in calls].count(429) == 4 and len(calls) == 4 + 6
    refused = [c.at for c in calls if c.status == 429]
    assert all(later - earlier >= 0.9 for earlier, later in zip(refused, refused[1:]))
    # What an operator reads in the outbox agrees with what Telegram saw: hold-backs are no attempts.
    assert sum(r["attempts"] for r in bot.db.query("SELECT attempts FROM outbox")) == len(calls)


def test_a_chat_that_blocked_the_bot_fails_permanently_and_others_go_on(bot):
    ada, bob = bot.person(2008), bot.person(2009)
    bot.fake.gone_chats.add(ada.id)
    bot.fake.push(ada.text("/start"))
    (welcome,) = bot.conversation(bob).say("/start")
    assert "refund requests and appeals" in welcome.text
    row = wait_for(lambda: [r for r in bot.db.query("SELECT status, last_error FROM outbox WHERE recipient = ?", [str(ada.id)]) if r["status"] == "failed"])
    assert "blocked" in row[0]["last_error"]
    assert len(bot.fake.calls_of("sendMessage", chat_id=ada.id)) == 1  # not retried


def test_a_failed_download_is_retried_with_its_update_and_nothing_overtakes_it(bot):
    ada = bot.person(2010)
    chat = bot.conversation(ada)
    chat.say(f"The API froze and I was charged 12.50 USD on {yesterday_at_ten()}, account acme-42")
    chat.press("choose:credit_type:paid")

    bot.fake.fail("getFile", 502, "Bad Gateway", times=2)
    photo = bot.fake.push(ada.photo(PNG))
    later = bot.fake.push(ada.text("done"))
    wait_for(lambda: chat.settled(later), 20, message="both updates processed")
    rows = bot.inbound_rows()
    assert [r["transport_id"] for r in rows[-2:]] == [str(photo), str(later)]  # order kept
    assert len(bot.fake.calls_of("getFile")) == 3
    case = bot.case_of(ada)
    assert len(case.attachments) == 1 and case.dialog.get("asking") == "confirm"


def test_a_file_telegram_never_serves_is_given_up_and_the_message_kept(bot):
    ada = bot.person(2011)
    chat = bot.conversation(ada)
    chat.say(f"The API froze and I was charged 12.50 USD on {yesterday_at_ten()}, account acme-42")
    chat.press("choose:credit_type:paid")

    bot.fake.fail("getFile", 400, "Bad Request: file is temporarily unavailable", times=10)
    replies = chat.say(ada.document(b"%PDF-1.4", "log.pdf", "application/pdf", caption="here is the log"), timeout=30)
    assert "Please send evidence" in replies[-1].text  # asked again: the file did not arrive
    (row,) = [r for r in bot.inbound_rows() if json.loads(r["meta"]).get("lost_files")]
    assert json.loads(row["meta"])["lost_files"][0]["filename"] == "log.pdf"
    assert len(bot.fake.calls_of("getFile")) == 4
    assert bot.case_of(ada).attachments == ()


def test_a_file_spooled_just_before_a_crash_survives_the_start_up_sweep(tmp_path, fake_telegram, monkeypatch):
    """The adapter writes a file, commits the update, and the process dies before the worker
    made it evidence. On the next start the blob is not taken for an orphan: the pending
    update is processed first, and the file lands in the case."""
    monkeypatch.setenv("REFUNDDESK_TELEGRAM_TOKEN", fake_telegram.token)
    bot = BotUnderTest(tmp_path, fake_telegram)
    ada = bot.person(2012)
    update = ada.photo(PNG, caption=f"Charged 12.50 USD on {yesterday_at_ten()} though the API froze")
    update["update_id"] = 900
    digest, _ = evidence.write_blob(bot.desk.files, PNG)
    meta = {"files": [{"filename": "photo-U1.jpg", "content_type": "image/jpeg", "size": len(PNG), "sha256": digest}]}
    spool.spool(bot.db, "telegram", "900", json.dumps(update).encode(), utcnow(), meta)
    orphan, _ = evidence.write_blob(bot.desk.files, b"left behind by a crash, never spooled")

    bot.start()
    try:
        wait_for(lambda: bot.inbound_rows()[0]["status"] == "done", message="the pending update processed")
        case = bot.case_of(ada)
        assert [a["sha256"] for a in case.attachments] == [digest]
        assert evidence.read_blob(bot.desk.files, digest) == PNG
        assert not (bot.desk.files / evidence.relative_path(orphan)).exists()  # the real orphan is gone
    finally:
        bot.close()
