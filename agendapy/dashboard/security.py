"""Who may see and change what: authentication, CSRF, host checks, read-only mode and security headers.

One ASGI middleware applies the whole policy to every request of the dashboard, in this order:

1. the ``Host`` header must be allowed (without authentication: loopback names only, against DNS
   rebinding; this does not stop other clients, so an app without authentication is only built when
   its caller says ``insecure_no_auth=True``);
2. static files are public (they hold no data); every other path needs a valid credential when one is
   configured: ``Authorization: Bearer <token>``, a signed, expiring session cookie that ``?token=`` or
   the sign-in form sets (signing out revokes it), or HTTP basic auth. A client that presents wrong
   credentials too often waits, longer after each further failure (429);
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
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InvalidInput
from .views import SafeJSONResponse

__all__ = [
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "DEFAULT_SESSION_MAX_AGE",
    "MIN_PASSWORD_LENGTH",
    "MIN_TOKEN_LENGTH",
    "SECURITY_HEADERS",
    "SESSION_COOKIE",
    "AuthMethod",
    "FailureThrottle",
    "SecurityMiddleware",
    "SecurityPolicy",
    "Sessions",
    "client_address",
    "is_loopback_host",
    "route_path",
]

log = logging.getLogger("agendapy.dashboard")

SESSION_COOKIE = "agendapy_session"
#: A token shorter than this is refused (``secrets.token_urlsafe(32)`` gives 43 characters).
MIN_TOKEN_LENGTH = 16
#: A basic-auth password shorter than this is refused.
MIN_PASSWORD_LENGTH = 12
#: How long a session lasts by default (seconds).
DEFAULT_SESSION_MAX_AGE = 12 * 3600
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


class Sessions:
    """Signed, expiring session cookies with server-side revocation.

    A session is ``<expiry>.<id>.<signature>``: the signature is an HMAC-SHA256 under ``key`` (derived
    from the token, so every process serving the same dashboard accepts it and a new token ends every
    session; random when not given), the expiry is checked on every request, and signing out puts the id
    on this process's revocation list until it would have expired anyway.
    """

    #: Revoked ids kept at most (each was a signed-in session; older ones have expired or are dropped).
    MAX_REVOKED = 100_000

    def __init__(
        self, max_age: float, *, key: bytes | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_age = max_age
        self._secret = key if key is not None else secrets.token_bytes(32)
        self._revoked: OrderedDict[str, float] = OrderedDict()
        self.clock = clock

    def _sign(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        """A new session cookie value."""
        payload = f"{int(self.clock() + self.max_age)}.{secrets.token_hex(16)}"
        return f"{payload}.{self._sign(payload)}"

    def _parse(self, value: str) -> tuple[float, str] | None:
        expiry, _, rest = value.partition(".")
        session_id, _, signature = rest.partition(".")
        if not (expiry.isascii() and expiry.isdigit() and len(expiry) < 16 and session_id and signature):
            return None
        if not _equal(signature, self._sign(f"{expiry}.{session_id}")):
            return None
        return float(expiry), session_id

    def valid(self, value: str) -> bool:
        """True for a session this app signed that has neither expired nor been revoked."""
        parsed = self._parse(value)
        if parsed is None:
            return False
        expiry, session_id = parsed
        return expiry > self.clock() and session_id not in self._revoked

    def revoke(self, value: str) -> None:
        """End a session (signing out): the cookie no longer works, even if someone kept a copy."""
        parsed = self._parse(value)
        if parsed is None:
            return
        now = self.clock()
        while self._revoked and (
            next(iter(self._revoked.values())) <= now or len(self._revoked) >= self.MAX_REVOKED
        ):
            self._revoked.popitem(last=False)
        self._revoked[parsed[1]] = parsed[0]


class FailureThrottle:
    """A growing wait per client after wrong credentials: a few mistakes are free, then 1 s, 2 s, 4 s …
    up to ``max_delay``; a success or ``forget_after`` seconds without failures start over.

    Clients are told apart by their address, as the ASGI server reports it (behind a reverse proxy, have
    the server take it from ``X-Forwarded-For``, e.g. uvicorn's ``--forwarded-allow-ips``)."""

    #: Clients remembered at most (the least recently failing are forgotten first).
    MAX_CLIENTS = 10_000

    def __init__(
        self,
        *,
        free: int = 5,
        max_delay: float = 60.0,
        forget_after: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free = free
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.clock = clock
        self._clients: OrderedDict[str, tuple[int, float, float]] = OrderedDict()  # failures, until, last

    def retry_after(self, client: str) -> float:
        """Seconds ``client`` must wait before its credentials are checked again (0: none)."""
        entry = self._clients.get(client)
        if entry is None:
            return 0.0
        return max(entry[1] - self.clock(), 0.0)

    def failure(self, client: str) -> None:
        """Record wrong credentials from ``client``."""
        now = self.clock()
        failures, _, last = self._clients.pop(client, (0, 0.0, now))
        if now - last > self.forget_after:
            failures = 0
        failures += 1
        extra = failures - self.free
        until = now + min(2.0 ** (extra - 1), self.max_delay) if extra > 0 else 0.0
        self._clients[client] = (failures, until, now)
        if extra == 1:
            log.warning("dashboard: %d failed sign-ins from %s; slowing it down", failures, client)
        while len(self._clients) > self.MAX_CLIENTS:
            self._clients.popitem(last=False)

    def success(self, client: str) -> None:
        """Right credentials: ``client`` starts over."""
        self._clients.pop(client, None)


def _session_key(token: str | None) -> bytes | None:
    """The key that signs sessions: derived from the token (never the token itself), so the processes of
    one deployment agree without sharing another secret."""
    if token is None:
        return None
    return hmac.new(
        token.encode("utf-8", "surrogatepass"), b"agendapy-dashboard-session-key", hashlib.sha256
    ).digest()


def client_address(scope: Scope) -> str:
    """Who is asking, for the failure throttle."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


@dataclass(frozen=True)
class SecurityPolicy:
    """The dashboard's security settings, checked once when the app is made."""

    token: str | None = None
    basic_auth: tuple[str, str] | None = None
    read_only: bool = False
    allowed_hosts: frozenset[str] | None = None
    insecure_no_auth: bool = False
    sessions: Sessions = field(default_factory=lambda: Sessions(DEFAULT_SESSION_MAX_AGE))
    throttle: FailureThrottle = field(default_factory=FailureThrottle)

    @classmethod
    def build(
        cls,
        *,
        token: str | None,
        basic_auth: tuple[str, str] | None,
        read_only: bool,
        allowed_hosts: Iterable[str] | None,
        insecure_no_auth: bool = False,
        session_max_age: float = DEFAULT_SESSION_MAX_AGE,
    ) -> SecurityPolicy:
        """Validate the settings: a dashboard without authentication must be asked for by name, and a
        short token or password is refused (the values themselves are never put in the message)."""
        if token is not None:
            if not isinstance(token, str) or not token.strip():
                raise InvalidInput("token", type(token).__name__, "must be a non-empty string")
            if len(token) < MIN_TOKEN_LENGTH:
                raise InvalidInput(
                    "token",
                    f"<{len(token)} characters>",
                    f"must be at least {MIN_TOKEN_LENGTH} characters long; make one with "
                    "python -c 'import secrets; print(secrets.token_urlsafe(32))'",
                )
        if basic_auth is not None:
            if (
                not isinstance(basic_auth, tuple | list)
                or len(basic_auth) != 2
                or not all(isinstance(part, str) and part for part in basic_auth)
            ):
                raise InvalidInput("basic_auth", "<hidden>", "must be a (user, password) pair of strings")
            if ":" in basic_auth[0]:
                raise InvalidInput("basic_auth", basic_auth[0], "the user name must not contain ':'")
            if len(basic_auth[1]) < MIN_PASSWORD_LENGTH:
                raise InvalidInput(
                    "basic_auth",
                    f"<password of {len(basic_auth[1])} characters>",
                    f"the password must be at least {MIN_PASSWORD_LENGTH} characters long",
                )
            basic_auth = (basic_auth[0], basic_auth[1])
        if not isinstance(insecure_no_auth, bool):
            raise InvalidInput("insecure_no_auth", insecure_no_auth, "must be True or False")
        if token is None and basic_auth is None and not insecure_no_auth:
            raise InvalidInput(
                "token",
                None,
                "the dashboard needs authentication: pass token= or basic_auth=; only when something in "
                "front of it authenticates every request, pass insecure_no_auth=True",
            )
        if (
            isinstance(session_max_age, bool)
            or not isinstance(session_max_age, int | float)
            or not 60 <= session_max_age <= 366 * 86400
        ):
            raise InvalidInput("session_max_age", session_max_age, "must be from 60 seconds to a year")
        hosts = None
        if allowed_hosts is not None:
            if isinstance(allowed_hosts, str):
                raise InvalidInput("allowed_hosts", allowed_hosts, "must be a list of host names")
            hosts = frozenset(h.strip().lower().strip("[]") for h in allowed_hosts)
        if token is None and basic_auth is None:
            log.warning(
                "the agendapy dashboard has NO AUTHENTICATION (insecure_no_auth=True): anyone who reaches "
                "it can read every job's data and create, run and delete jobs. %s",
                "It answers only these host names: " + ", ".join(sorted(hosts))
                if hosts is not None
                else "It answers loopback host names only, which stops DNS rebinding, not other clients.",
            )
        return cls(
            token=token,
            basic_auth=basic_auth,
            read_only=bool(read_only),
            allowed_hosts=hosts,
            insecure_no_auth=insecure_no_auth,
            sessions=Sessions(float(session_max_age), key=_session_key(token)),
        )

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

    def token_matches(self, given: str) -> bool:
        """Constant-time check of a presented token."""
        return self.token is not None and _equal(given, self.token)

    def authenticate(self, request: Request) -> tuple[AuthMethod | None, bool]:
        """How the request proves who it is (None when it does not, and must), and whether it presented
        a wrong token or password (a guess, which the throttle counts)."""
        if not self.requires_auth:
            return "none", False
        guessed = False
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.token is not None:
            if self.token_matches(credentials.strip()):
                return "bearer", False
            guessed = True
        if scheme == "basic" and self.basic_auth is not None:
            if self._basic_matches(credentials.strip()):
                return "basic", False
            guessed = True
        cookie = request.cookies.get(SESSION_COOKIE)
        if self.token is not None and cookie and self.sessions.valid(cookie):
            return "cookie", False
        query_token = request.query_params.get("token")
        if request.method in ("GET", "HEAD") and query_token is not None and self.token is not None:
            if self.token_matches(query_token):
                return "query", False
            guessed = True
        return None, guessed

    def presents_credentials(self, request: Request) -> bool:
        """True when the request carries a token or password to check (not just a session cookie)."""
        return bool(request.headers.get("authorization")) or "token" in request.query_params

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
                "Invalid Host header. This dashboard runs WITHOUT AUTHENTICATION (insecure_no_auth), so it "
                "answers loopback host names only (localhost, 127.0.0.1) against DNS rebinding; that is no "
                "protection from other clients that reach its port. Configure a token or basic auth, or "
                "list the names it is served under in allowed_hosts.",
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
        client = client_address(scope)
        wait = policy.throttle.retry_after(client) if policy.requires_auth else 0.0
        if wait and policy.presents_credentials(request):
            return _too_many(path, wait)  # not even checked: a guess must not learn anything
        method, guessed = policy.authenticate(request)
        if guessed:
            policy.throttle.failure(client)
        elif method in ("bearer", "basic", "query"):
            policy.throttle.success(client)
        if method is None:
            return self._unauthorized(request, path)
        if method == "query":
            cookies.append(
                cookie_header(
                    scope, SESSION_COOKIE, policy.sessions.issue(), max_age=int(policy.sessions.max_age)
                )
            )
            if not path.startswith("/api/"):
                # The cookie signs the browser in from now on; a page left at ?token= would keep the token
                # in the address bar, the history and every screenshot of the dashboard.
                return _without_token(request)
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


def _without_token(request: Request) -> Response:
    """A 303 to the address of ``request`` without its ``token`` parameter (the others are kept)."""
    query = parse_qsl(request.url.query, keep_blank_values=True)
    kept = [(key, value) for key, value in query if key != "token"]
    location = request.url.path + (f"?{urlencode(kept)}" if kept else "")
    return RedirectResponse(location, status_code=303)


def _too_many(path: str, wait: float) -> Response:
    message = f"too many failed sign-ins from this address: try again in {math.ceil(wait)} s"
    response = _refuse(path, 429, message)
    response.headers["retry-after"] = str(math.ceil(wait))
    return response


def _refuse(path: str, status: int, message: str) -> Response:
    if path.startswith("/api/"):
        return SafeJSONResponse({"error": message}, status_code=status)
    return PlainTextResponse(message, status_code=status)
