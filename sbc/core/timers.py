"""One heap of deadlines owned by the core.

Entries are never removed early: an owner that no longer wants a deadline
changes its own field, and the entry is discarded when it comes due and no
longer matches (lazy cancellation). The transport runs a single loop timer for
`next_deadline()`; there is no task or timer handle per call.
"""

from __future__ import annotations

import heapq
from itertools import count
from typing import Any


class TimerHeap:
    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, Any]] = []
        self._seq = count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, deadline: float, kind: str, obj: Any) -> None:
        heapq.heappush(self._heap, (deadline, next(self._seq), kind, obj))

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[tuple[float, str, Any]]:
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now:
            deadline, _, kind, obj = heapq.heappop(heap)
            due.append((deadline, kind, obj))
        return due
