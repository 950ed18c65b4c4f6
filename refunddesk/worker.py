"""The worker: the pipeline over the inbound spool, in a process of its own.

The channels only accept (SMTP 250, IMAP move, Telegram offset) and the worker does the
CPU-bound part (MIME parsing, the dialog, rules, rendering), and sends the replies
(refunddesk/outbound.py, in a thread of this process). In one interpreter they shared
one GIL: during a burst the worker's parsing held the SMTP receiver to ~150 mails/s on a
machine where a bare aiosmtpd accepts ~1,500 (bench/smtp_intake.py). In a process of its own,
the worker runs on another core, and at a lower CPU priority, so that when the machine is
short of CPU, accepting mail (which makes senders wait) goes first and processing (which only
delays the acknowledgement by a moment) catches up behind it.

Between the service and the worker there are only the store and two pipes of one-byte
doorbells, not multiprocessing's locks and events: a process killed while it holds one of
those leaves the other blocked for ever. To the worker: "mail spooled", "replies are due"
(an agent's decision, a reminder) and end of file when the service stops or dies. From the
worker: "start-up sweep done".
The worker also asks Linux to kill it with the service (PR_SET_PDEATHSIG): a `kill -9` of
`serve` leaves no worker behind to race the next one.

Each message has a time budget (`worker.message_seconds`, intake/budget.py): the worker stops
a message that runs past it itself, and the service replaces a worker that cannot (it is
still on the message a grace later), telling its replacement which message that was.
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

from refunddesk.desk import Desk
from refunddesk.intake import pipeline
from refunddesk.intake.budget import NO_BUDGET, Budget, Mark, OverBudget, Watchdog, grace
from refunddesk.intake.in_hand import InHand
from refunddesk.outbound import Outbound
from refunddesk.store import evidence, spool
from refunddesk.store.clock import utcnow
from refunddesk.store.db import use_writer_turns

log = logging.getLogger("refunddesk.worker")
IDLE_WAIT = 1.0
PASS_ROWS = 8  # spool rows processed per pass of the worker, in one transaction
RESTART_PAUSE, RESTART_PAUSE_MAX = 1.0, 60.0
NICENESS = 5  # below the channels, so that acceptance wins the CPU during a burst, yet not starved
# by a neighbour: at 19 a worker got ~1.5 % of a core beside two busy processes (weight 15
# against 1024 each) and a Telegram reply took 15 s instead of 0.1; at 5 it gets ~30 %.
PR_SET_PDEATHSIG = 1
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SPOOLED, REPLIES_DUE, SWEPT = b"i", b"o", b"s"


def ring(fd: int, signal_byte: bytes) -> bool:
    """Write one doorbell byte without ever blocking; False if the other side is gone."""
    try:
        os.write(fd, signal_byte)
    except BlockingIOError:
        pass  # the pipe is full of rings the other side has not read yet: it is rung already
    except OSError:
        return False
    return True


class Worker:
    """One worker process as the service sees it; started again if it ever ends by itself.

    With `worker.processes` above one, each is one lane of the spool (store/spool.pending_ids):
    lane 0 also sends the replies and sweeps at start-up; the others ring the service when
    they wrote replies (`replies_due`), and it rings lane 0."""

    def __init__(self, desk: Desk, swept: threading.Event, stopping: threading.Event, lane: tuple[int, int] = (0, 1),
                 replies_due: Callable[[], None] = lambda: None, on_swept: Callable[[], None] = lambda: None) -> None:
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
        self.seconds = desk.config["worker.message_seconds"]
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
        start = (self.desk, to_reader, from_writer, os.getpid(), logging.getLogger().level, sweep, self.lane, mark.fd, overdue)
        try:
            # -P: the service's working directory must not come first on the worker's import path.
            self.process = subprocess.Popen([sys.executable, "-P", "-m", "refunddesk.worker"], stdin=subprocess.PIPE, pass_fds=(to_reader, from_writer, mark.fd))
        except BaseException:
            for fd in (to_reader, to_writer, from_reader, from_writer):
                os.close(fd)
            mark.close()
            raise
        self.watchdog = Watchdog(mark, self.seconds, self.process.pid)
        try:
            self.process.stdin.write(pickle.dumps(start))
            self.process.stdin.close()
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
        ended = asyncio.ensure_future(self.ended())
        try:
            while not ended.done():
                await asyncio.wait({ended}, timeout=self.watchdog.interval)
                overdue = None if ended.done() else self.watchdog.overdue()
                if overdue is not None:
                    log.error("the worker has spent over %g s on inbound %s (worker.message_seconds = %g, and %g s of grace) and cannot stop it; replacing it%s",
                              self.watchdog.limit, overdue, self.seconds, grace(self.seconds), self.which())
                    self.overdue = overdue
                    self.process.kill()
                    await ended
        finally:
            ended.cancel()

    def which(self) -> str:
        """For the log: which of several workers this is (nothing when there is one)."""
        k, n = self.lane
        return f" [worker {k + 1} of {n}]" if n > 1 else ""

    async def ended(self) -> None:
        """Until the worker process has ended (and is reaped)."""
        try:
            sentinel = os.pidfd_open(self.process.pid)  # readable once the process has ended
        except (AttributeError, OSError):  # before Linux 5.3, or a seccomp profile refusing it
            await asyncio.to_thread(self.process.wait)
            return
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.add_reader(sentinel, lambda: done.done() or done.set_result(None))
        try:
            await done
        finally:
            loop.remove_reader(sentinel)
            os.close(sentinel)
        self.process.wait()

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
        count = desk.config["worker.processes"]
        self.stopping = stopping
        self.lanes = [Worker(desk, swept, stopping, (k, count), self.set, self.start_others if k == 0 else lambda: None) for k in range(count)]
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


# --- inside the worker process ------------------------------------------------------------------


class Doorbell:
    """The worker's end of the service's pipe."""

    def __init__(self, fd: int, replies_due: Callable[[], None] = lambda: None) -> None:
        self.fd = fd
        self.replies_due = replies_due
        self.closed = False

    def wait(self, timeout: float) -> None:
        """Until the service rings, stops, or `timeout` passes; then every ring is taken."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        while ready:
            data = os.read(self.fd, 4096)
            if not data:
                self.closed = True
                return
            if REPLIES_DUE in data:
                self.replies_due()
            ready, _, _ = select.select([self.fd], [], [], 0)


