"""Reading a spooled Telegram update (pure), and the words the sender puts on buttons."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from refunddesk.intake.telegram import parse_update
from refunddesk.bot.send import MESSAGE_LIMIT, button_label, command_menu, keyboard, split_text
from refunddesk.render import environment

NOW = datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc)
ADA = {"id": 42, "is_bot": False, "first_name": "Ada", "last_name": "L.", "language_code": "en-GB"}
PRIVATE = {"id": 42, "type": "private", "first_name": "Ada"}


def raw(update: dict) -> bytes:
    return json.dumps(update).encode()


def message(**fields) -> dict:
    return {"update_id": 7, "message": {"message_id": 3, "date": 1790000000, "from": ADA, "chat": PRIVATE, **fields}}


def test_a_command_with_the_bots_name_and_an_argument():
    update = message(text="/appeal@refunddesk_bot RF-12 please", entities=[{"type": "bot_command", "offset": 0, "length": 22}])
    parsed = parse_update(raw(update), {}, NOW)
    inbound = parsed.inbound
    assert parsed.dedup_key == "tg:7" and inbound.transport_id == "7"
    assert (inbound.command, inbound.text, inbound.kind_hint, inbound.case_ref) == ("appeal", "RF-12 please", "appeal", "RF-000012")
    assert (inbound.channel, inbound.sender, inbound.conversation_key) == ("telegram", "tg:42", "42")
    assert inbound.language == "en" and inbound.display_name == "Ada L." and inbound.received_at == NOW


def test_an_unknown_command_or_a_slash_without_an_entity_stays_text():
    unknown = parse_update(raw(message(text="/refundplease now", entities=[{"type": "bot_command", "offset": 0, "length": 13}])), {}, NOW).inbound
    assert unknown.command is None and unknown.text == "/refundplease now"
    plain = parse_update(raw(message(text="/refund")), {}, NOW).inbound
    assert plain.command is None


def test_chinese_language_codes_read_as_zh():
    for code, expected in (("zh-hans", "zh"), ("zh-TW", "zh"), ("zh", "zh"), ("ru", "en"), (None, "en")):
        user = {**ADA, "language_code": code} if code else {k: v for k, v in ADA.items() if k != "language_code"}
        update = {"update_id": 8, "message": {"message_id": 1, "date": 1, "from": user, "chat": PRIVATE, "text": "hi"}}
        assert parse_update(raw(update), {}, NOW).inbound.language == expected


def test_a_button_press_is_a_command_and_forged_data_is_only_text():
    def press(data: str):
        update = {"update_id": 9, "callback_query": {"id": "q", "from": ADA, "chat_instance": "c", "data": data, "message": {"message_id": 5, "date": 1, "chat": PRIVATE, "text": "?"}}}
        return parse_update(raw(update), {}, NOW).inbound

    assert press("choose:reason:service_failure").command == "choose:reason:service_failure"
    assert press("edit:amount").command == "edit:amount" and press("done_evidence").command == "done_evidence"
    assert press("refund").kind_hint == "refund"
    forged = press("choose:amount:1; DROP TABLE")
    assert forged.command is None and forged.text == "choose:amount:1; DROP TABLE"
    assert press("confirm").conversation_key == "42" and press("confirm").sender == "tg:42"


def test_files_the_adapter_stored_become_attachments_without_data():
    meta = {
        "files": [{"filename": "photo-AQAD.jpg", "content_type": "image/jpeg", "size": 2048, "sha256": "a" * 64, "file_unique_id": "AQAD"}],
        "refused_files": [{"filename": "video.mp4", "size": 26214400, "limit": 20971520}],
    }
    inbound = parse_update(raw(message(photo=[{"file_id": "x", "file_unique_id": "AQAD", "width": 1, "height": 1}], caption="my screenshot")), meta, NOW).inbound
    (attachment,) = inbound.attachments
    assert (attachment.filename, attachment.size, attachment.sha256, attachment.data) == ("photo-AQAD.jpg", 2048, "a" * 64, None)
    assert inbound.text == "my screenshot"
    assert inbound.meta["refused_files"] == meta["refused_files"]


def test_button_labels_come_from_the_templates_in_the_cases_language():
    zh = environment().get_template("zh/buttons.j2").module
    assert button_label("confirm", "confirm", "en") == "✅ Confirm and send"
    assert button_label("done", "done_evidence", "en") == "Done, no more files"
    assert button_label("edit amount", "edit:amount", "en") == "✏️ Change: amount"
    assert button_label("paid", "choose:credit_type:paid", "en") == "Paid credit"
    assert button_label("refund", "refund", "zh") == zh.ACTIONS["refund"]
    assert button_label("paid", "choose:credit_type:paid", "zh") == zh.CHOICES["paid"]
    assert button_label("edit amount", "edit:amount", "zh") == zh.EDIT.format(field=zh.FIELDS["amount"])
    # A code no template knows yet still gets a readable label, never a crash.
    assert button_label("brand_new", "choose:reason:brand_new", "en") == "Brand new"


def test_every_choice_and_field_of_both_presets_has_a_label_in_both_languages():
    from refunddesk.policy.preset import load_preset

    for language in ("en", "zh"):
        words = environment().get_template(f"{language}/buttons.j2").module
        for preset in ("302ai", "ipfixed"):
            version = load_preset(preset).versions[-1]
            for spec in version.fields:
                assert spec.name in words.FIELDS, (language, preset, spec.name)
                if spec.type == "choice":
                    for choice in version.choices_for(spec):
                        assert choice in words.CHOICES, (language, preset, choice)
        assert [name for name, _ in command_menu(language)] == ["refund", "appeal", "status", "cancel", "help"]


def test_keyboard_puts_one_button_per_row_and_long_text_is_split_at_lines():
    markup = keyboard([["confirm", "confirm"], ["edit amount", "edit:amount"]], "en")
    assert [[b.callback_data for b in row] for row in markup.inline_keyboard] == [["confirm"], ["edit:amount"]]
    assert keyboard([], "en") is None
    body = "\n".join(f"line {i} " + "x" * 60 for i in range(200))
    chunks = split_text(body)
    assert len(chunks) > 1 and all(len(c) <= MESSAGE_LIMIT for c in chunks)
    assert "\n".join(chunks) == body
