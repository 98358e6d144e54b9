"""Keeps confirmed calls in SQLite so a restart in the middle of calls neither
leaks nor double-frees call slots, and duration-limit BYEs still go out.

Changes are batched (every `calls.persist_interval_s`): at a thousand calls
a second a write per call would cost more than the call. A clean stop
flushes; a crash loses at most that interval.

The batch never stalls the calls: a call's row is made when it is confirmed
(a few microseconds each, spread over the traffic, instead of thousands in
one go), and the shell writes the batch in slices of at most SLICE changes,
one short transaction per loop turn (`step`), instead of one transaction of
10-20 ms at 2,000 calls a second. (A thread of its own would take the SQLite
work off the loop, but hands the GIL back and forth at every row: more CPU
for the same work, on a machine whose other core is busy with the calls
too.) The slices keep the order of the changes: a call ended while its row
waits in the backlog is deleted after that row is written.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from ..core.proxy.dialogs import Dialog, DialogState
from ..core.engine import Engine
from ..io.logsetup import get_logger
from .store import DialogRow, Store

log = get_logger("sbc.dialogs")

SLICE = 128  # changes per transaction when written in steps (well under a millisecond)
Batch = tuple[list[DialogRow], list[bytes]]


class DialogKeeper:
    def __init__(self, engine: Engine, store: Store, clock: Callable[[], float]) -> None:
        self.engine = engine
        self.store = store
        self.clock = clock
        self._upserts: dict[bytes, DialogRow] = {}  # made when confirmed
        self._deletes: set[bytes] = set()
        # call-ids in the file or on their way to it: a short call never touches it
        self._written: set[bytes] = set()
        self._backlog: deque[Batch] = deque()  # taken, not yet written: oldest first
        engine.on_dialog = self.on_dialog

    def restore(self) -> int:
        mono, wall = self.clock(), time.time()
        rows = self.store.load_dialogs(wall)
        for r in rows:
            dlg = _dialog(r, mono, wall)
            self.engine.restore_dialog(dlg, mono)
            self._written.add(r.call_id)
        if rows:
            log.info("dialogs_restored", calls=len(rows), by_gateway=self.engine.dialogs.by_gateway())
        return len(rows)

    def on_dialog(self, event: str, dlg: Dialog) -> None:
        if event == "confirmed":
            self._upserts[dlg.call_id] = _row(dlg, self.clock(), time.time())
            self._deletes.discard(dlg.call_id)
        else:
            self._upserts.pop(dlg.call_id, None)
            if dlg.call_id in self._written:
                self._deletes.add(dlg.call_id)

    @property
    def pending(self) -> int:
        """Changes not yet written (the current batch and the backlog)."""
        return (len(self._upserts) + len(self._deletes)
                + sum(len(r) + len(d) for r, d in self._backlog))

    @property
    def backlogged(self) -> bool:
        return bool(self._backlog)

    def take(self) -> None:
        """Close the current batch: its changes join the backlog, in order."""
        if not self._upserts and not self._deletes:
            return
        rows, deletes = list(self._upserts.values()), list(self._deletes)
        self._upserts, self._deletes = {}, set()
        self._written.difference_update(deletes)
        self._written.update(r.call_id for r in rows)
        self._backlog.append((rows, deletes))

    def step(self, limit: int = SLICE) -> bool:
        """Write at most `limit` changes of the backlog in one transaction;
        True while some remain. StoreError when the file refuses them (they
        are dropped, as a crash would have lost them; the next go on)."""
        backlog = self._backlog
        if not backlog:
            return False
        rows, deletes = backlog[0]
        d_now = deletes[:limit]
        r_now = rows[:limit - len(d_now)]
        if len(d_now) == len(deletes) and len(r_now) == len(rows):
            backlog.popleft()
        else:
            backlog[0] = (rows[len(r_now):], deletes[len(d_now):])
        self.store.apply_dialogs(r_now, d_now)
        return bool(backlog)

    def flush(self) -> None:
        """Write everything now (a clean stop, tests)."""
        self.take()
        while self._backlog:
            self.store.apply_dialogs(*self._backlog.popleft())


def _row(d: Dialog, mono: float, wall: float) -> DialogRow:
    def w(t: float) -> float:
        return wall + (t - mono) if t else 0.0

    return DialogRow(d.call_id, d.gateway, int(d.peer_channel), d.peer[0], d.peer[1], d.egress,
                     d.inbound, d.from_value, d.to_value, d.peer_contact, d.backend_contact,
                     d.cseq_peer, d.cseq_backend, w(d.created), w(d.confirmed_at), w(d.expire_at),
                     w(d.bye_at), d.backend[0], d.backend[1])


def _dialog(r: DialogRow, mono: float, wall: float) -> Dialog:
    def m(t: float) -> float:
        return mono + (t - wall) if t else 0.0

    d = Dialog(r.call_id, (r.peer_host, r.peer_port), r.peer_channel, m(r.created_wall),
               m(r.expire_wall), gateway=r.gateway, egress=r.egress, inbound=r.inbound,
               backend=(r.backend_host, r.backend_port))
    d.state = DialogState.CONFIRMED
    d.confirmed_at = m(r.confirmed_wall)
    d.from_value, d.to_value = r.from_value, r.to_value
    d.peer_contact, d.backend_contact = r.peer_contact, r.backend_contact
    d.cseq_peer, d.cseq_backend = r.cseq_peer, r.cseq_backend
    d.bye_at = m(r.bye_wall)
    return d
