"""Counters per rule, in the spirit of `iptables -L -v`: each stage a packet
passes (DESIGN.md: screen, parse, engine, limits) is a chain, each named
reason a rule with its target and packet count. The engine's drops carry
their stage (sbc.core.reasons.STAGE); what sbc absorbs by design and what it
refuses with an answer of its own are chains of their own, never drops."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.reasons import STAGE

# The stage of each engine drop reason, by its plain name.
STAGE_OF: dict[str, str] = {str(reason): str(stage) for reason, stage in STAGE.items()}

# What sbc answers a call refused by a limit (sbc.core.policy.limits).
_LIMIT_TARGETS = {"blocked_destination": "REPLY 403", "not_allowed_destination": "REPLY 403"}
_GAUGES = ("bans", "transactions", "dialogs", "tcp_connections", "tls_connections")


def _counts(stats: Mapping[str, Any], key: str) -> dict[str, int]:
    value = stats.get(key)
    return {str(k): int(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


def rule_table(stats: Mapping[str, Any],
               figures: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    chains: list[dict[str, Any]] = []

    def chain(name: str, rules: list[dict[str, Any]], **extra: Any) -> None:
        rules.sort(key=lambda r: (-r["packets"], r["rule"]))
        chains.append({"chain": name, "packets": sum(r["packets"] for r in rules),
                       "rules": rules, **extra})

    chain("screen", [{"rule": r, "target": "DROP", "packets": n}
                     for r, n in _counts(stats, "screen_drops").items()])
    chain("parse", [{"rule": r, "target": "DROP", "packets": n}
                    for r, n in _counts(stats, "parse_errors").items()])
    verdicts = _counts(stats, "verdicts")
    chain("engine", [{"rule": r, "stage": STAGE_OF.get(r, "engine"), "target": "DROP", "packets": n}
                     for r, n in _counts(stats, "drops").items()],
          policy={"forward": verdicts.get("forward", 0), "reply": verdicts.get("reply", 0)})
    chain("absorbed", [{"rule": r, "target": "ABSORB", "packets": n}
                       for r, n in _counts(stats, "absorbed").items()])
    chain("refusals", [{"rule": r, "target": "REPLY", "packets": n}
                       for r, n in _counts(stats, "refusals").items()])
    limits = []
    for gateway, fig in figures.items():
        for key, n in fig.items():
            if key.startswith("rejected_"):
                limit = key.removeprefix("rejected_")
                limits.append({"rule": limit, "gateway": gateway,
                               "target": _LIMIT_TARGETS.get(limit, "REPLY 503"), "packets": n})
    chain("limits", limits)
    gauges = {k: stats[k] for k in _GAUGES if isinstance(stats.get(k), int)}
    return {"chains": chains, "verdicts": verdicts, "gauges": gauges, "counters": dict(stats)}


def render_text(table: Mapping[str, Any]) -> str:
    """The table as `iptables -L -v` would print it."""
    out: list[str] = []
    for c in table["chains"]:
        head = f"Chain {c['chain']} ({c['packets']} packets"
        if "policy" in c:
            head += ", " + ", ".join(f"{k} {v}" for k, v in c["policy"].items())
        out.append(head + ")")
        out.append(f"{'pkts':>10} {'target':<10} {'rule':<28} gateway/stage")
        for r in c["rules"]:
            out.append(f"{r['packets']:>10} {r['target']:<10} {r['rule']:<28} "
                       f"{r.get('gateway') or r.get('stage', '')}".rstrip())
        out.append("")
    return "\n".join(out)
