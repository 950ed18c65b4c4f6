"""Appeals: linked to the decided case, checked against the appeal window, and decided by a
different agent than the one who decided the case (four eyes; P302-12, PIF-8)."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from conftest import add_agents, run_cli
from refunddesk.review.decisions import DecisionError, reject
from refunddesk.review.queue import Filters, list_queue
from refunddesk.harness.driver import body_of, letters_to, mail, mail_case, receive_mail, send_email
from refunddesk.store import cases as case_store
from refunddesk.store.clock import utcnow

from test_review_decisions import request_302ai, request_ipfixed


def appeal(desk, db, sender: str, parent_id: str, when=None) -> str:
    text = f"I appeal the decision on {parent_id}.\nAccount ID: acme-prod-7\nDescription: The second charge is visible in the attached log; please review again.\n"
    return receive_mail(desk, db, mail(sender, f"Appeal {parent_id}", text, to=desk.addresses.appeals), when, to=desk.addresses.appeals)


def test_the_agent_who_decided_cannot_decide_the_appeal(make_desk, tmp_path):
    desk = make_desk()
    db = desk.open_db()
    add_agents(db, "alice", "bob")
    config = tmp_path / "refunddesk.toml"
    when = utcnow() - timedelta(hours=3)
    refund_id = mail_case(desk, db, "marta@lumen.test", request_302ai(when - timedelta(days=1), desk), when)
    assert run_cli(config, "cases", "reject", refund_id, "--reason", "insufficient_evidence", "--agent", "alice").returncode == 0

    appeal_id = appeal(desk, db, "marta@lumen.test", refund_id)
    case = case_store.load_case(db, appeal_id)
    assert appeal_id.startswith("AP-") and case.kind == "appeal" and case.parent_id == refund_id
    assert case.status == "queued", case.findings

    queued = {item.id: item for item in list_queue(desk, db, utcnow(), Filters(kind="appeal"))}
    assert queued[appeal_id].parent_decided_by == "alice"

    for verb, extra in (("approve", ["--amount", "5"]), ("reject", ["--reason", "late"])):
        refused = run_cli(config, "cases", verb, appeal_id, *extra, "--agent", "alice")
        assert refused.returncode == 1 and b"four eyes" in refused.stderr, refused.stderr
        # Names are not case-sensitive: ALICE is alice's account, and four eyes still holds.
        again = run_cli(config, "cases", verb, appeal_id, *extra, "--agent", "ALICE")
        assert again.returncode == 1 and b"alice decided" in again.stderr, again.stderr
    assert case_store.load_case(db, appeal_id).status == "queued"

    over = run_cli(config, "cases", "approve", appeal_id, "--amount", "12.51", "--agent", "bob")
    assert over.returncode == 1 and b"P302-13" in over.stderr  # the appeal is capped by the refund's amount
    done = run_cli(config, "cases", "approve", appeal_id, "--amount", "12.50", "--agent", "bob")
    assert done.returncode == 0, done.stderr.decode()
    shown = json.loads(run_cli(config, "cases", "show", appeal_id, "--json").stdout)
    assert shown["status"] == "approved" and shown["parent_id"] == refund_id

    send_email(desk, db)
    letter = letters_to(desk.config.email.outgoing.folder, "marta@lumen.test")[-1]
    assert letter["Subject"] == f"[{appeal_id}] Your appeal is approved"
    assert f"your appeal about {refund_id}" in body_of(letter) and "12.50 USD" in body_of(letter)
    assert str(letter["From"]) == desk.addresses.appeals


def test_appeal_window_is_checked_and_appeals_get_five_business_days(make_desk):
    """ipfixed: 7 calendar days from the decision to appeal; the re-review is due in 5 (PIF-8)."""
    desk = make_desk(**{"policy.preset": "ipfixed"})
    db = desk.open_db()
    start = utcnow() - timedelta(days=20)
    on_time_parent = mail_case(desk, db, "mei@ip.test", request_ipfixed(start - timedelta(days=2), desk), start)
    late_parent = mail_case(desk, db, "lin@ip.test", request_ipfixed(start - timedelta(days=2), desk), start)
    decided_at = start + timedelta(hours=2)
    reject(desk, db, on_time_parent, "alice", "quota_exceeded", now=decided_at)
    reject(desk, db, late_parent, "alice", "quota_exceeded", now=decided_at)

    in_time = appeal(desk, db, "mei@ip.test", on_time_parent, decided_at + timedelta(days=2))
    too_late = appeal(desk, db, "lin@ip.test", late_parent, decided_at + timedelta(days=8))

    late_findings = {f.code: f for f in case_store.load_case(db, too_late).findings}
    assert late_findings["appeal_window_passed"].clause == "PIF-8" and late_findings["appeal_window_passed"].blocking
    assert "appeal_window_passed" not in {f.code for f in case_store.load_case(db, in_time).findings}

    case = case_store.load_case(db, in_time)
    due = desk.calendar.add_working_days(case.completed_at.astimezone(desk.policy.timezone).date(), 5)
    assert case.review_due_at.astimezone(desk.policy.timezone).date() == due

    queue = {item.id: item for item in list_queue(desk, db, utcnow(), Filters(kind="appeal"))}
    assert [f["code"] for f in queue[too_late].blocking] == ["appeal_window_passed"]
    with pytest.raises(DecisionError, match="four eyes"):
        reject(desk, db, too_late, "alice", "late")
    reject(desk, db, too_late, "carol", "late")
    assert case_store.load_case(db, too_late).status == "rejected"
