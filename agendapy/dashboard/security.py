"""Who may see and change what: authentication, CSRF, host checks, read-only mode and security headers.

One ASGI middleware applies the whole policy to every request of the dashboard, in this order:

1. the ``Host`` header must be allowed (without authentication: loopback names only, against DNS
   rebinding);
2. static files are public (they hold no data); every other path needs a valid credential when one is
   configured: ``Authorization: Bearer <token>``, the session cookie that ``?token=`` or the login form
   sets, or HTTP basic auth;
3. every unsafe method (POST) is refused in read-only mode, and, unless it carries a Bearer token (which a
   browser never adds on its own), must come from the same origin (``Origin``, else ``Referer``) and
   carry the per-session CSRF secret in ``X-CSRF-Token``.

Every response gets a strict Content-Security-Policy (no inline scripts or styles: the page uses static
files only), ``X-Frame-Options: DENY``, ``nosniff`` and a same-origin referrer policy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InvalidInput
from .views import SafeJSONResponse

__all__ = [
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "SECURITY_HEADERS",
    "SESSION_COOKIE",
    "AuthMethod",
    "SecurityMiddleware",
    "SecurityPolicy",
    "is_loopback_host",
    "route_path",
]

SESSION_COOKIE = "agendapy_session"
CSRF_COOKIE = "agendapy_csrf"
CSRF_HEADER = "x-csrf-token"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

AuthMethod = Literal["none", "bearer", "basic", "cookie", "query"]


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` (and ``*.localhost``) and loopback IP addresses such as 127.0.0.1 or ::1."""
    host = host.strip().lower().strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """The host of a ``Host`` header, without the port (``[::1]:8080`` -> ``::1``)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def route_path(scope: Scope) -> str:
    """The request path inside the dashboard, whatever prefix it is mounted under."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path or "/"


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


@dataclass(frozen=True)
class SecurityPolicy:
    """The dashboard's security settings, checked once when the app is made."""

    token: str | None = None
    basic_auth: tuple[str, str] | None = None
    read_only: bool = False
    allowed_hosts: frozenset[str] | None = None

    @classmethod
    def build(
        cls,
        *,
        token: str | None,
        basic_auth: tuple[str, str] | None,
        read_only: bool,
        allowed_hosts: Iterable[str] | None,
    ) -> SecurityPolicy:
        """Validate the settings (an empty token or password would let anyone in)."""
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise InvalidInput("token", token, "must be a non-empty string")
        if basic_auth is not None:
            if (
                not isinstance(basic_auth, tuple | list)
                or len(basic_auth) != 2
                or not all(isinstance(part, str) and part for part in basic_auth)
            ):
                raise InvalidInput("basic_auth", basic_auth, "must be a (user, password) pair of strings")
            if ":" in basic_auth[0]:
                raise InvalidInput("basic_auth", basic_auth[0], "the user name must not contain ':'")
            basic_auth = (basic_auth[0], basic_auth[1])
        hosts = None
        if allowed_hosts is not None:
            if isinstance(allowed_hosts, str):
                raise InvalidInput("allowed_hosts", allowed_hosts, "must be a list of host names")
            hosts = frozenset(h.strip().lower().strip("[]") for h in allowed_hosts)
        return cls(token=token, basic_auth=basic_auth, read_only=bool(read_only), allowed_hosts=hosts)

    @property
    def requires_auth(self) -> bool:
        """True when a token or basic auth is configured."""
        return self.token is not None or self.basic_auth is not None

    def host_allowed(self, host_header: str) -> bool:
        """Without authentication only loopback names are served (a DNS-rebinding page gets nothing)."""
        host = _host_name(host_header)
        if not host:
            return False
        if self.allowed_hosts is not None:
            return "*" in self.allowed_hosts or host in self.allowed_hosts
        return self.requires_auth or is_loopback_host(host)

    def session_value(self) -> str | None:
        """What the session cookie holds: derived from the token, so changing the token ends sessions."""
        if self.token is None:
            return None
        return hmac.new(self.token.encode(), b"agendapy-dashboard-session", hashlib.sha256).hexdigest()

    def token_matches(self, given: str) -> bool:
        """Constant-time check of a presented token."""
        return self.token is not None and _equal(given, self.token)

    def authenticate(self, request: Request) -> AuthMethod | None:
        """How the request proves who it is, or None when it does not (and must)."""
        if not self.requires_auth:
            return "none"
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.token_matches(credentials.strip()):
            return "bearer"
        if scheme == "basic" and self._basic_matches(credentials.strip()):
            return "basic"
        session = self.session_value()
        cookie = request.cookies.get(SESSION_COOKIE)
        if session is not None and cookie is not None and _equal(cookie, session):
            return "cookie"
        query_token = request.query_params.get("token")
        if request.method in ("GET", "HEAD") and query_token is not None and self.token_matches(query_token):
            return "query"
        return None

    def _basic_matches(self, credentials: str) -> bool:
        if self.basic_auth is None:
            return False
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        # Both halves are always compared, so the timing says nothing about which one was wrong.
        user_ok = _equal(user, self.basic_auth[0])
        password_ok = _equal(password, self.basic_auth[1])
        return bool(sep) and user_ok and password_ok

    def challenges(self) -> list[str]:
        """``WWW-Authenticate`` values for a 401."""
        out = []
        if self.basic_auth is not None:
            out.append('Basic realm="agendapy dashboard", charset="UTF-8"')
        if self.token is not None:
            out.append('Bearer realm="agendapy dashboard"')
        return out