def main() -> None:
    """`python -m refunddesk.worker`, as Worker.start() runs it: its arguments come pickled on stdin."""
    run_worker(*pickle.load(sys.stdin.buffer))


def run_worker(desk: Desk, to_worker: int, from_worker: int, parent: int, log_level: int, sweep: bool, lane: tuple[int, int] = (0, 1),
               mark: int | None = None, overdue: int | None = None) -> None:
    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    die_with(parent)
    # Ctrl-C and a service manager's SIGTERM reach the whole process group; the service
    # decides when the worker stops (it closes the pipe), so no message is cut half-way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.nice(NICENESS)
    except OSError:
        pass
    fix_mmap_threshold()
    use_writer_turns()
    doorbell = Doorbell(to_worker)
    os.set_blocking(from_worker, False)
    budget = Budget(desk.config["worker.message_seconds"], Mark(mark) if mark is not None else None)
    work(desk, doorbell, lambda signal_byte: ring(from_worker, signal_byte), sweep, lane, budget, overdue)


def work(desk: Desk, doorbell: Doorbell, notify: Callable[[bytes], bool], sweep: bool = True, lane: tuple[int, int] = (0, 1),
         budget: Budget = NO_BUDGET, overdue: int | None = None) -> None:
    """`overdue`: the message this lane's last worker was replaced for (past its budget)."""
    db = desk.open_db(durable=False)  # no client waits on these commits (store/db.py)
    outbound = Outbound(desk) if lane[0] == 0 else None  # one sender: one window of deliveries, one order per recipient
    if outbound is not None:
        doorbell.replies_due = outbound.wake
        outbound.start()
    replies_written = outbound.wake if outbound is not None else lambda: notify(REPLIES_DUE)
    in_hand = InHand(desk.db_path, lane[0])
    in_hand.recover(db, utcnow(), overdue)
    if overdue is not None:
        try:
            pipeline.stop_overdue(desk, db, overdue, budget.seconds, utcnow())
            replies_written()  # its notice
        except Exception:
            log.exception("inbound %s: could not keep it as a dead letter; it is processed again", overdue)
    if sweep:
        sweep_orphans(desk, db, in_hand, budget)
        replies_written()  # the sweep answered what an interrupted run left pending
        notify(SWEPT)
    while not doorbell.closed:
        handled = 0
        try:
            # A few messages a pass, in one transaction (intake/pipeline.process_many), and
            # then their replies go out while the next ones are processed (a pass of 100
            # held every acknowledgement of a backlog until the last was done).
            handled = process_round(desk, db, in_hand, PASS_ROWS, lane=lane, budget=budget)
            if handled:
                replies_written()
        except (Exception, OverBudget):  # a budget running out where it could not be caught (SQLite ended the transaction)
            log.exception("worker pass failed; retrying")
        doorbell.wait(0 if handled else IDLE_WAIT)
    db.conn.close()
    if outbound is not None:
        outbound.stop()


