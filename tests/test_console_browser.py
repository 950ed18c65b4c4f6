"""The web console in a real headless Chromium (Debian's /usr/bin/chromium via Playwright),
served by the real `refunddesk serve`: an agent logs in, opens the most urgent case, views the
evidence, rejects with a reason, and the customer's letter appears in the outgoing mail folder.
A script in the customer's HTML mail must not run on the case page.
"""
from __future__ import annotations

import contextlib
import email
import email.policy
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conftest import base_settings, free_port, run_cli, wait_for, write_config
from serving import Served
from refunddesk.config import load
from refunddesk.desk import Desk
from refunddesk.policy.deadlines import window_deadline
from refunddesk.harness.driver import PNG, mail_case
from refunddesk.store import events
from refunddesk.store.cases import load_case
from refunddesk.store.clock import utcnow

from test_review_decisions import request_302ai

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
PASSWORD = "correct horse battery staple"
HOSTILE_HTML = (
    "<p>I was billed <b id='bold'>twice</b>.</p>"
    "<script>window.pwned = 1; document.title = 'pwned';</script>"
    "<img src='x' onerror=\"window.pwned = 2; document.title = 'pwned'\">"
    "<a href=\"javascript:window.pwned=3\">click</a>"
)
LOG_NAME = "../../etc/api\u202elog.txt"
LOG_BYTES = b"2026-11-20 10:00:01 POST /v1/chat 200 charged 6.25\n2026-11-20 10:00:01 POST /v1/chat 200 charged 6.25\n"


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console")
    port = free_port()
    config = write_config(tmp / "refunddesk.toml", base_settings(tmp, **{"console.enabled": True, "console.port": port}))
    desk = Desk.from_config(load(config, environ={}))
    db = desk.open_db()
    now = utcnow()
    urgent_at = now - timedelta(days=20)
    urgent = mail_case(
        desk, db, "marta@lumen.test", request_302ai(urgent_at - timedelta(days=1), desk), urgent_at,
        html=HOSTILE_HTML, files=(("charge.png", "image/png", PNG), (LOG_NAME, "text/plain", LOG_BYTES)),
    )
    calm = mail_case(desk, db, "calm@lumen.test", request_302ai(now - timedelta(days=1), desk), now - timedelta(hours=1))
    # Still collecting (no evidence), so not in the queue: the reader chose 700 over the total.
    chosen = mail_case(desk, db, "two@lumen.test", "I was charged $1,050 total, of which $700 twice: please refund $700.", now, files=())
    added = run_cli(config, "agents", "add", "alice", "--password-stdin", stdin=f"{PASSWORD}\n".encode())
    assert added.returncode == 0, added.stderr.decode()
    served = Served(config, tmp / "serve.log").start(wait_ports=(port,))
    yield {"url": f"http://127.0.0.1:{port}", "desk": desk, "db": db, "urgent": urgent, "calm": calm, "chosen": chosen, "served": served, "outgoing": desk.config.email.outgoing.folder}
    served.stop()
    db.conn.close()


def launch(driver, env: dict[str, str] | None = None):
    """Debian's Chromium, headless; `env` replaces its environment (None: ours)."""
    return driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, env=env)


@contextlib.contextmanager
def chromium():
    with playwright_api.sync_playwright() as driver:
        launched = launch(driver)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


