"""Fill a store with many cases, fast, for bench/queue_scale.py.

The store is created by the product itself (store.db.open_db and its migrations, so the
schema, indexes, full-text tables and triggers are the real ones). Rows are bulk-inserted
with executemany in large transactions (the FTS triggers fire as in service). Each case is
a variation of real ones: cases the real pipeline made from a customer mail, so fields,
findings and dialog state have their real shape. Per case: the case row, the customer's
message and our acknowledgement (messages, both in the full-text index), the acknowledgement
in the outbox, one evidence row, two message IDs and four audit events (opened, received,
acknowledged, decided or queued). No raw spool rows: the queue never reads them.

A desk's life is simulated: cases over three years, most decided long ago; about 2 % wait for
review (the queue), 2 % wait for the customer, 1 % are being collected; 1 in 10 is an appeal;
3 in 10 came by Telegram; descriptions mix English and Chinese, with some recurring words.

    python bench/generate_cases.py --db /tmp/cases.db                   # 100,000 cases
    python bench/generate_cases.py --db /tmp/cases.db --cases 1000000   # the full run
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import _common as c

CHUNK = 20_000
WORDS = (
    "timeout", "charged", "twice", "duplicate", "billing", "completion", "embedding", "image", "model",
    "retry", "quota", "invoice", "refund", "gateway", "latency", "error", "tokens", "stream", "outage",
    "playground", "subscription", "credit", "balance", "request", "response", "failed", "deducted",
)
ZH = ("扣了两次", "请求超时", "重复扣费", "余额异常", "接口报错", "退款申请", "模型调用失败", "充值未到账", "服务中断")
AGENTS = ("alice", "bob", "chen", "dana", "emil", "fang")


def templates() -> dict:
    """A real queued refund case and its messages, made by the real pipeline."""
    from refunddesk.config import load
    from refunddesk.desk import Desk
    from refunddesk.harness.driver import mail_case

    folder = c.scratch("templates")
    config = c.write_config(folder / "refunddesk.toml", c.base_settings(folder))
    desk = Desk.from_config(load(config, environ={}))
    db = desk.open_db()
    text = (
        "Hello,\nReason: duplicate charge, I was charged twice\nCredit type: paid\nAmount: 12.50 USD\n"
        f"Time: {(datetime.now(c.SHANGHAI) - timedelta(days=1)).strftime('%Y-%m-%d')} 10:00\nAccount ID: acme-prod-7\n"
        "Description: The same completion request was billed twice.\n"
    )
    case_id = mail_case(desk, db, "template@example.test", text)
    case = next(db.query("SELECT * FROM cases WHERE id = ?", [case_id]))
    ack = next(db.query("SELECT subject, body FROM outbox WHERE case_id = ? ORDER BY id LIMIT 1", [case_id]))
    db.conn.close()
    return {"case": case, "ack": ack}


def description(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(12, 30))
    if rng.random() < 0.25:
        words.insert(rng.randrange(len(words)), rng.choice(ZH))
    return ("The " + " ".join(words) + ".").capitalize()


def status_of(rng: random.Random, age_days: float) -> str:
    if age_days < 20:  # recent cases are the open ones
        return rng.choices(("queued", "awaiting_customer", "collecting", "approved", "rejected"), (40, 20, 10, 20, 10))[0]
    return rng.choices(("approved", "rejected", "withdrawn"), (60, 35, 5))[0]


def generate(path: Path, cases: int, seed: int = 1, quiet: bool = False) -> dict:
    from refunddesk.store.db import open_db

    if path.exists():
        sys.exit(f"{path} exists; choose a new path")
    rng = random.Random(seed)
    shape = templates()
    base, ack = shape["case"], shape["ack"]
    db = open_db(path)
    conn = db.conn
    conn.execute("PRAGMA synchronous = OFF")  # a generated store: durability is not the point here
    conn.execute("PRAGMA cache_size = -262144")
    conn.execute("PRAGMA temp_store = MEMORY")
    # Bulk load: the secondary indexes and the full-text triggers go now and come back at the
    # end (an index built from the finished table, a full-text index by 'rebuild', which is
    # what the rows would have produced one by one, only faster).
    deferred = [
        (kind, name, sql) for kind, name, sql in conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND tbl_name IN ('cases', 'messages', 'outbox', 'events', 'evidence') "
            "AND (type = 'index' OR (type = 'trigger' AND name LIKE '%fts_insert'))"
        )
    ]
    for kind, name, _ in deferred:
        conn.execute(f"DROP {kind.upper()} {name}")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    span = timedelta(days=3 * 365)
    # About 2 % of cases in the last 20 days (what a steady desk has open at a time).
    recent_share = 0.03
    counters = {"RF": 0, "AP": 0}
    decided_refunds: list[str] = []
    columns = list(base.keys())
    started = time.monotonic()
    stats = {"cases": 0, "queued": 0}
    for chunk_start in range(0, cases, CHUNK):
        case_rows, messages, outbox, evidence, message_ids, events = [], [], [], [], [], []
        for n in range(chunk_start, min(cases, chunk_start + CHUNK)):
            recent = rng.random() < recent_share
            age = timedelta(days=rng.uniform(0, 20)) if recent else timedelta(seconds=rng.uniform(20 * 86400, span.total_seconds()))
            created = now - age
            appeal = bool(decided_refunds) and rng.random() < 0.1
            kind = "appeal" if appeal else "refund"
            prefix = "AP" if appeal else "RF"
            counters[prefix] += 1
            case_id = f"{prefix}-{counters[prefix]:06d}"
            telegram = rng.random() < 0.3
            customer = rng.randrange(int(cases * 0.7) + 1)
            contact = f"tg:{10_000_000 + customer}" if telegram else f"customer{customer}@example{customer % 97}.test"
            status = status_of(rng, age.total_seconds() / 86400)
            text = description(rng)
            row = dict(base)
            due = created + timedelta(days=rng.uniform(3, 9))
            decided = status in ("approved", "rejected")
            row.update(
                id=case_id, kind=kind, status=status, channel="telegram" if telegram else "email", contact=contact,
                language="zh" if any(z in text for z in ZH) else "en", amount=f"{rng.randint(1, 500)}.{rng.choice(('00', '50', '99'))}",
                description=text, created_at=created.isoformat(), updated_at=(created + timedelta(hours=1)).isoformat(),
                completed_at=(created + timedelta(minutes=5)).isoformat() if status != "collecting" else None,
                acknowledged_at=(created + timedelta(minutes=6)).isoformat(),
                review_due_at=due.isoformat() if status in ("queued", "approved", "rejected") else None,
                deadline_at=(created + timedelta(days=30)).isoformat(),
                decided_at=(created + timedelta(days=rng.uniform(0.5, 5))).isoformat() if decided else None,
                decided_by=rng.choice(AGENTS) if decided else None,
                parent_id=rng.choice(decided_refunds) if appeal else None,
                conversation_key=contact[3:] if telegram else "",
                fields=json.dumps({**json.loads(base["fields"]), "description": text, "account_id": f"acct-{customer}"}, ensure_ascii=False),
            )
            if appeal:
                row["fields"] = json.dumps({**json.loads(row["fields"]), "parent_ref": row["parent_id"]}, ensure_ascii=False)
            case_rows.append([row[k] for k in columns])
            if kind == "refund" and decided and len(decided_refunds) < 50_000:
                decided_refunds.append(case_id)
            stats["cases"] += 1
            stats["queued"] += status == "queued"
            at = created.isoformat()
            channel = row["channel"]
            subject = "" if telegram else f"Refund request: {rng.choice(WORDS)} on acct-{customer}"
            messages.append([case_id, "in", channel, at, contact, subject, text, None, None, None, "{}"])
            outbox_id = n + 1
            messages.append([case_id, "out", channel, at, "refunddesk", ack["subject"].replace("RF-000001", case_id), ack["body"].replace("RF-000001", case_id), None, None, outbox_id, '{"status": "sent"}'])
            outbox.append([outbox_id, case_id, channel, contact, "ack", "ack", row["language"], ack["subject"], ack["body"], "[]", "{}", "sent", 1, at, at, at])
            sha = f"{rng.getrandbits(256):064x}"
            evidence.append([case_id, sha, rng.randint(20_000, 900_000), "image/png", "image/png", "screenshot.png", f"{sha[:2]}/{sha[2:4]}/{sha}", None, at])
            message_ids.append([f"m{n}.{seed}@example.test", case_id])
            message_ids.append([f"ack{n}.{seed}@desk.test", case_id])
            events.append([at, case_id, "system", "case_opened", '{"channel": "%s", "kind": "%s"}' % (channel, kind)])
            events.append([at, case_id, contact, "message_received", "{}"])
            events.append([at, case_id, "system", "message_sent", '{"template": "ack"}'])
            if decided:
                events.append([row["decided_at"], case_id, row["decided_by"], status, "{}"])
        conn.execute("BEGIN")
        marks = ",".join("?" for _ in columns)
        conn.executemany(f"INSERT INTO cases ({', '.join(columns)}) VALUES ({marks})", case_rows)
        conn.executemany("INSERT INTO messages (case_id, direction, channel, at, sender, subject, text, html, inbound_id, outbox_id, meta) VALUES (?,?,?,?,?,?,?,?,?,?,?)", messages)
        conn.executemany("INSERT INTO outbox (id, case_id, channel, recipient, kind, template, language, subject, body, buttons, headers, status, attempts, created_at, next_attempt_at, sent_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", outbox)
        conn.executemany("INSERT OR IGNORE INTO evidence (case_id, sha256, size, content_type, declared_type, filename, path, inbound_id, created_at) VALUES (?,?,?,?,?,?,?,?,?)", evidence)
        conn.executemany("INSERT OR IGNORE INTO message_ids (message_id, case_id) VALUES (?, ?)", message_ids)
        conn.executemany("INSERT INTO events (at, case_id, actor, action, data) VALUES (?,?,?,?,?)", events)
        conn.execute("COMMIT")
        if not quiet:
            done = min(cases, chunk_start + CHUNK)
            rate = done / (time.monotonic() - started)
            print(f"  {done:>9,} cases  {rate:8,.0f} cases/s", end="\r", flush=True)
    conn.execute("BEGIN")
    for prefix, value in counters.items():
        conn.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value", [prefix, value])
    conn.execute("COMMIT")
    if not quiet:
        print(f"\n  rows in {time.monotonic() - started:.0f} s; indexes and full-text indexes ...", end="", flush=True)
    conn.execute("BEGIN")
    for _, _, sql in deferred:
        conn.execute(sql)
    conn.execute("INSERT INTO cases_fts (cases_fts) VALUES ('rebuild')")
    conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
    conn.execute("COMMIT")
    conn.execute("PRAGMA optimize")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    stats["seconds"] = time.monotonic() - started
    if not quiet:
        print()
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, type=Path, help="path of the new store (must not exist)")
    parser.add_argument("--cases", type=int, default=100_000, help="how many cases (default 100,000; the issue's full run: 1,000,000)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"generating {args.cases:,} cases into {args.db}")
    stats = generate(args.db, args.cases, args.seed)
    size = sum(p.stat().st_size for p in args.db.parent.glob(args.db.name + "*"))
    print(f"{stats['cases']:,} cases ({stats['queued']:,} queued for review) in {stats['seconds']:.0f} s; store {size / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
