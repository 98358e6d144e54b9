"""Offenses per source address: what counts towards a ban.

Keyed by an address an attacker chooses, so the table has a hard size cap
(the entry seen longest ago goes first) and entries expire after `window`
seconds without a new offense. The ban logic reads `count` and `get`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class OffenseRecord:
    first_seen: float
    last_seen: float
    total: int = 0
    kinds: Counter[str] = field(default_factory=Counter)


class OffenseTable:
    __slots__ = ("max_entries", "window", "_table")

    def __init__(self, max_entries: int = 100_000, window: float = 600.0) -> None:
        self.max_entries = max_entries
        self.window = window
        # Insertion order is recency order: a record is re-inserted on each offense.
        self._table: dict[str, OffenseRecord] = {}

    def __len__(self) -> int:
        return len(self._table)

    def record(self, source: str, kind: str, now: float) -> OffenseRecord:
        table = self._table
        rec = table.pop(source, None)
        if rec is None or now - rec.last_seen > self.window:
            rec = OffenseRecord(first_seen=now, last_seen=now)
        rec.last_seen = now
        rec.total += 1
        rec.kinds[kind] += 1
        table[source] = rec
        while len(table) > self.max_entries:
            del table[next(iter(table))]
        return rec

    def get(self, source: str, now: float) -> OffenseRecord | None:
        rec = self._table.get(source)
        if rec is not None and now - rec.last_seen > self.window:
            del self._table[source]
            return None
        return rec

    def count(self, source: str, now: float) -> int:
        rec = self.get(source, now)
        return rec.total if rec is not None else 0

    def forget(self, source: str) -> None:
        self._table.pop(source, None)

    def expire(self, now: float) -> int:
        """Drop records older than the window; they are the oldest, so stop at the first live one."""
        table = self._table
        dropped = 0
        for source in list(table):
            if now - table[source].last_seen <= self.window:
                break
            del table[source]
            dropped += 1
        return dropped
