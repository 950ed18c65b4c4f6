"""Issue 6 item 8: hostile mail through the real `refunddesk serve`, over SMTP.

Each hostile mail is refused (a dead letter that keeps its raw bytes, and one polite notice) or
stored safely, within a few seconds and with the service's memory bounded: the peak resident
size of the serve process (VmHWM from /proc) is read before and after, and the parser's own
peak allocation is measured in-process with tracemalloc. Files land only under `store.files`
with names we generate, and every letter we send carries exactly our headers.

SMTP smuggling and a slow-drip client are tested on the wire with raw sockets. The slow drip's
cut-off is shown in-process with the receiver's command timeout scaled from 120 s to 1 s.
"""
from __future__ import annotations

import base64
import io
import re
import select
import smtplib
import struct
import tempfile
import threading
import time
import tracemalloc
import unicodedata
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import wait_for
from mail_fixtures import PNG, REFUNDS, MailDesk, Wire, desk_from, letter, mail_settings, send, module_relay  # noqa: F401 (fixture: one relay per module)
from processes import tree_status
from refunddesk.intake.email import smtp as smtp_module
from refunddesk.intake.email.parse import MailRejected, parse_mail
from refunddesk.intake.email.receiving import SPILL_AT
from refunddesk.intake.email.smtp import start_receiver
from refunddesk.store.clock import utcnow
from refunddesk.store.evidence import relative_path

SECONDS = 5.0                       # "within a few seconds": spooled to processed
RSS_GROWTH_LIMIT = 150 * 2**20      # the serve process's peak resident size may grow by this much
PARSE_PEAK_LIMIT = 64 * 2**20       # the parser's own peak allocation for one hostile mail
ABSOLUTE = Path(tempfile.gettempdir()) / f"refunddesk-absolute-{uuid.uuid4().hex}.png"
AUTOMATIC_HEADERS = {
    "From", "To", "Subject", "Date", "Message-ID", "In-Reply-To", "References", "Reply-To",
    "Auto-Submitted", "X-Auto-Response-Suppress", "X-Loop", "MIME-Version", "Content-Type",
    "Content-Transfer-Encoding", "Content-Language",
}
MEASURED: dict[str, dict] = {}


def head(sender: str, subject: str, extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: {REFUNDS}\r\nSubject: {subject}\r\nMessage-ID: <{uuid.uuid4().hex}@customer.test>\r\n"
            f"MIME-Version: 1.0\r\n{extra}").encode()


def many_parts(sender: str, count: int = 10_000) -> bytes:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(count))
    return head(sender, "ten thousand parts", "Content-Type: multipart/mixed; boundary=b\r\n\r\n") + parts + b"--b--\r\n"


def deep_multipart(sender: str, depth: int = 1000) -> bytes:
    nested = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(depth))
    return head(sender, "deep multipart") + nested + b"Content-Type: text/plain\r\n\r\nbottom\r\n"


def deep_forward(sender: str, depth: int = 1000) -> bytes:
    """A forward of a forward of ... (message/rfc822 in message/rfc822), 1,000 levels deep."""
    inner = b"From: a@customer.test\r\nSubject: bottom\r\n\r\nhello\r\n"
    for _ in range(depth):
        inner = b"From: a@customer.test\r\nSubject: Fwd\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n" + inner
    return head(sender, "deep forward", "Content-Type: message/rfc822\r\n\r\n") + inner


def padded_deep_forward(sender: str) -> bytes:
    """The same nesting after 4 MB of text, past the window of the cheap pre-parse scan."""
    padding = b"--p\r\nContent-Type: text/plain\r\n\r\n" + (b"x" * 998 + b"\r\n") * 4096 + b"--p\r\nContent-Type: message/rfc822\r\n\r\n"
    inner = deep_forward(sender).split(b"\r\n\r\n", 1)[1]
    return head(sender, "padded deep forward", "Content-Type: multipart/mixed; boundary=p\r\n\r\n") + padding + inner + b"\r\n--p--\r\n"


def zip_bomb() -> bytes:
    """Ten 100 MiB files of zeros, each zipped, zipped together: 1 GiB unpacked, 1 MB on the wire."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("zeros.bin", "w", force_zip64=True) as handle:
            for _ in range(100):
                handle.write(bytes(1 << 20))
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_STORED) as archive:
        for index in range(10):
            archive.writestr(f"logs-{index}.zip", inner.getvalue())
    return outer.getvalue()


def huge_png() -> bytes:
    """A valid PNG header that claims 30000 x 30000 pixels (3.6 GB decoded), 200 bytes long."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(120_001))) + chunk(b"IEND", b"")


