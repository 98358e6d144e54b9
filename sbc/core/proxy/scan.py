"""One pass over a request's headers, shared by every way a request leaves:
the lines to send on (slot 0 kept for our Via), Max-Forwards decremented
(RFC 3261 §16.6 step 3), credentials removed (they never leave sbc), our own
Route entries removed (§16.4), the raw lines a locally built response needs,
and a loop check (§16.3 step 4)."""

from __future__ import annotations

from ...sip import Message, ParseReason, SipParseError, header_value, parse_via, split_values
from .routing import OwnAddresses, strip_own_routes

_CREDENTIALS = frozenset(("authorization", "proxy-authorization"))


class Scan:
    __slots__ = (
        "call_id_line",
        "cseq_line",
        "from_line",
        "lines",
        "loop",
        "mf_zero",
        "route_idx",
        "to_line",
        "vias",
    )

    def __init__(self) -> None:
        self.lines: list[bytes] = [b""]
        self.vias: list[bytes] = []
        self.from_line = b""
        self.to_line = b""
        self.call_id_line = b""
        self.cseq_line = b""
        self.route_idx: list[int] = []
        self.mf_zero = False
        self.loop = False


def scan_request(msg: Message, vi: int, via_line: bytes, own: OwnAddresses) -> Scan:
    """`vi` is the index of the top Via header line, `via_line` its stamped replacement."""
    sc = Scan()
    lines = sc.lines
    mf_seen = False
    for i, (name, raw) in enumerate(msg.headers):
        if name == "via":
            if own.may_contain(raw) and names_us(raw, own):
                sc.loop = True
            if i == vi:
                raw = via_line
            sc.vias.append(raw)
        elif name == "route":
            sc.route_idx.append(len(lines))
        elif name == "max-forwards" and not mf_seen:
            mf_seen = True
            value = header_value(raw)
            # Leading zeros are allowed: "0068" is 68 (RFC 4475 §3.1.1.1).
            if not value.isdigit() or len(value.lstrip(b"0")) > 3:
                raise SipParseError(ParseReason.BAD_MAX_FORWARDS)
            hops = int(value)
            if hops <= 0:
                sc.mf_zero = True
                hops = 1
            raw = b"Max-Forwards: %d" % (hops - 1)
        elif name == "from":
            sc.from_line = raw
        elif name == "to":
            sc.to_line = raw
        elif name == "call-id":
            sc.call_id_line = raw
        elif name == "cseq":
            sc.cseq_line = raw
        elif name in _CREDENTIALS:
            continue
        lines.append(raw)
    if not mf_seen:
        lines.append(b"Max-Forwards: 70")
    if sc.route_idx and any(own.may_contain(lines[i]) for i in sc.route_idx):
        gone = strip_own_routes(lines, sc.route_idx, own)
        if gone:
            sc.lines = [ln for i, ln in enumerate(lines) if i not in gone]
    return sc


def names_us(via_raw: bytes, own: OwnAddresses) -> bool:
    for value in split_values(header_value(via_raw)):
        v = parse_via(value)
        if own.is_own(v.host, v.port):
            return True
    return False
