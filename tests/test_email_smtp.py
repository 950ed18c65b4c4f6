"""The SMTP receiver over real sockets: who it accepts, when it says 250, and what it stores.

The receiver runs in-process here (start_receiver, exactly what `serve` calls) so each test can
read the spool the instant the client gets its answer: 250 must mean "committed".
"""
from __future__ import annotations

import json
import shutil
import smtplib
import subprocess
import threading

import pytest

from conftest import wait_for
from mail_fixtures import APPEALS, REFUNDS, TEST_CERT, TEST_KEY, Wire, desk_from, letter, mail_settings, send
from refunddesk.intake import pipeline
from refunddesk.intake.email.smtp import start_receiver
from refunddesk.store import events


class Doorbell:
    def __init__(self) -> None:
        self.rings = 0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.rings += 1


@pytest.fixture
def receiver(tmp_path):
    """start(**settings) -> (desk, port, doorbell); stopped at the end of the test."""
    started = []

    def start(**overrides):
        desk, _ = desk_from(tmp_path, mail_settings(tmp_path, **overrides))
        bell = Doorbell()
        handle = start_receiver(desk, bell)
        started.append(handle)
        return desk, desk.config.email.smtp_intake.port, bell

    yield start
    for handle in started:
        handle.stop()


def spooled(desk) -> list[dict]:
    db = desk.open_db()
    try:
        rows = list(db.query("SELECT id, transport_id, raw, meta, status FROM inbound ORDER BY id"))
    finally:
        db.conn.close()
    for row in rows:
        row["meta"] = json.loads(row["meta"])
    return rows


def test_only_our_addresses_and_their_plus_forms_are_accepted(receiver):
    desk, port, bell = receiver()
    raw = letter("a@customer.test", "refund", "my call failed")
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.ehlo("client.test")
        client.mail("a@customer.test")
        assert client.rcpt("someone@desk.test")[0] == 550
        assert client.rcpt("refunds@elsewhere.test")[0] == 550
        code, text = client.rcpt("sales@desk.test")
        assert code == 550 and text.startswith(b"5.1.1")
        assert client.rcpt("Refunds+RF-000123@Desk.Test")[0] == 250
        assert client.rcpt(APPEALS)[0] == 250
        assert client.data(raw)[0] == 250
    rows = spooled(desk)
    assert len(rows) == 1
    assert rows[0]["meta"]["rcpt_tos"] == ["Refunds+RF-000123@Desk.Test", APPEALS]
    assert rows[0]["meta"]["mail_from"] == "a@customer.test" and rows[0]["meta"]["peer"] == "127.0.0.1"
    assert bell.rings == 1


def test_250_means_committed_byte_for_byte_and_each_delivery_has_its_own_key(receiver):
    desk, port, bell = receiver()
    raw = letter("a@customer.test", "refund", "my call failed")
    assert send(port, raw, "a@customer.test") == {}
    first = spooled(desk)  # no waiting: the 250 came after the commit
    assert [r["raw"] for r in first] == [raw]
    send(port, raw, "a@customer.test")  # the sender's retry
    rows = spooled(desk)
    assert len(rows) == 2 and rows[0]["transport_id"] != rows[1]["transport_id"]
    assert all(r["status"] == "pending" for r in rows)


def test_oversized_mail_is_refused_with_552_whether_or_not_size_was_declared(receiver):
    desk, port, _ = receiver(**{"email.smtp_intake.max_message_bytes": 20_000})
    big = letter("a@customer.test", "refund", "x" * 30_000)
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:  # SIZE declared: refused at MAIL FROM
        send(port, big, "a@customer.test")
    assert refused.value.smtp_code == 552
    with smtplib.SMTP("127.0.0.1", port) as client:  # plain HELO: no SIZE, refused after DATA
        client.helo("old.client.test")
        client.mail("a@customer.test")
        client.rcpt(REFUNDS)
        code, _ = client.data(big)
        assert code == 552
        # The connection stays usable: a normal mail after the refused one goes through.
        client.rset()
        client.mail("a@customer.test")
        client.rcpt(REFUNDS)
        assert client.data(letter("a@customer.test", "refund", "short"))[0] == 250
    assert len(spooled(desk)) == 1


def test_an_internal_failure_is_451_without_detail_and_the_retry_succeeds(receiver, tmp_path):
    store = tmp_path / "broken"
    store.write_text("a file where the store's folder should be")
    desk, port, bell = receiver(**{"store.path": str(store / "refunddesk.db")})
    raw = letter("a@customer.test", "refund", "my call failed")
    with pytest.raises(smtplib.SMTPDataError) as failed:
        send(port, raw, "a@customer.test")
    assert failed.value.smtp_code == 451
    assert failed.value.smtp_error == b"4.3.0 Temporary failure, please try again later"
    assert bell.rings == 0
    store.unlink()  # the fault is gone; the sender's retry must now succeed
    assert send(port, raw, "a@customer.test") == {}
    assert [r["raw"] for r in spooled(desk)] == [raw]


