"""CSRF protection for the console's forms: a per-session secret token in a hidden field.

Every POST must carry the token of the session that rendered the form (compared in constant
time), and a request whose Origin names another site is refused as well; the session cookie
is SameSite=Lax on top. A GET never changes anything, so it needs no token.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request

FIELD = "csrf"


def token(request: Request) -> str:
    """The session's token, created on first use; forms embed it as a hidden field."""
    session = request.session
    if not session.get(FIELD):
        session[FIELD] = secrets.token_urlsafe(32)
    return session[FIELD]


def rotate(request: Request) -> str:
    request.session[FIELD] = secrets.token_urlsafe(32)
    return request.session[FIELD]


def check(request: Request, form) -> None:
    expected = request.session.get(FIELD) or ""
    given = form.get(FIELD) or ""
    if not expected or not isinstance(given, str) or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(403, "missing or wrong CSRF token; reload the page and try again")
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise HTTPException(403, "cross-site form submission refused")
