"""Keeps the toll-fraud watch's state in SQLite: each gateway's counters,
block and calls in progress under each rule (one JSON record per scope,
written when it changed, at most once a second), and the operators' clears.

`sbc fraud clear` writes a clear into the same file; the running sbc picks
it up (`poll`), applies it and fills in when, so the file says who cleared
what and when either way. A clear made while sbc is stopped is applied when
it starts, after the state is restored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from ..core.fraud.counters import DialogKey
from ..core.fraud.record import restore, to_record
from ..core.fraud.watch import Cleared, FraudWatch
from ..io.logsetup import get_logger
from .store import Store

log = get_logger("sbc.fraud")


class OnClear(Protocol):
    def __call__(self, gateway: str, rule: str, by: str, note: str) -> None: ...


class FraudKeeper:
    def __init__(self, watch: FraudWatch, store: Store) -> None:
        self.watch = watch
        self.store = store
        self.on_clear: OnClear | None = None  # every operator's clear, as asked (cluster)

    def restore(self, now: float, alive: Callable[[DialogKey], bool]) -> int:
        """The saved scopes under the configured rules (configure the watch first)."""
        records = self.store.load_fraud()
        n = restore(self.watch, records, now, alive)
        self.watch.dirty.clear()
        if records:
            log.info("fraud_restored", scopes=n, saved=len(records),
                     blocks=len(self.watch.blocks(now)), calls_in_progress=len(self.watch.live))
        return n

    def flush(self, now: float) -> None:
        """Write the scopes that changed (one transaction)."""
        watch = self.watch
        if not watch.dirty:
            return
        dirty, watch.dirty = watch.dirty, set()
        upserts, deletes = [], []
        for key in dirty:
            rec = to_record(watch, key, now)
            if rec is None:
                deletes.append(key)
            else:
                upserts.append((key[0], key[1], rec))
        self.store.save_fraud(upserts, deletes, now + watch.wall_offset)

    def poll(self, now: float) -> list[Cleared]:
        """Apply the clears `sbc fraud clear` wrote since the last look."""
        done: list[Cleared] = []
        for row in self.store.fraud_clears(pending=True):
            cleared = self.watch.clear(row.gateway, row.rule, row.by, now, row.note)
            lifted = any(c.lifted for c in cleared)
            self.store.fraud_clear_applied(row.id, time.time(), lifted)
            if self.on_clear is not None:
                self.on_clear(row.gateway, row.rule, row.by, row.note)
            log.info("fraud_cleared", gateway=row.gateway, rule=row.rule, by=row.by,
                     note=row.note, scopes=len(cleared), lifted_block=lifted, via="cli")
            done.extend(cleared)
        if done:
            self.flush(now)
        return done

    def clear(self, gateway: str, rule: str, by: str, note: str, now: float) -> list[Cleared]:
        """An operator's clear through the admin API: applied now, and written."""
        cleared = self.watch.clear(gateway, rule, by, now, note)
        lifted = any(c.lifted for c in cleared)
        if self.on_clear is not None:
            self.on_clear(gateway, rule, by, note)
        wall = time.time()
        self.store.add_fraud_clear(gateway, rule, by, note, wall, applied_wall=wall, lifted=lifted)
        self.flush(now)
        log.info("fraud_cleared", gateway=gateway, rule=rule, by=by, note=note,
                 scopes=len(cleared), lifted_block=lifted, via="api")
        return cleared


def request_clear(store: Store, gateway: str, rule: str, by: str, note: str) -> int:
    """`sbc fraud clear`: written for the running sbc (or the next start) to apply."""
    return store.add_fraud_clear(gateway, rule, by, note, time.time())
