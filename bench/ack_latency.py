"""Acknowledgement latency: from our 250 to the acknowledgement arriving at the outgoing relay.

Customers' mail (~20 KB, with a screenshot) arrives at a steady rate (open loop: mail i is sent
at start + i/rate whatever happened before) at the real `refunddesk serve`, whose
email.outgoing points at a recording relay (an aiosmtpd in this process). For every mail the
time between the 250 we gave and the relay receiving the acknowledgement that answers it
(matched by In-Reply-To) is recorded. Baseline, same run: the relay's own round trip, i.e. one
delivery of an acknowledgement-sized letter to the relay over an open SMTP session, as our
sender keeps a few open between letters, at the same rate.

    python bench/ack_latency.py                       # 50 mails/s for 30 s
    python bench/ack_latency.py --rate 100 --seconds 120

Target (issue 7): p99 under 1 s at 50 mails/s.
"""
from __future__ import annotations

import argparse
import asyncio
import time

import _common as c

ACK_SIZED = (
    b"From: refunds@desk.test\r\nTo: customer@example.test\r\nSubject: Re: Refund request [RF-000001]\r\n"
    b"Auto-Submitted: auto-replied\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + b"We received your request.\r\n" * 60
)


async def open_loop(port: int, rate: float, count: int, connections: int, send_one) -> tuple[list[float], float]:
    """Call send_one(index, smtp) at start + index/rate on one of `connections` pooled clients;
    returns how late each send started, and the start time."""
    import aiosmtplib

    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(None)
    lateness: list[float] = []
    tasks = []
    start = time.monotonic() + 0.05

    async def one(index: int) -> None:
        smtp = await pool.get()
        lateness.append(time.monotonic() - (start + index / rate))
        try:
            if smtp is None:
                smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60)
                await smtp.connect()
            smtp = await send_one(index, smtp)
        finally:
            pool.put_nowait(smtp)

    for index in range(count):
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        smtp = pool.get_nowait()
        if smtp is not None and smtp.is_connected:
            await smtp.quit()
    return lateness, start


def relay_round_trips(relay_port: int, rate: float, count: int) -> list[float]:
    """The baseline: one letter over an open session, as our sender sends on the sessions it keeps."""
    times: list[float] = []

    async def send_one(index: int, smtp):
        began = time.monotonic()
        await smtp.sendmail(c.REFUNDS, [f"customer{index}@example.test"], ACK_SIZED)
        times.append(time.monotonic() - began)
        return smtp

    asyncio.run(open_loop(relay_port, rate, count, 20, send_one))
    return times


def measure(args) -> dict:
    folder = c.scratch("ack", args.keep)
    recorder = c.RecordingHandler()
    relay_port = c.free_port()
    relay = c.smtp_controller(recorder, relay_port)
    relay.start()
    settings = c.base_settings(
        folder,
        **{"email.smtp_intake.enabled": True, "email.outgoing.host": "127.0.0.1", "email.outgoing.port": relay_port},
    )
    serve = c.Serve(folder, settings)
    try:
        count = int(args.rate * args.seconds)
        warmup_count = int(args.rate * 3)
        print(f"preparing {count + warmup_count} mails ...")
        mails = [c.sized_mail(n, args.size) for n in range(count + warmup_count)]
        baseline = relay_round_trips(relay_port, args.rate, min(count, int(args.rate * 10)))
        with recorder.lock:
            recorder.arrivals.clear()
        serve.start(wait_ports=(settings["email.smtp_intake.port"],))
        port = settings["email.smtp_intake.port"]
        accepted: dict[str, float] = {}
        refused = 0

        def sender_for(batch):
            async def send_one(index: int, smtp):
                nonlocal refused
                sender, message_id, raw = batch[index]
                try:
                    await smtp.sendmail(sender, [c.REFUNDS], raw)
                except Exception:
                    refused += 1
                    return None
                accepted[message_id] = time.monotonic()
                return smtp
            return send_one

        warmup = mails[:warmup_count]
        asyncio.run(open_loop(port, args.rate, len(warmup), args.connections, sender_for(warmup)))
        measured = mails[warmup_count:]
        print(f"sending {len(measured)} mails at {args.rate:g}/s over {args.connections} connections ...")
        lateness, _ = asyncio.run(open_loop(port, args.rate, len(measured), args.connections, sender_for(measured)))
        wanted = {m[1] for m in measured}
        deadline = time.monotonic() + args.timeout
        with recorder.lock:
            while not wanted <= recorder.arrivals.keys() and time.monotonic() < deadline:
                recorder.changed.wait(0.5)
            arrivals = dict(recorder.arrivals)
        latencies = [arrivals[m] - accepted[m] for m in wanted if m in arrivals and m in accepted]
        missing = len(wanted) - len(latencies)
        errors = serve.errors()
    finally:
        serve.stop()
        relay.stop()
    if errors or refused:
        print(f"WARNING: {refused} refused, {len(errors)} error lines in serve's log", *errors[:5], sep="\n  ")
    return {"latencies": latencies, "missing": missing, "baseline": baseline, "late": max(lateness)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50, help="mails per second (default 50)")
    parser.add_argument("--seconds", type=float, default=30, help="measured seconds of load (default 30)")
    parser.add_argument("--connections", type=int, default=20, help="SMTP connections the senders share (default 20)")
    parser.add_argument("--size", type=int, default=20_000, help="bytes per mail (default 20000)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for the last acknowledgement")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (store, logs)")
    args = parser.parse_args()

    c.header("Acknowledgement latency (250 -> acknowledgement at the relay)")
    result = measure(args)
    ours, base = result["latencies"], result["baseline"]
    print(f"senders were at most {result['late'] * 1000:.0f} ms behind the schedule; {result['missing']} acknowledgements missing")
    print()
    print(f"{'':34}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for name, values in (("relay round trip (baseline)", base), ("serve: 250 -> ack at the relay", ours)):
        print(f"{name:34}{len(values):6d}" + "".join(f"{c.percentile(values, p) * 1000:10.1f}" for p in (50, 95, 99, 100)))
    p99 = c.percentile(ours, 99)
    ratio = p99 / c.percentile(base, 99)
    ok = p99 < 1.0 and result["missing"] == 0
    print(f"p99 {p99 * 1000:.0f} ms = {ratio:.1f} x the relay's own p99; target p99 < 1000 ms at {args.rate:g} mails/s: {c.verdict(ok)}")


if __name__ == "__main__":
    main()
