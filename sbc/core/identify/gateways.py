"""Which gateway a request comes from, by its source address alone.

`GatewayTable.by_source` runs for every request from the public side, scanners
and floods included, so its cost does not grow with the number of gateways:

1. an exact (address, port) from a gateway's `ip_port` list: one dict lookup;
2. else the longest `ip` prefix that contains the address: one dict per prefix
   length in use, keyed by the address masked to that length, tried from the
   longest length down -- at most 33 (IPv4) or 129 (IPv6) lookups, in practice
   the one to three lengths a configuration uses.

Addresses are integers. The pure default reads them with `ipaddress`; the
I/O shell passes `socket.inet_pton` and its family numbers
(`sbc.io.addresses.FAST`, ten times faster, a C call with no Python frame),
since the core itself touches no socket module.  A source written as an IPv4-mapped IPv6
address (``::ffff:192.0.2.1``, what a dual-stack socket reports) is looked up
as the IPv4 address; the configuration stores such entries as IPv4 too.

Digest accounts identify gateways by credentials, not by source; they are the
business of `sbc.core.identify.auth`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple
from dataclasses import dataclass
__all__ = ["PURE", "AddressReader", "GatewayInfo", "GatewayTable", "address_int", "pure_pton"]



def pure_pton(family: int, host: str) -> bytes:
    """`socket.inet_pton` in pure Python, families 4 and 6: the packed address,
    ValueError when `host` is not one of that family (a scoped IPv6 address
    included, as inet_pton reads none)."""
    if "%" in host:
        raise ValueError(host)
    address = ipaddress.ip_address(host)
    if address.version != family:
        raise ValueError(host)
    return address.packed

_from_bytes = int.from_bytes  # big-endian by default
_MAPPED_PREFIX = 0xFFFF  # ::ffff:0:0/96, seen from bit 32 up


class AddressReader(NamedTuple):
    """How source addresses are read: an inet_pton and its two families."""

    pton: Callable[[int, str], bytes]
    inet: int
    inet6: int


PURE = AddressReader(pure_pton, 4, 6)


def address_int(reader: AddressReader, host: str) -> int:
    """`host` as an integer, read by `reader`; ValueError or OSError when it is
    no IPv4 or IPv6 address."""
    return int.from_bytes(reader.pton(reader.inet6 if ":" in host else reader.inet, host), "big")


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    """What the engine needs to know about a gateway once it is identified."""

    name: str
    egress_index: int  # 0: the shared `private` socket; 1..: own egresses, config order
    options: str  # "answer": sbc answers OPTIONS itself; "pass": relayed to VOS3000


_Prefixes = list[tuple[int, dict[int, str]]]  # (mask, {masked address: name}), longest first


class GatewayTable:
    """Source address → gateway name; built once per configuration, read-only."""

    __slots__ = ("_af4", "_af6", "_count", "_exact4", "_exact6", "_nets4", "_nets6", "_pton")

    def __init__(
        self, entries: Iterable[tuple[str, Sequence[str], Sequence[tuple[str, int]]]],
        reader: AddressReader = PURE,
    ) -> None:
        """`entries`: (name, IP/CIDR strings, exact (host, port) pairs) per gateway.

        Raises ValueError for an entry that is not an address or network (or has
        host bits set), a port out of range, or an address claimed by two
        gateways -- the configuration refuses all of these earlier, with lines.
        """
        names: set[str] = set()
        exact4: dict[int, str] = {}
        exact6: dict[int, str] = {}
        by_len4: dict[int, dict[int, str]] = {}
        by_len6: dict[int, dict[int, str]] = {}
        for name, networks, pairs in entries:
            names.add(name)
            for text in networks:
                net = _network(text)
                if net.version == 4:
                    table = by_len4.setdefault(net.prefixlen, {})
                else:
                    table = by_len6.setdefault(net.prefixlen, {})
                _claim(table, int(net.network_address), name, text)
            for host, port in pairs:
                if not 0 < port <= 0xFFFF:
                    raise ValueError(f"gateway {name!r}: port {port} out of range")
                version, address = _address(host)
                _claim(exact4 if version == 4 else exact6, address << 16 | port, name, host)
        self._pton, self._af4, self._af6 = reader
        self._count = len(names)
        self._exact4 = exact4
        self._exact6 = exact6
        self._nets4 = _ordered(by_len4, 32)
        self._nets6 = _ordered(by_len6, 128)

    def by_source(self, host: object, port: object) -> str | None:
        """The gateway `host`:`port` belongs to, or None (also for anything that
        is not an IP address and a port 1..65535).  Never raises: the
        arguments are typed `object` and checked here, so a compiled build
        keeps the promise too."""
        if not isinstance(host, str) or not isinstance(port, int):
            return None
        try:
            if ":" in host:
                address = _from_bytes(self._pton(self._af6, host))
                if address >> 32 == _MAPPED_PREFIX:
                    address &= 0xFFFF_FFFF
                    exact, nets = self._exact4, self._nets4
                else:
                    exact, nets = self._exact6, self._nets6
            else:
                address = _from_bytes(self._pton(self._af4, host))
                exact, nets = self._exact4, self._nets4
            if not 0 < port <= 0xFFFF:
                return None
            name = exact.get(address << 16 | port)
        except (OSError, ValueError, TypeError):  # not an address; NUL; not a str / int
            return None
        if name is not None:
            return name
        for mask, table in nets:
            name = table.get(address & mask)
            if name is not None:
                return name
        return None

    def __len__(self) -> int:
        """Gateways given, whether or not they have any address."""
        return self._count


# --------------------------------------------------------------------------
# Building


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    net = ipaddress.ip_network(text, strict=True)
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
        mapped = net.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((int(mapped), net.prefixlen - 96))
    return net


def _address(host: str) -> tuple[int, int]:
    """(IP version, address as an integer), IPv4-mapped IPv6 as IPv4."""
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return 4, int(address.ipv4_mapped)
    return address.version, int(address)


def _claim(table: dict[int, str], key: int, name: str, text: str) -> None:
    owner = table.setdefault(key, name)
    if owner != name:
        raise ValueError(f"{text} is given for both gateway {owner!r} and gateway {name!r}")


def _ordered(by_len: dict[int, dict[int, str]], bits: int) -> _Prefixes:
    full = (1 << bits) - 1
    return [
        (full ^ ((1 << (bits - length)) - 1), by_len[length])
        for length in sorted(by_len, reverse=True)
    ]
