"""Each rule, with the clause it cites, on both presets (pure: no store, no clock)."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from refunddesk.policy.calendar import WorkingCalendar
from refunddesk.policy.context import Context, History
from refunddesk.policy.model import Case
from refunddesk.policy.preset import load_preset
from refunddesk.policy.rules import evaluate, missing_items

SH = ZoneInfo("Asia/Shanghai")
CAL = WorkingCalendar("CN")
SCREENSHOT = {"filename": "charge.png", "content_type": "image/png", "size": 10, "sha256": "a" * 64}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SH)


def complete_302ai(**fields) -> Case:
    base = {
        "reason": "service_failure", "credit_type": "paid", "amount": "12.50", "currency": "USD",
        "incident_at": "2026-11-20T10:00:00+08:00", "account_id": "u_1", "description": "The model froze and PTC was deducted.",
    }
    base.update(fields)
    return Case("RF-000001", "refund", "collecting", "email", "c@x.test", fields=base, attachments=(SCREENSHOT,), created_at=at("2026-11-21 09:00"))


def complete_ipfixed(**fields) -> Case:
    base = {
        "reason": "outage", "outage_hours": "30", "purchase_at": "2026-11-10T12:00:00+08:00", "quota_used_pct": "10",
        "amount": "20", "currency": "USD", "account_id": "acme", "payment_method": "card", "description": "API down for 30 hours.",
    }
    base.update(fields)
    return Case("RF-000002", "refund", "collecting", "email", "c@x.test", fields=base, attachments=(SCREENSHOT,), created_at=at("2026-11-21 09:00"))


def codes(findings, blocking=None):
    return {(f.code, f.clause) for f in findings if blocking is None or f.blocking == blocking}


def run(policy_name: str, case: Case, known=None, history=None, now=None):
    policy = load_preset(policy_name)
    ctx = Context(policy, CAL, known or {}, history or History())
    return evaluate(case, policy.version_at(None), ctx, now or case.created_at)


def test_complete_requests_have_no_blocking_findings():
    assert codes(run("302ai", complete_302ai()), blocking=True) == set()
    assert codes(run("ipfixed", complete_ipfixed()), blocking=True) == set()


def test_an_empty_302ai_request_lists_every_required_item_with_its_clause():
    case = Case("RF-000003", "refund", "collecting", "email", "c@x.test", created_at=at("2026-11-21 09:00"))
    found = run("302ai", case)
    assert {(f.params.get("field"), f.clause) for f in found if f.code == "missing_field"} == {
        ("reason", "P302-4"), ("credit_type", "P302-3"), ("amount", "P302-9"), ("incident_at", "P302-9"),
        ("account_id", "P302-6"), ("description", "P302-9"),
    }
    assert ("missing_evidence", "P302-7") in codes(found)
    assert missing_items(case, load_preset("302ai").versions[-1])[-1] == "evidence"


@pytest.mark.parametrize(
    "incident, received, late",
    [
        # Sep 30 + 7 working days across National Day 2026 (Oct 1-7 off, Sat Oct 10 worked) = Oct 15.
        ("2026-09-30T10:00:00+08:00", "2026-10-15 23:00", False),
        ("2026-09-30T10:00:00+08:00", "2026-10-16 00:30", True),
        ("2026-11-20T10:00:00+08:00", "2026-12-01 23:59", False),
        ("2026-11-20T10:00:00+08:00", "2026-12-02 00:01", True),
    ],
)
def test_302ai_apply_window_is_seven_working_days(incident, received, late):
    case = complete_302ai(incident_at=incident).evolve(created_at=at(received))
    found = [f for f in run("302ai", case) if f.code == "deadline_passed"]
    assert bool(found) == late
    if late:
        assert found[0].clause == "P302-5" and found[0].blocking
        assert found[0].params["deadline"].startswith(("2026-10-15T23:59:59", "2026-12-01T23:59:59"))


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"reason": "accidental_topup"}, ("ineligible_reason", "P302-1")),
        ({"reason": "no_longer_needed"}, ("ineligible_reason", "P302-1")),
        ({"reason": "withdrawal"}, ("ineligible_reason", "P302-2")),
        ({"credit_type": "gifted"}, ("gifted_credit", "P302-3")),
    ],
)
def test_302ai_ineligible_requests_are_flagged_not_dropped(fields, expected):
    found = run("302ai", complete_302ai(**fields))
    assert expected in codes(found, blocking=True)


@pytest.mark.parametrize(
    "fields, received, expected",
    [
        ({"quota_used_pct": "60"}, "2026-11-21 09:00", ("quota_exceeded", "PIF-2")),
        ({"outage_hours": "20"}, "2026-11-21 09:00", ("outage_too_short", "PIF-1")),
        ({"reason": "core_failure", "outage_hours": "40"}, "2026-11-21 09:00", ("outage_too_short", "PIF-1")),
        ({"purchase_at": "2026-10-01T12:00:00+08:00"}, "2026-11-21 09:00", ("deadline_passed", "PIF-2")),
        ({"reason": "mistaken_purchase", "purchase_at": "2026-11-20T08:00:00+08:00"}, "2026-11-21 09:00", ("deadline_passed", "PIF-1")),
        ({"reason": "third_party"}, "2026-11-21 09:00", ("ineligible_reason", "PIF-2")),
    ],
)
def test_ipfixed_limits(fields, received, expected):
    found = run("ipfixed", complete_ipfixed(**fields).evolve(created_at=at(received)))
    assert expected in codes(found, blocking=True)


def test_ipfixed_thresholds_are_exceeded_only_beyond_the_limit():
    found = run("ipfixed", complete_ipfixed(quota_used_pct="50", outage_hours="24.5"))
    assert not {"quota_exceeded", "outage_too_short"} & {f.code for f in found}


def test_ipfixed_minimum_refund_is_noted_not_blocking():
    found = run("ipfixed", complete_ipfixed(amount="0.50"))
    assert ("below_minimum", "PIF-5") in codes(found, blocking=False)


def appeal(parent_ref: str, created: str) -> Case:
    return Case("AP-000001", "appeal", "collecting", "email", "c@x.test", fields={"parent_ref": parent_ref, "account_id": "acme", "description": "I disagree with the decision."}, created_at=at(created))


def test_ipfixed_appeal_window_counts_seven_days_from_the_decision():
    parent = complete_ipfixed().evolve(status="rejected", decided_at=at("2026-11-10 15:00"))
    on_time = run("ipfixed", appeal(parent.id, "2026-11-17 20:00"), known={parent.id: parent})
    late = run("ipfixed", appeal(parent.id, "2026-11-18 00:10"), known={parent.id: parent})
    assert "appeal_window_passed" not in {f.code for f in on_time}
    assert ("appeal_window_passed", "PIF-8") in codes(late, blocking=True)


def test_302ai_reapplication_counts_from_the_original_event():
    parent = complete_302ai(incident_at="2026-11-02T10:00:00+08:00").evolve(status="rejected", decided_at=at("2026-11-05 10:00"))
    late = run("302ai", appeal(parent.id, "2026-11-12 09:00"), known={parent.id: parent})
    assert ("appeal_window_passed", "P302-12") in codes(late, blocking=True)


@pytest.mark.parametrize(
    "known, code",
    [({}, "appeal_parent_unknown"), ({"RF-000002": complete_ipfixed()}, "appeal_parent_undecided")],
)
def test_appeals_must_name_a_decided_case(known, code):
    found = run("ipfixed", appeal("RF-000002", "2026-11-21 09:00"), known=known)
    assert (code, "PIF-8") in codes(found, blocking=True)


def test_fraud_signals_cite_p302_14_and_do_not_block():
    history = History(recent_requests_from_contact=4, evidence_elsewhere={"a" * 64: ("RF-000009",)})
    found = run("302ai", complete_302ai(), history=history)
    assert codes(found, blocking=False) >= {("repeat_requests", "P302-14"), ("duplicate_evidence", "P302-14")}


def test_a_date_beyond_the_calendars_data_warns_instead_of_crashing():
    case = complete_302ai(incident_at="2150-03-02T10:00:00+08:00").evolve(created_at=at("2150-03-03 10:00"))
    found = run("302ai", case)
    warning = [f for f in found if f.code == "calendar_unverified"]
    assert warning and not warning[0].blocking and warning[0].clause == "P302-5"