def attachment_mail(sender: str, subject: str, files: list[tuple[str, str, bytes]]) -> bytes:
    """Attachments with the Content-Disposition header exactly as given (hostile names included)."""
    body = b"--f\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe call froze and credit was deducted. Amount: 2 USD\r\n"
    for disposition, content_type, data in files:
        body += (f"--f\r\nContent-Type: {content_type}\r\nContent-Disposition: {disposition}\r\n"
                 "Content-Transfer-Encoding: base64\r\n\r\n").encode() + base64.encodebytes(data).replace(b"\n", b"\r\n")
    return head(sender, subject, "Content-Type: multipart/mixed; boundary=f\r\n\r\n") + body + b"--f--\r\n"


HOSTILE_NAMES = [
    ('attachment; filename="../../../../../../etc/cron.d/refunddesk-evil"', "refunddesk-evil"),
    (f'attachment; filename="{ABSOLUTE}"', ABSOLUTE.name),
    ('attachment; filename="..\\\\..\\\\..\\\\windows\\\\win.ini"', "win.ini"),
    ("attachment; filename*=utf-8''a%00b%00.png", None),
    ("attachment; filename*=utf-8''invoice%E2%80%AEgnp.exe", None),
    ('attachment; filename=".htaccess"', "htaccess"),
    ('attachment; filename="' + "x" * 5000 + '.png"', None),
]


def encoded(text: str) -> str:
    return "=?utf-8?B?" + base64.b64encode(text.encode()).decode() + "?="


def crlf_mail(sender: str) -> bytes:
    return (
        f"From: {encoded('Eve' + chr(13) + chr(10) + 'Bcc: victim@evil.test')} <{sender}>\r\n"
        f"To: {REFUNDS}\r\n"
        f"Subject: {encoded('refund' + chr(13) + chr(10) + 'Bcc: victim@evil.test' + chr(13) + chr(10) + 'X-Injected: yes')}\r\n"
        "Message-ID: <crlf-1@customer.test>\r\n"
        f"In-Reply-To: {encoded('<x@y>' + chr(13) + chr(10) + 'Bcc: victim@evil.test')}\r\n"
        "References: <ok@customer.test>\r\n\tBcc: victim@evil.test\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "The call froze and credit was deducted.\r\nAccount ID: u_1\r\nBcc: victim@evil.test\r\n"
    ).encode() + b"Subject: second\rBcc: victim@evil.test\r\n"


@dataclass
class Hostile:
    name: str
    sender: str
    build: object
    refused: bool


HOSTILE = [
    Hostile("10,000 MIME parts", "parts@customer.test", many_parts, True),
    Hostile("1,000-deep multipart nesting", "nested@customer.test", deep_multipart, True),
    Hostile("1,000-deep forwarded mail nesting", "forwards@customer.test", deep_forward, True),
    Hostile("the same after 4 MB of padding", "padded@customer.test", padded_deep_forward, True),
    Hostile("zip bomb (1 GiB in 1 MB)", "zipbomb@customer.test",
            lambda s: attachment_mail(s, "logs", [('attachment; filename="logs.zip"', "application/zip", zip_bomb())]), False),
    Hostile("30000x30000 PNG", "bigpng@customer.test",
            lambda s: attachment_mail(s, "screenshot", [('attachment; filename="shot.png"', "image/png", huge_png())]), False),
    Hostile("hostile attachment names", "names@customer.test",
            lambda s: attachment_mail(s, "files", [(d, "image/png", PNG + bytes([i])) for i, (d, _) in enumerate(HOSTILE_NAMES)]), False),
    Hostile("CR/LF in headers we could echo", "crlf@customer.test", crlf_mail, False),
]


# --- the service ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory, relay):
    tmp = tmp_path_factory.mktemp("hostile")
    desk = MailDesk(tmp, mail_settings(tmp, relay, **{"email.auto_reply_limit": 100})).start()
    desk.send(letter("warm-up@customer.test", "Refund", "My call froze.", files=(("a.png", PNG, "image/png"),)), "warm-up@customer.test")
    desk.settled(1)
    relay.wait_for("warm-up@customer.test")
    desk.tmp = tmp
    desk.hwm_start = memory_of(desk.served.process.pid)["VmHWM"]
    yield desk
    desk.stop()
    print_measurements()


