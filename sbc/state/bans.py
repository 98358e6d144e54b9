"""Keeps the ban table, the SQLite store and (optionally) the kernel's ban set
in step, and logs one line per ban and unban.

The core's BanTable decides; this shell remembers. Bans are written to the
store in batches (a flood can ban thousands of sources a second), restored at
start-up (active ones as bans, older ones as the level that makes a repeat
offender's next ban longer), and an operator's `sbc ban` / `sbc unban`, which
write the same file, are picked up by polling rows changed since the last look.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from ..core.screen.bans import Ban, BanTable
from ..io.logsetup import get_logger
from .store import BanRow, Store

log = get_logger("sbc.bans")

LOG_BUDGET = 50  # ban / unban lines a second


class KernelSet(Protocol):
    def add(self, host: str, timeout_s: float) -> Any: ...
    def remove(self, host: str) -> Any: ...


class BanKeeper:
    def __init__(self, table: BanTable, store: Store, clock: Callable[[], float],
                 kernel: KernelSet | None = None, retention_s: float = 30 * 86400) -> None:
        self.clock = clock  # the engine's (monotonic) clock
        mono_now = clock()
        self.table = table
        self.store = store
        self.kernel = kernel
        self._pending: dict[str, BanRow] = {}
        self._synced = time.time()
        self._lifted_by = "expiry"
        self._log_second = 0
        self._logged = 0
        self.unlogged = 0  # ban / unban lines left out past the budget
        # In a cluster (sbc.cluster): this node's name, written into its bans,
        # and the hook that announces its changes (not those adopted from others).
        self.node = ""
        self.publish: Callable[[str, Ban, str, float, float], None] | None = None
        self._adopting = False
        table.listener = self.on_change
        wall = time.time()
        store.prune_bans(wall - retention_s)
        for row in store.load_bans():
            active = not row.lifted and row.expires_wall > wall
            table.restore(_ban(row, mono_now, wall), level_only=not active)
        log.info("bans_restored", active=len(table), known=len(table.levels))

    def _may_log(self, now: float) -> bool:
        """One line per ban and unban, up to LOG_BUDGET a second; past that a
        flood's bans are counted and reported by the periodic summary."""
        second = int(now)
        if second != self._log_second:
            self._log_second, self._logged = second, 0
        self._logged += 1
        if self._logged <= LOG_BUDGET:
            return True
        self.unlogged += 1
        return False

    def on_change(self, event: str, ban: Ban) -> None:
        now = self.clock()
        loggable = self._may_log(now)
        if event == "ban" and not ban.node:
            ban.node = self.node
        if event == "ban":
            if loggable:
                log.info("ban", **ban.explain(now))
            if self.kernel is not None:
                self.kernel.add(ban.host, max(ban.expires_at - now, 1.0))
        else:
            if loggable:
                log.info("unban", host=ban.host, reason=ban.reason, ban_level=ban.level,
                         manual=ban.manual, lifted_by=self._lifted_by)
            if self.kernel is not None:
                self.kernel.remove(ban.host)
        wall = time.time()
        self._pending[ban.host] = _row(ban, now, wall, lifted=event == "unban")
        if self.publish is not None and not self._adopting:
            self.publish(event, ban, self._lifted_by, now, wall)
        if ban.manual or self._lifted_by == "operator":
            # An operator's act is on disk before the API answers: a process
            # killed the next moment still has it. (Automatic bans, a flood's
            # worth a second, go in the periodic batch.)
            self.flush()

    def lift(self, host: str, by: str = "operator") -> bool:
        """An operator's unban (API, or `sbc unban` through the file), or
        `by` another node of the cluster (not announced again)."""
        self._lifted_by = by
        self._adopting = by != "operator"
        try:
            return self.table.unban(host) is not None
        finally:
            self._lifted_by = "expiry"
            self._adopting = False

    def adopt(self, ban: Ban) -> None:
        """A ban another node made: into the table, the kernel set and the
        store like one of ours, but not announced again."""
        self._adopting = True
        try:
            self.table.restore(ban)
            self.on_change("ban", ban)
        finally:
            self._adopting = False

    def kernel_restore(self, mono_now: float) -> None:
        """Put every active ban into the kernel set (after it was created)."""
        if self.kernel is not None:
            for ban in self.table.bans.values():
                if ban.expires_at > mono_now:
                    self.kernel.add(ban.host, ban.expires_at - mono_now)

    def flush(self) -> None:
        if not self._pending:
            return
        rows, self._pending = list(self._pending.values()), {}
        self.store.save_bans(rows)
        self._synced = max(self._synced, max(r.updated_wall for r in rows))

    def poll(self, mono_now: float) -> None:
        """Flush our changes, expire bans, then apply what an operator changed in the file."""
        self.table.expire(mono_now)
        self.flush()
        wall = time.time()
        for row in self.store.load_bans(updated_after=self._synced):
            self._synced = max(self._synced, row.updated_wall)
            current = self.table.bans.get(row.host)
            if row.lifted:
                if current is not None:
                    self.lift(row.host)
            elif row.expires_wall > wall and (current is None or current.level != row.level
                                              or abs((current.expires_at - mono_now)
                                                     - (row.expires_wall - wall)) > 1.0):
                ban = _ban(row, mono_now, wall)
                self.table.restore(ban)
                self.on_change("ban", ban)
        self.flush()


def _row(ban: Ban, mono_now: float, wall: float, lifted: bool = False) -> BanRow:
    def to_wall(t: float) -> float:
        return wall + (t - mono_now)

    return BanRow(ban.host, ban.reason, dict(ban.counts), to_wall(ban.first_seen),
                  to_wall(ban.last_seen), ban.level, to_wall(ban.banned_at),
                  to_wall(ban.expires_at), ban.manual, lifted, wall, ban.node)


def _ban(row: BanRow, mono_now: float, wall: float) -> Ban:
    def to_mono(t: float) -> float:
        return mono_now + (t - wall)

    return Ban(row.host, row.reason, dict(row.counts), to_mono(row.first_seen_wall),
               to_mono(row.last_seen_wall), row.level, to_mono(row.banned_wall),
               to_mono(row.expires_wall), row.manual, row.node)


def manual_ban(store: Store, host: str, seconds: float, reason: str = "manual") -> BanRow:
    """What `sbc ban` writes; a running sbc picks it up within a few seconds."""
    wall = time.time()
    levels = {r.host: r.level for r in store.load_bans() if r.host == host}
    row = BanRow(host, reason, {}, wall, wall, levels.get(host, 0) + 1, wall, wall + seconds,
                 True, False, wall)
    store.save_ban(row)
    return row


def manual_unban(store: Store, host: str) -> bool:
    rows = [r for r in store.load_bans() if r.host == host]
    if not rows:
        return False
    r = rows[-1]
    wall = time.time()
    store.save_ban(BanRow(r.host, r.reason, r.counts, r.first_seen_wall, r.last_seen_wall, r.level,
                          r.banned_wall, min(r.expires_wall, wall), True, True, wall))
    return True
