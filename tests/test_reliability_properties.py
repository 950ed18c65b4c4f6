"""Issue 6 item 10: property-based tests (hypothesis) of the parser and of the dialog.

tests/test_email_parse.py already feeds the parser arbitrary bytes and arbitrary header lists.
Here the inputs are structured: random MIME trees (multipart of any subtype, forwarded mail
inside mail, every transfer encoding, real and bogus charsets, broken base64, missing closing
boundaries, hostile file names and header values) and random sequences of customer messages.

- parse_mail returns or raises MailRejected, never anything else; what it returns is safe to
  put in front of agents and into our headers, and its dedup key is stable.
- the whole pipeline turns such a mail into a case or a *refused* dead letter, never an
  internal-error dead letter, and keeps the raw bytes.
- the dialog never raises, never loses a field it holds, and changes a held value only when
  the customer explicitly corrected it: a labelled line, a line of our fill-in form, the
  answer to the question asked (an edit asks it again), or a choice button for that field.
"""
from __future__ import annotations

import base64
import hashlib
import quopri
import unicodedata
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mail_fixtures import APPEALS, REFUNDS
from refunddesk.intake import pipeline
from refunddesk.intake.email.parse import body_digest
from refunddesk.addresses import Addresses
from refunddesk.intake.email.parse import MailRejected, parse_mail
from refunddesk.policy import dialog
from refunddesk.policy.calendar import WorkingCalendar
from refunddesk.policy.context import Context
from refunddesk.policy.extract import read_labelled
from refunddesk.policy.form import read_form
from refunddesk.policy.model import Attachment, InboundMessage
from refunddesk.policy.preset import load_preset
from refunddesk.store import spool
from refunddesk.store.clock import utcnow

ADDRESSES = Addresses(REFUNDS, APPEALS)
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))

# --- random MIME ---------------------------------------------------------------------------------

CHARSETS = st.sampled_from(["utf-8", "gb2312", "gbk", "gb18030", "big5", "iso-2022-jp", "shift_jis", "euc-kr",
                            "iso-8859-1", "windows-1252", "koi8-r", "utf-7", "utf-16", "x-unknown", "", "utf-8\"; x=\""])
ENCODINGS = st.sampled_from(["7bit", "8bit", "binary", "base64", "quoted-printable", "x-uuencode", "bogus", ""])
LEAF_TYPES = st.sampled_from(["text/plain", "text/html", "image/png", "image/jpeg", "application/pdf", "application/octet-stream",
                              "application/zip", "message/delivery-status", "text/rfc822-headers", "application/pkcs7-signature",
                              "text/calendar", "application/ms-tnef", "text/vcard", "message/external-body", "bogus", "text/"])
MULTIPART = st.sampled_from(["mixed", "alternative", "related", "report; report-type=delivery-status", "signed", "digest", "x-weird"])
NASTY = st.sampled_from(["../../etc/passwd", "/abs/path.png", "a\x00b", "\u202egnp.exe", "CON", "..", "", "x" * 300,
                         "=?utf-8?B?L2V0Yy9wYXNzd2Q=?=", "a\r\nBcc: x@y", "扣费截图.png", "ok.txt"])
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
HEADER_TEXT = st.one_of(TEXT, NASTY, st.builds(lambda cs, t: f"=?{cs or 'utf-8'}?B?{base64.b64encode(t.encode()).decode()}?=", CHARSETS, TEXT))