def memory_of(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident size) of serve and its worker process, summed, in bytes."""
    return {key: kib * 1024 for key, kib in tree_status(pid).items()}


def deliver_and_wait(served: MailDesk, raw: bytes, sender: str) -> tuple[dict, float]:
    (last,) = served.db.execute("SELECT coalesce(max(id), 0) FROM inbound").fetchone()
    started = time.monotonic()
    assert served.send(raw, sender) == {}

    def finished():
        rows = list(served.db.query("SELECT id, status, error, case_id, raw FROM inbound WHERE id > ?", [last]))
        return rows if rows and rows[0]["status"] != "pending" else None

    (row,) = wait_for(finished, timeout=30, interval=0.01, message="the hostile mail processed")
    return row, time.monotonic() - started


def parse_cost(served: MailDesk, raw: bytes) -> tuple[float, int, str]:
    """Time and peak allocation of the parser alone, in this process."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        parse_mail(raw, {"mail_from": "x@customer.test", "rcpt_tos": [REFUNDS]}, served.desk.addresses, utcnow())
        outcome = "parsed"
    except MailRejected as exc:
        outcome = f"refused: {exc}"
    elapsed = time.monotonic() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return elapsed, peak, outcome


def assert_only_our_headers(received, customer: str, kind: str) -> None:
    msg = received.message
    names = [k for k in msg.keys()]
    assert set(names) <= AUTOMATIC_HEADERS and len(names) == len(set(names)), names
    assert received.rcpt_tos == [customer] and received.mail_from == REFUNDS
    assert msg["To"] == customer and msg["From"] == REFUNDS
    assert msg["Auto-Submitted"] == "auto-replied" and msg["X-Loop"] == REFUNDS
    for name in names:
        assert "\r" not in str(msg[name]) and "\n" not in str(msg[name])
    if kind == "refused":
        assert msg["Subject"] == "We could not read your message"
    else:
        assert re.fullmatch(r"\[RF-\d{6}\] We received your refund request", msg["Subject"]), msg["Subject"]
        assert re.fullmatch(r"refunds\+RF-\d{6}@desk\.test", msg["Reply-To"])


@pytest.mark.parametrize("hostile", HOSTILE, ids=[h.name for h in HOSTILE])
def test_hostile_mail_is_refused_or_stored_safely_in_seconds_and_bounded_memory(served, relay, hostile):
    raw = hostile.build(hostile.sender)
    parse_seconds, parse_peak, outcome = parse_cost(served, raw)
    assert parse_peak < PARSE_PEAK_LIMIT, f"{hostile.name}: parser peak {parse_peak} bytes"
    if hostile.refused and len(raw) <= SPILL_AT:
        # Refused in the DATA reply (issue 21 item 7): the sender's MTA bounces it with the reason;
        # nothing is stored and no letter of ours goes out for it. (The receiver checks a large
        # mail's structure on its first megabyte only; the worker refuses the rest, below.)
        assert outcome.startswith("refused: ")  # parse_mail refuses, it does not crash
        (last,) = served.db.execute("SELECT coalesce(max(id), 0) FROM inbound").fetchone()
        started = time.monotonic()
        with pytest.raises(smtplib.SMTPDataError) as refused:
            served.send(raw, hostile.sender)
        seconds = time.monotonic() - started
        memory = memory_of(served.served.process.pid)
        MEASURED[hostile.name] = {"size": len(raw), "seconds": seconds, "parse_seconds": parse_seconds, "parse_peak": parse_peak,
                                  "rss_peak": memory["VmHWM"], "outcome": "refused in DATA"}
        assert refused.value.smtp_code == 554 and refused.value.smtp_error.startswith(b"5.6.0 Message refused: ")
        assert outcome.removeprefix("refused: ").encode() in refused.value.smtp_error
        assert seconds < SECONDS and memory["VmHWM"] - served.hwm_start < RSS_GROWTH_LIMIT, (seconds, memory)
        assert served.db.execute("SELECT count(*) FROM inbound WHERE id > ?", [last]).fetchone()[0] == 0
        assert relay.to(hostile.sender) == []
        return
    row, seconds = deliver_and_wait(served, raw, hostile.sender)
    memory = memory_of(served.served.process.pid)
    MEASURED[hostile.name] = {"size": len(raw), "seconds": seconds, "parse_seconds": parse_seconds, "parse_peak": parse_peak, "rss_peak": memory["VmHWM"], "outcome": row["status"]}
    assert seconds < SECONDS, f"{hostile.name}: {seconds:.2f} s"
    assert memory["VmHWM"] - served.hwm_start < RSS_GROWTH_LIMIT, memory
    assert row["raw"] == raw  # whatever became of it, the raw bytes are kept
    if hostile.refused:
        assert outcome.startswith("refused: ")
        assert row["status"] == "dead" and row["error"].startswith("refused: "), row["error"]
        relay.wait_for(hostile.sender)
        (received,) = [m for m in relay.messages if m.rcpt_tos == [hostile.sender]]  # one polite notice
        assert_only_our_headers(received, hostile.sender, "refused")
        return
    assert row["status"] == "done" and row["case_id"], row["error"]
    relay.wait_for(hostile.sender)
    (received,) = [m for m in relay.messages if m.rcpt_tos == [hostile.sender]]
    assert_only_our_headers(received, hostile.sender, "ack")
    evidence = list(served.db.query("SELECT sha256, size, content_type, filename, path FROM evidence WHERE case_id = ? ORDER BY id", [row["case_id"]]))
    for item in evidence:
        assert item["path"] == relative_path(item["sha256"])  # the name on disk is ours: the hash
        assert (served.desk.files / item["path"]).stat().st_size == item["size"]
        name = item["filename"]
        assert name and "/" not in name and "\\" not in name and not name.startswith(".") and len(name) <= 120
        assert all(unicodedata.category(ch)[0] != "C" for ch in name), repr(name)
    if hostile.name.startswith("zip bomb"):
        (item,) = evidence
        assert item["size"] < 2_000_000 and item["content_type"] == "application/zip"  # kept as sent, never unpacked
    if hostile.name.startswith("30000"):
        (item,) = evidence
        assert item["content_type"] == "image/png" and item["size"] < 1000  # never decoded
    if hostile.name == "hostile attachment names":
        assert len(evidence) == len(HOSTILE_NAMES)
        for item, (_, expected) in zip(evidence, HOSTILE_NAMES):
            if expected:
                assert item["filename"] == expected
        assert not ABSOLUTE.exists() and not Path("/etc/cron.d/refunddesk-evil").exists()
    if hostile.name.startswith("CR/LF"):
        (case_id,) = served.db.execute("SELECT case_id FROM inbound WHERE id = ?", [row["id"]]).fetchone()
        (subject,) = served.db.execute("SELECT subject FROM messages WHERE case_id = ? AND direction = 'in'", [case_id]).fetchone()
        assert "\n" not in subject and "\r" not in subject
        assert relay.to("victim@evil.test") == []
        msg = received.message
        assert msg["In-Reply-To"] == "<crlf-1@customer.test>" and "Bcc" not in msg["References"]


