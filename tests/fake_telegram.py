"""A fake Telegram Bot API server on 127.0.0.1, and a chat driven through it.

Telegram's cloud is the one peer a test cannot reach, so this stands in for it: the real
python-telegram-bot library (inside the real `refunddesk serve`) talks HTTP to it. It serves
`POST /bot<TOKEN>/<method>` (form-encoded or multipart; non-string values are JSON) and
`GET /file/bot<TOKEN>/<path>`, records every call, holds updates pushed by the test until a
getUpdates with a higher offset acknowledges them, and fails calls on request (429 with
`parameters.retry_after`, 403, ...). Standard library only: a threading HTTP server, so a
plain synchronous test can push updates and read the calls.

It pages like Telegram (at most `limit` updates from the offset), records when each update was
first handed out (`served_at`), and can serve what Telegram sometimes does: an update of a
kind the bot did not ask for, a getFile answer without `file_path`, and a file of no declared
size streamed without a Content-Length, counting the bytes it managed to send.
"""
from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, unquote

import pytest

from conftest import wait_for

TOKEN = "123456:TEST-token_for-refunddesk"
BOT_USER = {"id": 123456, "is_bot": True, "first_name": "Refund desk", "username": "refunddesk_test_bot"}
MAX_POLL_SECONDS = 1.0
STREAM_CHUNK = 64 * 1024


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    status: int = 200
    at: float = field(default_factory=time.monotonic)

    def json(self, key: str) -> Any:
        value = self.params.get(key)
        return json.loads(value) if isinstance(value, str) else value


@dataclass
class Failure:
    status: int
    description: str
    retry_after: int | None = None


