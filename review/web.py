"""The agents' web console: a small Starlette app served by uvicorn inside `refunddesk serve`.

Server-rendered pages (autoescaped Jinja2 from templates/console), no JavaScript at all, so
the Content-Security-Policy forbids every script: customer HTML that slipped past the
sanitizer still could not run. Sessions are signed cookies (HttpOnly, SameSite=Lax) and every
form carries a CSRF token. Database work runs in worker threads, never on the event loop that
also drives the outbox senders.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from importlib import resources
from urllib.parse import quote

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from refunddesk.desk import Desk
from refunddesk.store import events
from refunddesk.store.clock import utcnow

from . import csrf
from .agents import MIN_PASSWORD, any_active, verify
from .auth import (
    client_of,
    open_session,
    revoke_session,
    session_id,
    session_valid,
    sign_in,
    sign_out,
    signed_in,
    signing_key,
)
from .console import Console
from .console_pages import Pages

log = logging.getLogger("refunddesk.console")
CSP = (
    "default-src 'none'; script-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
SESSION_COOKIE = "refunddesk_session"
SESSION_MAX_AGE = 8 * 3600
MAX_WAITING_VERIFICATIONS = 20  # logins queued for a password check; past this, 429 at once


class SecurityHeaders:
    """Adds the security headers to every response that has not set its own."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in present]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, with_headers)


def safe_next(target: str | None) -> str:
    """Only our own paths after login: no `//host` or `/\\host` open redirects."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/queue"


def login_required(console: Console, handler):
    async def guarded(request: Request) -> Response:
        agent = signed_in(request)
        if not agent or not await console.in_db(session_valid, session_id(request), agent, utcnow(), SESSION_MAX_AGE):
            if agent:
                sign_out(request)
            return RedirectResponse(f"/login?next={quote(request.url.path)}", 303)
        return await handler(request, agent)

    return guarded


def create_app(desk: Desk, secret_key: str) -> Starlette:
    console = Console(desk)
    pages = Pages(console)

    async def login_page(request: Request, http_status: int = 200, **context) -> Response:
        # While nobody can log in, the page says how the first agent is added.
        nobody = not await console.in_db(any_active)
        return console.page(request, "login.html", http_status, nobody=nobody, min_password=MIN_PASSWORD, **context)

    async def login_form(request: Request) -> Response:
        if signed_in(request):
            return RedirectResponse("/queue", 303)
        return await login_page(request, name="", next=safe_next(request.query_params.get("next")))

    async def login(request: Request) -> Response:
        form = await request.form()
        csrf.check(request, form)
        name, password = str(form.get("name", "")).strip()[:64], str(form.get("password", ""))
        target = safe_next(str(form.get("next", "")))
        client = client_of(request)
        wait = console.throttle.attempt(name, client)  # counted now, before the verdict: concurrent guesses count
        if wait > 0:
            await console.in_db(
                lambda db: events.record(
                    db, None, "console", "login_throttled", utcnow(), {"name": name, "client": client}
                )
            )
            error = f"Too many failed attempts. Try again in {int(wait) + 1} seconds."
            return await login_page(request, 429, name=name, next=target, error=error)
        if console.verifications_waiting >= MAX_WAITING_VERIFICATIONS:
            return await login_page(
                request, 429, name=name, next=target, error="The console is busy. Try again in a moment."
            )
        console.verifications_waiting += 1
        try:
            async with console.verifying:  # argon2 takes 19 MiB and ~30 ms a check: two at a time
                good = await console.in_db(verify, name, password)
        finally:
            console.verifications_waiting -= 1
        if not good:
            await console.in_db(
                lambda db: events.record(
                    db, None, "console", "login_failed", utcnow(), {"name": name, "client": client}
                )
            )
            return await login_page(request, 401, name=name, next=target, error="Wrong name or password.")
        console.throttle.succeeded(name, client)
        sid = await console.in_db(open_session, name, utcnow())
        sign_in(request, name, sid)
        csrf.rotate(request)
        await console.in_db(lambda db: events.record(db, None, name, "login", utcnow(), {"client": client}))
        return RedirectResponse(target, 303)

    async def logout(request: Request) -> Response:
        form = await request.form()
        csrf.check(request, form)
        if session_id(request):
            await console.in_db(revoke_session, session_id(request), utcnow())
        sign_out(request)
        return RedirectResponse("/login", 303)

    async def home(request: Request) -> Response:
        return RedirectResponse("/queue", 303)

    async def stylesheet(request: Request) -> Response:
        css = resources.files("refunddesk.templates").joinpath("console/console.css").read_text("utf-8")
        return Response(css, media_type="text/css", headers={"cache-control": "max-age=300"})

    guard = lambda handler: login_required(console, handler)  # noqa: E731
    routes = [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/static/console.css", stylesheet, methods=["GET"]),
        Route("/", home, methods=["GET"]),
        Route("/queue", guard(pages.queue), methods=["GET"]),
        Route("/dashboard", guard(pages.dashboard), methods=["GET"]),
        Route("/deadletters/{inbound_id}/retry", guard(pages.retry_dead_letter), methods=["POST"]),
        Route("/cases/{case_id}", guard(pages.case), methods=["GET"]),
        Route("/cases/{case_id}/evidence/{sha256}", guard(pages.evidence), methods=["GET"]),
        Route("/cases/{case_id}/{action}", guard(pages.act), methods=["POST"]),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(
            SessionMiddleware,
            secret_key=secret_key,
            session_cookie=SESSION_COOKIE,
            max_age=SESSION_MAX_AGE,
            same_site="lax",
            https_only=desk.config.console.https_only,
        ),
    ]
    return Starlette(routes=routes, middleware=middleware)


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: `serve` owns SIGTERM/SIGINT and stops us."""

    def capture_signals(self):
        return contextlib.nullcontext()


class RunningConsole:
    def __init__(self, server: QuietServer, task: asyncio.Task) -> None:
        self.server = server
        self.task = task

    async def stop(self) -> None:
        self.server.should_exit = True
        try:
            await asyncio.wait_for(self.task, 10)
        except (TimeoutError, asyncio.CancelledError):
            self.task.cancel()


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    # proto must say TCP: asyncio sets TCP_NODELAY only on sockets that do, and without it
    # every answer's body waited ~40 ms for the ACK of its headers (Nagle + delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RuntimeError(
            f"the console cannot listen on {host}:{port}: {exc} (check console.host/console.port)"
        ) from exc
    return sock


async def start_console(desk: Desk) -> RunningConsole:
    """Start the console on console.host/port; the signing key is kept beside the store if unset."""
    config = desk.config
    app = create_app(desk, signing_key(config.console.secret_key, desk.db_path))
    sock = listening_socket(config.console.host, config.console.port)
    # X-Forwarded-For is believed only from `desk.trusted_proxies` (none by default): uvicorn's
    # own default trusted 127.0.0.1, so anyone on the host could pick their address.
    proxies = desk.config.desk.trusted_proxies
    server = QuietServer(
        uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=5,
            proxy_headers=bool(proxies),
            forwarded_allow_ips=",".join(proxies) or None,
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the console stopped while starting")
        await asyncio.sleep(0.02)
    return RunningConsole(server, task)
