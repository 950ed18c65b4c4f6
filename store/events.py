"""The audit log: who did what to which case, when. Append-only (enforced by triggers)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlite_utils

from .clock import stamp


def record(
    db: sqlite_utils.Database,
    case_id: str | None,
    actor: str,
    action: str,
    at: datetime,
    data: dict[str, Any] | None = None,
) -> None:
    db.execute(
        "INSERT INTO events (at, case_id, actor, action, data) VALUES (?, ?, ?, ?, ?)",
        [stamp(at), case_id, actor, action, json.dumps(data or {}, ensure_ascii=False, default=str)],
    )


def for_case(db: sqlite_utils.Database, case_id: str) -> list[dict[str, Any]]:
    rows = list(db.query("SELECT at, actor, action, data FROM events WHERE case_id = ? ORDER BY id", [case_id]))
    for row in rows:
        row["data"] = json.loads(row["data"])
    return rows
