"""Parsing mail as real clients write it: charsets, file names, quotes, forwards, HTML, limits.

These run the parser on raw bytes directly; the socket tests send the same kinds of mail
through the SMTP receiver and the IMAP poller.
"""
from __future__ import annotations

import base64
import time
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mail_fixtures import APPEALS, PNG, REFUNDS, letter
from refunddesk.intake.email import authresults, quoting
from refunddesk.intake.email.html import sanitize, to_text
from refunddesk.addresses import Addresses
from refunddesk.intake.email.parse import MailRejected, parse_mail

ADDRESSES = Addresses(REFUNDS, APPEALS)
NOW = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)


def parse(raw: bytes, **meta):
    return parse_mail(raw, {"mail_from": "someone@customer.test", "rcpt_tos": [REFUNDS], **meta}, ADDRESSES, NOW)


def raw_mail(head: str, body: bytes) -> bytes:
    return head.replace("\n", "\r\n").encode("utf-8") + b"\r\n" + body


def test_gb2312_label_on_gbk_text_and_gb18030_are_read():
    # 镕 is GBK, not GB2312: Chinese mail labelled gb2312 routinely carries it.
    text = "我的账户被重复扣费 镕 100元，请退款。"
    gb2312 = raw_mail(
        "From: =?gb2312?B?" + base64.b64encode("王伟".encode("gbk")).decode() + "?= <wang@customer.test>\n"
        "To: refunds@desk.test\nSubject: =?gb2312?B?" + base64.b64encode("退款申请 镕".encode("gbk")).decode() + "?=\n"
        "Message-ID: <gb1@customer.test>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=gb2312\n"
        "Content-Transfer-Encoding: 8bit\n",
        text.encode("gbk"),
    )
    parsed = parse(gb2312)
    assert parsed.inbound.text == text
    assert parsed.inbound.subject == "退款申请 镕"
    assert parsed.inbound.display_name == "王伟"
    assert parsed.inbound.language == "zh"

    four_byte = "扣费异常 𠀀 ¥88"  # a GB18030 four-byte sequence
    gb18030 = raw_mail(
        "From: li@customer.test\nTo: refunds@desk.test\nSubject: =?GB18030?Q?" + "".join(f"={b:02X}" for b in "重复扣费".encode("gb18030")) + "?=\n"
        "Message-ID: <gb2@customer.test>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=GB18030\nContent-Transfer-Encoding: base64\n",
        base64.encodebytes(four_byte.encode("gb18030")),
    )
    parsed = parse(gb18030)
    assert parsed.inbound.text == four_byte
    assert parsed.inbound.subject == "重复扣费"


def test_raw_8bit_subject_is_read_with_the_charsets_the_mail_declares():
    raw = raw_mail(
        "From: info@customer.test\nTo: refunds@desk.test\nSubject: Forma\xe7\xe3o\nMIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=windows-1252\n".replace("\xe7", "%E7").replace("\xe3", "%E3"),
        b"ol\xe1",
    ).replace(b"%E7", b"\xe7").replace(b"%E3", b"\xe3")
    parsed = parse(raw)
    assert parsed.inbound.subject == "Formação"
    assert parsed.inbound.text == "olá"


def test_latin1_label_on_utf8_text_is_read_as_utf8():
    raw = raw_mail("From: a@customer.test\nTo: refunds@desk.test\nSubject: x\nContent-Type: text/plain; charset=iso-8859-1\n", "Grüße, ¥100".encode("utf-8"))
    assert parse(raw).inbound.text == "Grüße, ¥100"


