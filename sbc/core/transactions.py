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

from enum import Enum
from typing import TYPE_CHECKING

from .verdict import Addr, Channel, ChannelNo

if TYPE_CHECKING:
    from .failover import Attempt


class TxState(Enum):
    CALLING = "calling"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    ACCEPTED = "accepted"


# Which events each state accepts, and where they lead. Anything not listed
# leaves the state as it is (the engine absorbs or ignores the message).
TRANSITIONS: dict[TxState, dict[str, TxState]] = {
    TxState.CALLING: {
        "provisional": TxState.PROCEEDING,
        "2xx": TxState.ACCEPTED,
        "final": TxState.COMPLETED,
        "timeout": TxState.COMPLETED,
        "retry": TxState.CALLING,
    },
    TxState.PROCEEDING: {
        "provisional": TxState.PROCEEDING,
        "2xx": TxState.ACCEPTED,
        "final": TxState.COMPLETED,
        "timeout": TxState.COMPLETED,
        "retry": TxState.CALLING,
    },
    TxState.ACCEPTED: {"2xx": TxState.ACCEPTED},
    TxState.COMPLETED: {},
}


class InviteTx:
    __slots__ = (
        "a_at",
        "a_interval",
        "acked",
        "attempt",
        "attempts",
        "b_at",
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
        "egress",
        "expire_at",
        "fo_at",
        "from_line",
        "g_at",
        "g_interval",
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
        self.a_at = 0.0
        self.a_interval = 0.0
        self.b_at = 0.0
        self.g_at = 0.0
        self.g_interval = 0.0
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
        self.fo_at = 0.0  # failover deadline of the current attempt, 0: none
        self.attempts: list[Attempt] | None = None  # earlier attempts, once there are some

    def step(self, event: str) -> bool:
        """Apply `event`; False (state unchanged) when this state does not take it."""
        nxt = TRANSITIONS[self.state].get(event)
        if nxt is None:
            return False
        self.state = nxt
        return True

    @property
    def final(self) -> bool:
        return self.state in (TxState.COMPLETED, TxState.ACCEPTED)