def log_in(page, url: str, next_path: str = "/queue") -> None:
    page.goto(url + next_path)
    assert "/login" in page.url  # no session: every page sends the agent to the login form
    page.fill("input[name=name]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(url + next_path)


def decision_letter(folder: Path, case_id: str):
    for path in sorted(folder.glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if msg["Subject"] == f"[{case_id}] Decision on your refund request":
            return msg
    return None


def test_agent_works_the_most_urgent_case_in_the_browser(console, browser):
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    url, urgent = console["url"], console["urgent"]
    log_in(page, url)

    # The queue: the overdue case is first and marked.
    first_row = page.locator("table.queue tbody tr").first
    assert first_row.get_attribute("data-case") == urgent
    assert "overdue" in (first_row.get_attribute("class") or "")
    assert page.locator("table.queue tbody tr").count() == 2
    first_row.locator("a.case-link").click()
    page.wait_for_url(f"{url}/cases/{urgent}")

    # The customer's HTML is shown sanitized, and nothing in it ran.
    page.click("details.mail-html summary")
    assert page.locator("details.mail-html #bold, details.mail-html b").first.inner_text() == "twice"
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.title().startswith(urgent) and "pwned" not in page.title()
    response = page.goto(f"{url}/cases/{urgent}")
    assert "script-src 'none'" in response.headers["content-security-policy"]
    assert page.evaluate("typeof window.pwned") == "undefined"

    # Evidence: the image shows inline, the log downloads under its sanitized name.
    image = page.locator("img.evidence-image")
    wait_for(lambda: image.evaluate("img => img.complete && img.naturalWidth > 0"), 10, message="the evidence image to load")
    assert image.evaluate("img => img.naturalWidth") == 4
    with page.expect_download() as download:
        page.locator("a.evidence-link", has_text="log.txt").click()
    saved = download.value
    assert "/" not in saved.suggested_filename and "\u202e" not in saved.suggested_filename and saved.suggested_filename.endswith("log.txt")
    assert Path(saved.path()).read_bytes() == LOG_BYTES
    viewed = [e for e in events.for_case(console["db"], urgent) if e["action"] == "evidence_viewed"]
    assert len(viewed) >= 2 and {e["actor"] for e in viewed} == {"alice"}

    # Reject with a reason: the letter reaches the outgoing mail folder.
    page.select_option("form.reject select[name=reason]", "insufficient_evidence")
    page.fill("form.reject textarea[name=note]", "The screenshot shows one charge only.")
    page.click("form.reject button[type=submit]")
    page.wait_for_url(f"{url}/cases/{urgent}")
    assert "Rejected" in page.locator("p.flash").inner_text()
    assert page.locator("h1 .status").inner_text() == "Rejected"

    letter = wait_for(lambda: decision_letter(console["outgoing"], urgent), 15, message="the decision letter in the outgoing folder")
    body = letter.get_body(preferencelist=("plain",)).get_content()
    assert letter["To"] == "marta@lumen.test"
    assert "Reason (P302-7)" in body and "The screenshot shows one charge only." in body
    desk = console["desk"]
    case = load_case(console["db"], urgent)
    deadline = window_deadline(desk.calendar, desk.policy.timezone, datetime.fromisoformat(case.fields["incident_at"]), 7, "working_days").day
    assert f"until {deadline.isoformat()} (P302-12)" in body

    # The session cookie is out of reach of scripts and of cross-site posts.
    [cookie] = [c for c in context.cookies() if c["name"] == "refunddesk_session"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax"
    context.close()


def test_dashboard_shows_numbers_and_server_drawn_charts(console, browser):
    context = browser.new_context()
    page = context.new_page()
    log_in(page, console["url"], "/dashboard")
    assert page.locator("svg.chart").count() == 3
    assert page.locator("#acknowledged .big").inner_text().endswith("%") or page.locator("#acknowledged .big").inner_text() == "n/a"
    assert page.locator("svg.chart > title").first.text_content() == "Cases per day by channel"
    assert page.locator("svg.chart rect").count() >= 1
    context.close()


def test_the_case_page_shows_the_amounts_the_reader_chose_between(console, browser):
    page = browser.new_page()
    log_in(page, console["url"], f"/cases/{console['chosen']}")
    row = page.locator("table.fields tr", has=page.locator("th", has_text="amount"))
    assert row.locator("td").inner_text().startswith("700")
    assert row.locator(".read-choice").inner_text() == "read from several in the customer's text; the others: 1050"
    calm = page.goto(f"{console['url']}/cases/{console['calm']}")
    assert calm.ok and page.locator(".read-choice").count() == 0
    page.close()
