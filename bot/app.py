"""The Telegram channel's edge: poll the Bot API, store every private update, ring the worker.

Only accepting happens here (ARCHITECTURE.md, "Edges only accept"): an update's files are
downloaded into the evidence store, the update is spooled as the raw JSON Telegram sent, and
only then is it acknowledged. Telegram counts an update as acknowledged when a later
getUpdates asks for a higher offset. PTB's own Updater asks for that offset as soon as it has
queued the updates, before any handler ran, so a crash there loses them; and it parses every
update of a page before handing out any, so one it cannot parse fails the page for ever. We
poll ourselves instead, for the raw updates, and read each with intake/telegram.py.

Every update ends in one of three ways: stored (a pending spool row), kept as a dead letter
(one the desk cannot read: no chat, no sender, an edit, a file whose getFile names no
file_path, anything that raises while it is stored; its raw JSON stays in the spool with the
reason), or passed by (a group's or a channel's: not ours). Only the store failing keeps an
update unacknowledged, and it is tried again; a poison update costs one dead letter.

Each chat has a lane of its own: its updates are accepted one after another, in order, while
other chats' go on. A chat waiting for a file (Telegram's flood wait, a retry) holds back
only its own later updates: the offset moves up to the oldest update still in hand, and the
pages are fetched again from there, so the others are taken meanwhile (up to Telegram's page
of 100 past the one in hand; the wait for a file is bounded, LONGEST_FILE_WAIT).

Downloads stream, counting bytes, and stop at the limit whatever size was declared. Every
retry waits at least what Telegram named (`retry_after`); a file given up reaches the worker
as `lost_files`, and the customer is asked to send it again (intake/pipeline.py).

Edits (`edited_message`) are dead letters, as the issue asks: the reply to a message went out
when it arrived, and a polite word about an edit would need the dialog, which the edge does
not run. The bot does not ask for edits (allowed_updates); one that comes anyway is kept.

No ConversationHandler and no PTB persistence: the dialog's state lives in our store.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import warnings
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from telegram import BotCommand
from telegram.error import BadRequest, Conflict, InvalidToken, RetryAfter, TelegramError
from telegram.warnings import PTBUserWarning

from refunddesk.bot.send import RETRY_SECONDS, command_menu, make_bot, retry_pause, seconds_of, until_it_answers
from refunddesk.desk import Desk
from refunddesk.intake.telegram import READ_KINDS, chat_id_of, is_ours, problem_of
from refunddesk.store import evidence, spool
from refunddesk.store.clock import utcnow
from refunddesk.store.committer import GroupCommitter

log = logging.getLogger("refunddesk.bot")
LONG_POLL_SECONDS = 25
PAGE = 100  # updates per getUpdates: Telegram's most
STALL_POLL_SECONDS = 0.5  # while an update is in hand and nothing new came, look again this often
BOT_API_DOWNLOAD_LIMIT = 20 * 1024 * 1024  # the cloud Bot API serves no larger file to a bot
DOWNLOAD_ATTEMPTS = 4  # then the message is kept without the file, and the customer told
DOWNLOAD_PAUSES = (1, 2, 5)  # seconds before the 2nd, 3rd, 4th try, unless Telegram names longer
LONGEST_FILE_WAIT = 60  # Telegram asking for a longer wait gives the file up (no call before it)
DOWNLOAD_CHUNK = 64 * 1024
DOWNLOAD_TIMEOUT = httpx.Timeout(30, connect=10)  # read: per chunk, so a stalled transfer ends
STORE_ATTEMPTS = 3  # a spool write failing this often makes the update a dead letter, if that can be stored

# We ask getUpdates for raw JSON through do_api_request, which warns that get_updates exists.
warnings.filterwarnings("ignore", message=r"Please use 'Bot\.getUpdates'", category=PTBUserWarning)


class UnreadableFile(Exception):
    """getFile answered, but with nothing to download: the update becomes a dead letter."""


class FileNotServed(Exception):
    """The file server answered the download with an error status."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"the file server answered {status}")
        self.retry_after = retry_after


