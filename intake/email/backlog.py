"""`refunddesk import PATH`: bring an existing refunds mailbox (mbox file or Maildir) over.

Each message goes through the same spool and pipeline as live mail, so deduplication is the
same (a mail already received by SMTP or IMAP, or imported before, makes no second case).
It is dated by when it originally arrived, so the policy's windows are judged as they were.
An old backlog must not start a storm of acknowledgements: a message is answered only while
its case is still inside the policy's windows today, and never with --no-reply; the letters
it would have got stay in the outbox as `suppressed`, with the reason, for the record.

Spooling, processing and the suppression happen in one transaction, so a running `serve`
can never pick up and send a letter the import is about to suppress.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import hashlib
import logging
import mailbox
import sys
from collections import Counter
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import sqlite_utils

from refunddesk.commandline import open_desk
from refunddesk.desk import Desk
from refunddesk.intake import pipeline
from refunddesk.intake.budget import NO_BUDGET, Budget
from refunddesk.policy import rules
from refunddesk.policy.context import Context
from refunddesk.policy.deadlines import window_deadline
from refunddesk.policy.model import Case
from refunddesk.progress import Progress
from refunddesk.store import cases as case_store
from refunddesk.store import spool
from refunddesk.store.clock import utcnow
from refunddesk.store.db import transaction

from . import authresults
from .parse import mail_conversation

log = logging.getLogger("refunddesk.import")
AUTOMATIC_KINDS = ("ack", "dialog", "notice")
LATE_FINDINGS = ("deadline_passed", "appeal_window_passed")


def cmd_import(args: argparse.Namespace) -> int:
    """`refunddesk import` (registered in intake/email/commands.py)."""
    path = Path(args.path)
    if not path.exists():
        print(f"refunddesk: {path}: no such file or folder", file=sys.stderr)
        return 1
    desk = open_desk(args)
    db = desk.open_db()
    try:
        source = open_mailbox(path)
    except (mailbox.Error, OSError) as exc:
        print(f"refunddesk: {path}: not an mbox file or a Maildir: {exc}", file=sys.stderr)
        return 1
    counts: Counter[str] = Counter()
    budget = Budget(desk.config.worker.message_seconds)  # one slow mail must not stall the import
    try:
        keys = list(source.keys())
        with Progress("imported", "mail", len(keys)) as progress:
            for key in keys:
                raw, arrived = read_message(source, key)
                counts[import_one(desk, db, raw, arrived, str(path), no_reply=args.no_reply, budget=budget)] += 1
                dead = counts["dead letters"]
                progress.advance(f"{dead} dead letter{'' if dead == 1 else 's'}")
    finally:
        source.close()
        db.conn.close()
    summary = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
    print(f"imported {sum(counts.values())} messages from {path}: {summary or 'nothing'}")
    return 0


def open_mailbox(path: Path) -> mailbox.Mailbox:
    if path.is_dir():
        if not (path / "cur").is_dir() and not (path / "new").is_dir():
            raise mailbox.Error("a folder must be a Maildir (with cur/ and new/)")
        return mailbox.Maildir(str(path), factory=None, create=False)
    return mailbox.mbox(str(path), factory=None, create=False)


def read_message(source: mailbox.Mailbox, key: str) -> tuple[bytes, datetime | None]:
    """The raw bytes and, when the mailbox knows it, when the message was delivered."""
    raw = source.get_bytes(key)
    arrived = None
    try:
        message = source.get_message(key)
        if isinstance(message, mailbox.MaildirMessage):
            arrived = datetime.fromtimestamp(message.get_date(), UTC)
        elif isinstance(message, mailbox.mboxMessage):
            arrived = date_of(message.get_from().split(" ", 1)[-1])
    except Exception:  # a broken envelope line only costs us this hint
        arrived = None
    return raw, arrived


def date_of(text: str) -> datetime | None:
    try:
        moment = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def arrival_time(raw: bytes, delivered: datetime | None, now: datetime) -> datetime:
    """When the mail reached the mailbox: the newest Received stamp, the mailbox's own date,
    then the Date header; never in the future."""
    head = email.message_from_bytes(raw[:262_144], policy=email.policy.compat32)
    received = [str(v) for v in head.get_all("Received", [])]
    candidates = [date_of(received[0].rsplit(";", 1)[-1])] if received and ";" in received[0] else []
    candidates += [delivered, date_of(str(head.get("Date", "")))]
    for moment in candidates:
        if moment is not None:
            return min(moment, now)
    return now


def import_one(
    desk: Desk,
    db: sqlite_utils.Database,
    raw: bytes,
    delivered: datetime | None,
    source: str,
    *,
    no_reply: bool,
    budget: Budget = NO_BUDGET,
) -> str:
    """Spool and process one message; returns what became of it (for the summary)."""
    now = utcnow()
    received_at = arrival_time(raw, delivered, now)
    key = "import:" + hashlib.sha256(raw).hexdigest()  # of the bytes as found: re-imports match
    our_ids = authresults.our_authserv_ids(desk.addresses.ours(), desk.mail_domain)
    raw, verdict = authresults.examine(raw, our_ids, desk.config.email.trusted_authserv_id)
    meta = {"source": "import", "path": source, "authentication": verdict}
    if no_reply:
        meta["no_reply"] = "backlog import with --no-reply"
    with transaction(db):
        inbound_id, new = spool.spool(db, "email", key, raw, received_at, meta, mail_conversation(raw, meta))
        if not new:
            return "already imported"
        (last_outbox,) = db.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()
        status = pipeline.process(desk, db, inbound_id, now, budget=budget)
        row = spool.load(db, inbound_id)
        case = case_store.load_case(db, row["case_id"]) if row["case_id"] else None
        if no_reply:
            reason = "backlog import with --no-reply"
        elif case is not None and not still_open(desk, db, case, received_at, now):
            reason = "backlog import: outside the policy's windows today"
        elif case is None and status == "dead":
            reason = "backlog import: refused mail is not answered"
        else:
            reason = None
        if reason:
            suppress_since(db, last_outbox, reason)
        (answered,) = db.execute(
            "SELECT count(*) FROM outbox WHERE id > ? AND status = 'pending'", [last_outbox]
        ).fetchone()
    if status == "done":
        return "answered" if answered else "stored without reply"
    return {"duplicate": "duplicates", "dead": "dead letters"}.get(status, status)


def still_open(desk: Desk, db: sqlite_utils.Database, case: Case, received_at: datetime, now: datetime) -> bool:
    """Is the case, today, still inside the policy's windows? Unknown dates count from receipt."""
    if any(f.code in LATE_FINDINGS for f in case.findings):
        return False
    version = desk.policy.version_at(case.created_at or received_at)
    parent_ref = case.fields.get("parent_ref")
    ctx = Context(desk.policy, desk.calendar, case_store.load_cases(db, [parent_ref] if parent_ref else []))
    known = [deadline.at for _, deadline in rules.deadlines_of(case, version, ctx)]
    if known:
        return now <= max(known)
    windows = [w for w in version.windows if case.kind in w.kinds] or list(version.windows)
    if not windows:
        return True
    # The customer wrote after the event, so a window counted from receipt is the widest it can be.
    latest = max(
        window_deadline(desk.calendar, desk.policy.timezone, received_at, w.length, w.unit).at for w in windows
    )
    return now <= latest


def suppress_since(db: sqlite_utils.Database, last_outbox: int, reason: str) -> None:
    """Hold back the automatic letters written after outbox row `last_outbox`."""
    placeholders = ", ".join("?" for _ in AUTOMATIC_KINDS)
    ids = [
        r[0]
        for r in db.execute(
            f"SELECT id FROM outbox WHERE id > ? AND status = 'pending' AND kind IN ({placeholders})",
            [last_outbox, *AUTOMATIC_KINDS],
        )
    ]
    for outbox_id in ids:
        db.execute(
            "UPDATE outbox SET status = 'suppressed', last_error = ? WHERE id = ?", [f"not sent: {reason}", outbox_id]
        )
        db.execute(
            "UPDATE messages SET meta = json_set(meta, '$.status', 'suppressed') WHERE outbox_id = ?", [outbox_id]
        )
