"""Offenses per source address: what counts towards a ban.

Keyed by an address an attacker chooses, so the table has a hard size cap
(the entry seen longest ago goes first) and entries expire after `window`
seconds without a new offense. The ban logic reads `note`, `count` and `get`.

A source's first offense is kept compactly: its key's hash, the time and
the kind in a fixed array slot (`hash & mask`), no object made. Its second
within the window makes a record. A flood of forged sources, one offense
each, thus allocates nothing and cannot push out the records of sources
that offend again; a first offense overwritten by another source's (the
slots are the power of two at or above `max_entries`, and the string hash
is salted per process) is forgotten, as a record pushed out of a full
table is.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(slots=True)
class OffenseRecord:
    first_seen: float
    last_seen: float
    total: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


class OffenseTable:
    __slots__ = ("_first_at", "_first_key", "_first_kind", "_kind_index", "_kinds", "_mask",
                 "_table", "max_entries", "window")

    def __init__(self, max_entries: int = 100_000, window: float = 600.0) -> None:
        self.max_entries = max_entries
        self.window = window
        # Recency order: a record moves to the end on each offense, and the
        # oldest goes first in O(1) (a plain dict's first key gets slow to
        # find after many deletions).
        self._table: OrderedDict[str, OffenseRecord] = OrderedDict()
        # First offenses: hash of the source (-1: none; hash() is never -1),
        # when, and which kind (an index into `_kinds`).
        slots = 1 << max(10, (max_entries - 1).bit_length())
        self._mask = slots - 1
        self._first_key = array("q", [-1]) * slots
        self._first_at = array("d", bytes(8 * slots))
        self._first_kind = array("H", bytes(2 * slots))
        self._kinds: list[str] = []  # the offense kinds seen (a handful: sbc's own names)
        self._kind_index: dict[str, int] = {}

    def __len__(self) -> int:
        """Records: sources with two offenses or more in the window."""
        return len(self._table)

    def note(self, source: str, kind: str, now: float) -> int:
        """Count an offense of `source`; how many it has in the window."""
        table = self._table
        rec = table.get(source)
        if rec is not None:
            if now - rec.last_seen <= self.window:
                table.move_to_end(source)
                rec.last_seen = now
                rec.total += 1
                rec.kinds[kind] = rec.kinds.get(kind, 0) + 1
                return rec.total
            del table[source]  # stale: this offense is a first one again
        h = hash(source)
        i = h & self._mask
        first_key = self._first_key
        if first_key[i] == h and now - self._first_at[i] <= self.window:
            first_key[i] = -1  # a second offense: it gets a record
            kinds = {self._kinds[self._first_kind[i]]: 1}
            kinds[kind] = kinds.get(kind, 0) + 1
            table[source] = OffenseRecord(self._first_at[i], now, 2, kinds)
            while len(table) > self.max_entries:
                table.popitem(last=False)
            return 2
        ix = self._kind_index.get(kind)
        if ix is None:
            ix = self._kind_index[kind] = len(self._kinds)
            self._kinds.append(kind)
        first_key[i] = h
        self._first_at[i] = now
        self._first_kind[i] = ix
        return 1

    def record(self, source: str, kind: str, now: float) -> OffenseRecord:
        """`note`, and the source's record."""
        self.note(source, kind, now)
        rec = self.get(source, now)
        assert rec is not None
        return rec

    def get(self, source: str, now: float) -> OffenseRecord | None:
        """The offenses of `source` in the window (a first one alone: a new
        record, not kept), or None."""
        rec = self._table.get(source)
        if rec is not None:
            if now - rec.last_seen > self.window:
                del self._table[source]
                return None
            return rec
        h = hash(source)
        i = h & self._mask
        if self._first_key[i] != h:
            return None
        at = self._first_at[i]
        if now - at > self.window:
            return None
        return OffenseRecord(at, at, 1, {self._kinds[self._first_kind[i]]: 1})

    def count(self, source: str, now: float) -> int:
        rec = self.get(source, now)
        return rec.total if rec is not None else 0

    def forget(self, source: str) -> None:
        self._table.pop(source, None)
        h = hash(source)
        i = h & self._mask
        if self._first_key[i] == h:
            self._first_key[i] = -1

    def expire(self, now: float) -> int:
        """Drop records older than the window; they are the oldest, so stop at
        the first live one. (A first offense needs no sweep: older than the
        window it reads as none.)"""
        table = self._table
        dropped = 0
        while table:
            source, rec = next(iter(table.items()))
            if now - rec.last_seen <= self.window:
                break
            table.popitem(last=False)
            dropped += 1
        return dropped