class Ledger:
    """Which fetched updates are in hand, and so the offset Telegram may be given: every update
    below it was stored, kept as a dead letter or passed by."""

    def __init__(self) -> None:
        self.offset: int | None = None
        self.open: set[int] = set()
        self.closed: set[int] = set()  # finished, at or above the offset
        self.highest = -1

    def is_new(self, update_id: int) -> bool:
        if self.offset is not None and update_id < self.offset:
            return False  # a replay of one we finished (a restarted Bot API server, a proxy)
        return update_id not in self.open and update_id not in self.closed

    def take(self, update_id: int) -> None:
        self.open.add(update_id)
        self.highest = max(self.highest, update_id)

    def close(self, update_id: int) -> bool:
        """Finish one update; True when the offset moved."""
        self.open.discard(update_id)
        self.closed.add(update_id)
        offset = min(self.open) if self.open else self.highest + 1
        if self.offset is not None and offset <= self.offset:
            return False
        self.offset = offset
        self.closed = {i for i in self.closed if i >= offset}
        return True

    @property
    def known(self) -> int:
        """Updates at or above the offset we have already: the next page holds only these when
        there are a page of them."""
        return len(self.open) + len(self.closed)


class TelegramBot:
    def __init__(self, desk: Desk, wake: Callable[[], None]) -> None:
        config = desk.config
        # The replies leave from the worker's process (outbound/dispatcher.py), by a Bot of its own.
        self.bot = make_bot(config)
        self.secrets = [s for s in (config.telegram.token,) if s]
        self.desk = desk
        self.wake = wake
        self.file_limit = min(config.telegram.max_file_bytes, BOT_API_DOWNLOAD_LIMIT)
        self.files_http = httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT, headers={"Accept-Encoding": "identity"})
        self.connected = False
        self.db = desk.open_db()
        self.committer = GroupCommitter(desk.open_db, "telegram-spool")
        self.ledger = Ledger()
        self.progress = asyncio.Event()  # the offset moved
        self.chats: dict[Any, deque[dict[str, Any]]] = {}  # each chat's updates in hand, in order
        self.lanes: set[asyncio.Task] = set()
        self.in_flight: set[asyncio.Future] = set()
        self.task: asyncio.Task | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name="telegram-poll")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        for lane in list(self.lanes):  # an update cut off here is not acknowledged: it comes again
            lane.cancel()
        await asyncio.gather(*self.lanes, return_exceptions=True)
        # A spool commit already running in a thread finishes before its connection closes.
        await asyncio.gather(*self.in_flight, return_exceptions=True)
        if self.ledger.offset is not None and self.connected:
            # Tell Telegram what we stored, so the next start does not fetch it again
            # (harmless if this fails: the spool drops an update_id it already has).
            try:
                await asyncio.wait_for(self.get_updates(self.ledger.offset, 0, limit=1), 3)
            except (TimeoutError, TelegramError) as exc:
                log.debug("final acknowledgement failed: %s", self.redact(exc))
        self.connected = False
        await self.bot.shutdown()
        await self.files_http.aclose()
        await asyncio.to_thread(self.committer.close)  # after the spool rows still queued
        self.db.conn.close()

    async def run(self) -> None:
        await self.connect()
        errors = 0
        while True:
            try:
                await self.poll()
                errors = 0
            except asyncio.CancelledError:
                raise
            except Conflict as exc:
                errors += 1
                log.warning("another client polls this bot (%s); retrying", exc)
            except InvalidToken as exc:
                errors = len(RETRY_SECONDS)
                log.error("Telegram rejected the bot token: %s", self.redact(exc))
            except TelegramError as exc:
                errors += 1
                log.warning("Telegram polling: %s; retrying", self.redact(exc))
            except Exception:
                errors += 1
                log.exception("Telegram polling failed; retrying")
            if errors:
                await asyncio.sleep(retry_pause(errors))

    async def connect(self) -> None:
        """getMe, drop any webhook (it would block getUpdates), set the command menu; retried
        until Telegram answers, so email keeps working while Telegram is unreachable."""

        async def introduce() -> None:
            await self.bot.initialize()
            await self.bot.delete_webhook(drop_pending_updates=False)
            await self.set_commands()

        await until_it_answers(
            introduce, lambda exc: log.warning("cannot reach the Telegram Bot API (%s); retrying", self.redact(exc))
        )
        self.connected = True
        log.info("Telegram bot @%s polling", self.bot.username)

    async def set_commands(self) -> None:
        for language in ("en", "zh"):
            commands = [BotCommand(name, text) for name, text in command_menu(language)]
            await self.bot.set_my_commands(commands, language_code=None if language == "en" else language)

    # --- polling -------------------------------------------------------------------------------

    async def poll(self) -> None:
        """One getUpdates (acknowledging what is finished), its new updates handed to their
        chats' lanes. While updates are in hand Telegram answers at once (with those), so the
        next poll waits for the offset to move, or a moment, instead of asking in a loop."""
        ledger = self.ledger
        self.progress.clear()
        if ledger.known >= PAGE:  # the page would hold only updates we have
            await self.progress_or(STALL_POLL_SECONDS)
            return
        busy = bool(ledger.open)
        updates = await self.get_updates(ledger.offset, 0 if busy else LONG_POLL_SECONDS)
        fresh = 0
        for update in updates:
            if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
                log.warning("Telegram sent an update without an update_id; passed by")
                continue
            if ledger.is_new(update["update_id"]):
                self.take(update)
                fresh += 1
        if busy and not fresh:
            await self.progress_or(STALL_POLL_SECONDS)

    async def get_updates(self, offset: int | None, timeout: float, limit: int = PAGE) -> list[Any]:
        """The raw updates: each is read on its own, so one the library could not parse spoils
        no other."""
        arguments: dict[str, Any] = {"timeout": timeout, "limit": limit, "allowed_updates": list(READ_KINDS)}
        if offset is not None:
            arguments["offset"] = offset
        result = await self.bot.do_api_request("getUpdates", api_kwargs=arguments, read_timeout=timeout + 10)
        return result if isinstance(result, list) else []

    async def progress_or(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.progress.wait(), seconds)
        except TimeoutError:
            pass

    def take(self, update: dict[str, Any]) -> None:
        """Into its chat's lane (a lane of its own when it names no chat)."""
        update_id = update["update_id"]
        self.ledger.take(update_id)
        chat = chat_id_of(update)
        key = chat if chat is not None else ("update", update_id)
        waiting = self.chats.get(key)
        if waiting is not None:
            waiting.append(update)
            return
        self.chats[key] = deque([update])
        lane = asyncio.create_task(self.accept_chat(key), name=f"telegram-chat-{update_id}")
        self.lanes.add(lane)
        lane.add_done_callback(self.lanes.discard)

    async def accept_chat(self, key: Any) -> None:
        """The chat's updates in order. A run of them that need no call to Telegram first (no
        button to answer, no file) is accepted at once: their spool writes are queued in order
        (each accept's first await is its write) and share one commit, where one at a time a
        flooding chat cost a commit, an fsync, per message."""
        waiting = self.chats[key]
        try:
            while waiting:
                run = [waiting[0]]
                if offline(run[0]):
                    run = list(itertools.takewhile(offline, itertools.islice(waiting, PAGE)))
                await asyncio.gather(*(self.accept(update) for update in run))
                for update in run:
                    waiting.popleft()
                    if self.ledger.close(update["update_id"]):
                        self.progress.set()
        finally:
            del self.chats[key]

    # --- accepting one update ------------------------------------------------------------------

    async def accept(self, update: dict[str, Any]) -> None:
        """Store the update, or keep it as a dead letter, or pass it by; returns when it is one
        of those (while the store itself fails, it tries again: nothing is acknowledged)."""
        problem = problem_of(update)
        if problem is None and not is_ours(update):
            return  # a group's, a channel's, an inline-mode button: not ours
        if problem is None:
            try:
                await self.store(update)
                return
            except asyncio.CancelledError:
                raise
            except UnreadableFile as exc:
                problem = str(exc)
            except Exception as exc:
                problem = self.redact(f"{type(exc).__name__}: {exc}")
                log.error(
                    "Telegram update %s could not be stored (%s); kept as a dead letter", update["update_id"], problem
                )
        await self.keep_dead(update, problem)

    async def store(self, update: dict[str, Any]) -> None:
        transport_id = str(update["update_id"])
        query = update.get("callback_query")
        if query is not None:
            await self.answer_button(query)
        message = update.get("message") or {}
        meta: dict[str, Any] = {}
        if message.get("photo") or message.get("document"):
            # Only a message with files needs the replay check first (no second download); for
            # any other update spool() itself keeps the one row, and a thread hop is saved.
            if self.spooled(transport_id):
                return  # a replay of an update we stored before a restart
            meta = await self.fetch_files(message)
        raw = json.dumps(update, ensure_ascii=False).encode("utf-8")
        at, chat = received_at(update), chat_id_of(update)
        write = lambda db: spool.spool(db, "telegram", transport_id, raw, at, meta, chat)  # noqa: E731
        _, new = await self.commit(write, len(raw), STORE_ATTEMPTS)
        if new:
            self.wake()

    async def keep_dead(self, update: dict[str, Any], problem: str) -> None:
        """The update's raw JSON in the spool as a dead letter with the reason (agents see it,
        `refunddesk deadletters` lists it); tried until the store takes it."""
        log.warning("Telegram update %s kept as a dead letter: %s", update.get("update_id"), problem)
        raw = json.dumps(update, ensure_ascii=True).encode("ascii")  # ASCII: even a lone surrogate is kept
        at, chat = received_at(update), chat_id_of(update)
        error = f"unreadable Telegram update: {problem}"[:1000]

        def piece(db) -> None:
            inbound_id, new = spool.spool(db, "telegram", str(update["update_id"]), raw, at, {}, chat)
            if new:
                spool.finish(db, inbound_id, "dead", utcnow(), error=error)

        await self.commit(piece, len(raw))

    async def commit(self, piece: Callable[[Any], Any], size: int, attempts: int | None = None) -> Any:
        """A spool write through the group committer, tried again after a pause when the store
        fails; after `attempts` failures the error is raised (None: tried until it succeeds)."""
        failures = 0
        while True:
            try:
                return await self.committer.write(piece, size)
            except Exception as exc:
                failures += 1
                if attempts is not None and failures >= attempts:
                    raise
                log.warning("storing a Telegram update failed (%s); retrying", exc)
                await asyncio.sleep(retry_pause(failures))

    async def answer_button(self, query: dict[str, Any]) -> None:
        try:
            await self.bot.answer_callback_query(str(query.get("id") or ""))  # at once: the client shows a spinner
        except TelegramError as exc:  # too old after a restart; the press still counts
            log.debug("answerCallbackQuery failed: %s", self.redact(exc))

    async def in_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        """Blocking store work off the event loop; shielded, so a stop cannot cut a commit or
        a blob write in half (the thread would go on with a closed connection)."""
        future = asyncio.ensure_future(asyncio.to_thread(function, *args))
        self.in_flight.add(future)
        future.add_done_callback(self.in_flight.discard)
        return await asyncio.shield(future)

    def spooled(self, transport_id: str) -> bool:
        """On the loop itself: one read by a unique index, which a WAL reader never waits for."""
        row = self.db.execute(
            "SELECT 1 FROM inbound WHERE channel = 'telegram' AND transport_id = ?", [transport_id]
        ).fetchone()
        return row is not None

    # --- files ---------------------------------------------------------------------------------

    async def fetch_files(self, message: dict[str, Any]) -> dict[str, Any]:
        """Download the message's photo (largest size that fits) and document into the blob
        store. A file over the limit by its declared size is refused before any download."""
        found: dict[str, list[dict[str, Any]]] = {"files": [], "refused_files": [], "lost_files": []}
        wanted = []
        photos = [p for p in message.get("photo") or () if isinstance(p, dict)]
        if photos:
            fitting = [p for p in photos if size_of(p) <= self.file_limit]
            if fitting:
                best = max(fitting, key=lambda p: (int(p.get("width") or 0) * int(p.get("height") or 0), size_of(p)))
                wanted.append((best, f"photo-{best.get('file_unique_id')}.jpg", "image/jpeg"))
            else:
                biggest = photos[-1]
                name = f"photo-{biggest.get('file_unique_id')}.jpg"
                found["refused_files"].append(self.refusal(name, size_of(biggest)))
        document = message.get("document")
        if isinstance(document, dict):
            name = str(document.get("file_name") or f"document-{document.get('file_unique_id')}")
            wanted.append((document, name, str(document.get("mime_type") or "application/octet-stream")))
        for item, filename, content_type in wanted:
            if size_of(item) > self.file_limit:
                found["refused_files"].append(self.refusal(filename, size_of(item)))
                continue
            kind, entry = await self.fetch_file(str(item.get("file_id") or ""), filename, content_type)
            found[kind].append(entry)
        return {kind: entries for kind, entries in found.items() if entries}

    async def fetch_file(self, file_id: str, filename: str, content_type: str) -> tuple[str, dict[str, Any]]:
        """("files" | "refused_files" | "lost_files", its entry). A failed try is tried again,
        after the wait Telegram named or a growing pause, a few times; then the file is lost."""
        error: Exception  # set by the first failed try: the loop ends early only by returning
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            pause = DOWNLOAD_PAUSES[min(attempt, len(DOWNLOAD_PAUSES)) - 1]
            try:
                return await self.download(file_id, filename, content_type)
            except RetryAfter as exc:
                error, wait = exc, seconds_of(exc)
            except FileNotServed as exc:
                error, wait = exc, exc.retry_after or pause
            except BadRequest as exc:
                if "too big" in str(exc).lower():  # the file's size was not declared, and Telegram will not serve it
                    return "refused_files", self.refusal(filename, 0)
                error, wait = exc, pause
            except (TelegramError, httpx.HTTPError) as exc:
                error, wait = exc, pause
            if attempt == DOWNLOAD_ATTEMPTS or wait > LONGEST_FILE_WAIT:
                break
            await asyncio.sleep(wait)
        reason = self.redact(error)[:200]
        log.warning("giving up on Telegram file %s after %d attempts: %s", filename, attempt, reason)
        return "lost_files", {"filename": filename, "error": reason}

    async def download(self, file_id: str, filename: str, content_type: str) -> tuple[str, dict[str, Any]]:
        """Stream the file, counting its bytes: past the limit the transfer is cut, whatever
        size was declared (a 300 MB file of no declared size once went into memory whole)."""
        file = await self.bot.get_file(file_id)
        if (file.file_size or 0) > self.file_limit:
            return "refused_files", self.refusal(filename, file.file_size)
        data = bytearray()
        async with self.files_http.stream("GET", file_url(file.file_path)) as response:
            if response.status_code != 200:
                raise FileNotServed(response.status_code, retry_after_header(response))
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > self.file_limit:
                return "refused_files", self.refusal(filename, declared)
            async for chunk in response.aiter_bytes(DOWNLOAD_CHUNK):
                data += chunk
                if len(data) > self.file_limit:
                    return "refused_files", self.refusal(filename, 0)  # its size is unknown: more than the limit
        digest, _ = await self.in_thread(evidence.write_blob, self.desk.files, data)
        return "files", {
            "filename": filename,
            "content_type": content_type,
            "size": len(data),
            "sha256": digest,
            "file_unique_id": file.file_unique_id,
        }

    def refusal(self, filename: str, size: int | None) -> dict[str, Any]:
        return {"filename": filename, "size": size or 0, "limit": self.file_limit}

    def redact(self, error: object) -> str:
        """An error's text without the bot token (file URLs and API URLs carry it)."""
        text = str(error)
        for secret in self.secrets:
            text = text.replace(secret, "<token>").replace(quote(secret), "<token>")
        return text


