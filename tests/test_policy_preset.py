"""Policies as data: both presets carry the clause IDs of docs/policy-clauses.md; versions by date."""
from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from refunddesk.policy.preset import PolicyError, load_policy_file, load_preset

CLAUSES = Path(__file__).resolve().parents[1] / "docs" / "policy-clauses.md"
PRESET_DIR = Path(__file__).resolve().parents[1] / "policy" / "presets"


@pytest.mark.parametrize("name, prefix", [("302ai", "P302-"), ("ipfixed", "PIF-")])
def test_presets_cite_only_real_clauses(name, prefix):
    known = set(re.findall(rf"\| ({re.escape(prefix)}\d+) \|", CLAUSES.read_text()))
    text = (PRESET_DIR / f"{name}.toml").read_text()
    cited = set(re.findall(rf'"({re.escape(prefix)}\d+)"', text))
    assert cited and cited <= known, cited - known
    policy = load_preset(name)
    assert str(policy.timezone) == "Asia/Shanghai"


def test_302ai_requires_what_p302_9_lists():
    version = load_preset("302ai").version_at(None)
    assert [f.name for f in version.fields_for("refund")] == ["reason", "credit_type", "amount", "incident_at", "account_id", "description"]
    assert version.evidence_required("refund") == 1
    assert version.review["refund"]["length"] == 3 and version.review["refund"]["unit"] == "working_days"


def test_ipfixed_asks_outage_hours_only_for_outage_reasons():
    version = load_preset("ipfixed").version_at(None)
    assert "outage_hours" in [f.name for f in version.fields_for("refund", "outage")]
    assert "outage_hours" not in [f.name for f in version.fields_for("refund", "mistaken_purchase")]
    assert version.review["appeal"]["length"] == 5


def test_a_case_is_judged_by_the_version_in_force_at_purchase(tmp_path):
    text = (PRESET_DIR / "ipfixed.toml").read_text()
    newer = text.split("[[versions]]", 1)[1].replace('version = "2024-01-15"', 'version = "2027-01"').replace('effective = "2000-01-01"', 'effective = "2027-01-01"').replace("length = 30", "length = 14")
    path = tmp_path / "policy.toml"
    path.write_text(text + "\n[[versions]]" + newer)
    policy = load_policy_file(path)
    assert policy.version_at(date(2026, 12, 31)).version == "2024-01-15"
    assert policy.version_at(date(2027, 1, 1)).version == "2027-01"
    assert [w.length for w in policy.version_at(date(2027, 3, 1)).windows if w.code == "apply"] == [14]


def test_a_malformed_policy_names_the_file_and_the_problem(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text((PRESET_DIR / "302ai.toml").read_text().replace('unit = "working_days"', 'unit = "fortnights"', 1))
    with pytest.raises(PolicyError, match=r"bad.toml.*fortnights"):
        load_policy_file(path)
    with pytest.raises(PolicyError, match="unknown policy preset"):
        load_preset("acme")