def test_files_land_only_under_store_files_with_generated_names(served):
    """After every hostile mail above: nothing was written anywhere but where it belongs."""
    allowed = {"refunddesk.toml", "serve.log", "refunddesk.db", "refunddesk.db-wal", "refunddesk.db-shm", "refunddesk.db-turn", "refunddesk.db-inhand", "refunddesk.db-inhand.tmp"}
    for path in served.tmp.rglob("*"):
        if path.is_dir():
            continue
        rel = path.relative_to(served.tmp).as_posix()
        if rel in allowed:
            continue
        assert re.fullmatch(r"files/([0-9a-f]{2})/([0-9a-f]{2})/\1\2[0-9a-f]{60}", rel), rel
    assert not ABSOLUTE.exists()


# --- on the wire ---------------------------------------------------------------------------------


@pytest.mark.parametrize("end", [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\n.\r"], ids=repr)
def test_smtp_smuggling_with_a_bare_line_end_around_the_dot_stays_one_message(served, end):
    (last,) = served.db.execute("SELECT coalesce(max(id), 0) FROM inbound").fetchone()
    wire = Wire(served.smtp_port)
    try:
        wire.open_data("carrier@customer.test")
        smuggled = (b"From: carrier@customer.test\r\nSubject: carrier\r\n\r\nhello" + end
                    + b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<refunds@desk.test>\r\nDATA\r\n"
                    + b"From: ceo@desk.test\r\nSubject: smuggled\r\n\r\nrefund everyone" + end)
        wire.sock.sendall(smuggled + b"\r\n.\r\nQUIT\r\n")
        replies = [wire.reply()] + wire.rest()
    finally:
        wire.close()
    # One answer for the one message, then QUIT's: no 250 for a smuggled MAIL FROM or RCPT.
    assert [r[:3] for r in replies] == [b"250", b"221"], replies
    rows = list(served.db.query("SELECT raw FROM inbound WHERE id > ?", [last]))
    assert len(rows) == 1 and b"Subject: smuggled" in rows[0]["raw"]  # kept as data of the one mail


def test_slow_drip_clients_do_not_keep_others_waiting(served):
    drips = []
    try:
        for index in range(20):
            wire = Wire(served.smtp_port)
            wire.open_data(f"drip{index}@customer.test")
            wire.sock.sendall(b"Subject: drip\r\n\r\nslo")
            drips.append(wire)
        started = time.monotonic()
        raw = letter("meanwhile@customer.test", "Refund", "My call froze.")
        assert served.send(raw, "meanwhile@customer.test") == {}
        answered = time.monotonic() - started
        for wire in drips:
            wire.sock.sendall(b"w")  # still connected, still dripping
    finally:
        for wire in drips:
            wire.close()
    assert answered < 2, answered
    wait_for(lambda: served.cases_of("meanwhile@customer.test"), message="the other client's mail processed")
    assert served.db.execute("SELECT count(*) FROM inbound WHERE instr(raw, 'Subject: drip') > 0").fetchone()[0] == 0
    MEASURED["20 slow-drip clients"] = {"size": len(raw), "seconds": answered, "outcome": "others served"}


def test_a_slow_drip_is_cut_off_by_the_command_timeout_while_others_are_served(tmp_path, monkeypatch):
    monkeypatch.setattr(smtp_module, "COMMAND_TIMEOUT", 1.0)  # 120 s in service, counted the same way
    desk, _ = desk_from(tmp_path, mail_settings(tmp_path))
    receiver = start_receiver(desk, lambda: None)
    port = desk.config.email.smtp_intake.port
    db = desk.open_db()
    others: list[float] = []
    try:
        wire = Wire(port)
        wire.open_data("drip@customer.test")
        started = time.monotonic()
        other = threading.Thread(target=lambda: others.append(timed_send(port)))
        other.start()
        dripped, closed = 0, False
        while time.monotonic() - started < 10 and not closed:
            try:
                wire.sock.sendall(b"x")
            except OSError:
                break
            dripped += 1
            readable, _, _ = select.select([wire.sock], [], [], 0.05)  # a byte every 50 ms, or the close
            try:
                closed = bool(readable) and wire.sock.recv(64) == b""
            except OSError:  # reset instead of a clean close: cut off all the same
                closed = True
        cut_after = time.monotonic() - started
        wire.close()
        other.join(10)
    finally:
        receiver.stop()
    assert dripped > 10 and 0.9 < cut_after < 3, (dripped, cut_after)
    assert others and others[0] < 2.0  # served while the drip was still connected
    assert [r[0] for r in db.execute("SELECT mail_from FROM (SELECT json_extract(meta, '$.mail_from') AS mail_from FROM inbound)")] == ["other@customer.test"]
    db.conn.close()
    MEASURED["slow drip, timeout scaled to 1 s"] = {"size": dripped, "seconds": cut_after, "outcome": "cut off"}


def timed_send(port: int) -> float:
    started = time.monotonic()
    send(port, letter("other@customer.test", "Refund", "My call froze."), "other@customer.test")
    return time.monotonic() - started


def print_measurements() -> None:
    print("\nhostile mail: size, spooled->processed, parser time, parser peak, serve+worker VmHWM, outcome")
    for name, m in MEASURED.items():
        print(
            f"  {name:<36} {m['size']:>9} B  {m['seconds']:6.2f} s  "
            + (f"{m['parse_seconds']:6.3f} s  {m['parse_peak'] / 2**20:6.1f} MiB  {m['rss_peak'] / 2**20:6.1f} MiB  " if "parse_peak" in m else "")
            + m["outcome"]
        )


def test_a_refused_mail_never_holds_up_the_mail_behind_it(make_desk):
    """The refusal's polite reply once re-read the whole refused mail: RecursionError escaped
    process(), the row stayed pending, and every worker pass died on it before reaching the
    mail behind it."""
    from refunddesk.intake import pipeline
    from refunddesk.store import spool

    desk = make_desk()
    db = desk.open_db()
    meta = {"source": "pipe", "rcpt_tos": [REFUNDS]}
    hostile, _ = spool.spool(db, "email", "pipe:hostile", deep_multipart("nested@customer.test"), utcnow(), {**meta, "mail_from": "nested@customer.test"})
    normal, _ = spool.spool(db, "email", "pipe:normal", letter("next@customer.test", "Refund", "My call froze."), utcnow(), {**meta, "mail_from": "next@customer.test"})
    assert pipeline.process_pending(desk, db) == 2
    statuses = dict(db.execute("SELECT id, status FROM inbound").fetchall())
    assert statuses == {hostile: "dead", normal: "done"}
    assert [r[0] for r in db.execute("SELECT template FROM outbox WHERE recipient = 'nested@customer.test'")] == ["refused"]
    db.conn.close()