def encode_body(data: bytes, encoding: str, broken: bool) -> bytes:
    if encoding == "base64":
        out = base64.encodebytes(data)
        return out[: len(out) // 2] + b"!!" if broken else out
    if encoding == "quoted-printable":
        out = quopri.encodestring(data)
        return out + b"=Z" if broken else out
    return data


@st.composite
def leaf(draw) -> bytes:
    content_type = draw(LEAF_TYPES)
    charset = draw(CHARSETS)
    encoding = draw(ENCODINGS)
    text = draw(TEXT)
    payload = draw(st.one_of(st.binary(max_size=300), st.just(text.encode(charset or "utf-8", "replace") if charset in ("utf-8", "gbk", "gb18030", "big5", "iso-8859-1") else text.encode())))
    lines = [f"Content-Type: {content_type}" + (f"; charset={charset}" if charset else "")]
    if encoding:
        lines.append(f"Content-Transfer-Encoding: {encoding}")
    disposition = draw(st.sampled_from([None, "inline", "attachment"]))
    if disposition:
        name = draw(st.one_of(NASTY, TEXT))
        style = draw(st.sampled_from(["quoted", "rfc2231", "bare"]))
        if style == "rfc2231":
            lines.append(f"Content-Disposition: {disposition}; filename*=utf-8''" + "".join(f"%{b:02X}" for b in name.encode("utf-8", "surrogatepass")))
        elif style == "bare":
            lines.append(f"Content-Disposition: {disposition}; filename={name}")
        else:
            lines.append(f'Content-Disposition: {disposition}; filename="{name}"')
    if draw(st.booleans()):
        lines.append(f"Content-ID: <{draw(TEXT)}>")
    head = "\r\n".join(lines).encode("utf-8", "surrogateescape")
    return head + b"\r\n\r\n" + encode_body(payload, encoding, draw(st.booleans()))


def part(children: st.SearchStrategy) -> st.SearchStrategy:
    @st.composite
    def multipart(draw) -> bytes:
        boundary = draw(st.one_of(st.just("b" + str(draw(st.integers(0, 9)))), st.text(alphabet="abc-=_ '()+,./:?", min_size=0, max_size=12)))
        inner = draw(st.lists(children, max_size=4))
        body = draw(st.sampled_from([b"", b"This is a multi-part message.\r\n"]))
        for child in inner:
            body += f"--{boundary}\r\n".encode() + child + b"\r\n"
        if draw(st.booleans()):
            body += f"--{boundary}--\r\n".encode()  # sometimes the closing boundary is missing
        quoted = draw(st.booleans())
        return f"Content-Type: multipart/{draw(MULTIPART)}; boundary={'%s' % chr(34) if quoted else ''}{boundary}{chr(34) if quoted else ''}\r\n\r\n".encode() + body

    @st.composite
    def forwarded(draw) -> bytes:
        return b"Content-Type: message/rfc822\r\n\r\n" + draw(message_headers()) + draw(children)

    return st.one_of(multipart(), forwarded())


@st.composite
def message_headers(draw) -> bytes:
    fields = [
        ("From", draw(st.one_of(st.just("Wang <wang@customer.test>"), HEADER_TEXT.map(lambda t: f"{t} <a@customer.test>"), HEADER_TEXT))),
        ("Subject", draw(HEADER_TEXT)),
        ("Message-ID", draw(st.one_of(st.just("<m1@customer.test>"), HEADER_TEXT))),
    ]
    for name in draw(st.lists(st.sampled_from(["References", "In-Reply-To", "To", "Cc", "Auto-Submitted", "Authentication-Results", "Date", "Reply-To", "MIME-Version"]), max_size=4)):
        fields.append((name, draw(HEADER_TEXT)))
    return b"".join(f"{k}: {v}\r\n".encode("utf-8", "surrogateescape") for k, v in fields)


MIME = st.builds(lambda headers, body: headers + body, message_headers(), st.recursive(leaf(), part, max_leaves=8))


def check_parsed(parsed, raw: bytes) -> None:
    inbound = parsed.inbound
    for value in (inbound.subject, inbound.display_name, parsed.message_id, inbound.sender, *parsed.references):
        assert "\r" not in value and "\n" not in value, value
    assert isinstance(inbound.text, str)
    for attachment in inbound.attachments:
        name = attachment.filename
        assert name and len(name) <= 120 and "/" not in name and "\\" not in name, name
        assert all(unicodedata.category(ch)[0] != "C" for ch in name), repr(name)
        assert attachment.size == len(attachment.data) and attachment.sha256 == hashlib.sha256(attachment.data).hexdigest()
    meta = {"mail_from": "x@customer.test", "rcpt_tos": [REFUNDS]}
    assert parse_mail(raw, meta, ADDRESSES, NOW).dedup_key == parsed.dedup_key


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(MIME)
def test_any_mime_tree_is_parsed_safely_or_refused_never_a_crash(raw):
    try:
        parsed = parse_mail(raw, {"mail_from": "x@customer.test", "rcpt_tos": [REFUNDS]}, ADDRESSES, NOW)
    except MailRejected:
        return
    check_parsed(parsed, raw)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from conftest import base_settings, write_config
    from refunddesk.config import load
    from refunddesk.desk import Desk

    tmp = tmp_path_factory.mktemp("properties")
    desk = Desk.from_config(load(write_config(tmp / "refunddesk.toml", base_settings(tmp, **{"email.auto_reply_limit": 100000})), environ={}))
    db = desk.open_db()
    yield desk, db
    db.conn.close()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(MIME, st.integers(0, 10**12))
def test_the_pipeline_turns_any_mime_tree_into_a_case_or_a_refusal_never_an_internal_error(store, raw, serial):
    desk, db = store
    inbound_id, new = spool.spool(db, "email", f"pipe:property-{serial}-{hashlib.sha256(raw).hexdigest()}", raw, utcnow(), {"source": "pipe", "rcpt_tos": [REFUNDS], "mail_from": "x@customer.test"})
    if not new:
        return
    status = pipeline.process(desk, db, inbound_id)
    (kept, error) = db.execute("SELECT raw, error FROM inbound WHERE id = ?", [inbound_id]).fetchone()
    assert kept == raw
    assert status in ("done", "duplicate") or (status == "dead" and error.startswith("refused: ")), error


# --- random dialogs ------------------------------------------------------------------------------

FRAGMENTS = st.sampled_from([
    "Amount: 12.50 USD", "Amount: 13 USD", "金额：100元", "Amount charged: 7.20 USD", "I was charged $99 twice.",
    "my friend was charged 5 USD too", "Time of the charge: 2026-11-20 10:00", "昨天下午3点扣的费", "It happened on 2026-11-21 09:30.",
    "Account ID: u_88213", "Account ID: acct-2", "账号：13800000000", "Reason for the refund: service_failure",
    "Reason for the refund: duplicate_charge", "The model froze and gave no result.", "I topped up too much by mistake.",
    "It was paid credit from my top-up.", "it was gifted credit", "Was the charge on paid or gifted credit: paid",
    "Description of the problem: the stream stopped half-way", "RF-000123", "Case ID of the decision you appeal: RF-000007",
    "Purchase date: 2026-11-01", "Share of the monthly quota used: 30", "How long the outage lasted: 5", "Payment method: paypal",
    "yes", "ok", "done", "no", "1", "2", "", "> Amount: 1 USD", "Currency: EUR", "Amount:", "取消",
])
COMMANDS = st.sampled_from([None, None, None, "confirm", "cancel", "done_evidence", "edit:amount", "edit:account_id", "edit:incident_at",
                            "edit:reason", "choose:reason:service_failure", "choose:reason:withdrawal", "choose:credit_type:paid",
                            "choose:credit_type:gifted", "choose:payment_method:card", "refund", "appeal", "status", "help"])
FILES = st.lists(st.binary(min_size=1, max_size=8).map(lambda d: Attachment("shot.png", "image/png", len(d), hashlib.sha256(d).hexdigest())), max_size=2)
DEPENDENT = {"currency": "amount", "incident_date_only": "incident_at"}
CONTEXTS = {name: Context(load_preset(name), WorkingCalendar("CN")) for name in ("302ai", "ipfixed")}


@st.composite
def turns(draw) -> list[tuple[str, str | None, list[Attachment]]]:
    count = draw(st.integers(1, 5))
    return [
        ("\n".join(draw(st.lists(st.one_of(FRAGMENTS, FRAGMENTS, TEXT), max_size=4))), draw(COMMANDS), draw(FILES))
        for _ in range(count)
    ]


def explicitly_named(name: str, text: str, command: str | None, asking: str | None) -> bool:
    source = DEPENDENT.get(name, name)
    named = set(read_labelled(text)) | set(read_form(text))
    if name == "currency":
        named |= {"amount"} & (set(read_labelled(text)) | set(read_form(text)))
    return (source in named or name in named or asking in (name, source)
            or (command or "").startswith((f"choose:{name}:", f"choose:{source}:")))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["email", "telegram"]), st.sampled_from(["refund", "appeal"]), st.sampled_from(list(CONTEXTS)), turns())
