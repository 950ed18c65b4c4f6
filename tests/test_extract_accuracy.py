"""The extractor against the evaluation sets of real-looking first messages.

tests/data/reading_eval.json is the issue-13 set: first mails written by people who had not
read the reader (English, Chinese, mixed; terse, formal, angry, forwarded, HTML-only tables,
top-posted, signatures, order/phone/token distractors), labelled by the rules of its SPEC.
tests/data/labelled_requests.json is the older, smaller set the reader was first tuned on; it
keeps its own target. Each entry is read as the mail parser hands it over (tests/reading_eval.py).

A field counts as right when it matches exactly (a null expected and nothing read is right
too); an entry labelled date-only compares dates. A value read where the label says null is
"invented": that must never happen, whatever the accuracy.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from reading_eval import DEFAULT_SET, SCORED, load, sample, score
from refunddesk.policy.extract import read_fields

OLD_SET = Path(__file__).parent / "data" / "labelled_requests.json"
OLD_TARGET = 0.95
TARGET = 0.97  # issue 13, per field
# What the reader reaches today on reading_eval.json, rounded down: it may not fall below.
FLOOR = {"amount": 97, "currency": 99, "incident_at": 97}
REPORTED = (*SCORED, "account_id")


@pytest.fixture(scope="module")
def eval_result():
    result = score([sample(e) for e in load([DEFAULT_SET])], read_fields)
    print(f"\n{DEFAULT_SET.name}\n{result.table()}")
    if result.wrong:
        print("misses:\n  " + "\n  ".join(result.wrong))
    return result


def test_evaluation_set_is_big_and_balanced():
    entries = load([DEFAULT_SET])
    assert len(entries) >= 300, f"{len(entries)} entries, issue 13 asks for at least 300"
    languages = Counter(entry["lang"] for entry in entries)
    english, chinese = languages["en"], languages["zh"] + languages["mixed"]
    assert abs(english - chinese) <= 0.2 * len(entries), languages
    for name in SCORED:
        nulls = sum(e["expected"][name] is None for e in entries)
        assert nulls >= 0.05 * len(entries), f"only {nulls} null {name} to test invention against"


def test_evaluation_set_invents_nothing(eval_result):
    assert not eval_result.invented, "invented values:\n" + "\n".join(eval_result.invented)


@pytest.mark.parametrize("name", SCORED)
def test_evaluation_set_stays_above_what_was_reached(eval_result, name):
    assert eval_result.percent(name) >= FLOOR[name], f"{name}: {eval_result.percent(name):.1f} %"


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=f"issue 13: {name} at {FLOOR[name]} %"))
    if FLOOR[name] < 100 * TARGET else name for name in SCORED])
def test_evaluation_set_reaches_the_target(eval_result, name):
    assert eval_result.percent(name) >= 100 * TARGET, f"{name}: {eval_result.percent(name):.1f} % below {TARGET:.0%}"


def test_old_set_is_big_and_balanced():
    entries = load([OLD_SET])
    assert len(entries) >= 80
    languages = Counter(entry["lang"] for entry in entries)
    assert languages["en"] >= 30 and languages["zh"] >= 30 and languages["mixed"] >= 5
    for name in SCORED:
        assert any(e["expected"][name] is None for e in entries), f"no null {name} to test against"


def test_old_set_accuracy_per_field_and_nothing_invented():
    result = score([sample(e) for e in load([OLD_SET])], read_fields, REPORTED)
    print(f"\n{OLD_SET.name}\n{result.table()}\n(account_id is reported, not asserted)")
    if result.wrong:
        print("misses:\n  " + "\n  ".join(result.wrong))

    assert not result.invented, "invented values:\n" + "\n".join(result.invented)
    for name in SCORED:
        assert result.percent(name) >= 100 * OLD_TARGET, f"{name}: {result.percent(name):.1f} % below {OLD_TARGET:.0%}"


@pytest.mark.parametrize("entry", load([OLD_SET, DEFAULT_SET]), ids=lambda e: e["id"])
def test_entry_invents_nothing(entry):
    """Per entry, so a regression names the message that caused it."""
    result = score([sample(entry)], read_fields, REPORTED)  # a field the entry does not label is not scored
    assert not result.invented, result.invented