def test_file_names_in_every_encoding_and_hostile_ones_are_safe_metadata():
    boundary = "b1"
    parts = [
        ('Content-Type: image/png\nContent-Disposition: attachment; filename*=utf-8\'\'%E6%89%A3%E8%B4%B9%E6%88%AA%E5%9B%BE.png', "扣费截图.png"),
        ('Content-Type: image/png; name="=?utf-8?B?' + base64.b64encode("凭证.png".encode()).decode() + '?="\nContent-Disposition: attachment', "凭证.png"),
        ("Content-Type: application/pdf\nContent-Disposition: attachment; filename=This is a receipt.pdf", "This is a receipt.pdf"),
        ("Content-Type: image/jpeg\nContent-Location: http://x.test/photos/Photo25.jpg\nContent-Disposition: inline", "Photo25.jpg"),
        ('Content-Type: image/png\nContent-Disposition: attachment; filename="../../etc/passwd"', "passwd"),
        ('Content-Type: image/png\nContent-Disposition: attachment; filename="/var/lib/evil.png"', "evil.png"),
        ('Content-Type: image/png\nContent-Disposition: attachment; filename*=utf-8\'\'invoice%E2%80%AEgnp.exe', "invoice gnp.exe"),
        ('Content-Type: image/png\nContent-Disposition: attachment; filename*=utf-8\'\'a%00b%0D%0ABcc.png', "a b Bcc.png"),
    ]
    body = ""
    for index, (headers, _) in enumerate(parts):
        body += f"--{boundary}\n{headers}\nContent-Transfer-Encoding: base64\n\n" + base64.encodebytes(PNG + bytes([index])).decode() + "\n"
    body += f"--{boundary}--\n"
    raw = raw_mail(f"From: a@customer.test\nTo: refunds@desk.test\nSubject: files\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary={boundary}\n", body.replace("\n", "\r\n").encode())
    names = [a.filename for a in parse(raw).inbound.attachments]
    assert names == [expected for _, expected in parts]
    for name in names:
        assert "/" not in name and "\\" not in name and all(ch.isprintable() for ch in name)


def test_inline_images_and_attachments_are_evidence_but_signatures_and_vcards_are_not():
    html = '<p>See the screenshot:</p><img src="cid:shot@x">'
    raw = letter("a@customer.test", "screenshot", "See the screenshot.", html=html, files=(("card.vcf", b"BEGIN:VCARD\nEND:VCARD\n", "text/vcard"), ("smime.p7s", b"\x30\x82", "application/pkcs7-signature"), ("log.txt", b"HTTP 500 at 10:00", "text/plain")))
    # An inline image, the way Apple Mail and Outlook send a pasted screenshot.
    import email
    import email.policy

    msg = email.message_from_bytes(raw, policy=email.policy.default)
    body = msg.get_body(("html",))
    body.add_related(PNG, maintype="image", subtype="png", cid="<shot@x>", disposition="inline", filename="pasted.png")
    parsed = parse(msg.as_bytes())
    found = {a.filename: a for a in parsed.inbound.attachments}
    assert set(found) == {"pasted.png", "log.txt"}
    assert found["pasted.png"].inline and found["pasted.png"].data == PNG
    assert parsed.inbound.text == "See the screenshot."


def test_forwarded_mail_is_kept_as_evidence_not_as_the_customers_words():
    inline = letter(
        "a@customer.test",
        "Fwd: Your top-up receipt",
        "This is the receipt for the charge that failed.\n\n---------- Forwarded message ---------\nFrom: billing@platform.test\nDate: Fri, 20 Nov 2026\nSubject: receipt\n\nYou paid 50.00 USD.\n",
    )
    parsed = parse(inline)
    assert parsed.inbound.text == "This is the receipt for the charge that failed."
    forwarded = [a for a in parsed.inbound.attachments if a.filename == "forwarded-message.txt"]
    assert forwarded and b"You paid 50.00 USD." in forwarded[0].data
    assert parsed.inbound.meta["forwarded"] is True

    import email
    import email.policy

    receipt = email.message_from_bytes(letter("billing@platform.test", "Receipt 42", "You paid 50.00 USD.", files=(("receipt.png", PNG, "image/png"),)), policy=email.policy.default)
    outer = email.message_from_bytes(letter("a@customer.test", "Fwd: Receipt 42", "Forwarding the receipt."), policy=email.policy.default)
    outer.add_attachment(receipt)
    parsed = parse(outer.as_bytes())
    names = [a.filename for a in parsed.inbound.attachments]
    assert "Receipt 42.eml" in names and "receipt.png" in names
    assert "You paid" not in parsed.inbound.text


