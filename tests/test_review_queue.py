"""The queue: most urgent first (P302-10, PIF-4), filters, full-text search in both languages,
and the PIF-5 suggested amount with its arithmetic."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_cli
from refunddesk.policy.model import Case
from refunddesk.policy.preset import load_preset
from refunddesk.review.decisions import request_info
from refunddesk.review.queue import Filters, list_queue
from refunddesk.review.suggest import suggest
from refunddesk.harness.driver import chat_case, mail, mail_case, receive_mail
from refunddesk.store import cases as case_store
from refunddesk.store.clock import utcnow

from test_review_decisions import local, request_302ai

CHINESE = "原因：重复扣费\n额度类型：付费\n金额：100 元\n时间：{time}\n账号：hq_mei\n问题描述：同一个请求被扣了两次费用，请核实。\n"


@pytest.fixture
def filled(make_desk):
    """Four cases: one overdue, one older, one fresh (Chinese), one from Telegram."""
    desk = make_desk()
    db = desk.open_db()
    now = utcnow()
    # 20 days: overdue even across the longest public holiday.
    overdue = mail_case(desk, db, "old@lumen.test", request_302ai(now - timedelta(days=21), desk), now - timedelta(days=20))
    older = mail_case(desk, db, "mid@lumen.test", request_302ai(now - timedelta(days=2), desk), now - timedelta(days=1))
    chinese = mail_case(desk, db, "wang@lumen.test", CHINESE.format(time=local(desk, now - timedelta(days=1))), now - timedelta(minutes=30), subject="退款申请")
    chat = chat_case(desk, db, 7001, {
        "reason": "duplicate_charge", "credit_type": "paid", "amount": "3 USD", "incident_at": local(desk, now - timedelta(days=1)),
        "account_id": "tg-9", "description": "Charged twice in the playground.",
    }, now - timedelta(minutes=10))
    return desk, db, now, {"overdue": overdue, "older": older, "chinese": chinese, "chat": chat}


def ids(items):
    return [item.id for item in items]


def test_queue_is_ordered_by_review_due_date_overdue_first(filled):
    desk, db, now, cases = filled
    items = list_queue(desk, db, now)
    # Working days: a case that arrived on a weekend may be due no later than a fresher one.
    assert ids(items) == sorted(cases.values(), key=lambda c: next(i.review_due_at for i in items if i.id == c))
    assert ids(items)[0] == cases["overdue"] and set(ids(items)) == set(cases.values())
    assert [i.review_due_at for i in items] == sorted(i.review_due_at for i in items)
    first = items[0]
    assert first.overdue and not items[1].overdue
    assert first.amount == "12.50" and first.currency == "USD" and first.age_hours > 20 * 24 - 1
    assert all(item.review_due_at for item in items)


def test_filters_by_channel_kind_status_and_agent(filled):
    desk, db, now, cases = filled
    assert ids(list_queue(desk, db, now, Filters(channel="telegram"))) == [cases["chat"]]
    assert ids(list_queue(desk, db, now, Filters(kind="appeal"))) == []
    request_info(desk, db, cases["older"], "alice", "Which key was charged?")
    assert cases["older"] not in ids(list_queue(desk, db, now))
    assert ids(list_queue(desk, db, now, Filters(status="awaiting_customer", agent="alice"))) == [cases["older"]]
    assert ids(list_queue(desk, db, now, Filters(status=None, agent="bob"))) == []
    assert len(list_queue(desk, db, now, Filters(status=None))) == 4


def test_full_text_search_in_english_and_chinese(filled):
    desk, db, now, cases = filled
    search = lambda q: ids(list_queue(desk, db, now, Filters(status=None, search=q)))  # noqa: E731
    assert search("billed twice") == [cases["overdue"], cases["older"]]          # trigram FTS, two terms
    assert search("扣了两次") == [cases["chinese"]]                                # Chinese inside a sentence
    assert search("核实") == [cases["chinese"]]                                    # 2 characters: LIKE fallback
    assert search("playground") == [cases["chat"]]
    assert search("hq_mei") == [cases["chinese"]]                                 # fields (account ID) too
    assert search("nothing-like-this") == []
    assert search('"*) OR (') == []                                               # FTS syntax is quoted away

    # A new message is searchable at once: triggers keep the index in step.
    receive_mail(desk, db, mail("mid@lumen.test", f"Re: [{cases['older']}] more", "The order number is ZQ-88412.", to=desk.addresses.refunds))
    assert search("ZQ-88412") == [cases["older"]]
    assert search("zq") == [cases["older"]]


def fts_rows(db, phrase: str) -> list[int]:
    return [r[0] for r in db.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? ORDER BY rowid", [f'"{phrase}"'])]


def test_only_customers_messages_are_indexed_and_the_index_stays_whole(filled):
    desk, db, now, cases = filled
    case_id = cases["older"]
    ours = case_store.add_message(db, case_id, "out", "email", now, "our boilerplate, wombat", sender="refunddesk", subject="ours")
    theirs = case_store.add_message(db, case_id, "in", "email", now, "the customer says numbat", sender="c@x.test", subject="re")
    assert fts_rows(db, "wombat") == [] and fts_rows(db, "numbat") == [theirs]
    db.execute("UPDATE messages SET text = 'the customer says bilby' WHERE id = ?", [theirs])
    db.execute("UPDATE messages SET text = 'still ours, quokka' WHERE id = ?", [ours])
    assert fts_rows(db, "numbat") == [] and fts_rows(db, "bilby") == [theirs] and fts_rows(db, "quokka") == []
    db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")  # raises if index and view differ
    assert ids(list_queue(desk, db, now, Filters(status=None, search="bilby"))) == [case_id]


def test_the_migration_drops_our_letters_from_an_existing_index(tmp_path):
    """A store made before m007 had every message indexed; after it, only the customers'."""
    import sqlite_utils

    from refunddesk.store.schema import MIGRATIONS

    db = sqlite_utils.Database(tmp_path / "old.db")
    MIGRATIONS.apply(db, stop_before="m007_search_customers_words_only")
    case_store.save_case(db, Case(id="RF-000001", kind="refund", status="queued", channel="email", contact="c@x.test", created_at=CREATED), CREATED)
    ours = case_store.add_message(db, "RF-000001", "out", "email", CREATED, "our letter, wombat", sender="refunddesk", subject="ours")
    theirs = case_store.add_message(db, "RF-000001", "in", "email", CREATED, "their words, numbat", sender="c@x.test", subject="re")
    assert fts_rows(db, "wombat") == [ours]  # as before
    MIGRATIONS.apply(db)
    assert fts_rows(db, "wombat") == [] and fts_rows(db, "numbat") == [theirs]
    db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")