def test_the_dialog_never_fails_and_never_loses_a_field_it_holds(channel, kind, policy, messages):
    ctx = CONTEXTS[policy]
    now = NOW
    first = True
    case = None
    for index, (text, command, files) in enumerate(messages):
        inbound = InboundMessage(
            channel, "tg:7" if channel == "telegram" else "alice@customer.test", text, now, f"t{index}",
            conversation_key="7" if channel == "telegram" else "alice@customer.test", kind_hint=kind,
            language="en" if channel == "telegram" else None, attachments=tuple(files), command=command,
        )
        if first:
            case = dialog.new_case("RF-000001" if kind == "refund" else "AP-000001", inbound, now, kind)
            first = False
        before, asking = dict(case.fields), case.dialog.get("asking")
        result = dialog.step(case, inbound, now, ctx)
        after = result.case.fields
        for name, value in before.items():
            if not value:
                continue
            assert after.get(name), f"{name} was lost after {text!r} / {command!r}: {before} -> {after}"
            if after[name] != value:
                assert explicitly_named(name, text, command, asking), f"{name} changed {value!r} -> {after[name]!r} by {text!r} / {command!r} (asking {asking})"
        assert {a["sha256"] for a in case.attachments} <= {a["sha256"] for a in result.case.attachments}
        case = result.case
        now = now + timedelta(minutes=7)


@given(st.binary(max_size=300).map(lambda b: b.replace(b"x", b"\r\n").replace(b"y", b"\r")), st.integers(1, 7))
@settings(max_examples=400, deadline=None)
def test_body_digest_read_in_pieces_is_the_digest_of_the_whole_body(body, piece):
    # Dedup keys of mails spooled before must still match: the pieces change nothing.
    raw = b"Subject: x\r\n\r\n" + body
    start = raw.index(b"\r\n\r\n") + 4
    expected = hashlib.sha256(raw[start:].replace(b"\r\n", b"\n").rstrip()).hexdigest()
    assert body_digest(raw, start, piece) == expected