def process_round(desk: Desk, db, in_hand: InHand, limit: int, up_to: int | None = None, lane: tuple[int, int] = (0, 1), budget: Budget = NO_BUDGET) -> int:
    """One batch of the spool (this lane's rows; those up to id `up_to`, if given), held in
    hand while it is processed; how many rows were handled."""
    waiting = [i for i in spool.pending_ids(db, limit, lane) if up_to is None or i <= up_to]
    waiting = in_hand.choose(waiting)
    if not waiting:
        return 0
    in_hand.hold(waiting)
    handled = len(pipeline.process_many(desk, db, waiting, budget=budget))
    in_hand.release()
    return handled


def sweep_orphans(desk: Desk, db, in_hand: InHand, budget: Budget = NO_BUDGET) -> None:
    """Delete evidence files no case refers to, left by a run that was cut off."""
    # Telegram files are written before their update is spooled, and become evidence rows
    # only when processed: finish what is pending before the sweep, or it deletes them.
    try:
        # What was pending at the start only: mail spooled meanwhile has no files yet, and a
        # burst arriving now must not hold the sweep (and the Telegram bot waiting on it) back.
        (last,) = db.execute("SELECT coalesce(max(id), 0) FROM inbound WHERE status = 'pending'").fetchone()
        while process_round(desk, db, in_hand, PASS_ROWS, last, budget=budget):
            pass
        removed = evidence.remove_orphans(db, desk.files)
        if removed:
            log.info("removed %d evidence files no case refers to (left by an interrupted run)", removed)
    except Exception:
        log.exception("start-up sweep of orphaned evidence files failed")


def die_with(parent: int) -> None:
    """Ask Linux to end this process when the service's process ends, however it ends."""
    try:
        libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # elsewhere the worker ends when it reads end of file from the service's pipe
    if os.getppid() != parent:  # the service died before the request was made
        os._exit(0)


def fix_mmap_threshold(size: int = 128 * 1024) -> None:
    """glibc raises its mmap threshold every time a large block is freed (up to 32 MB): after
    the first 25 MB mail, such mails are allocated in the heap, whose freed memory is rarely
    returned. A burst of them left serve at 270 MB after it ended, 130 MB with a fixed
    threshold, and its peak went from 350 to ~300 MB (bench/memory.py). Elsewhere: nothing."""
    try:
        libc().mallopt(M_MMAP_THRESHOLD, size)
    except (OSError, AttributeError):
        pass


def libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


if __name__ == "__main__":
    main()
