"""What the worker has in hand, kept beside the store, so a message that kills it is found.

A message that crashes the worker's process (a crash inside a C library, the OOM killer on
one enormous mail) would otherwise be taken again by every restarted worker, and kill each:
nothing after it would ever be processed or sent. Before each batch the worker writes the
rows' ids to `<store>-inhand`, and empties it after. A worker that starts and finds ids
there knows its predecessor died holding them: each counts a death, rows that have died
with a worker are then processed one at a time (so an innocent neighbour of a bad message
clears itself), and a row that has taken POISON_DEATHS workers with it becomes a dead letter
for agents, its raw bytes kept. A worker the service replaced for a message past its time
budget (intake/budget.py) died for that message alone: its batch's other rows are not counted.
No fsync: this guards against a process dying, not the machine (after a power cut the file may
be empty, and the count starts again).
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path

import sqlite_utils

from refunddesk.store import spool
from refunddesk.store.db import transaction

log = logging.getLogger("refunddesk.worker")
POISON_DEATHS = 3
SUFFIX = "-inhand"


class InHand:
    def __init__(self, db_path: Path, lane: int = 0) -> None:
        # One file per worker lane (`<store>-inhand`, `<store>-inhand-1`, ...): a lane's
        # restarted worker takes the same share of the spool its predecessor held.
        self.path = Path(f"{db_path}{SUFFIX}" if lane == 0 else f"{db_path}{SUFFIX}-{lane}")
        self.deaths: dict[int, int] = {}
        self.holding: list[int] = []

    def recover(self, db: sqlite_utils.Database, now: datetime, overdue: int | None = None) -> list[int]:
        """At start: count a death for each row the last worker held; the rows made dead letters.
        `overdue`: the last worker was replaced for that message, past its time budget; it is
        kept as a dead letter by the caller, and its batch's other rows were not at fault."""
        try:
            state = json.loads(self.path.read_text("utf-8") or "{}")
        except (OSError, ValueError):
            state = {}
        self.deaths = {int(k): int(v) for k, v in state.get("deaths", {}).items()}
        holding = [int(i) for i in state.get("holding", [])]
        for inbound_id in holding if overdue not in holding else ():
            self.deaths[inbound_id] = self.deaths.get(inbound_id, 0) + 1
        if overdue is not None:
            self.deaths.pop(overdue, None)
        poisoned = [i for i, n in self.deaths.items() if n >= POISON_DEATHS]
        for inbound_id in poisoned:
            with transaction(db):
                row = db.execute("SELECT status FROM inbound WHERE id = ?", [inbound_id]).fetchone()
                if row and row[0] == "pending":
                    spool.finish(
                        db,
                        inbound_id,
                        "dead",
                        now,
                        error=f"the worker died {self.deaths[inbound_id]} times while processing this message",
                    )
                    log.error(
                        "inbound %s took %d workers down with it; kept as a dead letter",
                        inbound_id,
                        self.deaths[inbound_id],
                    )
            del self.deaths[inbound_id]
        self.holding = []
        self.save()
        return poisoned

    def choose(self, waiting: list[int]) -> list[int]:
        """The next batch: a row that died with a worker goes alone."""
        suspect = next((i for i in waiting if i in self.deaths), None)
        return [suspect] if suspect is not None else waiting

    def hold(self, inbound_ids: list[int]) -> None:
        self.holding = list(inbound_ids)
        self.save()

    def release(self) -> None:
        for inbound_id in self.holding:
            self.deaths.pop(inbound_id, None)
        self.holding = []
        self.save()

    def save(self) -> None:
        data = json.dumps({"worker": os.getpid(), "holding": self.holding, "deaths": self.deaths})
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(data, "utf-8")
        os.replace(tmp, self.path)  # a worker killed mid-write leaves the old file, never half of one
