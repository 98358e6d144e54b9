"""Call limits shared by the nodes of a cluster: the pure half (time passed
in, no socket; sbc.cluster.limits_link moves the bytes).

The engine decides each initial INVITE on its own, without waiting: it
spends what this node already holds, and the shell tops the holdings up from
Redis ahead of need.

- **CPS**: a `TokenLease` per bucket (a gateway's, and `*` for all gateways
  together) holds a few tokens taken from the cluster's token bucket in
  Redis (one bucket per limit, refilled on the server by its own clock).
  Every token spent anywhere came from that bucket, so the cluster never
  admits more than the bucket gives; what it may admit less is the tokens
  sitting in leases, at most `lease_size` per node: 5 % of a second's worth
  across all nodes (at least one token each).
- **Concurrency**: a `SlotLease` per limit. Each call in progress here has a
  slot in Redis named by the node and its dialog identity (gateway, Call-ID,
  From-tag), and the node holds a few free slots besides (its lease). The
  node admits a call while its calls are fewer than its slots (`cap`), so the
  sum over nodes never exceeds the limit: a slot is only ever granted by the
  server's script when the cluster's count (slots of calls plus every node's
  lease) is below the limit. Ended calls give their slot back to the node,
  which returns what it does not need at its next sync.
- **Without Redis** (link lost, or never reached): each node takes the
  limit ÷ live nodes (`share`): live nodes counted from their heartbeat keys
  the last time Redis answered, or `fallback_nodes` before it ever did. For
  CPS the rate and burst are divided the same way. A node back from such a
  spell re-registers its calls; for `settle_s` afterwards every node's grant
  is capped at its share, so that nodes still in their fallback share and
  nodes already back never add up to more than the limit.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.policy.limits import (
    GATEWAY_CONCURRENT,
    GLOBAL_CONCURRENT,
    CallPolicy,
    Rejection,
)
from ..core.screen.ratelimit import TokenBucket
from .link import Link, Transition

__all__ = ["ALL", "LEASE_SHARE", "MAX_LEASE", "SharedLimits", "SlotLease", "SlotRequest",
           "TokenLease", "lease_size", "member", "share_of"]

ALL = "*"  # the limit of all gateways together (no gateway name has a '*')
LEASE_SHARE = 0.05  # every node's lease together: at most this part of a limit
MAX_LEASE = 1000

Key = tuple[bytes, bytes]  # a dialog's key in the dialog table: (Call-ID, From-tag)


def lease_size(limit: float, nodes: int) -> int:
    """How much one node holds ahead of need (tokens or free slots): 5 % of
    the limit shared among the live nodes, at least one."""
    return max(1, min(MAX_LEASE, int(limit * LEASE_SHARE / max(1, nodes))))


def share_of(limit: float, nodes: int) -> float:
    """A node's part of `limit` while it cannot reach Redis."""
    return limit / max(1, nodes)


def member(node: str, gateway: str, call_id: bytes, tag: bytes) -> str:
    """A call's slot: the node and a digest of its dialog identity (the same
    Call-ID and From-tag sent to two nodes are two calls, two slots)."""
    digest = hashlib.blake2b(b"\0".join((gateway.encode(), call_id, tag)), digest_size=12)
    return f"{node}:{digest.hexdigest()}"


class TokenLease(TokenBucket):
    """A CPS bucket as the engine sees it (CallPolicy spends it with `take`).
    Shared: `tokens` are tokens leased from the cluster's bucket, and one
    below `low` asks the shell for more. Fallback: an ordinary local token
    bucket at the node's share of the rate and burst."""

    __slots__ = ("cluster_burst", "cluster_rate", "low", "name", "shared", "size", "want")

    def __init__(self, name: str, rate: float, burst: float, now: float,
                 want: Callable[[], None]) -> None:
        super().__init__(rate, burst, now)
        self.name = name
        self.cluster_rate = rate
        self.cluster_burst = burst
        self.shared = False
        self.size = 1
        self.low = 1.0
        self.want = want

    def take(self, now: float, cost: float = 1.0) -> bool:
        if not self.shared:
            return TokenBucket.take(self, now, cost)
        if self.tokens >= cost:
            self.tokens -= cost
            if self.tokens <= self.low:
                self.want()
            return True
        self.want()
        return False

    def resize(self, rate: float, burst: float, nodes: int, now: float) -> None:
        self.cluster_rate, self.cluster_burst = rate, burst
        self.size = lease_size(rate, nodes)
        self.low = self.size / 2
        if not self.shared:
            self.fall_back(nodes, now)

    def fall_back(self, nodes: int, now: float) -> None:
        """Serve on the node's share (tokens leased before are kept, up to it)."""
        TokenBucket.take(self, now, 0.0)  # settle what accrued at the old rate
        self.shared = False
        self.rate = share_of(self.cluster_rate, nodes)
        self.burst = max(1.0, share_of(self.cluster_burst, nodes))
        self.tokens = min(self.tokens, self.burst)
        self.stamp = now

    def asked(self) -> int:
        """Tokens to ask the cluster's bucket for now (0: enough in hand)."""
        if self.shared and self.tokens > self.low:
            return 0
        return max(1, self.size - int(self.tokens if self.shared else 0))

    def granted(self, n: int, now: float) -> None:
        """The cluster's bucket gave `n` tokens (the first grant after a
        fallback replaces what the local bucket held)."""
        if not self.shared:
            self.shared, self.tokens, self.stamp = True, 0.0, now
        self.tokens += n

    def capacity(self, tick_s: float) -> float:
        """The cluster bucket's size: the burst, or more when the burst is
        smaller than what accrues between two refills plus the leases (a
        smaller bucket would waste tokens the rate allows)."""
        return max(self.cluster_burst, 2.0 * self.size, 2.0 * self.cluster_rate * tick_s)


