"""The INVITE transaction a stateful proxy keeps for each call attempt: the
server transaction towards the caller and the client transaction towards
VOS3000, paired (RFC 3261 §16, §17).

States, as data (RFC 3261 §17.1.1 / §17.2.1, RFC 6026):

    CALLING    INVITE sent to VOS3000, nothing heard yet   (Timer A retransmits, Timer B gives 408)
    PROCEEDING a provisional heard                          (Timer C gives CANCEL + 408)
    COMPLETED  a non-2xx final answer sent to the caller    (Timer G retransmits it to a UDP caller until ACK)
    ACCEPTED   a 2xx passed through                         (retransmitted INVITEs are absorbed)

An initial INVITE may be tried on several VOS3000 targets in turn (serial
forking, RFC 3261 §16.6/§16.7, see failover.py): "retry" starts the next
attempt, with a branch of its own, from CALLING or PROCEEDING back to CALLING.
The transaction is in the table under the key of its caller-side branch and
under each attempt's branch, so every attempt's responses find it.

A transaction stays in the table for a linger time after its final answer so
that late retransmissions, ACKs and CANCELs still find it.
"""

from __future__ import annotations

from enum import Enum, StrEnum
from typing import TYPE_CHECKING

from ...sip import build
from ..verdict import Addr, Channel, ChannelNo

if TYPE_CHECKING:
    from .dialogs import Dialog
    from .timers import Timer


class TxState(Enum):
    CALLING = "calling"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    ACCEPTED = "accepted"


class TxEvent(StrEnum):
    PROVISIONAL = "provisional"  # a 101-199 from VOS3000 (100 too: it stops Timer A)
    SUCCESS = "2xx"  # a 2xx passed to the caller (retransmissions included)
    FINAL = "final"  # a non-2xx final answer, VOS3000's or our own
    TIMEOUT = "timeout"  # Timer B or C ran out
    RETRY = "retry"  # failover: the next VOS3000 gets the INVITE


class IllegalTransition(Exception):
    """An event the transaction's state does not take; the state is unchanged."""

    def __init__(self, state: TxState, event: TxEvent) -> None:
        super().__init__(f"{event} in {state.name}")
        self.state = state
        self.event = event


# Which events each state takes, and where they lead. Anything not listed is
# illegal there: `step` raises and leaves the state as it is; the engine asks
# `can` first wherever a message may legitimately arrive late (a retransmitted
# final answer, a provisional after the 2xx) and absorbs it.
TRANSITIONS: dict[TxState, dict[TxEvent, TxState]] = {
    TxState.CALLING: {
        TxEvent.PROVISIONAL: TxState.PROCEEDING,
        TxEvent.SUCCESS: TxState.ACCEPTED,
        TxEvent.FINAL: TxState.COMPLETED,
        TxEvent.TIMEOUT: TxState.COMPLETED,
        TxEvent.RETRY: TxState.CALLING,
    },
    TxState.PROCEEDING: {
        TxEvent.PROVISIONAL: TxState.PROCEEDING,
        TxEvent.SUCCESS: TxState.ACCEPTED,
        TxEvent.FINAL: TxState.COMPLETED,
        TxEvent.TIMEOUT: TxState.COMPLETED,
        TxEvent.RETRY: TxState.CALLING,
    },
    TxState.ACCEPTED: {TxEvent.SUCCESS: TxState.ACCEPTED},
    TxState.COMPLETED: {},
}


class Attempt:
    """An earlier attempt of a transaction: enough to ACK, CANCEL or BYE what
    its target sends after sbc moved on."""

    __slots__ = ("branch", "cancelled", "dest", "done", "target", "via")

    def __init__(self, branch: bytes, target: int, dest: Addr, via: bytes, done: bool) -> None:
        self.branch = branch
        self.target = target
        self.dest = dest
        self.via = via
        self.done = done  # a final response came
        self.cancelled = False


