"""The time budget of one message (`worker.message_seconds`), in the worker and over it.

Any customer can send a mail that is costly to read (a pattern that backtracks, a body of
millions of lines, HTML nested 60,000 deep), and every message behind it in the spool waits.
So each message gets a budget of the worker's time, spent across its steps (parsing and reading
it, then applying it): one that runs past it is stopped, kept as a dead letter (`took too
long`, its raw bytes intact) and answered like refused mail, and the next message is processed
at once.

The budget counts CPU time of the thread that processes the message: what the message costs.
The worker runs at the lowest CPU priority on purpose (refunddesk/worker.py), so on a busy
machine an ordinary message of 5 ms waited seconds for the CPU, and a budget in wall-clock
time stopped it as if it were costly.

Two guards, because one is not enough:
- In the process that processes the message, a CPU-time alarm (ITIMER_PROF) raises
  `OverBudget` in the middle of whatever it is doing; the message's savepoint is rolled back,
  the rest of its batch goes on. Python runs the alarm's handler only between two steps of its
  own interpreter: a single call into C code (nh3's HTML sanitizer on deep nesting) that runs
  on and on cannot be stopped this way.
- So the service watches each worker process too: the worker marks in memory shared with the
  service which message it is on (`Mark`: two integers, no system call, cheap enough for every
  message), and a worker that has spent a grace more than the budget on one message, whatever
  it is doing, is killed and replaced (`Watchdog`, refunddesk/worker.py); the replacement keeps
  the message as a dead letter. Its batch's other messages were rolled back with it and are
  processed again, and are not counted against (intake/in_hand.py).
"""
from __future__ import annotations

import contextlib
import mmap
import os
import signal
import struct
import tempfile
import threading
import time
from typing import Iterator

REASON = "took too long"
NOTICE = "it took too long to process"  # in the refused-mail notice: "could not process it automatically: ..."
RECORD = struct.Struct("<QQ")  # spans begun and ended (odd while one is open), the message's spool id
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # /proc's unit of CPU time


def grace(seconds: float) -> float:
    """How much more than its budget a message may cost before its worker is replaced: time for
    the alarm's handler to run once a call into C code returns."""
    return max(1.0, seconds / 4)


class OverBudget(BaseException):
    """Raised by the alarm inside a message's processing. A BaseException, like KeyboardInterrupt:
    a parser's `except Exception` fallback must not swallow it and carry on."""


class Mark:
    """The message a worker is on, in memory that the worker and the service map.

    The worker writes the id and then the span count, so a count that has stayed odd names its
    message reliably; the service only reads. A message's two spans cost ~10 us here, within
    the noise of its ~2.5 ms; the in-hand file, written with a rename (~0.2 ms a write), would
    have added a third to each message."""

    def __init__(self, fd: int | None = None) -> None:
        self.fd = shared_memory() if fd is None else fd
        self.view = mmap.mmap(self.fd, RECORD.size)
        self.count = RECORD.unpack_from(self.view)[0]

    def begin(self, inbound_id: int) -> None:
        self.count += 1 if self.count % 2 == 0 else 2  # still odd after a span never closed: a new one
        struct.pack_into("<Q", self.view, 8, inbound_id)
        struct.pack_into("<Q", self.view, 0, self.count)

    def end(self) -> None:
        if self.count % 2:
            self.count += 1
            struct.pack_into("<Q", self.view, 0, self.count)

    def read(self) -> tuple[int, int | None]:
        """(span count, the id of the message in hand, or None between messages)."""
        count, inbound_id = RECORD.unpack_from(self.view)
        if count % 2 == 0 or RECORD.unpack_from(self.view)[0] != count:
            return count, None
        return count, inbound_id

    def close(self) -> None:
        self.view.close()
        os.close(self.fd)


def shared_memory() -> int:
    try:
        fd = os.memfd_create("refunddesk-mark")
    except (AttributeError, OSError):  # not Linux: an unlinked temporary file does the same
        handle = tempfile.TemporaryFile()
        fd = os.dup(handle.fileno())
        handle.close()
    os.ftruncate(fd, RECORD.size)
    return fd


class Budget:
    """The budget of each message the pipeline processes in this process (intake/pipeline.py).

    `seconds=None`: no budget (tests, tools). The alarm works in the main thread only; elsewhere
    only the mark is kept. Time is counted per message across its steps until `reset()`."""

    def __init__(self, seconds: float | None = None, mark: Mark | None = None) -> None:
        self.seconds = seconds
        self.mark = mark
        self.spent: dict[int, float] = {}
        self.current: int | None = None
        self.before = self.started = 0.0  # the current message's spending before this step; this step's start
        self.alarm = seconds is not None and threading.current_thread() is threading.main_thread()
        if self.alarm:
            signal.signal(signal.SIGPROF, self.ring)

    def ring(self, signum, frame) -> None:
        """ITIMER_PROF counts the CPU of every thread of the process (the senders' too): it rings
        no later than this thread's budget is spent, perhaps before."""
        if self.current is None:  # a late alarm, after the message was done, is ignored
            return
        left = self.seconds - self.before - (time.thread_time() - self.started)
        if left > 0:
            signal.setitimer(signal.ITIMER_PROF, left)
            return
        # Again soon after: one alarm may land in a bare `except:` (there is one in the standard
        # library's header parser) and be swallowed.
        signal.setitimer(signal.ITIMER_PROF, max(0.05, self.seconds / 10))
        raise OverBudget(self.current)

    def reset(self) -> None:
        """A new batch: forget what earlier messages spent."""
        self.spent.clear()

    @contextlib.contextmanager
    def spend(self, inbound_id: int) -> Iterator[None]:
        """One step of one message; raises OverBudget when the message's time runs out in it."""
        if self.seconds is None:
            yield
            return
        self.before = self.spent.get(inbound_id, 0.0)
        if self.before >= self.seconds:
            raise OverBudget(inbound_id)
        if self.mark is not None:
            self.mark.begin(inbound_id)
        self.started = time.thread_time()
        self.current = inbound_id
        if self.alarm:
            signal.setitimer(signal.ITIMER_PROF, self.seconds - self.before)
        try:
            yield
        finally:
            self.current = None
            if self.alarm:
                signal.setitimer(signal.ITIMER_PROF, 0)
            self.spent[inbound_id] = self.before + time.thread_time() - self.started
            if self.mark is not None:
                self.mark.end()


NO_BUDGET = Budget()


class Watchdog:
    """The service's view of one worker's mark: which message it has spent more than its budget
    and grace on, in CPU time of its main thread (from /proc) since the service first saw the
    step begin; where /proc cannot tell, in the service's wall clock."""

    def __init__(self, mark: Mark, seconds: float, pid: int) -> None:
        self.mark = mark
        self.pid = pid
        self.limit = seconds + grace(seconds)
        self.interval = max(0.05, min(1.0, seconds / 4))  # how often the service looks
        self.by_cpu = cpu_seconds(pid) is not None
        self.seen: tuple[int, float] | None = None  # (span count, the clock when first seen)

    def clock(self) -> float:
        return (cpu_seconds(self.pid) or 0.0) if self.by_cpu else time.monotonic()

    def overdue(self) -> int | None:
        count, inbound_id = self.mark.read()
        if inbound_id is None:
            self.seen = None
            return None
        now = self.clock()
        if self.seen is None or self.seen[0] != count:
            self.seen = (count, now)
        return inbound_id if now - self.seen[1] >= self.limit else None


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user and system) of a process's main thread, from /proc/PID/task/PID/stat."""
    try:
        with open(f"/proc/{pid}/task/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return None
