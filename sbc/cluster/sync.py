"""What a node publishes and what it takes from the others: the pure half of
the shared bans (the Redis shell, sbc.cluster.redis_link, only moves bytes).

Local changes arrive through the ban keeper's hook (`local`): a ban, or an
operator's unban, becomes an event in the `Outbox`, a queue with one entry
per host (a newer event replaces an older one) and a hard bound: a flood that
bans faster than Redis takes them drops the excess, counts it, and asks for
a full re-announcement of the bans in force (`resync`), so nothing is lost
for good. An unban that is only the end of a ban's time is never announced:
every node's table expires it, and Redis its key.

Remote events (`receive`) are checked (sbc.cluster.events), judged
(sbc.cluster.merge) and applied through the keeper without being announced
again: no echo, no loop. Every outcome is counted.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Protocol

from ..core.screen.bans import Ban, BanTable
from .events import BanEvent, Invalid, Op, decode
from .link import Link
from .merge import Outcome, ban_of, event_of, judge

__all__ = ["BanSync", "Keeper", "Outbox", "PushResult"]


class Keeper(Protocol):
    """The ban keeper (sbc.state.bans.BanKeeper), as the cluster uses it."""

    table: BanTable

    def adopt(self, ban: Ban) -> None: ...

    def lift(self, host: str, by: str = "operator") -> bool: ...


class PushResult:
    """What the server-side script answered for one pushed event."""

    STORED = 1  # stored and announced
    KEPT = 0  # the cluster already had a ban ending as late or later
    LIFTED = -1  # lifted in the cluster after this ban was made


class Outbox:
    """Events waiting to be published: one per host, at most `max_pending`."""

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self._queue: OrderedDict[str, BanEvent] = OrderedDict()
        self.dropped = 0  # events refused because the queue was full

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, event: BanEvent) -> bool:
        queue = self._queue
        if event.host in queue:
            del queue[event.host]  # the newer event replaces it, at the back
        elif len(queue) >= self.max_pending:
            self.dropped += 1
            return False
        queue[event.host] = event
        return True

    def take(self, n: int) -> list[BanEvent]:
        queue = self._queue
        return [queue.popitem(last=False)[1] for _ in range(min(n, len(queue)))]

    def put_back(self, events: list[BanEvent]) -> None:
        """A batch that failed goes back in front, unless a newer event for
        the same host came meanwhile; what no longer fits is dropped."""
        queue = self._queue
        for event in reversed(events):
            if event.host in queue:
                continue
            if len(queue) >= self.max_pending:
                self.dropped += 1
                continue
            queue[event.host] = event
            queue.move_to_end(event.host, last=False)


class BanSync:
    def __init__(self, keeper: Keeper, *, node: str, instance: str, now: float,
                 max_pending: int = 10_000, exempt: Callable[[str], bool] | None = None,
                 retry_max_s: float = 2.0, lags_kept: int = 1000) -> None:
        self.keeper = keeper
        self.node = node
        self.instance = instance
        self.exempt = exempt or (lambda host: False)
        self.outbox = Outbox(max_pending)
        self.link = Link(now, retry_max_s=retry_max_s)
        self.resync = True  # announce every ban in force at the next chance (start, overflow)
        self.sent: Counter[str] = Counter()  # pushed events by result
        self.received: Counter[str] = Counter()  # remote events by outcome
        self.invalid: Counter[str] = Counter()  # malformed payloads by what is wrong
        self.lags: deque[float] = deque(maxlen=lags_kept)  # s from a ban to its arrival here
        self.on_queued: Callable[[], None] = lambda: None  # wakes the shell's writer

    # ------------------------------------------------------------ this node's changes

    def local(self, event: str, ban: Ban, lifted_by: str, mono_now: float, wall_now: float) -> None:
        """The keeper's hook: `event` ("ban" / "unban") happened here."""
        if event == "unban" and lifted_by == "expiry":
            return
        op = Op.BAN if event == "ban" else Op.UNBAN
        dropped = self.outbox.dropped
        self.outbox.put(event_of(op, ban, node=self.node, instance=self.instance,
                                 mono_now=mono_now, wall_now=wall_now))
        if self.outbox.dropped != dropped:
            self.resync = True
        self.on_queued()

    def in_force(self, mono_now: float, wall_now: float) -> Iterator[BanEvent]:
        """Every ban in force here, as events (a full re-announcement)."""
        for ban in list(self.keeper.table.bans.values()):
            if ban.expires_at > mono_now:
                yield event_of(Op.BAN, ban, node=self.node, instance=self.instance,
                               mono_now=mono_now, wall_now=wall_now)

    def pushed(self, event: BanEvent, result: int) -> None:
        """The server's answer to one pushed event. A ban lifted in the
        cluster while this node could not hear it is lifted here too."""
        if result == PushResult.LIFTED:
            self.sent["lifted"] += 1
            if event.op is Op.BAN:
                current = self.keeper.table.bans.get(event.host)
                if current is not None and current.node == event.node:
                    self.keeper.lift(event.host, by="cluster")
        else:
            self.sent["stored" if result == PushResult.STORED else "kept"] += 1

    # ------------------------------------------------------------ the others' changes

    def receive(self, payload: bytes | str, mono_now: float, wall_now: float,
                live: bool = True) -> tuple[Outcome, BanEvent | None, str]:
        """Apply one remote event (`live`: from the channel, else from the
        stored bans); returns what happened, the event, and for a malformed
        payload what is wrong with it."""
        try:
            event = decode(payload, wall_now)
        except Invalid as bad:
            self.received[Outcome.INVALID] += 1
            self.invalid[bad.reason] += 1
            return Outcome.INVALID, None, bad.reason
        table = self.keeper.table
        outcome = judge(event, table.bans.get(event.host), instance=self.instance,
                        mono_now=mono_now, wall_now=wall_now, exempt=self.exempt)
        if outcome is Outcome.APPLIED:
            if event.op is Op.BAN:
                self.keeper.adopt(ban_of(event, mono_now, wall_now))
                if live:
                    self.lags.append(max(0.0, wall_now - event.at_wall))
            else:
                self.keeper.lift(event.host, by=f"node:{event.node}")
        self.received[outcome] += 1
        return outcome, event, ""

    # ------------------------------------------------------------ figures

    def stats(self) -> dict[str, object]:
        lags = sorted(self.lags)
        return {
            "node": self.node,
            "state": self.link.state.value,
            "degraded": self.link.degraded,
            "transitions": self.link.transitions,
            "failures": self.link.failures,
            "sent": dict(self.sent),
            "received": {str(k): v for k, v in self.received.items()},
            "invalid": dict(self.invalid),
            "pending": len(self.outbox),
            "dropped": self.outbox.dropped,
            "lag_ms_p50": round(_quantile(lags, 0.50) * 1000, 1) if lags else None,
            "lag_ms_p99": round(_quantile(lags, 0.99) * 1000, 1) if lags else None,
        }


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
