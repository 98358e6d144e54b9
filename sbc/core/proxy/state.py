"""The call state of the engine, one object: dialogs, INVITE transactions and
the deadlines that drive them, with the transitions that touch more than one
of them (arming and cancelling timers, a transaction completing, a dialog
confirmed or ended). Every part of the engine is handed this object; none
keeps call state of its own.

A slot (a gateway's call in progress) is a dialog in the table that has not
ended: it is taken when the initial INVITE is forwarded and freed, once, by
`end` on whichever path comes first (non-2xx final, CANCEL, BYE request,
duration limit, maximum age).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .dialogs import Dialog, DialogState, DialogTable
from ..settings import ProxySettings
from .timers import Timer, TimerHeap, TimerKind
from .transactions import InviteTx, TxEvent, TxState
from ..verdict import PUBLIC_UDP

EventSink = Callable[..., None]
DialogSink = Callable[[str, Dialog], None]


class CallState:
    __slots__ = ("accepted", "dialogs", "s", "sinks", "timers", "txs")

    def __init__(self, settings: ProxySettings, sinks: Any) -> None:
        self.s = settings  # replaced on reload through the engine
        self.sinks = sinks  # has on_event, on_dialog and policy (the engine's context)
        self.txs: dict[bytes, InviteTx] = {}
        # INVITE transactions that passed a 2xx and have nothing left to do
        # but absorb retransmitted INVITEs (RFC 6026 "Accepted"): their key,
        # the caller's host and when they go, in the order they came (every
        # linger is the same, so the oldest is first). A few dozen bytes
        # each instead of a transaction.
        self.accepted: dict[bytes, tuple[str, float]] = {}
        self.dialogs = DialogTable()
        self.timers = TimerHeap()

    # ------------------------------------------------------------------ timers

    def arm(self, old: Timer | None, deadline: float, kind: TimerKind, obj: Any) -> Timer:
        self.timers.cancel(old)
        return self.timers.push(deadline, kind, obj)

    def cancel_tx_timers(self, tx: InviteTx) -> None:
        for entry in tx.timers():
            self.timers.cancel(entry)
        tx.a_timer = tx.b_timer = tx.g_timer = tx.fo_timer = tx.x_timer = None

    # ------------------------------------------------------------------ transactions

    def add_tx(self, tx: InviteTx) -> bool:
        if len(self.txs) >= self.s.max_transactions:
            return False
        self.txs[tx.key] = tx
        return True

    def complete(self, tx: InviteTx, now: float) -> None:
        """Entered COMPLETED: Timer G towards a UDP caller, then expiry."""
        self.timers.cancel(tx.a_timer)
        self.timers.cancel(tx.b_timer)
        self.timers.cancel(tx.fo_timer)
        tx.a_timer = tx.b_timer = tx.fo_timer = None
        if tx.caller_channel == PUBLIC_UDP:
            tx.g_interval = self.s.t1
            tx.h_at = now + 64 * self.s.t1
            tx.g_timer = self.arm(tx.g_timer, now + self.s.t1, TimerKind.RESPONSE, tx)
        self.expire_tx(tx, now)

    def accept(self, tx: InviteTx, now: float) -> None:
        """Entered ACCEPTED (RFC 6026): nothing to retransmit; linger for
        retransmitted INVITEs. Later 2xx copies follow the Via stack. A
        transaction with earlier failover attempts stays whole, so their late
        answers can still be ACKed and ended."""
        if tx.attempts is not None:
            self.timers.cancel(tx.a_timer)
            self.timers.cancel(tx.b_timer)
            self.timers.cancel(tx.fo_timer)
            tx.a_timer = tx.b_timer = tx.fo_timer = None
            self.expire_tx(tx, now)
            return
        self.forget_tx(tx)
        accepted = self.accepted
        if len(accepted) >= self.s.max_transactions:
            del accepted[next(iter(accepted))]  # the oldest: only a retransmission to absorb
        accepted[tx.key] = (tx.caller[0], now + self.s.linger)

    def was_accepted(self, key: bytes, host: str) -> bool:
        entry = self.accepted.get(key)
        return entry is not None and entry[0] == host

    def expire_accepted(self, now: float) -> None:
        accepted = self.accepted
        while accepted:
            key = next(iter(accepted))
            if accepted[key][1] > now:
                return
            del accepted[key]

    def next_deadline(self) -> float | None:
        at = self.timers.next_deadline()
        if self.accepted:
            first = self.accepted[next(iter(self.accepted))][1]
            return first if at is None or first < at else at
        return at

    def expire_tx(self, tx: InviteTx, now: float) -> None:
        tx.settle()
        tx.expire_at = now + self.s.linger
        tx.x_timer = self.arm(tx.x_timer, tx.expire_at, TimerKind.TX_EXPIRE, tx)

    def forget_tx(self, tx: InviteTx) -> None:
        """The linger is over: the transaction and every key it is known by go."""
        self.cancel_tx_timers(tx)
        for key in (tx.key, tx.branch, *(a.branch for a in tx.attempts or ())):
            if self.txs.get(key) is tx:
                del self.txs[key]

    def final(self, tx: InviteTx, event: TxEvent) -> bool:
        """Apply a final event if the state takes it (False: a late copy)."""
        if not tx.can(event):
            return False
        tx.step(event)
        return True

    # ------------------------------------------------------------------ dialogs

    def add_dialog(self, dlg: Dialog) -> None:
        old = self.dialogs.get(dlg.call_id, dlg.tag)
        if old is not None:  # an ended call lingering under the same identity
            self._forget(old)
        self.dialogs.add(dlg)
        dlg.expire_timer = self.arm(None, dlg.expire_at, TimerKind.DIALOG_EXPIRE, dlg)

    def confirm(self, dlg: Dialog, now: float) -> None:
        s, sinks = self.s, self.sinks
        self.dialogs.confirm(dlg)
        dlg.confirmed_at = now
        dlg.expire_at = now + s.dialog_max_age
        dlg.expire_timer = self.arm(dlg.expire_timer, dlg.expire_at, TimerKind.DIALOG_EXPIRE, dlg)
        p = sinks.policy.policy(dlg.gateway)
        if p is not None and p.max_duration > 0:
            dlg.bye_at = now + p.max_duration
            dlg.bye_timer = self.arm(dlg.bye_timer, dlg.bye_at, TimerKind.DURATION, dlg)
        sinks.on_dialog("confirmed", dlg)
        if sinks.fraud is not None:  # the toll-fraud watch counts its minutes from now
            sinks.fraud.answered(dlg.key, now)
        sinks.on_event("call_setup", call_id=dlg.call_id.decode("ascii", "replace"),
                       gateway=dlg.gateway, peer=f"{dlg.peer[0]}:{dlg.peer[1]}",
                       direction="inbound" if dlg.inbound else "outbound",
                       setup_ms=round((now - dlg.created) * 1000, 1))

    def end(self, dlg: Dialog, now: float, reason: str) -> None:
        """The call is over: its slot frees now, once; the entry lingers so that
        retransmissions of what ended it still find their way, then goes."""
        if dlg.state is DialogState.ENDED:
            return
        confirmed = dlg.state is DialogState.CONFIRMED
        self._event_end(dlg, now, reason)
        self.dialogs.end(dlg)
        self.timers.cancel(dlg.bye_timer)
        dlg.bye_timer = None
        dlg.bye_at = 0.0
        if confirmed:
            self.sinks.on_dialog("ended", dlg)
        # Lingering, it routes only retransmitted BYEs and ACKs: what sbc
        # needed to end the call itself goes now.
        dlg.from_value = dlg.to_value = dlg.backend_contact = b""
        if self.dialogs.get(dlg.call_id, dlg.tag) is dlg:
            dlg.expire_at = now + self.s.dialog_linger
            dlg.expire_timer = self.arm(dlg.expire_timer, dlg.expire_at,
                                        TimerKind.DIALOG_EXPIRE, dlg)

    def expire(self, dlg: Dialog, now: float) -> None:
        """Its set-up timeout, maximum age or linger is over."""
        if dlg.state is not DialogState.ENDED:
            confirmed = dlg.state is DialogState.CONFIRMED
            self._event_end(dlg, now, "expired")
            self.dialogs.end(dlg)
            if confirmed:
                self.sinks.on_dialog("ended", dlg)
        self._forget(dlg)

    def _forget(self, dlg: Dialog) -> None:
        self.timers.cancel(dlg.expire_timer)
        self.timers.cancel(dlg.bye_timer)
        dlg.expire_timer = dlg.bye_timer = None
        if dlg.state is not DialogState.ENDED:
            self.dialogs.end(dlg)
        self.dialogs.remove(dlg)

    def restore(self, dlg: Dialog, now: float) -> None:
        """A confirmed dialog kept across a restart, with its deadlines."""
        self.dialogs.add(dlg)
        dlg.expire_timer = self.arm(None, dlg.expire_at, TimerKind.DIALOG_EXPIRE, dlg)
        if dlg.bye_at:
            dlg.bye_at = max(dlg.bye_at, now)
            dlg.bye_timer = self.arm(None, dlg.bye_at, TimerKind.DURATION, dlg)

    def _event_end(self, dlg: Dialog, now: float, reason: str) -> None:
        if self.sinks.fraud is not None:  # no longer in progress for the toll-fraud watch
            self.sinks.fraud.ended(dlg.key, now)
        duration = round(now - dlg.confirmed_at, 3) if dlg.confirmed_at else 0.0
        self.sinks.on_event("call_end", call_id=dlg.call_id.decode("ascii", "replace"),
                            gateway=dlg.gateway, reason=reason, duration_s=duration)


__all__ = ["CallState", "DialogSink", "EventSink", "TxState"]
