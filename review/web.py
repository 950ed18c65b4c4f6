"""The agents' web console: a small Starlette app served by uvicorn inside `refunddesk serve`.

Server-rendered pages (autoescaped Jinja2 from templates/console), no JavaScript at all, so
the Content-Security-Policy forbids every script: customer HTML that slipped past the
sanitizer still could not run. Sessions are signed cookies (HttpOnly, SameSite=Lax) and every
form carries a CSRF token. Database work runs in worker threads, never on the event loop that
also drives the outbox senders.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from datetime import datetime
from importlib import resources
from typing import Any, Callable
from urllib.parse import quote

import jinja2
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from refunddesk.desk import Desk
from refunddesk.store.clock import parse_stamp, utcnow
from refunddesk.store.db import open_db

from . import csrf
from .auth import LoginThrottle, client_of, sign_in, sign_out, signed_in
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


class Console:
    """What the console needs at hand: the desk, its templates and the login brake."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk
        self.throttle = LoginThrottle()
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(resources.files("refunddesk.templates").joinpath("console"))),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["local"] = self.local_time
        self.env.globals["policy"] = desk.policy

    def local_time(self, value: datetime | str | None, with_time: bool = True) -> str:
        moment = parse_stamp(value) if isinstance(value, str) else value
        if moment is None:
            return "—"
        return moment.astimezone(self.desk.policy.timezone).strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d")

    async def in_db(self, work: Callable[..., Any], *args: Any) -> Any:
        def run() -> Any:
            db = open_db(self.desk.db_path, migrate=False)
            try:
                return work(db, *args)
            finally:
                db.conn.close()

        return await run_in_threadpool(run)

    def page(self, request: Request, template: str, http_status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("error", None)
        flash = request.session.pop("flash", None) if signed_in(request) else None
        html = self.env.get_template(template).render(
            request=request, agent=signed_in(request), csrf_token=csrf.token(request), flash=flash, now=utcnow(), **context
        )
        return HTMLResponse(html, http_status)


def safe_next(target: str | None) -> str:
    """Only our own paths after login: no `//host` or `/\\host` open redirects."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/queue"


def login_required(console: Console, handler):
    async def guarded(request: Request) -> Response:
        from .agents import active

        agent = signed_in(request)
        if not agent or not await console.in_db(active, agent):
            if agent:
                sign_out(request)
            return RedirectResponse(f"/login?next={quote(request.url.path)}", 303)
        return await handler(request, agent)

    return guarded


def create_app(desk: Desk, secret_key: str) -> Starlette:
    console = Console(desk)
    pages = Pages(console)

    async def login_form(request: Request) -> Response:
        if signed_in(request):
            return RedirectResponse("/queue", 303)
        return console.page(request, "login.html", name="", next=safe_next(request.query_params.get("next")))

    async def login(request: Request) -> Response:
        from .agents import verify
        from refunddesk.store import events

        form = await request.form()
        csrf.check(request, form)
        name, password = str(form.get("name", "")).strip()[:64], str(form.get("password", ""))
        target = safe_next(str(form.get("next", "")))
        client = client_of(request)
        wait = console.throttle.wait_seconds(name, client)
        if wait > 0:
            await console.in_db(lambda db: events.record(db, None, "console", "login_throttled", utcnow(), {"name": name, "client": client}))
            return console.page(request, "login.html", 429, name=name, next=target, error=f"Too many failed attempts. Try again in {int(wait) + 1} seconds.")
        if not await console.in_db(verify, name, password):
            console.throttle.failed(name, client)
            await console.in_db(lambda db: events.record(db, None, "console", "login_failed", utcnow(), {"name": name, "client": client}))
            return console.page(request, "login.html", 401, name=name, next=target, error="Wrong name or password.")
        console.throttle.succeeded(name, client)
        sign_in(request, name)
        csrf.rotate(request)
        await console.in_db(lambda db: events.record(db, None, name, "login", utcnow(), {"client": client}))
        return RedirectResponse(target, 303)

    async def logout(request: Request) -> Response:
        form = await request.form()
        csrf.check(request, form)
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
        Route("/cases/{case_id}", guard(pages.case), methods=["GET"]),
        Route("/cases/{case_id}/evidence/{sha256}", guard(pages.evidence), methods=["GET"]),
        Route("/cases/{case_id}/{action}", guard(pages.act), methods=["POST"]),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(SessionMiddleware, secret_key=secret_key, session_cookie=SESSION_COOKIE, max_age=SESSION_MAX_AGE, same_site="lax", https_only=False),
    ]
    return Starlette(routes=routes, middleware=middleware)


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: `serve` owns SIGTERM/SIGINT and stops us."""

    def capture_signals(self):
        import contextlib

        return contextlib.nullcontext()


class RunningConsole:
    def __init__(self, server: QuietServer, task: asyncio.Task) -> None:
        self.server = server
        self.task = task

    async def stop(self) -> None:
        self.server.should_exit = True
        try:
            await asyncio.wait_for(self.task, 10)
        except (asyncio.TimeoutError, asyncio.CancelledError):
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
        raise RuntimeError(f"the console cannot listen on {host}:{port}: {exc} (check console.host/console.port)") from exc
    return sock


async def start_console(desk: Desk) -> RunningConsole:
    """Start the console on console.host/port; the signing key is random per start if unset."""
    config = desk.config
    secret_key = config["console.secret_key"] or secrets.token_urlsafe(32)
    app = create_app(desk, secret_key)
    sock = listening_socket(config["console.host"], config["console.port"])
    server = QuietServer(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False, server_header=False, timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the console stopped while starting")
        await asyncio.sleep(0.02)
    return RunningConsole(server, task)

