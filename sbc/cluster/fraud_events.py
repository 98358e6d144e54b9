"""What nodes tell each other about the toll-fraud watch through Redis, and
the strict reading of what comes back.

Two kinds of payload, both small JSON objects:

- an event (`FraudEvent`): a block made on a node, or an operator's clear
  (`gateway` and `rule` may be "*"), the same bytes on the channel and, for
  a block, under its key;
- a contribution (`Contribution`): one node's own figures of one gateway
  under one rule, a field of the rule's hash, rewritten as they change.

Redis is trusted infrastructure, but what a node reads from it is checked
field by field before it touches the watch: a malformed payload (wrong type,
a name that is not one, a time far off, too many calls or numbers, too
large) is refused with a named reason, never a traceback. Call-IDs and
numbers, which callers choose, are bounded in length and in count.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..core.fraud.rules import Metric
from .events import Invalid, read_object

__all__ = ["Contribution", "FraudEvent", "FraudOp", "MAX_SEQ", "decode_contribution",
           "decode_event", "encode_contribution", "encode_event"]

VERSION = 1
MAX_EVENT_BYTES = 16_384
MAX_CONTRIBUTION_BYTES = 16_384
MAX_CALLS = 20  # calls named in a block's explanation (as sbc.core.fraud.counters.EXPLAIN)
MAX_SEQ = 64  # runs of sequential calls a node tells (its longest)
MAX_TEXT = 256  # a Call-ID or a number
MAX_NOTE = 500
MAX_AHEAD_S = 366 * 86400.0
MAX_COUNT = 10**9
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PATTERN = re.compile(r"\*|[A-Za-z0-9_.-]{1,64}")
_BY = re.compile(r"[A-Za-z0-9_.@:-]{1,64}")
_INSTANCE = re.compile(r"[0-9a-f]{8,32}")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class FraudOp(StrEnum):
    BLOCK = "block"
    CLEAR = "clear"


@dataclass(frozen=True, slots=True)
class FraudEvent:
    """A block (wall-clock `at` it was made, `until` None: until cleared) or
    a clear (`at` when, `by`, `note`), made on `node` by process `instance`."""

    op: FraudOp
    gateway: str
    rule: str
    node: str
    instance: str
    at: float
    until: float | None = None
    metric: Metric = Metric.CALLS_PER_MINUTE
    threshold: float = 0.0
    figure: float = 0.0
    calls: tuple[tuple[str, str], ...] = ()  # (Call-ID, number)
    by: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class Contribution:
    """One node's own figures of one scope at wall time `at`."""

    at: float
    day: str = ""
    calls_minute: int = 0
    live: int = 0
    calls_today: int = 0
    seconds_today: float = 0.0
    seq: Mapping[str, tuple[int, float]] = field(default_factory=dict)  # number -> (count, last)

    def empty(self) -> bool:
        return not (self.calls_minute or self.live or self.calls_today or self.seconds_today
                    or self.seq)

    def same(self, other: Contribution | None) -> bool:
        """The same figures (whenever they were stamped)."""
        return other is not None and (
            self.day, self.calls_minute, self.live, self.calls_today,
            round(self.seconds_today), dict(self.seq)) == (
            other.day, other.calls_minute, other.live, other.calls_today,
            round(other.seconds_today), dict(other.seq))


# ---------------------------------------------------------------- events


