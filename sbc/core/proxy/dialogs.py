"""Dialogs sbc has record-routed, by their RFC 3261 §12 identity: Call-ID,
the initiator's From-tag and the answerer's To-tag. Where the public-side
peer is (only it, and the dialog's VOS3000, may send requests in the dialog),
which gateway and egress the call belongs to, and how far it got.

A call is one entry, keyed by Call-ID + the initial INVITE's From-tag: that is
how its early dialog is known until the answerer's To-tag arrives (§12.1). One
INVITE may set up several early dialogs (forking, §13.2.2.4): the entry keeps
every answerer tag seen, bounded, and a request in the dialog must carry one
of them. Two INVITEs that share a Call-ID but not a From-tag are two calls.

The table is the truth for concurrency: a gateway's calls in progress are the
members of its index, which only `add`, `end` and `remove` change, so the
figure cannot drift or go below zero. The table is bounded; entries expire
(unconfirmed after a set-up timeout, confirmed after a maximum age or the
gateway's duration limit, ended after a linger for retransmissions).
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum, StrEnum
from typing import TYPE_CHECKING

from ..verdict import Addr

if TYPE_CHECKING:
    from .timers import Timer

DialogKey = tuple[bytes, bytes]  # (Call-ID, the initiator's From-tag)
MAX_ANSWER_TAGS = 4  # early dialogs one INVITE may set up (forking)


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    ENDED = "ended"


class DialogEvent(StrEnum):
    ANSWERED = "answered"  # the 2xx to the initial INVITE
    ENDED = "ended"  # BYE, duration limit, a refused or cancelled INVITE, expiry


class IllegalDialogEvent(Exception):
    def __init__(self, state: DialogState, event: DialogEvent) -> None:
        super().__init__(f"{event} in {state.name}")
        self.state = state
        self.event = event


DIALOG_TRANSITIONS: dict[DialogState, dict[DialogEvent, DialogState]] = {
    DialogState.EARLY: {DialogEvent.ANSWERED: DialogState.CONFIRMED,
                        DialogEvent.ENDED: DialogState.ENDED},
    DialogState.CONFIRMED: {DialogEvent.ENDED: DialogState.ENDED},
    DialogState.ENDED: {},
}


class Dialog:
    """`peer` is the public-side party (the caller of an outbound call, the
    registered callee of an inbound one); `egress` the private channel of the
    gateway the call belongs to; `backend` the VOS3000 address it lives on
    (in-dialog requests from the peer go there). The header values and contacts are what sbc
    needs to end the call itself (duration limit)."""

    __slots__ = (
        "answer_tags",
        "backend",
        "backend_contact",
        "bye_at",
        "bye_timer",
        "call_id",
        "confirmed_at",
        "created",
        "cseq_backend",
        "cseq_peer",
        "egress",
        "expire_at",
        "expire_timer",
        "from_value",
        "gateway",
        "inbound",
        "peer",
        "peer_channel",
        "peer_contact",
        "state",
        "tag",
        "to_value",
    )

    def __init__(self, call_id: bytes, peer: Addr, channel: int, now: float, expire_at: float,
                 gateway: str = "", egress: int = 2, inbound: bool = False,
                 backend: Addr = ("", 0), tag: bytes = b"") -> None:
        self.call_id = call_id
        self.tag = tag  # the initiator's From-tag
        self.answer_tags: list[bytes] = []  # the answerer's To-tags seen (forking: several)
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
        self.expire_timer: Timer | None = None
        self.bye_timer: Timer | None = None

    @property
    def key(self) -> DialogKey:
        return (self.call_id, self.tag)

    def step(self, event: DialogEvent) -> None:
        nxt = DIALOG_TRANSITIONS[self.state].get(event)
        if nxt is None:
            raise IllegalDialogEvent(self.state, event)
        self.state = nxt

    def add_answer_tag(self, tag: bytes | None) -> bool:
        """Remember an answerer's To-tag; False when the bound is reached."""
        if tag is None or tag in self.answer_tags:
            return tag is not None
        if len(self.answer_tags) >= MAX_ANSWER_TAGS:
            return False
        self.answer_tags.append(tag)
        return True

    @property
    def active(self) -> bool:
        return self.state is not DialogState.ENDED


