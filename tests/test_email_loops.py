"""RFC 3834 over real sockets: robots, lists, bounces and our own mail get no automatic reply.

Every such mail is still stored as a case (nothing is dropped); only the letter is held back,
recorded in the outbox as `suppressed` with the reason. A normal customer mail sent after
them is answered, which proves the relay path works and that the silence is deliberate.
"""
from __future__ import annotations

import email.policy
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

from mail_fixtures import PNG, MailDesk, letter, mail_settings, module_relay  # noqa: F401 (fixture: one relay per module)
from test_email_dialog import request_text

CAP = 3


@pytest.fixture(scope="module")
def desk(tmp_path_factory, relay):
    tmp = tmp_path_factory.mktemp("loops")
    served = MailDesk(tmp, mail_settings(tmp, relay, **{"email.auto_reply_limit": CAP})).start()
    yield served
    served.stop()


def report(reporter: str, original_headers: str) -> bytes:
    """A delivery status notification as an MTA writes it (RFC 3464)."""
    dsn = MIMEMultipart("report", report_type="delivery-status")
    dsn["From"] = reporter
    dsn["To"] = "refunds@desk.test"
    dsn["Subject"] = "Undelivered Mail Returned to Sender"
    dsn["Message-ID"] = "<dsn-%d@relay.test>" % abs(hash(original_headers))
    dsn.attach(MIMEText("I'm sorry to have to inform you that your message could not be delivered."))
    dsn.attach(MIMEMessage(email.message_from_string("Reporting-MTA: dns; relay.test\n\nFinal-Recipient: rfc822; gone@customer.test\nAction: failed\nStatus: 5.1.1\n"), "delivery-status"))
    dsn.attach(MIMEText(original_headers, "rfc822-headers"))
    return dsn.as_bytes(policy=email.policy.SMTP)


ROBOTS = {
    # case name: (From address, envelope sender, extra headers)
    "auto-replied": ("vacation@customer.test", None, {"Auto-Submitted": "auto-replied"}),
    "auto-generated": ("system@customer.test", None, {"Auto-Submitted": "auto-generated"}),
    "null-sender": ("someone@customer.test", "", {}),
    "mailer-daemon": ("MAILER-DAEMON@customer.test", None, {}),
    "postmaster": ("postmaster@customer.test", None, {}),
    "request": ("billing-request@lists.test", None, {}),
    "owner": ("owner-billing@lists.test", None, {}),
    "precedence-bulk": ("news@shop.test", None, {"Precedence": "bulk"}),
    "precedence-list": ("member@lists.test", None, {"Precedence": "list"}),
    "precedence-junk": ("promo@shop.test", None, {"Precedence": "junk"}),
    "list-id": ("poster@lists.test", None, {"List-Id": "<billing.lists.test>"}),
    "list-unsubscribe": ("digest@lists.test", None, {"List-Unsubscribe": "<mailto:leave@lists.test>"}),
    "our-own-address": ("refunds@desk.test", None, {}),
    "our-plus-address": ("appeals+AP-000001@desk.test", None, {}),
    "other-refunddesk": ("refunds@other-desk.test", None, {"Auto-Submitted": "auto-replied", "X-Loop": "refunds@other-desk.test"}),
}


def test_every_robot_mail_is_stored_but_gets_no_automatic_reply(desk, relay):
    for name, (sender, envelope, headers) in ROBOTS.items():
        raw = letter(sender, f"Re: refund ({name})", request_text(), headers=headers)
        desk.send(raw, sender if envelope is None else envelope)
    bounce = report("MAILER-DAEMON@relay.test", "From: someone@else.test\nTo: gone@customer.test\nMessage-ID: <not-ours@else.test>\nSubject: hi\n")
    desk.send(bounce, "")
    expected = len(ROBOTS) + 1
    rows = desk.settled(expected)
    assert all(r["status"] == "done" and r["case_id"] for r in rows[:expected])  # stored as cases

    control = "person@customer.test"
    desk.send(letter(control, "Refund", request_text()), control)
    relay.wait_for(control)  # the relay works, and letters go out in order

    robots = [address.lower() for address, _, _ in ROBOTS.values()] + ["mailer-daemon@relay.test"]
    assert [m.rcpt_tos for m in relay.messages] == [[control]]
    held = {address: desk.outbox(address) for address in robots}
    for address, rows in held.items():
        assert rows and all(r["status"] == "suppressed" and r["last_error"].startswith("not sent: ") for r in rows), address
    reason = {address: rows[0]["last_error"] for address, rows in held.items()}
    assert "Auto-Submitted: auto-replied" in reason["vacation@customer.test"]
    assert "null envelope sender" in reason["someone@customer.test"]
    assert "robot sender" in reason["billing-request@lists.test"] and "robot sender" in reason["owner-billing@lists.test"]
    assert "Precedence: junk" in reason["promo@shop.test"]
    assert "mailing list (List-Id)" in reason["poster@lists.test"]
    assert "our own address" in reason["appeals+ap-000001@desk.test"]
    assert "null envelope sender" in reason["mailer-daemon@relay.test"]


def test_one_sender_gets_at_most_the_capped_number_of_automatic_replies(desk, relay):
    chatty = "chatty@customer.test"
    for index in range(CAP + 2):
        desk.send(letter(chatty, f"Refund {index}", f"Request number {index}: my call failed and credit was deducted."), chatty)
    relay.wait_for(chatty, CAP)
    desk.settled(len(desk.inbound()))
    rows = desk.outbox(chatty)
    assert [r["status"] for r in rows].count("suppressed") == 2
    assert all("limit" in r["last_error"] for r in rows if r["status"] == "suppressed")
    assert len(desk.cases_of(chatty)) == CAP + 2  # every request is still recorded
    control = "after-chatty@customer.test"
    desk.send(letter(control, "Refund", "my call failed"), control)
    relay.wait_for(control)
    assert len(relay.to(chatty)) == CAP


def test_a_bounce_of_our_letter_is_attached_to_its_case_and_not_answered(desk, relay):
    customer = "gone@customer.test"
    desk.send(letter(customer, "Refund", request_text(), files=(("charge.png", PNG, "image/png"),)), customer)
    (ack,) = relay.wait_for(customer)
    (case,) = desk.cases_of(customer)
    original = f"From: refunds@desk.test\nTo: {customer}\nSubject: {ack['Subject']}\nMessage-ID: {ack['Message-ID']}\n"
    before = len(desk.inbound())
    desk.send(report("MAILER-DAEMON@mx.customer.test", original), "")
    desk.settled(before + 1)
    assert desk.cases_of("mailer-daemon@mx.customer.test") == []  # no case of its own
    bounce = [m for m in desk.messages(case.id) if '"bounce": true' in m["meta"]]
    assert len(bounce) == 1 and "could not be delivered" in bounce[0]["text"]
    assert "bounce_received" in [e["action"] for e in desk.events(case.id)]
    assert desk.outbox("mailer-daemon@mx.customer.test") == []
