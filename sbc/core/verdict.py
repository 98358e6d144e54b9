"""What the core decides for each message, and what it asks the transport to send.

A verdict is one of Forward, Reply or Drop. A Drop carries its reason, a
member of `DropReason` or, for a message sbc consumes by design, of
`Absorbed` (sbc.core.reasons); the same names are counted in metrics and
asserted in tests. Sends are
plain tuples (channel, (host, port), bytes) because one is made per packet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

from .reasons import Absorbed, DropReason


class Channel(IntEnum):
    """Which socket a message came in on, or must leave by."""

    PUBLIC_UDP = 0
    PUBLIC_TCP = 1
    PUBLIC_TLS = 2
    PRIVATE = 3  # the first private (egress) socket; gateway egresses follow


PUBLIC_UDP = Channel.PUBLIC_UDP
PUBLIC_TCP = Channel.PUBLIC_TCP
PUBLIC_TLS = Channel.PUBLIC_TLS
PRIVATE = Channel.PRIVATE
STREAMS = (PUBLIC_TCP, PUBLIC_TLS)  # the public channels that carry a connection each

Addr = tuple[str, int]
# A channel number: a `Channel`, or PRIVATE + n for the n-th gateway egress
# socket (plain int arithmetic, so typed as int).
ChannelNo = int


MAPPED = "::ffff:"  # an IPv4 peer on a dual-stack IPv6 socket (RFC 4291 §2.5.5.2)


def unmapped(host: str) -> str:
    """`::ffff:a.b.c.d` as `a.b.c.d`: one address has one name in every table,
    limit, ban, log line and metric, whichever socket it came in on."""
    if host[:7] == MAPPED and "." in host:
        return host[7:]
    return host


class Source(NamedTuple):
    channel: ChannelNo
    host: str
    port: int


Send = tuple[ChannelNo, Addr, bytes]


@dataclass(slots=True)
class Forward:
    """The message goes on (possibly with replies of our own beside it)."""

    sends: list[Send]
    kind = "forward"
    close = False


@dataclass(slots=True)
class Reply:
    """sbc answers itself; nothing goes on."""

    sends: list[Send]
    kind = "reply"
    close = False


@dataclass(slots=True)
class Drop:
    """Nothing goes on; `reason` names why (or, an `Absorbed` name, that sbc
    consumed it by design: `sends` may then carry what sbc says itself, such
    as the CANCEL of an attempt it moved on from). `close`: the connection it
    came on (TCP/TLS) must be closed too."""

    reason: DropReason | Absorbed
    sends: list[Send] = field(default_factory=list)
    close: bool = False
    kind = "drop"


Verdict = Forward | Reply | Drop
