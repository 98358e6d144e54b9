"""The screen: what a datagram must pass before it is parsed at all.

Cheapest first, on raw bytes (DESIGN.md step 1):
1. banned source                      -> BANNED
2. over its rate: per IP and per /24 (IPv4) or /64 (IPv6) for sources that
   are not gateways, a higher per-IP rate for gateways (token buckets, like
   iptables hashlimit)                -> RATE_PER_IP, RATE_PER_NET, RATE_PER_GATEWAY
3. a scanner signature in User-Agent or a From/To display name
   (case-insensitive)                 -> SCANNER
4. OPTIONS from a source that is not a gateway -> UNTRUSTED_OPTIONS
5. anything else from a source that is not a gateway, when nothing could
   admit it: no digest accounts, unknown sources dropped silently, and no
   dialog with that address             -> UNKNOWN_SOURCE_SCREENED (the
   engine's UNKNOWN_SOURCE, reached at a tenth of the cost of a full parse)
(members of sbc.core.reasons.DropReason, all of the screen stage).

Rate and scanner hits are offenses towards a ban. Every table is keyed by a
source address, so each has a hard cap: when full, the entry created longest
ago goes. The rate buckets take a first sight into a fixed array and make a
bucket only for a source seen again (ratelimit.SourceBuckets): a flood of
fresh addresses costs no allocation and pushes out no bucket.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from ...sip import Message
from .bans import BanTable
from .ratelimit import SourceBuckets, net_key
from ..identify.gateways import GatewayTable
from ..reasons import DropReason, Offense

# The members the screen returns, bound once: on Python 3.11 reading an enum
# member off its class costs as much as the rest of a banned source's drop.
BANNED = DropReason.BANNED
RATE_PER_IP = DropReason.RATE_PER_IP
RATE_PER_NET = DropReason.RATE_PER_NET
RATE_PER_GATEWAY = DropReason.RATE_PER_GATEWAY
SCANNER = DropReason.SCANNER
UNTRUSTED_OPTIONS = DropReason.UNTRUSTED_OPTIONS
UNKNOWN_SOURCE_SCREENED = DropReason.UNKNOWN_SOURCE_SCREENED
SCANNER_OFFENSE = Offense.SCANNER
RATE_OFFENSE = Offense.RATE_LIMIT

EXPIRE_BUDGET = 5000  # entries looked at per table per sweep

# Header lines the signatures are matched in (on the lower-cased head): the
# whole User-Agent value, and From / To (compact f / t too) up to the '<'
# that ends a display name, the first of each. A scanner's lines are short,
# so a few finds and a regex over a few dozen bytes (searched in place,
# between two offsets) beat one regex over the whole message. The compact
# forms are rare: one search says whether either is there at all.
_COMPACT = re.compile(rb"\n[ft]:")
_NAMES = (b"\nfrom:", b"\nto:")
_NAMES_AND_COMPACT = (*_NAMES, b"\nf:", b"\nt:")


def signature_in(sig: re.Pattern[bytes], msg: Message) -> bool:
    """The same signatures on the parsed message: whatever the byte check
    missed (a space before the colon, a folded line, a second header of the
    same name, a compact form) the parser has put right."""
    for name, display_only in (("user-agent", False), ("from", True), ("to", True)):
        for value in msg.get_all(name):
            low = value.lower()
            if display_only:
                low = low.split(b"<", 1)[0]
            if low and sig.search(low) is not None:
                return True
    return False


class Screen:
    __slots__ = (
        "_sig",
        "apply_to_gateways",
        "bans",
        "burst_gw",
        "burst_ip",
        "burst_net",
        "closed",
        "gateways",
        "has_peer",
        "max_sources",
        "per_gw",
        "per_ip",
        "per_net",
        "rate_gw",
        "rate_ip",
        "rate_net",
    )

    def __init__(self, bans: BanTable, gateways: GatewayTable | None, *,
                 signatures: Iterable[str] = (), apply_to_gateways: bool = False,
                 rate_per_ip: tuple[float, float] = (20.0, 40.0),
                 rate_per_net: tuple[float, float] = (200.0, 400.0),
                 rate_per_gateway: tuple[float, float] = (5000.0, 10000.0),
                 max_sources: int = 200_000, closed: bool = False,
                 has_peer: Callable[[str], bool] = lambda host: False) -> None:
        self.bans = bans
        self.gateways = gateways
        self.apply_to_gateways = apply_to_gateways
        sigs = [s.lower().encode() for s in signatures if s]
        self._sig = re.compile(b"|".join(re.escape(s) for s in sigs)) if sigs else None
        self.rate_ip, self.burst_ip = rate_per_ip
        self.rate_net, self.burst_net = rate_per_net
        self.rate_gw, self.burst_gw = rate_per_gateway
        self.max_sources = max_sources
        # Unknown sources cannot be admitted (step 5); `has_peer` tells the
        # addresses that still have a dialog (a gateway removed by a reload).
        self.closed = closed
        self.has_peer = has_peer
        # First sights in fixed arrays, buckets of sources seen again in
        # tables capped at `max_sources` (the oldest goes first): see SourceBuckets.
        self.per_ip = SourceBuckets(self.rate_ip, self.burst_ip, max_sources)
        self.per_net = SourceBuckets(self.rate_net, self.burst_net, max_sources)
        # Gateways are few and seen often: a small array of first sights.
        self.per_gw = SourceBuckets(self.rate_gw, self.burst_gw, max_sources, slots=1024)

    @property
    def signatures(self) -> re.Pattern[bytes] | None:
        return self._sig

    def check(self, data: bytes, host: str, port: int, now: float,
              stream: bool = False) -> DropReason | None:
        """A drop reason, or None when the datagram may be parsed. `stream`:
        the message came over a TCP/TLS connection, whose source is not forged."""
        ban = self.bans.bans.get(host)
        if ban is not None and now < ban.expires_at:
            return BANNED
        return self.check_unbanned(data, host, port, now, stream)

    def check_unbanned(self, data: bytes, host: str, port: int, now: float,
                       stream: bool = False) -> DropReason | None:
        """`check` past the ban lookup, which the engine has made itself."""
        gateways = self.gateways
        if gateways is not None and gateways.by_source(host, port) is None:
            # Not a gateway (a flood's every packet): steps 2 to 5, inline.
            if not self.per_ip.take(host, now):
                self.bans.offense(host, RATE_OFFENSE, now, not stream)
                return RATE_PER_IP
            if not self.per_net.take(net_key(host), now):
                self.bans.offense(host, RATE_OFFENSE, now, not stream)
                return RATE_PER_NET
            if self._sig is not None and self._scanner(data):
                self.bans.offense(host, SCANNER_OFFENSE, now, spoofable=not stream)
                return SCANNER
            if data.startswith(b"OPTIONS "):
                return UNTRUSTED_OPTIONS
            if self.closed and not self.has_peer(host):
                return UNKNOWN_SOURCE_SCREENED
            return None
        if not self.per_gw.take(host, now):
            return RATE_PER_GATEWAY
        if self._sig is not None and self.apply_to_gateways and self._scanner(data):
            self.bans.offense(host, SCANNER_OFFENSE, now, spoofable=not stream)
            return SCANNER
        return None

    def connection(self, host: str, port: int, now: float) -> DropReason | None:
        """A new TCP or TLS connection spends one token of its source's rate,
        as a datagram does: opening connections fast (each TLS handshake
        costs sbc a key exchange) is a flood like any other. A drop reason,
        or None when the connection may be accepted."""
        gateways = self.gateways
        return self._rate(host, gateways is None or gateways.by_source(host, port) is not None,
                          now, False)

    def _rate(self, host: str, is_gateway: bool, now: float, spoofable: bool) -> DropReason | None:
        """Step 2: one token of the source's buckets; a rate-limit hit of a
        source that is no gateway is an offense (one a proved source is
        spared when it came in a datagram: see BanTable.offense)."""
        if is_gateway:
            if not self.per_gw.take(host, now):
                return RATE_PER_GATEWAY
            return None
        if not self.per_ip.take(host, now):
            self.bans.offense(host, RATE_OFFENSE, now, spoofable)
            return RATE_PER_IP
        if not self.per_net.take(net_key(host), now):
            self.bans.offense(host, RATE_OFFENSE, now, spoofable)
            return RATE_PER_NET
        return None

    def _scanner(self, data: bytes) -> bool:
        end = data.find(b"\r\n\r\n")
        low = (data if end < 0 else data[:end]).lower()
        sig = self._sig
        assert sig is not None
        search = sig.search
        find = low.find
        size = len(low)
        # The whole User-Agent value, searched in place (no slice per header).
        i = find(b"\nuser-agent:")
        if i >= 0:
            i += 12
            j = find(b"\r", i)
            if j < 0:
                j = size
            if i < j and search(low, i, j) is not None:
                return True
        # From and To (and their compact forms, when the message has any):
        # the display name only, up to a '<'.
        for marker in _NAMES if _COMPACT.search(low) is None else _NAMES_AND_COMPACT:
            i = find(marker)
            if i >= 0:
                i += len(marker)
                j = find(b"\r", i)
                if j < 0:
                    j = size
                k = find(b"<", i, j)
                if k >= 0:
                    j = k
                if i < j and search(low, i, j) is not None:
                    return True
        return False

    def expire(self, now: float, budget: int = EXPIRE_BUDGET) -> None:
        """Forget buckets that have refilled (a full bucket equals an absent one),
        looking at no more than `budget` of the oldest entries per table, so a
        sweep never stalls the loop; the size cap does the rest."""
        for buckets in (self.per_ip, self.per_net, self.per_gw):
            buckets.expire(now, budget)
