"""Dialogs sbc has record-routed, keyed by Call-ID: where the caller is (so
requests from VOS3000 go only to a dialog peer) and how far the call got.
The table is bounded; entries expire (unconfirmed after a set-up timeout,
confirmed after a maximum age, ended after a linger for retransmissions)."""

from __future__ import annotations

from enum import Enum

from .verdict import Addr


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    ENDED = "ended"


class Dialog:
    """`peer` is the public-side party (the caller of an outbound call, the
    registered callee of an inbound one); `egress` the private channel of the
    gateway the call belongs to."""

    __slots__ = ("call_id", "peer", "peer_channel", "state", "created", "confirmed_at", "expire_at",
                 "gateway", "egress", "inbound")

    def __init__(self, call_id: bytes, peer: Addr, channel: int, now: float, expire_at: float,
                 gateway: str = "", egress: int = 2, inbound: bool = False) -> None:
        self.call_id = call_id
        self.peer = peer
        self.peer_channel = channel
        self.state = DialogState.EARLY
        self.created = now
        self.confirmed_at = 0.0
        self.expire_at = expire_at
        self.gateway = gateway
        self.egress = egress
        self.inbound = inbound
