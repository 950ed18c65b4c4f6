"""Memory: peak RSS of `refunddesk serve` during a burst of mails with 20 MB attachments.

The real `refunddesk serve` (SMTP intake; its size limit raised to fit the mails: a 20 MB
attachment is ~27 MB once base64-encoded) gets a burst of customer mails, each with a 20 MB
screenshot, from several SMTP clients at once; every mail must become a case. Reported from
/proc/PID/status, summed over serve and its child processes (the worker): VmRSS of the idle
service (the baseline, after one small mail warmed it up), the sum of each process's VmHWM
(its peak resident set; the sum is an upper bound of the service's peak), and the highest
sum of VmRSS sampled every 50 ms.

    python bench/memory.py                                  # 10 mails, 5 clients at once
    python bench/memory.py --mails 30 --clients 10 --attachment-mb 20

Target (issue 7): peak under 300 MB.
"""
from __future__ import annotations

import argparse
import asyncio
import threading
import time

import _common as c

TARGET_MB = 300


def big_mail(n: int, megabytes: float) -> tuple[str, str, bytes]:
    screenshot = c.screenshot_png(int(megabytes * 1024 * 1024), seed=n)
    return c.customer_mail(n, screenshot, html=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=10, help="mails in the burst (default 10)")
    parser.add_argument("--clients", type=int, default=5, help="SMTP clients sending at once (default 5)")
    parser.add_argument("--attachment-mb", type=float, default=20, help="attachment size in MiB (default 20)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the cases")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (store, logs)")
    c.add_workers_option(parser)
    args = parser.parse_args()

    c.header("Memory: peak RSS of serve during a burst of large mails")
    print(f"preparing {args.mails} mails with a {args.attachment_mb:g} MiB attachment ...")
    mails = [big_mail(n, args.attachment_mb) for n in range(args.mails)]
    largest = max(len(m[2]) for m in mails)
    limit = max(25 * 1024 * 1024, largest + 1024 * 1024)
    folder = c.scratch("memory", args.keep)
    relay, relay_port = c.start_sink_process(folder)
    settings = c.base_settings(
        folder,
        **{
            "email.smtp_intake.enabled": True,
            "email.smtp_intake.max_message_bytes": limit,
            "email.outgoing.host": "127.0.0.1",
            "email.outgoing.port": relay_port,
            "worker.processes": args.workers,
        },
    )
    serve = c.Serve(folder, settings)
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    try:
        serve.start(wait_ports=(settings["email.smtp_intake.port"],))
        port = settings["email.smtp_intake.port"]
        db = serve.db()
        asyncio.run(c.smtp_clients(port, [c.sized_mail(999_999)], 1))
        c.wait_for(lambda: db.execute("SELECT count(*) FROM outbox WHERE kind = 'ack' AND status = 'sent'").fetchone()[0] >= 1, 60, 0.05, "the warm-up mail's acknowledgement")
        time.sleep(1.0)
        idle = c.tree_status(serve.pid)

        def sample() -> None:
            while not stop.is_set():
                try:
                    samples.append((time.monotonic(), c.tree_status(serve.pid)["VmRSS"]))
                except (OSError, KeyError):
                    return
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        began = time.monotonic()
        _, accepted_at, refused = asyncio.run(c.smtp_clients(port, mails, args.clients))
        c.wait_for(lambda: db.execute("SELECT count(*) FROM inbound WHERE status != 'pending'").fetchone()[0] >= args.mails + 1 or serve.died(), args.timeout, 0.1, "every mail processed")
        done_at = time.monotonic()
        time.sleep(0.5)
        stop.set()
        sampler.join(5)
        peak = c.tree_status(serve.pid)
        serve_pid = serve.pid
        members = [(pid, c.vm_status(pid)) for pid in c.process_tree(serve_pid)]
        (cases,) = db.execute("SELECT count(*) FROM cases").fetchone()
        (files,) = db.execute("SELECT count(*) FROM evidence WHERE size > 1000000").fetchone()
        (dead,) = db.execute("SELECT count(*) FROM inbound WHERE status = 'dead'").fetchone()
        db.close()
        errors = serve.errors()
    finally:
        stop.set()
        serve.stop()
        c.stop_process(relay)
    if errors or refused or dead:
        print(f"WARNING: {refused} refused, {dead} dead letters, {len(errors)} error lines in serve's log", *errors[:5], sep="\n  ")
    mb = lambda kib: kib / 1024  # noqa: E731
    print(f"{args.mails} mails of {largest / 1e6:.1f} MB from {args.clients} clients: accepted in {accepted_at - began:.1f} s, processed in {done_at - began:.1f} s; {cases - 1} cases, {files} large evidence files")
    print()
    print(f"{'':40}{'MB':>8}")
    print(f"{'idle serve, VmRSS (baseline)':40}{mb(idle['VmRSS']):8.0f}")
    print(f"{'peak during the burst, sum of VmHWM':40}{mb(peak['VmHWM']):8.0f}   {peak['VmHWM'] / idle['VmRSS']:.1f} x idle")
    for pid, status in members:
        role = "serve" if pid == serve_pid else "child"
        print(f"{f'  {role} {pid}, VmHWM':40}{mb(status.get('VmHWM', 0)):8.0f}")
    print(f"{'highest sampled VmRSS':40}{mb(max(kib for _, kib in samples)) if samples else float('nan'):8.0f}")
    print(f"{'VmRSS after the burst':40}{mb(peak['VmRSS']):8.0f}")
    if samples and __import__("os").environ.get("BENCH_TIMELINE"):
        t0 = samples[0][0]
        print(" ".join(f"{t - t0:.1f}s:{kib // 1024}" for t, kib in samples[::10]))
    print(f"target: peak < {TARGET_MB} MB: {c.verdict(mb(peak['VmHWM']) < TARGET_MB and cases - 1 == args.mails)}")


if __name__ == "__main__":
    main()