@dataclass
class SlotRequest:
    """One sync of a slot lease: the slots to add (new calls, or all of them
    to refresh), to remove (ended calls), and the free slots wanted."""

    lease: SlotLease
    adds: dict[Key, str]
    dels: list[str]
    want: int  # free slots to hold after this sync
    keep: int  # free slots this node may already have spent meanwhile
    mine: int  # this node's calls under the limit, now
    refresh: bool = False


class SlotLease:
    """One concurrency limit (a gateway's, or `*`) as this node holds it."""

    __slots__ = ("fallback", "limit", "lease", "name", "nodes", "registered", "resync", "size",
                 "shared", "short")

    def __init__(self, name: str, limit: int, nodes: int) -> None:
        self.name = name
        self.limit = limit
        self.nodes = nodes
        self.size = lease_size(limit, nodes)
        self.fallback = math.floor(share_of(limit, nodes))
        self.registered: dict[Key, str] = {}  # calls whose slot Redis holds (as far as we know)
        self.lease = 0  # free slots Redis holds for this node
        self.shared = False
        self.resync = True  # next sync registers every call (start, back from a fallback)
        self.short = 0  # calls refused for want of a slot (shared) or of share (fallback)

    def cap(self) -> int:
        """The calls this node may have under the limit now."""
        if self.shared:
            return len(self.registered) + self.lease
        return self.fallback

    @property
    def low(self) -> int:
        """Fewer free slots than this: ask for more."""
        return max(1, self.size // 2)

    def resize(self, limit: int, nodes: int) -> None:
        self.limit, self.nodes = limit, nodes
        self.size = lease_size(limit, nodes)
        self.fallback = math.floor(share_of(limit, nodes))

    def fall_back(self) -> None:
        self.shared = False
        self.resync = True

    def request(self, calls: Mapping[Key, Any], name: Callable[[Key, Any], str], *,
                refresh: bool = False) -> SlotRequest | None:
        """What to send for `calls` (this node's calls under the limit, by
        key; `name` gives a new call's slot); None when nothing needs saying.
        Applied here at once: the slots are taken as registered, and a lease
        that shrinks shrinks before the request leaves (the reply may grant
        less, never less than what may be spent meanwhile: `keep`)."""
        old_cap = self.cap()
        registered = self.registered
        new = {k: name(k, v) for k, v in calls.items() if k not in registered}
        dels = [v for k, v in registered.items() if k not in calls]
        free = old_cap - len(calls)
        want = self.size
        if not (new or dels or refresh) and self.shared and self.low <= free <= want:
            return None  # enough slots in hand, none to give back
        if dels:
            registered = {k: v for k, v in registered.items() if k in calls}
        registered.update(new)
        self.registered = registered
        full = refresh or self.resync
        keep = max(0, min(want, free))
        if self.shared:
            self.lease = keep
        return SlotRequest(self, dict(registered) if full else new, dels, want, keep, len(calls),
                           full)

    def granted(self, request: SlotRequest, grant: int) -> None:
        self.lease = max(grant, 0)
        self.shared = True
        self.resync = False


@dataclass
class Figures:
    syncs: int = 0
    refreshes: int = 0
    tokens_granted: int = 0
    invalid: dict[str, int] = field(default_factory=dict)


class SharedLimits:
    """Every shared limit of this node, and the state of its link for them."""

    def __init__(self, node: str, now: float, *, fallback_nodes: int = 2,
                 retry_max_s: float = 2.0, tick_s: float = 0.05) -> None:
        self.node = node
        self.link = Link(now, retry_max_s=retry_max_s)
        self.nodes = max(1, fallback_nodes)  # live nodes, as last seen in Redis
        self.reached = False  # Redis has answered once
        self.tick_s = tick_s
        self.slots: dict[str, SlotLease] = {}
        self.tokens: dict[str, TokenLease] = {}
        self.settle = False  # the next sync starts a settling period (back from a fallback)
        self.figures = Figures()
        self.wake: Callable[[], None] = lambda: None  # asks the shell for a sync

    # ------------------------------------------------------------ the engine's side

    def admit(self, gateway: str, active_gateway: int, active_total: int) -> Rejection | None:
        """CallPolicy's question for an initial INVITE: is there a slot here?"""
        lease = self.slots.get(gateway)
        if lease is not None:
            cap = lease.cap()
            if active_gateway >= cap:
                lease.short += 1
                self.wake()
                return GATEWAY_CONCURRENT
            if lease.shared and cap - active_gateway - 1 < lease.low:
                self.wake()
        every = self.slots.get(ALL)
        if every is not None:
            cap = every.cap()
            if active_total >= cap:
                every.short += 1
                self.wake()
                return GLOBAL_CONCURRENT
            if every.shared and cap - active_total - 1 < every.low:
                self.wake()
        return None

    def attach(self, policy: CallPolicy, now: float) -> None:
        """Take over `policy`'s limits (at start and after each reload):
        its CPS buckets become leases, its concurrency limits slot leases."""
        limits: dict[str, int] = {name: p.max_concurrent for name, p in policy.gateways.items()
                                  if p.max_concurrent > 0}
        if policy.max_concurrent > 0:
            limits[ALL] = policy.max_concurrent
        for name in list(self.slots):
            if name not in limits:
                del self.slots[name]
        for name, limit in limits.items():
            lease = self.slots.get(name)
            if lease is None:
                self.slots[name] = SlotLease(name, limit, self.nodes)
            else:
                lease.resize(limit, self.nodes)
        buckets: dict[str, TokenBucket] = dict(policy.buckets())
        old, self.tokens = self.tokens, {}
        for name, bucket in buckets.items():
            lease_t = old.get(name)
            if lease_t is None:
                lease_t = TokenLease(name, bucket.rate, bucket.burst, now, self._want)
                lease_t.fall_back(self.nodes, now)
            lease_t.resize(bucket.rate, bucket.burst, self.nodes, now)
            self.tokens[name] = lease_t
        policy.share(self, {n: t for n, t in self.tokens.items()})

    def _want(self) -> None:
        self.wake()

    # ------------------------------------------------------------ the shell's side

    def requests(self, calls_of: Callable[[str], Mapping[Key, Any]],
                 name: Callable[[Key, Any], str], *, refresh: bool = False) -> list[SlotRequest]:
        out = []
        for lease in self.slots.values():
            request = lease.request(calls_of(lease.name), name, refresh=refresh)
            if request is not None:
                out.append(request)
        return out

    def token_asks(self) -> list[tuple[TokenLease, int]]:
        return [(t, n) for t in self.tokens.values() if (n := t.asked()) > 0]

    def connected(self, now: float) -> Transition | None:
        t = self.link.succeeded(now)
        self.reached = True
        return t

    def lost(self, now: float, error: str) -> Transition | None:
        """The link failed: every limit falls back to this node's share."""
        t = self.link.failed(now, error)
        for lease in self.slots.values():
            lease.fall_back()
        for bucket in self.tokens.values():
            if bucket.shared:
                bucket.fall_back(self.nodes, now)
        self.settle = True
        return t

    def live_nodes(self, n: int, now: float, settled: bool = True) -> None:
        """Heartbeat keys seen in Redis: the divisor for leases and shares.
        Not `settled` (connected for less than a slot TTL: after a restart of
        Redis the others' heartbeats may not be back yet), it never drops."""
        n = max(1, n if settled else max(n, self.nodes))
        if n == self.nodes:
            return
        self.nodes = n
        for lease in self.slots.values():
            lease.resize(lease.limit, n)
        for bucket in self.tokens.values():
            bucket.resize(bucket.cluster_rate, bucket.cluster_burst, n, now)

    def invalid(self, reason: str) -> None:
        self.figures.invalid[reason] = self.figures.invalid.get(reason, 0) + 1

    @property
    def fallback(self) -> bool:
        """Whether any limit is on this node's share alone."""
        return any(not s.shared for s in self.slots.values()) or any(
            not t.shared for t in self.tokens.values())

    def stats(self, active: Callable[[str], int]) -> dict[str, Any]:
        return {
            "mode": "fallback" if self.fallback or self.link.degraded else "shared",
            "state": self.link.state.value,
            "degraded": self.link.degraded,
            "live_nodes": self.nodes,
            "reached": self.reached,
            "transitions": self.link.transitions,
            "syncs": self.figures.syncs,
            "refreshes": self.figures.refreshes,
            "tokens_granted": self.figures.tokens_granted,
            "invalid": dict(self.figures.invalid),
            "concurrency": {name: {"limit": s.limit, "calls": active(name), "cap": s.cap(),
                                   "lease": s.lease if s.shared else 0, "shared": s.shared,
                                   "fallback_share": s.fallback, "refused": s.short}
                            for name, s in sorted(self.slots.items())},
            "cps": {name: {"rate": t.cluster_rate, "lease": t.size, "shared": t.shared,
                           "tokens": round(t.tokens, 2),
                           "fallback_rate": round(share_of(t.cluster_rate, self.nodes), 3)}
                    for name, t in sorted(self.tokens.items())},
        }
