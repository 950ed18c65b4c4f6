"""The one pipeline: a spooled raw message becomes a case change, its evidence, its events and
the replies to send, all in one transaction.

Two error tiers (as Zulip's email gateway has): a message we refuse to read (too many parts,
too deep) gets a polite reply and is kept as a dead letter; an internal error is logged with
the spool row id, the raw message stays as a dead letter, and the worker carries on. A message
that runs past its time budget (intake/budget.py) is refused in the same way: `took too long`.
"""

from __future__ import annotations

import email
import email.parser
import email.policy
import logging
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from email.utils import make_msgid, parseaddr
from typing import Any

import sqlite_utils

from refunddesk.desk import Desk
from refunddesk.intake.budget import NO_BUDGET, NOTICE, REASON, Budget, OverBudget
from refunddesk.intake.email import loops
from refunddesk.intake.email.parse import MailRejected, first_message_id, parse_mail, split_plus
from refunddesk.intake.parsed import Parsed
from refunddesk.intake.telegram import parse_update
from refunddesk.policy import dialog
from refunddesk.policy.context import Context, History
from refunddesk.policy.model import Attachment, Case, InboundMessage, Reply
from refunddesk.policy.text import READ_LIMIT
from refunddesk.render import render
from refunddesk.store import cases as case_store
from refunddesk.store import events, evidence, outbox, spool
from refunddesk.store.clock import required_stamp, utcnow
from refunddesk.store.db import transaction

log = logging.getLogger("refunddesk.pipeline")
CASE_ID = re.compile(r"\b(RF|AP)-(\d{6})\b", re.IGNORECASE)
CHAT_ONLY_COMMANDS = ("start", "help", "status")
REPEAT_WINDOW = timedelta(days=30)
# Raw bytes of one batch, past its first message. The batch holds the write lock that the
# SMTP receiver's 250s wait for: 8 mails of 20 KB a batch cut acceptance from ~1,080 to ~820
# mails/s (bench/smtp_intake.py); chat updates (~2 KB) still go 8 at a time.
BATCH_BYTES = 32 * 1024
TOO_LARGE_TO_READ = "too large to read"


def parse(desk: Desk, row: dict[str, Any]) -> Parsed:
    received_at = required_stamp(row["received_at"])
    if row["channel"] == "email":
        return parse_mail(row["raw"], row["meta"], desk.addresses, received_at)
    if row["channel"] == "telegram":
        return parse_update(row["raw"], row["meta"], received_at)
    raise ValueError(f"no parser for channel {row['channel']!r}")


def process_pending(desk: Desk, db: sqlite_utils.Database, limit: int = 100, budget: Budget = NO_BUDGET) -> int:
    """Process what is waiting in the spool; returns how many rows were handled."""
    handled = 0
    waiting = spool.pending_ids(db, limit)
    while waiting:
        done = process_many(desk, db, waiting, budget=budget)
        handled += len(done)
        waiting = waiting[len(done) :]
    return handled


@dataclass
class Prepared:
    """A spooled row read and parsed outside the write lock, waiting for its transaction."""

    row: dict[str, Any]
    parsed: Parsed | None = None
    files: list[evidence.StoredFile | None] = field(default_factory=list)
    reading: dialog.Reading | None = None  # the dialog's reading of the text, made before the lock
    refused: str | None = None  # why we will not read it (MailRejected)
    overdue: bool = False  # it ran past its time budget
    failure: Exception | None = None  # our own error: the row becomes a dead letter

    @property
    def size(self) -> int:
        return len(self.row.get("raw") or b"")


def process(
    desk: Desk, db: sqlite_utils.Database, inbound_id: int, now: datetime | None = None, budget: Budget = NO_BUDGET
) -> str:
    """Run one spooled message through the dialog. Returns the row's final status."""
    return process_many(desk, db, [inbound_id], now, budget=budget)[0]


