"""Shared pieces of the benchmarks: a real `refunddesk serve` in a subprocess, its
configuration, realistic customer mail, SMTP peers (sink, recording relay), percentiles and
a description of the machine.

Only what `pip install -e '.[test]'` installs is used. Every server listens on 127.0.0.1;
every process a benchmark starts is stopped when it ends (also on Ctrl-C).
"""
from __future__ import annotations

import asyncio
import atexit
import email.policy
import os
import platform
import random
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Callable

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
REFUNDS = "refunds@desk.test"
APPEALS = "appeals@desk.test"
SHANGHAI = timezone(timedelta(hours=8))
sys.path.insert(0, str(REPO / "tests"))
from conftest import free_port, wait_for, write_config  # noqa: E402,F401  (the tests' helpers)
from processes import process_tree, tree_status, vm_status  # noqa: E402,F401  (serve and its worker)

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")

_children: list[subprocess.Popen] = []


def _stop_children() -> None:
    for process in list(_children):
        stop_process(process)


atexit.register(_stop_children)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


signal.signal(signal.SIGTERM, _raise_interrupt)  # a killed benchmark still stops its servers


# --- processes and ports -------------------------------------------------------------------------


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def spawn(args: list[str], log_path: Path, **kwargs: Any) -> subprocess.Popen:
    log = open(log_path, "ab")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kwargs)
    process.log_file = log  # type: ignore[attr-defined]
    _children.append(process)
    return process


def stop_process(process: subprocess.Popen, timeout: float = 30) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait(10)
    log = getattr(process, "log_file", None)
    if log is not None:
        log.close()
    if process in _children:
        _children.remove(process)
    return code


# --- the real service ----------------------------------------------------------------------------


def add_workers_option(parser) -> None:
    parser.add_argument("--workers", type=int, default=1, help="worker.processes of serve (default 1, as shipped)")


def base_settings(folder: Path, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "store.path": str(folder / "refunddesk.db"),
        "store.files": str(folder / "files"),
        "policy.preset": "302ai",
        "email.refunds_address": REFUNDS,
        "email.appeals_address": APPEALS,
        "email.smtp_intake.enabled": False,
        "email.smtp_intake.port": free_port(),
        "email.outgoing.folder": str(folder / "outgoing"),
        "console.enabled": False,
        "console.port": free_port(),
    }
    settings.update(overrides)
    return settings


class Serve:
    """`python -m refunddesk.cli --config X serve`, exactly as an operator runs it."""

    def __init__(self, folder: Path, settings: dict[str, Any], env: dict[str, str] | None = None) -> None:
        self.folder = folder
        self.settings = settings
        self.config = write_config(folder / "refunddesk.toml", settings)
        self.log_path = folder / "serve.log"
        self.env = env or {}
        self.process: subprocess.Popen | None = None

    def start(self, wait_ports: tuple[int, ...] = (), wait: Callable[[], Any] | None = None) -> "Serve":
        # What `refunddesk init` does first: create the store. (serve's threads would each run
        # the migrations on a fresh store at the same moment, and one of them loses the race.)
        from refunddesk.store.db import open_db

        open_db(self.settings["store.path"]).conn.close()
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            self.process = spawn([PYTHON, "-m", "refunddesk.cli", "--config", str(self.config), "serve"], self.log_path)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        try:
            for port in wait_ports:
                wait_for(lambda: port_open(port) or self.died(), 30, 0.02, f"serve to listen on {port}")
            if wait is not None:
                wait_for(lambda: wait() or self.died(), 30, 0.02, "serve to start")
        except BaseException:
            self.stop()
            raise
        if self.process.poll() is not None:
            raise RuntimeError(f"serve exited at start:\n{self.output()[-3000:]}")
        return self

    def died(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"serve exited with {self.process.returncode}:\n{self.output()[-3000:]}")
        return False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> int:
        if self.process is None:
            return 0
        code = stop_process(self.process)
        self.process = None
        return code

    def output(self) -> str:
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""

    def errors(self) -> list[str]:
        return [line for line in self.output().splitlines() if " ERROR " in line or "Traceback" in line]

    def db(self) -> sqlite3.Connection:
        """A read connection to the store, as an agent's tool would open one."""
        conn = sqlite3.connect(self.settings["store.path"], timeout=30, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    def __enter__(self) -> "Serve":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def scratch(prefix: str, keep: bool = False) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=f"refunddesk-bench-{prefix}-"))
    if not keep:
        atexit.register(shutil.rmtree, folder, True)
    return folder


