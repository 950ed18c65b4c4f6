"""The service's side of its workers: start, ring, watch the time budget, restart, stop.

See worker/process.py for why the worker is a process of its own, and docs/worker.md for a
picture of the processes, pipes and locks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from refunddesk.desk import Desk
from refunddesk.worker.doorbell import REPLIES_DUE, SPOOLED, SWEPT, ring
from refunddesk.worker.watchdog import Mark, Watchdog, grace

log = logging.getLogger("refunddesk.worker")
RESTART_PAUSE, RESTART_PAUSE_MAX = 1.0, 60.0


class Worker:
    """One worker process as the service sees it; started again if it ever ends by itself.

    With `worker.processes` above one, each is one lane of the spool (store/spool.pending_ids):
    lane 0 also sends the replies and sweeps at start-up; the others ring the service when
    they wrote replies (`replies_due`), and it rings lane 0."""

    def __init__(
        self,
        desk: Desk,
        swept: threading.Event,
        stopping: threading.Event,
        lane: tuple[int, int] = (0, 1),
        replies_due: Callable[[], None] = lambda: None,
        on_swept: Callable[[], None] = lambda: None,
    ) -> None:
        self.desk = desk
        self.swept = swept
        self.stopping = stopping
        self.lane = lane
        self.replies_due = replies_due
        self.on_swept = on_swept
        self.process: subprocess.Popen | None = None
        self.to_worker: int | None = None
        # ring() runs in the channels' threads: the pipe must not be closed between its read
        # of the descriptor and its write, or the byte could land in a file that reused the number.
        self.doorbell_lock = threading.Lock()
        self.restarts = 0
        self.seconds = desk.config.worker.message_seconds
        self.watchdog: Watchdog | None = None
        self.overdue: int | None = None  # the message the last worker was replaced for

    def start(self) -> None:
        """A fresh interpreter (`python -m refunddesk.worker`), not a fork of this process with
        its threads and running loop, and not multiprocessing's spawn, which starts a resource
        tracker process (13 MB) that nothing here needs. The desk arrives pickled on stdin."""
        to_reader, to_writer = os.pipe()
        from_reader, from_writer = os.pipe()
        # Only until one worker has swept: after that the Telegram bot runs (it waits for the
        # sweep), and its downloads are on disk a moment before their update is spooled.
        sweep = self.lane[0] == 0 and not self.swept.is_set()
        if self.watchdog is not None:
            self.watchdog.mark.close()
            self.watchdog = None
        mark = Mark()
        overdue, self.overdue = self.overdue, None
        start = (
            self.desk,
            to_reader,
            from_writer,
            os.getpid(),
            logging.getLogger().level,
            sweep,
            self.lane,
            mark.fd,
            overdue,
        )
        try:
            # -P: the service's working directory must not come first on the worker's import path.
            self.process = process = subprocess.Popen(
                [sys.executable, "-P", "-m", "refunddesk.worker"],
                stdin=subprocess.PIPE,
                pass_fds=(to_reader, from_writer, mark.fd),
            )
        except BaseException:
            for fd in (to_reader, to_writer, from_reader, from_writer):
                os.close(fd)
            mark.close()
            raise
        self.watchdog = Watchdog(mark, self.seconds, process.pid)
        stdin = process.stdin
        assert stdin is not None  # stdin=subprocess.PIPE
        try:
            stdin.write(pickle.dumps(start))
            stdin.close()
        except OSError as exc:  # it died at once; supervise() sees it end and starts another
            log.error("the worker ended before it read its start: %s", exc)
        finally:
            os.close(to_reader)  # the worker holds the only read end: it sees EOF when we are gone
            os.close(from_writer)
        os.set_blocking(to_writer, False)
        with self.doorbell_lock:
            self.to_worker = to_writer
        self.listen(from_reader)

    def listen(self, fd: int) -> None:
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                return
            if SWEPT in data:
                self.swept.set()
                self.on_swept()
            if REPLIES_DUE in data:
                self.replies_due()
            if not data:  # the worker is gone; supervise() starts another
                loop.remove_reader(fd)
                os.close(fd)

        os.set_blocking(fd, False)
        loop.add_reader(fd, readable)

    def ring(self, signal_byte: bytes = SPOOLED) -> None:
        """The channels' doorbell (any thread): a message was spooled."""
        with self.doorbell_lock:
            if self.to_worker is not None:
                ring(self.to_worker, signal_byte)

    async def supervise(self) -> None:
        """Spooled mail must never wait on a dead worker: a worker that ends by itself (a
        crash in C code, the OOM killer), or could not be started, is logged and started
        again, with a growing pause. One replaced for a message past its budget is started
        again at once: the mail behind that message has waited long enough."""
        while not self.stopping.is_set():
            if self.process is not None:
                await self.watched()
                if self.stopping.is_set():
                    return
                if self.overdue is None:
                    log.error("the worker ended unexpectedly (exit code %s)%s", self.process.returncode, self.which())
            self.close_doorbell()
            if self.overdue is None:
                self.restarts += 1
                pause = min(RESTART_PAUSE_MAX, RESTART_PAUSE * 2 ** min(self.restarts - 1, 10))
                log.info("starting the worker again in %.0f s%s", pause, self.which())
                await asyncio.to_thread(self.stopping.wait, pause)
            if self.stopping.is_set():
                return
            try:
                self.start()
            except Exception:
                log.exception("could not start the worker; trying again")
                self.process = None

    async def watched(self) -> None:
        """Until the worker process ends. Meanwhile a message it has held past its budget and
        grace has it killed (its transaction rolls back); the next worker is told which."""
        process, watchdog = self.process, self.watchdog
        assert process is not None and watchdog is not None  # start() set both, and only it changes them
        ended = asyncio.ensure_future(self.ended())
        try:
            while not ended.done():
                await asyncio.wait({ended}, timeout=watchdog.interval)
                overdue = None if ended.done() else watchdog.overdue()
                if overdue is not None:
                    log.error(
                        "the worker has spent over %g s on inbound %s (worker.message_seconds = %g, "
                        "and %g s of grace) and cannot stop it; replacing it%s",
                        watchdog.limit,
                        overdue,
                        self.seconds,
                        grace(self.seconds),
                        self.which(),
                    )
                    self.overdue = overdue
                    process.kill()
                    await ended
        finally:
            ended.cancel()

    def which(self) -> str:
        """For the log: which of several workers this is (nothing when there is one)."""
        k, n = self.lane
        return f" [worker {k + 1} of {n}]" if n > 1 else ""

    async def ended(self) -> None:
        """Until the worker process has ended (and is reaped)."""
        process = self.process
        assert process is not None  # started: only watched() waits for it
        try:
            sentinel = os.pidfd_open(process.pid)  # readable once the process has ended
        except (AttributeError, OSError):  # before Linux 5.3, or a seccomp profile refusing it
            await asyncio.to_thread(process.wait)
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not done.done():
                done.set_result(None)

        loop.add_reader(sentinel, readable)
        try:
            await done
        finally:
            loop.remove_reader(sentinel)
            os.close(sentinel)
        process.wait()

    def close_doorbell(self) -> None:
        with self.doorbell_lock:
            fd, self.to_worker = self.to_worker, None
            if fd is not None:
                os.close(fd)

    def stop(self, timeout: float = 30) -> None:
        """Let the worker finish the message in hand, then end it (it reads end of file)."""
        self.close_doorbell()
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            # It ignores SIGTERM (a service manager's group signal must not cut a message),
            # so a worker stuck past the timeout is killed; its transaction rolls back.
            log.warning("the worker did not stop within %s s; killing it%s", timeout, self.which())
            self.process.kill()
            self.process.wait(5)


