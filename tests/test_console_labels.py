"""The console speaks to agents in words, not keys: every field, reason, status, flag, finding,
letter and event has a label, and every time says its zone. Before the first agent exists the
login page says how to add one. Through the real `refunddesk serve` in a real Chromium.
"""
from __future__ import annotations

import ast
import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from conftest import REPO, base_settings, free_port, run_cli, write_config
from serving import Served
from refunddesk.config import load
from refunddesk.desk import Desk
from refunddesk.harness.driver import mail_case
from refunddesk.policy.model import CHANNELS, KINDS, STATUSES
from refunddesk.policy.preset import PRESETS, load_preset
from refunddesk.review.agents import MIN_PASSWORD
from refunddesk.review.labels import table, time_text
from refunddesk.store.cases import load_case
from refunddesk.store.clock import utcnow

from test_console_browser import PASSWORD, chromium, log_in

SOURCES = ("policy", "intake", "bot", "review", "store", "outbound", "worker", "harness", "refunddesk")
TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d UTC\+8$")


def calls(tree: ast.AST, name: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and name in (getattr(node.func, "id", None), getattr(node.func, "attr", None)):
            yield node


def values(node: ast.AST | None, assigned: dict[str, ast.AST]) -> set[str]:
    """The strings an expression can be: a literal, either side of `a if test else b`, or what
    the name it reads was last given."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return values(node.body, assigned) | values(node.orelse, assigned)
    if isinstance(node, ast.Name) and node.id in assigned:
        return values(assigned[node.id], assigned)
    return set()


def codes_in_sources() -> dict[str, set[str]]:
    """What the code records: finding codes, event actions, letter kinds, as string literals."""
    found: dict[str, set[str]] = {"findings": set(), "events": set(), "letter_kinds": {"dialog"}}
    for folder in SOURCES:
        for path in (REPO / folder).rglob("*.py"):
            tree = ast.parse(path.read_text("utf-8"))
            assigned = {t.id: a.value for a in ast.walk(tree) if isinstance(a, ast.Assign) for t in a.targets
                        if isinstance(t, ast.Name)}
            for call in calls(tree, "Finding"):
                found["findings"] |= values(call.args[0] if call.args else None, assigned)
            for call in calls(tree, "record"):
                if len(call.args) >= 4 and isinstance(call.args[3], ast.Constant):
                    found["events"].add(call.args[3].value)
            for call in calls(tree, "append"):
                if call.args and isinstance(call.args[0], ast.Tuple) and isinstance(call.args[0].elts[0], ast.Constant):
                    found["events"].add(call.args[0].elts[0].value)  # the dialog's (action, data) events
            for call in calls(tree, "Reply"):
                if len(call.args) >= 3 and isinstance(call.args[2], ast.Constant):
                    found["letter_kinds"].add(call.args[2].value)
    return {group: {code for code in codes if isinstance(code, str)} for group, codes in found.items()}


def test_every_key_the_desk_knows_has_a_label():
    labels = table()
    known = {"statuses": set(STATUSES), "kinds": set(KINDS), "channels": set(CHANNELS), "fields": set(),
             "choices": set(), "reject_reasons": set(), "flags": set(), **codes_in_sources()}
    for preset in PRESETS:
        for version in load_preset(preset).versions:
            known["fields"] |= {f.name for f in version.fields}
            known["choices"] |= {r.code for r in version.reasons} | {c for f in version.fields for c in f.choices}
            known["reject_reasons"] |= set(version.reject_reasons)
            known["flags"] |= set(version.special.get("flags", ()))
    known["letter_templates"] = {p.name.removesuffix(".txt.j2") for p in (REPO / "templates" / "en").glob("*.txt.j2")}
    known["events"] |= {"approved", "rejected", "agent_enabled", "agent_disabled",
                        "sla_ack_at_risk", "sla_review_overdue", "sla_review_due_soon"}  # made up at run time
    assert len(known["findings"]) >= 15 and len(known["events"]) >= 25  # the scan finds what it looks for
    missing = {group: sorted(keys - set(labels[group])) for group, keys in known.items() if keys - set(labels[group])}
    assert missing == {}


def test_times_say_their_zone():
    moment = datetime(2026, 12, 8, 9, 30, tzinfo=timezone.utc)
    assert time_text(moment, timezone.utc) == "2026-12-08 09:30 UTC"
    assert time_text(moment, ZoneInfo("Asia/Shanghai")) == "2026-12-08 17:30 UTC+8"
    assert time_text(moment, ZoneInfo("Asia/Kolkata")) == "2026-12-08 15:00 UTC+5:30"
    assert time_text(moment, ZoneInfo("America/New_York")) == "2026-12-08 04:30 UTC-5"
    assert time_text(moment.replace(month=7), ZoneInfo("America/New_York")) == "2026-07-08 05:30 UTC-4"


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def desk_without_agents(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("labels")
    port = free_port()
    settings = base_settings(tmp, **{"console.enabled": True, "console.port": port})
    config = write_config(tmp / "refunddesk.toml", settings)
    desk = Desk.from_config(load(config, environ={}))
    db = desk.open_db()
    now = utcnow()
    day = (now - timedelta(days=1)).astimezone(desk.policy.timezone).date().isoformat()
    # No credit type (a blocking finding), a day without a time, a reason from the preset's keywords.
    text = (
        "Hello,\nReason: the service froze and timed out, but I was still charged\nAmount: 9.80 USD\n"
        f"Date: {day}\nAccount ID: acme-prod-7\nDescription: The run froze and was billed anyway.\n"
    )
    case_id = mail_case(desk, db, "li@lumen.test", text, now - timedelta(hours=3))
    served = Served(config, tmp / "serve.log").start(wait_ports=(port,))
    yield {"url": f"http://127.0.0.1:{port}", "config": config, "desk": desk, "db": db, "case": case_id, "day": day}
    served.stop()
    db.conn.close()


def test_the_login_page_says_how_to_add_the_first_agent_until_one_exists(desk_without_agents, browser):
    url, config = desk_without_agents["url"], desk_without_agents["config"]
    page = browser.new_page()
    page.goto(url + "/login")
    hint = page.locator(".first-agent")
    assert "No agent can log in yet" in hint.inner_text()
    assert f"at least {MIN_PASSWORD} characters" in hint.inner_text() and "--password-stdin" in hint.inner_text()
    command = hint.locator("pre code").inner_text().split()
    assert command == ["refunddesk", "agents", "add", "NAME"]

    # The command works as the page says, with the rule it states.
    too_short = run_cli(config, *command[1:3], "alice", "--password-stdin", stdin=b"x" * (MIN_PASSWORD - 1) + b"\n")
    assert too_short.returncode != 0 and f"at least {MIN_PASSWORD} characters" in too_short.stderr.decode()
    page.reload()
    assert page.locator(".first-agent").count() == 1
    added = run_cli(config, *command[1:3], "alice", "--password-stdin", stdin=f"{PASSWORD}\n".encode())
    assert added.returncode == 0, added.stderr.decode()
    page.reload()
    assert page.locator("form[action='/login']").count() == 1 and page.locator(".first-agent").count() == 0
    page.close()


def test_the_case_page_shows_labels_and_zoned_times_not_keys(desk_without_agents, browser):
    if not run_cli(desk_without_agents["config"], "agents", "list").stdout.strip():
        assert run_cli(desk_without_agents["config"], "agents", "add", "alice", "--password-stdin",
                       stdin=f"{PASSWORD}\n".encode()).returncode == 0
    url, case_id, desk = desk_without_agents["url"], desk_without_agents["case"], desk_without_agents["desk"]
    page = browser.new_page()
    log_in(page, url, f"/cases/{case_id}")

    def detail(label: str) -> str:
        return page.locator("table.fields tr", has=page.locator("th", has_text=label)).locator("td").inner_text()

    assert page.locator("h1 .status").inner_text() == "Collecting details"
    assert detail("Reason") == "Service failed but credit was deducted"
    assert detail("Amount") == "9.80 USD"
    assert detail("When it happened") == f"{desk_without_agents['day']} (day only, no time given)"
    assert page.locator("table.fields th").all_inner_texts() == ["Reason", "Amount", "When it happened", "Account ID",
                                                                  "Description"]
    missing = page.locator(".finding[data-code=missing_field]")
    assert "Detail missing" in missing.inner_text() and "Required field missing: Credit type." in missing.inner_text()
    assert "Insufficient evidence (P302-7)" in page.locator("form.reject select").inner_text()
    log = page.locator("section.events").inner_text()
    assert "Case opened" in log and "Detail read" in log and "Detail: Reason · Value: Service failed" in log

    # Nowhere outside the conversation (the customer's words and our letters) is a key shown.
    shown = "\n".join(page.locator("h1, section.facts, section.findings, section.decide, section.letters,"
                                   " section.events").all_inner_texts())
    keys = sorted({key for group in table().values() for key in group if "_" in key} | {"incident_date_only"})
    assert [key for key in keys if key in shown] == []

    # Every time is in the desk's zone and says so.
    times = page.locator("main time").all_inner_texts()
    assert len(times) >= 8 and all(TIME.match(t) for t in times), times
    created = load_case(desk_without_agents["db"], case_id).created_at.astimezone(desk.policy.timezone)
    received = page.locator("section.facts tr", has=page.locator("th", has_text="Received")).locator("td")
    assert received.inner_text() == f"{created:%Y-%m-%d %H:%M} UTC+8"
    assert page.locator("footer.zone").inner_text() == "Times are in Asia/Shanghai (UTC+8)."

    page.goto(f"{url}/queue?status=all")
    row = page.locator(f"table.queue tr[data-case='{case_id}']")
    cells = row.locator("td").all_inner_texts()
    assert cells[1:4] == ["Refund", "Collecting details", "E-mail"]
    assert "Detail missing (P302-3)" in cells[7]
    page.close()