def process_many(
    desk: Desk,
    db: sqlite_utils.Database,
    inbound_ids: list[int],
    now: datetime | None = None,
    max_bytes: int = BATCH_BYTES,
    budget: Budget = NO_BUDGET,
) -> list[str]:
    """Several spooled messages in one write transaction, each in a savepoint of its own;
    their final statuses, in order. Reading, parsing and writing evidence files happen first,
    outside the write lock that the channels wait for. A batch ends after the message that
    brings its raw bytes over `max_bytes` (the rest is left for the next call), so a burst
    of 28 MB mails is still held in memory one at a time.

    One transaction per message cost the worker a turn at the write lock and a commit per
    message: during a Telegram burst ~a quarter of its time (bench/telegram.py, py-spy).

    `budget` is each message's time, spent across its preparation and its settling: one that
    runs out is stopped there and kept as a dead letter; the others of the batch go on."""
    now = now or utcnow()
    budget.reset()
    prepared: list[Prepared | str] = []
    size = 0
    for inbound_id in inbound_ids:
        prepared.append(item := prepare(desk, db, inbound_id, budget))
        size += item.size if isinstance(item, Prepared) else 0
        if size > max_bytes:
            break
    if not any(isinstance(item, Prepared) for item in prepared):
        return [str(item) for item in prepared]
    with transaction(db):
        return [item if isinstance(item, str) else settle(desk, db, item, now, budget) for item in prepared]


def prepare(desk: Desk, db: sqlite_utils.Database, inbound_id: int, budget: Budget = NO_BUDGET) -> Prepared | str:
    """Load and parse one row, and write its files (content-addressed, so writing one twice is
    harmless; an orphan of a crash is swept at start-up); its status if it is not pending."""
    try:
        row = spool.load(db, inbound_id)
    except MemoryError:  # not even its raw bytes fit the worker's memory (worker.memory_mb)
        row = spool.load(db, inbound_id, raw_bytes=65536)
        if row["status"] != "pending":
            return row["status"]
        log.error("inbound %s is larger than the worker may load (worker.memory_mb); kept as a dead letter", inbound_id)
        return Prepared(row, refused=TOO_LARGE_TO_READ)
    if row["status"] != "pending":
        return row["status"]
    try:
        with budget.spend(inbound_id):
            return read_row(desk, row)
    except OverBudget:
        return Prepared(row, overdue=True)


def read_row(desk: Desk, row: dict[str, Any]) -> Prepared:
    inbound_id = row["id"]
    try:
        parsed = parse(desk, row)
        reading = dialog.read(parsed.inbound, parsed.inbound.received_at, desk.policy.timezone)
    except MailRejected as exc:
        log.warning("inbound %s refused: %s", inbound_id, exc)
        return Prepared(row, refused=str(exc))
    except MemoryError:
        # Over the worker's memory limit (worker.memory_mb): this message alone, answered as refused mail.
        log.error(
            "inbound %s needed more memory than the worker may use (worker.memory_mb); kept as a dead letter",
            inbound_id,
        )
        return Prepared(row, refused=TOO_LARGE_TO_READ)
    except Exception as exc:  # any parser bug must cost one message its processing, never the worker
        log.exception("inbound %s could not be parsed; kept as a dead letter", inbound_id)
        return Prepared(row, failure=exc)
    try:
        files = [
            evidence.store_file(desk.files, a.data, a.content_type) if a.data is not None else None
            for a in parsed.inbound.attachments
        ]
    except Exception as exc:
        log.exception("inbound %s: its files could not be stored; kept as a dead letter", inbound_id)
        return Prepared(row, failure=exc)
    return Prepared(row, parsed, files, reading)


def settle(desk: Desk, db: sqlite_utils.Database, item: Prepared, now: datetime, budget: Budget = NO_BUDGET) -> str:
    """Inside the batch's transaction: apply one prepared row, or keep it as a dead letter."""
    inbound_id = item.row["id"]
    if (status := status_now(db, inbound_id)) != "pending":
        return status
    if item.overdue:
        return keep_overdue(desk, db, item.row, budget.seconds, now)
    try:
        # A savepoint: a failure, or the budget running out, undoes this message only.
        with budget.spend(inbound_id), db.atomic():
            if item.refused is not None:
                spool.finish(db, inbound_id, "dead", now, error=f"refused: {item.refused}")
                answer_refused_mail(desk, db, item.row, item.refused, now)
                return "dead"
            if item.failure is not None:
                return keep_as_dead_letter(db, inbound_id, item.failure, now)
            assert item.parsed is not None  # a Prepared that is not refused, failed or overdue was parsed
            return apply(desk, db, item.row, item.parsed, now, item.files, item.reading)
    except OverBudget:
        if not db.conn.in_transaction:
            raise
        return keep_overdue(desk, db, item.row, budget.seconds, now)
    except Exception as exc:
        if not db.conn.in_transaction:
            raise  # SQLite ended the batch's transaction itself (a full disk, I/O): all are retried
        log.exception("inbound %s failed in processing; kept as a dead letter", inbound_id)
        return keep_as_dead_letter(db, inbound_id, exc, now)


