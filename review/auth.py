"""Console sign-in: who is logged in, and a brake on password guessing.

Failed logins are counted per agent name and per client address; after a few in a row, the
next attempts are refused without checking the password for a lock time that doubles with
each further failure. A correct password during the lock is refused too, or a guesser could
still learn when they hit it.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from starlette.requests import Request

# Per agent name, a handful; per address more, because many agents may share one address (a
# proxy, an office) and one guesser must not lock all of them out at once.
FREE_ATTEMPTS = {"name": 5, "addr": 20}
FIRST_LOCK_SECONDS = 30.0
MAX_LOCK_SECONDS = 900.0
FORGET_AFTER_SECONDS = 3600.0
MAX_RECORDS = 10_000
SESSION_AGENT = "agent"


@dataclass
class Record:
    failures: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class LoginThrottle:
    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.records: dict[str, Record] = {}
        self.lock = threading.Lock()

    def keys(self, name: str, client: str) -> tuple[str, str]:
        return (f"name:{name.casefold()}", f"addr:{client}")

    def wait_seconds(self, name: str, client: str) -> float:
        """How long this name or address must still wait; 0 when an attempt may be checked."""
        now = self.clock()
        with self.lock:
            waits = [r.locked_until - now for k in self.keys(name, client) if (r := self.records.get(k))]
        return max([0.0, *waits])

    def failed(self, name: str, client: str) -> None:
        now = self.clock()
        with self.lock:
            if len(self.records) > MAX_RECORDS:
                # A flood of made-up names must not grow memory without end: forget the quiet ones.
                self.records = {k: r for k, r in self.records.items() if now - r.last <= FORGET_AFTER_SECONDS}
            for key in self.keys(name, client):
                record = self.records.get(key)
                if record is None or now - record.last > FORGET_AFTER_SECONDS:
                    record = self.records[key] = Record()
                record.failures += 1
                record.last = now
                free = FREE_ATTEMPTS[key.split(":", 1)[0]]
                if record.failures >= free:
                    lock = min(MAX_LOCK_SECONDS, FIRST_LOCK_SECONDS * 2 ** (record.failures - free))
                    record.locked_until = now + lock

    def succeeded(self, name: str, client: str) -> None:
        with self.lock:
            for key in self.keys(name, client):
                self.records.pop(key, None)


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def signed_in(request: Request) -> str | None:
    return request.session.get(SESSION_AGENT)


def sign_in(request: Request, agent: str) -> None:
    # A fresh session on login: nothing from before (a planted token) survives into it.
    request.session.clear()
    request.session[SESSION_AGENT] = agent
    request.session["since"] = int(time.time())


def sign_out(request: Request) -> None:
    request.session.clear()
