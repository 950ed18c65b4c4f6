"""Issue 6 item 9: spoofed sender authentication, through the real `refunddesk serve` over SMTP.

A forged `Authentication-Results` claiming our own authserv-id is removed before the mail is
spooled (RFC 8601 section 5), however it is written (folded, capitals, a comment first). With
`email.trusted_authserv_id` naming the upstream MTA, its verdict (the topmost field with its
id) decides: mail failing DKIM/SPF/DMARC there, or carrying no verdict of it at all, is marked
unverified where the agent looks: the message's meta, and a `sender_unverified` event in the
case's event log (shown by the console's case page, built by `review.case_page.agent_view`).

tests/test_email_smtp.py checks the receiver in-process and test_reliability_imap.py the IMAP
poller; this is the whole path, as agents see the result.
"""
from __future__ import annotations

import json

import pytest

from mail_fixtures import MailDesk, letter, mail_settings, module_relay  # noqa: F401 (fixture: one relay per module)
from refunddesk.review.case_page import agent_view
from refunddesk.store.clock import utcnow

TRUSTED = "mx.upstream.test"
UPSTREAM_FAIL = b"Authentication-Results: mx.upstream.test; dkim=fail header.d=customer.test; spf=fail; dmarc=fail\r\n"
UPSTREAM_PASS = b"Authentication-Results: mx.upstream.test; dkim=pass header.d=customer.test; spf=pass; dmarc=pass\r\n"
FORGED = b"Authentication-Results: desk.test; dkim=pass; spf=pass; dmarc=pass\r\n"
FORGED_FOLDED = b"Authentication-Results: (all checked) DESK.Test;\r\n\tdkim=pass header.d=customer.test;\r\n spf=pass; dmarc=pass\r\n"
FORGED_TRUSTED_BELOW = b"Authentication-Results: mx.upstream.test; dkim=pass; spf=pass; dmarc=pass\r\n"

CASES = {
    # name: (fields on top of the customer's mail, forged fields expected gone, expected status)
    "forged pass claiming our id, upstream fails": (UPSTREAM_FAIL + FORGED, [FORGED], "unverified"),
    "forged pass folded, in capitals, after a comment": (UPSTREAM_PASS + FORGED_FOLDED, [FORGED_FOLDED], "verified"),
    "the trusted verdict on top, a forged pass of it below": (UPSTREAM_FAIL + FORGED_TRUSTED_BELOW, [], "unverified"),
    "no verdict of the trusted MTA, only a forged one of ours": (FORGED, [FORGED], "unverified"),
    "upstream passes": (UPSTREAM_PASS, [], "verified"),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory, relay):
    tmp = tmp_path_factory.mktemp("spoofing")
    desk = MailDesk(tmp, mail_settings(tmp, relay, **{"email.trusted_authserv_id": TRUSTED, "email.auto_reply_limit": 100})).start()
    yield desk
    desk.stop()


@pytest.mark.parametrize("name", list(CASES))
def test_forged_results_are_removed_and_failing_mail_is_marked_unverified_for_the_agent(served, name):
    fields, forged, status = CASES[name]
    customer = "spoof-" + str(list(CASES).index(name)) + "@customer.test"
    raw = fields + letter(customer, "Refund", "My call froze and credit was deducted. Amount: 4 USD")
    before = len(served.inbound())
    served.send(raw, customer)
    row = served.settled(before + 1)[-1]
    (stored,) = served.db.execute("SELECT raw FROM inbound WHERE id = ?", [row["id"]]).fetchone()
    for field in forged:
        assert field not in stored
    assert stored.endswith(raw.split(b"\r\n\r\n", 1)[1])  # the body is untouched
    verdict = json.loads(row["meta"])["authentication"]
    assert verdict["status"] == status and verdict["authserv_id"] == TRUSTED
    assert verdict["removed_forged"] == len(forged)

    (case,) = served.cases_of(customer)
    (meta,) = [json.loads(m["meta"]) for m in served.messages(case.id) if m["direction"] == "in"]
    assert meta["authentication"]["status"] == status
    view = agent_view(served.desk, served.db, case.id, utcnow())  # what the console's case page shows
    actions = [e["action"] for e in view["events"]]
    assert ("sender_unverified" in actions) == (status == "unverified")
    assert ("forged_authentication_removed" in actions) == bool(forged)
    if status == "unverified":
        (event,) = [e for e in view["events"] if e["action"] == "sender_unverified"]
        assert event["data"]["results"] == verdict["results"]