def keep_overdue(
    desk: Desk, db: sqlite_utils.Database, row: dict[str, Any], seconds: float | None, now: datetime
) -> str:
    """A message that ran past its time budget: a dead letter (its raw bytes stay), and the
    notice refused mail gets. The log names the message, never its content."""
    inbound_id = row["id"]
    head = head_of(row) if row["channel"] == "email" else None
    message_id = first_message_id(loops.header(head, "Message-ID")) if head is not None else ""
    budget = f"{seconds:g} s" if seconds is not None else "its budget"
    log.error(
        "inbound %s%s took longer than its budget of %s (worker.message_seconds); "
        "stopped and kept as a dead letter: %s",
        inbound_id,
        f" (Message-ID {message_id})" if message_id else "",
        budget,
        REASON,
    )
    spool.finish(db, inbound_id, "dead", now, error=f"{REASON}: over {budget} (worker.message_seconds)")
    try:
        with db.atomic():
            answer_refused_mail(desk, db, row, NOTICE, now)
    except Exception:
        if not db.conn.in_transaction:
            raise
        # Without its notice, but out of the way: else the batch fails, and each pass spends
        # the whole budget on this message again.
        log.exception("inbound %s: the notice to its sender could not be written", inbound_id)
    return "dead"


def stop_overdue(desk: Desk, db: sqlite_utils.Database, inbound_id: int, seconds: float | None, now: datetime) -> None:
    """The message a worker was replaced for, still in hand past its budget (worker/process.py)."""
    with transaction(db):
        if status_now(db, inbound_id) == "pending":
            keep_overdue(desk, db, spool.load(db, inbound_id), seconds, now)


def keep_as_dead_letter(db: sqlite_utils.Database, inbound_id: int, exc: Exception, now: datetime) -> str:
    """Mark the row dead with the error (its raw bytes stay)."""
    spool.finish(db, inbound_id, "dead", now, error=f"{type(exc).__name__}: {exc}"[:1000])
    return "dead"


def status_now(db: sqlite_utils.Database, inbound_id: int) -> str:
    """The row's status, read inside the write transaction. serve's worker, the MTA pipe and an
    agent's `deadletters retry` may each have loaded the row as pending: only the first to take
    the write lock acts on it; the others find it finished and leave it alone."""
    return db.execute("SELECT status FROM inbound WHERE id = ?", [inbound_id]).fetchone()[0]


