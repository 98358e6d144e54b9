"""Proxy routing helpers (RFC 3261 §16.6, §16.11, RFC 3581): our Via branch,
received/rport stamping, recognising and removing our own Route entries, and
removing a customer's preloaded route set from a request that starts a dialog.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable

from ...sip import SipParseError, header_value, name_addr_uri, parse_uri, split_values

MAGIC = b"z9hG4bK"


def _NEVER(_raw: bytes) -> None:  # noqa: N802  (no markers: nothing names us)
    return None


def derive_branch(secret: bytes, key: bytes) -> bytes:
    """Our branch for a request, as a function of what identifies its
    transaction upstream (RFC 3261 §16.11): a retransmission, and the CANCEL
    or non-2xx ACK of an INVITE, all map to the same branch."""
    return MAGIC + hashlib.md5(secret + key, usedforsecurity=False).hexdigest()[:24].encode()


def signed_branch(secret: bytes, key: bytes, peer: tuple[str, int], origin: tuple[str, int]) -> bytes:
    """Our branch for a request sent to a public-side `peer` on behalf of
    `origin` (the VOS3000 address its answer must go back to): derived from
    `key` like `derive_branch`, with a MAC over where it went and whom it is
    for. A response is ours only if its branch checks out for the address it
    came from (`branch_is_for`): no table, and no forged answer from anyone
    else, nor one that points its answer at another address, gets through."""
    base = hashlib.md5(secret + key, usedforsecurity=False).hexdigest()[:16].encode()
    return MAGIC + base + _mac(secret, base, peer, origin)


def branch_is_for(secret: bytes, branch: bytes, peer: tuple[str, int],
                  origin: tuple[str, int]) -> bool:
    if len(branch) != len(MAGIC) + 32 or not branch.startswith(MAGIC):
        return False
    base = branch[len(MAGIC) : len(MAGIC) + 16]
    return hmac.compare_digest(branch[len(MAGIC) + 16 :], _mac(secret, base, peer, origin))


def _mac(secret: bytes, base: bytes, peer: tuple[str, int], origin: tuple[str, int]) -> bytes:
    material = b"%s|%s|%d|%s|%d" % (base, peer[0].encode(), peer[1], origin[0].encode(), origin[1])
    return hashlib.blake2b(material, key=secret[:64], digest_size=8).hexdigest().encode()


def stamp_via(value: bytes, host: str, port: int) -> bytes:
    """The top Via value with received and rport set to the packet's source
    (RFC 3261 §18.2.1, RFC 3581 §4). Responses then go back where the request
    came from, whatever the Via claims."""
    parts = value.split(b";")
    keep = [p for p in parts[1:] if p.split(b"=", 1)[0].strip().lower() not in (b"received", b"rport")]
    keep.append(b"received=" + host.encode())
    keep.append(b"rport=%d" % port)
    return parts[0] + b";" + b";".join(keep)


class OwnAddresses:
    """The (host, port) pairs that are sbc itself, for Route and loop checks."""

    __slots__ = ("_pairs", "exact", "markers", "may_contain")

    def __init__(self, pairs: list[tuple[str, int]]) -> None:
        self._pairs = {(h.lower(), p) for h, p in pairs}
        # Cheap byte markers: a Via or Route line that contains none of them
        # cannot name us, so it needs no parse.
        self.markers = tuple(
            (f"[{h}]:{p}" if ":" in h else f"{h}:{p}").encode() for h, p in pairs
        )

        # The Route values we write ourselves (Record-Route echoed back), known
        # without a parse; anything else that may be ours is parsed.
        self.exact: set[bytes] = set()
        # `may_contain(raw)`: whether any marker is in `raw` (one search in C;
        # it runs for every Via and Route line).
        self.may_contain: Callable[[bytes], object] = (
            re.compile(b"|".join(re.escape(m) for m in self.markers)).search if self.markers
            else _NEVER)

    def is_own(self, host: str, port: int | None) -> bool:
        return (host.lower(), port or 5060) in self._pairs

    def is_own_uri(self, uri: bytes) -> bool:
        if uri in self.exact:
            return True
        try:
            u = parse_uri(uri)
        except SipParseError:
            return False
        return self.is_own(u.host, u.port)


def strip_own_routes(lines: list[bytes], route_idx: list[int], own: OwnAddresses) -> set[int]:
    """Remove our own entries from the top of the route set (loose routing,
    RFC 3261 §16.4). `lines` are raw header lines: a Route line partly ours
    is rewritten in place with the rest of its values untouched; the indexes
    of the lines that are all ours are returned, for the caller to leave out."""
    gone: set[int] = set()
    for i in route_idx:
        values = split_values(header_value(lines[i]))
        n = 0
        while n < len(values) and own.is_own_uri(name_addr_uri(values[n])):
            n += 1
        if n == len(values):
            gone.add(i)
            continue
        if n:
            lines[i] = b"Route: " + b", ".join(values[n:])
        break
    return gone


def is_route_line(raw: bytes) -> bool:
    """Whether a raw header line is a Route header (any case, space before the colon)."""
    colon = raw.find(b":")
    return colon > 0 and raw[:colon].strip().lower() == b"route"


def without_preloaded_routes(lines: list[bytes]) -> tuple[list[bytes], int]:
    """The lines of a request from the public side that starts a dialog (no
    To-tag) without any Route header, and how many there were.

    Our own entries are popped before this (loose routing, RFC 3261 §16.4,
    `strip_own_routes`); what is left is a route set the customer preloaded
    (§8.1.2). sbc is the edge of VOS3000's domain: where a new request goes
    is VOS3000's decision, by its own routing tables, never the sender's. A
    Route naming another host would make VOS3000, or whatever it hands the
    request to, send the call there -- around its routing and rating and
    around sbc's destination checks -- so it goes no further than sbc.
    In-dialog requests keep their route set: it is the one the dialog's
    Record-Route built (§12.2.1.1)."""
    kept = [ln for ln in lines if not is_route_line(ln)]
    return kept, len(lines) - len(kept)
