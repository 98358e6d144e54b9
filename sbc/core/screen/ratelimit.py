"""Token buckets (rate and burst, like iptables hashlimit), with time passed in."""

from __future__ import annotations

import ipaddress
from array import array
from collections import OrderedDict
from collections.abc import Iterator
from itertools import islice


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; `take` spends one."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float = 0.0) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class SourceBudget:
    """Token buckets per source address and per /24 (IPv4) or /64 (IPv6),
    in tables bounded by `max_sources` (the oldest entry goes first): what
    sbc may send to sources that have not authenticated, beside the global
    budget, so that one source (or one network), real or forged, cannot
    spend all of it."""

    __slots__ = ("burst_ip", "burst_net", "max_sources", "per_ip", "per_net", "rate_ip", "rate_net")

    def __init__(self, per_ip: tuple[float, float] = (2.0, 5.0),
                 per_net: tuple[float, float] = (20.0, 40.0), max_sources: int = 100_000) -> None:
        self.rate_ip, self.burst_ip = per_ip
        self.rate_net, self.burst_net = per_net
        self.max_sources = max_sources
        self.per_ip: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.per_net: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, host: str, now: float) -> bool:
        return (self._take(self.per_ip, host, self.rate_ip, self.burst_ip, now)
                and self._take(self.per_net, net_key(host), self.rate_net, self.burst_net, now))

    def _take(self, table: OrderedDict[str, tuple[float, float]], key: str, rate: float,
              burst: float, now: float) -> bool:
        b = table.get(key)
        tokens = burst if b is None else min(burst, b[0] + (now - b[1]) * rate)
        if tokens < 1.0:
            table[key] = (tokens, now)
            return False
        table[key] = (tokens - 1.0, now)
        if b is None and len(table) > self.max_sources:
            table.popitem(last=False)
        return True


class SourceBuckets:
    """Token buckets keyed by source (an address, a network), in two tiers, so
    that a flood of fresh forged sources costs no allocation per packet and
    cannot push out the state of sources that keep sending.

    - First sight: a source's first packet only writes the hash of its key
      and the time into a fixed array slot (`hash & mask`). The bucket it
      would have had is known from those two: `burst - 1` tokens at that
      time. A later packet whose slot still holds its hash, within
      `burst / rate` seconds (after that a bucket is full, which equals no
      bucket), becomes an exact bucket.
    - Exact buckets: `table`, creation order, capped at `max_entries` (the
      oldest goes first), expired by `expire`. Only sources seen twice in
      `burst / rate` seconds get here, so a fresh-source flood never
      evicts a bucket.

    A first sight overwritten by another key (or a hash that collides) is
    forgotten: that source's next packet is a first one again, worth one
    token more than it would have been (under a flood of R fresh sources a
    second, a slot lasts about `slots / R` seconds; a source coming back
    later has most of its tokens back anyway). The string hash is salted
    per process, so a forger cannot aim at a slot. Memory is fixed: 16
    bytes a slot (`slots`, by default the power of two at or above
    `max_entries`), whatever the flood.
    """

    __slots__ = ("burst", "full_after", "mask", "max_entries", "rate", "seen_at", "seen_key",
                 "table")

    def __init__(self, rate: float, burst: float, max_entries: int, slots: int | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self.full_after = burst / rate if rate > 0 else float("inf")  # when a bucket is full again
        self.max_entries = max_entries
        slots = 1 << max(10, ((slots or max_entries) - 1).bit_length())
        self.mask = slots - 1
        self.seen_key = array("q", [-1]) * slots  # hash() is never -1
        self.seen_at = array("d", bytes(8 * slots))
        # (tokens, stamp): a tuple of floats, which the garbage collector stops
        # tracking, so a table of 200,000 of them costs full collections nothing.
        self.table: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.table)

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __contains__(self, key: object) -> bool:
        return key in self.table

    def get(self, key: str) -> tuple[float, float] | None:
        return self.table.get(key)

    def take(self, key: str, now: float) -> bool:
        """Spend one token of `key`'s bucket: False when it has none."""
        table = self.table
        b = table.get(key)
        if b is None:
            h = hash(key)
            i = h & self.mask
            seen_key = self.seen_key
            if seen_key[i] != h or now - self.seen_at[i] >= self.full_after:
                seen_key[i] = h  # a first sight: burst - 1 tokens left, at `now`
                self.seen_at[i] = now
                return True
            seen_key[i] = -1  # seen before: its bucket becomes exact
            b = (self.burst - 1.0, self.seen_at[i])
            table[key] = b
            if len(table) > self.max_entries:
                table.popitem(last=False)
        tokens = b[0] + (now - b[1]) * self.rate
        if tokens > self.burst:  # noqa: PLR1730 - a compare, cheaper than min() per packet
            tokens = self.burst
        if tokens < 1.0:
            table[key] = (tokens, now)
            return False
        table[key] = (tokens - 1.0, now)
        return True

    def expire(self, now: float, budget: int) -> None:
        """Forget exact buckets that have refilled (a full bucket equals an
        absent one), looking at no more than `budget` of the oldest, so a
        sweep never stalls the loop; the size cap does the rest. First
        sights need no sweep: older than `burst / rate` they count as absent."""
        full_after = self.full_after
        table = self.table
        stale = [k for k, b in islice(table.items(), budget) if now - b[1] > full_after]
        for key in stale:
            del table[key]


def net_key(host: str) -> str:
    """The /24 of an IPv4 address, the /64 of an IPv6 one, as a key."""
    if ":" not in host:
        i = host.rfind(".")
        return host[:i] if i >= 0 else ""
    groups = host.split(":")
    if "" in groups[:4]:  # '::' early: expand properly
        try:
            return ipaddress.IPv6Address(host).exploded[:19]
        except ValueError:
            return host
    return ":".join(groups[:4])