def apply(
    desk: Desk,
    db: sqlite_utils.Database,
    row: dict[str, Any],
    parsed: Parsed,
    now: datetime,
    files: list[evidence.StoredFile | None],
    reading: dialog.Reading | None = None,
) -> str:
    inbound = parsed.inbound
    inbound_id = row["id"]
    first = spool.first_with_key(db, parsed.dedup_key, inbound_id)
    if first is not None:
        # The same customer message again (a retry, the IMAP copy, a second address): one case.
        spool.finish(db, inbound_id, "duplicate", now, case_id=first["case_id"], dedup_key=parsed.dedup_key)
        if first["case_id"]:
            events.record(
                db,
                first["case_id"],
                "system",
                "duplicate_receipt",
                now,
                {"inbound": inbound_id, "channel": row["channel"]},
            )
        return "duplicate"

    bounced_case = case_store.case_for_message_ids(db, parsed.bounce_of) if parsed.bounce_of else None
    if bounced_case:
        # A delivery report about one of our letters: the agent must see that the customer did
        # not get it. A report naming no letter of ours goes on below, like any other mail.
        case_store.add_message(
            db,
            bounced_case,
            "in",
            inbound.channel,
            inbound.received_at,
            inbound.text,
            sender=inbound.sender,
            subject=inbound.subject,
            inbound_id=inbound_id,
            meta={"bounce": True, "message_ids": list(parsed.bounce_of)},
        )
        events.record(
            db,
            bounced_case,
            "system",
            "bounce_received",
            now,
            {"inbound": inbound_id, "message_ids": list(parsed.bounce_of)},
        )
        spool.finish(db, inbound_id, "done", now, case_id=bounced_case, dedup_key=parsed.dedup_key)
        return "done"

    if inbound.channel != "email" and answers_outside_dialog(db, inbound):
        answer_without_case(desk, db, parsed, now)
        spool.finish(db, inbound_id, "done", now, dedup_key=parsed.dedup_key)
        return "done"

    case = find_case(db, parsed)
    opened = case is None or wants_new_case(case, inbound)
    if opened or case is None:  # the same test (case is None only when opened), spelled out for mypy
        kind = "appeal" if inbound.command == "appeal" else ("refund" if inbound.command == "refund" else None)
        kind = kind or inbound.kind_hint or "refund"
        case = dialog.new_case(case_store.allocate_case_id(db, kind), inbound, inbound.received_at, kind)
        if kind == "appeal" and inbound.case_ref and inbound.case_ref.startswith("RF-"):
            case = case.with_fields(parent_ref=inbound.case_ref)
        events.record(db, case.id, "system", "case_opened", now, {"channel": inbound.channel, "kind": kind})
        case_store.save_case(db, case, now)  # evidence rows refer to the case, so it must exist first

    # read_row stores one file (or None) per attachment, in order.
    stored = [
        store_attachment(desk, db, case.id, a, inbound_id, now, file)
        for a, file in zip(inbound.attachments, files, strict=True)
    ]
    inbound = replace(inbound, attachments=tuple(stored))
    confirmed_by = row["meta"].get("confirmed_by")  # an agent vouched for this held message
    if not opened and is_unverified(inbound) and not confirmed_by:
        return hold_unverified(db, case, parsed, inbound, inbound_id, stored, now)
    ctx = context_for(desk, db, case, inbound)
    result = dialog.step(case, inbound, inbound.received_at, ctx, reading)
    case = result.case
    parent = ctx.known_cases.get(case.fields.get("parent_ref", ""))
    if case.kind == "appeal" and parent is not None:
        case = case.evolve(parent_id=parent.id)
    case_store.save_case(db, case, now)

    authentication = inbound.meta.get("authentication") or {}
    if confirmed_by:  # the message is on the case already, held: now it is applied
        events.record(db, case.id, confirmed_by, "held_message_confirmed", now, {"inbound": inbound_id})
        inbound = replace(inbound, meta={**inbound.meta, "authentication": {"status": "confirmed", "by": confirmed_by}})
    else:
        add_inbound_message(db, case, parsed, inbound, inbound_id, stored)
    if is_unverified(inbound):
        # Shown to agents: the trusted upstream MTA could not confirm who sent this mail, or its
        # From names another mailbox than its envelope.
        events.record(
            db,
            case.id,
            "system",
            "sender_unverified",
            now,
            {
                "inbound": inbound_id,
                "results": authentication.get("results", {}),
                "envelope_from": authentication.get("envelope_from", ""),
            },
        )
    if inbound.meta.get("headers_cut"):
        # Shown to agents: a header over the reading cap (intake/email/headers.py) was cut.
        events.record(
            db, case.id, "system", "headers_cut", now, {"inbound": inbound_id, "headers": inbound.meta["headers_cut"]}
        )
    if authentication.get("removed_forged"):
        events.record(
            db,
            case.id,
            "system",
            "forged_authentication_removed",
            now,
            {"inbound": inbound_id, "fields": authentication.get("forged", [])},
        )
    case_store.remember_message_id(db, parsed.message_id, case.id)
    events.record(
        db,
        case.id,
        inbound.sender or "customer",
        "message_received",
        now,
        {"inbound": inbound_id, "channel": inbound.channel},
    )
    for action, data in result.events:
        events.record(db, case.id, "system", action, now, data)
    replies = list(result.replies)
    for refused in inbound.meta.get("refused_files", ()):
        # An adapter refused a file (too large); the customer hears why, with the limit.
        replies.insert(
            0,
            Reply(
                "file_refused",
                {
                    "case_id": case.id,
                    "filename": refused.get("filename", ""),
                    "size": refused.get("size", 0),
                    "limit": refused.get("limit", 0),
                },
                "notice",
            ),
        )
    for lost in inbound.meta.get("lost_files", ()):
        # A file the adapter could not get after its retries (bot/app.py): the customer sends it again.
        replies.insert(0, Reply("file_lost", {"case_id": case.id, "filename": lost.get("filename", "")}, "notice"))
    if is_unverified(inbound):
        # Anyone can put any address in From: a letter to it repeats nothing the mail said, so the
        # desk cannot be made to carry someone's text to a third party's mailbox.
        replies = [replace(r, context={**r.context, "fields": {}, "attachments": []}) for r in replies]
    for reply in replies:
        enqueue_reply(desk, db, case, reply, parsed, now)
    spool.finish(db, inbound_id, "done", now, case_id=case.id, dedup_key=parsed.dedup_key)
    return "done"


