"""The service's guard over a worker process: the message it is on, and how long it has been.

A single call into C code that runs on and on cannot be stopped by the message's own alarm
(intake/budget.py), so the worker marks in memory shared with the service which message it
is on (`Mark`: two integers, no system call, cheap enough for every message), and a worker
that has spent a grace more than the budget on one message, whatever it is doing, is killed
and replaced (`Watchdog`, worker/supervisor.py); the replacement keeps the message as a dead
letter (worker/in_hand.py).
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
import time

RECORD = struct.Struct("<QQ")  # spans begun and ended (odd while one is open), the message's spool id
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # /proc's unit of CPU time


def grace(seconds: float) -> float:
    """How much more than its budget a message may cost before its worker is replaced: time for
    the alarm's handler to run once a call into C code returns."""
    return max(1.0, seconds / 4)


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
