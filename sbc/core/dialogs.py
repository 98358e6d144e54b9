"""Dialogs sbc has record-routed, keyed by Call-ID: where the public-side peer
is (so requests from VOS3000 go only to a dialog peer), which gateway and
egress the call belongs to, and how far it got.

The table is the truth for concurrency: a gateway's calls in progress are the
members of its index, which only `add`, `end` and `remove` change, so the
figure cannot drift or go below zero. The table is bounded; entries expire
(unconfirmed after a set-up timeout, confirmed after a maximum age or the
gateway's duration limit, ended after a linger for retransmissions).
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum

from .verdict import Addr


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    ENDED = "ended"


class Dialog:
    """`peer` is the public-side party (the caller of an outbound call, the
    registered callee of an inbound one); `egress` the private channel of the
    gateway the call belongs to; `backend` the VOS3000 address it lives on
    (in-dialog requests from the peer go there). The header values and contacts are what sbc
    needs to end the call itself (duration limit)."""

    __slots__ = (
        "backend",
        "backend_contact",
        "bye_at",
        "call_id",
        "confirmed_at",
        "created",
        "cseq_backend",
        "cseq_peer",
        "egress",
        "expire_at",
        "from_value",
        "gateway",
        "inbound",
        "peer",
        "peer_channel",
        "peer_contact",
        "state",
        "to_value",
    )

    def __init__(self, call_id: bytes, peer: Addr, channel: int, now: float, expire_at: float,
                 gateway: str = "", egress: int = 2, inbound: bool = False,
                 backend: Addr = ("", 0)) -> None:
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
        self.from_value = b""  # From of the initial INVITE (initiator's tag)
        self.to_value = b""  # To of the 2xx (the answerer's tag)
        self.peer_contact = b""
        self.backend_contact = b""
        self.cseq_peer = 0  # highest CSeq seen in requests from each side
        self.cseq_backend = 0
        self.bye_at = 0.0  # the duration limit's deadline, 0: none
        self.backend = backend  # the VOS3000 address the call lives on

    @property
    def active(self) -> bool:
        return self.state is not DialogState.ENDED


class DialogTable:
    __slots__ = ("_active", "_by_id", "_peers")

    def __init__(self) -> None:
        self._by_id: dict[bytes, Dialog] = {}
        self._active: dict[str, dict[bytes, Dialog]] = {}  # gateway -> its calls in progress
        self._peers: dict[str, int] = {}  # peer address -> dialogs with it, ended ones included

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, call_id: bytes) -> bool:
        return call_id in self._by_id

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._by_id.values()))

    def get(self, call_id: bytes) -> Dialog | None:
        return self._by_id.get(call_id)

    def add(self, dlg: Dialog) -> None:
        self.remove(dlg.call_id)
        self._by_id[dlg.call_id] = dlg
        host = dlg.peer[0]
        self._peers[host] = self._peers.get(host, 0) + 1
        if dlg.active:
            self._active.setdefault(dlg.gateway, {})[dlg.call_id] = dlg

    def end(self, dlg: Dialog) -> None:
        dlg.state = DialogState.ENDED
        calls = self._active.get(dlg.gateway)
        if calls is not None and calls.get(dlg.call_id) is dlg:
            del calls[dlg.call_id]

    def remove(self, call_id: bytes) -> Dialog | None:
        dlg = self._by_id.pop(call_id, None)
        if dlg is not None:
            calls = self._active.get(dlg.gateway)
            if calls is not None and calls.get(call_id) is dlg:
                del calls[call_id]
            host = dlg.peer[0]
            left = self._peers.get(host, 0) - 1
            if left > 0:
                self._peers[host] = left
            else:
                self._peers.pop(host, None)
        return dlg

    def has_peer(self, host: str) -> bool:
        """Whether any dialog in the table (ended ones still lingering
        included) has its public-side party at `host`."""
        return host in self._peers

    def active(self, gateway: str) -> int:
        calls = self._active.get(gateway)
        return len(calls) if calls else 0

    def active_total(self) -> int:
        return sum(len(c) for c in self._active.values())

    def by_gateway(self) -> dict[str, int]:
        return {g: len(c) for g, c in self._active.items() if c}