def same_origin(request: Request) -> bool:
    """True when the browser says the request comes from a page of this same host (Origin, else Referer)."""
    host = request.headers.get("host", "").strip().lower()
    source = request.headers.get("origin")
    if source is None:
        source = request.headers.get("referer")
    if not source or source == "null" or not host:
        return False
    try:
        return urlsplit(source).netloc.lower() == host
    except ValueError:
        return False


def cookie_header(scope: Scope, name: str, value: str, *, max_age: int | None = None) -> str:
    """A ``Set-Cookie`` value: HttpOnly, SameSite=Strict, scoped to the dashboard's path, Secure on https."""
    path = scope.get("root_path", "") or "/"
    parts = [f"{name}={value}", f"Path={path}", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if scope.get("scheme") == "https":
        parts.append("Secure")
    return "; ".join(parts)


UnauthorizedPage = Callable[[Request], Response]


class SecurityMiddleware:
    """Applies a :class:`SecurityPolicy` to every HTTP request (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, policy: SecurityPolicy, unauthorized_page: UnauthorizedPage) -> None:
        self.app = app
        self.policy = policy
        self.unauthorized_page = unauthorized_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # the dashboard has none: nothing may bypass the checks below
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookies: list[str] = []
        # Data is never cached; the static files are revalidated (their URLs change with their content).
        cache = "no-cache" if route_path(scope).startswith("/static/") else "no-store"

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    headers[key] = value
                if "cache-control" not in headers:
                    headers["cache-control"] = cache
                for cookie in cookies:
                    headers.append("set-cookie", cookie)
            await send(message)

        request = Request(scope)
        refusal = self._check(request, cookies)
        await (refusal or self.app)(scope, receive, send_secured)

    def _check(self, request: Request, cookies: list[str]) -> Response | None:
        """None when the request may proceed, else the response that refuses it."""
        policy, scope = self.policy, request.scope
        if not policy.host_allowed(request.headers.get("host", "")):
            return PlainTextResponse(
                "Invalid Host header. Without a token or basic auth the dashboard answers loopback names "
                "only (localhost, 127.0.0.1); configure authentication or allowed_hosts.",
                status_code=400,
            )
        path = route_path(scope)
        if path.startswith("/static/"):
            return None
        unsafe = request.method not in _SAFE_METHODS
        if path == "/login":
            # Logging in needs no session yet, but a cross-site form must not log a victim in.
            if unsafe and not same_origin(request):
                return _refuse(path, 403, "cross-origin request refused")
            return None
        method = policy.authenticate(request)
        if method is None:
            return self._unauthorized(request, path)
        if method == "query":
            session = policy.session_value()
            assert session is not None
            cookies.append(cookie_header(scope, SESSION_COOKIE, session))
        secret = request.cookies.get(CSRF_COOKIE, "")
        fresh = len(secret) != 64 or not secret.isalnum()
        if fresh:
            secret = secrets.token_hex(32)
            cookies.append(cookie_header(scope, CSRF_COOKIE, secret))
        state = scope.setdefault("state", {})
        state["csrf_token"] = secret
        state["auth_method"] = method
        if not unsafe:
            return None
        if policy.read_only:
            return _refuse(path, 403, "the dashboard is read-only")
        if method == "bearer":
            return None  # a browser never attaches this header by itself: no forgery possible
        if not same_origin(request):
            return _refuse(path, 403, "cross-origin request refused (Origin/Referer must be this host)")
        given = request.headers.get(CSRF_HEADER, "")
        if fresh or not given or not _equal(given, secret):
            return _refuse(path, 403, "missing or invalid CSRF token: reload the page and try again")
        return None

    def _unauthorized(self, request: Request, path: str) -> Response:
        if path.startswith("/api/") or path == "/api":
            response: Response = SafeJSONResponse({"error": "authentication required"}, status_code=401)
            challenges = self.policy.challenges()
        else:
            # A page: the login form when a token is configured; basic auth makes the browser ask.
            response = self.unauthorized_page(request)
            response.status_code = 401
            challenges = self.policy.challenges()[:1] if self.policy.basic_auth is not None else []
        for challenge in challenges:
            response.headers.append("www-authenticate", challenge)
        return response


def _refuse(path: str, status: int, message: str) -> Response:
    if path.startswith("/api/"):
        return SafeJSONResponse({"error": message}, status_code=status)
    return PlainTextResponse(message, status_code=status)
