"""The message text of an SMTP DATA command, read in pieces: byte for byte what the client meant.

The receiver reads DATA up to each ".<CR><LF>" instead of line by line (intake/email/smtp.py);
these tests hold it to RFC 5321's rules over a real socket: dot-stuffing undone, the end of
data recognized however the packets fall, nothing read past it, huge lines kept whole.
"""
from __future__ import annotations

import smtplib

from mail_fixtures import REFUNDS, Wire
from test_email_smtp import receiver, spooled  # noqa: F401 (fixture)


def test_dot_stuffing_is_undone_byte_for_byte(receiver):
    desk, port, _ = receiver()
    raw = (b"From: a@customer.test\r\nSubject: dots\r\n\r\n"
           b".\r\n..\r\n.leading dot\r\n...three\r\nends with a dot.\r\n. space\r\n\r\n.\r\nlast line\r\n")
    with smtplib.SMTP("127.0.0.1", port) as client:  # smtplib doubles every leading dot
        assert client.sendmail("a@customer.test", [REFUNDS], raw) == {}
    assert [r["raw"] for r in spooled(desk)] == [raw]


def test_the_end_of_data_is_found_however_the_packets_fall(receiver):
    desk, port, _ = receiver()
    talk = Wire(port)
    try:
        talk.open_data("a@customer.test")
        for piece in (b"Subject: split\r\n\r\nline one.", b"\r\n", b".", b"", b".stuffed\r\n.", b"\r", b"\n"):
            talk.write(piece)  # one segment each: the dot line arrives in three
        assert talk.reply().startswith(b"250")
        # The next mail's commands and data in one segment with the end of the first.
        talk.open_data("a@customer.test")
        talk.write(b"Subject: two\r\n\r\nsecond\r\n.\r\nQUIT\r\n")
        assert talk.reply().startswith(b"250")
        assert talk.reply().startswith(b"221")  # QUIT was read as a command, not lost or swallowed
    finally:
        talk.close()
    assert [r["raw"] for r in spooled(desk)] == [b"Subject: split\r\n\r\nline one.\r\n.stuffed\r\n", b"Subject: two\r\n\r\nsecond\r\n"]


def test_an_empty_message_is_answered_not_waited_for(receiver):
    desk, port, _ = receiver()
    talk = Wire(port)
    try:
        talk.open_data("a@customer.test")
        assert talk.say(b".\r\n").startswith(b"250")
        assert talk.say(b"QUIT\r\n").startswith(b"221")
    finally:
        talk.close()
    assert [r["raw"] for r in spooled(desk)] == [b""]


def test_a_line_longer_than_the_read_window_is_kept_whole(receiver):
    desk, port, _ = receiver()
    long_line = b"A" * 300_000  # a mailer that never folds, four times the 64 KB window
    raw = b"Subject: long\r\n\r\n" + long_line + b"\r\n.tail\r\n"
    talk = Wire(port)
    try:
        talk.open_data("a@customer.test")
        talk.write(raw.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        assert talk.reply().startswith(b"250")
    finally:
        talk.close()
    assert [r["raw"] for r in spooled(desk)] == [raw]


def test_mail_over_the_limit_without_size_is_read_to_its_end_and_refused(receiver):
    desk, port, _ = receiver(**{"email.smtp_intake.max_message_bytes": 100_000})
    talk = Wire(port)
    try:
        assert talk.say(b"HELO old.client.test\r\n").startswith(b"250")  # no SIZE in HELO
        assert talk.say(b"MAIL FROM:<a@customer.test>\r\n").startswith(b"250")
        assert talk.say(f"RCPT TO:<{REFUNDS}>\r\n".encode()).startswith(b"250")
        assert talk.say(b"DATA\r\n").startswith(b"354")
        body = b"".join(b"line %06d of a mail that is far too long\r\n" % n for n in range(20_000))  # ~860 KB
        assert talk.say(b"Subject: big\r\n\r\n" + body + b".\r\n").startswith(b"552")
        assert talk.say(b"NOOP\r\n").startswith(b"250")  # in step: the rest of the data was not read as commands
    finally:
        talk.close()
    assert spooled(desk) == []


def test_a_large_mail_is_stored_byte_for_byte(receiver):
    # Over store/spool.BLOB_PIECE: written into its row piece by piece, not bound whole.
    desk, port, _ = receiver()
    line = bytes(range(33, 109)) + b"\r\n"  # 78 bytes, all printable, no leading dot
    raw = b"Subject: large\r\n\r\n" + line * 40_000 + b".not last\r\nend\r\n"  # ~3.1 MB
    with smtplib.SMTP("127.0.0.1", port) as client:
        assert client.sendmail("a@customer.test", [REFUNDS], raw) == {}
    assert [r["raw"] for r in spooled(desk)] == [raw]