def test_search_follows_a_changed_description_and_saves_that_change_nothing_keep_the_index_whole(filled):
    desk, db, now, cases = filled
    search = lambda q: ids(list_queue(desk, db, now, Filters(status=None, search=q)))  # noqa: E731
    case = case_store.load_case(db, cases["chat"])
    case_store.save_case(db, case.evolve(status="queued"), now)  # indexed text unchanged: not re-indexed
    db.execute("INSERT INTO cases_fts (cases_fts) VALUES ('integrity-check')")  # raises if index and table differ
    assert search("playground") == [cases["chat"]]
    case_store.save_case(db, case.with_fields(description="The gateway timed out at checkout, quokka."), now)
    db.execute("INSERT INTO cases_fts (cases_fts) VALUES ('integrity-check')")
    assert search("quokka") == [cases["chat"]]


def test_queue_command_prints_and_filters(filled, tmp_path):
    desk, db, now, cases = filled
    config = tmp_path / "refunddesk.toml"
    listed = json.loads(run_cli(config, "queue", "--json").stdout)
    assert [item["id"] for item in listed] == ids(list_queue(desk, db, now)) and listed[0]["id"] == cases["overdue"]
    assert listed[0]["overdue"] is True and listed[0]["review_due_at"]
    found = json.loads(run_cli(config, "queue", "--json", "--search", "扣了两次").stdout)
    assert [item["id"] for item in found] == [cases["chinese"]]
    text = run_cli(config, "queue", "--channel", "email").stdout.decode()
    assert cases["overdue"] in text and "OVERDUE" in text and cases["chat"] not in text


