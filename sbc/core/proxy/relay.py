"""The hop between two sbc nodes: a request VOS3000 sent to this node for a
phone registered at another node goes on to that node's private address,
statelessly (RFC 3261 §16.11), and its answers come back the same way.

Which node holds a phone, and which addresses are live nodes, is the
cluster's business (`Nodes`, filled from Redis by sbc.cluster); the core only
asks, never waits. The relay is one hop and goes only to a live node's
private address:
- this node relays an INVITE, CANCEL or ACK out of any local state by the
  Request-URI's account, and an in-dialog request it holds no dialog for by
  its top Route entry (the Record-Route the owning node wrote), never a
  request that came from a node;
- it adds its own Via, whose branch is signed for the node it went to, the
  VOS3000 address the answer must reach and the egress socket it came in on
  (`relay_branch`): a response is relayed back only when its branch checks
  out for the address it came from (`relayed_to`), so a forged or misdirected
  answer is dropped, with no table;
- the node that holds the phone takes the request as if VOS3000 had sent it
  (`backend_behind`: the VOS3000 in the Via under the relaying node's, which
  must be a configured one), and its Record-Route makes VOS3000 send the rest
  of the dialog straight to it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol

from ...sip import Message, SipParseError, header_value, name_addr_uri, parse_uri, parse_via, \
    serialize, split_values
from ..verdict import PRIVATE, Addr, Forward, Source
from .routing import is_route_line
from .scan import Scan

__all__ = ["RELAY_BRANCH", "Nodes", "backend_behind", "relay_branch", "relay_request",
           "relayed_to", "route_node"]

RELAY_BRANCH = b"z9hG4bKsbcrl"  # then the egress index (2 hex), base (16), MAC (16)
_LEN = len(RELAY_BRANCH) + 2 + 16 + 16


class Nodes(Protocol):
    """The other live nodes of the cluster, as the core asks about them."""

    def owner(self, aor: str, now: float) -> Addr | None:
        """The private address of the live node that holds a binding of `aor`."""
        ...

    def is_node(self, host: str, port: int, now: float) -> bool:
        """Whether (host, port) is a live node's private address."""
        ...


def relay_branch(secret: bytes, key: bytes, egress: int, node: Addr, origin: Addr) -> bytes:
    """Our branch for a request relayed to `node` for VOS3000 at `origin`,
    which came in on egress socket `egress`: the same for a retransmission
    and for the CANCEL and non-2xx ACK of an INVITE (derived from `key`)."""
    base = hashlib.md5(secret + key, usedforsecurity=False).hexdigest()[:16].encode()
    idx = b"%02x" % egress
    return RELAY_BRANCH + idx + base + _mac(secret, idx + base, node, origin)


def relayed_to(secret: bytes, branch: bytes, node: Addr, origin: Addr) -> int | None:
    """The egress index a relayed request came in on, when `branch` is one
    this node signed for `node` and `origin`; else None."""
    if len(branch) != _LEN or not branch.startswith(RELAY_BRANCH):
        return None
    signed = branch[len(RELAY_BRANCH) : len(RELAY_BRANCH) + 18]
    if not hmac.compare_digest(branch[len(RELAY_BRANCH) + 18 :], _mac(secret, signed, node, origin)):
        return None
    try:
        return int(signed[:2], 16)
    except ValueError:
        return None


def _mac(secret: bytes, signed: bytes, node: Addr, origin: Addr) -> bytes:
    material = b"relay|%s|%s|%d|%s|%d" % (signed, node[0].encode(), node[1], origin[0].encode(),
                                          origin[1])
    return hashlib.blake2b(material, key=secret[:64], digest_size=8).hexdigest().encode()


def relay_request(msg: Message, src: Source, scan: Scan, branch: bytes, via_private: bytes,
                  node: Addr) -> Forward:
    """The request with our Via on top (VOS3000's stamped with received and
    rport below it), sent from the private socket to `node`. No Record-Route:
    this node is not in the dialog."""
    lines = scan.lines
    lines[0] = via_private + branch
    return Forward([(PRIVATE, node, serialize(msg.start, lines, msg.body, msg.has_content_length))])


def account_of(msg: Message) -> str | None:
    """The Request-URI's user: the address-of-record a call from VOS3000 is for."""
    try:
        user = parse_uri(msg.uri).user
    except SipParseError:
        return None
    return user.decode("utf-8", "replace") if user else None


def route_node(scan: Scan, nodes: Nodes, now: float) -> Addr | None:
    """The live node the top Route entry names (our own entries are gone by
    now: scan.strip_own_routes), or None."""
    line = next((ln for ln in scan.lines[1:] if is_route_line(ln)), None)
    if line is None:
        return None
    try:
        u = parse_uri(name_addr_uri(split_values(header_value(line))[0]))
    except (SipParseError, IndexError):
        return None
    addr = (u.host, u.port or 5060)
    return addr if nodes.is_node(addr[0], addr[1], now) else None


def backend_behind(msg: Message) -> Addr | None:
    """Where the Via under the relaying node's says the request came from
    (its received/rport, stamped by that node), or None when there is none."""
    seen = 0
    try:
        for name, raw in msg.headers:
            if name != "via":
                continue
            for value in split_values(header_value(raw)):
                seen += 1
                if seen == 2:
                    return parse_via(value).reply_address()
    except SipParseError:
        return None
    return None
