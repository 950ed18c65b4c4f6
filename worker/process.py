"""The worker: the pipeline over the inbound spool, in a process of its own.

The channels only accept (SMTP 250, IMAP move, Telegram offset) and the worker does the
CPU-bound part (MIME parsing, the dialog, rules, rendering), and sends the replies
(outbound/dispatcher.py, in a thread of this process). In one interpreter they shared
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

import ctypes
import ctypes.util
import logging
import os
import pickle
import resource
import signal
import sys
from collections.abc import Callable

from refunddesk.desk import Desk
from refunddesk.intake import pipeline
from refunddesk.intake.budget import NO_BUDGET, Budget, OverBudget
from refunddesk.outbound.dispatcher import Outbound
from refunddesk.store import evidence, spool
from refunddesk.store.clock import utcnow
from refunddesk.store.db import use_writer_turns
from refunddesk.worker.doorbell import REPLIES_DUE, SWEPT, Doorbell, ring
from refunddesk.worker.in_hand import InHand
from refunddesk.worker.senders import open_senders
from refunddesk.worker.watchdog import Mark

log = logging.getLogger("refunddesk.worker")
IDLE_WAIT = 1.0
PASS_ROWS = 8  # spool rows processed per pass of the worker, in one transaction
NICENESS = 5  # below the channels, so that acceptance wins the CPU during a burst, yet not starved
# by a neighbour: at 19 a worker got ~1.5 % of a core beside two busy processes (weight 15
# against 1024 each) and a Telegram reply took 15 s instead of 0.1; at 5 it gets ~30 %.
PR_SET_PDEATHSIG = 1
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
EX_OUT_OF_MEMORY = 70  # EX_SOFTWARE: the service starts another worker
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main() -> None:
    """`python -m refunddesk.worker`, as Worker.start() runs it: its arguments come pickled on stdin."""
    run_worker(*pickle.load(sys.stdin.buffer))


def run_worker(
    desk: Desk,
    to_worker: int,
    from_worker: int,
    parent: int,
    log_level: int,
    sweep: bool,
    lane: tuple[int, int] = (0, 1),
    mark: int | None = None,
    overdue: int | None = None,
) -> None:
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
    limit_memory(desk.config.worker.memory_mb)
    use_writer_turns()
    doorbell = Doorbell(to_worker)
    os.set_blocking(from_worker, False)
    budget = Budget(desk.config.worker.message_seconds, Mark(mark) if mark is not None else None)
    work(desk, doorbell, lambda signal_byte: ring(from_worker, signal_byte), sweep, lane, budget, overdue)


def work(
    desk: Desk,
    doorbell: Doorbell,
    notify: Callable[[bytes], bool],
    sweep: bool = True,
    lane: tuple[int, int] = (0, 1),
    budget: Budget = NO_BUDGET,
    overdue: int | None = None,
) -> None:
    """`overdue`: the message this lane's last worker was replaced for (past its budget)."""
    db = desk.open_db(durable=False)  # no client waits on these commits (store/db.py)
    outbound = (
        Outbound(desk, open_senders) if lane[0] == 0 else None
    )  # one sender: one window of deliveries, one order per recipient
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
        except MemoryError:
            # Even keeping the message as a dead letter needs more memory than worker.memory_mb
            # allows (SQLite rewrites its whole row): this worker ends, the batch is in hand, and
            # the in-hand record makes the message a dead letter once it has cost enough workers.
            log.error(
                "the worker ran out of memory (worker.memory_mb = %s) outside any one message's reading; restarting",
                desk.config.worker.memory_mb,
            )
            os._exit(EX_OUT_OF_MEMORY)
        except (
            Exception,
            OverBudget,
        ):  # a budget running out where it could not be caught (SQLite ended the transaction)
            log.exception("worker pass failed; retrying")
        doorbell.wait(0 if handled else IDLE_WAIT)
    db.conn.close()
    if outbound is not None:
        outbound.stop()


def process_round(
    desk: Desk,
    db,
    in_hand: InHand,
    limit: int,
    up_to: int | None = None,
    lane: tuple[int, int] = (0, 1),
    budget: Budget = NO_BUDGET,
) -> int:
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


def limit_memory(megabytes: int) -> None:
    """A mail that still blows up in memory (a parser's flaw nobody has found yet) becomes a dead
    letter "too large to read" (MemoryError, intake/pipeline.py), never the OOM killer's choice of
    a process on the host. RLIMIT_DATA, not RLIMIT_AS: glibc reserves 64 MB of address space per
    thread's arena, which would count against an address-space limit though never used."""
    if megabytes <= 0:
        return
    limit = megabytes * 1024 * 1024
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        resource.setrlimit(resource.RLIMIT_DATA, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    except (ValueError, OSError) as exc:
        log.warning("could not limit the worker's memory to %s MB (worker.memory_mb): %s", megabytes, exc)


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