def find_case(db: sqlite_utils.Database, parsed: Parsed) -> Case | None:
    inbound = parsed.inbound
    if inbound.channel != "email":
        return case_store.open_case_for(db, inbound.channel, inbound.conversation_key)
    case_id = case_store.case_for_message_ids(db, parsed.references)
    if case_id:
        return case_store.load_case(db, case_id)  # our Message-ID: only our letter's reader has it
    if inbound.case_ref:
        case = case_store.load_case(db, inbound.case_ref)
        # A case ID is no secret (it is in every subject line): only the case's own customer
        # may add to it by naming it; anyone else opens a case of their own.
        if case is not None and case.contact.lower() == inbound.sender.lower():
            return case
    return None


def wants_new_case(case: Case, inbound) -> bool:
    """An appeal to appeals@ about a refund case opens an appeal; it does not reopen the refund.
    In a chat, /refund or /appeal while the last case waits for review starts the next case."""
    if inbound.channel != "email":
        return inbound.command in ("refund", "appeal") and case.status != "collecting"
    return inbound.kind_hint == "appeal" and case.kind == "refund"


def answers_outside_dialog(db: sqlite_utils.Database, inbound) -> bool:
    """Chat commands that never touch a case: /start, /help and /status at any time (a case
    waiting for review must not swallow them), and an old button (confirm, a choice) pressed
    when no case is open, which must not open an empty one."""
    if inbound.command in CHAT_ONLY_COMMANDS:
        return True
    return (
        bool(inbound.command)
        and inbound.command not in ("refund", "appeal")
        and not case_store.open_case_for(db, inbound.channel, inbound.conversation_key)
    )


def add_inbound_message(
    db: sqlite_utils.Database,
    case: Case,
    parsed: Parsed,
    inbound: InboundMessage,
    inbound_id: int,
    stored: list[Attachment],
    **extra: Any,
) -> None:
    """The customer's message on its case, with its files and what vouches for its sender."""
    meta: dict[str, Any] = {"message_id": parsed.message_id, "attachments": [a.metadata() for a in stored], **extra}
    if inbound.meta.get("authentication"):
        meta["authentication"] = inbound.meta["authentication"]
    case_store.add_message(
        db,
        case.id,
        "in",
        inbound.channel,
        inbound.received_at,
        inbound.text,
        sender=inbound.sender,
        subject=inbound.subject,
        html=parsed.html,
        inbound_id=inbound_id,
        meta=meta,
    )


def is_unverified(inbound: InboundMessage) -> bool:
    """Mail whose sender nobody vouches for: the trusted MTA's checks failed, or its From names
    another mailbox than its envelope (a forged From)."""
    authentication = inbound.meta.get("authentication") or {}
    return authentication.get("status") == "unverified" or bool(authentication.get("envelope_from"))


