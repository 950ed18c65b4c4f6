"""Issue 21's attacks at full size against the real `refunddesk serve`, one fresh serve each.

For each attack: the peak resident size (VmHWM) of serve and of its worker, the CPU seconds
they spent on it, the wall time of the outcome, and the outcome. The baseline, measured in the
same run, is an ordinary customer mail: its time from the 250 to its case, and the peaks of a
serve that received only it; each attack's time is printed as a ratio to it.

    python bench/hostile.py            # every attack
    python bench/hostile.py --only html,plain

The tests (tests/test_hostile_mail.py, test_smtp_bounded.py, test_console_logins.py,
test_telegram_poison.py) assert the same outcomes scaled down; docs/reliability.md holds the table.
"""

from __future__ import annotations

import argparse
import base64
import smtplib
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import REFUNDS, Serve, base_settings, header, port_open, process_tree, scratch, vm_status, wait_for

MB = 2**20
TICKS = 100  # /proc's clock ticks per second (SC_CLK_TCK on Linux)


def mail(
    sender: str, subject: str = "Refund", body: str = "Please refund 5 USD charged on 2026-12-01.", extra: str = ""
) -> bytes:
    return (
        f"From: {sender}\r\nTo: {REFUNDS}\r\nSubject: {subject}\r\nMessage-ID: <{uuid.uuid4().hex}@customer.test>\r\n"
        f"{extra}\r\n{body}\r\n"
    ).encode()


def send(port: int, raw: bytes, sender: str) -> str:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=600) as client:
            client.sendmail(sender, [REFUNDS], raw)
        return "250"
    except smtplib.SMTPResponseException as exc:
        return f"{exc.smtp_code}"
    except (smtplib.SMTPException, OSError) as exc:
        return type(exc).__name__


def at_once(work: Callable[[int], None], count: int, timeout: float = 1800) -> float:
    """`work(0)` ... `work(count - 1)` in threads started together; the seconds until all ended."""
    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return time.monotonic() - started


class Desk:
    """A fresh serve in a scratch folder, with its worker's pid and the store to read."""

    def __init__(self, name: str, **settings: Any) -> None:
        self.folder = scratch(name)
        self.port = settings.setdefault("email.smtp_intake.port", base_settings(self.folder)["email.smtp_intake.port"])
        self.settings = base_settings(self.folder, **{"email.smtp_intake.enabled": True, **settings})
        self.serve = Serve(self.folder, self.settings).start(wait_ports=(self.port,))
        self.worker = wait_for(self.find_worker, 30, 0.05, "the worker")
        self.cpu_start = self.cpu()

    def find_worker(self) -> int | None:
        for pid in process_tree(self.serve.pid)[1:]:
            try:
                if b"refunddesk.worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return pid
            except OSError:
                continue
        return None

    def cpu(self) -> dict[str, float]:
        found = {}
        for name, pid in (("serve", self.serve.pid), ("worker", self.worker)):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            found[name] = (int(fields[11]) + int(fields[12])) / TICKS
        return found

    def peaks(self) -> dict[str, float]:
        return {
            name: vm_status(pid)["VmHWM"] / 1024 for name, pid in (("serve", self.serve.pid), ("worker", self.worker))
        }

    def rows(self) -> list[tuple]:
        with self.serve.db() as db:
            return db.execute("SELECT id, status, case_id, error FROM inbound ORDER BY id").fetchall()

    def settled(self, count: int, timeout: float = 1800) -> list[tuple]:
        return wait_for(
            lambda: (r := self.rows()) and len(r) >= count and all(x[1] != "pending" for x in r) and r,
            timeout,
            0.05,
            f"{count} messages processed",
        )

    def report(self, name: str, seconds: float, outcome: str, baseline: float | None) -> dict[str, Any]:
        peaks, cpu = self.peaks(), self.cpu()
        spent = {k: cpu[k] - self.cpu_start[k] for k in cpu}
        ratio = f"{seconds / baseline:8.1f}x" if baseline else "        -"
        print(
            f"  {name:<44} serve {peaks['serve']:6.0f} MB  worker {peaks['worker']:6.0f} MB  "
            f"cpu serve {spent['serve']:6.2f} s worker {spent['worker']:6.2f} s  {seconds:7.2f} s {ratio}  {outcome}",
            flush=True,
        )
        self.serve.stop()
        return {
            "name": name,
            **peaks,
            **{f"cpu_{k}": v for k, v in spent.items()},
            "seconds": seconds,
            "outcome": outcome,
        }


