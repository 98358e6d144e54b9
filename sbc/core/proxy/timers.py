"""The core's deadlines: buckets in a wheel, each cancelled in O(1).

Every deadline is an entry the owner keeps (`push` returns it) and cancels
when it no longer wants it (`cancel`). The transport runs a single loop timer
for `next_deadline()`; there is no task or timer handle per call.

Why buckets and not one heap: a heap cannot remove an entry, only mark it,
and the marked entries of ended calls (their maximum age, their duration
limit, hours away) pile up until the heap is rebuilt, which walks every
entry at once: at 2,000 calls a second, with the lingering dialogs of the
last half-minute alive, that was 10-15 ms with the loop stopped, every few
seconds. Here (a hashed wheel, as Kamailio's and the Linux kernel's timers):

- a deadline within NEAR seconds of the last `pop_due` goes to a fine bucket
  of 1/RES s (an even key, `2 * int(deadline * RES)`); a later one to a
  coarse bucket of one second (an odd key, `2 * second * RES - 1`, so it sorts
  before the fine buckets of its second), spread over fine buckets when it
  comes up. Keys are ints either way (a compiled build would turn a float
  key's int neighbours into floats);
- a bucket is a dict by sequence number: a cancel deletes its entry and lets
  go of its object at once, and an emptied bucket is deleted;
- the keys of the buckets wait in a small heap (one per bucket, emptied ones
  dropped when they reach the top): at most NEAR * RES fine keys and one per
  second of the longest deadline;
- `next_deadline` is the exact earliest deadline (the smallest entry of the
  first bucket, kept until that bucket changes); `pop_due` fires in deadline
  order, then push order, as the heap did.

Timer kinds are named (`TimerKind`); the engine dispatches them by a table.
"""

from __future__ import annotations

from heapq import heappop, heappush
from enum import StrEnum
from itertools import count
from typing import Any


class TimerKind(StrEnum):
    RETRANSMIT = "A"  # INVITE retransmission towards VOS3000 (RFC 3261 §17.1.1.2, Timer A)
    TIMEOUT = "B"  # the INVITE's Timer B, or Timer C once it is ringing (§16.6 step 11)
    RESPONSE = "G"  # a final answer retransmitted to a UDP caller until its ACK (Timer G)
    FAILOVER = "F"  # the current VOS3000 stayed silent: try the next one
    PING = "P"  # an OPTIONS ping to VOS3000 went unanswered
    TX_EXPIRE = "X"  # a transaction's linger is over
    DIALOG_EXPIRE = "D"  # a dialog's set-up timeout, maximum age or linger is over
    DURATION = "L"  # a call reached its gateway's duration limit


# An entry, `[deadline, seq, kind, obj, key]`: a plain list, so that entries
# compare by deadline, then push order, in C (`seq` is unique, so kind and
# obj are never compared). `obj` (index 3) is None once the entry is
# cancelled or has fired; `key` (index 4) is its bucket's.
Timer = list[Any]
_OBJ = 3

RES = 64  # fine buckets per second (15.6 ms each)
NEAR = 64.0  # seconds ahead that go straight to a fine bucket


class TimerHeap:
    __slots__ = ("_buckets", "_keys", "_keyset", "_seq", "_live", "_now", "_min_key", "_min")

    def __init__(self) -> None:
        self._buckets: dict[int, dict[int, Timer]] = {}
        self._keys: list[int] = []  # heap of bucket keys (some may be emptied)
        self._keyset: set[int] = set()  # the keys in _keys
        self._seq = count()
        self._live = 0
        self._now = float("-inf")  # the last pop_due's now: what NEAR counts from
        self._min_key: int | None = None  # the first bucket whose smallest deadline is _min
        self._min = 0.0

    def __len__(self) -> int:
        """Live entries: those neither due nor cancelled."""
        return self._live

    @property
    def size(self) -> int:
        """Entries held (a cancelled one is not held: it is gone at once)."""
        return sum(len(b) for b in self._buckets.values())

    @property
    def buckets(self) -> int:
        """Bucket keys waiting (emptied ones included until they reach the top)."""
        return len(self._keys)

    def _place(self, entry: Timer, key: int) -> None:
        entry[4] = key
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = {}
            if key not in self._keyset:
                self._keyset.add(key)
                heappush(self._keys, key)
        bucket[entry[1]] = entry
        if key == self._min_key and entry[0] < self._min:
            self._min = entry[0]

    def push(self, deadline: float, kind: TimerKind, obj: Any) -> Timer:
        entry = [deadline, next(self._seq), kind, obj, 0]
        if deadline - self._now > NEAR:
            self._place(entry, 2 * int(deadline) * RES - 1)
        else:
            self._place(entry, 2 * int(deadline * RES))
        self._live += 1
        return entry

    @staticmethod
    def pending(entry: Timer) -> bool:
        """Whether `entry` is still to fire (neither cancelled nor fired)."""
        return entry[_OBJ] is not None

    def cancel(self, entry: Timer | None) -> None:
        if entry is None or entry[3] is None:
            return
        entry[3] = None
        self._live -= 1
        key = entry[4]
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.pop(entry[1], None)
            if not bucket:
                del self._buckets[key]
        if key == self._min_key and entry[0] == self._min:
            self._min_key = None

    def _spread(self, key: int) -> None:
        """A coarse bucket came up: its entries into fine buckets."""
        heappop(self._keys)
        self._keyset.discard(key)
        for entry in self._buckets.pop(key).values():
            self._place(entry, 2 * int(entry[0] * RES))

    def _top(self) -> int | None:
        """The key of the first bucket holding entries, a fine one: emptied
        keys are dropped and coarse buckets spread on the way."""
        keys, buckets = self._keys, self._buckets
        while keys:
            key = keys[0]
            if not buckets.get(key):
                heappop(keys)
                self._keyset.discard(key)
            elif key & 1:  # coarse
                self._spread(key)
            else:
                return key
        return None

    def next_deadline(self) -> float | None:
        keys = self._keys
        if keys and keys[0] == self._min_key:
            return self._min
        key = self._top()
        if key is None:
            return None
        self._min_key, self._min = key, min(self._buckets[key].values())[0]
        return self._min

    def pop_due(self, now: float) -> list[tuple[float, TimerKind, Any]]:
        self._now = now
        self._min_key = None
        keys, buckets = self._keys, self._buckets
        limit = 2 * now * RES
        fired: list[Timer] = []
        while (key := self._top()) is not None and key <= limit:
            bucket = buckets[key]
            due = [e for e in bucket.values() if e[0] <= now]
            if len(due) == len(bucket):
                heappop(keys)
                self._keyset.discard(key)
                del buckets[key]
                fired += due
                continue
            for e in due:  # the bucket holding `now`: the rest is later
                del bucket[e[1]]
            fired += due
            break
        if not fired:
            return []
        fired.sort()
        self._live -= len(fired)
        out = []
        for e in fired:
            out.append((e[0], e[2], e[3]))
            e[3] = None  # fired: a later cancel of it is a no-op
        return out