def hold_unverified(
    db: sqlite_utils.Database,
    case: Case,
    parsed: Parsed,
    inbound: InboundMessage,
    inbound_id: int,
    stored: list[Attachment],
    now: datetime,
) -> str:
    """An unverified mail to an existing case: its text and files are added for the agent to
    see, but it changes no field and starts no dialog until the agent, or the case's verified
    sender, confirms what it says. No letter goes out for it (it could name anyone)."""
    authentication = inbound.meta.get("authentication") or {}
    add_inbound_message(db, case, parsed, inbound, inbound_id, stored, held=True)
    events.record(
        db,
        case.id,
        "system",
        "unverified_message_held",
        now,
        {
            "inbound": inbound_id,
            "from": inbound.sender,
            "envelope_from": authentication.get("envelope_from", ""),
            "status": authentication.get("status", ""),
        },
    )
    case_store.remember_message_id(db, parsed.message_id, case.id)
    spool.finish(db, inbound_id, "done", now, case_id=case.id, dedup_key=parsed.dedup_key)
    return "done"


def store_attachment(
    desk: Desk,
    db: sqlite_utils.Database,
    case_id: str,
    attachment: Attachment,
    inbound_id: int,
    now: datetime,
    stored: evidence.StoredFile | None,
) -> Attachment:
    meta = evidence.attach(
        db,
        desk.files,
        case_id,
        attachment.data,
        attachment.filename,
        attachment.content_type,
        now,
        inbound_id,
        attachment.sha256,
        stored,
    )
    return Attachment(meta["filename"], meta["content_type"], meta["size"], meta["sha256"], None, attachment.inline)


def context_for(desk: Desk, db: sqlite_utils.Database, case: Case, inbound) -> Context:
    # Case ids the customer names, within what every reader reads (a 10 MB paste is not searched).
    refs = {
        f"{m.group(1).upper()}-{m.group(2)}"
        for m in CASE_ID.finditer(f"{inbound.subject}\n{inbound.text[:READ_LIMIT]}")
    }
    refs |= {r for r in (inbound.case_ref, case.fields.get("parent_ref")) if r}
    refs.discard(case.id)
    elsewhere = {a.sha256: evidence.cases_with_file(db, a.sha256, case.id) for a in inbound.attachments}
    for attachment in case.attachments:
        elsewhere.setdefault(attachment["sha256"], evidence.cases_with_file(db, attachment["sha256"], case.id))
    history = History(
        recent_requests_from_contact=case_store.count_recent_requests(
            db, case.contact, inbound.received_at - REPEAT_WINDOW
        ),
        evidence_elsewhere={k: v for k, v in elsewhere.items() if v},
    )
    return Context(desk.policy, desk.calendar, case_store.load_cases(db, refs), history)


def enqueue_reply(
    desk: Desk,
    db: sqlite_utils.Database,
    case: Case | None,
    reply: Reply,
    parsed: Parsed | None,
    now: datetime,
    *,
    language: str | None = None,
    recipient: str | None = None,
    channel: str | None = None,
) -> int:
    """Render a reply and put it in the outbox, suppressed when loop rules forbid an automatic answer."""
    if case is not None:
        channel = channel or case.channel
        language = language or case.language or "en"
        address, chat = case.contact, case.conversation_key
    else:
        assert parsed is not None  # a reply without a case answers the message it came from
        channel = channel or parsed.inbound.channel
        language = language or parsed.inbound.language or "en"
        address, chat = parsed.inbound.sender, parsed.inbound.conversation_key
    context = {**reply.context, "style": dialog.style_of(channel), "channel": channel}
    context["letter"] = context
    subject, body = render(reply.template, language, context)
    if channel == "email":
        recipient = recipient or address
        headers = email_headers(desk, case, parsed)
    else:
        recipient = recipient or chat
        headers = {}
    status, reason = "pending", None
    automatic = reply.kind in ("ack", "dialog", "notice")
    if automatic and parsed is not None and parsed.no_reply_reason:
        status, reason = "suppressed", parsed.no_reply_reason
    elif automatic and channel == "email" and over_reply_cap(desk, db, recipient, now):
        status, reason = "suppressed", "per-sender automatic reply limit reached"
    outbox_id = outbox.enqueue(
        db,
        case_id=case.id if case else None,
        channel=channel,
        recipient=recipient,
        kind=reply.kind,
        template=reply.template,
        language=language,
        subject=subject,
        body=body,
        now=now,
        buttons=[list(b) for b in reply.buttons],
        headers=headers,
        status=status,
    )
    if reason:
        db.execute("UPDATE outbox SET last_error = ? WHERE id = ?", [f"not sent: {reason}", outbox_id])
        log.info("automatic reply to %s suppressed: %s", recipient, reason)
    if case is not None:
        case_store.add_message(
            db,
            case.id,
            "out",
            channel,
            now,
            body,
            sender="refunddesk",
            subject=subject,
            outbox_id=outbox_id,
            meta={"status": status},
        )
        if headers.get("Message-ID"):
            case_store.remember_message_id(db, headers["Message-ID"], case.id)
    return outbox_id