class Workers:
    """The service's worker processes (`worker.processes`), rung and stopped as one.

    Lane 0 starts first: its start-up sweep processes everything that was pending, and the
    other lanes would only race it for the same rows, so they start once it has swept."""

    def __init__(self, desk: Desk, swept: threading.Event, stopping: threading.Event) -> None:
        count = desk.config.worker.processes
        self.stopping = stopping
        self.lanes = [
            Worker(desk, swept, stopping, (k, count), self.set, self.start_others if k == 0 else lambda: None)
            for k in range(count)
        ]
        self.others: list[asyncio.Task] = []

    def ring(self, signal_byte: bytes = SPOOLED) -> None:
        for worker in self.lanes:
            worker.ring(signal_byte)

    def set(self) -> None:
        """The senders' doorbell, as the watchers ring it (an Event's name): replies are due,
        and lane 0 sends them."""
        self.lanes[0].ring(REPLIES_DUE)

    def start(self) -> None:
        self.lanes[0].start()

    def start_others(self) -> None:
        """On the service's loop, when lane 0 reports its sweep done (once)."""
        if self.others or self.stopping.is_set():  # a sweep that ends as serve stops starts nothing
            return
        for worker in self.lanes[1:]:
            try:
                worker.start()
            except Exception:
                log.exception("could not start the worker; trying again%s", worker.which())
            self.others.append(asyncio.get_running_loop().create_task(worker.supervise()))

    async def supervise(self) -> None:
        await self.lanes[0].supervise()
        await asyncio.gather(*self.others)

    def stop(self, timeout: float = 30) -> None:
        """Within `timeout` for all of them, not each in turn."""
        for worker in self.lanes:
            worker.close_doorbell()  # all at once: each finishes its message in hand meanwhile
        deadline = time.monotonic() + timeout
        for worker in self.lanes:
            worker.stop(max(0.0, deadline - time.monotonic()))
