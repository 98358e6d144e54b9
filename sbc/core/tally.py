"""The one counter table: what the engine (and the transports through it)
counts, by the names of sbc.core.reasons.

The engine owns one Tally (`engine.tally`) and hands it to its parts and to
the ban table; the packet path only adds to plain `collections.Counter`s (and
the banned fast path to a plain integer, `banned[0]`), and everything that
reads (the admin stats, the metrics, the summary log line, the tests) reads
the views below, at read time.

Every Drop the engine returns, and every drop of the screen, is counted once
in `dropped` under its reason, absorbed messages too: the stage of a reason
(reasons.STAGE) tells the screen's drops from the engine's, and `Absorbed`
names are not drops at all. The engine's verdicts are counted by kind
(forward, reply, drop); `verdict_counts` moves the absorbed ones out of
"drop", so that the drops of the engine add up to its "drop" verdicts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TypeVar

from .reasons import (
    SCREEN_REASONS,
    STAGE,
    Absorbed,
    DropReason,
    Offense,
    ParseReason,
    Refusal,
    Stage,
    TransportEvent,
)

TOP_SOURCES_CAP = 10_000  # distinct sources counted per summary interval
K = TypeVar("K", bound=str)


class Tally:
    __slots__ = (
        "banned",
        "dropped",
        "failovers",
        "offenses",
        "parse_errors",
        "refusals",
        "spared",
        "top_sources",
        "transport",
        "verdicts",
    )

    def __init__(self) -> None:
        self.verdicts: Counter[str] = Counter()  # the engine's, by kind (absorbed in "drop")
        self.dropped: Counter[DropReason | Absorbed] = Counter()  # every Drop, by reason
        self.banned = [0]  # messages (and connections) from banned sources: the hot path's integer
        self.parse_errors: Counter[ParseReason] = Counter()  # messages and TCP/TLS streams
        self.refusals: Counter[Refusal] = Counter()
        self.offenses: Counter[Offense] = Counter()  # recorded towards a ban
        self.spared: Counter[Offense] = Counter()  # a proved source's, in a forgeable datagram
        self.transport: Counter[TransportEvent] = Counter()
        self.failovers: Counter[str] = Counter()  # calls sent on to the next VOS3000, by why
        self.top_sources: Counter[str] = Counter()  # screened sources, per summary interval

    def screened(self, reason: DropReason, host: str) -> None:
        """A drop of the screen: counted, and its source among the top
        dropped sources (a capped table)."""
        self.dropped[reason] += 1
        top = self.top_sources
        if host in top or len(top) < TOP_SOURCES_CAP:
            top[host] += 1

    # ------------------------------------------------------------------ views

    @property
    def banned_drops(self) -> int:
        return self.banned[0]

    def screen_drops(self) -> dict[DropReason, int]:
        """Drops before the parse, by reason, banned sources included."""
        counts = {r: n for r, n in self.dropped.items()
                  if isinstance(r, DropReason) and r in SCREEN_REASONS}
        if self.banned[0]:
            counts[DropReason.BANNED] = counts.get(DropReason.BANNED, 0) + self.banned[0]
        return counts

    def drops(self) -> dict[DropReason, int]:
        """The engine's drops (after the screen), by reason."""
        return {r: n for r, n in self.dropped.items()
                if isinstance(r, DropReason) and STAGE[r] is not Stage.SCREEN}

    def absorbed(self) -> dict[Absorbed, int]:
        return {r: n for r, n in self.dropped.items() if isinstance(r, Absorbed)}

    def verdict_counts(self) -> dict[str, int]:
        """The engine's verdicts: forward, reply, drop and absorbed (each
        message once; the screen's drops are not among them)."""
        absorbed = sum(self.absorbed().values())
        v = self.verdicts
        return {"forward": v["forward"], "reply": v["reply"], "drop": v["drop"] - absorbed,
                "absorbed": absorbed}

    def top(self, n: int = 10) -> dict[str, int]:
        """The `n` sources the screen dropped most since the last `take_top`."""
        return dict(self.top_sources.most_common(n))

    def take_top(self, n: int = 10) -> dict[str, int]:
        """`top`, and a new interval begins."""
        top = self.top(n)
        self.top_sources.clear()
        return top

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Every table by its plain names (JSON, log lines, metrics)."""
        return {
            "verdicts": self.verdict_counts(),
            "screen_drops": _plain(self.screen_drops()),
            "drops": _plain(self.drops()),
            "absorbed": _plain(self.absorbed()),
            "parse_errors": _plain(self.parse_errors),
            "refusals": _plain(self.refusals),
            "offenses": _plain(self.offenses),
            "offenses_spared": _plain(self.spared),
            "transport": _plain(self.transport),
            "failovers": _plain(self.failovers),
        }


def _plain(counts: Mapping[K, int]) -> dict[str, int]:
    return {str(k): n for k, n in counts.items() if n}
