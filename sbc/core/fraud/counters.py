"""The counters of one gateway under one rule (a `Scope`), with time passed in.

Every table here is bounded: the minute is 60 one-second buckets, the calls
an explanation names are the last EXPLAIN, and the per-number runs of
sequential calls are at most `max_numbers` entries, the least recently
dialled going first, each expiring `sequential_gap` seconds after its last
call. Calls in progress are the engine's dialogs (bounded by sip.max_dialogs);
their answered seconds are summed without a walk: `answered` keeps when each
one started counting, `live_sum` the sum of those starts, so the running
minutes of all of them are `n * now - live_sum`.

With the cluster sharing the watch (sbc.cluster.fraud_share), `others`
holds what the other nodes last said of the same scope, added to every
figure this node judges; None: this node counts alone.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from .rules import Level, Metric, Rule

EXPLAIN = 20  # calls named in an explanation
DialogKey = tuple[bytes, bytes]  # as sbc.core.proxy.dialogs: (Call-ID, the caller's From-tag)
AlertKey = tuple[Metric, Level, str]  # the number for sequential runs, else ""


@dataclass(frozen=True, slots=True)
class Seen:
    """A call as an explanation names it."""

    call_id: str
    number: str
    at: float  # monotonic

    def explain(self) -> dict[str, str]:
        return {"call_id": self.call_id, "number": self.number}


class MinuteRing:
    """Calls in the last 60 whole seconds: a ring of one-second buckets with a
    running total, advanced as time passes (amortised O(1) per call)."""

    __slots__ = ("_buckets", "_head", "total")

    def __init__(self) -> None:
        self._buckets = [0] * 60
        self._head = -1  # the second the newest bucket holds
        self.total = 0

    def _advance(self, sec: int) -> None:
        if sec <= self._head:
            return
        if sec - self._head >= 60:
            self._buckets = [0] * 60
            self.total = 0
        else:
            b = self._buckets
            for s in range(self._head + 1, sec + 1):
                i = s % 60
                self.total -= b[i]
                b[i] = 0
        self._head = sec

    def add(self, now: float, n: int = 1) -> None:
        sec = int(now)
        self._advance(sec)
        if sec < self._head - 59:
            return  # older than the window
        self._buckets[sec % 60] += n
        self.total += n

    def count(self, now: float) -> int:
        self._advance(int(now))
        return self.total

    def ages(self, now: float) -> list[tuple[int, int]]:
        """(seconds ago, calls) of every bucket that holds calls (for the store)."""
        self._advance(int(now))
        head = self._head
        return [(head - s, self._buckets[s % 60]) for s in range(head - 59, head + 1)
                if self._buckets[s % 60]]


class Run:
    """Calls in a row to one number."""

    __slots__ = ("calls", "count", "last")

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0
        self.calls: deque[Seen] = deque(maxlen=EXPLAIN)


class SeqTable:
    """Runs of sequential calls per number: at most `cap` numbers (the least
    recently dialled go first, so a flood of distinct numbers cannot grow it;
    such a flood is what calls_per_minute and calls_per_day see), each run
    forgotten `gap` seconds after its last call."""

    __slots__ = ("cap", "evicted", "gap", "runs")

    def __init__(self, cap: int, gap: float) -> None:
        self.cap = cap
        self.gap = gap
        self.runs: dict[str, Run] = {}  # oldest last call first
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.runs)

    def add(self, seen: Seen, now: float) -> Run:
        runs = self.runs
        run = runs.pop(seen.number, None)
        if run is None or now - run.last > self.gap:
            run = Run()
        run.count += 1
        run.last = now
        run.calls.append(seen)
        runs[seen.number] = run  # to the end: the most recent
        while len(runs) > self.cap:
            del runs[next(iter(runs))]
            self.evicted += 1
        return run

    def expire(self, now: float) -> None:
        runs = self.runs
        while runs:
            number = next(iter(runs))
            if now - runs[number].last <= self.gap:
                return
            del runs[number]


@dataclass(slots=True)
class Block:
    """New calls from `gateway` to the destinations of `rule` are refused
    until `until` (monotonic; inf: until an operator clears it)."""

    gateway: str
    rule: str
    metric: Metric
    threshold: float
    figure: float
    calls: tuple[Seen, ...]
    since: float
    until: float
    refused: int = 0
    node: str = ""  # the node that made it ("": this process, cluster off)


@dataclass(frozen=True, slots=True)
class Others:
    """The other nodes' figures of one scope, as last read from the cluster
    (summed over the nodes): calls in the last 60 s, calls in progress, and
    for the local date `day` the calls and answered seconds today; the
    runs of sequential calls by number (bounded by the reader)."""

    calls_minute: int = 0
    live: int = 0
    day: str = ""
    calls_today: int = 0
    seconds_today: float = 0.0
    seq: Mapping[str, int] = field(default_factory=dict)
    nodes: int = 0  # how many nodes said something of this scope


@dataclass(frozen=True, slots=True)
class Alert:
    """A threshold crossed: what, by how much, which calls, and when it clears."""

    gateway: str
    rule: str
    metric: Metric
    level: Level
    threshold: float
    figure: float
    calls: tuple[Seen, ...]
    at: float  # monotonic
    clears: str  # in words: when the figure falls, at midnight, when the block ends
    blocked_until: float | None = None  # monotonic (inf: until cleared); critical only


class Scope:
    """One gateway under one rule."""

    __slots__ = ("alerts", "answered", "block", "calls_today", "cleared_at", "day", "day_end",
                 "day_start", "gateway", "live", "live_sum", "minute", "others", "recent",
                 "refused", "rule", "seconds_today", "seq")

    def __init__(self, gateway: str, rule: Rule, max_numbers: int) -> None:
        self.gateway = gateway
        self.rule = rule
        self.minute = MinuteRing()
        self.day = ""  # the local date counted (ISO), "" before the first call
        self.day_start = float("-inf")  # monotonic
        self.day_end = float("-inf")
        self.calls_today = 0
        self.seconds_today = 0.0  # answered seconds of calls that ended today
        self.live: dict[DialogKey, Seen] = {}  # calls in progress (admitted, not ended)
        self.answered: dict[DialogKey, float] = {}  # of those, answered: when they count from
        self.live_sum = 0.0
        self.seq = SeqTable(max_numbers, rule.sequential_gap)
        self.recent: deque[Seen] = deque(maxlen=EXPLAIN)
        self.alerts: dict[AlertKey, Alert] = {}
        self.block: Block | None = None
        self.cleared_at = float("-inf")  # an operator's clear: counting starts again
        self.refused = 0
        self.others: Others | None = None  # the other nodes' figures (cluster)

    def minutes(self, now: float) -> float:
        """Answered minutes today: calls that ended, and running calls as they run."""
        running = len(self.answered) * now - self.live_sum if self.answered else 0.0
        return (self.seconds_today + running) / 60.0

    def count_from(self, at: float) -> float:
        return max(at, self.day_start, self.cleared_at)

    def restart_running(self, at: float) -> None:
        """Running calls count from `at` on (a new day, an operator's clear)."""
        for key in self.answered:
            self.answered[key] = at
        self.live_sum = at * len(self.answered)

    def answer(self, key: DialogKey, now: float) -> None:
        if key in self.live and key not in self.answered:
            start = self.count_from(now)
            self.answered[key] = start
            self.live_sum += start

    def end(self, key: DialogKey, now: float) -> None:
        self.live.pop(key, None)
        start = self.answered.pop(key, None)
        if start is not None:
            self.live_sum -= start
            self.seconds_today += max(0.0, now - start)
            if not self.answered:
                self.live_sum = 0.0  # no float drift left behind

    def figure(self, metric: Metric, now: float, number: str = "") -> float:
        """This node's figure, plus the other nodes' when the cluster shares them."""
        mine = self.own(metric, now, number)
        o = self.others
        if o is None:
            return mine
        if metric is Metric.CALLS_PER_MINUTE:
            return mine + o.calls_minute
        if metric is Metric.CONCURRENT:
            return mine + o.live
        if metric is Metric.SEQUENTIAL:
            return mine + o.seq.get(number, 0)
        if o.day != self.day:  # another local date: not today's
            return mine
        if metric is Metric.CALLS_PER_DAY:
            return mine + o.calls_today
        return round(mine + o.seconds_today / 60.0, 2)

    def own(self, metric: Metric, now: float, number: str = "") -> float:
        """This node's own figure (what it tells the others)."""
        if metric is Metric.CALLS_PER_MINUTE:
            return float(self.minute.count(now))
        if metric is Metric.CONCURRENT:
            return float(len(self.live))
        if metric is Metric.CALLS_PER_DAY:
            return float(self.calls_today)
        if metric is Metric.MINUTES_PER_DAY:
            return round(self.minutes(now), 2)
        run = self.seq.runs.get(number)
        return float(run.count) if run is not None and now - run.last <= self.seq.gap else 0.0

    def calls_for(self, metric: Metric, now: float, number: str = "") -> tuple[Seen, ...]:
        """The calls that made a figure (at most EXPLAIN, most recent last)."""
        if metric is Metric.CALLS_PER_MINUTE:
            return tuple(s for s in self.recent if now - s.at < 60.0)
        if metric is Metric.CONCURRENT:
            return tuple(self.live.values())[-EXPLAIN:]
        if metric is Metric.MINUTES_PER_DAY:
            running = tuple(self.live[k] for k in self.answered if k in self.live)[-EXPLAIN:]
            return running or tuple(self.recent)
        if metric is Metric.SEQUENTIAL:
            run = self.seq.runs.get(number)
            return tuple(run.calls) if run is not None else ()
        return tuple(self.recent)
