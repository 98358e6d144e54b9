"""Toll-fraud rules as the core reads them, and which rules a call matches.

A rule names gateways (none: every gateway), destination prefixes (none:
every destination), an optional time window, and thresholds at two levels
for five figures (`Metric`). The config (sbc.config.fraud) is translated into
these objects by the shell; the core never reads the config.

Matching reads the called number the way the destination lists do
(sbc.core.policy.numbers: separators dropped, the gateway's tech prefixes
stripped, then '+' or '00'; prefixes normalised alike by PrefixSet), and
fails closed the same way: a Request-URI that several numbers can be read
from matches a rule when any reading does, and one that names no number that
can be read matches every rule of its gateway that has prefixes. An odd
spelling must not walk past the watch: it is counted, and refused while a
block of any such rule stands. Such calls share the number key
`UNREADABLE`, so their run of sequential calls counts too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from enum import StrEnum

from ..policy.limits import PrefixSet
from ..policy.numbers import longest_first, matched, normalise

UNREADABLE = "?"  # the number key of a call whose number cannot be read


class Metric(StrEnum):
    """The figures a rule watches (per gateway and rule)."""

    CALLS_PER_MINUTE = "calls_per_minute"  # new calls in the last 60 seconds
    CONCURRENT = "concurrent"  # calls in progress to the rule's destinations
    CALLS_PER_DAY = "calls_per_day"  # new calls since local midnight
    MINUTES_PER_DAY = "minutes_per_day"  # answered minutes since local midnight, running calls live
    SEQUENTIAL = "sequential"  # calls in a row to one number (gaps below sequential_gap_s)


class Level(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Threshold:
    """A figure at or above `warning` warns, at or above `critical` blocks; 0: off."""

    warning: float = 0.0
    critical: float = 0.0

    def level(self, figure: float) -> Level | None:
        if self.critical > 0 and figure >= self.critical:
            return Level.CRITICAL
        if self.warning > 0 and figure >= self.warning:
            return Level.WARNING
        return None

    def of(self, level: Level) -> float:
        return self.critical if level is Level.CRITICAL else self.warning


@dataclass(frozen=True, slots=True)
class Window:
    """When a rule is active, in its time zone: minutes of the day from
    `start` up to `end` (a window that wraps midnight has end <= start; the
    whole day is start == end == 0), on `weekdays` (0 Monday ... 6 Sunday;
    the weekday of the moment, local)."""

    start: int = 0
    end: int = 0
    weekdays: frozenset[int] = frozenset(range(7))

    def active(self, local: datetime) -> bool:
        if local.weekday() not in self.weekdays:
            return False
        minute = local.hour * 60 + local.minute
        if self.start == self.end:
            return True
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


class Rule:
    """One rule, read-only once made (a reload makes new ones)."""

    __slots__ = ("cool_off", "cut_calls", "gateways", "limits", "match_set", "name", "prefixes",
                 "sequential_gap", "thresholds", "tz", "window")

    def __init__(self, name: str, tz: tzinfo, thresholds: tuple[tuple[Metric, Threshold], ...],
                 *, gateways: frozenset[str] = frozenset(), prefixes: tuple[str, ...] = (),
                 window: Window | None = None, cool_off: float = 3600.0,
                 cut_calls: bool = False, sequential_gap: float = 3600.0) -> None:
        self.name = name
        self.tz = tz  # day boundaries and the window are local to it
        self.thresholds = thresholds
        self.gateways = gateways  # empty: every gateway
        self.prefixes = prefixes  # as written; empty: every destination
        self.window = window
        self.cool_off = cool_off  # seconds a block stands; 0: until an operator clears it
        self.cut_calls = cut_calls  # a block also ends the matching calls in progress
        self.sequential_gap = sequential_gap  # a longer pause ends a run of calls to a number
        self.match_set = PrefixSet(prefixes)
        self.limits: dict[Metric, Threshold] = dict(thresholds)

    def __repr__(self) -> str:
        return f"Rule({self.name!r})"

    @property
    def scope(self) -> tuple[object, ...]:
        """What its counters mean: a reload that keeps it keeps them (thresholds,
        cool-off and cut_calls may change under running counters)."""
        return (self.name, self.gateways, frozenset(normalise(p) for p in self.prefixes),
                self.window, str(self.tz))

    def threshold(self, metric: Metric) -> Threshold | None:
        return self.limits.get(metric)

    def local(self, wall: float) -> datetime:
        return datetime.fromtimestamp(wall, self.tz)

    def active(self, wall: float) -> bool:
        return self.window is None or self.window.active(self.local(wall))


class RuleSet:
    """The rules, indexed by gateway: a gateway no rule applies to costs one
    dict lookup per call."""

    __slots__ = ("_all", "_by_gateway", "_tech", "_default_tech", "rules")

    def __init__(self, rules: Iterable[Rule], tech: dict[str, Iterable[str]] | None = None,
                 default_tech: Iterable[str] = ()) -> None:
        self.rules = tuple(rules)
        names = {g for r in self.rules for g in r.gateways} | set(tech or {})
        self._all = tuple(r for r in self.rules if not r.gateways)
        self._by_gateway = {g: tuple(r for r in self.rules if not r.gateways or g in r.gateways)
                            for g in names}
        self._default_tech = longest_first(default_tech)
        self._tech = {g: longest_first((*default_tech, *t)) for g, t in (tech or {}).items()}

    def __bool__(self) -> bool:
        return bool(self.rules)

    def knows(self, gateway: str) -> bool:
        """`gateway` is a configured one (what another node names is checked)."""
        return gateway in self._tech

    def for_gateway(self, gateway: str) -> tuple[Rule, ...]:
        return self._by_gateway.get(gateway, self._all)

    def match(self, gateway: str, called: tuple[str, ...], wall: float
              ) -> list[tuple[Rule, str]]:
        """The rules (active at `wall`) that a call from `gateway` to `called`
        (every reading of its Request-URI, sbc.core.policy.numbers.dialled)
        matches, each with the number key the call counts under."""
        rules = self.for_gateway(gateway)
        if not rules:
            return []
        tech = self._tech.get(gateway, self._default_tech)
        numbers = [matched(d, tech) for d in called]
        readable = bool(numbers) and None not in numbers
        key = numbers[0] if readable and numbers[0] is not None else UNREADABLE
        out: list[tuple[Rule, str]] = []
        for rule in rules:
            if rule.window is not None and not rule.active(wall):
                continue
            if not rule.match_set:
                out.append((rule, key))
            elif not readable:
                out.append((rule, UNREADABLE))  # fail closed, see the module's docstring
            else:
                hit = next((n for n in numbers if n is not None and rule.match_set.match(n)), None)
                if hit is not None:
                    out.append((rule, hit))
        return out
