"""One heap of deadlines owned by the core.

Every deadline is an entry the owner keeps (`push` returns it) and cancels
when it no longer wants it (`cancel`): a cancelled entry lets go of its
object at once, and the heap compacts itself when most of its entries are
cancelled, so an ended call leaves nothing behind, not even until its old
deadline. The transport runs a single loop timer for `next_deadline()`;
there is no task or timer handle per call.

Timer kinds are named (`TimerKind`); the engine dispatches them by a table.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush
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


# An entry of the heap, `[deadline, seq, kind, obj]`: a plain list, so the
# heap orders entries by deadline, then push order, in C (no `__lt__` call
# per comparison; `seq` is unique, so kind and obj are never compared).
# `obj` (index 3) is None once the entry is cancelled or has fired.
Timer = list[Any]
_OBJ = 3


class TimerHeap:
    __slots__ = ("_dead", "_heap", "_seq")

    COMPACT_MIN = 64  # below this many entries a rebuild is not worth it

    def __init__(self) -> None:
        self._heap: list[Timer] = []
        self._seq = count()
        self._dead = 0

    def __len__(self) -> int:
        """Live entries: those neither due nor cancelled."""
        return len(self._heap) - self._dead

    @property
    def size(self) -> int:
        """Entries in the heap, cancelled ones not yet compacted away included."""
        return len(self._heap)

    def push(self, deadline: float, kind: TimerKind, obj: Any) -> Timer:
        entry = [deadline, next(self._seq), kind, obj]
        heappush(self._heap, entry)
        return entry

    @staticmethod
    def pending(entry: Timer) -> bool:
        """Whether `entry` is still to fire (neither cancelled nor fired)."""
        return entry[_OBJ] is not None

    def cancel(self, entry: Timer | None) -> None:
        if entry is None or entry[3] is None:
            return
        entry[3] = None
        self._dead += 1
        heap = self._heap
        if self._dead * 2 > len(heap) and len(heap) >= self.COMPACT_MIN:
            self._heap = [e for e in heap if e[3] is not None]
            heapify(self._heap)
            self._dead = 0

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][3] is None:
            heappop(heap)
            self._dead -= 1
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list[tuple[float, TimerKind, Any]]:
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now:
            entry = heappop(heap)
            if entry[3] is None:
                self._dead -= 1
                continue
            due.append((entry[0], entry[2], entry[3]))
            entry[3] = None  # fired: a later cancel of it is a no-op
        return due
