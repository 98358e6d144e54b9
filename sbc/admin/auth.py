"""Who may use the admin endpoint, checked in this order on every request:

1. the source address must be in `admin.allow` (403, before anything else;
   the peer address of the connection, never X-Forwarded-For);
2. without a token (loopback only), the Host header must be an IP address or
   `localhost`, so a web page that rebinds its DNS name to 127.0.0.1 cannot
   drive the admin from a browser (403);
3. a state-changing request (POST, DELETE, ...) that carries an Origin header
   must come from the admin's own origin: a page elsewhere cannot submit a
   form to it (403);
4. with a token, `Authorization: Bearer <token>`, compared in constant time
   (401, RFC 6750 §3). `/`, `/static/`, `/healthz` and `/readyz` need no
   token: a browser loads the dashboard before the operator types it, and
   probes stay simple.

Failed authentications spend a per-source token bucket; once it is empty the
source gets 429 for every request, a right token included, so guessing stays
slow and answers give nothing away. Refusals are logged one line each, at most
LOG_BUDGET lines a second; the rest are counted into the next line.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..config.admin import AdminConfig
from ..core.screen.ratelimit import TokenBucket
from ..io.logsetup import get_logger

log = get_logger("sbc.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz", "/favicon.ico"})
PUBLIC_PREFIX = "/static/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

FAIL_BURST = 10.0  # failed authentications a source may make at once
FAIL_RATE = 10.0 / 60  # then one more every 6 seconds
MAX_SOURCES = 4096  # failure buckets kept; the allowlist keeps this small anyway
LOG_BUDGET = 5  # refusal lines a second

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def source_address(remote: str | None) -> _Address | None:
    """The connection's peer address, IPv4-mapped IPv6 as IPv4, zone dropped."""
    if not remote:
        return None
    try:
        addr = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _host_is_literal(host: str | None) -> bool:
    if not host:
        return False
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class AccessControl:
    """The admin's access rules, as an aiohttp middleware (`middleware`).

    `current` returns the admin section in force; when a reload changes the
    token or the allowlist, the new rules apply from the next request. A
    changed address or port needs a restart, and until then the rules the
    socket was opened with stay: the token is never dropped from a socket
    that listens beyond loopback.
    """

    def __init__(self, cfg: AdminConfig, clock: Callable[[], float],
                 current: Callable[[], AdminConfig] | None = None, *,
                 fail_burst: float = FAIL_BURST, fail_rate: float = FAIL_RATE,
                 max_sources: int = MAX_SOURCES, log_budget: int = LOG_BUDGET) -> None:
        self.clock = clock
        self.current = current
        self.fail_burst = fail_burst
        self.fail_rate = fail_rate
        self.max_sources = max_sources
        self.log_budget = log_budget
        self.refused: Counter[str] = Counter()  # reason -> requests refused
        self._failures: dict[_Address, TokenBucket] = {}
        self._log_second = -1
        self._logged = 0
        self._unlogged = 0
        self.bound = cfg
        # Only later changes are followed: `cfg` is what the socket was opened with.
        self._seen = current() if current is not None else cfg
        self._apply(cfg)

    # ------------------------------------------------------------------ rules

    def _apply(self, cfg: AdminConfig) -> None:
        self.cfg = cfg
        self.networks: tuple[_Network, ...] = tuple(ipaddress.ip_network(n) for n in cfg.allow)
        self._digest = (hashlib.sha256(cfg.token.get_secret_value().encode()).digest()
                        if cfg.token is not None else None)

    def _follow(self) -> None:
        new = self.current() if self.current is not None else self.cfg
        if new is self._seen:
            return
        self._seen = new
        if new == self.cfg:
            return
        b = self.bound
        if (new.host, new.port, new.enabled) != (b.host, b.port, b.enabled):
            log.warning("admin_restart_needed", listening=b.hostport, configured=new.hostport,
                        enabled=new.enabled)
            return
        self._apply(new)
        log.info("admin_access_updated", token=new.token is not None, allow=list(new.allow))

    def allowed(self, addr: _Address | None) -> bool:
        return addr is not None and any(addr in net for net in self.networks)

    def token_ok(self, header: str | None) -> bool:
        if self._digest is None:
            return True
        if header is None:
            return False
        scheme, _, given = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Hash both sides so the comparison takes the same time whatever the
        # length of the guess.
        return hmac.compare_digest(hashlib.sha256(given.strip().encode()).digest(), self._digest)

    # ------------------------------------------------------------------ failures

    def _bucket(self, addr: _Address, now: float) -> TokenBucket:
        bucket = self._failures.get(addr)
        if bucket is None:
            if len(self._failures) >= self.max_sources:
                # Buckets that have filled up again carry nothing; else the oldest goes.
                for key in [k for k, b in self._failures.items()
                            if b.tokens + (now - b.stamp) * b.rate >= b.burst]:
                    del self._failures[key]
                while len(self._failures) >= self.max_sources:
                    del self._failures[next(iter(self._failures))]
            bucket = self._failures[addr] = TokenBucket(self.fail_rate, self.fail_burst, now)
        return bucket

    def _limited(self, addr: _Address, now: float) -> float | None:
        """Seconds until the source may try again, or None if it may now."""
        bucket = self._failures.get(addr)
        if bucket is None:
            return None
        bucket.take(now, 0.0)  # only refills
        if bucket.tokens >= 1.0:
            return None
        return (1.0 - bucket.tokens) / bucket.rate

    def _note(self, reason: str, addr: _Address | None, request: web.Request) -> None:
        self.refused[reason] += 1
        now = self.clock()
        second = int(now)
        if second != self._log_second:
            self._log_second, self._logged = second, 0
        self._logged += 1
        if self._logged > self.log_budget:
            self._unlogged += 1
            return
        extra = {"not_logged": self._unlogged} if self._unlogged else {}
        self._unlogged = 0
        log.warning("admin_refused", reason=reason, source=str(addr) if addr else request.remote,
                    method=request.method, path=request.path[:200], **extra)

    # ------------------------------------------------------------------ middleware

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self._follow()
        addr = source_address(request.remote)
        if not self.allowed(addr):
            self._note("source_not_allowed", addr, request)
            return _refuse(403, "source address not allowed")
        assert addr is not None
        if self._digest is None and not _host_is_literal(request.url.host):
            self._note("host_not_literal", addr, request)
            return _refuse(403, "Host must be an IP address or localhost")
        if request.method not in SAFE_METHODS:
            origin = request.headers.get("Origin")
            if origin is not None and origin.lower() != f"{request.scheme}://{request.host}".lower():
                self._note("cross_origin", addr, request)
                return _refuse(403, "cross-origin request refused")
        if self._digest is None or _public(request.path):
            return await handler(request)
        now = self.clock()
        wait = self._limited(addr, now)
        if wait is not None:
            self._note("auth_rate_limited", addr, request)
            return _refuse(429, "too many failed authentications",
                           {"Retry-After": str(max(1, math.ceil(wait)))})
        header = request.headers.get("Authorization")
        if not self.token_ok(header):
            self._bucket(addr, now).take(now)
            reason = "token_missing" if header is None else "token_invalid"
            self._note(reason, addr, request)
            challenge = 'Bearer realm="sbc admin"'
            if header is not None:
                challenge += ', error="invalid_token"'
            return _refuse(401, "a valid bearer token is required",
                           {"WWW-Authenticate": challenge})
        return await handler(request)


def _public(path: str) -> bool:
    # `request.path` is percent-decoded: %2e%2e is caught here too.
    return path in PUBLIC_PATHS or (path.startswith(PUBLIC_PREFIX) and ".." not in path)


def _refuse(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)
