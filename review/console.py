"""What the console's app (web.py) and its pages (console_pages.py) both need at hand: the desk,
the templates with their filters, the login brake, and database work off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse

from refunddesk.desk import Desk
from refunddesk.policy.model import Finding
from refunddesk.store.clock import parse_stamp, utcnow
from refunddesk.store.db import open_db

from . import csrf
from .auth import LoginThrottle, signed_in
from .labels import finding_text, label, time_text, zone_text


class Console:
    def __init__(self, desk: Desk) -> None:
        self.desk = desk
        self.throttle = LoginThrottle()
        self.verifying = asyncio.Semaphore(2)
        self.verifications_waiting = 0
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(resources.files("refunddesk.templates").joinpath("console"))),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["local"] = self.local_time
        self.env.filters["label"] = lambda key, group: label(group, key)
        self.env.filters["finding"] = self.finding
        self.env.globals["policy"] = desk.policy
        self.env.globals["zone_now"] = lambda: zone_text(utcnow().astimezone(desk.policy.timezone))

    def local_time(self, value: datetime | str | None, with_time: bool = True) -> Markup | str:
        """A stored moment in the desk's zone, saying which: `2026-12-08 17:30 UTC+8`."""
        moment = parse_stamp(value) if isinstance(value, str) else value
        if moment is None:
            return "—"
        zone = self.desk.policy.timezone
        return Markup('<time datetime="{}" title="{}">{}</time>').format(
            moment.isoformat(), str(zone), time_text(moment, zone, with_time)
        )

    def finding(self, finding: Finding | Mapping[str, Any]) -> str:
        # The queue holds findings as stored (dicts), a case as the model's Finding.
        data = finding if isinstance(finding, Mapping) else finding.to_dict()
        return finding_text(data["message"], data.get("params") or {})

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
            request=request,
            agent=signed_in(request),
            csrf_token=csrf.token(request),
            flash=flash,
            now=utcnow(),
            **context,
        )
        return HTMLResponse(html, http_status)
