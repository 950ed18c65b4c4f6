"""The console's pages behind the login: the queue, a case, its evidence, the decision forms
and the dashboard. Each handler gets the signed-in agent's name from the guard in web.py.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response

from refunddesk.policy.model import CHANNELS, KINDS, STATUSES
from refunddesk.store import events, spool
from refunddesk.store.cases import load_case
from refunddesk.store.clock import utcnow
from refunddesk.store.db import transaction
from refunddesk.store.evidence import relative_path

from . import charts, csrf
from .case_page import agent_view
from .console import Console
from .decisions import DecisionError, approve, reject, request_info, set_special_flags, version_of
from .labels import label
from .queue import PAGE_SIZE, Filters, count_queue, due_text, list_queue
from .sla_report import report

SHA256 = re.compile(r"^[0-9a-f]{64}$")
CASE_ID = re.compile(r"^(RF|AP)-\d{6}$")
# Shown inline: raster images only. SVG can carry script, so it is downloaded like any file.
INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
FILE_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"


class Pages:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.desk = console.desk

    # --- the queue and the dashboard -----------------------------------------------------------

    async def queue(self, request: Request, agent: str) -> Response:
        query = request.query_params
        status = query.get("status") or "queued"
        filters = Filters(
            status=None if status == "all" else pick(status, STATUSES),
            kind=pick(query.get("kind"), KINDS),
            channel=pick(query.get("channel"), CHANNELS),
            agent=(query.get("agent") or "").strip()[:64] or None,
            search=(query.get("q") or "").strip()[:200] or None,
        )
        now = utcnow()
        number = page_number(query.get("page"))

        def one_page(db) -> tuple[list, int | None]:
            # One page (and whether another follows); the total only when counting is cheap,
            # i.e. not for a search, which would run its full-text query a second time.
            found = list_queue(self.desk, db, now, filters, limit=PAGE_SIZE + 1, offset=(number - 1) * PAGE_SIZE)
            return found, None if filters.search else count_queue(db, filters)

        items, total = await self.console.in_db(one_page)
        more = len(items) > PAGE_SIZE
        items = items[:PAGE_SIZE]
        return self.console.page(
            request,
            "queue.html",
            items=items,
            filters=filters,
            status=status,
            due_text=lambda item: due_text(item, now),
            statuses=STATUSES,
            kinds=KINDS,
            channels=CHANNELS,
            total=total,
            more=more,
            first=(number - 1) * PAGE_SIZE + 1,
            previous_url=str(request.url.include_query_params(page=number - 1)) if number > 1 else None,
            next_url=str(request.url.include_query_params(page=number + 1)) if more else None,
        )

    async def dashboard(self, request: Request, agent: str) -> Response:
        now = utcnow()
        result = await self.console.in_db(lambda db: report(self.desk, db, now))
        return self.console.page(
            request,
            "dashboard.html",
            report=result,
            per_day_chart=charts.cases_per_day(result.per_day, names={c: label("channels", c) for c in CHANNELS}),
            ack_chart=charts.times_against_limit(
                "Acknowledgement time per case (hours)", result.ack_times, limit=result.ack_limit_hours
            ),
            review_chart=charts.times_against_limit(
                "Review time per case against its due date (hours)", result.review_times, limit_key="allowed_hours"
            ),
        )

    async def retry_dead_letter(self, request: Request, agent: str) -> Response:
        """Back to pending: the worker processes it again within a second (worker/process.py's idle pass)."""
        form = await request.form()
        csrf.check(request, form)
        try:
            inbound_id = int(request.path_params["inbound_id"])
        except ValueError:
            raise HTTPException(404, "no such dead letter") from None

        def retry(db) -> bool:
            with transaction(db):
                if not spool.requeue(db, inbound_id):
                    return False
                events.record(db, None, agent, "dead_letter_retried", utcnow(), {"inbound": inbound_id})
                return True

        retried = await self.console.in_db(retry)
        request.session["flash"] = (
            f"Inbound {inbound_id} is processed again now."
            if retried
            else f"Inbound {inbound_id} is no dead letter (any more)."
        )
        return RedirectResponse("/dashboard#dead-letters", 303)

    # --- a case --------------------------------------------------------------------------------

    async def case(self, request: Request, agent: str, error: str | None = None, status: int = 200) -> Response:
        case_id = valid_case_id(request.path_params["case_id"])
        now = utcnow()
        view = await self.console.in_db(lambda db: agent_view(self.desk, db, case_id, now))
        if view is None:
            raise HTTPException(404, f"no case {case_id}")
        blocked = bool(view["parent_decided_by"] and view["parent_decided_by"].casefold() == agent.casefold())
        return self.console.page(
            request,
            "case.html",
            status,
            view=view,
            c=view["case"],
            four_eyes_blocked=blocked,
            error=error,
            inline_types=INLINE_TYPES,
            due_overdue=view["overdue"],
        )

    async def evidence(self, request: Request, agent: str) -> Response:
        """A file by its sha256, only as evidence of this case; every view is in the event log."""
        case_id = valid_case_id(request.path_params["case_id"])
        sha256 = request.path_params["sha256"]
        if not SHA256.match(sha256):
            raise HTTPException(404, "no such file")

        def look_up_and_log(db) -> dict[str, Any] | None:
            row = db.execute(
                "SELECT filename, content_type, size FROM evidence WHERE case_id = ? AND sha256 = ?", [case_id, sha256]
            ).fetchone()
            if row is None:
                return None
            events.record(db, case_id, agent, "evidence_viewed", utcnow(), {"sha256": sha256, "filename": row[0]})
            return {"filename": row[0], "content_type": row[1], "size": row[2]}

        found = await self.console.in_db(look_up_and_log)
        path = self.desk.files / relative_path(sha256)
        if found is None or not path.is_file():
            raise HTTPException(404, "no such file")
        inline = found["content_type"] in INLINE_TYPES
        return FileResponse(
            path,
            media_type=found["content_type"] if inline else "application/octet-stream",
            filename=found["filename"],
            content_disposition_type="inline" if inline else "attachment",
            headers={
                "content-security-policy": FILE_CSP,
                "x-content-type-options": "nosniff",
                "cache-control": "private, no-store",
            },
        )

    async def act(self, request: Request, agent: str) -> Response:
        """The decision forms: approve, reject, request-info, and PIF-9 flags."""
        case_id = valid_case_id(request.path_params["case_id"])
        action = request.path_params["action"]
        form = await request.form()
        csrf.check(request, form)
        text = lambda name: str(form.get(name) or "")  # noqa: E731
        handlers = {
            "approve": lambda db: approve(self.desk, db, case_id, agent, text("amount"), text("note")),
            "reject": lambda db: reject(self.desk, db, case_id, agent, text("reason"), text("note")),
            "request-info": lambda db: request_info(self.desk, db, case_id, agent, text("message")),
            "flags": lambda db: self.set_flags(db, case_id, agent, [str(v) for v in form.getlist("special")]),
        }
        if action not in handlers:
            raise HTTPException(404, "no such action")
        try:
            await self.console.in_db(handlers[action])
        except DecisionError as exc:
            return await self.case(request, agent, error=str(exc), status=400)
        request.session["flash"] = {
            "approve": "Approved. The letter to the customer is on its way.",
            "reject": "Rejected. The letter to the customer is on its way.",
            "request-info": "Question sent to the customer; the case waits for the answer.",
            "flags": "Special-consideration flags saved.",
        }[action]
        return RedirectResponse(f"/cases/{case_id}", 303)

    def set_flags(self, db, case_id: str, agent: str, flags: list[str]) -> None:
        case = load_case(db, case_id)
        if case is None:
            raise DecisionError(f"no case {case_id}")
        set_special_flags(db, case_id, agent, flags, list(version_of(self.desk, case).special.get("flags", ())))


def page_number(value: str | None) -> int:
    try:
        return min(max(1, int(value or 1)), 100_000)
    except ValueError:
        return 1


def pick(value: str | None, allowed: tuple[str, ...]) -> str | None:
    return value if value in allowed else None


def valid_case_id(value: str) -> str:
    value = value.upper()
    if not CASE_ID.match(value):
        raise HTTPException(404, "no such case")
    return value