class DialogTable:
    __slots__ = ("_active", "_by_key", "_confirmed", "_peers")

    def __init__(self) -> None:
        self._by_key: dict[DialogKey, Dialog] = {}
        self._active: dict[str, dict[DialogKey, Dialog]] = {}  # gateway -> its calls in progress
        self._peers: dict[str, int] = {}  # peer address -> dialogs with it, ended ones included
        self._confirmed: dict[str, int] = {}  # peer address -> its confirmed dialogs

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._by_key.values()))

    def get(self, call_id: bytes, tag: bytes | None) -> Dialog | None:
        """The call set up by the INVITE with this Call-ID and From-tag."""
        return self._by_key.get((call_id, tag or b""))

    def with_call_id(self, call_id: bytes) -> list[Dialog]:
        """Every call with this Call-ID (a walk of the table: for the admin
        interface and tests, never the hot path)."""
        return [d for d in self._by_key.values() if d.call_id == call_id]

    def find(self, call_id: bytes, from_tag: bytes | None, to_tag: bytes | None) -> Dialog | None:
        """The dialog a request belongs to, by both tags (§12.2.2), whichever
        side sent it: the initiator's tag in From and an answerer's in To, or
        the other way round."""
        if to_tag is None:
            return None
        dlg = self._by_key.get((call_id, from_tag or b""))
        if dlg is not None and to_tag in dlg.answer_tags:
            return dlg
        dlg = self._by_key.get((call_id, to_tag))
        if dlg is not None and from_tag is not None and from_tag in dlg.answer_tags:
            return dlg
        return None

    def add(self, dlg: Dialog) -> None:
        self.remove(dlg)
        self._by_key[dlg.key] = dlg
        host = dlg.peer[0]
        self._peers[host] = self._peers.get(host, 0) + 1
        if dlg.active:
            self._active.setdefault(dlg.gateway, {})[dlg.key] = dlg
        if dlg.state is DialogState.CONFIRMED:
            self._count_confirmed(dlg.peer[0], 1)

    def confirm(self, dlg: Dialog) -> None:
        """The answer came: the peer is confirmed to be at its address."""
        dlg.step(DialogEvent.ANSWERED)
        self._count_confirmed(dlg.peer[0], 1)

    def _count_confirmed(self, host: str, delta: int) -> None:
        left = self._confirmed.get(host, 0) + delta
        if left > 0:
            self._confirmed[host] = left
        else:
            self._confirmed.pop(host, None)

    def confirmed_peer(self, host: str) -> bool:
        return host in self._confirmed

    def end(self, dlg: Dialog) -> None:
        """The call is over: its slot is free, once (later calls are no-ops)."""
        if dlg.state is DialogState.CONFIRMED:
            self._count_confirmed(dlg.peer[0], -1)
        if dlg.state is not DialogState.ENDED:
            dlg.step(DialogEvent.ENDED)
        calls = self._active.get(dlg.gateway)
        if calls is not None and calls.get(dlg.key) is dlg:
            del calls[dlg.key]
            if not calls:
                del self._active[dlg.gateway]

    def remove(self, dlg: Dialog) -> bool:
        """Forget the dialog (it must be the one in the table under its key)."""
        if self._by_key.get(dlg.key) is not dlg:
            return False
        del self._by_key[dlg.key]
        if dlg.state is DialogState.CONFIRMED:
            self._count_confirmed(dlg.peer[0], -1)
        calls = self._active.get(dlg.gateway)
        if calls is not None and calls.get(dlg.key) is dlg:
            del calls[dlg.key]
            if not calls:
                del self._active[dlg.gateway]
        host = dlg.peer[0]
        left = self._peers.get(host, 0) - 1
        if left > 0:
            self._peers[host] = left
        else:
            self._peers.pop(host, None)
        return True

    def has_peer(self, host: str) -> bool:
        """Whether any dialog in the table (ended ones still lingering
        included) has its public-side party at `host`."""
        return host in self._peers

    def active(self, gateway: str) -> int:
        calls = self._active.get(gateway)
        return len(calls) if calls else 0

    def calls(self, gateway: str) -> dict[DialogKey, Dialog]:
        """The gateway's calls in progress (read only: the cluster's slots)."""
        return self._active.get(gateway) or {}

    def gateways_active(self) -> list[str]:
        return list(self._active)

    def active_total(self) -> int:
        return sum(len(c) for c in self._active.values())

    def by_gateway(self) -> dict[str, int]:
        return {g: len(c) for g, c in self._active.items() if c}
