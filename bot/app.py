"""The Telegram channel's edge: poll the Bot API, store every private update, ring the worker.

Only accepting happens here (ARCHITECTURE.md, "Edges only accept"): an update's files are
downloaded into the evidence store, the update is spooled as raw JSON, and only then is it
acknowledged. Telegram counts an update as acknowledged when a later getUpdates asks for a
higher offset. PTB's own Updater asks for that offset as soon as it has queued the updates,
before any handler ran, so a crash there loses them. We poll ourselves instead: each update
goes through the PTB Application's handlers (`process_update`, which awaits the handler),
and the offset moves past it only when the handler committed the spool row. A crash at any
point means Telegram sends the update again, and the spool's unique update_id keeps one copy.

The updates of one getUpdates are accepted chat by chat at once, each chat's in order: one
after another, every update waited for the previous one's answerCallbackQuery, download and
commit, and a burst of 1,000 dialogs was answered at ~190 updates/s with the machine's CPU a
third idle (bench/telegram.py). Their spool rows are committed together (store/committer.py).

No ConversationHandler and no PTB persistence: the dialog's state lives in our store.
"""
from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from typing import Any, Callable

from telegram import BotCommand, Message, Update
from telegram.error import BadRequest, Conflict, InvalidToken, TelegramError
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes, MessageHandler, filters

from refunddesk.intake.telegram import COMMANDS
from refunddesk.bot.send import RETRY_SECONDS, command_menu, make_bot, retry_pause, until_it_answers
from refunddesk.desk import Desk
from refunddesk.store import evidence, spool
from refunddesk.store.committer import GroupCommitter
from refunddesk.store.clock import utcnow

log = logging.getLogger("refunddesk.bot")
LONG_POLL_SECONDS = 25
ALLOWED_UPDATES = ["message", "callback_query"]
BOT_API_DOWNLOAD_LIMIT = 20 * 1024 * 1024  # the cloud Bot API serves no larger file to a bot
DOWNLOAD_ATTEMPTS = 4  # then the message is kept without the file, so later updates are not blocked
PRIVATE = filters.ChatType.PRIVATE


class NotAccepted(Exception):
    """An update could not be stored; it stays unacknowledged and Telegram sends it again."""


