"""The time budget of one message (`worker.message_seconds`), in the worker and over it.

Any customer can send a mail that is costly to read (a pattern that backtracks, a body of
millions of lines, HTML nested 60,000 deep), and every message behind it in the spool waits.
So each message gets a budget of the worker's time, spent across its steps (parsing and reading
it, then applying it): one that runs past it is stopped, kept as a dead letter (`took too
long`, its raw bytes intact) and answered like refused mail, and the next message is processed
at once.

The budget counts CPU time of the thread that processes the message: what the message costs.
The worker runs below the channels on purpose (nice 5, worker/process.py), so on a busy
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
  it is doing, is killed and replaced (`Watchdog`, worker/watchdog.py); the replacement keeps
  the message as a dead letter. Its batch's other messages were rolled back with it and are
  processed again, and are not counted against (worker/in_hand.py).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Protocol

REASON = "took too long"
NOTICE = "it took too long to process"  # in the refused-mail notice: "could not process it automatically: ..."


class OverBudget(BaseException):
    """Raised by the alarm inside a message's processing. A BaseException, like KeyboardInterrupt:
    a parser's `except Exception` fallback must not swallow it and carry on."""


class Marker(Protocol):
    """Where the worker shows the service which message it is on (worker/watchdog.py's Mark)."""

    def begin(self, inbound_id: int) -> None: ...

    def end(self) -> None: ...


class Budget:
    """The budget of each message the pipeline processes in this process (intake/pipeline.py).

    `seconds=None`: no budget (tests, tools). The alarm works in the main thread only; elsewhere
    only the mark is kept. Time is counted per message across its steps until `reset()`."""

    def __init__(self, seconds: float | None = None, mark: Marker | None = None) -> None:
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
        seconds = self.seconds  # never None here: the alarm is only set up with a budget
        if self.current is None or seconds is None:  # a late alarm, after the message was done, is ignored
            return
        left = seconds - self.before - (time.thread_time() - self.started)
        if left > 0:
            signal.setitimer(signal.ITIMER_PROF, left)
            return
        # Again soon after: one alarm may land in a bare `except:` (there is one in the standard
        # library's header parser) and be swallowed.
        signal.setitimer(signal.ITIMER_PROF, max(0.05, seconds / 10))
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
