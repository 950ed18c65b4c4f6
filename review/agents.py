"""Agent accounts for the console: names and argon2 password hashes, never the passwords.

An account is disabled, never deleted, so the event log's actor names always resolve.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime

import sqlite_utils
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from refunddesk.store import events
from refunddesk.store.clock import stamp
from refunddesk.store.db import transaction

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 10
# OWASP's minimum for argon2id (19 MiB, 2 passes, 1 lane), not the library's 64 MiB: verifying
# runs in the process that also receives mail, and 40 concurrent logins at 64 MiB took serve to
# 2 GB. Hashes made with the old parameters still verify, and are remade at the next login.
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@functools.cache
def dummy_hash() -> str:
    """Verifying against this when the name is unknown costs the same time as a real check, so
    response times do not tell which agent names exist. Made on first use, not at import: a hash
    takes 0.1-0.3 s, which every command that imports this module would pay."""
    return HASHER.hash("not-a-real-password")


class AgentError(ValueError):
    pass


def add(db: sqlite_utils.Database, name: str, password: str, now: datetime, actor: str) -> None:
    if not NAME.match(name or ""):
        raise AgentError("an agent name is 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")
    if len(password or "") < MIN_PASSWORD:
        raise AgentError(f"the password must have at least {MIN_PASSWORD} characters")
    with transaction(db):
        if db.execute("SELECT 1 FROM agents WHERE name = ?", [name]).fetchone():
            raise AgentError(f"agent {name} exists already")
        db.execute(
            "INSERT INTO agents (name, password_hash, created_at) VALUES (?, ?, ?)",
            [name, HASHER.hash(password), stamp(now)],
        )
        events.record(db, None, actor, "agent_added", now, {"agent": name})


def set_disabled(db: sqlite_utils.Database, name: str, disabled: bool, now: datetime, actor: str) -> None:
    with transaction(db):
        if not db.execute("UPDATE agents SET disabled = ? WHERE name = ?", [int(disabled), name]).rowcount:
            raise AgentError(f"no agent {name}")
        events.record(db, None, actor, "agent_disabled" if disabled else "agent_enabled", now, {"agent": name})


def listing(db: sqlite_utils.Database) -> list[dict]:
    return list(db.query("SELECT name, created_at, disabled FROM agents ORDER BY name"))


def verify(db: sqlite_utils.Database, name: str, password: str) -> bool:
    row = db.execute("SELECT password_hash, disabled FROM agents WHERE name = ?", [name]).fetchone()
    stored, disabled = (row[0], row[1]) if row else (dummy_hash(), 1)
    try:
        HASHER.verify(stored, password or "")
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    if row is not None and HASHER.check_needs_rehash(stored):
        with transaction(db):
            db.execute("UPDATE agents SET password_hash = ? WHERE name = ?", [HASHER.hash(password), name])
    return row is not None and not disabled


def any_active(db: sqlite_utils.Database) -> bool:
    """Whether anyone can log in to the console; while not, the login page says how to add an agent."""
    return db.execute("SELECT 1 FROM agents WHERE disabled = 0 LIMIT 1").fetchone() is not None


def account(db: sqlite_utils.Database, name: str) -> tuple[str, bool] | None:
    """(the name as registered, disabled) of the account `name` means, or None. Names match
    regardless of case, as the four-eyes rule compares them; an exact match wins."""
    row = db.execute(
        "SELECT name, disabled FROM agents WHERE name = ? COLLATE NOCASE ORDER BY name = ? DESC, name LIMIT 1",
        [name, name],
    ).fetchone()
    return (row[0], bool(row[1])) if row else None


def active(db: sqlite_utils.Database, name: str) -> bool:
    row = db.execute("SELECT disabled FROM agents WHERE name = ?", [name]).fetchone()
    return bool(row) and not row[0]