@pytest.mark.parametrize(
    "reply",
    [
        "Amount: 12.50 USD\n\nOn Fri, Nov 20, 2026 at 10:00 AM Refunds <refunds@desk.test>\nwrote:\n> Hello,\n> Amount: 99 USD\n",
        "Amount: 12.50 USD\n\nFrom: refunds@desk.test <refunds@desk.test>\nSent: Friday, November 20, 2026 10:00\nTo: a@customer.test\nSubject: [RF-000001]\n\nAmount: 99 USD\n",
        "Amount: 12.50 USD\n\n------------------ 原始邮件 ------------------\n发件人: \"refunds\" <refunds@desk.test>\n发送时间: 2026年11月20日\n\nAmount: 99 USD\n",
        "Amount: 12.50 USD\n\n在 2026-11-20 10:00:00，\"refunds\" <refunds@desk.test> 写道：\n> Amount: 99 USD\n",
        "Amount: 12.50 USD\n\nrefunds <refunds@desk.test> 于2026年11月20日周五 10:00写道：\n> Amount: 99 USD\n",
        "Amount: 12.50 USD\n\n________________________________\nFrom: refunds@desk.test\nSent: Friday\n\nAmount: 99 USD\n",
        "Amount: 12.50 USD\n\n-- \nWang Wei\nTel 138 0000 0000\n",
        "Amount: 12.50 USD\n\n发自我的iPhone\n",
        "Amount: 12.50 USD\n\nBest regards,\nWang Wei\n",
    ],
    ids=["gmail-wrapped", "outlook", "qq", "163", "gmail-zh", "outlook-rule", "sig-dashes", "sent-from", "closing"],
)
def test_quoted_letters_and_signatures_are_left_out(reply):
    assert quoting.strip_quotes(reply) == "Amount: 12.50 USD"


def test_a_closing_word_never_cuts_what_the_customer_filled_in():
    text = "Please refund the failed call. Thanks!\n\nAmount: 12.50 USD\nTime of the charge: 2026-11-20 10:00"
    assert quoting.strip_quotes(text) == text


def test_html_only_mail_gives_text_for_the_dialog_and_clean_html_for_agents():
    html = (
        '<html><head><title>t</title><style>p{color:red}</style></head><body>'
        '<p onclick="steal()">My call <b>failed</b> and 12.50 USD was deducted.</p>'
        '<table><tr><td>Amount</td><td>12.50 USD</td></tr></table>'
        '<img src="https://tracker.test/pixel.gif"><script>alert(1)</script>'
        '<a href="javascript:alert(2)">x</a><a href="https://platform.test/log">log</a>'
        '<div class="gmail_quote">On Fri wrote:<blockquote><p>Amount: 99 USD</p></blockquote></div></body></html>'
    )
    parsed = parse(letter("a@customer.test", "refund", html=html))
    assert parsed.inbound.text == "My call failed and 12.50 USD was deducted.\nAmount  12.50 USD\nxlog"
    clean = parsed.html
    for forbidden in ("<script", "onclick", "<img", "javascript:", "<style", "tracker.test"):
        assert forbidden not in clean
    assert 'href="https://platform.test/log"' in clean and "noopener" in clean


def test_html_text_marks_every_quoted_line():
    assert to_text("<p>mine</p><blockquote><p>a</p><p>b</p><blockquote>c</blockquote></blockquote>") == "mine\n> a\n> b\n> > c"
    assert sanitize('<p style="x">a<iframe src="https://x"></iframe></p>') == "<p>a</p>"