def file_url(file_path: str | None) -> str:
    """The download address PTB made of getFile's relative file_path, its path quoted as PTB
    quotes it. None, or a local path (the answer of a Bot API server in local mode, which we
    never use), leaves nothing to download."""
    if not file_path:
        raise UnreadableFile("getFile answered without a file_path")
    parts = urlsplit(file_path)
    if parts.scheme not in ("http", "https"):
        raise UnreadableFile("getFile answered a local file_path")
    return urlunsplit(parts._replace(path=quote(parts.path)))


def retry_after_header(response: httpx.Response) -> float | None:
    try:
        return max(float(response.headers.get("Retry-After", "")), 1.0)
    except ValueError:
        return None


def offline(update: dict[str, Any]) -> bool:
    """Accepted without a call to Telegram: no button press (answered first), no file."""
    message = update.get("message")
    has_files = isinstance(message, dict) and bool(message.get("photo") or message.get("document"))
    return "callback_query" not in update and not has_files


def size_of(item: dict[str, Any]) -> int:
    return int(item.get("file_size") or 0)


def received_at(update: dict[str, Any]) -> datetime:
    # A message keeps the moment the customer sent it, even if we were down then: the policy's
    # deadlines count from when the customer asked. A button press carries no date.
    date = (update.get("message") or {}).get("date") if isinstance(update.get("message"), dict) else None
    try:
        return datetime.fromtimestamp(int(date), UTC) if date else utcnow()
    except (TypeError, ValueError, OverflowError, OSError):
        return utcnow()


async def start_bot(desk: Desk, wake: Callable[[], None]) -> TelegramBot:
    # httpx logs every Bot API call at INFO with its URL, and the URL holds the bot token: a
    # secret in every line (and a line per update, on the loop that polls and sends).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    bot = TelegramBot(desk, wake)
    await bot.start()
    return bot