def over_reply_cap(desk: Desk, db: sqlite_utils.Database, recipient: str, now: datetime) -> bool:
    window = timedelta(minutes=desk.config.email.auto_reply_window_minutes)
    return outbox.auto_replies_since(db, recipient, now - window) >= desk.config.email.auto_reply_limit


def email_headers(desk: Desk, case: Case | None, parsed: Parsed | None) -> dict[str, str]:
    """Threading headers: our own Message-ID, the reply chain, and a reply-to that names the case."""
    headers = {"Message-ID": make_msgid(domain=desk.mail_domain)}
    if case is not None:
        base = desk.addresses.appeals if case.kind == "appeal" else desk.addresses.refunds
        local, domain = base.split("@", 1)
        headers["Reply-To"] = f"{local}+{case.id}@{domain}"
        headers["From"] = base
    if parsed is not None and parsed.message_id:
        chain = [f"<{r}>" for r in reversed(parsed.references[:10])] + [parsed.message_id]
        headers["In-Reply-To"] = parsed.message_id
        headers["References"] = " ".join(dict.fromkeys(chain))
    return headers


def answer_without_case(desk: Desk, db: sqlite_utils.Database, parsed: Parsed, now: datetime) -> None:
    inbound = parsed.inbound
    context: dict[str, Any] = {"policy_name": desk.policy.name}
    if inbound.command == "status":
        cases = [c for c in case_store.cases_of_contact(db, inbound.sender) if c.channel == inbound.channel]
        context["cases"] = [
            {
                "id": c.id,
                "kind": c.kind,
                "status": c.status,
                "amount": c.fields.get("amount"),
                "currency": c.fields.get("currency"),
            }
            for c in cases
        ]
        reply = Reply("status", context, "notice")
    elif inbound.command == "help":
        reply = Reply("help", context, "notice")
    else:
        reply = Reply("welcome", context, "notice", (("refund", "refund"), ("appeal", "appeal"), ("status", "status")))
    enqueue_reply(desk, db, None, reply, parsed, now, language=inbound.language)


def answer_refused_mail(
    desk: Desk, db: sqlite_utils.Database, row: dict[str, Any], problem: str, now: datetime
) -> None:
    """A polite word to the sender of a mail we will not read, unless the sender is a robot."""
    if row["channel"] != "email":
        return
    head = head_of(row)
    sender = parseaddr(loops.header(head, "From"))[1].lower()
    envelope = row["meta"].get("mail_from")
    if not sender or loops.no_reply_reason(head, sender, envelope, desk.addresses.ours()):
        return
    if over_reply_cap(desk, db, sender, now):
        return
    language = "zh" if re.search(r"[\u4e00-\u9fff]", loops.header(head, "Subject")) else "en"
    limit = desk.config.email.smtp_intake.max_message_bytes
    subject, body = render(
        "refused", language, {"problem": problem, "policy_name": desk.policy.name, "size_limit": limit}
    )
    outbox.enqueue(
        db,
        case_id=None,
        channel="email",
        recipient=sender,
        kind="notice",
        template="refused",
        language=language,
        subject=subject,
        body=body,
        now=now,
        headers={"Message-ID": make_msgid(domain=desk.mail_domain), "From": split_plus(desk.addresses.refunds)[0]},
    )


def head_of(row: dict[str, Any]) -> email.message.Message:
    """A spooled mail's headers only: its body is what made us refuse it (1,000 nested parts
    would blow the parser's recursion here, escape process() and keep the mail pending ahead of
    all others), or what took too long."""
    return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(row["raw"][:65536], headersonly=True)
