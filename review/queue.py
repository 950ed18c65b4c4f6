"""The agents' queue: cases waiting for review, most urgent first, with what an agent needs to
pick one (P302-10, PIF-4: review due dates; overdue cases first and flagged).

Search is full text over case IDs, contacts, descriptions and every customer message (our own
letters are left out: their boilerplate would match every case), Chinese included: FTS5 with
the trigram tokenizer finds any run of three or more characters (so "扣了两次" or "timeout"
match inside longer text), and shorter terms ("退款", "ok") fall back to LIKE, because a
trigram index cannot answer them.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import sqlite_utils

from refunddesk.desk import Desk
from refunddesk.store.cases import case_from_row

from .suggest import suggest

DUE_SOON = timedelta(hours=8)
PAGE_SIZE = 50  # cases on one page of the console's queue
# Most urgent first. Store migration m004 has this order as indexes (with and without the
# status), so a page is read in order rather than every matching case sorted.
ORDER = "c.review_due_at IS NULL, c.review_due_at, c.created_at, c.id"
# A search first reads this many cases in queue order (at least QUICK_PAGES pages' worth)
# before it asks the full-text index how common its term is.
QUICK_WINDOW = 500
QUICK_PAGES = 20


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
    created_at: datetime | None
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


def list_queue(
    desk: Desk,
    db: sqlite_utils.Database,
    now: datetime,
    filters: Filters = Filters(),
    *,
    limit: int | None = None,
    offset: int = 0,
) -> list[QueueItem]:
    """The cases the filters select, most urgent first; `limit` and `offset` give one page."""
    chosen, params = page_of(db, filters, limit, offset)
    # The page's ids first, in index order; the rest of the row, the parent and the pending
    # acknowledgement only for those (not for every case in the queue before the LIMIT).
    rows = db.query(
        f"""
        SELECT c.*, p.decided_by AS parent_decided_by,
               EXISTS (SELECT 1 FROM outbox o WHERE o.case_id = c.id AND o.kind = 'ack' AND o.status = 'pending')
                   AS ack_pending
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
    """A page of a search for a common term, or None when the full-text index should answer.

    The index first collects every match in the store before the page is cut (half a million
    for "timeout" among 1,000,000 cases: about a second). A common term also matches many of
    the first cases in queue order, so reading those in order, with LIKE, finds the page at
    once. When the first QUICK_WINDOW cases hold too few matches, the index says how common
    the term is (a count, cheap next to collecting): if filling the page by reading on in
    order is expected to cost less than collecting every match, the walk goes on, at most
    twice as far as expected. LIKE folds ASCII case only, as SQLite's lower() does: a term
    with other cased letters always goes to the index, which folds every script."""
    terms = terms_of(filters.search)
    if limit is None or not terms or not all(likeable(t) for t in terms):
        return None
    where, params = selection(replace(filters, search=None))
    conditions, like_params = [], []
    for term in terms:
        sql, term_params = like_match(term)
        conditions.append(sql)
        like_params += term_params
    walk = Walk(db, where, params, " AND ".join(conditions), like_params, wanted=offset + limit)
    with one_snapshot(db):  # the walk's chunks are statements of their own: one view of the store
        walk.read_until(max(QUICK_WINDOW, QUICK_PAGES * walk.wanted))
        if not walk.done:
            expected = expected_walk(db, terms, walk.wanted)
            if expected is not None and expected > walk.read:
                walk.read_until(2 * expected)
    return walk.found[offset:] if walk.done else None


@contextlib.contextmanager
def one_snapshot(db: sqlite_utils.Database):
    """Several reads that see the store as of one moment: a case queued between two chunks of
    a walk would otherwise shift the OFFSET of the next, and a page would show a case twice.
    Within a transaction already open, its own view serves."""
    if db.conn.in_transaction:
        yield
        return
    db.execute("BEGIN")
    try:
        yield
    finally:
        db.execute("COMMIT")  # nothing was written: this only ends the read


def likeable(term: str) -> bool:
    """LIKE finds what the index finds for this term: no letter whose case only the index folds."""
    return all(ch.isascii() or ch.lower() == ch.upper() for ch in term)