IPFIXED = load_preset("ipfixed").versions[-1]
CREATED = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


def ipfixed_case(**fields: str) -> Case:
    return Case(id="RF-000001", kind="refund", status="queued", channel="email", contact="x@y.test", fields={"currency": "USD", **fields}, created_at=CREATED)


@pytest.mark.parametrize(
    "fields, fee, amount, basis, step",
    [
        # PIF-5 (1): full, within 24 hours of purchase and unused.
        ({"reason": "mistaken_purchase", "amount": "49", "purchase_at": (CREATED - timedelta(hours=10)).isoformat(), "quota_used_pct": "0", "payment_method": "card"},
         Decimal("1.50"), "47.50", "full", "Full refund: asked 10.0 h after purchase"),
        # Used already: no longer full, prorated by the remaining days (PIF-5 (2)).
        ({"reason": "mistaken_purchase", "amount": "30", "purchase_at": (CREATED - timedelta(hours=10)).isoformat(), "quota_used_pct": "20", "payment_method": "balance"},
         None, "29.00", "prorated", "30.00 x 29 / 30 days"),
        ({"reason": "not_as_described", "amount": "30", "purchase_at": (CREATED - timedelta(days=10, hours=1)).isoformat(), "payment_method": "paypal"},
         None, "19.00", "prorated", "30.00 x 19 / 30 days = 19.00 USD (11 days since purchase)"),
        # PIF-5 (3): in proportion to the outage.
        ({"reason": "outage", "outage_hours": "48", "amount": "60", "purchase_at": (CREATED - timedelta(days=3)).isoformat(), "payment_method": "bank"},
         Decimal("0"), "4.00", "outage", "60.00 x 48 h / 720 h = 4.00 USD"),
        # PIF-5 (5): under 1 USD is not paid now; it accumulates.
        ({"reason": "outage", "outage_hours": "25", "amount": "10", "purchase_at": (CREATED - timedelta(days=3)).isoformat(), "payment_method": "card"},
         None, "0.00", "outage", "under the minimum single refund of 1.00"),
    ],
)
def test_suggested_amount_shows_its_arithmetic(fields, fee, amount, basis, step):
    suggestion = suggest(ipfixed_case(**fields), IPFIXED, "USD", fee=fee)
    assert (suggestion.to_dict()["amount"], suggestion.basis, suggestion.clause) == (amount, basis, "PIF-5")
    assert any(step in line for line in suggestion.steps), suggestion.steps
    if fields.get("payment_method") == "balance":
        assert any("no payment platform fee" in line for line in suggestion.steps)
    elif fee is None:
        assert any("processing fee: not on record" in line for line in suggestion.steps)


def test_302ai_suggests_the_requested_amount_as_the_cap():
    policy = load_preset("302ai").versions[-1]
    suggestion = suggest(ipfixed_case(amount="12.50"), policy, "USD")
    assert suggestion.to_dict()["amount"] == "12.50" and suggestion.clause == "P302-13"



SEARCHED_TEXTS = [
    "customer351379@example45.test", "Order-12345@Shop9.TEST", "Invoice INV-2026-0042 charged twice",
    "ticket 777 and 7770, key sk-88x120", "ref 123456 / REF 123456x", "订单 2026112001 扣了两次",
]


