"""Garbage collection kept out of the call path.

Every object sbc makes per message is freed by reference counting the
moment it is dropped: the call path makes no reference cycles (a test runs
thousands of calls with the collector off, then collects: nothing to free).
CPython's cyclic collector still walks the young objects every few hundred
allocations, and every object alive every so often: with the tables of
2,000 calls in progress that is 70,000+ objects and pauses of 5-40 ms in the
middle of the traffic, for nothing found. At 2,000 calls a second each such
pause holds up dozens of call set-ups (INVITE to 200 latency).

So the automatic collector is off and, instead:
- once a second everything alive is frozen (`gc.freeze()`: a list splice,
  microseconds): moved out of the collector's way for good. A frozen object
  is still freed by reference counting when it dies; only a cycle among
  frozen objects would wait for the next full collection;
- every `full_interval` seconds one full collection (unfreeze, collect,
  freeze) frees whatever cycles other parts made (the admin's HTTP server,
  asyncio), logged with its pause and what it found, so an operator sees
  both the cost and whether it is needed at all.

`GcPolicy` keeps no clock of its own: `tick(now)` is called by a timer.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

FREEZE_INTERVAL = 1.0  # seconds between freezes
FULL_INTERVAL = 600.0  # seconds between full collections


@dataclass(slots=True)
class FullCollection:
    """What one full collection did: objects freed, and how long it took."""

    collected: int
    pause_s: float
    tracked: int  # objects the collector tracks after it


class GcPolicy:
    def __init__(self, now: float, full_interval: float = FULL_INTERVAL,
                 on_full: Callable[[FullCollection], None] | None = None) -> None:
        self.full_interval = full_interval
        self.on_full = on_full
        self.next_full = now + full_interval
        self.fulls = 0
        self.freed = 0  # objects the full collections found (cycles), in all

    def start(self) -> None:
        """Collect what start-up left behind, freeze the rest (configuration,
        tables, modules: they live as long as the process) and turn the
        automatic collector off."""
        gc.collect()
        gc.freeze()
        gc.disable()

    def tick(self, now: float) -> None:
        """Freeze what is alive; once every `full_interval`, a full collection
        first (reported to `on_full`)."""
        if now >= self.next_full:
            self.next_full = now + self.full_interval
            self.collect_all()
        gc.freeze()

    def collect_all(self) -> FullCollection:
        started = time.perf_counter()
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        done = FullCollection(collected, time.perf_counter() - started, gc.get_freeze_count())
        self.fulls += 1
        self.freed += collected
        if self.on_full is not None:
            self.on_full(done)
        return done

    @staticmethod
    def stop() -> None:
        """The collector back to its usual self (tests, and a clean shutdown)."""
        gc.unfreeze()
        gc.enable()
