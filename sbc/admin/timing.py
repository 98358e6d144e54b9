"""Processing time per packet, as histogram counts the admin reads at scrape
time: one bisect and two additions per observation, no Prometheus object on
the hot path."""

from __future__ import annotations

from bisect import bisect_left
from typing import NamedTuple

# Upper bounds in seconds (Prometheus `le`); a packet through sbc takes tens
# of microseconds, a flood's backlog can make it milliseconds.
DEFAULT_BOUNDS: tuple[float, ...] = (
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)


class HistogramSnapshot(NamedTuple):
    """Cumulative counts per upper bound, the last bound being +Inf, and the
    sum of the observed values (seconds)."""

    buckets: tuple[tuple[float, int], ...]
    sum: float

    @property
    def observations(self) -> int:
        return self.buckets[-1][1] if self.buckets else 0


class PacketTimer:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = DEFAULT_BOUNDS) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("bounds must be increasing")
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def snapshot(self) -> HistogramSnapshot:
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts):
            running += n
            out.append((bound, running))
        return HistogramSnapshot(tuple(out), self.total)