class Walk:
    """Cases of one scope read in queue order, a chunk at a time, keeping those that match,
    until a page is full or the scope is read to its end."""

    CHUNK = 250  # cases checked per statement: at most one chunk is read past the page's end

    def __init__(
        self,
        db: sqlite_utils.Database,
        where: str,
        params: list[Any],
        condition: str,
        condition_params: list[Any],
        wanted: int,
    ):
        self.db, self.where, self.params = db, where, params
        self.condition, self.condition_params = condition, condition_params
        self.wanted = wanted
        self.found: list[str] = []
        self.read = 0
        self.exhausted = False

    @property
    def done(self) -> bool:
        """The page is known: full, or every case of the scope was read."""
        return len(self.found) >= self.wanted or self.exhausted

    def read_until(self, position: int) -> None:
        while not self.done and self.read < position:
            size = min(self.CHUNK, position - self.read)
            rowids = [
                r[0]
                for r in self.db.execute(
                    f"SELECT c.rowid FROM cases c {self.where} ORDER BY {ORDER} LIMIT {size} OFFSET {self.read}",
                    self.params,
                )
            ]
            self.read += len(rowids)
            self.exhausted = len(rowids) < size
            if rowids:
                hits = dict(
                    self.db.execute(
                        "SELECT c.rowid, c.id FROM cases c WHERE c.rowid IN (SELECT value FROM json_each(?)) "
                        f"AND {self.condition}",
                        [json.dumps(rowids), *self.condition_params],
                    ).fetchall()
                )
                self.found += [hits[r] for r in rowids if r in hits][: self.wanted - len(self.found)]


def expected_walk(db: sqlite_utils.Database, terms: list[str], wanted: int) -> int | None:
    """How many cases in queue order hold `wanted` matches, if matches are spread evenly (the
    store's share of the rarest term), when that is fewer than the index's matches to
    collect; else None. Terms the index cannot count (under three characters) or must not
    (a digit run: rare by nature, and its common trigrams are slow to count) give no estimate."""
    countable = [t for t in terms if len(t) >= 3 and narrowing_run(t) is None]
    if not countable:
        return None
    # The highest rowid: the count, within what was deleted after seven years (PIF-10), read
    # in one step where count(*) reads the whole table.
    (cases,) = db.execute("SELECT max(rowid) FROM cases").fetchone()
    matches = min(index_count(db, term) for term in countable)
    if not cases or not matches:
        return None
    expected = wanted * cases // matches
    return expected if expected <= matches else None


def index_count(db: sqlite_utils.Database, term: str) -> int:
    """About how many cases hold the phrase: the larger of the cases and the messages that do.
    A case's description is most often its customer's own words, so the two overlap; their
    sum would count such a case twice and halve the walk's estimate."""
    phrase = fts_phrase(term)
    return max(
        db.execute(f"SELECT count(*) FROM {fts} WHERE {fts} MATCH ?", [phrase]).fetchone()[0]
        for fts in ("cases_fts", "messages_fts")
    )


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
        clauses.append(
            "(c.decided_by = ? OR c.id IN (SELECT case_id FROM events WHERE actor = ? AND case_id IS NOT NULL))"
        )
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
    version = desk.policy.version_of(case)
    suggestion = (
        suggest(case, version, desk.policy.currency, parent).to_dict() if case.kind == "refund" or parent else None
    )
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


def fts_phrase(term: str) -> str:
    """The term as one FTS5 phrase: quoted, so no character of it is query syntax."""
    return '"' + term.replace('"', '""') + '"'


def phrase_match(term: str) -> tuple[str, list[str]]:
    """The term as one phrase of the trigram indexes (three characters or more)."""
    phrase = fts_phrase(term)
    return (
        "(c.rowid IN (SELECT rowid FROM cases_fts WHERE cases_fts MATCH ?) "
        "OR c.id IN (SELECT m.case_id FROM messages m "
        "WHERE m.id IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?) "
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
    phrase, folded = fts_phrase(narrow), term.lower()
    return (
        "(c.rowid IN (SELECT x.rowid FROM cases_fts f JOIN cases x ON x.rowid = f.rowid WHERE cases_fts MATCH ? "
        "AND (instr(lower(x.id), ?) OR instr(lower(x.contact), ?) OR instr(lower(x.description), ?))) "
        "OR c.id IN (SELECT m.case_id FROM messages m "
        "WHERE m.id IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?) "
        "AND m.case_id IS NOT NULL AND m.direction = 'in' "
        "AND (instr(lower(m.subject), ?) OR instr(lower(m.text), ?))))",
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
