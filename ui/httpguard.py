"""What every HTTP request passes before the page sees it: the Host check, the security headers
and the login throttle (issue #29).

- **Host check** (:class:`HostGuard`), against DNS rebinding: a web page the clinician visits
  could point its own name at 127.0.0.1 and read ``pleura/state.json`` as "same origin". The
  browser still sends that name as ``Host``, so a request is answered only when its Host is a
  loopback name, an IP address (a rebinding page cannot make the browser send one), the bind
  address (``--host``) or a name in ``allowed_hosts`` (``--allowed-host``); anything else, a
  missing Host included, gets 421 with a line saying how to allow it.
- **Security headers** on every answer: ``X-Frame-Options: DENY`` and a Content-Security-Policy
  (:data:`CSP`) that keeps the page out of frames on other sites (clickjacking) and lets it load
  scripts, styles, images and fonts only from itself.
- **Login throttle** (:class:`LoginThrottle`): failed logins are counted per client address; after
  :attr:`LoginLimits.free` failures in a row each further one locks that address out for twice
  as long as the one before (1 s, 2 s, 4 s ... at most :attr:`LoginLimits.max_lock_s`), and a
  login tried while locked out gets 429 with ``Retry-After`` without its password being checked.
  Every failure is logged (rate limited: :class:`stream.ratelog.RateLimitedLog`); a success
  clears the address's count. The address is the TCP peer's: behind a reverse proxy all clients
  share one, which throttles them together (the safe side).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stream.ratelog import RateLimitedLog
from ui.safety import LOCAL_HOSTS

log = logging.getLogger(__name__)

CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
       "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "media-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
       "worker-src 'self' blob:; frame-src 'self'; object-src 'none'; base-uri 'self'; "
       "form-action 'self'; frame-ancestors 'none'")
"""The page's Content-Security-Policy. Gradio's page needs inline scripts (its config, the live
view's script), inline styles and ``'unsafe-eval'`` (``gr.HTML`` runs its templates and
``js_on_load`` through ``Function``: without it Chromium logged 15 CSP errors on the page), so
those stay allowed; nothing is loaded from another origin (Gradio's theme fonts are served by
the page itself) and no other site may frame the page."""

SECURITY_HEADERS = ((b"x-frame-options", b"DENY"), (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"))
LOGIN_PATHS = ("/login", "/login/")


def host_name(header: str) -> str:
    """The name in a ``Host`` header, lower case, without port or trailing dot
    (``"[::1]:7860"`` -> ``"::1"``, ``"Ward-PC.:80"`` -> ``"ward-pc"``)."""
    h = header.strip().lower()
    if h.startswith("["):  # an IPv6 literal
        return h[1:h.index("]")] if "]" in h else h
    if h.count(":") == 1:
        h = h.partition(":")[0]
    return h.rstrip(".")


def is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_names(bind_host: str, extra: Iterable[str] = ()) -> set[str]:
    """The host names the page answers to besides IP addresses: loopback names, the bind
    address and ``extra`` (``allowed_hosts``), normalised by :func:`host_name`."""
    return {host_name(n) for n in (*LOCAL_HOSTS, bind_host, *extra) if n.strip()}


def host_allowed(header: str | None, names: set[str]) -> bool:
    """Whether a request with this ``Host`` header is answered (see the module docstring)."""
    if not header:
        return False
    name = host_name(header)
    return name in names or is_ip_address(name)


def _header(scope: Scope, key: bytes) -> str | None:
    for name, value in scope.get("headers", []):
        if name == key:
            return value.decode("latin-1")
    return None


async def plain_answer(send: Send, status: int, text: str,
                       headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """A short text/plain answer with the security headers."""
    data = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(data)).encode()),
                            *headers, *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": data, "more_body": False})


class HostGuard:
    """ASGI middleware: refuse a request whose Host the page does not answer to (421); add the
    security headers to every answer.

    Args:
        app: the ASGI app (Gradio's FastAPI app).
        names: the allowed names (:func:`allowed_names`); the caller may add to the set later
            (the share link's name, known after launch).
    """

    def __init__(self, app: ASGIApp, names: set[str]) -> None:
        self.app = app
        self.names = names
        self._refused = RateLimitedLog(log, every_s=30.0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"host")
        if not host_allowed(header, self.names):
            shown = (header or "(none)")[:80]
            self._refused.warning("refused a request for host %r (not an allowed host name; "
                                  "a DNS-rebinding page sends such requests)", shown)
            if scope["type"] == "websocket":
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": 1008})
                return
            await plain_answer(send, 421, f"pleura: this page does not answer to host "
                               f"{shown!r}. Open it by its address, or add the name with "
                               "--allowed-host NAME ([ui] allowed_hosts in the config file).\n")
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in have]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


@dataclass(frozen=True)
class LoginLimits:
    """How failed logins are throttled.

    After ``free`` failures in a row, failure ``free + k`` locks the client out for
    ``min(first_lock_s * 2 ** (k - 1), max_lock_s)`` seconds; a client quiet for ``forget_s``
    starts again from zero. At most ``max_clients`` are remembered (the oldest forgotten first).
    """

    free: int = 3
    first_lock_s: float = 1.0
    max_lock_s: float = 300.0
    forget_s: float = 900.0
    max_clients: int = 10_000

    def lock_s(self, failures: int) -> float:
        """Seconds of lock-out after ``failures`` failures in a row."""
        if failures <= self.free:
            return 0.0
        return min(self.first_lock_s * 2.0 ** min(failures - self.free - 1, 60), self.max_lock_s)


@dataclass
class FailedLogins:
    """Failed logins per client and the lock-out they earn (pure bookkeeping; times are given)."""

    limits: LoginLimits = field(default_factory=LoginLimits)
    _clients: OrderedDict[str, tuple[int, float, float]] = field(default_factory=OrderedDict)
    """client -> (failures in a row, time of the last failure, locked until)."""

    def wait_s(self, client: str, now: float) -> float:
        """Seconds until ``client`` may try again (0: now)."""
        entry = self._clients.get(client)
        return 0.0 if entry is None else max(0.0, entry[2] - now)

    def failed(self, client: str, now: float) -> tuple[int, float]:
        """Record a failure; returns (failures in a row, seconds locked out now)."""
        n, last, _ = self._clients.pop(client, (0, now, now))
        n = 1 if now - last > self.limits.forget_s else n + 1
        lock = self.limits.lock_s(n)
        self._clients[client] = (n, now, now + lock)
        while len(self._clients) > self.limits.max_clients:
            self._clients.popitem(last=False)
        return n, lock

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)


class LoginThrottle:
    """ASGI middleware in front of Gradio's ``POST /login``: refuses a locked-out client with 429,
    records each answer's outcome (400: wrong user or password; 200: logged in) in
    :class:`FailedLogins` and logs the failures.

    Args:
        app: the ASGI app.
        limits: the throttle's numbers.
    """

    def __init__(self, app: ASGIApp, limits: LoginLimits = LoginLimits()) -> None:
        self.app = app
        self.book = FailedLogins(limits)
        self.clock = time.monotonic
        self._log = RateLimitedLog(log, every_s=10.0, burst=5)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope.get("method") != "POST"
                or scope.get("path") not in LOGIN_PATHS):
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown",))[0]
        wait = self.book.wait_s(client, self.clock())
        if wait > 0:
            self._log.warning("login from %s refused: locked out for %.0f s more after failed "
                              "logins", client, wait)
            await plain_answer(send, 429, f"too many failed logins from this address; try again "
                               f"in {math.ceil(wait)} s\n",
                               ((b"retry-after", str(math.ceil(wait)).encode()),))
            return

        async def outcome(message: Message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] == 400:
                    n, lock = self.book.failed(client, self.clock())
                    then = f"locked out for {lock:.0f} s" if lock else "no lock-out yet"
                    self._log.warning("failed login from %s (%d in a row; %s)", client, n, then)
                elif message["status"] == 200:
                    self.book.succeeded(client)
            await send(message)

        await self.app(scope, receive, outcome)
