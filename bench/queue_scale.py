"""The agents' queue at scale: p95 of the queue page and of full-text searches on a big store.

A store filled by bench/generate_cases.py (real schema, real-shaped cases; default 100,000
cases, `--cases 1000000` for the issue's full run, or `--db` to reuse a store generated before).
Timed, each --repeat times after one cold run (shown apart), on the same store:
  * baseline: a bare `SELECT * FROM cases WHERE status = 'queued' LIMIT 50`;
  * the queue page as the code computes it: review.queue.list_queue() with the console's
    default filter (waiting for review), and with a kind and a channel filter;
  * full-text searches (review.queue's FTS5 trigram search, with its LIKE fallback for
    terms under three characters): a case ID, a customer's address, a common English word,
    a Chinese phrase, a two-character Chinese word, within the queue and across all cases;
  * the same pages over HTTP from the real console (`refunddesk serve`, console.enabled),
    signed in as an agent, unless --no-http.

    python bench/queue_scale.py                             # generates 100,000 cases (~40 s)
    python bench/queue_scale.py --cases 1000000             # the full run (~7 min to generate)
    python bench/queue_scale.py --db /tmp/cases-1m.db       # reuse a generated store

Target (issue 7): p95 under 50 ms for the queue page and for a full-text search.
"""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import _common as c

TARGET = 0.050


def timed(function, repeat: int) -> tuple[list[float], int, float]:
    """Warm runs' times, the result's size, and the first (cold) run's time."""
    began = time.perf_counter()
    function()
    cold = time.perf_counter() - began
    times, size = [], 0
    for _ in range(repeat):
        began = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - began)
        size = len(result)
    return times, size, cold


