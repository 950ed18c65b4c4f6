"""Issue 21 items 1 and 9: no header can take the desk's memory or CPU.

Headers are capped before the standard library's parser or `decode_header` sees them
(intake/email/headers.py), each message's parsed headers die with it, and the receiver's
scan for forged Authentication-Results is linear. Asserted on memory (peak RSS, tracemalloc)
and CPU seconds, with bounds several times what was measured, and on outcomes: the case is
made, the agent is told the Subject was cut, the next customer's mail is not held up.
"""
from __future__ import annotations

import base64
import os
import resource
import smtplib
import subprocess
import sys
import time
import tracemalloc
import uuid
from datetime import datetime, timezone

import pytest

from conftest import wait_for
from mail_fixtures import REFUNDS, MailDesk, mail_settings, relay  # noqa: F401, F811 (a fixture)
from processes import process_tree, vm_status
from test_worker_process import worker_of
from refunddesk.addresses import Addresses
from refunddesk.intake import pipeline
from refunddesk.intake.email import authresults, html, quoting
from refunddesk.intake.email.headers import MAX_CHARS, MAX_ENCODED_WORDS, cap
from refunddesk.intake.email.parse import parse_mail
from refunddesk.store import cases as case_store
from refunddesk.store import spool
from refunddesk.store.clock import utcnow

ADDRESSES = Addresses("refunds@example.com", "appeals@example.com")
MB = 2**20


def encoded_subject(words: int) -> str:
    return "\r\n ".join("=?utf-8?q?a=C3=A9?=" for _ in range(words))


def mail(subject: str, sender: str = "customer@example.org", extra: str = "", body: str = "Please refund 5 USD.") -> bytes:
    return (f"From: {sender}\r\nTo: {REFUNDS}\r\nSubject: {subject}\r\nMessage-ID: <{uuid.uuid4().hex}@example.org>\r\n"
            f"{extra}\r\n{body}\r\n").encode()


# --- the cap itself ---------------------------------------------------------------------------


def test_an_honest_header_is_left_as_it_is():
    for value in ("Refund request", "=?utf-8?b?6YCA5qy+?= for order 12", "Re: [RF-000123] " + "x" * 900):
        assert cap(value, "Subject") == (value, False)


def test_encoded_words_past_the_cap_are_dropped():
    value = " ".join(["=?utf-8?q?a?="] * (MAX_ENCODED_WORDS + 50))
    capped, cut = cap(value, "Subject")
    assert cut and capped.count("=?") == MAX_ENCODED_WORDS


def test_openings_never_closed_count_as_words():
    capped, cut = cap("=?" * 10_000, "X-Loop")
    assert cut and capped.count("=?") <= MAX_ENCODED_WORDS


def test_a_long_plain_header_is_cut_to_the_cap():
    capped, cut = cap("word " * 100_000, "Subject")
    assert cut and len(capped) == MAX_CHARS


def test_references_keep_their_newest_ids():
    ids = " ".join(f"<{n}@example.org>" for n in range(5_000))
    capped, cut = cap(ids, "References")
    assert cut and capped.endswith("<4999@example.org>") and "<0@example.org>" not in capped


# --- in the parser ----------------------------------------------------------------------------


def test_twelve_thousand_encoded_words_cost_the_parser_little_and_the_case_says_so():
    raw = mail(encoded_subject(12_000))
    tracemalloc.start()
    try:
        parsed = parse_mail(raw, {}, ADDRESSES, datetime.now(timezone.utc))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * MB  # measured ~3 MB; it was 1.45 GB before the cap
    assert parsed.inbound.subject.startswith("aé")
    assert parsed.inbound.meta["headers_cut"] == ["Subject"]
    assert "refund" in parsed.inbound.text.lower()


def test_headers_read_by_the_loop_rules_are_capped_too():
    """Auto-Submitted, X-Loop and Precedence are read through the policy's own parser."""
    words = encoded_subject(12_000)  # three such fields: ~800 KB, under the header block's 1 MB
    raw = mail("Refund", extra=f"X-Loop: {words}\r\nPrecedence: {words}\r\nAuto-Submitted: {words}\r\n")
    tracemalloc.start()
    try:
        parse_mail(raw, {}, ADDRESSES, datetime.now(timezone.utc))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * MB


def test_a_header_folded_over_a_million_lines_is_scanned_once():
    raw = b"From: a@example.org\r\nX-Junk: a\r\n" + b" x\r\n" * 1_000_000 + b"Subject: hi\r\n\r\nbody\r\n"
    forged = raw.replace(b"Subject: hi", b"Authentication-Results: example.com; dkim=pass\r\nSubject: hi")
    started = resource.getrusage(resource.RUSAGE_SELF)
    cleaned, verdict = authresults.examine(forged, {"example.com"})
    ended = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ended.ru_utime - started.ru_utime) + (ended.ru_stime - started.ru_stime)
    assert cpu < 2.0  # measured 0.02 s; it was 100 s
    assert verdict["removed_forged"] == 1 and b"Authentication-Results" not in cleaned
    assert cleaned == raw


