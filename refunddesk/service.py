"""`refunddesk serve`: every enabled channel, the worker and the outbox senders.

The channels, the console and the watchers run in this process; the worker and the senders
run in a process of its own (worker/process.py, outbound/dispatcher.py). Channels wake the
worker the moment they have committed a message, and the worker wakes its senders when it
has written a reply, so an acknowledgement leaves within a second, not at the next poll.
SIGTERM and SIGINT stop everything cleanly: channels stop accepting first, the worker finishes
the message in hand, senders finish the delivery in hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from refunddesk.addresses import endpoint
from refunddesk.config import Config
from refunddesk.desk import Desk
from refunddesk.intake import reminders
from refunddesk.review.sla import watch as watch_sla
from refunddesk.store.db import use_writer_turns
from refunddesk.worker.process import fix_mmap_threshold
from refunddesk.worker.supervisor import Workers

log = logging.getLogger("refunddesk.service")


class ListenError(Exception):
    """A channel cannot listen where the configuration says; the message is one line naming the setting."""


def listeners(config: Config) -> list[tuple[str, int, str]]:
    """(host, port, the table that sets them) of every enabled channel that listens on a port."""
    found = []
    if config.email.smtp_intake.enabled:
        found.append((config.email.smtp_intake.host, config.email.smtp_intake.port, "email.smtp_intake"))
    if config.console.enabled:
        found.append((config.console.host, config.console.port, "console"))
    return found


def listen_error(exc: BaseException, host: str, port: int, table: str, source: str) -> ListenError | None:
    """The one-line account of a failure to listen, or None when `exc` is no such failure.
    Looks through the causes: a channel may wrap the OSError in an error of its own."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__
    if cause is None:
        return None
    exc = cause
    if isinstance(exc, socket.gaierror):
        return ListenError(f"{host} is no address of this machine: {exc.strerror} ({table}.host in {source})")
    address = endpoint(host, port)
    if exc.errno == errno.EADDRINUSE:
        return ListenError(f"{address} is already in use ({table}.port in {source})")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ListenError(f"{address}: {host} is no address of this machine ({table}.host in {source})")
    if exc.errno == errno.EACCES:
        return ListenError(f"{address}: not allowed to listen on port {port} ({table}.port in {source})")
    return None


def check_listeners(config: Config) -> None:
    """Fail before anything starts when a channel's port is taken (another `serve`, another program),
    rather than after the worker is up and half the channels listen."""
    for host, port, table in listeners(config):
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                # As the channels' own sockets do: a port left in TIME_WAIT is free, a listening one is not.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, port))
        except OSError as exc:
            error = listen_error(exc, host, port, table, config.source)
            if error is None:
                raise
            raise error from None  # the one-line account stands for the OSError, as in listening()


class Service:
    def __init__(self, desk: Desk) -> None:
        self.desk = desk
        self.stopping = threading.Event()
        self.swept = threading.Event()  # the worker's start-up sweep of orphaned files is over
        self.worker = Workers(desk, self.swept, self.stopping)
        self.stoppers: list[Callable[[], Any]] = []
        self.tasks: list[asyncio.Task] = []

    # --- wiring --------------------------------------------------------------------------------

    async def start_channels(self) -> None:
        # Each channel's module is imported only when the channel is on: a desk without Telegram
        # or the console does not load python-telegram-bot, starlette and uvicorn.
        config = self.desk.config
        if config.email.smtp_intake.enabled:
            from refunddesk.intake.email.smtp import start_receiver

            with self.listening("email.smtp_intake"):
                controller = start_receiver(self.desk, self.worker.ring)
            self.stoppers.append(controller.stop)
            log.info("SMTP intake on %s:%s", config.email.smtp_intake.host, config.email.smtp_intake.port)
        if config.email.imap.enabled:
            from refunddesk.intake.email.imap import start_poller

            poller = start_poller(self.desk, self.worker.ring)
            self.stoppers.append(poller.stop)
            log.info("IMAP poller on %s:%s", config.email.imap.host, config.email.imap.port)
        if config.telegram.enabled:
            from refunddesk.bot.app import start_bot

            await asyncio.to_thread(self.swept.wait, 60)  # no download may race the sweep
            bot = await start_bot(self.desk, self.worker.ring)
            self.stoppers.append(bot.stop)
            log.info("Telegram bot started")
        if config.console.enabled:
            from refunddesk.review.web import start_console

            with self.listening("console"):
                console = await start_console(self.desk)
            self.stoppers.append(console.stop)
            log.info("console on http://%s:%s/", config.console.host, config.console.port)
        self.tasks.append(asyncio.create_task(reminders.watch(self.desk, self.stopping, self.worker)))
        self.tasks.append(asyncio.create_task(watch_sla(self.desk, self.stopping, self.worker)))

    @contextlib.contextmanager
    def listening(self, table: str) -> Iterator[None]:
        host, port = next((h, p) for h, p, t in listeners(self.desk.config) if t == table)
        try:
            yield
        except (OSError, RuntimeError) as exc:
            error = listen_error(exc, host, port, table, self.desk.config.source)
            if error is None:
                raise
            raise error from None

    async def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until SIGTERM or SIGINT; `on_ready` is called once every channel listens."""
        check_listeners(self.desk.config)
        fix_mmap_threshold()
        # Create or migrate the store once, before the worker and the channels each open it:
        # on a fresh store their connections would all run the migrations at the same moment.
        self.desk.open_db().conn.close()
        use_writer_turns()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self.worker.start()
        supervising = asyncio.create_task(self.worker.supervise())
        try:
            await self.start_channels()
            log.info("refunddesk serving (policy %s, store %s)", self.desk.policy.id, self.desk.db_path)
            if on_ready is not None:
                on_ready()
            await stop.wait()
            log.info("stopping")
        finally:
            # Also when a channel could not start: what did start stops, and the worker with it.
            await self.stop(supervising)

    async def stop(self, supervising: asyncio.Task) -> None:
        for stopper in reversed(self.stoppers):
            result = stopper()
            if asyncio.iscoroutine(result):
                await result
        self.stopping.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.to_thread(self.worker.stop)
        await supervising
        log.info("stopped")


def run(desk: Desk, on_ready: Callable[[], None] | None = None) -> int:
    asyncio.run(Service(desk).run(on_ready))
    return 0
