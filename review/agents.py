"""Agent accounts for the console: names and argon2 password hashes, never the passwords.

An account is disabled, never deleted, so the event log's actor names always resolve.
"""
from __future__ import annotations

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
HASHER = PasswordHasher()
# Verifying against this when the name is unknown costs the same time as a real check,
# so response times do not tell which agent names exist.
DUMMY_HASH = HASHER.hash("not-a-real-password")


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
        db.execute("INSERT INTO agents (name, password_hash, created_at) VALUES (?, ?, ?)", [name, HASHER.hash(password), stamp(now)])
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
    stored, disabled = (row[0], row[1]) if row else (DUMMY_HASH, 1)
    try:
        HASHER.verify(stored, password or "")
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return row is not None and not disabled


def active(db: sqlite_utils.Database, name: str) -> bool:
    row = db.execute("SELECT disabled FROM agents WHERE name = ?", [name]).fetchone()
    return bool(row) and not row[0]
