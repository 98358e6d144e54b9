"""The toll-fraud watch: counts the calls that match a rule, warns, blocks,
and says why.

The engine asks twice per initial INVITE of a gateway some rule applies to:
`match` before the call limits (a block in force refuses it: 403 "Fraud
Suspected", and VOS3000 never sees it) and `admit` once the call is
forwarded (counted; a threshold it crosses raises an alert, a critical one a
block, so the call after the one that crossed is the first refused: the
detection delay is at most one call). Dialog events tell it when a call is
answered and when it ends; `tick`, once a second from the shell, counts the
minutes of running calls as they run, so a long call trips the minutes rule
while it lasts, not when it ends, and returns the calls a `cut_calls` rule
ends (the engine sends BYE to both sides, as at a duration limit).

Time is passed in (`now`, the monotonic clock of the engine); the wall clock
that day boundaries and windows need is `now + wall_offset`, the offset set
by the shell. Alerts wait in `events` (bounded) for the shell to log, count
and post them; `history` keeps the recent ones for the admin API.

In a cluster (sbc.cluster.fraud_share) each block this watch makes names
its `node` and goes to `on_block`; blocks the other nodes made come back
through `adopt`, and every figure adds the others' (`Scope.others`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from ..policy.numbers import dialled
from .counters import Alert, AlertKey, Block, DialogKey, Scope, Seen
from .rules import UNREADABLE, Level, Metric, Rule, RuleSet, Threshold

INF = float("inf")
_FALLING = (Metric.CALLS_PER_MINUTE, Metric.CONCURRENT)  # may fall below a threshold again
_DAILY = (Metric.CALLS_PER_DAY, Metric.MINUTES_PER_DAY)


@dataclass(slots=True)
class Match:
    """The scopes an INVITE falls under, with its number key in each, and the
    block that refuses it (None: admitted as far as the watch goes)."""

    hits: list[tuple[Scope, str]]
    block: Block | None


@dataclass(frozen=True, slots=True)
class Cleared:
    """An operator's clear: who, when, what it lifted."""

    gateway: str
    rule: str
    by: str
    at: float  # monotonic
    note: str
    lifted: bool  # a block stood and was lifted (else only the counters restarted)


