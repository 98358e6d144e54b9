"""The toll-fraud watch across nodes: the pure half (the Redis shell,
sbc.cluster.fraud_link, only moves bytes). Time is passed in: `mono` the
watch's clock, `wall` the wall clock.

Blocks and clears travel like bans (sbc.cluster.sync): a block made here
(the watch's `on_block`) or an operator's clear becomes an event in a
bounded outbox; events from the others are checked, judged and applied to
the watch without being announced again. A clear leaves a mark per
(gateway, rule) pattern, so a block made before it, arriving late or pushed
again by a node that was away, is not taken.

Counters: each node tells its own figures per gateway and rule (a
`Contribution`, only when they changed, and every `REFRESH_S` while not
zero) and adds the others' last-told figures to its own when it judges
(`Scope.others`). A node's figures older than `FRESH_S` no longer count
(the node is gone or cut off), nor those told before a clear of their scope.
While the link is down each node counts alone.

Bounds: the outbox holds at most `max_pending` events (beyond, dropped,
counted, and the blocks in force pushed again); a node tells at most
`MAX_SEQ` runs of sequential calls per scope; per scope at most `MAX_NODES`
other nodes and `MAX_NUMBERS` numbers are kept; scopes and clear marks are
bounded by the configured gateways and rules (what names another is skipped).
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.fraud.counters import Block, Others, Scope, Seen
from ..core.fraud.watch import Cleared, FraudWatch
from .events import Invalid
from .fraud_events import (MAX_SEQ, Contribution, FraudEvent, FraudOp, decode_contribution,
                           decode_event)
from .link import Link, Transition

__all__ = ["FraudShare", "field_name"]

FRESH_S = 15.0  # a node's figures older than this no longer count
DROP_S = 120.0  # ... and its field is removed from the hash
REFRESH_S = 5.0  # figures that did not change are told again this often
MAX_NODES = 64  # other nodes kept per scope
MAX_NUMBERS = 4 * MAX_SEQ  # numbers with runs kept per scope (the longest runs)
INF = float("inf")
Key = tuple[str, str]  # (gateway, rule)


def field_name(node: str, gateway: str) -> str:
    return f"{node}|{gateway}"


@dataclass(slots=True)
class _Sum:
    """The others' figures of one scope, summed while reading."""

    nodes: int = 0
    calls_minute: int = 0
    live: int = 0
    day: str = ""
    calls_today: int = 0
    seconds_today: float = 0.0
    seq: Counter[str] = field(default_factory=Counter)