def test_too_many_parts_and_too_deep_nesting_are_refused_before_parsing():
    many = "".join(f"--b\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n" for i in range(2000)) + "--b--\r\n"
    raw = raw_mail("From: a@customer.test\nTo: refunds@desk.test\nSubject: x\nContent-Type: multipart/mixed; boundary=b\n", many.encode())
    started = time.monotonic()
    with pytest.raises(MailRejected, match="too many MIME parts"):
        parse(raw)
    deep = "".join(f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n" for i in range(1000))
    raw = raw_mail("From: a@customer.test\nTo: refunds@desk.test\nSubject: x\nMIME-Version: 1.0\n", deep.encode())
    with pytest.raises(MailRejected, match="nesting too deep"):
        parse(raw)
    assert time.monotonic() - started < 2


def test_one_mail_one_key_across_relays_but_a_reused_message_id_is_not_a_duplicate():
    raw = letter("a@customer.test", "refund", "my call failed", message_id="<same@customer.test>")
    via_smtp = b"Received: from mx by desk; Fri, 20 Nov 2026 10:00:00 +0000\r\n" + raw
    via_imap = b"Delivered-To: refunds@desk.test\r\nReturn-Path: <a@customer.test>\r\n" + raw.replace(b"\r\n", b"\n")
    keys = {parse(r).dedup_key for r in (raw, via_smtp, via_imap)}
    assert len(keys) == 1
    other = letter("a@customer.test", "refund", "a different request", message_id="<same@customer.test>")
    assert parse(other).dedup_key not in keys


def test_nothing_from_a_header_can_break_a_header_of_ours():
    raw = raw_mail(
        "From: =?utf-8?B?" + base64.b64encode("Eve\r\nBcc: all@x".encode()).decode() + "?= <eve@customer.test>\n"
        "To: refunds@desk.test\nSubject: =?utf-8?B?" + base64.b64encode("refund\r\nBcc: victim@x".encode()).decode() + "?=\n"
        "Message-ID: <a b@c>\nIn-Reply-To: <ok@desk.test> <bad\u00e9@x>\n",
        b"hello",
    )
    parsed = parse(raw)
    assert parsed.inbound.subject == "refund Bcc: victim@x"
    assert "\n" not in parsed.inbound.display_name and "\r" not in parsed.inbound.display_name
    assert parsed.message_id == ""  # not one id: never echoed in our In-Reply-To
    assert "ok@desk.test" in parsed.references


def test_routing_by_recipient_and_case_tags():
    parsed = parse(letter("a@customer.test", "Re: [rf-000123] details", "x", to=REFUNDS))
    assert (parsed.inbound.kind_hint, parsed.inbound.case_ref) == ("refund", "RF-000123")
    parsed = parse(letter("a@customer.test", "appeal", "x", to=APPEALS), rcpt_tos=["appeals+RF-000007@desk.test"])
    assert (parsed.inbound.kind_hint, parsed.inbound.case_ref) == ("appeal", "RF-000007")
    # No envelope (an IMAP copy): the headers that name the recipient decide.
    raw = b"Delivered-To: appeals@desk.test\r\n" + letter("a@customer.test", "appeal", "x", to="someone@else.test")
    parsed = parse_mail(raw, {}, ADDRESSES, NOW)
    assert parsed.inbound.kind_hint == "appeal"


def test_forged_authentication_results_are_removed_and_trusted_verdicts_read():
    raw = (
        b"Authentication-Results: mx.upstream.test; dkim=fail header.d=customer.test; spf=pass; dmarc=fail\r\n"
        b"Authentication-Results: desk.test; dkim=pass; spf=pass; dmarc=pass\r\n"
        + letter("a@customer.test", "refund", "x")
    )
    cleaned, verdict = authresults.examine(raw, {"desk.test"}, "mx.upstream.test")
    assert b"desk.test; dkim=pass" not in cleaned and b"mx.upstream.test" in cleaned
    assert verdict["removed_forged"] == 1 and verdict["status"] == "unverified"
    assert verdict["results"] == {"dkim": "fail", "spf": "pass", "dmarc": "fail"}

    passing = b"Authentication-Results: mx.upstream.test (comment; x); dkim=pass; spf=pass; dmarc=pass\r\n" + letter("a@customer.test", "r", "x")
    assert authresults.examine(passing, {"desk.test"}, "mx.upstream.test")[1]["status"] == "verified"
    # No verdict at all from the trusted MTA: the mail did not come through it.
    assert authresults.examine(letter("a@customer.test", "r", "x"), {"desk.test"}, "mx.upstream.test")[1]["status"] == "unverified"
    # Nothing trusted configured: nothing is claimed either way, but forgeries still go.
    cleaned, verdict = authresults.examine(raw, {"desk.test"}, "")
    assert verdict["status"] == "unchecked" and b"desk.test; dkim=pass" not in cleaned


HEADER_NAMES = st.sampled_from(["From", "To", "Cc", "Subject", "Content-Type", "Content-Disposition", "Content-Transfer-Encoding", "Message-ID", "References", "In-Reply-To", "Authentication-Results", "Auto-Submitted", "MIME-Version"])
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=120)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=4000))
def test_any_bytes_are_parsed_or_refused_never_a_crash(data):
    try:
        parsed = parse(data)
    except MailRejected:
        return
    assert "\n" not in parsed.inbound.subject and "\r" not in parsed.inbound.subject
    authresults.examine(data, {"desk.test"}, "mx.upstream.test")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(HEADER_NAMES, TEXT), max_size=10), TEXT, st.sampled_from(["utf-8", "gb18030", "latin-1"]))
def test_any_headers_and_body_are_parsed_or_refused_never_a_crash(headers, body, charset):
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    raw = head.encode("utf-8") + b"\r\n" + body.encode(charset, "replace")
    try:
        parsed = parse(raw)
    except MailRejected:
        return
    for value in (parsed.inbound.subject, parsed.inbound.display_name, parsed.message_id, *parsed.references):
        assert "\n" not in value and "\r" not in value