# --- through the real CLI and the real service ------------------------------------------------


def test_deliver_of_an_encoded_word_subject_stays_small(tmp_path):
    desk = MailDesk(tmp_path, mail_settings(tmp_path, **{"email.smtp_intake.enabled": False}))
    desk.db.conn.close()
    source = tmp_path / "hostile.eml"
    source.write_bytes(mail(encoded_subject(20_000)))
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    # Started by a small launcher and measured there: a child forked from this (large) test process
    # would count this process's resident pages in its own peak until it execs.
    launcher = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")
    with open(source, "rb") as stdin, open(out_path, "wb") as stdout, open(err_path, "wb") as stderr:
        code = subprocess.call([sys.executable, "-c", launcher, sys.executable, "-m", "refunddesk.cli", "--config", str(desk.config),
                                "deliver", "--recipient", REFUNDS, "--sender", "customer@example.org"],
                               stdin=stdin, stdout=stdout, stderr=stderr, timeout=120)
    errors = err_path.read_text().strip().splitlines()
    assert code == 0, errors
    assert out_path.read_text().strip().startswith("RF-"), out_path.read_text()
    peak_kb = int(errors[-1])  # measured 51 MB
    assert peak_kb * 1024 < 300 * MB  # it was 4.0 GB


def test_serve_worker_stays_small_and_the_next_mail_is_not_held(tmp_path):
    desk = MailDesk(tmp_path, mail_settings(tmp_path)).start()
    try:
        desk.send(mail(encoded_subject(12_000), "first@example.org"), "first@example.org")
        folded = mail("Refund please", "second@example.org", extra="X-Junk: a\r\n" + " x\r\n" * 200_000)
        desk.send(folded, "second@example.org")
        too_large = mail("Refund please", "fourth@example.org", extra="X-Junk: a\r\n" + " x\r\n" * 1_000_000)
        with pytest.raises(smtplib.SMTPDataError) as refused:  # refused in the DATA reply, with its reason
            desk.send(too_large, "fourth@example.org")
        assert refused.value.smtp_code == 554 and b"header is too large" in refused.value.smtp_error
        deep = "<div>" * 100_000 + "Please refund 7 USD" + "</div>" * 100_000
        desk.send(mail("Refund", "fifth@example.org", extra="MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n",
                       body=deep), "fifth@example.org")
        desk.send(mail("Refund of 9 USD", "third@example.org"), "third@example.org")
        rows = desk.settled(4, timeout=60)
        assert [r["status"] for r in rows] == ["done", "done", "done", "done"], rows
        first = desk.cases_of("first@example.org")[0]
        assert any(e["action"] == "headers_cut" and e["data"]["headers"] == ["Subject"] for e in desk.events(first.id))
        assert "7 USD" in desk.messages(desk.cases_of("fifth@example.org")[0].id)[0]["text"]
        assert desk.cases_of("third@example.org"), "the ordinary mail after the hostile ones made a case"
        peaks = [vm_status(pid)["VmHWM"] * 1024 for pid in process_tree(desk.served.process.pid)]
        assert max(peaks) < 300 * MB, peaks  # worker 1.49 GB before, for the first mail alone
        wait_for(lambda: desk.outbox("third@example.org"), 20, message="the third customer's acknowledgement")
    finally:
        desk.stop()


# --- nested HTML --------------------------------------------------------------------------------


def test_html_nested_100000_deep_is_flattened_in_one_pass():
    markup = "<div>" * 100_000 + "Please refund 5 USD" + "</div>" * 100_000
    started = resource.getrusage(resource.RUSAGE_SELF)
    text, safe = html.to_text(markup), html.sanitize(markup)
    ended = resource.getrusage(resource.RUSAGE_SELF)
    assert (ended.ru_utime - started.ru_utime) < 2.0  # measured 0.27 s for both; nh3 alone took 30 s
    assert text == "Please refund 5 USD" and "Please refund 5 USD" in safe
    assert safe.count("<div>") <= html.MAX_NESTING


def test_a_tag_with_150000_attributes_is_stripped_of_them():
    markup = "<div " + " ".join(f"a{i}=1" for i in range(150_000)) + ">Please refund 5 USD</div>"
    started = resource.getrusage(resource.RUSAGE_SELF)
    text, safe = html.to_text(markup), html.sanitize(markup)
    ended = resource.getrusage(resource.RUSAGE_SELF)
    assert (ended.ru_utime - started.ru_utime) < 2.0  # measured 0.02 s; nh3 alone took 5.5 s
    assert text == "Please refund 5 USD" and safe == "<div>Please refund 5 USD</div>"


def test_flattening_keeps_honest_markup_as_it_is():
    for markup in ("<p>a<b>x</b><br><img src=x/></p>", '<td style="' + "color: red; " * 100 + '">x</td>', "<table><tr><td>1<td>2</tr></table>",
                   "<ul>" + "".join(f"<li>item {i}" for i in range(300)) + "</ul>", "<a<a<a no tag closes"):
        assert html.flatten(markup) == markup


# --- the reading cap comes before anything reads --------------------------------------------------


