"""How a long command (`import`, `export`) tells the person or the log waiting on it how far it is.

On a terminal: tqdm's bar. Without one (systemd, cron, CI), a bar draws nothing useful, so a plain
line every few seconds (`imported 1200 of 5000 mails (3 dead letters)`), which a journal keeps.
Nothing is kept per item: the memory used is the same for ten mails and for a million.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

EVERY_SECONDS = 5.0
# Operators may want lines more or less often in their logs; the tests want them at once.
EVERY_VARIABLE = "REFUNDDESK_PROGRESS_SECONDS"


def every_seconds() -> float:
    """The seconds between two lines: $REFUNDDESK_PROGRESS_SECONDS, else EVERY_SECONDS."""
    try:
        return max(0.0, float(os.environ.get(EVERY_VARIABLE, "")))
    except ValueError:
        return EVERY_SECONDS


class Progress:
    """Counts items done out of `total`; `verb` and `noun` make the line: '{verb} 3 of 10 {noun}s'.

    `note` (say, '3 dead letters') is shown beside the count. Lines go to `stream` (stderr by
    default: standard output may be the command's own result, such as a CSV file).
    """

    def __init__(
        self,
        verb: str,
        noun: str,
        total: int | None,
        *,
        every: float | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.verb, self.noun, self.total = verb, noun, total
        self.stream = stream or sys.stderr
        self.every = every_seconds() if every is None else every
        self.clock = clock
        self.done = 0
        self.note = ""
        self.bar = None
        if self.stream.isatty():
            # Imported here, not above: review/commands.py loads this module for every CLI call, and
            # tqdm would add ~25 ms to commands that must answer at once (`cases list`).
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=verb, unit=noun, file=self.stream)
        self.last_line = clock()

    def advance(self, note: str = "") -> None:
        self.done += 1
        if self.bar is not None:
            if note != self.note:
                self.bar.set_postfix_str(note, refresh=False)
            self.bar.update()
        elif self.clock() - self.last_line >= self.every:
            self.last_line = self.clock()
            self.stream.write(self.line(note) + "\n")
            self.stream.flush()
        self.note = note

    def line(self, note: str = "") -> str:
        of = "" if self.total is None else f" of {self.total}"
        return f"{self.verb} {self.done}{of} {self.noun}s" + (f" ({note})" if note else "")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
