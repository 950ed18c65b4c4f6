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
import logging
import signal
import threading
from typing import Any, Callable

from refunddesk.desk import Desk
from refunddesk.store.db import use_writer_turns
from refunddesk.worker.process import fix_mmap_threshold
from refunddesk.worker.supervisor import Workers

log = logging.getLogger("refunddesk.service")


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
        config = self.desk.config
        if config["email.smtp_intake.enabled"]:
            from refunddesk.intake.email.smtp import start_receiver

            controller = start_receiver(self.desk, self.worker.ring)
            self.stoppers.append(controller.stop)
            log.info("SMTP intake on %s:%s", config["email.smtp_intake.host"], config["email.smtp_intake.port"])
        if config["email.imap.enabled"]:
            from refunddesk.intake.email.imap import start_poller

            poller = start_poller(self.desk, self.worker.ring)
            self.stoppers.append(poller.stop)
            log.info("IMAP poller on %s:%s", config["email.imap.host"], config["email.imap.port"])
        if config["telegram.enabled"]:
            from refunddesk.bot.app import start_bot

            await asyncio.to_thread(self.swept.wait, 60)  # no download may race the sweep
            bot = await start_bot(self.desk, self.worker.ring)
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

        self.tasks.append(asyncio.create_task(reminders.watch(self.desk, self.stopping, self.worker)))
        try:
            from refunddesk.review.sla import watch
        except ImportError:
            pass
        else:
            self.tasks.append(asyncio.create_task(watch(self.desk, self.stopping, self.worker)))

    async def run(self) -> None:
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
        await self.start_channels()
        log.info("refunddesk serving (policy %s, store %s)", self.desk.policy.id, self.desk.db_path)
        await stop.wait()
        log.info("stopping")
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


def run(desk: Desk) -> int:
    asyncio.run(Service(desk).run())
    return 0
