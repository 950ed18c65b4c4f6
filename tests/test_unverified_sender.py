"""Issue 21 item 8: a forged From cannot change someone else's case.

A mail whose header From names another mailbox than its SMTP envelope is flagged unverified.
To an existing case it adds its text (the agent sees it, held) but changes no field and sends
no letter; the same words from the customer's own envelope do change the case. Through the
real `serve` over SMTP.
"""

from __future__ import annotations

from conftest import add_agents, run_cli, wait_for
from mail_fixtures import MailDesk, letter, mail_settings, relay  # noqa: F401 (fixture)

CUSTOMER, ATTACKER = "owner@customer.test", "attacker@evil.test"
FIRST = "Please refund 25.00 USD, charged twice on 2026-12-01 at 10:00. Account ID: owner-1."


def test_a_forged_from_adds_text_but_changes_no_field(tmp_path):
    desk = MailDesk(tmp_path, mail_settings(tmp_path)).start()
    try:
        desk.send(letter(CUSTOMER, "Refund", FIRST), CUSTOMER)
        desk.settled(1)
        (case,) = desk.cases_of(CUSTOMER)
        assert case.fields["account_id"] == "owner-1"
        letters_before = len(desk.outbox())

        forged = letter(CUSTOMER, f"Re: [{case.id}] Refund", "Correction. Account ID: attacker-9. Amount: 900 USD.")
        desk.send(forged, ATTACKER)
        rows = desk.settled(2)
        assert rows[1]["status"] == "done" and rows[1]["case_id"] == case.id

        after = desk.case(case.id)
        assert after.fields["account_id"] == "owner-1" and after.fields["amount"] == case.fields["amount"]
        held = [m for m in desk.messages(case.id) if "attacker-9" in (m["text"] or "")]
        assert len(held) == 1, "the agent sees the held message"
        events = [e for e in desk.events(case.id) if e["action"] == "unverified_message_held"]
        assert events and events[0]["data"]["envelope_from"] == ATTACKER
        assert len(desk.outbox()) == letters_before, "no letter answers a mail nobody vouches for"

        # An agent who checked it confirms the held message: then it is applied, once.
        add_agents(desk.db, "alice")
        confirmed = run_cli(
            desk.config, "cases", "confirm-held", case.id, "--inbound", str(rows[1]["id"]), "--agent", "alice"
        )
        assert confirmed.returncode == 0, confirmed.stderr
        assert desk.case(case.id).fields["account_id"] == "attacker-9"
        assert len([m for m in desk.messages(case.id) if m["direction"] == "in" and "attacker-9" in (m["text"] or "")]) == 1
        assert any(e["action"] == "held_message_confirmed" for e in desk.events(case.id))
        again = run_cli(
            desk.config, "cases", "confirm-held", case.id, "--inbound", str(rows[1]["id"]), "--agent", "alice"
        )
        assert again.returncode == 1 and b"no held message" in again.stderr

        # The same correction from the customer's own envelope is their word.
        desk.send(letter(CUSTOMER, f"Re: [{case.id}] Refund", "Correction. Account ID: owner-2."), CUSTOMER)
        desk.settled(3)
        wait_for(
            lambda: desk.case(case.id).fields.get("account_id") == "owner-2",
            10,
            message="the verified correction applied",
        )
    finally:
        desk.stop()


def test_a_new_case_from_a_mismatched_envelope_is_opened_and_flagged(tmp_path):
    desk = MailDesk(tmp_path, mail_settings(tmp_path)).start()
    try:
        desk.send(letter(CUSTOMER, "Refund", FIRST), "bounces+srs=owner@forwarder.test")
        desk.settled(1)
        (case,) = desk.cases_of(CUSTOMER)
        assert case.fields["account_id"] == "owner-1"
        flagged = [e for e in desk.events(case.id) if e["action"] == "sender_unverified"]
        assert flagged and flagged[0]["data"]["envelope_from"] == "bounces+srs=owner@forwarder.test"
    finally:
        desk.stop()


INTERNATIONAL = "josé@exämple.test"


def international_mail() -> bytes:
    return (
        f"From: José <{INTERNATIONAL}>\r\nTo: refunds@desk.test\r\nSubject: Rückerstattung\r\n"
        "Message-ID: <intl-1@exämple.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "Please refund 5.00 EUR charged on 2026-12-01.\r\n"
    ).encode()


def test_an_internationalised_sender_gets_the_acknowledgement_through_the_relay(tmp_path, relay):
    desk = MailDesk(tmp_path, mail_settings(tmp_path, relay)).start()
    try:
        assert desk.send(international_mail(), INTERNATIONAL, mail_options=["SMTPUTF8"]) == {}
        desk.settled(1)
        (case,) = desk.cases_of(INTERNATIONAL)
        (ack,) = relay.wait_for(INTERNATIONAL)
        assert f"[{case.id}]" in ack["Subject"] and ack["To"] == INTERNATIONAL
        (received,) = [m for m in relay.messages if m.rcpt_tos == [INTERNATIONAL]]
        assert "SMTPUTF8" in [o.upper() for o in received.mail_options]
    finally:
        desk.stop()


def test_an_internationalised_sender_gets_the_acknowledgement_as_eml(tmp_path):
    desk = MailDesk(tmp_path, mail_settings(tmp_path)).start()
    try:
        desk.send(international_mail(), INTERNATIONAL, mail_options=["SMTPUTF8"])
        desk.settled(1)
        folder = desk.desk.config.email.outgoing.folder
        letters = wait_for(
            lambda: list(folder.glob("*.eml")), 15, message=f"the acknowledgement as .eml: {desk.outbox()}"
        )
        assert f"To: {INTERNATIONAL}".encode() in letters[0].read_bytes()
    finally:
        desk.stop()


def test_the_letter_to_an_unverified_sender_repeats_nothing_the_mail_said(tmp_path, relay):
    desk = MailDesk(tmp_path, mail_settings(tmp_path, relay)).start()
    try:
        text = "Please refund 25.00 USD. Description: VISIT EVIL DOT TEST FOR FREE CREDIT."
        desk.send(letter("victim@third.test", "Refund", text), "spammer@evil.test")
        desk.settled(1)
        (ack,) = relay.wait_for("victim@third.test")
        body = ack.get_content()
        assert "EVIL DOT TEST" not in body and "25.00" not in body
        assert "We received your refund request" in ack["Subject"]
    finally:
        desk.stop()