class FraudShare:
    def __init__(self, watch: FraudWatch, *, node: str, instance: str, now: float,
                 max_pending: int = 10_000, retry_max_s: float = 2.0) -> None:
        self.watch = watch
        self.node = node
        self.instance = instance
        watch.node = node
        watch.on_block = self.made
        self.link = Link(now, retry_max_s=retry_max_s)
        self.max_pending = max_pending
        self.outbox: deque[FraudEvent] = deque()
        self.dropped = 0
        self.resync = True  # push the blocks in force at the next chance
        self.published: dict[Key, Contribution] = {}  # what this node last told
        self.marks: dict[Key, float] = {}  # (gateway or "*", rule or "*") -> wall of the clear
        self.sent: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.invalid: Counter[str] = Counter()
        self.lags: deque[float] = deque(maxlen=1000)
        self.on_queued: Callable[[], None] = lambda: None

    @property
    def shared(self) -> bool:
        return self.link.connected

    # ------------------------------------------------------------ this node's events

    def _queue(self, event: FraudEvent) -> None:
        if len(self.outbox) >= self.max_pending:
            self.dropped += 1
            self.resync = True
            return
        self.outbox.append(event)
        self.on_queued()

    def made(self, block: Block) -> None:
        """The watch's hook: a block made here."""
        self._queue(self._event_of(block))

    def cleared(self, gateway: str, rule: str, by: str, note: str, wall: float) -> None:
        """An operator's clear here (API or CLI; "*" for all)."""
        self._mark(gateway, rule, wall)
        self._queue(FraudEvent(FraudOp.CLEAR, gateway, rule, self.node, self.instance, wall,
                               by=by, note=note))

    def take(self, n: int) -> list[FraudEvent]:
        return [self.outbox.popleft() for _ in range(min(n, len(self.outbox)))]

    def put_back(self, events: list[FraudEvent]) -> None:
        for event in reversed(events):
            if len(self.outbox) >= self.max_pending:
                self.dropped += 1
                self.resync = True
            else:
                self.outbox.appendleft(event)

    def in_force(self, mono: float) -> Iterator[FraudEvent]:
        for block in self.watch.blocks(mono):
            yield self._event_of(block)

    def _event_of(self, b: Block) -> FraudEvent:
        off = self.watch.wall_offset
        return FraudEvent(FraudOp.BLOCK, b.gateway, b.rule, b.node or self.node, self.instance,
                          b.since + off, None if b.until == INF else b.until + off, b.metric,
                          b.threshold, b.figure, tuple((s.call_id, s.number) for s in b.calls))

    def pushed(self, event: FraudEvent, result: int, mono: float) -> list[Cleared]:
        """The server's answer to a pushed block (1 stored, 0 kept a longer
        one, -1 cleared since it was made: lifted here too)."""
        if result >= 0:
            self.sent["stored" if result == 1 else "kept"] += 1
            return []
        self.sent["cleared_since"] += 1
        scope = self.watch.scopes.get((event.gateway, event.rule))
        if scope is None or scope.block is None:
            return []
        return self.watch.clear(event.gateway, event.rule, "cluster", mono,
                                "cleared in the cluster while this node was away")

    # ------------------------------------------------------------ the others' events

    def receive(self, payload: bytes | str, mono: float, wall: float, live: bool = True
                ) -> tuple[str, FraudEvent | None, list[Cleared]]:
        """Apply one event from another node (`live`: from the channel, else
        from the blocks stored). Returns the outcome, the event (None when
        malformed) and what a clear lifted."""
        try:
            event = decode_event(payload, wall)
        except Invalid as bad:
            self.received["invalid"] += 1
            self.invalid[bad.reason] += 1
            return "invalid", None, []
        outcome, cleared = self._judge(event, mono, wall)
        self.received[outcome] += 1
        if outcome == "applied" and live and event.op is FraudOp.BLOCK:
            self.lags.append(max(0.0, wall - event.at))
        return outcome, event, cleared

    def _judge(self, e: FraudEvent, mono: float, wall: float) -> tuple[str, list[Cleared]]:
        if e.instance == self.instance:
            return "echo", []
        watch = self.watch
        if e.op is FraudOp.CLEAR:
            self._mark(e.gateway, e.rule, e.at)
            return "applied", watch.clear(e.gateway, e.rule, f"{e.by}@{e.node}", mono, e.note)
        if not watch.rules.knows(e.gateway):
            return "unknown_gateway", []
        if self.mark_of(e.gateway, e.rule) >= e.at:
            return "cleared_since", []
        off = watch.wall_offset
        until = INF if e.until is None else e.until - off
        block = Block(e.gateway, e.rule, e.metric, e.threshold, e.figure,
                      tuple(Seen(c, n, e.at - off) for c, n in e.calls), e.at - off, until,
                      node=e.node)
        return ("applied" if watch.adopt(block, mono) else "kept"), []

    def _mark(self, gateway: str, rule: str, wall: float) -> None:
        """Remember a clear of a pattern this node can name (config-bounded)."""
        names = {r.name for r in self.watch.rules.rules}
        if (gateway == "*" or self.watch.rules.knows(gateway)) and (rule == "*" or rule in names):
            self.marks[(gateway, rule)] = max(wall, self.marks.get((gateway, rule), -INF))

    def mark_of(self, gateway: str, rule: str) -> float:
        """When (gateway, rule) was last cleared, by any pattern covering it."""
        m = self.marks
        return max(m.get((gateway, rule), -INF), m.get((gateway, "*"), -INF),
                   m.get(("*", rule), -INF), m.get(("*", "*"), -INF))

    # ------------------------------------------------------------ counters

    def contributions(self, mono: float, wall: float
                      ) -> tuple[dict[str, dict[str, Contribution]], dict[str, list[str]]]:
        """What to tell now, per rule: the fields to write (this node's
        figures of each gateway that changed, or are due again) and the
        fields to remove (figures that fell to nothing, scopes gone)."""
        writes: dict[str, dict[str, Contribution]] = {}
        deletes: dict[str, list[str]] = {}
        seen: set[Key] = set()
        for key, scope in self.watch.scopes.items():
            seen.add(key)
            c = self._own(scope, mono, wall)
            last = self.published.get(key)
            if c.empty():
                if last is not None and not last.empty():
                    deletes.setdefault(key[1], []).append(field_name(self.node, key[0]))
                    self.published[key] = c
                continue
            if c.same(last) and last is not None and wall - last.at < REFRESH_S:
                continue
            writes.setdefault(key[1], {})[field_name(self.node, key[0])] = c
            self.published[key] = c
        for key in [k for k in self.published if k not in seen]:
            if not self.published.pop(key).empty():
                deletes.setdefault(key[1], []).append(field_name(self.node, key[0]))
        return writes, deletes

    def unpublished(self, writes: Mapping[str, Mapping[str, Any]]) -> None:
        """The writes did not reach Redis: tell them again next time."""
        for rule, fields in writes.items():
            for name in fields:
                self.published.pop((name.partition("|")[2], rule), None)

    def _own(self, s: Scope, mono: float, wall: float) -> Contribution:
        self.watch.roll(s, mono)
        off = self.watch.wall_offset
        runs = [(n, r) for n, r in s.seq.runs.items() if mono - r.last <= s.seq.gap]
        top = heapq.nlargest(MAX_SEQ, runs, key=lambda nr: nr[1].count) if runs else []
        return Contribution(wall, s.day, s.minute.count(mono), len(s.live), s.calls_today,
                            s.minutes(mono) * 60.0,
                            {n: (r.count, round(r.last + off, 3)) for n, r in top})

    def take_others(self, hashes: Mapping[str, Mapping[Any, Any]], mono: float, wall: float
                    ) -> dict[str, list[str]]:
        """Read every rule's hash (field -> contribution) and put the others'
        figures under each scope; returns, per rule, the fields so old they
        should go."""
        watch = self.watch
        rules = {r.name: r for r in watch.rules.rules}
        sums: dict[Key, _Sum] = {}
        stale: dict[str, list[str]] = {}
        for rule_name, fields in hashes.items():
            rule = rules.get(rule_name)
            if rule is None:
                continue
            for raw_name, payload in fields.items():
                name = raw_name.decode("utf-8", "replace") if isinstance(raw_name, bytes) \
                    else str(raw_name)
                node, _, gateway = name.partition("|")
                if node == self.node or not watch.rules.knows(gateway) or \
                        rule not in watch.rules.for_gateway(gateway):
                    continue
                try:
                    c = decode_contribution(payload, wall)
                except Invalid as bad:
                    self.invalid[bad.reason] += 1
                    stale.setdefault(rule_name, []).append(name)
                    continue
                if wall - c.at > FRESH_S:
                    if wall - c.at > DROP_S:
                        stale.setdefault(rule_name, []).append(name)
                    continue
                if c.at <= self.mark_of(gateway, rule_name):
                    continue  # told before a clear
                total = sums.setdefault((gateway, rule_name), _Sum())
                if total.nodes >= MAX_NODES:
                    continue
                total.nodes += 1
                if wall - c.at < 60.0:
                    total.calls_minute += c.calls_minute
                total.live += c.live
                if c.day > total.day:
                    total.day, total.calls_today, total.seconds_today = c.day, 0, 0.0
                if c.day == total.day:
                    total.calls_today += c.calls_today
                    total.seconds_today += c.seconds_today
                for number, (count, last) in c.seq.items():
                    if wall - last <= rule.sequential_gap:
                        total.seq[number] += count
        for key in sums:  # a scope the others count in exists here too (config-bounded)
            if key not in watch.scopes:
                watch.scope(key[0], rules[key[1]])
        for key, scope in watch.scopes.items():
            t = sums.get(key)
            scope.others = None if t is None else Others(
                t.calls_minute, t.live, t.day, t.calls_today, t.seconds_today,
                dict(t.seq.most_common(MAX_NUMBERS)), t.nodes)
        return stale

    # ------------------------------------------------------------ the link

    def connected(self, mono: float) -> Transition | None:
        return self.link.succeeded(mono)

    def lost(self, mono: float, why: str) -> Transition | None:
        """Redis is away: every scope counts alone until it is back."""
        for scope in self.watch.scopes.values():
            scope.others = None
        self.published.clear()  # all told again when back
        return self.link.failed(mono, why)

    def readiness(self) -> dict[str, Any]:
        shared = self.shared
        return {"mode": "shared" if shared else "alone", "state": self.link.state.value,
                "rule": ("thresholds on the cluster's figures (Redis)" if shared else
                         "each node counts its own calls until Redis is back")}

    def stats(self) -> dict[str, Any]:
        lags = sorted(self.lags)
        return {**self.readiness(), "sent": dict(self.sent), "received": dict(self.received),
                "invalid": dict(self.invalid), "pending": len(self.outbox),
                "dropped": self.dropped,
                "lag_ms_p50": round(lags[len(lags) // 2] * 1000, 1) if lags else None}
