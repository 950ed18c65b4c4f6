"""Console sign-in: who is logged in, and a brake on password guessing.

Failed logins are counted per agent name and client address together, and per client address;
after a few in a row, the next attempts are refused without checking the password for a lock
time that doubles with each further failure. A correct password during the lock is refused
too, or a guesser could still learn when they hit it. Sessions are rows in the store, so
logout (and disabling an agent) ends them wherever their cookie went.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import sqlite_utils
from starlette.requests import Request

from refunddesk.store.clock import required_stamp, stamp
from refunddesk.store.db import transaction

# Per agent name and address, a handful; per address more, because many agents may share one
# address (a proxy, an office). Never per name alone: a guesser elsewhere must not lock the
# agent out of their own desk, so a correct password from an address that has not failed is
# always checked.
FREE_ATTEMPTS = {"pair": 5, "addr": 20}
FIRST_LOCK_SECONDS = 30.0
MAX_LOCK_SECONDS = 900.0
FORGET_AFTER_SECONDS = 3600.0
MAX_RECORDS = 10_000
SESSION_AGENT = "agent"
SESSION_ID = "sid"


@dataclass
class Record:
    failures: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class LoginThrottle:
    """Attempts are counted when they begin, as failures until they succeed: concurrent guesses
    all count (checked only after the verdict, sixty at once all passed the check)."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.records: dict[str, Record] = {}
        self.lock = threading.Lock()

    def keys(self, name: str, client: str) -> tuple[str, str]:
        return (f"pair:{name.casefold()}|{client}", f"addr:{client}")

    def attempt(self, name: str, client: str) -> float:
        """0 when this attempt may be checked (and it is counted now); else the seconds to wait."""
        now = self.clock()
        with self.lock:
            waits = [r.locked_until - now for k in self.keys(name, client) if (r := self.records.get(k))]
            wait = max([0.0, *waits])
            if wait > 0:
                return wait
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
            return 0.0

    def succeeded(self, name: str, client: str) -> None:
        with self.lock:
            for key in self.keys(name, client):
                self.records.pop(key, None)


def client_of(request: Request) -> str:
    """The client's address: the socket's peer, or what a proxy in `desk.trusted_proxies` says
    (uvicorn applies X-Forwarded-For only from those; web.py configures it)."""
    return request.client.host if request.client else "unknown"


def signed_in(request: Request) -> str | None:
    return request.session.get(SESSION_AGENT)


def session_id(request: Request) -> str:
    return str(request.session.get(SESSION_ID) or "")


def sign_in(request: Request, agent: str, sid: str) -> None:
    # A fresh session on login: nothing from before (a planted token) survives into it.
    request.session.clear()
    request.session[SESSION_AGENT] = agent
    request.session[SESSION_ID] = sid
    request.session["since"] = int(time.time())


def sign_out(request: Request) -> None:
    request.session.clear()


# --- the sessions, kept in the store: a copied cookie stops working at logout ----------------------


def open_session(db: sqlite_utils.Database, agent: str, now: datetime) -> str:
    sid = secrets.token_urlsafe(32)
    with transaction(db):
        db.execute("INSERT INTO console_sessions (id, agent, created_at) VALUES (?, ?, ?)", [sid, agent, stamp(now)])
    return sid


def session_valid(db: sqlite_utils.Database, sid: str, agent: str, now: datetime, max_age: float) -> bool:
    """The session exists, was not revoked, is younger than `max_age` and its agent may log in."""
    row = db.execute(
        "SELECT s.created_at FROM console_sessions s JOIN agents a ON a.name = s.agent "
        "WHERE s.id = ? AND s.agent = ? AND s.revoked_at IS NULL AND a.disabled = 0",
        [sid, agent],
    ).fetchone()
    return row is not None and (now - required_stamp(row[0])).total_seconds() < max_age


def revoke_session(db: sqlite_utils.Database, sid: str, now: datetime) -> None:
    with transaction(db):
        db.execute("UPDATE console_sessions SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", [stamp(now), sid])


def revoke_sessions_of(db: sqlite_utils.Database, agent: str, now: datetime) -> None:
    """Every session of an agent (disabled, or a password changed)."""
    with transaction(db):
        db.execute(
            "UPDATE console_sessions SET revoked_at = ? WHERE agent = ? AND revoked_at IS NULL", [stamp(now), agent]
        )


# --- the cookie's signing key ------------------------------------------------------------------------


def signing_key(configured: str, db_path: Path) -> str:
    """`console.secret_key`, or one made on first start and kept beside the store (readable by
    its owner only): a key made afresh at every start logged every agent out at each restart."""
    if configured:
        return configured
    path = db_path.with_name(db_path.name + KEY_FILE_SUFFIX)
    try:
        return path.read_text("ascii").strip()
    except FileNotFoundError:
        pass
    key = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile: theirs is the key
        return path.read_text("ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    return key


KEY_FILE_SUFFIX = "-console-key"