class FakeTelegram:
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.lock = threading.Condition()
        self.calls: list[Call] = []
        self.updates: list[dict[str, Any]] = []
        self.acknowledged = 0  # every update_id below this was confirmed by an offset
        self.files: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, list[Failure]] = {}
        self.gone_chats: set[int] = set()
        self.held_files: dict[str, threading.Event] = {}
        self.on_acknowledge: Callable[[int], None] | None = None
        self.poll_generation = 0
        self.replays: list[dict[str, Any]] = []
        self.unasked: set[int] = set()  # update_ids served whatever allowed_updates says
        self.served_at: dict[int, float] = {}  # update_id -> when a getUpdates first returned it
        self.bytes_served: dict[str, int] = {}  # file_id -> bytes written to the downloading client
        self.ids = itertools.count(1)
        self.message_ids = itertools.count(1000)
        self.server: ThreadingHTTPServer | None = None

    # --- running ---------------------------------------------------------------------------

    def start(self) -> "FakeTelegram":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in two writes: with Nagle's algorithm the body waited for the
            # client's delayed ACK, 40 ms on every call, which Telegram's servers do not add.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                fake.handle_post(self)

            def do_GET(self) -> None:
                fake.handle_get(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        for event in self.held_files.values():
            event.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    # --- what a test does ------------------------------------------------------------------

    def push(self, update: dict[str, Any], *, unasked: bool = False) -> int:
        """Queue an update for the bot; returns its update_id (kept if the test set one).
        `unasked`: served even if its kind is not in allowed_updates (Telegram does so with
        updates made before allowed_updates changed)."""
        with self.lock:
            update.setdefault("update_id", next(self.ids))
            self.updates.append(update)
            if unasked:
                self.unasked.add(update["update_id"])
            self.lock.notify_all()
            return update["update_id"]

    def add_file(self, data: bytes | None, *, size: int | None = None, path: str | None = "documents/file.bin",
                 streamed: int | None = None) -> dict[str, Any]:
        """A file the bot may download; `data=None` declares a file too large to ever serve;
        `path=None`: getFile answers without a file_path; `streamed=N`: N bytes of no declared
        size (`size` 0), sent without a Content-Length."""
        number = len(self.files) + 1
        file_id = f"FILE{number:04d}-{'x' * 20}"
        declared = size if size is not None else (0 if streamed is not None else len(data or b""))
        entry = {"file_id": file_id, "file_unique_id": f"U{number:04d}", "file_size": declared,
                 "file_path": path.replace("file", f"file_{number}") if path else None, "data": data,
                 "streamed": streamed}
        with self.lock:
            self.files[file_id] = entry
        return entry

    def fail(self, method: str, status: int, description: str, *, retry_after: int | None = None, times: int = 1) -> None:
        with self.lock:
            self.failures.setdefault(method, []).extend(Failure(status, description, retry_after) for _ in range(times))

    def hold_file(self, file_id: str) -> threading.Event:
        """Stall the download of a file until the returned event is set."""
        event = threading.Event()
        self.held_files[file_id] = event
        return event

    def calls_of(self, method: str, **where: Any) -> list[Call]:
        with self.lock:
            found = [c for c in self.calls if c.method == method]
        return [c for c in found if all(str(c.params.get(k)) == str(v) for k, v in where.items())]

    def sent_to(self, chat_id: int) -> list[Call]:
        """Messages delivered to a chat (the ones Telegram accepted)."""
        return [c for c in self.calls_of("sendMessage", chat_id=chat_id) if c.status == 200]

    def replay(self, update_id: int) -> None:
        """Send an update again with the next getUpdates, although it was acknowledged (as a
        restarted Bot API server or a proxy may): the bot must not take it twice."""
        with self.lock:
            original = next(u for u in self.updates if u["update_id"] == update_id)
            self.replays.append(original)
            self.lock.notify_all()

    def pending_updates(self) -> list[int]:
        with self.lock:
            return [u["update_id"] for u in self.updates if u["update_id"] >= self.acknowledged]

    # --- serving ---------------------------------------------------------------------------

    def handle_post(self, request: BaseHTTPRequestHandler) -> None:
        prefix = f"/bot{self.token}/"
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        if not request.path.startswith(prefix):
            return self.answer(request, 401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        method = request.path[len(prefix):]
        params = read_params(request.headers.get("Content-Type", ""), body)
        call = Call(method, params)
        with self.lock:
            self.calls.append(call)
            failures = self.failures.get(method)
            failure = failures.pop(0) if failures else None
        if failure is not None:
            call.status = failure.status
            payload: dict[str, Any] = {"ok": False, "error_code": failure.status, "description": failure.description}
            if failure.retry_after is not None:
                payload["parameters"] = {"retry_after": failure.retry_after}
            return self.answer(request, failure.status, payload)
        handler = getattr(self, f"api_{method}", None)
        if handler is None:
            call.status = 404
            return self.answer(request, 404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"})
        status, result = handler(params)
        call.status = status
        if status != 200:
            return self.answer(request, status, {"ok": False, "error_code": status, "description": result})
        self.answer(request, 200, {"ok": True, "result": result})

    def handle_get(self, request: BaseHTTPRequestHandler) -> None:
        prefix = f"/file/bot{self.token}/"
        path = unquote(request.path)  # the library quotes the token's ':'
        entry = next((f for f in self.files.values() if f["file_path"] and path == prefix + f["file_path"]), None)
        with self.lock:
            self.calls.append(Call("GET file", {"path": path[len(prefix):], "file_id": entry["file_id"] if entry else None}))
        if entry is not None and entry["streamed"] is not None:
            return self.stream_file(request, entry)
        if entry is None or entry["data"] is None:
            return self.answer(request, 404, {"ok": False, "error_code": 404, "description": "Not Found"})
        held = self.held_files.get(entry["file_id"])
        if held is not None:
            held.wait(30)
        data = entry["data"]
        request.send_response(200)
        request.send_header("Content-Type", "application/octet-stream")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        try:
            request.wfile.write(data)
        except OSError:
            pass  # the client went away (a killed bot)

    def stream_file(self, request: BaseHTTPRequestHandler, entry: dict[str, Any]) -> None:
        """Zeros of no declared length (the end of the body is the end of the connection),
        written piece by piece until the client stops reading; what was written is counted.
        A small send buffer keeps what the kernel holds for the client out of that count."""
        request.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_CHUNK)
        request.close_connection = True
        request.send_response(200)
        request.send_header("Content-Type", "application/octet-stream")
        request.send_header("Connection", "close")
        request.end_headers()
        piece, left, sent = bytes(STREAM_CHUNK), entry["streamed"], 0
        try:
            while left > 0:
                request.wfile.write(piece[: min(left, STREAM_CHUNK)])
                sent += min(left, STREAM_CHUNK)
                left -= STREAM_CHUNK
                with self.lock:
                    self.bytes_served[entry["file_id"]] = sent
        except OSError:
            pass  # the client cut the transfer

    @staticmethod
    def answer(request: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        try:
            request.wfile.write(data)
        except OSError:
            pass

    # --- the Bot API methods a dialog uses -------------------------------------------------

    def api_getMe(self, params: dict[str, Any]) -> tuple[int, Any]:
        return 200, BOT_USER

    def api_deleteWebhook(self, params: dict[str, Any]) -> tuple[int, Any]:
        return 200, True

    def api_setMyCommands(self, params: dict[str, Any]) -> tuple[int, Any]:
        return 200, True

    def api_answerCallbackQuery(self, params: dict[str, Any]) -> tuple[int, Any]:
        return 200, True

    def api_getUpdates(self, params: dict[str, Any]) -> tuple[int, Any]:
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        wait = min(float(params.get("timeout") or 0), MAX_POLL_SECONDS)
        allowed = json.loads(params["allowed_updates"]) if params.get("allowed_updates") else None
        with self.lock:
            if offset > self.acknowledged:
                if self.on_acknowledge is not None:
                    self.on_acknowledge(offset)
                self.acknowledged = offset
            # As Telegram does, a newer poll ends an older one with 409 Conflict.
            self.poll_generation += 1
            generation = self.poll_generation
            deadline = time.monotonic() + wait
            while True:
                if generation != self.poll_generation:
                    return 409, "Conflict: terminated by other getUpdates request"
                ready = [u for u in self.updates if u["update_id"] >= self.acknowledged
                         and (allowed is None or any(k in u for k in allowed) or u["update_id"] in self.unasked)]
                remaining = deadline - time.monotonic()
                if self.replays:
                    ready, self.replays = self.replays + ready, []
                if ready or remaining <= 0:
                    served, now = ready[:limit], time.monotonic()
                    for update in served:
                        self.served_at.setdefault(update["update_id"], now)
                    return 200, served
                self.lock.wait(remaining)

    def api_sendMessage(self, params: dict[str, Any]) -> tuple[int, Any]:
        chat_id = int(params["chat_id"])
        if chat_id in self.gone_chats:
            return 403, "Forbidden: bot was blocked by the user"
        return 200, {"message_id": next(self.message_ids), "date": int(time.time()), "chat": {"id": chat_id, "type": "private"}, "text": params.get("text", "")}

    def api_editMessageText(self, params: dict[str, Any]) -> tuple[int, Any]:
        return 200, True

    def api_getFile(self, params: dict[str, Any]) -> tuple[int, Any]:
        entry = self.files.get(params.get("file_id", ""))
        if entry is None:
            return 400, "Bad Request: invalid file_id"
        if entry["file_size"] > 20 * 1024 * 1024:
            return 400, "Bad Request: file is too big"
        return 200, {k: entry[k] for k in ("file_id", "file_unique_id", "file_size", "file_path") if entry[k]}


def read_params(content_type: str, body: bytes) -> dict[str, Any]:
    if content_type.startswith("multipart/form-data"):
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        params: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            params[name] = payload if part.get_filename() else payload.decode("utf-8")
        return params
    if content_type.startswith("application/json"):
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in json.loads(body or b"{}").items()}
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}


# --- updates as Telegram sends them -------------------------------------------------------------


class Person:
    """A Telegram user in a private chat with the bot (chat id == user id, as in Telegram)."""

    def __init__(self, fake: FakeTelegram, user_id: int, language: str = "en", first_name: str = "Ada") -> None:
        self.fake = fake
        self.id = user_id
        self.language = language
        self.first_name = first_name

    @property
    def user(self) -> dict[str, Any]:
        return {"id": self.id, "is_bot": False, "first_name": self.first_name, "language_code": self.language}

    def chat(self, chat_type: str = "private", chat_id: int | None = None) -> dict[str, Any]:
        if chat_type == "private":
            return {"id": self.id, "type": "private", "first_name": self.first_name}
        return {"id": chat_id or -100000 - self.id, "type": chat_type, "title": "Some group"}

    def message(self, extra: dict[str, Any], chat_type: str = "private", chat_id: int | None = None) -> dict[str, Any]:
        return {"message": {"message_id": next(self.fake.message_ids), "date": int(time.time()), "from": self.user, "chat": self.chat(chat_type, chat_id), **extra}}

    def text(self, text: str, **kwargs: Any) -> dict[str, Any]:
        extra: dict[str, Any] = {"text": text}
        if text.startswith("/"):
            command = text.split()[0]
            extra["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return self.message(extra, **kwargs)

    def photo(self, data: bytes, caption: str = "", thumbnail: bytes = b"thumb") -> dict[str, Any]:
        small = self.fake.add_file(thumbnail, path="photos/file.jpg")
        large = self.fake.add_file(data, path="photos/file.jpg")
        sizes = [
            {"file_id": small["file_id"], "file_unique_id": small["file_unique_id"], "width": 90, "height": 60, "file_size": small["file_size"]},
            {"file_id": large["file_id"], "file_unique_id": large["file_unique_id"], "width": 1280, "height": 853, "file_size": large["file_size"]},
        ]
        extra: dict[str, Any] = {"photo": sizes}
        if caption:
            extra["caption"] = caption
        return self.message(extra)

    def document(self, data: bytes | None, filename: str, mime_type: str, *, size: int | None = None, caption: str = "") -> dict[str, Any]:
        entry = self.fake.add_file(data, size=size, path="documents/file.bin")
        document = {"file_id": entry["file_id"], "file_unique_id": entry["file_unique_id"], "file_name": filename, "mime_type": mime_type, "file_size": entry["file_size"]}
        extra: dict[str, Any] = {"document": document}
        if caption:
            extra["caption"] = caption
        return self.message(extra)

    def press(self, data: str, message_id: int = 1) -> dict[str, Any]:
        return {
            "callback_query": {
                "id": f"cb{next(self.fake.message_ids)}",
                "from": self.user,
                "chat_instance": f"ci{self.id}",
                "data": data,
                "message": {"message_id": message_id, "date": int(time.time()), "chat": self.chat(), "from": BOT_USER, "text": "..."},
            }
        }


class Conversation:
    """Salmon-style `say()`: push one update, wait until it is processed and every reply it
    caused is delivered, and return those replies (text and button commands)."""

    def __init__(self, fake: FakeTelegram, db_path: str, person: Person) -> None:
        self.fake = fake
        self.db_path = db_path
        self.person = person
        self.exchanges = 0

    def say(self, update: dict[str, Any] | str, timeout: float = 15) -> list["Reply"]:
        if isinstance(update, str):
            update = self.person.text(update)
        before = len(self.fake.sent_to(self.person.id))
        update_id = self.fake.push(update)
        self.exchanges += 1
        wait_for(lambda: self.settled(update_id), timeout, message=f"update {update_id} processed and its replies delivered")
        return [Reply.of(c) for c in self.fake.sent_to(self.person.id)[before:]]

    def press(self, command: str) -> list["Reply"]:
        return self.say(self.person.press(command))

    def settled(self, update_id: int) -> bool:
        import sqlite3

        with sqlite3.connect(self.db_path, timeout=10) as conn:
            row = conn.execute("SELECT status FROM inbound WHERE channel = 'telegram' AND transport_id = ?", [str(update_id)]).fetchone()
            if row is None or row[0] == "pending":
                return False
            (waiting,) = conn.execute("SELECT count(*) FROM outbox WHERE channel = 'telegram' AND recipient = ? AND status = 'pending'", [str(self.person.id)]).fetchone()
        return waiting == 0


@dataclass
class Reply:
    text: str
    buttons: list[tuple[str, str]]

    @classmethod
    def of(cls, call: Call) -> "Reply":
        markup = call.json("reply_markup") or {}
        buttons = [(b["text"], b.get("callback_data", "")) for row in markup.get("inline_keyboard", []) for b in row]
        return cls(call.params.get("text", ""), buttons)

    @property
    def commands(self) -> list[str]:
        return [command for _, command in self.buttons]


def watch_acknowledgements(fake: FakeTelegram, db_path: str) -> list[int]:
    """Check, at every getUpdates that moves the offset, that each private update it
    acknowledges is already in the spool. Returns the (growing) list of violations."""
    import sqlite3

    violations: list[int] = []

    def check(offset: int) -> None:
        wanted = [u["update_id"] for u in fake.updates if fake.acknowledged <= u["update_id"] < offset and is_private(u)]
        if not wanted:
            return
        with sqlite3.connect(db_path, timeout=10) as conn:
            marks = ",".join("?" for _ in wanted)
            present = {int(r[0]) for r in conn.execute(f"SELECT transport_id FROM inbound WHERE channel = 'telegram' AND transport_id IN ({marks})", [str(i) for i in wanted])}
        violations.extend(i for i in wanted if i not in present)

    fake.on_acknowledge = check
    return violations


def is_private(update: dict[str, Any]) -> bool:
    message = update.get("message") or (update.get("callback_query") or {}).get("message") or {}
    return (message.get("chat") or {}).get("type") == "private"


# --- the real service against the fake ----------------------------------------------------------


class BotUnderTest:
    """`refunddesk serve` with telegram.enabled, its store, and the fake Bot API it talks to.

    The token comes from REFUNDDESK_TELEGRAM_TOKEN (the config file has none), which is how
    an operator keeps the secret out of the file.
    """

    def __init__(self, tmp_path, fake: FakeTelegram, **overrides: Any) -> None:
        from conftest import base_settings, write_config
        from serving import Served

        from refunddesk.config import load
        from refunddesk.desk import Desk

        settings = base_settings(tmp_path, **{"telegram.enabled": True, "telegram.api_url": fake.url, **overrides})
        self.config = write_config(tmp_path / "refunddesk.toml", settings)
        self.fake = fake
        self.desk = Desk.from_config(load(self.config, environ={"REFUNDDESK_TELEGRAM_TOKEN": fake.token}))
        self.served = Served(self.config, tmp_path / "serve.log")
        self.db = self.desk.open_db()
        self.early_acknowledgements = watch_acknowledgements(fake, str(self.desk.db_path))

    def start(self) -> "BotUnderTest":
        polls = len(self.fake.calls_of("getUpdates"))
        self.served.start()
        try:
            wait_for(lambda: len(self.fake.calls_of("getUpdates")) > polls, 20, message="the bot polling getUpdates")
        except AssertionError:
            raise AssertionError(f"the bot did not start polling:\n{self.served.output()[-3000:]}")
        return self

    def stop(self, **kwargs: Any) -> int:
        return self.served.stop(**kwargs)

    def close(self, dead_letters: tuple[str, ...] = ()) -> None:
        """Stop serve and check what a run must never leave: dead letters other than the
        `dead_letters` (transport ids) a test made on purpose, early acknowledgements, errors."""
        self.served.stop()
        dead = [r for r in self.db.query("SELECT id, transport_id, error FROM inbound WHERE status = 'dead'")
                if r["transport_id"] not in dead_letters]
        self.db.conn.close()
        assert not dead, f"dead letters: {dead}"
        assert not self.early_acknowledgements, f"updates acknowledged before they were spooled: {self.early_acknowledgements}"
        log = self.served.output()
        assert "Traceback" not in log, f"the service logged an error:\n{log[-4000:]}"

    def inbound_rows(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT id, transport_id, status, case_id, meta, error FROM inbound WHERE channel = 'telegram' ORDER BY id"))

    def case_of(self, person: Person):
        from refunddesk.store import cases as case_store

        found = [c for c in case_store.cases_of_contact(self.db, f"tg:{person.id}")]
        return found[-1] if found else None

    def conversation(self, person: Person) -> Conversation:
        return Conversation(self.fake, str(self.desk.db_path), person)

    def person(self, user_id: int, language: str = "en", first_name: str = "Ada") -> Person:
        return Person(self.fake, user_id, language, first_name)


@pytest.fixture
def fake_telegram():
    fake = FakeTelegram().start()
    yield fake
    fake.stop()


@pytest.fixture
def bot(tmp_path, fake_telegram, monkeypatch):
    monkeypatch.setenv("REFUNDDESK_TELEGRAM_TOKEN", fake_telegram.token)
    running = BotUnderTest(tmp_path, fake_telegram).start()
    yield running
    running.close()