class FraudWatch:
    def __init__(self, *, max_numbers: int = 1000, max_live: int = 100_000,
                 max_events: int = 1000, history: int = 200) -> None:
        self.rules = RuleSet(())
        self.max_numbers = max_numbers  # per gateway and rule, for sequential runs
        self.max_live = max_live  # calls in progress tracked (above sip.max_dialogs)
        self.wall_offset = 0.0
        self.scopes: dict[tuple[str, str], Scope] = {}  # (gateway, rule name)
        self.live: dict[DialogKey, list[Scope]] = {}
        self.events: deque[Alert] = deque(maxlen=max_events)  # for the shell, drained each tick
        self.history: deque[Alert] = deque(maxlen=history)
        self.cleared: deque[Cleared] = deque(maxlen=history)
        self.to_cut: list[DialogKey] = []
        self.dirty: set[tuple[str, str]] = set()  # scopes changed since the store last looked
        self.node = ""  # names the blocks made here (cluster)
        self.on_block: Callable[[Block], None] | None = None  # a block made here (cluster)
        self.figures = {"refused": 0, "admitted": 0, "untracked": 0, "alerts": 0, "blocks": 0,
                        "cut": 0, "unreadable": 0}

    # ------------------------------------------------------------------ configuration

    def configure(self, rules: RuleSet) -> None:
        """New rules from the next call on. A rule whose scope (name,
        gateways, prefixes, window, time zone) is unchanged keeps its
        counters, alerts and blocks; a changed or removed rule starts over."""
        by_name = {r.name: r for r in rules.rules}
        for key, scope in list(self.scopes.items()):
            new = by_name.get(scope.rule.name)
            if new is None or new.scope != scope.rule.scope:
                del self.scopes[key]
                self.dirty.add(key)
                for k in list(scope.live):
                    self._unlink(k, scope)
            else:
                scope.rule = new
                scope.seq.gap = new.sequential_gap
        self.rules = rules

    def _unlink(self, key: DialogKey, scope: Scope) -> None:
        scopes = self.live.get(key)
        if scopes is not None and scope in scopes:
            scopes.remove(scope)
            if not scopes:
                del self.live[key]

    def scope(self, gateway: str, rule: Rule) -> Scope:
        s = self.scopes.get((gateway, rule.name))
        if s is None:  # gateways come from the config: at most gateways x rules scopes
            s = self.scopes[(gateway, rule.name)] = Scope(gateway, rule, self.max_numbers)
        return s

    # ------------------------------------------------------------------ the call path

    def match(self, gateway: str, uri: bytes, called: tuple[str, ...], now: float
              ) -> Match | None:
        """None when no rule applies to this call (nothing to count); else the
        scopes it falls under, and the block that refuses it if one stands.
        `called`: the readings of `uri` when the caller has them (else read here)."""
        if not self.rules.for_gateway(gateway):
            return None
        hits = self.rules.match(gateway, called or dialled(uri), now + self.wall_offset)
        if not hits:
            return None
        found = [(self.scope(gateway, rule), number) for rule, number in hits]
        for scope, _ in found:
            block = scope.block
            if block is not None:
                if now < block.until:
                    block.refused += 1
                    scope.refused += 1
                    self.figures["refused"] += 1
                    self.dirty.add((scope.gateway, scope.rule.name))
                    return Match(found, block)
                self._lift(scope)  # the cool-off is over
        return Match(found, None)

    def admit(self, m: Match, key: DialogKey, call_id: bytes, now: float) -> None:
        """The call went on to VOS3000: counted in every scope it matched."""
        cid = call_id.decode("utf-8", "replace")
        self.figures["admitted"] += 1
        tracked = len(self.live) < self.max_live
        if not tracked:
            self.figures["untracked"] += 1
        scopes = []
        for scope, number in m.hits:
            self.roll(scope, now)
            seen = Seen(cid, number, now)
            if number == UNREADABLE:
                self.figures["unreadable"] += 1
            scope.minute.add(now)
            scope.calls_today += 1
            scope.recent.append(seen)
            scope.seq.add(seen, now)
            if tracked:
                scope.live[key] = seen
                scopes.append(scope)
            self.dirty.add((scope.gateway, scope.rule.name))
            for metric, threshold in scope.rule.thresholds:  # only the figures it watches
                self._judge(scope, metric, threshold, now,
                            number if metric is Metric.SEQUENTIAL else "")
        if scopes:
            self.live[key] = scopes

    def answered(self, key: DialogKey, now: float) -> None:
        for scope in self.live.get(key, ()):
            scope.answer(key, now)
            self.dirty.add((scope.gateway, scope.rule.name))

    def ended(self, key: DialogKey, now: float) -> None:
        scopes = self.live.pop(key, None)
        for scope in scopes or ():
            self.roll(scope, now)
            scope.end(key, now)
            self.dirty.add((scope.gateway, scope.rule.name))

    def tick(self, now: float) -> list[DialogKey]:
        """Once a second: running minutes judged, blocks that ran out lifted,
        alerts whose figure fell re-armed, old runs forgotten. Returns the
        calls a block with cut_calls ends."""
        for scope in self.scopes.values():
            self.roll(scope, now)
            minutes = scope.rule.limits.get(Metric.MINUTES_PER_DAY)
            if scope.answered and minutes is not None:
                self._judge(scope, Metric.MINUTES_PER_DAY, minutes, now)
            block = scope.block
            if block is not None and now >= block.until:
                self._lift(scope)
            if scope.alerts:
                self._rearm(scope, now)
            scope.seq.expire(now)
        cut, self.to_cut = self.to_cut, []
        return cut

    # ------------------------------------------------------------------ judging

    def _lift(self, scope: Scope) -> None:
        """The cool-off is over. Its critical alerts re-arm: a figure still
        over the threshold (a daily one) blocks again with the next call."""
        scope.block = None
        for k in [k for k in scope.alerts if k[1] is Level.CRITICAL]:
            del scope.alerts[k]
        self.dirty.add((scope.gateway, scope.rule.name))

    def roll(self, scope: Scope, now: float) -> None:
        """A new local day: the daily figures start again."""
        if now < scope.day_end:
            return
        rule = scope.rule
        wall = now + self.wall_offset
        local = rule.local(wall)
        midnight = datetime.combine(local.date(), time(0), rule.tz)
        scope.day = local.date().isoformat()
        scope.day_start = midnight.timestamp() - self.wall_offset
        tomorrow = datetime.combine(local.date() + timedelta(days=1), time(0), rule.tz)
        scope.day_end = tomorrow.timestamp() - self.wall_offset
        scope.calls_today = 0
        scope.seconds_today = 0.0
        scope.restart_running(max(scope.day_start, scope.cleared_at))
        for k in [k for k in scope.alerts if k[0] in _DAILY]:
            del scope.alerts[k]
        self.dirty.add((scope.gateway, rule.name))

    def _judge(self, scope: Scope, metric: Metric, threshold: Threshold, now: float,
               number: str = "") -> None:
        figure = scope.figure(metric, now, number)
        level = threshold.level(figure)
        if level is None:
            return
        akey: AlertKey = (metric, level, number)
        if akey in scope.alerts:
            return
        rule = scope.rule
        blocked_until: float | None = None
        if level is Level.CRITICAL:
            scope.alerts.setdefault((metric, Level.WARNING, number), _placeholder(scope, metric))
            if scope.block is None:
                until = now + rule.cool_off if rule.cool_off > 0 else INF
                scope.block = Block(scope.gateway, rule.name, metric, threshold.critical, figure,
                                    scope.calls_for(metric, now, number), now, until,
                                    node=self.node)
                self.figures["blocks"] += 1
                if self.on_block is not None:
                    self.on_block(scope.block)
                if rule.cut_calls:
                    self.to_cut.extend(k for k in scope.live if k not in self.to_cut)
            blocked_until = scope.block.until
        alert = Alert(scope.gateway, rule.name, metric, level, threshold.of(level), figure,
                      scope.calls_for(metric, now, number), now,
                      self._clears(scope, metric, level, number), blocked_until)
        scope.alerts[akey] = alert
        self.figures["alerts"] += 1
        self.events.append(alert)
        self.history.append(alert)
        self.dirty.add((scope.gateway, rule.name))

    def _clears(self, scope: Scope, metric: Metric, level: Level, number: str) -> str:
        rule = scope.rule
        if level is Level.CRITICAL:
            if rule.cool_off <= 0:
                return "new calls refused until an operator clears it"
            return f"new calls refused for {rule.cool_off:g} s, or until an operator clears it"
        t = scope.rule.threshold(metric)
        limit = t.warning if t is not None else 0.0
        if metric is Metric.CALLS_PER_MINUTE:
            return f"when fewer than {limit:g} new calls fall in 60 s"
        if metric is Metric.CONCURRENT:
            return f"when fewer than {limit:g} calls are in progress"
        if metric is Metric.SEQUENTIAL:
            return f"after {rule.sequential_gap:g} s without a call to {number}"
        return f"at local midnight ({rule.tz}), after {scope.day}"

    def _rearm(self, scope: Scope, now: float) -> None:
        for akey in list(scope.alerts):
            metric, level, number = akey
            if metric not in _FALLING and metric is not Metric.SEQUENTIAL:
                continue
            t = scope.rule.threshold(metric)
            if t is None or scope.figure(metric, now, number) < t.of(level):
                del scope.alerts[akey]

    # ------------------------------------------------------------------ operators

    def clear(self, gateway: str, rule: str, by: str, now: float, note: str = "") -> list[Cleared]:
        """Lift the block of `rule` for `gateway` (either may be "*": all) and
        start its counters again (a block on a daily figure would otherwise
        come back with the next call). Calls in progress still count as in
        progress, their minutes from now on."""
        out = []
        for (gw, name), scope in self.scopes.items():
            if gateway not in ("*", gw) or rule not in ("*", name):
                continue
            lifted = scope.block is not None and now < scope.block.until
            scope.block = None
            scope.alerts.clear()
            scope.cleared_at = now
            scope.calls_today = 0
            scope.seconds_today = 0.0
            scope.minute = type(scope.minute)()
            scope.seq.runs.clear()
            scope.recent.clear()
            scope.restart_running(now)
            scope.others = None  # the others' figures from before the clear
            done = Cleared(gw, name, by, now, note, lifted)
            out.append(done)
            self.cleared.append(done)
            self.dirty.add((gw, name))
        return out

    def adopt(self, block: Block, now: float) -> bool:
        """A block another node made (sbc.cluster): it stands here too, unless
        its rule is not one of ours, it is over, or ours ends as late."""
        rule = next((r for r in self.rules.for_gateway(block.gateway) if r.name == block.rule),
                    None)
        if rule is None or now >= block.until:
            return False
        scope = self.scope(block.gateway, rule)
        mine = scope.block
        if mine is not None and now < mine.until and mine.until >= block.until:
            return False
        scope.block = block
        if rule.cut_calls:  # this node's calls under it end too
            self.to_cut.extend(k for k in scope.live if k not in self.to_cut)
        # its critical alert was raised where the block was made: not again here
        for level in (Level.WARNING, Level.CRITICAL):
            scope.alerts.setdefault((block.metric, level, ""), _placeholder(scope, block.metric))
        self.dirty.add((scope.gateway, rule.name))
        return True

    def blocks(self, now: float) -> list[Block]:
        return [s.block for s in self.scopes.values()
                if s.block is not None and now < s.block.until]


def _placeholder(scope: Scope, metric: Metric) -> Alert:
    """A warning taken as given once its critical level fired (no second line)."""
    return Alert(scope.gateway, scope.rule.name, metric, Level.WARNING, 0.0, 0.0, (), 0.0, "")