def test_smtputf8_and_8bitmime_keep_the_bytes_exactly(receiver):
    desk, port, _ = receiver()
    raw = ("From: 王伟 <王伟@例子.test>\r\nTo: refunds@desk.test\r\nSubject: 退款\r\nMessage-ID: <u8@x.test>\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           "重复扣费 100 元\r\n").encode("utf-8")
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.ehlo("client.test")
        assert client.has_extn("smtputf8") and client.has_extn("8bitmime")
        assert client.sendmail("王伟@例子.test", [REFUNDS], raw, mail_options=["SMTPUTF8", "BODY=8BITMIME"]) == {}
    row = spooled(desk)[0]
    assert row["raw"] == raw and row["meta"]["mail_from"] == "王伟@例子.test"


def test_starttls_and_auth_for_relays_that_need_them(receiver, tmp_path):
    (tmp_path / "cert.pem").write_text(TEST_CERT)
    (tmp_path / "key.pem").write_text(TEST_KEY)
    desk, port, _ = receiver(**{
        "email.smtp_intake.tls_cert": str(tmp_path / "cert.pem"),
        "email.smtp_intake.tls_key": str(tmp_path / "key.pem"),
        "email.smtp_intake.auth_username": "relay",
        "email.smtp_intake.auth_password": "s3cret",
    })
    raw = letter("a@customer.test", "refund", "my call failed")
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.ehlo("relay.test")
        assert client.has_extn("starttls") and not client.has_extn("auth")  # no AUTH in the clear
        assert client.mail("a@customer.test")[0] == 530
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.starttls(context=context)
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("relay", "wrong")
        client.login("relay", "s3cret")
        assert client.sendmail("a@customer.test", [REFUNDS], raw) == {}
    meta = spooled(desk)[0]["meta"]
    assert meta["tls"] is True and meta["auth_user"] == "relay"


def test_forged_authentication_results_are_removed_and_failing_mail_is_flagged_for_agents(receiver):
    desk, port, _ = receiver(**{"email.trusted_authserv_id": "mx.upstream.test"})
    forged = b"Authentication-Results: desk.test; dkim=pass; spf=pass; dmarc=pass\r\n"
    upstream = b"Authentication-Results: mx.upstream.test; dkim=fail header.d=customer.test; spf=softfail; dmarc=fail\r\n"
    send(port, upstream + forged + letter("a@customer.test", "refund", "my call failed and credit was deducted"), "a@customer.test")
    row = spooled(desk)[0]
    assert forged.strip() not in row["raw"] and upstream.strip() in row["raw"]
    verdict = row["meta"]["authentication"]
    assert verdict["removed_forged"] == 1 and verdict["status"] == "unverified"
    assert verdict["results"] == {"dkim": "fail", "spf": "softfail", "dmarc": "fail"}

    db = desk.open_db()
    try:
        assert pipeline.process(desk, db, row["id"]) == "done"
        (case_id,) = db.execute("SELECT case_id FROM inbound WHERE id = ?", [row["id"]]).fetchone()
        actions = [e["action"] for e in events.for_case(db, case_id)]
        assert "sender_unverified" in actions and "forged_authentication_removed" in actions
        (meta,) = db.execute("SELECT meta FROM messages WHERE case_id = ? AND direction = 'in'", [case_id]).fetchone()
        assert json.loads(meta)["authentication"]["status"] == "unverified"
    finally:
        db.conn.close()


def test_a_bare_lf_dot_cannot_smuggle_a_second_message(receiver):
    desk, port, _ = receiver()
    wire = Wire(port)
    try:
        wire.open_data("a@customer.test")
        smuggled = (b"Subject: one\r\n\r\nhello\n.\nMAIL FROM:<evil@x.test>\nRCPT TO:<refunds@desk.test>\nDATA\n"
                    b"Subject: smuggled\n\nfake\n.\r\n")
        wire.write(smuggled)  # no answer: "\n.\r\n" is not the end of DATA, only "\r\n.\r\n" is
        assert wire.say(b"\r\n.\r\n").startswith(b"250")
        wire.say(b"QUIT\r\n")
    finally:
        wire.close()
    rows = spooled(desk)
    assert len(rows) == 1 and b"Subject: smuggled" in rows[0]["raw"]  # kept as data of the one message


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed (apt-get install swaks)")
def test_a_real_command_line_client_delivers(receiver, tmp_path):
    desk, port, _ = receiver()
    path = tmp_path / "mail.eml"
    path.write_bytes(letter("a@customer.test", "refund by swaks", "my call failed"))
    done = subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--from", "a@customer.test", "--to", "refunds+RF-000001@desk.test", "--data", f"@{path}"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "250 2.0.0 Message accepted" in done.stdout
    assert wait_for(lambda: spooled(desk), 5)[0]["meta"]["rcpt_tos"] == ["refunds+RF-000001@desk.test"]
