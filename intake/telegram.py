"""A spooled Telegram update, read back into the channel-neutral `InboundMessage`.

The adapter (`bot/app.py`) stored the update as the Bot API sent it, plus what it learned
while accepting it (`meta["files"]`: blobs it already downloaded; `meta["refused_files"]`:
files too large to take; `meta["lost_files"]`: files it could not get). Reading is pure: the
same spool row always reads the same way, so a dead letter retried later gives the same message.

What the desk cannot read is told apart here, for the adapter and the reader alike
(`problem_of`): an update with no chat or no sender, an edit, any kind we never asked for. The
adapter keeps such an update as a dead letter and goes on; it never reaches the dialog, where a
message from "tg:None" once opened one case for every such update.
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
BUTTON_COMMAND = re.compile(
    r"^(?:start|help|refund|appeal|status|cancel|done_evidence|confirm|edit:[a-z_]{1,40}|choose:[a-z_]{1,40}:[a-z0-9_]{1,40})$"
)
CASE_REF = re.compile(r"\b(RF|AP)-?(\d{1,9})\b", re.IGNORECASE)
READ_KINDS = ("message", "callback_query")  # what the bot asks Telegram for (allowed_updates)


class UnreadableUpdate(ValueError):
    """An update the desk cannot read: kept as a dead letter, never read into a case."""


def problem_of(update: Any) -> str | None:
    """Why the desk cannot read this update, or None: a readable one, or one that is not ours
    (a group's or a channel's, an inline-mode button), which the adapter passes by in silence.
    Only an update that may come from a private chat is a problem: other chats are not ours."""
    if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
        return "not an update (no update_id)"
    kinds = [key for key in update if key != "update_id"]
    kind = kinds[0] if len(kinds) == 1 else None
    if kind not in READ_KINDS:
        body = update.get(kind) if kind else None
        if chat_type(body) not in (None, "private"):
            return None  # a group's edit, a channel post: not ours
        if kind == "edited_message":
            return "an edited message: edits are not read (the customer sends a new message)"
        return f"an update of kind {'/'.join(kinds) or 'none'}: only messages and button presses are read"
    body = update[kind]
    if not isinstance(body, dict):
        return f"its {kind} is not an object"
    if kind == "callback_query":
        message = body.get("message")
        if message is None or chat_type(message) not in (None, "private"):
            return None  # an inline-mode or a group's button
        if chat_type(message) is None:
            return "a button press with no chat"
    elif chat_type(body) is None:
        return "a message with no chat"
    elif chat_type(body) != "private":
        return None
    sender = body.get("from")
    if not isinstance(sender, dict) or not isinstance(sender.get("id"), int):
        return "no sender (from)"
    return None


def is_ours(update: dict[str, Any]) -> bool:
    """A readable update from a private chat (the bot talks to customers in private only)."""
    body = update.get("message") or (update.get("callback_query") or {}).get("message")
    return chat_type(body) == "private"


def chat_type(body: Any) -> str | None:
    """The chat's type, or None when the body names no chat with an id."""
    chat = body.get("chat") if isinstance(body, dict) else None
    if not isinstance(chat, dict) or not isinstance(chat.get("id"), int):
        return None
    return str(chat.get("type") or "")


def chat_id_of(update: Any) -> int | None:
    """The chat an update came from, if it names one (for a dead letter too)."""
    if not isinstance(update, dict):
        return None
    for key, body in update.items():
        if key == "callback_query" and isinstance(body, dict):
            body = body.get("message")
        if chat_type(body) is not None:
            return body["chat"]["id"]
    return None


def parse_update(raw: bytes | str, meta: dict[str, Any], received_at: datetime) -> Parsed:
    update = json.loads(raw)
    problem = problem_of(update)
    if problem is not None:  # a dead letter retried by an agent: still unreadable
        raise UnreadableUpdate(problem)
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
        meta={
            "refused_files": list(meta.get("refused_files", ())),
            "lost_files": list(meta.get("lost_files", ())),
            "telegram_message_id": message_id,
        },
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
        Attachment(
            f["filename"], f.get("content_type") or "application/octet-stream", int(f["size"]), f["sha256"], None
        )
        for f in meta.get("files", ())
    ]


def display_name(user: dict[str, Any]) -> str:
    name = " ".join(part for part in (user.get("first_name"), user.get("last_name")) if part)
    return name or (f"@{user['username']}" if user.get("username") else "")


def case_ref_in(text: str) -> str | None:
    match = CASE_REF.search(text or "")
    return f"{match.group(1).upper()}-{int(match.group(2)):06d}" if match else None