def row(name: str, times: list[float], size: int, cold: float, baseline: float | None, target: bool = True) -> bool:
    p95 = c.percentile(times, 95)
    ok = p95 < TARGET
    ratio = f"{p95 / baseline:8.0f}x" if baseline else f"{'':9}"
    mark = c.verdict(ok) if target else ""
    print(f"{name:52}{size:>8}{cold * 1000:10.1f}{c.percentile(times, 50) * 1000:10.1f}{p95 * 1000:10.1f}{max(times) * 1000:10.1f}{ratio}  {mark}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, help="a store made by generate_cases.py (made now if missing)")
    parser.add_argument("--cases", type=int, default=100_000, help="cases to generate when --db is not given (default 100,000)")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs of each query (default 20)")
    parser.add_argument("--no-http", action="store_true", help="skip the console over HTTP")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (the generated store)")
    args = parser.parse_args()

    from refunddesk.config import load
    from refunddesk.desk import Desk
    from refunddesk.review import queue
    from refunddesk.store.clock import utcnow
    from refunddesk.store.db import open_db

    c.header("Queue at scale")
    folder = c.scratch("queue", args.keep)
    path = args.db or folder / "cases.db"
    if not path.exists():
        import generate_cases

        print(f"generating {args.cases:,} cases into {path} ...")
        stats = generate_cases.generate(path, args.cases)
        print(f"generated in {stats['seconds']:.0f} s")
    settings = c.base_settings(folder, **{"store.path": str(path), "console.enabled": True, "console.secret_key": "bench-secret-key-0123456789"})
    config = c.write_config(folder / "refunddesk.toml", settings)
    desk = Desk.from_config(load(config, environ={}))
    db = open_db(path)
    (total,) = db.execute("SELECT count(*) FROM cases").fetchone()
    (queued,) = db.execute("SELECT count(*) FROM cases WHERE status = 'queued'").fetchone()
    sample = next(db.query("SELECT id, contact FROM cases WHERE status = 'queued' ORDER BY review_due_at LIMIT 1 OFFSET 7"))
    old = next(db.query("SELECT id, contact FROM cases WHERE status = 'approved' LIMIT 1 OFFSET 1000"))
    print(f"store: {path} ({total:,} cases, {queued:,} waiting for review)")
    now = utcnow()
    n = args.repeat

    print()
    print(f"{'':52}{'rows':>8}{'cold ms':>10}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}{'vs base':>9}")
    base_times, base_rows, base_cold = timed(lambda: list(db.query("SELECT * FROM cases WHERE status = 'queued' LIMIT 50")), n)
    baseline = c.percentile(base_times, 95)
    row("baseline: SELECT * ... WHERE status='queued' LIMIT 50", base_times, base_rows, base_cold, None, target=False)
    results: dict[str, bool] = {}
    page = getattr(queue, "PAGE_SIZE", None)

    def listing(filters):
        return lambda: queue.list_queue(desk, db, now, filters, **({"limit": page} if page else {}))

    print("queue page (review.queue.list_queue" + (f", {page} a page)" if page else ", every waiting case)"))
    for name, filters in (
        ("waiting for review (the default page)", queue.Filters()),
        ("waiting, appeals only", queue.Filters(kind="appeal")),
        ("waiting, Telegram only", queue.Filters(channel="telegram")),
    ):
        times, size, cold = timed(listing(filters), n)
        results[f"queue: {name}"] = row(f"  {name}", times, size, cold, baseline)
    print("full-text search")
    searches = (
        ("a case ID, in the queue", queue.Filters(search=sample["id"])),
        ("a customer's address, in the queue", queue.Filters(search=sample["contact"])),
        ("'timeout' (common), in the queue", queue.Filters(search="timeout")),
        ("'扣了两次' (Chinese), in the queue", queue.Filters(search="扣了两次")),
        ("'退款' (2 chars: LIKE), in the queue", queue.Filters(search="退款")),
        ("an old case ID, all cases", queue.Filters(status=None, search=old["id"])),
        ("an old customer's address, all cases", queue.Filters(status=None, search=old["contact"])),
        ("'扣了两次' (Chinese), all cases", queue.Filters(status=None, search="扣了两次")),
    )
    for name, filters in searches:
        times, size, cold = timed(listing(filters), n)
        results[f"search: {name}"] = row(f"  {name}", times, size, cold, baseline)

    if not args.no_http:
        results.update(console(desk, folder, settings, sample, old, n, baseline))
    db.conn.close()
    print()
    missed = [name for name, ok in results.items() if not ok]
    print(f"target p95 < {TARGET * 1000:.0f} ms: {len(results) - len(missed)} of {len(results)} met" + (f"; missed: {'; '.join(missed)}" if missed else ""))


def console(desk, folder: Path, settings: dict, sample: dict, old: dict, n: int, baseline: float) -> dict[str, bool]:
    import httpx

    from refunddesk.review.agents import add
    from refunddesk.store.clock import utcnow

    db = desk.open_db()
    if not db.execute("SELECT 1 FROM agents WHERE name = 'bench'").fetchone():
        add(db, "bench", "bench-password-123", utcnow(), "bench")
    db.conn.close()
    serve = c.Serve(folder, settings)
    results: dict[str, bool] = {}
    try:
        serve.start(wait_ports=(settings["console.port"],))
        with httpx.Client(base_url=f"http://127.0.0.1:{settings['console.port']}", timeout=300) as client:
            form = client.get("/login").text
            token = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
            signed = client.post("/login", data={"name": "bench", "password": "bench-password-123", "csrf": token, "next": "/queue"})
            if signed.status_code != 303:
                raise RuntimeError(f"login failed: {signed.status_code}")
            print("console over HTTP (GET, signed in; sizes in KB)")
            for name, params in (
                ("/queue (waiting for review)", {}),
                ("/queue?q=<case ID>", {"q": sample["id"]}),
                ("/queue?q=扣了两次", {"q": "扣了两次"}),
                ("/queue?status=all&q=<old customer's address>", {"status": "all", "q": old["contact"]}),
            ):
                def get(params=params):
                    response = client.get("/queue", params=params)
                    response.raise_for_status()
                    return response.content

                times, size, cold = timed(get, n)
                results[f"console: {name}"] = row(f"  {name}", times, size // 1024, cold, baseline)
    finally:
        serve.stop()
    return results


if __name__ == "__main__":
    main()
