"""Reading one message's DATA off the wire in bounded memory, for the SMTP receiver.

Every connection's received bytes count against one budget for the whole receiver
(`email.smtp_intake.buffer_bytes`), whatever SIZE the client declared: 150 parallel 10 MB
transfers without SIZE once held serve at 1.42 GB, because each was buffered whole and only
declared sizes took turns. A message is kept in memory up to SPILL_AT and past that written,
as it arrives, to a file beside the store, which the spooler copies into the spool in pieces.
A connection that cannot get budget for its next piece first spills what it holds, so no two
transfers can wait on each other's memory.

The message is dot-unstuffed (RFC 5321 4.5.2) as it streams: a line break at the end of a
piece is held back until the next piece shows whether a stuffing dot follows it.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

SPILL_AT = 1024 * 1024
PIECE = 128 * 1024  # budget asked for before each read: at most one piece of the stream reader's window
END_OF_DATA = b"\r\n.\r\n"  # the terminating dot line, with the line break before it (RFC 5321 4.1.1.4)
MIN_RATE = 1024  # bytes per second a transfer must average once RATE_GRACE has passed
RATE_GRACE = 60.0


class NotStored(Exception):
    """The message could not be kept while it arrived (the disk is full): read to its end, then
    answered 451 so the sender keeps it and retries."""


class TooSlow(Exception):
    """The transfer fell under MIN_RATE: a slow drip that holds a connection and its buffer."""


class ReceiveBudget:
    """Bytes of received mail the receiver holds in memory, across all its connections (one
    event loop: no lock needed beyond the condition)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, PIECE)
        self.used = 0
        self.freed = asyncio.Condition()

    def try_reserve(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    async def reserve(self, size: int) -> None:
        async with self.freed:
            await self.freed.wait_for(lambda: self.try_reserve(size))

    async def release(self, size: int) -> None:
        if size <= 0:
            return
        self.used -= size
        async with self.freed:
            self.freed.notify_all()


@dataclass
class Received:
    """A message as received: in memory (`head`) or, past SPILL_AT, all of it in `spill`."""

    head: bytearray = field(default_factory=bytearray)
    spill: IO[bytes] | None = None
    size: int = 0

    def chunks(self, offset: int = 0, piece: int = SPILL_AT) -> Iterator[bytes]:
        """The message from `offset` on, piece by piece, without holding it whole."""
        if self.spill is None:
            yield bytes(self.head[offset:])
            return
        self.spill.seek(offset)
        while data := self.spill.read(piece):
            yield data

    def start(self, size: int) -> bytes:
        """The first `size` bytes (the header block and a little more)."""
        if self.spill is None:
            return bytes(self.head[:size])
        self.spill.seek(0)
        return self.spill.read(size)

    def close(self) -> None:
        if self.spill is not None:
            self.spill.close()
            self.spill = None


class Unstuffer:
    """RFC 5321 dot-unstuffing of a stream cut in arbitrary pieces."""

    def __init__(self) -> None:
        self.carry = b"\r\n"  # as if a line break came before the message: its first line may be stuffed
        self.started = False

    def feed(self, data: bytes, final: bool = False) -> bytes:
        data = self.carry + data
        hold = 0 if final else (2 if data.endswith(b"\r\n") else 1 if data.endswith(b"\r") else 0)
        self.carry = data[len(data) - hold :]
        out = data[: len(data) - hold].replace(b"\r\n.", b"\r\n")
        if not self.started and len(out) >= 2:
            out, self.started = out[2:], True  # the line break we put before the message
        return out


async def read_data(
    reader: asyncio.StreamReader,
    limit: int,
    budget: ReceiveBudget,
    spill_dir: Path,
    progress: Callable[[], None] = lambda: None,
) -> Received | None:
    """The message up to its dot line, dot-unstuffed; None when it was longer than `limit` (then
    it is read to its end and dropped, as RFC 5321 4.2.5 asks). `progress` is called on every
    piece (the command timeout counts silence, not the transfer's length); TooSlow when the
    transfer averages under MIN_RATE past RATE_GRACE."""
    received = Received()
    unstuff = Unstuffer()
    held = 0  # budget this transfer holds: the bytes of `received.head`
    tail = b""  # the stream's last bytes, to find a dot line split between two pieces
    wire = 0
    started = time.monotonic()
    dropping = False
    failure: OSError | None = None
    try:
        while True:
            if not budget.try_reserve(PIECE):
                if received.head and not dropping:
                    spill(received, spill_dir)
                    await budget.release(held)
                    held = 0
                await budget.reserve(PIECE)
            try:
                try:
                    piece = await reader.readuntil(b".\r\n")
                except asyncio.LimitOverrunError as exc:  # no dot line in the reader's window yet
                    piece = await reader.read(exc.consumed)
                if not piece:
                    raise asyncio.IncompleteReadError(b"", None)
            finally:
                await budget.release(PIECE)
            progress()
            wire += len(piece)
            elapsed = time.monotonic() - started
            if elapsed > RATE_GRACE and wire < MIN_RATE * elapsed:
                raise TooSlow(f"{wire} bytes in {elapsed:.0f} s")
            window = tail + piece
            ended = window.endswith(END_OF_DATA) or (wire == 3 and piece == b".\r\n")
            tail = window[-len(END_OF_DATA) :]
            if ended:
                piece = piece[:-3]  # the dot line goes; the line break before it is the message's
            if dropping or received.size + len(piece) > limit:
                dropping = True
                if ended:
                    if failure is not None:
                        raise NotStored(str(failure)) from failure
                    return None
                continue
            data = unstuff.feed(piece, final=ended)
            received.size += len(data)
            try:
                held = await keep(received, data, held, budget, spill_dir)
            except OSError as exc:  # the rest is read and dropped, so the reply lines up with the client
                failure, dropping = exc, True
                await budget.release(held)
                held = 0
                received.close()
                if ended:
                    raise NotStored(str(exc)) from exc
            if ended:
                return received
    except BaseException:
        received.close()
        raise
    finally:
        await budget.release(held)


async def keep(received: Received, data: bytes, held: int, budget: ReceiveBudget, spill_dir: Path) -> int:
    """`data` added to the message, in memory while the budget and SPILL_AT allow, else on disk;
    returns the budget the message now holds."""
    if received.spill is not None:
        received.spill.write(data)
        return held
    if not budget.try_reserve(len(data)):
        handle = spill(received, spill_dir)
        await budget.release(held)
        handle.write(data)
        return 0
    held += len(data)
    received.head += data
    if len(received.head) > SPILL_AT:
        spill(received, spill_dir)
        await budget.release(held)
        return 0
    return held


def spill(received: Received, spill_dir: Path) -> IO[bytes]:
    """From now on the message goes to an unnamed file beside the store (gone when closed),
    which is returned."""
    if received.spill is not None:
        return received.spill
    spill_dir.mkdir(parents=True, exist_ok=True)
    handle = tempfile.TemporaryFile(dir=spill_dir, prefix="smtp-")
    handle.write(received.head)
    received.head = bytearray()
    received.spill = handle
    return handle


@dataclass
class Spliced:
    """The received message with its first `replaced` bytes swapped for `start` (the header
    block without forged fields), read in pieces for the spool (store/spool.py Pieces)."""

    start: bytes
    received: Received
    replaced: int

    @property
    def size(self) -> int:
        return len(self.start) + self.received.size - self.replaced

    def chunks(self) -> Iterator[bytes]:
        yield self.start
        yield from self.received.chunks(self.replaced)


class Connections:
    """Connections open now, in all and per client address, against their caps."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total, self.per_client = total, per_client
        self.open: dict[str, int] = {}
        self.count = 0

    def admit(self, client: str) -> bool:
        if self.count >= self.total or self.open.get(client, 0) >= self.per_client:
            return False
        self.count += 1
        self.open[client] = self.open.get(client, 0) + 1
        return True

    def leave(self, client: str) -> None:
        self.count -= 1
        left = self.open.get(client, 1) - 1
        if left:
            self.open[client] = left
        else:
            self.open.pop(client, None)
