"""Dialogs sbc has record-routed, keyed by Call-ID: where the caller is (so
requests from VOS3000 go only to a dialog peer) and how far the call got.
The table is bounded; entries expire (unconfirmed after a set-up timeout,
confirmed after a maximum age, ended after a linger for retransmissions)."""

from __future__ import annotations

from enum import Enum

from .verdict import Addr, Channel


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    ENDED = "ended"


class Dialog:
    __slots__ = ("call_id", "caller", "caller_channel", "state", "created", "confirmed_at", "expire_at")

    def __init__(self, call_id: bytes, caller: Addr, channel: Channel, now: float, expire_at: float) -> None:
        self.call_id = call_id
        self.caller = caller
        self.caller_channel = channel
        self.state = DialogState.EARLY
        self.created = now
        self.confirmed_at = 0.0
        self.expire_at = expire_at
