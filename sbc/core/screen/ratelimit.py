"""Token buckets (rate and burst, like iptables hashlimit), with time passed in."""

from __future__ import annotations

import ipaddress
from collections import OrderedDict


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


def net_key(host: str) -> str:
    """The /24 of an IPv4 address, the /64 of an IPv6 one, as a key."""
    if ":" not in host:
        return host.rpartition(".")[0]
    groups = host.split(":")
    if "" in groups[:4]:  # '::' early: expand properly
        try:
            return ipaddress.IPv6Address(host).exploded[:19]
        except ValueError:
            return host
    return ":".join(groups[:4])