# --- realistic customer mail ---------------------------------------------------------------------


def screenshot_png(size: int, seed: int = 0) -> bytes:
    """A valid PNG of about `size` bytes whose pixels do not compress (as a photo of a screen
    does not), so the attachment costs on the wire what a real one costs."""
    rng = random.Random(seed)
    width = 256
    height = max(1, size // (width * 3 + 1))
    raw = b"".join(b"\x00" + rng.randbytes(width * 3) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b"")


REQUEST = (
    "Hello support team,\n\n"
    "I would like to request a refund for a duplicate charge on my account.\n\n"
    "Reason: duplicate charge, I was charged twice\n"
    "Credit type: paid\n"
    "Amount: {amount} USD\n"
    "Time: {time}\n"
    "Account ID: acme-prod-{n}\n"
    "Description: The same chat completion request (request id req_{n:08d}) was billed twice "
    "within the same second. I attached a screenshot of the billing page that shows both "
    "charges. Please refund the second charge.\n\n"
    "Best regards,\n{name}\n\n"
    "-- \n{name}\nPlatform engineer, Acme Widgets Ltd.\n"
)
FILLER = (
    "> On the previous day your status page reported elevated error rates for the completion "
    "endpoint; our client retried automatically and we believe the retry was billed as well.\n"
)


def customer_mail(n: int, attachment: bytes, *, to: str = REFUNDS, body_bytes: int = 3000, html: bool = True) -> tuple[str, str, bytes]:
    """(sender, Message-ID, raw bytes) of a complete refund request with a screenshot, as a
    mail client writes it: text and HTML alternatives, a quoted tail, one PNG attachment."""
    sender = f"customer{n}@example.test"
    message_id = f"<bench.{n}.{os.getpid()}.{time.time_ns()}@example.test>"
    incident = (datetime.now(SHANGHAI) - timedelta(days=1)).strftime("%Y-%m-%d") + " 10:00"
    text = REQUEST.format(amount=f"{10 + n % 90}.50", time=incident, n=n, name=f"Customer {n}")
    while len(text) < body_bytes:
        text += FILLER
    msg = EmailMessage()
    msg["From"] = f"Customer {n} <{sender}>"
    msg["To"] = to
    msg["Subject"] = f"Refund request: duplicate charge on acme-prod-{n}"
    msg["Date"] = format_datetime(datetime.now(timezone.utc))
    msg["Message-ID"] = message_id
    msg["User-Agent"] = "Mozilla/5.0 Thunderbird/115.0"
    msg.set_content(text)
    if html:
        paragraphs = "".join(f"<p>{line}</p>" for line in text.splitlines() if line)
        msg.add_alternative(f"<html><body>{paragraphs}</body></html>", subtype="html")
    msg.add_attachment(attachment, maintype="image", subtype="png", filename=f"billing-screenshot-{n}.png")
    return sender, message_id, msg.as_bytes(policy=email.policy.SMTP)  # CRLF, as on the wire


def sized_mail(n: int, total: int = 20_000, **kwargs: Any) -> tuple[str, str, bytes]:
    """A customer mail of about `total` bytes on the wire (the screenshot takes the rest)."""
    room = 1000
    for _ in range(3):  # converge on the size: base64, its line ends and the PNG rows
        got = len(customer_mail(n, screenshot_png(room, seed=n), **kwargs)[2])
        room = max(1000, room + int((total - got) * 76 / 78 * 3 / 4))
    return customer_mail(n, screenshot_png(room, seed=n), **kwargs)


# --- SMTP peers ----------------------------------------------------------------------------------


class SinkHandler:
    """Accepts every message and forgets it (what a bare aiosmtpd costs)."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 OK"


class RecordingHandler:
    """A relay that notes when each message arrived, keyed by its In-Reply-To."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.count = 0
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.monotonic()
        raw = envelope.original_content or b""
        head = raw.split(b"\r\n\r\n", 1)[0]
        key = ""
        for line in head.split(b"\r\n"):
            if line[:12].lower() == b"in-reply-to:":
                key = line[12:].strip().decode("ascii", "replace")
                break
        with self.lock:
            self.count += 1
            if key and key not in self.arrivals:
                self.arrivals[key] = now
            self.changed.notify_all()
        return "250 2.0.0 OK"


def smtp_controller(handler: Any, port: int, size_limit: int = 32 * 1024 * 1024) -> Any:
    """An aiosmtpd Controller configured like our receiver (raw bytes, SMTPUTF8, long lines)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP

    class LongLines(SMTP):
        line_length_limit = 65_536

    class Sink(Controller):
        def factory(self) -> SMTP:
            return LongLines(self.handler, **self.SMTP_kwargs)

    return Sink(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=True, decode_data=False, data_size_limit=size_limit, server_hostname="sink.test")


def start_sink_process(folder: Path) -> tuple[subprocess.Popen, int]:
    """A bare aiosmtpd that discards, in a process of its own (as `serve` is)."""
    port = free_port()
    process = spawn([PYTHON, str(BENCH / "_common.py"), "sink", str(port)], folder / f"sink-{port}.log")
    try:
        wait_for(lambda: port_open(port) or process.poll() is not None, 20, 0.02, f"the sink on {port}")
    except BaseException:
        stop_process(process)
        raise
    if process.poll() is not None:
        raise RuntimeError("the sink did not start")
    return process, port


def run_sink(port: int) -> None:
    controller = smtp_controller(SinkHandler(), port)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    stop.wait()
    controller.stop()


async def smtp_clients(port: int, mails: list[tuple[str, str, bytes]], clients: int, on_accepted: Callable[[int, float], None] | None = None, reconnect: bool = False) -> tuple[float, float, int]:
    """Send `mails` through `clients` concurrent SMTP connections (each sends its share in turn,
    reusing its connection as an MTA's queue runner does). Returns (start, end, refused)."""
    import aiosmtplib

    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(mails)):
        queue.put_nowait(index)
    refused = 0

    async def client() -> None:
        nonlocal refused
        smtp: aiosmtplib.SMTP | None = None
        try:
            while True:
                try:
                    index = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                if smtp is None:
                    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=120)
                    await smtp.connect()
                sender, _, raw = mails[index]
                try:
                    await smtp.sendmail(sender, [REFUNDS], raw)
                except aiosmtplib.SMTPException:
                    refused += 1
                    await smtp.quit()
                    smtp = None
                    continue
                if on_accepted is not None:
                    on_accepted(index, time.monotonic())
                if reconnect:
                    await smtp.quit()
                    smtp = None
        finally:
            if smtp is not None and smtp.is_connected:
                await smtp.quit()

    start = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    return start, time.monotonic(), refused


# --- figures -------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return f"{os.cpu_count()} CPU(s), {model}, {memory} RAM, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"


def header(title: str, command: list[str] | None = None) -> None:
    print(f"== {title}")
    print(f"machine: {machine()}")
    print("command: " + " ".join(command or ["python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]]))


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def run_receiver(config: str) -> None:
    """Only the product's SMTP receiver (intake/email/smtp.start_receiver), in a process of its
    own: the what-if of bench/smtp_intake.py --split (a `serve` without SMTP does the rest)."""
    import logging

    from refunddesk.config import load
    from refunddesk.desk import Desk
    from refunddesk.intake.email.smtp import start_receiver

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.setswitchinterval(0.0002)
    receiver = start_receiver(Desk.from_config(load(config)), lambda: None)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    stop.wait()
    receiver.stop()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "sink":
        run_sink(int(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "receiver":
        run_receiver(sys.argv[2])
    else:
        print("usage: python bench/_common.py sink PORT | receiver CONFIG", file=sys.stderr)
        sys.exit(2)
