"""The agents' queue: cases waiting for review, most urgent first, with what an agent needs to
pick one (P302-10, PIF-4: review due dates; overdue cases first and flagged).

Search is full text over case IDs, contacts, descriptions and every customer message (our own
letters are left out: their boilerplate would match every case), Chinese included: FTS5 with the trigram tokenizer finds any run of three or more characters (so
"扣了两次" or "timeout" match inside longer text), and shorter terms ("退款", "ok") fall back
to LIKE, because a trigram index cannot answer them.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import sqlite_utils

from refunddesk.desk import Desk
from refunddesk.store.cases import case_from_row

from .decisions import version_of
from .suggest import suggest

DUE_SOON = timedelta(hours=8)
PAGE_SIZE = 50  # cases on one page of the console's queue
# Most urgent first. Store migration m004 has this order as indexes (with and without the
# status), so a page is read in order rather than every matching case sorted.
ORDER = "c.review_due_at IS NULL, c.review_due_at, c.created_at, c.id"
QUICK_WINDOW = 500  # cases read in queue order before a search falls back to the full-text index


@dataclass(frozen=True)
class Filters:
    status: str | None = "queued"
    kind: str | None = None
    channel: str | None = None
    agent: str | None = None
    search: str | None = None


@dataclass
class QueueItem:
    id: str
    kind: str
    status: str
    channel: str
    contact: str
    language: str
    amount: str | None
    currency: str | None
    description: str
    created_at: datetime
    review_due_at: datetime | None
    overdue: bool
    due_soon: bool
    age_hours: float
    blocking: list[dict[str, Any]]
    findings: list[dict[str, Any]]
    flags: dict[str, Any]
    parent_id: str | None
    parent_decided_by: str | None
    decided_by: str | None
    suggestion: dict[str, Any] | None = None
    ack_pending: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        for key in ("created_at", "review_due_at"):
            data[key] = data[key].isoformat() if data[key] else None
        data["age_hours"] = round(self.age_hours, 1)
        return data


def list_queue(desk: Desk, db: sqlite_utils.Database, now: datetime, filters: Filters = Filters(), *, limit: int | None = None, offset: int = 0) -> list[QueueItem]:
    """The cases the filters select, most urgent first; `limit` and `offset` give one page."""
    chosen, params = page_of(db, filters, limit, offset)
    # The page's ids first, in index order; the rest of the row, the parent and the pending
    # acknowledgement only for those (not for every case in the queue before the LIMIT).
    rows = db.query(
        f"""
        SELECT c.*, p.decided_by AS parent_decided_by,
               EXISTS (SELECT 1 FROM outbox o WHERE o.case_id = c.id AND o.kind = 'ack' AND o.status = 'pending') AS ack_pending
        FROM ({chosen}) AS chosen
        JOIN cases c ON c.id = chosen.id LEFT JOIN cases p ON p.id = c.parent_id
        ORDER BY {ORDER}
        """,
        params,
    )
    return [item_of(desk, db, row, now) for row in rows]


def page_of(db: sqlite_utils.Database, filters: Filters, limit: int | None, offset: int) -> tuple[str, list[Any]]:
    """SQL selecting the ids of one page, and its parameters."""
    quick = quick_page(db, filters, limit, offset)
    if quick is not None:
        return "SELECT value AS id FROM json_each(?)", [json.dumps(quick)]
    where, params = selection(filters)
    page = f"LIMIT {int(limit)} OFFSET {int(offset)}" if limit is not None else ""
    return f"SELECT c.id FROM cases c {where} ORDER BY {ORDER} {page}", params


def quick_page(db: sqlite_utils.Database, filters: Filters, limit: int | None, offset: int) -> list[str] | None:
    """A page of a search for a common word, or None.

    The full-text index first collects every match in the store before the page is cut
    (half a million for "timeout" among 1,000,000 cases: about a second). A common word
    also matches many of the first cases in queue order, so reading those with LIKE finds
    the page at once. When the first cases hold too few matches, the word is rare, and the
    index answers quickly. LIKE folds ASCII case only: words with other cased letters
    always go to the index, which folds them too."""
    terms = terms_of(filters.search)
    if limit is None or not terms or not all(all(ch.isascii() or ch.lower() == ch.upper() for ch in t) for t in terms):
        return None
    where, params = selection(replace(filters, search=None))
    conditions, like_params = [], []
    for term in terms:
        sql, term_params = like_match(term)
        conditions.append(sql)
        like_params += term_params
    wanted = offset + limit
    window = max(QUICK_WINDOW, 20 * wanted)
    found = [
        r[0]
        for r in db.execute(
            f"SELECT c.id FROM (SELECT c.rowid AS r FROM cases c {where} ORDER BY {ORDER} LIMIT {window}) AS early "
            f"JOIN cases c ON c.rowid = early.r WHERE {' AND '.join(conditions)} ORDER BY {ORDER} LIMIT {wanted}",
            params + like_params,
        )
    ]
    return found[offset:] if len(found) >= wanted else None


def count_queue(db: sqlite_utils.Database, filters: Filters = Filters()) -> int:
    where, params = selection(filters)
    return db.execute(f"SELECT count(*) FROM cases c {where}", params).fetchone()[0]


def selection(filters: Filters) -> tuple[str, list[Any]]:
    """The WHERE clause (on `cases c`) and its parameters for a set of filters."""
    clauses: list[str] = []
    params: list[Any] = []
    if filters.status:
        clauses.append("c.status = ?")
        params.append(filters.status)
    if filters.kind:
        clauses.append("c.kind = ?")
        params.append(filters.kind)
    if filters.channel:
        clauses.append("c.channel = ?")
        params.append(filters.channel)
    if filters.agent:
        # An agent's cases: the ones they decided or acted on (asked, flagged, viewed evidence).
        clauses.append("(c.decided_by = ? OR c.id IN (SELECT case_id FROM events WHERE actor = ? AND case_id IS NOT NULL))")
        params += [filters.agent, filters.agent]
    for term in terms_of(filters.search):
        sql, term_params = matching_cases(term)
        clauses.append(sql)
        params += term_params
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


def item_of(desk: Desk, db: sqlite_utils.Database, row: dict[str, Any], now: datetime) -> QueueItem:
    case = case_from_row(row)
    due = case.review_due_at
    waiting = case.status == "queued"
    findings = [f.to_dict() for f in case.findings]
    parent = None
    if case.parent_id:
        parent_rows = list(db.query("SELECT * FROM cases WHERE id = ?", [case.parent_id]))
        parent = case_from_row(parent_rows[0]) if parent_rows else None
    version = version_of(desk, case)
    suggestion = suggest(case, version, desk.policy.currency, parent).to_dict() if case.kind == "refund" or parent else None
    return QueueItem(
        id=case.id,
        kind=case.kind,
        status=case.status,
        channel=case.channel,
        contact=case.contact,
        language=case.language,
        amount=case.fields.get("amount") or (parent.fields.get("amount") if parent else None),
        currency=case.fields.get("currency") or (parent.fields.get("currency") if parent else None),
        description=(case.fields.get("description") or "")[:200],
        created_at=case.created_at,
        review_due_at=due,
        overdue=bool(waiting and due and due <= now),
        due_soon=bool(waiting and due and now < due <= now + DUE_SOON),
        age_hours=(now - case.created_at).total_seconds() / 3600 if case.created_at else 0.0,
        blocking=[f for f in findings if f["blocking"]],
        findings=findings,
        flags=json.loads(row.get("agent_flags") or "{}"),
        parent_id=case.parent_id,
        parent_decided_by=row.get("parent_decided_by"),
        decided_by=row.get("decided_by"),
        suggestion=suggestion,
        ack_pending=bool(row.get("ack_pending")),
    )


def terms_of(search: str | None) -> list[str]:
    return [t for t in (search or "").split() if t][:10]


def matching_cases(term: str) -> tuple[str, list[str]]:
    """A condition on `cases c`: its text or one of its customer's messages contains `term`.

    Full-text matches are collected once (rowids straight from the index, no join); the LIKE
    fallback is checked case by case, so it reads only the cases the other filters leave
    and stops when a page is full, instead of every case and message in the store."""
    narrow = narrowing_run(term)
    if narrow is not None:
        return narrowed_match(term, narrow)
    if len(term) >= 3:
        return phrase_match(term)
    return like_match(term)


def phrase_match(term: str) -> tuple[str, list[str]]:
    """The term as one phrase of the trigram indexes (three characters or more)."""
    phrase = '"' + term.replace('"', '""') + '"'
    return (
        "(c.rowid IN (SELECT rowid FROM cases_fts WHERE cases_fts MATCH ?) "
        "OR c.id IN (SELECT m.case_id FROM messages m WHERE m.id IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?) "
        "AND m.case_id IS NOT NULL AND m.direction = 'in'))",
        [phrase, phrase],
    )


DIGIT_RUN = re.compile(r"[0-9]{3,}")


def narrowing_run(term: str) -> str | None:
    """The term's longest run of digits, when a search may ask the index for that alone.

    The trigram index answers a phrase by reading the posting list of each of its trigrams:
    for an address such as customer351379@example45.test, those of "cus", "tom", "exa", ".te"
    hold nearly every case (~60 ms among 1,000,000). Digit trigrams are rare in text, so the
    digits find a few candidates, and each is checked for the whole term. ASCII terms only:
    SQLite's lower() folds ASCII alone, where the index folds every script."""
    if not term.isascii():
        return None
    runs = DIGIT_RUN.findall(term)
    longest = max(runs, key=len, default=None)
    return longest if longest is not None and len(longest) < len(term) else None