def encode_event(e: FraudEvent) -> bytes:
    data: dict[str, Any] = {"v": VERSION, "op": e.op.value, "gateway": e.gateway,
                            "rule": e.rule, "node": e.node, "instance": e.instance,
                            "at": round(e.at, 3)}
    if e.op is FraudOp.BLOCK:
        data.update(until=None if e.until is None else round(e.until, 3),
                    metric=e.metric.value, threshold=e.threshold, figure=e.figure,
                    calls=[list(c) for c in e.calls[-MAX_CALLS:]])
    else:
        data.update(by=e.by, note=e.note)
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def decode_event(payload: bytes | str, wall_now: float) -> FraudEvent:
    """The event in `payload`, checked; raises Invalid(reason)."""
    data = read_object(payload, MAX_EVENT_BYTES, VERSION)
    op_text = data.get("op")
    if op_text not in ("block", "clear"):
        raise Invalid("op")
    op = FraudOp(op_text)
    names = _PATTERN if op is FraudOp.CLEAR else _NAME
    gateway, rule, node, instance = (data.get(k) for k in ("gateway", "rule", "node", "instance"))
    for what, value, pattern in (("gateway", gateway, names), ("rule", rule, names),
                                 ("node", node, _NAME), ("instance", instance, _INSTANCE)):
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise Invalid(what)
    assert isinstance(gateway, str) and isinstance(rule, str)
    assert isinstance(node, str) and isinstance(instance, str)
    at = _time(data.get("at"), wall_now)
    if at is None or at > wall_now + 300:
        raise Invalid("at")
    if op is FraudOp.CLEAR:
        by, note = data.get("by"), data.get("note")
        if not isinstance(by, str) or not _BY.fullmatch(by):
            raise Invalid("by")
        if not isinstance(note, str) or len(note) > MAX_NOTE:
            raise Invalid("note")
        return FraudEvent(op, gateway, rule, node, instance, at, by=by, note=note)
    until_raw = data.get("until")
    until = None if until_raw is None else _time(until_raw, wall_now)
    if until_raw is not None and (until is None or until <= at or until - at > MAX_AHEAD_S):
        raise Invalid("until")
    metric = data.get("metric")
    if metric not in {m.value for m in Metric}:
        raise Invalid("metric")
    threshold, figure = data.get("threshold"), data.get("figure")
    if not _number(threshold) or not _number(figure):
        raise Invalid("figure")
    calls = data.get("calls")
    if not isinstance(calls, list) or len(calls) > MAX_CALLS or not all(
            isinstance(c, list) and len(c) == 2 and all(_text(x) for x in c) for c in calls):
        raise Invalid("calls")
    assert isinstance(threshold, (int, float)) and isinstance(figure, (int, float))
    return FraudEvent(op, gateway, rule, node, instance, at, until, Metric(metric),
                      float(threshold), float(figure), tuple((c[0], c[1]) for c in calls))


# ---------------------------------------------------------------- contributions


def encode_contribution(c: Contribution) -> bytes:
    data: dict[str, Any] = {"v": VERSION, "at": round(c.at, 3), "day": c.day,
                            "m": c.calls_minute, "l": c.live, "c": c.calls_today,
                            "s": round(c.seconds_today, 1)}
    if c.seq:
        data["q"] = [[n, k, round(last, 3)] for n, (k, last) in list(c.seq.items())[:MAX_SEQ]]
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def decode_contribution(payload: bytes | str, wall_now: float) -> Contribution:
    """The contribution in `payload`, checked; raises Invalid(reason)."""
    data = read_object(payload, MAX_CONTRIBUTION_BYTES, VERSION)
    at = _time(data.get("at"), wall_now)
    if at is None or at > wall_now + 300:
        raise Invalid("at")
    day = data.get("day")
    if not isinstance(day, str) or (day and not _DAY.fullmatch(day)):
        raise Invalid("day")
    m, live, c = (data.get(k) for k in ("m", "l", "c"))
    if not (isinstance(m, int) and isinstance(live, int) and isinstance(c, int)
            and all(_count(v) for v in (m, live, c))):
        raise Invalid("count")
    seconds = data.get("s")
    if not _number(seconds):
        raise Invalid("seconds")
    seq: dict[str, tuple[int, float]] = {}
    runs = data.get("q", [])
    if not isinstance(runs, list) or len(runs) > MAX_SEQ:
        raise Invalid("seq")
    for run in runs:
        if not (isinstance(run, list) and len(run) == 3 and _text(run[0]) and _count(run[1])):
            raise Invalid("seq")
        last = _time(run[2], wall_now)
        if last is None:
            raise Invalid("seq")
        seq[run[0]] = (run[1], last)
    assert isinstance(seconds, (int, float))
    return Contribution(at, day, m, live, c, float(seconds), seq)


# ---------------------------------------------------------------- reading


def _text(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_TEXT


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def _number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and 0 <= value <= MAX_COUNT * 60)


def _time(value: object, wall_now: float) -> float | None:
    """A wall-clock time within a year and a bit of `wall_now`, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    t = float(value)
    if not math.isfinite(t) or abs(t - wall_now) > 2 * MAX_AHEAD_S:
        return None
    return t
