"""Keeps confirmed calls in SQLite so a restart in the middle of calls neither
leaks nor double-frees call slots, and duration-limit BYEs still go out.

Changes are batched (one transaction every `calls.persist_interval_s`): at
a thousand calls a second a write per call would cost more than the call. A
clean stop flushes; a crash loses at most that interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..core.proxy.dialogs import Dialog, DialogState
from ..core.engine import Engine
from ..io.logsetup import get_logger
from .store import DialogRow, Store

log = get_logger("sbc.dialogs")


class DialogKeeper:
    def __init__(self, engine: Engine, store: Store, clock: Callable[[], float]) -> None:
        self.engine = engine
        self.store = store
        self.clock = clock
        self._upserts: dict[bytes, Dialog] = {}
        self._deletes: set[bytes] = set()
        self._written: set[bytes] = set()  # call-ids in the file: a short call never touches it
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
            self._upserts[dlg.call_id] = dlg
            self._deletes.discard(dlg.call_id)
        else:
            self._upserts.pop(dlg.call_id, None)
            if dlg.call_id in self._written:
                self._deletes.add(dlg.call_id)

    def flush(self) -> None:
        if not self._upserts and not self._deletes:
            return
        mono, wall = self.clock(), time.time()
        rows = [_row(d, mono, wall) for d in self._upserts.values() if d.state is DialogState.CONFIRMED]
        deletes = list(self._deletes)
        self._upserts, self._deletes = {}, set()
        self.store.apply_dialogs(rows, deletes)
        self._written.difference_update(deletes)
        self._written.update(r.call_id for r in rows)


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