def narrowed_match(term: str, narrow: str) -> tuple[str, list[str]]:
    """matching_cases() for a term with a digit run: the run through the index, then the
    whole term (case folded, as the index folds it) in the same columns."""
    phrase, folded = f'"{narrow}"', term.lower()
    return (
        "(c.rowid IN (SELECT x.rowid FROM cases_fts f JOIN cases x ON x.rowid = f.rowid WHERE cases_fts MATCH ? "
        "AND (instr(lower(x.id), ?) OR instr(lower(x.contact), ?) OR instr(lower(x.description), ?))) "
        "OR c.id IN (SELECT m.case_id FROM messages m WHERE m.id IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?) "
        "AND m.case_id IS NOT NULL AND m.direction = 'in' AND (instr(lower(m.subject), ?) OR instr(lower(m.text), ?))))",
        [phrase, folded, folded, folded, phrase, folded, folded],
    )


def like_match(term: str) -> tuple[str, list[str]]:
    """The same condition with LIKE, checked case by case (terms under three characters)."""
    pattern = "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    like = "LIKE ? ESCAPE '\\'"
    return (
        f"(c.id {like} OR c.contact {like} OR c.description {like} OR EXISTS (SELECT 1 FROM messages m "
        f"WHERE m.case_id = c.id AND m.direction = 'in' AND (m.subject {like} OR m.text {like})))",
        [pattern] * 5,
    )


def most_urgent(desk: Desk, db: sqlite_utils.Database, now: datetime) -> QueueItem | None:
    items = list_queue(desk, db, now, limit=1)
    return items[0] if items else None


def due_text(item: QueueItem, now: datetime) -> str:
    """'overdue 5.0 h' or 'in 20.0 h': how the CLI and the console say when a review is due."""
    if item.review_due_at is None:
        return "-"
    hours = (item.review_due_at - now).total_seconds() / 3600
    return f"overdue {-hours:.1f} h" if hours < 0 else f"in {hours:.1f} h"