def ten_megabytes_of_log(sender: str) -> bytes:
    lines = ["I was charged 12 USD twice on 2026-12-01, please refund."]
    lines += [f"log line {i}: request failed with status 500 at node {i % 97}" for i in range(180_000)]
    return mail("Refund", sender, body="\r\n".join(lines))


def test_a_ten_megabyte_plain_mail_costs_the_worker_little_and_is_kept_whole(desk, db):
    raw = ten_megabytes_of_log("big@example.org")
    meta = {"source": "pipe", "rcpt_tos": [desk.config.email.refunds_address], "mail_from": "big@example.org"}
    inbound_id, _ = spool.spool(db, "email", "pipe:big", raw, utcnow(), meta, None)
    started = time.thread_time()
    assert pipeline.process(desk, db, inbound_id) == "done"
    cpu = time.thread_time() - started
    assert cpu < 2.5  # measured 0.55 s; it was ~7 s (the text normalised 8 times over its whole length)
    case = case_store.cases_of_contact(db, "big@example.org")[0]
    assert case.fields.get("amount") == "12" or case.fields.get("amount") == "12.00", case.fields
    stored = case_store.messages_of(db, case.id)[0]["text"]
    assert stored.rstrip().endswith("log line 179999: request failed with status 500 at node 64")
    assert stored.count("\n") >= 180_000


def test_past_the_limit_the_rest_goes_with_the_part_it_follows():
    own, forwarded = quoting.split_forward("Please refund 5 USD.\n" + "more words\n" * 100, limit=50)
    assert own.startswith("Please refund 5 USD.") and own.count("more words") == 100 and forwarded == ""
    text = "See below.\n\n---------- Forwarded message ---------\nFrom: shop@example.com\n" + "receipt line\n" * 100
    own, forwarded = quoting.split_forward(text, limit=120)
    assert own == "See below." and forwarded.count("receipt line") == 100
    own, _ = quoting.split_forward("Thanks\n\nOn Mon, Dec 1, 2026 Bob wrote:\n> quoted\n" + "> old\n" * 100, limit=60)
    assert own == "Thanks"


# --- the worker's memory limit ---------------------------------------------------------------------


def test_a_mail_over_the_workers_memory_limit_is_a_dead_letter_and_the_next_is_read(tmp_path, relay):
    """With `worker.memory_mb` a little above what an idle worker holds, a mail of a 20 MB
    attachment cannot be read: it becomes a dead letter "too large to read" with its raw bytes,
    its sender gets the refused-mail notice, and the next customer is answered as usual."""
    (tmp_path / "probe").mkdir()
    probe = MailDesk(tmp_path / "probe", mail_settings(tmp_path / "probe", **{"worker.memory_mb": 0})).start()
    try:
        probe.send(mail("Refund of 1 USD", "warm@example.org"), "warm@example.org")
        probe.settled(1)  # the worker has imported and read what an ordinary mail needs
        idle = vm_status(worker_of(probe.served))["VmData"] * 1024
    finally:
        probe.stop()
    # Room to load the 19 MB row and to update it (SQLite and Python each hold a copy: ~40 MB), not to
    # parse it too (~55 MB more).
    limit_mb = idle // MB + 70
    desk = MailDesk(tmp_path, mail_settings(tmp_path, relay, **{"worker.memory_mb": limit_mb})).start()
    try:
        attachment = base64.encodebytes(os.urandom(14 * MB)).decode()  # 19 MB as sent
        big = mail("Refund", "heavy@example.org", body=attachment, extra="MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
                   "Content-Transfer-Encoding: base64\r\n")
        desk.send(big, "heavy@example.org")
        desk.send(mail("Refund of 9 USD", "light@example.org"), "light@example.org")
        rows = desk.settled(2, timeout=60)
        assert rows[0]["status"] == "dead" and "too large to read" in rows[0]["error"], rows[0]
        assert rows[1]["status"] == "done"
        assert bytes(desk.db.execute("SELECT raw FROM inbound WHERE id = ?", [rows[0]["id"]]).fetchone()[0]) == big
        (notice,) = relay.wait_for("heavy@example.org")
        assert notice["Subject"] == "We could not read your message"
        relay.wait_for("light@example.org")
    finally:
        desk.stop()



def test_deliver_refuses_a_mail_of_hostile_structure_with_exit_65(tmp_path):
    desk = MailDesk(tmp_path, mail_settings(tmp_path, **{"email.smtp_intake.enabled": False}))
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(1000))
    raw = mail("Refund", extra="MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n").replace(b"\r\nPlease", b"\r\n" + parts + b"--b--\r\nPlease")
    result = subprocess.run([sys.executable, "-m", "refunddesk.cli", "--config", str(desk.config), "deliver", "--recipient", REFUNDS,
                             "--sender", "customer@example.org"], input=raw, capture_output=True, timeout=60)
    assert result.returncode == 65, result.stderr
    assert result.stderr.decode().strip() == "refunddesk: message refused: too many MIME parts (over 500)"
    assert desk.db.execute("SELECT count(*) FROM inbound").fetchone()[0] == 0
    desk.db.conn.close()