def ordinary() -> float:
    desk = Desk("ordinary")
    started = time.monotonic()
    send(desk.port, mail("ordinary@customer.test"), "ordinary@customer.test")
    desk.settled(1)
    seconds = time.monotonic() - started
    desk.report("baseline: one ordinary mail", seconds, "case made", None)
    return seconds


def one_mail(name: str, raw: bytes, baseline: float, **settings: Any) -> None:
    desk = Desk(name, **settings)
    started = time.monotonic()
    answer = send(desk.port, raw, "hostile@customer.test")
    rows = desk.settled(1) if answer == "250" else []
    seconds = time.monotonic() - started
    outcome = f"{answer}, " + (f"{rows[0][1]} {rows[0][2] or rows[0][3] or ''}" if rows else "nothing stored")
    desk.report(name, seconds, outcome, baseline)


def encoded_words(words: int) -> bytes:
    subject = "\r\n ".join("=?utf-8?q?a=C3=A9?=" for _ in range(words))
    return mail("hostile@customer.test", subject)


def nested_html(depth: int) -> bytes:
    body = "<div>" * depth + "Please refund 7 USD" + "</div>" * depth
    return mail(
        "hostile@customer.test", body=body, extra="MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
    )


def plain(size: int) -> bytes:
    lines = ["I was charged 12 USD twice on 2026-12-01, please refund."]
    lines += [f"log line {i}: request failed with status 500 at node {i % 97}" for i in range(size // 60)]
    return mail("hostile@customer.test", body="\r\n".join(lines))


def largest() -> bytes:
    """The largest mail intake accepts (email.smtp_intake.max_message_bytes, 25 MiB): a request with
    an attachment filling the rest, as a customer's screen recording would."""
    attachment = base64.encodebytes(b"\x17" * (18 * MB)).decode()  # 24.3 MiB as sent
    return mail(
        "hostile@customer.test",
        body=f"--b\r\nContent-Type: text/plain\r\n\r\nPlease refund 5 USD.\r\n"
        f"--b\r\nContent-Type: video/mp4; name=recording.mp4\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{attachment}--b--",
        extra="MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n",
    )


def folded_header_then_ordinary(baseline: float) -> None:
    """A header folded over 1,000,000 lines (4 MB; refused in its DATA reply), and an ordinary
    mail sent 3 s after it starts: the ordinary mail's delay from its send to its case."""
    desk = Desk("folded")
    hostile = mail("hostile@customer.test", extra="X-Junk: a\r\n" + " x\r\n" * 1_000_000)
    answers: list[str] = []
    thread = threading.Thread(target=lambda: answers.append(send(desk.port, hostile, "hostile@customer.test")))
    thread.start()
    time.sleep(3)  # the benchmark's scenario: the ordinary mail comes 3 s into the hostile one
    started = time.monotonic()
    send(desk.port, mail("after@customer.test"), "after@customer.test")
    wait_for(lambda: any(r[2] for r in desk.rows()), 600, 0.02, "the ordinary mail's case")
    seconds = time.monotonic() - started
    thread.join(600)
    desk.report(
        "header folded over 1,000,000 lines",
        seconds,
        f"hostile {answers[0] if answers else '?'}; ordinary case after {seconds:.2f} s",
        baseline,
    )


def parallel_large(baseline: float, count: int = 150, size: int = 10 * MB) -> None:
    desk = Desk("parallel", **{"email.smtp_intake.max_connections_per_client": count})
    raw = base64.encodebytes(b"\x00" * (size * 3 // 4))
    answers: list[str] = []
    lock = threading.Lock()

    def one(n: int) -> None:
        answer = send(desk.port, mail(f"big{n}@customer.test", body=raw.decode()), f"big{n}@customer.test")
        with lock:
            answers.append(answer)

    seconds = at_once(one, count)
    accepted = answers.count("250")
    stored = len(desk.rows())
    desk.report(
        f"{count} parallel {size // MB} MB DATA without SIZE",
        seconds,
        f"{accepted} accepted, {stored} stored",
        baseline,
    )


def slow_holder(baseline: float) -> None:
    desk = Desk("holder")
    holder = socket.create_connection(("127.0.0.1", desk.port))
    stream = holder.makefile("rb")
    stream.readline()
    for line in (
        b"EHLO slow.test\r\n",
        b"MAIL FROM:<slow@customer.test> SIZE=2000000\r\n",
        f"RCPT TO:<{REFUNDS}>\r\n".encode(),
        b"DATA\r\n",
    ):
        holder.sendall(line)
        while stream.readline()[3:4] == b"-":  # a multi-line reply's last line has a space there
            pass
    holder.sendall(b"Subject: slow\r\n\r\nx")
    started = time.monotonic()
    answer = send(desk.port, plain(3 * MB), "honest@customer.test")
    seconds = time.monotonic() - started
    holder.close()
    desk.report(
        "slow holder, then an honest 3 MB mail", seconds, f"honest mail {answer} after {seconds:.2f} s", baseline
    )


def logins(baseline: float, count: int = 40) -> None:
    import re

    import httpx

    console = base_settings(scratch("logins-port"))["console.port"]
    desk = Desk("logins", **{"console.enabled": True, "console.port": console})
    from refunddesk.config import load
    from refunddesk.desk import Desk as RealDesk
    from refunddesk.review import agents
    from refunddesk.store.clock import utcnow

    real = RealDesk.from_config(load(desk.serve.config, environ={}))
    db = real.open_db()
    agents.add(db, "alice", "correct horse battery staple", utcnow(), "bench")
    db.conn.close()
    wait_for(lambda: port_open(console), 30, 0.05, "the console")
    token = re.compile(r'name="csrf" value="([^"]+)"')
    statuses: list[int] = []

    def guess(n: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{console}", timeout=120) as http:
            csrf = token.search(http.get("/login").text).group(1)
            statuses.append(
                http.post("/login", data={"name": "alice", "password": f"guess {n}", "csrf": csrf}).status_code
            )

    seconds = at_once(guess, count)
    with desk.serve.db() as conn:
        counted = conn.execute(
            "SELECT count(*) FROM events WHERE action IN ('login_failed', 'login_throttled')"
        ).fetchone()[0]
    desk.report(
        f"{count} concurrent wrong logins",
        seconds,
        f"{statuses.count(401)} checked, {statuses.count(429)} refused, {counted} counted",
        baseline,
    )


ATTACKS: dict[str, Callable[[float], None]] = {
    "encoded": lambda b: (
        one_mail("Subject of 12,000 encoded-words (264 KB)", encoded_words(12_000), b),
        one_mail("Subject of 40,000 encoded-words (880 KB)", encoded_words(40_000), b),
    ),
    "html": lambda b: one_mail("<div> nested 100,000 deep (1.1 MB)", nested_html(100_000), b),
    "plain": lambda b: one_mail("10 MB of plain text", plain(10 * MB), b),
    "largest": lambda b: one_mail("the largest mail accepted (24.3 MiB)", largest(), b),
    "folded": folded_header_then_ordinary,
    "parallel": parallel_large,
    "holder": slow_holder,
    "logins": logins,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help=f"comma-separated, of: {', '.join(ATTACKS)}")
    args = parser.parse_args()
    chosen = [a for a in args.only.split(",") if a] or list(ATTACKS)
    header("hostile input at full size, one fresh serve per attack")
    baseline = ordinary()
    for name in chosen:
        ATTACKS[name](baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
