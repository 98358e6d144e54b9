"""Per-gateway and global call limits, and destination controls (toll fraud).

What VOS3000 does per mapping gateway, done at the edge: a calls-per-second
token bucket over initial INVITEs (retransmissions, re-INVITEs and in-dialog
requests never reach it), a concurrent-call limit read from the dialog table
(never a counter of its own), a maximum call duration, and the same limits
for all gateways together. Over a limit: 503 with Retry-After and a reason
phrase naming the limit. Destinations are matched on the called number as
sbc.core.policy.numbers reads it (separators dropped, tech prefixes stripped, then
'+' or '00'), for matching only: the request goes on unchanged. A blocked
destination gets 403 and counts as an offense; so does a call to a gateway
under a list whose Request-URI names no number that can be read (the lists
fail closed: an odd spelling must not walk past them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .numbers import longest_first, matched
from .numbers import normalise as normalise  # re-exported: prefixes and tests use it
from ..screen.ratelimit import TokenBucket


class PrefixSet:
    """Longest-prefix membership over digit strings: one set lookup per
    distinct prefix length, not a scan over prefixes."""

    __slots__ = ("_lengths", "_prefixes")

    def __init__(self, prefixes: Iterable[str]) -> None:
        self._prefixes = {normalise(p) for p in prefixes if normalise(p)}
        self._lengths = sorted({len(p) for p in self._prefixes}, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._prefixes)

    def match(self, number: str) -> str | None:
        for n in self._lengths:
            if len(number) >= n and number[:n] in self._prefixes:
                return number[:n]
        return None


@dataclass
class GatewayPolicy:
    cps: float = 0.0  # 0: unlimited
    burst: float = 1.0
    max_concurrent: int = 0
    max_duration: float = 0.0
    allowed: PrefixSet = field(default_factory=lambda: PrefixSet(()))
    blocked: PrefixSet = field(default_factory=lambda: PrefixSet(()))
    tech: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rejection:
    status: int
    reason: bytes  # the reason phrase, naming the limit
    counter: str  # the name counted in figures and metrics


BLOCKED = Rejection(403, b"Destination Blocked", "blocked_destination")
NOT_ALLOWED = Rejection(403, b"Destination Not Allowed", "not_allowed_destination")
# A list applies and the Request-URI names no number it can be matched on.
UNREADABLE = Rejection(403, b"Destination Unreadable", "unreadable_destination")
GATEWAY_CPS = Rejection(503, b"Gateway CPS Limit", "gateway_cps")
GATEWAY_CONCURRENT = Rejection(503, b"Gateway Concurrent Call Limit", "gateway_concurrent")
GLOBAL_CPS = Rejection(503, b"CPS Limit", "global_cps")
GLOBAL_CONCURRENT = Rejection(503, b"Concurrent Call Limit", "global_concurrent")


class SharedCheck(Protocol):
    """Concurrency shared with other nodes (sbc.cluster.limits.SharedLimits):
    whether this node holds a slot for one more call."""

    def admit(self, gateway: str, active_gateway: int, active_total: int) -> Rejection | None: ...


class CallPolicy:
    def __init__(self, gateways: dict[str, GatewayPolicy] | None = None, *,
                 max_cps: float = 0.0, max_cps_burst: float = 1.0, max_concurrent: int = 0,
                 blocked: Iterable[str] = (), tech: Iterable[str] = (),
                 retry_after: int = 5) -> None:
        self.gateways = gateways or {}
        self.max_concurrent = max_concurrent
        self.blocked = PrefixSet(blocked)
        self.tech = tuple(tech)
        self.retry_after = retry_after
        self._global_bucket = TokenBucket(max_cps, max_cps_burst) if max_cps > 0 else None
        self._buckets = {name: TokenBucket(p.cps, p.burst) for name, p in self.gateways.items()
                         if p.cps > 0}
        self.figures: dict[str, Counter[str]] = {}
        # Whether any prefix rule exists: if not, the called number is not even read.
        self.matches_numbers = bool(self.blocked) or any(
            p.blocked or p.allowed for p in self.gateways.values())
        # The gateways a list applies to, with their tech prefixes longest
        # first; a gateway not named here is under the global list alone.
        self._tech = {name: longest_first((*self.tech, *p.tech))
                      for name, p in self.gateways.items()
                      if self.blocked or p.blocked or p.allowed}
        self._default_tech = longest_first(self.tech) if self.blocked else None
        self._second: dict[str, tuple[int, int, int]] = {}  # gateway -> (second, count, last full second)
        self.shared: SharedCheck | None = None  # a cluster's limits (sbc.cluster), else None

    def buckets(self) -> dict[str, TokenBucket]:
        """The CPS buckets by gateway, the global one under "*"."""
        out = dict(self._buckets)
        if self._global_bucket is not None:
            out["*"] = self._global_bucket
        return out

    def share(self, shared: SharedCheck, buckets: Mapping[str, TokenBucket]) -> None:
        """Limits shared with other nodes: `shared` answers for concurrency,
        `buckets` (same names as `buckets()`) replace the CPS buckets."""
        self.shared = shared
        for name, bucket in buckets.items():
            if name == "*":
                self._global_bucket = bucket
            elif name in self._buckets:
                self._buckets[name] = bucket

    def policy(self, gateway: str) -> GatewayPolicy | None:
        return self.gateways.get(gateway)

    def check(self, gateway: str, called: tuple[str, ...], active_gateway: int,
              active_total: int, now: float) -> Rejection | None:
        """None admits the call (and spends its CPS tokens); else why not.
        `called`: every reading of the dialled number (sbc.core.policy.numbers.dialled),
        () when the Request-URI names none."""
        p = self.gateways.get(gateway)
        tech = self._tech.get(gateway, self._default_tech)
        if tech is not None:  # a list applies: the number must be read, every reading judged
            not_allowed = False
            for dialled in called:
                number = matched(dialled, tech)
                if number is None:
                    return self._count(gateway, UNREADABLE)
                if self.blocked.match(number) or (p is not None and p.blocked.match(number)):
                    return self._count(gateway, BLOCKED)  # whichever reading it is
                if p is not None and p.allowed and not p.allowed.match(number):
                    not_allowed = True
            if not called:
                return self._count(gateway, UNREADABLE)
            if not_allowed:
                return self._count(gateway, NOT_ALLOWED)
        if p is not None and p.max_concurrent and active_gateway >= p.max_concurrent:
            return self._count(gateway, GATEWAY_CONCURRENT)
        if self.max_concurrent and active_total >= self.max_concurrent:
            return self._count(gateway, GLOBAL_CONCURRENT)
        shared = self.shared
        if shared is not None:  # a cluster: a slot this node holds (sbc.cluster.limits)
            refused = shared.admit(gateway, active_gateway, active_total)
            if refused is not None:
                return self._count(gateway, refused)
        bucket = self._buckets.get(gateway)
        if bucket is not None and not bucket.take(now):
            return self._count(gateway, GATEWAY_CPS)
        g = self._global_bucket
        if g is not None and not g.take(now):
            if bucket is not None:
                bucket.tokens += 1.0  # not admitted: the gateway's token goes back
            return self._count(gateway, GLOBAL_CPS)
        figures = self.figures.setdefault(gateway, Counter())
        figures["admitted"] += 1
        sec = int(now)
        cur, count, last = self._second.get(gateway, (sec, 0, 0))
        self._second[gateway] = (sec, count + 1, last) if cur == sec else (sec, 1, count if cur == sec - 1 else 0)
        return None

    def current_cps(self, gateway: str, now: float) -> int:
        """Calls admitted in the last whole second."""
        cur, count, last = self._second.get(gateway, (0, 0, 0))
        sec = int(now)
        return last if cur == sec else (count if cur == sec - 1 else 0)

    def _count(self, gateway: str, r: Rejection) -> Rejection:
        self.figures.setdefault(gateway, Counter())["rejected_" + r.counter] += 1
        return r
