"""Delivering outbox rows to Telegram chats, and the words on their buttons.

Flood limits are Telegram's way of saying "later", never "no". After a `RetryAfter` (or a
network failure) the sender holds every message for the time Telegram named, without calling
the API again: a storm of 429s costs one refused call per wait, not one per queued message.
Messages held back are given a retry time just after the one that failed, so they leave in
the order they were written, and a chat never sees the second question before the first.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, ChatMigrated, Forbidden, RetryAfter, TelegramError

from refunddesk.outbound.delivery import PermanentFailure, TemporaryFailure, Window
from refunddesk.render import environment, language_of

log = logging.getLogger("refunddesk.bot.send")
MESSAGE_LIMIT = 4096  # characters Telegram accepts in one message
NETWORK_BACKOFF_SECONDS = (2, 5, 15, 30, 60)
QUEUE_MARGIN_SECONDS = 0.25  # held messages retry this long after the one that failed
NOT_READY_SECONDS = 2
RETRY_SECONDS = (1, 2, 5, 10, 30)  # pauses after 1, 2, ... failures to reach the Bot API


def retry_pause(failures: int) -> float:
    return RETRY_SECONDS[min(failures, len(RETRY_SECONDS)) - 1]


async def until_it_answers(call: Callable[[], Awaitable[Any]], failed: Callable[[Exception], None]) -> None:
    """`call()` again, after a growing pause, until it succeeds (the Bot API may be away for
    hours; email goes on meanwhile); `failed` hears of each failure."""
    failures = 0
    while True:
        try:
            await call()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            failed(exc)
            await asyncio.sleep(retry_pause(failures))


def make_bot(config) -> Bot:
    """The Bot API client for the configured token (and API server, for a local or test one)."""
    api_url = config.telegram.api_url.rstrip("/")
    if api_url:
        return Bot(config.telegram.token, base_url=f"{api_url}/bot", base_file_url=f"{api_url}/file/bot")
    return Bot(config.telegram.token)


class TelegramSender:
    channel = "telegram"
    window: Window | None = None  # deliver_due's

    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        self.ready = False
        self.hold_until = 0.0  # monotonic time before which nothing is sent
        self.network_failures = 0

    async def connect(self) -> None:
        """getMe until Telegram answers; until then rows wait (the bot's poller logs the outage)."""
        await until_it_answers(
            self.bot.initialize, lambda exc: log.debug("the Telegram sender cannot reach the Bot API yet (%s)", exc)
        )
        self.ready = True

    async def close(self) -> None:
        self.ready = False
        try:
            await self.bot.shutdown()
        except Exception as exc:  # nothing is left to deliver; a failing close must not hide that
            log.debug("closing the Telegram sender: %s", exc)

    async def deliver(self, row: dict[str, Any]) -> None:
        self.wait_turn()
        chunks = split_text(row["body"])
        markup = keyboard(row.get("buttons") or [], row.get("language") or "en")
        try:
            for index, chunk in enumerate(chunks):
                last = index == len(chunks) - 1
                await self.bot.send_message(
                    chat_id=int(row["recipient"]), text=chunk, reply_markup=markup if last else None
                )
        except RetryAfter as exc:
            wait = seconds_of(exc)
            self.hold(wait)
            raise TemporaryFailure(f"Telegram flood control: retry in {wait:g} s", retry_after=wait) from exc
        except Forbidden as exc:  # the user blocked the bot or deleted the account
            raise PermanentFailure(f"Telegram refused the chat: {exc}") from exc
        except ChatMigrated as exc:  # only groups migrate, and we only talk in private chats
            raise PermanentFailure(f"chat moved to {exc.new_chat_id}") from exc
        except BadRequest as exc:  # "chat not found" and every other request Telegram will never accept
            raise PermanentFailure(f"Telegram rejected the message: {exc}") from exc
        except TelegramError as exc:  # timeouts, 5xx, a Bot API server restarting: all pass
            # (a timed-out send may have arrived after all; a rare repeat beats a lost message)
            wait = NETWORK_BACKOFF_SECONDS[min(self.network_failures, len(NETWORK_BACKOFF_SECONDS) - 1)]
            self.network_failures += 1
            self.hold(wait)
            raise TemporaryFailure(f"Telegram unreachable: {exc}", retry_after=wait) from exc
        self.network_failures = 0

    def hold(self, seconds: float) -> None:
        self.hold_until = max(self.hold_until, time.monotonic() + seconds)

    def wait_turn(self) -> None:
        """Refuse (for now) while Telegram asked us to wait; the row retries right after."""
        if not self.ready:
            raise TemporaryFailure(
                "the Telegram bot is not connected yet", retry_after=NOT_READY_SECONDS, attempted=False
            )
        wait = self.hold_until - time.monotonic()
        if wait > 0:
            raise TemporaryFailure(
                f"holding for Telegram ({wait:.1f} s left)", retry_after=wait + QUEUE_MARGIN_SECONDS, attempted=False
            )


def seconds_of(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 deprecates the int form in favour of timedelta
        warnings.simplefilter("ignore")
        value = exc.retry_after
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return max(seconds, 1.0)


def split_text(body: str) -> list[str]:
    """Telegram's message limit, cut at line ends so no sentence is broken mid-word."""
    body = body.strip() or "…"
    chunks: list[str] = []
    while len(body) > MESSAGE_LIMIT:
        cut = body.rfind("\n", 0, MESSAGE_LIMIT)
        cut = cut if cut > MESSAGE_LIMIT // 2 else MESSAGE_LIMIT
        chunks.append(body[:cut].rstrip())
        body = body[cut:].lstrip("\n")
    chunks.append(body)
    return chunks


def keyboard(buttons: list[list[str]], language: str) -> InlineKeyboardMarkup | None:
    """One button per row: the labels are phrases, and a phone screen is narrow."""
    if not buttons:
        return None
    return InlineKeyboardMarkup(
        [
            [InlineKeyboardButton(button_label(label, command, language), callback_data=command)]
            for label, command in buttons
        ]
    )


def button_label(label: str, command: str, language: str) -> str:
    """The words on a button, from templates/<lang>/buttons.j2, keyed by what the button does."""
    words = labels(language)
    if command.startswith("choose:"):
        value = command.split(":", 2)[2]
        return words.CHOICES.get(value) or humane(value)
    if command.startswith("edit:"):
        field = command.split(":", 1)[1]
        return words.EDIT.format(field=words.FIELDS.get(field) or humane(field))
    return words.ACTIONS.get(command) or words.ACTIONS.get(label) or humane(label)


def labels(language: str) -> Any:
    return environment().get_template(f"{language_of(language)}/buttons.j2").module


def command_menu(language: str) -> list[tuple[str, str]]:
    return list(labels(language).COMMANDS.items())


def humane(code: str) -> str:
    return code.replace("_", " ").strip().capitalize() or "?"
