"""The console's defences, against the real `refunddesk serve` over HTTP (issue 6 item 12):
no page without a login, CSRF on every form, login throttling, cookie flags, evidence served
only by sha256 as evidence of its case, and no route that edits the record."""
from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest

from conftest import base_settings, free_port, run_cli, write_config
from serving import Served
from refunddesk.config import load
from refunddesk.desk import Desk
from refunddesk.harness.driver import PNG, mail_case
from refunddesk.store.cases import load_case
from refunddesk.store.clock import utcnow
from refunddesk.store.evidence import sha256_of

from test_review_decisions import request_302ai

PASSWORD = "correct horse battery staple"
TOKEN = re.compile(r'name="csrf" value="([^"]+)"')
NOTE = b"not an image <script>alert(1)</script>"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console-security")
    port = free_port()
    config = write_config(tmp / "refunddesk.toml", base_settings(tmp, **{"console.enabled": True, "console.port": port}))
    desk = Desk.from_config(load(config, environ={}))
    db = desk.open_db()
    when = utcnow() - timedelta(hours=1)
    first = mail_case(desk, db, "a@lumen.test", request_302ai(when - timedelta(days=1), desk), when, files=(("shot.png", "image/png", PNG), ('notes".html', "text/html", NOTE)))
    second = mail_case(desk, db, "b@lumen.test", request_302ai(when - timedelta(days=1), desk), when, files=(("other.png", "image/png", PNG + b"\0"),))
    for name in ("alice", "carol", "dave"):
        assert run_cli(config, "agents", "add", name, "--password-stdin", stdin=f"{PASSWORD}\n".encode()).returncode == 0
    server = Served(config, tmp / "serve.log").start(wait_ports=(port,))
    yield {"url": f"http://127.0.0.1:{port}", "db": db, "config": config, "first": first, "second": second}
    server.stop()
    db.conn.close()


def client(served) -> httpx.Client:
    return httpx.Client(base_url=served["url"], follow_redirects=False, timeout=10)


def logged_in(served, name: str = "alice") -> tuple[httpx.Client, str]:
    http = client(served)
    token = TOKEN.search(http.get("/login").text).group(1)
    answer = http.post("/login", data={"name": name, "password": PASSWORD, "csrf": token, "next": "/queue"})
    assert answer.status_code == 303 and answer.headers["location"] == "/queue", answer.text
    return http, TOKEN.search(http.get("/queue").text).group(1)


