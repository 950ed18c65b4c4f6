"""The doorbells between the service and its workers: pipes of one-byte signals.

Not multiprocessing's locks and events: a process killed while it holds one of those leaves
the other blocked for ever. To the worker: "mail spooled", "replies are due" (an agent's
decision, a reminder) and end of file when the service stops or dies. From the worker:
"start-up sweep done".
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable

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
