"""A spooled Telegram update, read back into the channel-neutral `InboundMessage`.

The adapter (`bot/app.py`) stored the update as the Bot API sent it, plus what it learned
while accepting it (`meta["files"]`: blobs it already downloaded; `meta["refused_files"]`:
files too large to take). Reading is pure: the same spool row always reads the same way, so
a dead letter retried later gives the same message.
"""
from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from refunddesk.intake.parsed import Parsed
from refunddesk.policy.model import Attachment, InboundMessage

COMMANDS = ("start", "help", "refund", "appeal", "status", "cancel")
# What a button may ask for; anything else in callback data (old bots, forged clients) is text.
BUTTON_COMMAND = re.compile(r"^(?:start|help|refund|appeal|status|cancel|done_evidence|confirm|edit:[a-z_]{1,40}|choose:[a-z_]{1,40}:[a-z0-9_]{1,40})$")
CASE_REF = re.compile(r"\b(RF|AP)-?(\d{1,9})\b", re.IGNORECASE)


def parse_update(raw: bytes | str, meta: dict[str, Any], received_at: datetime) -> Parsed:
    update = json.loads(raw)
    update_id = update["update_id"]
    callback = update.get("callback_query")
    if callback:
        user = callback.get("from") or {}
        chat = (callback.get("message") or {}).get("chat") or {"id": user.get("id")}
        data = str(callback.get("data") or "")
        command = data if BUTTON_COMMAND.match(data) else None
        text = "" if command else data
        message_id = str((callback.get("message") or {}).get("message_id", ""))
    else:
        message = update.get("message") or {}
        user = message.get("from") or {}
        chat = message.get("chat") or {}
        command, text = read_command(message)
        message_id = str(message.get("message_id", ""))

    language = user.get("language_code") or ""
    inbound = InboundMessage(
        channel="telegram",
        sender=f"tg:{user.get('id')}",
        text=text,
        received_at=received_at,
        transport_id=str(update_id),
        conversation_key=str(chat.get("id")),
        kind_hint=command if command in ("refund", "appeal") else None,
        language="zh" if language.lower().startswith("zh") else "en",
        attachments=tuple(attachments_of(meta)),
        command=command,
        display_name=display_name(user),
        case_ref=case_ref_in(text),
        meta={"refused_files": list(meta.get("refused_files", ())), "telegram_message_id": message_id},
    )
    return Parsed(inbound, dedup_key=f"tg:{update_id}", message_id="")


def read_command(message: dict[str, Any]) -> tuple[str | None, str]:
    """(command, the rest of the text): "/appeal@refund_bot RF-000012" -> ("appeal", "RF-000012").

    Only a `bot_command` entity at the very start makes a command, as in Telegram's own
    clients; an unknown command stays text, so the dialog can still read it.
    """
    text = message.get("text") or message.get("caption") or ""
    for entity in message.get("entities") or ():
        if entity.get("type") == "bot_command" and entity.get("offset") == 0:
            length = int(entity.get("length", 0))
            name = text[1:length].split("@", 1)[0].lower()
            if name in COMMANDS:
                return name, text[length:].strip()
    return None, text


def attachments_of(meta: dict[str, Any]) -> list[Attachment]:
    # data=None: the adapter already wrote the blob; the pipeline records it by its sha256.
    return [
        Attachment(f["filename"], f.get("content_type") or "application/octet-stream", int(f["size"]), f["sha256"], None)
        for f in meta.get("files", ())
    ]


def display_name(user: dict[str, Any]) -> str:
    name = " ".join(part for part in (user.get("first_name"), user.get("last_name")) if part)
    return name or (f"@{user['username']}" if user.get("username") else "")


def case_ref_in(text: str) -> str | None:
    match = CASE_REF.search(text or "")
    return f"{match.group(1).upper()}-{int(match.group(2)):06d}" if match else None