def test_every_page_needs_a_login(served):
    http = client(served)
    sha = sha256_of(PNG)
    for path in ("/queue", "/dashboard", f"/cases/{served['first']}", f"/cases/{served['first']}/evidence/{sha}"):
        answer = http.get(path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login"), path
    posted = http.post(f"/cases/{served['first']}/approve", data={"amount": "1"})
    assert posted.status_code == 303 and posted.headers["location"].startswith("/login")
    assert load_case(served["db"], served["first"]).status == "queued"


def test_posts_without_the_csrf_token_are_refused(served):
    http, token = logged_in(served)
    case_url = f"/cases/{served['second']}/reject"
    assert http.post(case_url, data={"reason": "late"}).status_code == 403
    other, other_token = logged_in(served, "dave")
    assert other_token != token
    assert http.post(case_url, data={"reason": "late", "csrf": other_token}).status_code == 403  # another session's token
    assert http.post(case_url, data={"reason": "late", "csrf": token}, headers={"Origin": "http://evil.test"}).status_code == 403
    assert client(served).post("/login", data={"name": "alice", "password": PASSWORD}).status_code == 403
    assert http.post("/logout", data={}).status_code == 403
    assert load_case(served["db"], served["second"]).status == "queued"
    assert http.post(f"/cases/{served['second']}/request-info", data={"message": "Which key?", "csrf": token}).status_code == 303
    assert load_case(served["db"], served["second"]).status == "awaiting_customer"


def test_wrong_passwords_are_throttled(served):
    http = client(served)
    token = TOKEN.search(http.get("/login").text).group(1)
    statuses = [http.post("/login", data={"name": "carol", "password": f"guess-{n}", "csrf": token}).status_code for n in range(5)]
    assert statuses == [401] * 5
    locked = http.post("/login", data={"name": "carol", "password": PASSWORD, "csrf": token})
    assert locked.status_code == 429 and "Too many failed attempts" in locked.text
    assert "refunddesk_session" not in http.cookies or "agent" not in http.cookies.get("refunddesk_session", "")
    assert http.get("/queue").status_code == 303  # not logged in
    logged_in(served, "alice")  # one name's lock does not lock out the others on this address
    actions = [r[0] for r in served["db"].execute("SELECT action FROM events WHERE case_id IS NULL AND action LIKE 'login%'")]
    assert actions.count("login_failed") >= 5 and "login_throttled" in actions


def test_session_cookie_flags_and_security_headers(served):
    http = client(served)
    token = TOKEN.search(http.get("/login").text).group(1)
    answer = http.post("/login", data={"name": "alice", "password": PASSWORD, "csrf": token})
    cookie = answer.headers["set-cookie"].lower()
    assert "refunddesk_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    page = http.get("/queue")
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert "script-src 'none'" in page.headers["content-security-policy"] and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    assert http.post("/logout", data={"csrf": TOKEN.search(page.text).group(1)}).status_code == 303
    assert http.get("/queue").status_code == 303


def test_evidence_is_served_by_sha256_as_evidence_of_its_case_only(served):
    http, _ = logged_in(served)
    first, second = served["first"], served["second"]
    image = http.get(f"/cases/{first}/evidence/{sha256_of(PNG)}")
    assert image.status_code == 200 and image.content == PNG and image.headers["content-type"] == "image/png"
    assert image.headers["content-disposition"].startswith("inline")
    html_file = http.get(f"/cases/{first}/evidence/{sha256_of(NOTE)}")
    assert html_file.status_code == 200 and html_file.content == NOTE
    assert html_file.headers["content-type"] == "application/octet-stream"  # never rendered as a page
    disposition = html_file.headers["content-disposition"]
    assert disposition.startswith("attachment;") and "notes" in disposition and '"notes"' not in disposition
    assert "sandbox" in html_file.headers["content-security-policy"]
    assert http.get(f"/cases/{second}/evidence/{sha256_of(NOTE)}").status_code == 404  # not evidence of that case
    assert http.get(f"/cases/{first}/evidence/..%2F..%2Frefunddesk.toml").status_code == 404
    assert http.get(f"/cases/{first}/evidence/{'0' * 64}").status_code == 404
    viewed = [r[0] for r in served["db"].execute("SELECT actor FROM events WHERE case_id = ? AND action = 'evidence_viewed'", [first])]
    assert viewed.count("alice") >= 2


def test_no_route_edits_the_record(served):
    http, token = logged_in(served)
    for action in ("delete", "edit-event", "events"):
        assert http.post(f"/cases/{served['first']}/{action}", data={"csrf": token}).status_code == 404
    assert http.get("/events").status_code == 404
    disabled = run_cli(served["config"], "agents", "disable", "alice")
    assert disabled.returncode == 0
    assert http.get("/queue").status_code == 303  # a disabled agent's session ends at the next request
    assert run_cli(served["config"], "agents", "enable", "alice").returncode == 0


def test_the_login_lock_doubles_and_expires():
    """The throttle's arithmetic on a moved clock: 5 free attempts per name and address together,
    then 30 s, 60 s...; each attempt counts when it begins (as a failure until it succeeds)."""
    from refunddesk.review.auth import LoginThrottle

    now = [1000.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    for _ in range(5):
        assert throttle.attempt("carol", "10.0.0.1") == 0
    assert throttle.attempt("Carol", "10.0.0.1") == 30  # locked for this name from this address
    assert throttle.attempt("carol", "10.0.0.9") == 0   # the agent at their own desk is not locked out
    assert throttle.attempt("dave", "10.0.0.1") == 0    # the address is not locked yet (20 there)
    now[0] += 31
    assert throttle.attempt("carol", "10.0.0.1") == 0
    assert throttle.attempt("carol", "10.0.0.1") == 60  # the sixth failure locked it for twice as long
    throttle.succeeded("carol", "10.0.0.1")
    assert throttle.attempt("carol", "10.0.0.1") == 0


def test_an_address_that_guesses_many_names_is_locked():
    from refunddesk.review.auth import LoginThrottle

    throttle = LoginThrottle(clock=lambda: 1000.0)
    for n in range(20):
        assert throttle.attempt(f"name{n}", "10.0.0.7") == 0
    assert throttle.attempt("alice", "10.0.0.7") == 30
    assert throttle.attempt("alice", "10.0.0.8") == 0