@pytest.fixture(scope="module")
def searchable(tmp_path_factory):
    """A store whose cases and messages hold digits among letters, in several cases."""
    from refunddesk.store.db import open_db

    db = open_db(tmp_path_factory.mktemp("search") / "refunddesk.db")
    for n, text in enumerate(SEARCHED_TEXTS):
        case = Case(id=f"RF-{n + 1:06d}", kind="refund", status="queued", channel="email", contact=SEARCHED_TEXTS[-1 - n] if n % 2 else f"c{n}@x.test",
                    fields={"description": text}, created_at=CREATED)
        case_store.save_case(db, case, CREATED)
        case_store.add_message(db, case.id, "in", "email", CREATED, f"see {SEARCHED_TEXTS[(n + 2) % len(SEARCHED_TEXTS)]}", sender="c@x.test", subject=f"case {n}")
        case_store.add_message(db, case.id, "out", "email", CREATED, SEARCHED_TEXTS[(n + 3) % len(SEARCHED_TEXTS)], sender="refunddesk", subject="ours")
    return db


@given(st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_term_with_digits_finds_exactly_what_the_whole_phrase_finds(searchable, data):
    """The digits-first path (review/queue.narrowed_match) must change how fast, never what."""
    from refunddesk.review.queue import narrowed_match, narrowing_run, phrase_match

    text = data.draw(st.sampled_from(SEARCHED_TEXTS + ["x" + t for t in SEARCHED_TEXTS]))
    start = data.draw(st.integers(0, len(text) - 4))
    term = text[start:start + data.draw(st.integers(4, 24))].replace(" ", "")
    term = data.draw(st.sampled_from([term, term.upper(), term.swapcase(), term + "9"]))
    narrow = narrowing_run(term)
    if narrow is None or len(term) < 3:
        return
    found = lambda condition: {r[0] for r in searchable.execute(f"SELECT c.id FROM cases c WHERE {condition[0]}", condition[1])}  # noqa: E731
    assert found(narrowed_match(term, narrow)) == found(phrase_match(term)), term


WALKED_WORDS = ["扣了两次", "退款", "timeout", "Timeout", "quota", "额度不足", "charged", "key", "请核实"]


@pytest.fixture(scope="module")
def walkable(tmp_path_factory):
    """600 cases in two statuses, due at spread times, whose descriptions and messages hold
    each word at its own rate (from most cases to a handful), so a search for one is found
    early, late, or nowhere in queue order; our own letters hold two of the words and must not count."""
    import random

    from refunddesk.store.db import open_db

    rng = random.Random(7)
    db = open_db(tmp_path_factory.mktemp("walk") / "refunddesk.db")
    for n in range(600):
        words = [w for i, w in enumerate(WALKED_WORDS) if rng.random() < 0.6 / (i + 1) ** 1.5]
        described, said = words[: len(words) // 2], words[len(words) // 2:]
        case = Case(id=f"RF-{n + 1:06d}", kind="refund", status=rng.choice(["queued", "queued", "approved"]), channel="email",
                    contact=f"c{n}@x.test", fields={"description": " ".join(["problem", *described])}, created_at=CREATED,
                    review_due_at=CREATED + timedelta(hours=rng.randrange(0, 2000)) if rng.random() < 0.9 else None)
        case_store.save_case(db, case, CREATED)
        case_store.add_message(db, case.id, "in", "email", CREATED, " / ".join(["hello", *said]), sender=case.contact, subject=f"case {n}")
        case_store.add_message(db, case.id, "out", "email", CREATED, " ".join(WALKED_WORDS[:2]), sender="refunddesk", subject="ours")
    return db


@given(st.data())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_page_read_in_queue_order_is_the_page_the_index_finds(walkable, monkeypatch, data):
    """quick_page (cases read in queue order, in chunks, as far as the index's count says) must
    give exactly the page the full-text index gives, whatever the term's rate and the page."""
    from refunddesk.review import queue

    monkeypatch.setattr(queue, "QUICK_WINDOW", data.draw(st.sampled_from([1, 10, 60])))
    monkeypatch.setattr(queue, "QUICK_PAGES", data.draw(st.sampled_from([1, 20])))
    monkeypatch.setattr(queue.Walk, "CHUNK", data.draw(st.sampled_from([1, 7, 250])))
    terms = data.draw(st.lists(st.sampled_from(WALKED_WORDS + ["absent-word"]), min_size=1, max_size=2))
    filters = Filters(status=data.draw(st.sampled_from(["queued", "approved", None])), search=" ".join(terms))
    limit, offset = data.draw(st.integers(1, 60)), data.draw(st.integers(0, 80))
    quick = queue.quick_page(walkable, filters, limit, offset)
    where, params = queue.selection(filters)
    expected = [r[0] for r in walkable.execute(f"SELECT c.id FROM cases c {where} ORDER BY {queue.ORDER} LIMIT {limit} OFFSET {offset}", params)]
    if quick is not None:
        assert quick == expected, (filters, limit, offset)


def test_a_term_sparse_in_the_first_window_is_read_on_as_far_as_the_index_count_says(walkable, monkeypatch):
    from refunddesk.review import queue

    monkeypatch.setattr(queue, "QUICK_WINDOW", 1)
    monkeypatch.setattr(queue, "QUICK_PAGES", 1)
    wanted = 5

    def first_window_fills(term: str) -> bool:
        walk = queue.Walk(walkable, "", [], *queue.like_match(term), wanted=wanted)
        walk.read_until(wanted)
        return walk.done

    # A word common enough for the walk to pay, but too sparse among the first cases to fill the page.
    sparse = [w for w in WALKED_WORDS[2:] if not first_window_fills(w) and (queue.expected_walk(walkable, [w], wanted) or 0) > wanted]
    assert sparse, "the fixture has no such word"
    for term in sparse:
        filters = Filters(status=None, search=term)
        where, params = queue.selection(filters)
        expected = [r[0] for r in walkable.execute(f"SELECT c.id FROM cases c {where} ORDER BY {queue.ORDER} LIMIT {wanted}", params)]
        assert queue.quick_page(walkable, filters, wanted, 0) == expected, term
    # A term too rare for a walk to pay goes to the index.
    assert queue.quick_page(walkable, Filters(status=None, search="请核实"), 50, 0) is None
    assert queue.quick_page(walkable, Filters(status=None, search="absent-word"), 50, 0) is None


def test_a_walk_sees_the_store_as_of_one_moment(tmp_path):
    """The walk reads its chunks in statements of their own. A case queued ahead of it between
    two chunks (the worker commits while an agent searches) must not shift the next chunk
    and show a case twice."""
    from refunddesk.review import queue
    from refunddesk.store.db import open_db

    db = open_db(tmp_path / "refunddesk.db")
    for n in range(1200):
        case_store.save_case(db, Case(id=f"RF-{n + 1:06d}", kind="refund", status="queued", channel="email", contact=f"c{n}@x.test",
                                      fields={"description": "timeout" if n % 10 == 9 else "other"}, created_at=CREATED,
                                      review_due_at=CREATED + timedelta(hours=n + 10)), CREATED)
    worker = open_db(tmp_path / "refunddesk.db")
    chunks = []

    def between_chunks(sql: str) -> None:
        if "OFFSET" in sql:
            chunks.append(sql)
            if len(chunks) == 2:  # the second chunk is about to be read
                case_store.save_case(worker, Case(id="RF-900000", kind="refund", status="queued", channel="email", contact="z@x.test",
                                                  fields={"description": "nothing"}, created_at=CREATED, review_due_at=CREATED), CREATED)

    db.conn.set_trace_callback(between_chunks)
    try:
        page = queue.quick_page(db, Filters(search="timeout"), 50, 0)
    finally:
        db.conn.set_trace_callback(None)
    assert len(chunks) >= 2 and page is not None
    where, params = queue.selection(Filters(search="timeout"))
    assert page == [r[0] for r in db.execute(f"SELECT c.id FROM cases c {where} ORDER BY {queue.ORDER} LIMIT 50", params)]
    assert len(set(page)) == 50
