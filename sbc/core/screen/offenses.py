"""Offenses per source address: what counts towards a ban.

Keyed by an address an attacker chooses, so the table has a hard size cap
(the entry seen longest ago goes first) and entries expire after `window`
seconds without a new offense. The ban logic reads `count` and `get`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(slots=True)
class OffenseRecord:
    first_seen: float
    last_seen: float
    total: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


class OffenseTable:
    __slots__ = ("_table", "max_entries", "window")

    def __init__(self, max_entries: int = 100_000, window: float = 600.0) -> None:
        self.max_entries = max_entries
        self.window = window
        # Recency order: a record moves to the end on each offense, and the
        # oldest goes first in O(1) (a plain dict's first key gets slow to
        # find after many deletions).
        self._table: OrderedDict[str, OffenseRecord] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def record(self, source: str, kind: str, now: float) -> OffenseRecord:
        table = self._table
        rec = table.get(source)
        if rec is None or now - rec.last_seen > self.window:
            rec = table[source] = OffenseRecord(first_seen=now, last_seen=now)
        table.move_to_end(source)
        rec.last_seen = now
        rec.total += 1
        rec.kinds[kind] = rec.kinds.get(kind, 0) + 1
        while len(table) > self.max_entries:
            table.popitem(last=False)
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
        while table:
            source, rec = next(iter(table.items()))
            if now - rec.last_seen <= self.window:
                break
            table.popitem(last=False)
            dropped += 1
        return dropped
