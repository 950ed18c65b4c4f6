"""`refunddesk serve`: the worker, the outbox senders and every enabled channel in one process.

The worker runs in a thread of its own (SQLite calls block); channels wake it the moment they
have committed a message, so an acknowledgement leaves within a second, not at the next poll.
SIGTERM and SIGINT stop everything cleanly: channels stop accepting first, the worker finishes
the message in hand, senders finish the delivery in hand.
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import signal
import sys
import threading
from typing import Any, Callable

from refunddesk.desk import Desk
from refunddesk.intake import pipeline
from refunddesk.intake.delivery import Sender, deliver_due
from refunddesk.intake.email.send import EmailSender
from refunddesk.store import evidence
from refunddesk.store.outbox import next_due_at
from refunddesk.store.clock import utcnow
from refunddesk.store.db import use_writer_turns

log = logging.getLogger("refunddesk.service")
IDLE_WAIT = 1.0
# The worker is CPU-bound while the channels' event loops mostly wait on sockets: with the
# default 5 ms, a loop that wakes waits up to 5 ms for the GIL at every socket call, and a burst
# of mail was accepted at ~55 msg/s instead of ~88 (docs/performance.md, bench/smtp_intake.py).
SWITCH_INTERVAL = 0.0002
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


class Wake:
    """A doorbell shared by the channels (any thread) and the loops that wait on it."""

    def __init__(self) -> None:
        self.inbound = threading.Event()
        self.outbound = threading.Event()

    def ring(self) -> None:
        self.inbound.set()


class Service:
    def __init__(self, desk: Desk) -> None:
        self.desk = desk
        self.wake = Wake()
        self.stopping = threading.Event()
        self.senders: list[Sender] = []
        self.stoppers: list[Callable[[], Any]] = []
        self.tasks: list[asyncio.Task] = []
        self.swept = threading.Event()  # the worker's start-up sweep of orphaned files is over

    # --- the worker ----------------------------------------------------------------------------

    def work(self) -> None:
        db = self.desk.open_db()
        # Telegram files are written before their update is spooled, and become evidence rows
        # only when processed: finish what is pending before the sweep, or it deletes them.
        try:
            while pipeline.process_pending(self.desk, db, limit=100) == 100:
                pass
            removed = evidence.remove_orphans(db, self.desk.files)
            if removed:
                log.info("removed %d evidence files no case refers to (left by an interrupted run)", removed)
        except Exception:
            log.exception("start-up sweep of orphaned evidence files failed")
        finally:
            self.swept.set()
        while not self.stopping.is_set():
            self.wake.inbound.clear()
            try:
                # One message a pass: its replies go out while the next one is processed (a
                # pass of 100 held every acknowledgement of a backlog until the last was done).
                handled = pipeline.process_pending(self.desk, db, limit=1)
            except Exception:
                log.exception("worker pass failed; retrying")
                handled = 0
            if handled:
                self.wake.outbound.set()
            else:
                self.wake.inbound.wait(IDLE_WAIT)
        db.conn.close()

    # --- the senders ---------------------------------------------------------------------------

    async def send_loop(self) -> None:
        db = self.desk.open_db()
        while not self.stopping.is_set():
            self.wake.outbound.clear()
            for sender in self.senders:
                try:
                    await deliver_due(db, sender)
                except Exception:
                    log.exception("sender %s failed a pass", sender.channel)
            await asyncio.to_thread(self.wake.outbound.wait, self.next_wait(db))
        db.conn.close()

    def next_wait(self, db) -> float:
        soonest = [next_due_at(db, s.channel) for s in self.senders]
        soonest = [s for s in soonest if s is not None]
        if not soonest:
            return IDLE_WAIT
        return max(0.05, min(IDLE_WAIT, (min(soonest) - utcnow()).total_seconds()))

    # --- wiring --------------------------------------------------------------------------------

    async def start_channels(self) -> None:
        config = self.desk.config
        self.senders.append(
            EmailSender(config.section("email.outgoing"), self.desk.addresses.refunds, config.path("email.outgoing.folder"), config["email.from_name"])
        )
        if config["email.smtp_intake.enabled"]:
            from refunddesk.intake.email.smtp import start_receiver

            controller = start_receiver(self.desk, self.wake.ring)
            self.stoppers.append(controller.stop)
            log.info("SMTP intake on %s:%s", config["email.smtp_intake.host"], config["email.smtp_intake.port"])
        if config["email.imap.enabled"]:
            from refunddesk.intake.email.imap import start_poller

            poller = start_poller(self.desk, self.wake.ring)
            self.stoppers.append(poller.stop)
            log.info("IMAP poller on %s:%s", config["email.imap.host"], config["email.imap.port"])
        if config["telegram.enabled"]:
            from refunddesk.bot.app import start_bot

            await asyncio.to_thread(self.swept.wait, 60)  # no download may race the sweep
            bot = await start_bot(self.desk, self.wake.ring)
            self.senders.append(bot.sender)
            self.stoppers.append(bot.stop)
            log.info("Telegram bot started")
        if config["console.enabled"]:
            try:
                from refunddesk.review.web import start_console
            except ImportError:
                log.warning("the web console is not available in this build")
            else:
                console = await start_console(self.desk)
                self.stoppers.append(console.stop)
                log.info("console on http://%s:%s/", config["console.host"], config["console.port"])
        from refunddesk.intake import reminders

        self.tasks.append(asyncio.create_task(reminders.watch(self.desk, self.stopping, self.wake.outbound)))
        try:
            from refunddesk.review.sla import watch
        except ImportError:
            pass
        else:
            self.tasks.append(asyncio.create_task(watch(self.desk, self.stopping, self.wake.outbound)))

    async def run(self) -> None:
        sys.setswitchinterval(SWITCH_INTERVAL)
        fix_mmap_threshold()
        use_writer_turns()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        worker = threading.Thread(target=self.work, name="refunddesk-worker", daemon=True)
        worker.start()
        await self.start_channels()
        sending = asyncio.create_task(self.send_loop())
        log.info("refunddesk serving (policy %s, store %s)", self.desk.policy.id, self.desk.db_path)
        await stop.wait()
        log.info("stopping")
        for stopper in reversed(self.stoppers):
            result = stopper()
            if asyncio.iscoroutine(result):
                await result
        self.stopping.set()
        self.wake.inbound.set()
        self.wake.outbound.set()
        for task in self.tasks:
            task.cancel()
        await sending
        worker.join(timeout=30)
        log.info("stopped")


def fix_mmap_threshold(size: int = 128 * 1024) -> None:
    """glibc raises its mmap threshold every time a large block is freed (up to 32 MB): after
    the first 25 MB mail, such mails are allocated in the heap, whose freed memory is rarely
    returned. A burst of them left serve at 270 MB after it ended, 130 MB with a fixed
    threshold, and its peak went from 350 to ~300 MB (bench/memory.py). Elsewhere: nothing."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, size)
    except (OSError, AttributeError):
        pass


def run(desk: Desk) -> int:
    asyncio.run(Service(desk).run())
    return 0