class TelegramBot:
    def __init__(self, desk: Desk, wake: Callable[[], None]) -> None:
        config = desk.config
        # The replies leave from the worker's process (outbound/dispatcher.py), by a Bot of its own.
        self.app = Application.builder().bot(make_bot(config)).updater(None).build()
        self.desk = desk
        self.wake = wake
        self.file_limit = min(config["telegram.max_file_bytes"], BOT_API_DOWNLOAD_LIMIT)
        self.connected = False
        self.db = desk.open_db()
        self.committer = GroupCommitter(desk.open_db, "telegram-spool")
        self.offset: int | None = None
        self.failures: dict[int, BaseException] = {}
        self.in_flight: set[asyncio.Future] = set()
        self.download_failures: dict[str, int] = {}
        self.task: asyncio.Task | None = None
        self.add_handlers()

    def add_handlers(self) -> None:
        app = self.app
        app.add_handler(CommandHandler(list(COMMANDS), self.store_update, filters=PRIVATE))
        app.add_handler(MessageHandler(PRIVATE & filters.PHOTO, self.store_update))
        app.add_handler(MessageHandler(PRIVATE & filters.Document.ALL, self.store_update))
        app.add_handler(MessageHandler(PRIVATE & filters.TEXT, self.store_update))
        # Stickers, voice notes, locations: kept too, so the dialog can ask again politely.
        app.add_handler(MessageHandler(PRIVATE & filters.UpdateType.MESSAGE, self.store_update))
        app.add_handler(CallbackQueryHandler(self.store_button))
        app.add_error_handler(self.remember_failure)

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name="telegram-poll")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        # A spool commit already running in a thread finishes before its connection closes.
        await asyncio.gather(*self.in_flight, return_exceptions=True)
        if self.offset is not None and self.connected:
            # Tell Telegram what we stored, so the next start does not fetch it again
            # (harmless if this fails: the spool drops an update_id it already has).
            try:
                await asyncio.wait_for(self.app.bot.get_updates(offset=self.offset, timeout=0, limit=1, allowed_updates=ALLOWED_UPDATES), 3)
            except (TelegramError, asyncio.TimeoutError) as exc:
                log.debug("final acknowledgement failed: %s", exc)
        self.connected = False
        await self.app.shutdown()
        await asyncio.to_thread(self.committer.close)  # after the spool rows still queued
        self.db.conn.close()

    async def run(self) -> None:
        await self.connect()
        errors = 0
        while True:
            try:
                updates = await self.app.bot.get_updates(offset=self.offset, timeout=LONG_POLL_SECONDS, allowed_updates=ALLOWED_UPDATES)
                await self.accept_all(updates)
                errors = 0
            except asyncio.CancelledError:
                raise
            except Conflict as exc:
                errors += 1
                log.warning("another client polls this bot (%s); retrying", exc)
            except InvalidToken as exc:
                errors = len(RETRY_SECONDS)
                log.error("Telegram rejected the bot token: %s", exc)
            except (TelegramError, NotAccepted) as exc:
                errors += 1
                log.warning("Telegram polling: %s; retrying", exc)
            except Exception:
                errors += 1
                log.exception("Telegram polling failed; retrying")
            if errors:
                await asyncio.sleep(retry_pause(errors))

    async def connect(self) -> None:
        """getMe, drop any webhook (it would block getUpdates), set the command menu; retried
        until Telegram answers, so email keeps working while Telegram is unreachable."""

        async def introduce() -> None:
            await self.app.initialize()
            await self.app.bot.delete_webhook(drop_pending_updates=False)
            await self.set_commands()

        await until_it_answers(introduce, lambda exc: log.warning("cannot reach the Telegram Bot API (%s); retrying", exc))
        self.connected = True
        log.info("Telegram bot @%s polling", self.app.bot.username)

    async def set_commands(self) -> None:
        await self.app.bot.set_my_commands([BotCommand(name, text) for name, text in command_menu("en")])
        await self.app.bot.set_my_commands([BotCommand(name, text) for name, text in command_menu("zh")], language_code="zh")

    # --- accepting one update ------------------------------------------------------------------

    async def accept_all(self, updates: list[Update]) -> None:
        """Every chat's updates at once, each chat's in order; then the offset moves past all
        updates below the first that could not be stored (NotAccepted for that one). A chat
        stops at its failed update, so its later ones wait for the retry; other chats' later
        ones may be stored already, and the spool keeps one copy when they come again."""
        chats: dict[Any, list[Update]] = {}
        for update in updates:
            chat = update.effective_chat
            chats.setdefault(chat.id if chat is not None else ("update", update.update_id), []).append(update)
        failed: list[tuple[int, NotAccepted]] = []

        async def accept_chat(chat_updates: list[Update]) -> None:
            for update in chat_updates:
                try:
                    await self.accept(update)
                except NotAccepted as exc:
                    failed.append((update.update_id, exc))
                    return

        await asyncio.gather(*(accept_chat(chat_updates) for chat_updates in chats.values()))
        first_failed = min((update_id for update_id, _ in failed), default=None)
        stored = [u.update_id for u in updates if first_failed is None or u.update_id < first_failed]
        if stored:
            # max(): a replayed older update must not move the acknowledgement back.
            self.offset = max(self.offset or 0, max(stored) + 1)
        if failed:
            raise min(failed, key=lambda item: item[0])[1]

    async def accept(self, update: Update) -> None:
        """Run the update through the handlers; raise unless it was stored or deliberately ignored."""
        self.failures.pop(update.update_id, None)
        await self.app.process_update(update)
        failure = self.failures.pop(update.update_id, None)
        if failure is not None:
            raise NotAccepted(f"update {update.update_id} not stored: {failure}") from failure

    async def remember_failure(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        if isinstance(update, Update):
            self.failures[update.update_id] = context.error or RuntimeError("unknown handler error")
        if not isinstance(context.error, TelegramError):  # Telegram's own errors are logged by run()
            log.error("handling a Telegram update failed", exc_info=context.error)

    async def store_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        message = query.message
        if message is None or message.chat.type != "private":
            return  # inline-mode or group buttons are not ours
        try:
            await query.answer()  # at once: the client shows a spinner until we answer
        except TelegramError as exc:  # too old after a restart; the press still counts
            log.debug("answerCallbackQuery failed: %s", exc)
        await self.store_update(update, context)

    async def store_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        transport_id = str(update.update_id)
        message = update.message
        # Only a message with files needs the replay check first (no second download); for
        # any other update spool() itself keeps the one row, and a thread hop is saved.
        if message is not None and (message.photo or message.document) and self.spooled(transport_id):
            return  # a replay of an update we stored before a restart: no second download
        meta: dict[str, Any] = {}
        if update.message is not None:
            meta = await self.fetch_files(update.message)
        raw = json.dumps(update.to_dict(), ensure_ascii=False).encode("utf-8")
        at = received_at(update)
        chat = update.effective_chat.id if update.effective_chat else None
        _, new = await self.committer.write(lambda db: spool.spool(db, "telegram", transport_id, raw, at, meta, chat), len(raw))
        if new:
            self.wake()

    async def in_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        """Blocking store work off the event loop; shielded, so a stop cannot cut a commit or
        a blob write in half (the thread would go on with a closed connection)."""
        future = asyncio.ensure_future(asyncio.to_thread(function, *args))
        self.in_flight.add(future)
        future.add_done_callback(self.in_flight.discard)
        return await asyncio.shield(future)

    def spooled(self, transport_id: str) -> bool:
        """On the loop itself: one read by a unique index, which a WAL reader never waits for."""
        row = self.db.execute("SELECT 1 FROM inbound WHERE channel = 'telegram' AND transport_id = ?", [transport_id]).fetchone()
        return row is not None

    async def fetch_files(self, message: Message) -> dict[str, Any]:
        """Download the message's photo (largest size that fits) and document into the blob
        store. A file over the limit is refused by its declared size, before any download."""
        files: list[dict[str, Any]] = []
        refused: list[dict[str, Any]] = []
        wanted = []
        if message.photo:
            fitting = [p for p in message.photo if (p.file_size or 0) <= self.file_limit]
            if fitting:
                best = max(fitting, key=lambda p: (p.width * p.height, p.file_size or 0))
                wanted.append((best, f"photo-{best.file_unique_id}.jpg", "image/jpeg"))
            else:
                biggest = message.photo[-1]
                refused.append({"filename": f"photo-{biggest.file_unique_id}.jpg", "size": biggest.file_size or 0, "limit": self.file_limit})
        if message.document:
            document = message.document
            name = document.file_name or f"document-{document.file_unique_id}"
            wanted.append((document, name, document.mime_type or "application/octet-stream"))
        lost: list[dict[str, Any]] = []
        for item, filename, content_type in wanted:
            if (item.file_size or 0) > self.file_limit:
                refused.append({"filename": filename, "size": item.file_size, "limit": self.file_limit})
                continue
            try:
                stored = await self.download(item.file_id, filename, content_type)
            except BadRequest as exc:
                if "too big" not in str(exc).lower():
                    self.give_up_or_raise(item.file_unique_id, exc)
                    lost.append({"filename": filename, "error": str(exc)[:200]})
                else:  # the file's size was not declared, and Telegram will not serve it
                    refused.append({"filename": filename, "size": item.file_size or 0, "limit": self.file_limit})
                continue
            except TelegramError as exc:
                self.give_up_or_raise(item.file_unique_id, exc)
                lost.append({"filename": filename, "error": str(exc)[:200]})
                continue
            self.download_failures.pop(item.file_unique_id, None)
            (files if "sha256" in stored else refused).append(stored)
        meta: dict[str, Any] = {}
        if files:
            meta["files"] = files
        if refused:
            meta["refused_files"] = refused
        if lost:
            meta["lost_files"] = lost
        return meta

    def give_up_or_raise(self, file_unique_id: str, exc: TelegramError) -> None:
        """Retry a failed download with the whole update (unacknowledged, so nothing is lost),
        but only a few times: one file that never downloads must not block every later update.
        After that the message is kept without the file, and the failure is logged."""
        failures = self.download_failures.get(file_unique_id, 0) + 1
        if failures < DOWNLOAD_ATTEMPTS:
            self.download_failures[file_unique_id] = failures
            raise exc
        self.download_failures.pop(file_unique_id, None)
        log.warning("giving up on Telegram file %s after %d attempts: %s", file_unique_id, failures, exc)

    async def download(self, file_id: str, filename: str, content_type: str) -> dict[str, Any]:
        file = await self.app.bot.get_file(file_id)
        if (file.file_size or 0) > self.file_limit:
            return {"filename": filename, "size": file.file_size, "limit": self.file_limit}
        data = bytes(await file.download_as_bytearray())
        if len(data) > self.file_limit:  # the declared size was missing or wrong
            return {"filename": filename, "size": len(data), "limit": self.file_limit}
        digest, _ = await self.in_thread(evidence.write_blob, self.desk.files, data)
        return {"filename": filename, "content_type": content_type, "size": len(data), "sha256": digest, "file_unique_id": file.file_unique_id}


def received_at(update: Update) -> datetime:
    # A message keeps the moment the customer sent it, even if we were down then: the policy's
    # deadlines count from when the customer asked. A button press carries no date.
    message = update.message
    return message.date if message is not None and message.date else utcnow()


async def start_bot(desk: Desk, wake: Callable[[], None]) -> TelegramBot:
    # httpx logs every Bot API call at INFO with its URL, and the URL holds the bot token: a
    # secret in every line (and a line per update, on the loop that polls and sends).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    bot = TelegramBot(desk, wake)
    await bot.start()
    return bot