class InviteTx:
    __slots__ = (
        "a_interval",
        "a_timer",
        "acked",
        "attempt",
        "attempts",
        "b_timer",
        "branch",
        "call_id",
        "call_id_line",
        "caller",
        "caller_channel",
        "cancel_pending",
        "cancelled",
        "cseq",
        "cseq_line",
        "dest",
        "dialog",
        "egress",
        "expire_at",
        "fo_timer",
        "from_line",
        "g_interval",
        "g_timer",
        "h_at",
        "initial",
        "key",
        "last_response",
        "our_via",
        "out",
        "plan",
        "routes",
        "started",
        "state",
        "target",
        "to_line",
        "uri",
        "vias",
        "x_timer",
    )

    def __init__(self, key: bytes, caller: Addr, caller_channel: ChannelNo, now: float) -> None:
        self.key = key
        self.state = TxState.CALLING
        self.caller = caller
        self.caller_channel = caller_channel
        self.initial = True
        self.call_id = b""
        self.vias: list[bytes] = []
        self.from_line = b""
        self.to_line = b""
        self.call_id_line = b""
        self.cseq_line = b""
        self.cseq = 0
        self.uri = b""
        self.routes: list[bytes] = []
        self.our_via = b""
        self.out = b""
        self.last_response = b""
        self.a_interval = 0.0
        self.g_interval = 0.0
        # The live deadline of each timer kind, None when not armed.
        self.a_timer: Timer | None = None
        self.b_timer: Timer | None = None
        self.g_timer: Timer | None = None
        self.fo_timer: Timer | None = None
        self.x_timer: Timer | None = None
        self.h_at = 0.0
        self.egress: int = Channel.PRIVATE  # the private channel the INVITE went out on
        self.expire_at = 0.0
        self.cancel_pending = False
        self.cancelled = False
        self.acked = False
        self.started = now
        self.dest: Addr = ("", 0)  # the VOS3000 address of the current attempt
        self.target = -1  # its index in the health table, -1: not judged (in-dialog)
        self.plan: tuple[int, ...] = ()  # targets to try, in order (initial INVITEs)
        self.attempt = 0  # index into plan
        self.branch = key  # our branch towards the current attempt
        self.attempts: list[Attempt] | None = None  # earlier attempts, once there are some
        self.dialog: Dialog | None = None  # the call an initial INVITE set up

    def can(self, event: TxEvent) -> bool:
        return event in TRANSITIONS[self.state]

    def step(self, event: TxEvent) -> None:
        """Apply `event`; IllegalTransition (state unchanged) when this state does not take it."""
        nxt = TRANSITIONS[self.state].get(event)
        if nxt is None:
            raise IllegalTransition(self.state, event)
        self.state = nxt

    def cancel_request(self) -> bytes:
        """Our CANCEL of the current attempt (RFC 3261 §9.1: the INVITE's branch and route)."""
        return build.request(b"CANCEL", self.uri, self.our_via, self.routes, self.from_line,
                             self.to_line, self.call_id_line, self.cseq)

    def ack_request(self, to_line: bytes) -> bytes:
        """The hop-by-hop ACK of a non-2xx final answer (§17.1.1.3)."""
        return build.request(b"ACK", self.uri, self.our_via, self.routes, self.from_line, to_line,
                             self.call_id_line, self.cseq)

    def timers(self) -> tuple[Timer | None, ...]:
        return (self.a_timer, self.b_timer, self.g_timer, self.fo_timer, self.x_timer)

    def settle(self) -> None:
        """Final: what only an INVITE in flight needs is let go (the request's
        bytes; after a 2xx also the last response and the Via stack)."""
        self.out = b""
        if self.state is TxState.ACCEPTED:
            self.last_response = b""
            self.vias = []
            self.dialog = None
            if self.attempts is None:  # nothing left to ACK, CANCEL or BYE: only retransmissions to absorb
                self.from_line = self.to_line = self.call_id_line = self.cseq_line = b""
                self.uri = self.our_via = b""
                self.routes = []

    @property
    def final(self) -> bool:
        return self.state in (TxState.COMPLETED, TxState.ACCEPTED)
