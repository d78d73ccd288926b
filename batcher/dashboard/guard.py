"""Who may use the dashboard: a token beyond loopback, a CSRF token on every change, a Host check.

- Bound to loopback, no token is needed, but the ``Host`` header must name a loopback address:
  a page elsewhere that rebinds its own host name to 127.0.0.1 (DNS rebinding) is refused.
- Bound elsewhere, every request needs the token: ``Authorization: Bearer TOKEN``, or the
  ``batcher_dashboard`` cookie that opening ``/?token=TOKEN`` once sets (HttpOnly,
  SameSite=Strict) before redirecting to the same page without the token in its address.
- Every request that changes something (any method but GET, HEAD, OPTIONS) must carry the
  page's CSRF token in ``X-CSRF-Token``; pages hold it in a ``<meta>`` tag that another site
  cannot read. It is random for each dashboard process.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlencode

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp

COOKIE = "batcher_dashboard"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine's loopback."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A token to print when ``--token`` was not given."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Access:
    """The rules of one dashboard process: its token (None on loopback) and its CSRF token."""

    token: str | None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def signed_in(self, request: Request) -> bool:
        """Whether the request carries the token (always, when none is needed)."""
        if self.token is None:
            return True
        given = request.cookies.get(COOKIE) or _bearer(request) or ""
        return hmac.compare_digest(given.encode(), self.token.encode())

    def csrf_ok(self, request: Request) -> bool:
        """Whether a changing request carries the page's CSRF token."""
        given = request.headers.get(CSRF_HEADER, "")
        return hmac.compare_digest(given.encode(), self.csrf.encode())


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value if scheme.lower() == "bearer" and value else None


class GuardMiddleware(BaseHTTPMiddleware):
    """Applies ``Access`` to every request (see the module docstring)."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        super().__init__(app)
        self.access = access

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        access = self.access
        if access.token is None and not is_loopback(request.url.hostname or ""):
            return PlainTextResponse("this dashboard answers only to a loopback host name", status_code=403)
        if access.token is not None and request.query_params.get("token") == access.token:
            return _sign_in(request, access.token)
        if not access.signed_in(request):
            return PlainTextResponse(
                "a token is needed: open the address `batcher dashboard` printed (it ends in ?token=...)",
                status_code=401,
            )
        if request.method not in SAFE_METHODS and not access.csrf_ok(request):
            return PlainTextResponse(
                "missing or wrong CSRF token: use the buttons of a dashboard page", status_code=403
            )
        return await call_next(request)


def _sign_in(request: Request, token: str) -> Response:
    """Set the token's cookie and go to the same page without the token in its address."""
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
    response = RedirectResponse(request.url.path + (f"?{query}" if query else ""), 303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
    return response
