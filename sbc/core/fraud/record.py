"""A scope's state as a plain, JSON-ready record and back, so counters,
blocks and calls in progress survive a restart (the shell keeps them in
SQLite, sbc.state.fraud). Times are written wall-clock, read back onto the
monotonic clock of the new process; a record whose rule changed meanwhile
(another scope) is not restored, and calls in progress come back only when
their dialog did (`alive`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .counters import Alert, Block, DialogKey, Run, Seen
from .rules import Level, Metric
from .watch import FraudWatch

INF = float("inf")


def _wall(mono: float, offset: float) -> float | None:
    return None if mono in (INF, -INF) else mono + offset


def _mono(wall: object, offset: float, default: float) -> float:
    return float(wall) - offset if isinstance(wall, (int, float)) else default


def _seen(s: Seen, offset: float) -> list[Any]:
    return [s.call_id, s.number, s.at + offset]


def _unseen(v: Any, offset: float) -> Seen:
    return Seen(str(v[0]), str(v[1]), float(v[2]) - offset)


def signature(rule_scope: tuple[object, ...]) -> str:
    return repr(rule_scope)


def to_record(watch: FraudWatch, key: tuple[str, str], now: float) -> dict[str, Any] | None:
    """The record of one scope (None: it is gone, delete it)."""
    s = watch.scopes.get(key)
    if s is None:
        return None
    off = watch.wall_offset
    b = s.block
    return {
        "gateway": s.gateway, "rule": s.rule.name, "scope": signature(s.rule.scope),
        "day": s.day, "calls_today": s.calls_today, "seconds_today": s.seconds_today,
        "minute": s.minute.ages(now), "now_wall": now + off,
        "seq": [[n, r.count, r.last + off, [_seen(c, off) for c in r.calls]]
                for n, r in s.seq.runs.items()],
        "recent": [_seen(c, off) for c in s.recent],
        "cleared_wall": _wall(s.cleared_at, off), "refused": s.refused,
        "alerts": [[m.value, lv.value, n] for m, lv, n in s.alerts],
        "block": None if b is None else {
            "metric": b.metric.value, "threshold": b.threshold, "figure": b.figure,
            "calls": [_seen(c, off) for c in b.calls], "since": b.since + off,
            "until": _wall(b.until, off), "refused": b.refused, "node": b.node},
        "live": [[k[0].decode("latin-1"), k[1].decode("latin-1"), _seen(v, off),
                  _wall(s.answered[k], off) if k in s.answered else None]
                 for k, v in s.live.items()],
    }


def restore(watch: FraudWatch, records: Sequence[Mapping[str, Any]], now: float,
            alive: Callable[[DialogKey], bool]) -> int:
    """Put records back under the configured rules (call `configure` first).
    Returns how many scopes came back."""
    restored = 0
    for rec in records:
        try:
            restored += _restore_one(watch, rec, now, alive)
        except (KeyError, TypeError, ValueError, IndexError, UnicodeError):
            watch.figures["unreadable_records"] = watch.figures.get("unreadable_records", 0) + 1
    return restored


def _restore_one(watch: FraudWatch, rec: Mapping[str, Any], now: float,
                 alive: Callable[[DialogKey], bool]) -> int:
    """One record back (1), or 0 when its rule is gone or changed. A record
    that does not read (a file edited by hand) raises; the caller skips it."""
    off = watch.wall_offset
    rules = {r.name: r for r in watch.rules.rules}
    rule = rules.get(str(rec.get("rule")))
    if rule is None or rec.get("scope") != signature(rule.scope):
        return 0
    s = watch.scope(str(rec["gateway"]), rule)
    watch.roll(s, now)
    if rec.get("day") == s.day:
        s.calls_today = int(rec.get("calls_today", 0))
        s.seconds_today = float(rec.get("seconds_today", 0.0))
        s.alerts.update({(Metric(m), Level(lv), str(n)): _restored(s.gateway, rule.name, m, lv)
                         for m, lv, n in rec.get("alerts", ())
                         if Metric(m) in (Metric.CALLS_PER_DAY, Metric.MINUTES_PER_DAY)})
    gap = now + off - float(rec.get("now_wall", now + off))
    for age, n in rec.get("minute", ()):
        s.minute.add(now - gap - float(age), int(n))
    for number, count, last, calls in rec.get("seq", ()):
        run = Run()
        run.count, run.last = int(count), float(last) - off
        run.calls.extend(_unseen(c, off) for c in calls)
        s.seq.runs[str(number)] = run
    s.seq.expire(now)
    s.recent.extend(_unseen(c, off) for c in rec.get("recent", ()))
    s.cleared_at = _mono(rec.get("cleared_wall"), off, -INF)
    s.refused = int(rec.get("refused", 0))
    b = rec.get("block")
    if b is not None:
        until = _mono(b.get("until"), off, INF)
        if now < until:
            s.block = Block(s.gateway, rule.name, Metric(b["metric"]), float(b["threshold"]),
                            float(b["figure"]), tuple(_unseen(c, off) for c in b["calls"]),
                            float(b["since"]) - off, until, int(b.get("refused", 0)),
                            str(b.get("node") or ""))
    for cid, tag, seen, answered in rec.get("live", ()):
        key = (str(cid).encode("latin-1"), str(tag).encode("latin-1"))
        if not alive(key) or len(watch.live) >= watch.max_live:
            continue
        s.live[key] = _unseen(seen, off)
        if answered is not None:
            start = s.count_from(float(answered) - off)
            s.answered[key] = start
            s.live_sum += start
        watch.live.setdefault(key, []).append(s)
    return 1


def _restored(gateway: str, rule: str, metric: str, level: str) -> Alert:
    """An alert that fired before the restart: not raised again today."""
    return Alert(gateway, rule, Metric(metric), Level(level), 0.0, 0.0, (), 0.0, "")
