"""Alerts, blocks and figures as plain dicts: one shape for the log line, the
webhook's JSON body, `/api/fraud` and the dashboard. Times are wall-clock
(ISO 8601, UTC) from the monotonic ones and the watch's wall offset."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .counters import Alert, Block, Scope
from .rules import Metric
from .watch import Cleared, FraudWatch

_UNITS = {Metric.CALLS_PER_MINUTE: "new calls in 60 s", Metric.CONCURRENT: "calls in progress",
          Metric.CALLS_PER_DAY: "calls today", Metric.MINUTES_PER_DAY: "answered minutes today",
          Metric.SEQUENTIAL: "calls in a row to one number"}


def iso(mono: float, offset: float) -> str | None:
    """A monotonic time as ISO 8601 UTC; None for never (inf)."""
    if mono == float("inf") or mono == float("-inf"):
        return None
    return datetime.fromtimestamp(mono + offset, timezone.utc).isoformat(timespec="seconds")


def alert_view(a: Alert, offset: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "gateway": a.gateway, "rule": a.rule, "level": a.level.value, "metric": a.metric.value,
        "threshold": a.threshold, "figure": a.figure, "at": iso(a.at, offset),
        "calls": [s.explain() for s in a.calls], "clears": a.clears,
        "why": (f"{a.metric.value} {a.figure:g} >= {a.level.value} {a.threshold:g} "
                f"({_UNITS[a.metric]}) for gateway {a.gateway!r} under rule {a.rule!r}"),
    }
    if a.blocked_until is not None:
        out["blocked"] = True
        out["blocked_until"] = iso(a.blocked_until, offset)  # None: until cleared
    return out


def block_view(b: Block, offset: float, now: float) -> dict[str, Any]:
    return {
        "gateway": b.gateway, "rule": b.rule, "metric": b.metric.value, "threshold": b.threshold,
        "figure": b.figure, "since": iso(b.since, offset), "until": iso(b.until, offset),
        "clears": ("when an operator clears it" if b.until == float("inf")
                   else f"in {max(0.0, b.until - now):.0f} s, or when an operator clears it"),
        "refused": b.refused, "calls": [s.explain() for s in b.calls],
        "why": (f"{b.metric.value} reached {b.figure:g} (critical {b.threshold:g}, "
                f"{_UNITS[b.metric]}): new calls from {b.gateway!r} to rule {b.rule!r}'s "
                "destinations are refused with 403 Fraud Suspected"
                + (f" (blocked by node {b.node!r})" if b.node else "")),
        **({"node": b.node} if b.node else {}),
    }


def cleared_view(c: Cleared, offset: float) -> dict[str, Any]:
    return {"gateway": c.gateway, "rule": c.rule, "by": c.by, "at": iso(c.at, offset),
            "note": c.note, "lifted_block": c.lifted}


def scope_view(s: Scope, now: float) -> dict[str, Any]:
    figures = {}
    for metric, t in s.rule.thresholds:
        if metric is Metric.SEQUENTIAL:
            numbers = set(s.seq.runs) | set(s.others.seq if s.others is not None else ())
            figure = max((s.figure(metric, now, n) for n in numbers), default=0.0)
        else:
            figure = s.figure(metric, now)
        figures[metric.value] = {"figure": figure, "warning": t.warning, "critical": t.critical}
    others = s.others
    return {"gateway": s.gateway, "rule": s.rule.name, "day": s.day, "figures": figures,
            **({"other_nodes": others.nodes} if others is not None else {}),
            "in_progress": len(s.live), "numbers_tracked": len(s.seq), "refused": s.refused,
            "blocked": s.block is not None and now < s.block.until}


def view(watch: FraudWatch, now: float, limit: int = 200) -> dict[str, Any]:
    """Everything `/api/fraud` shows: rules, blocks in force, recent alerts
    (newest first), figures per gateway and rule, recent clears."""
    off = watch.wall_offset
    rules = [{"name": r.name, "gateways": sorted(r.gateways) or ["*"], "prefixes": list(r.prefixes),
              "active": r.active(now + off), "cool_off_s": r.cool_off, "cut_calls": r.cut_calls,
              "thresholds": {m.value: {"warning": t.warning, "critical": t.critical}
                             for m, t in r.thresholds}}
             for r in watch.rules.rules]
    return {
        "rules": rules,
        "blocks": [block_view(b, off, now) for b in watch.blocks(now)],
        "alerts": [alert_view(a, off) for a in list(watch.history)[::-1][:limit]],
        "scopes": [scope_view(s, now) for s in watch.scopes.values()],
        "cleared": [cleared_view(c, off) for c in list(watch.cleared)[::-1][:limit]],
        "figures": dict(watch.figures),
    }
