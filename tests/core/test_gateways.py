"""Gateway identification by source address: exact pairs, longest prefix,
IPv6, IPv4-mapped sources, and a large table checked against a linear scan."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence

import pytest

from sbc.core.identify.gateways import PURE, GatewayTable, address_int
from sbc.io.addresses import FAST

Entry = tuple[str, Sequence[str], Sequence[tuple[str, int]]]


def table(*entries: Entry) -> GatewayTable:
    return GatewayTable(entries)


# --------------------------------------------------------------------------
# Precedence


def test_exact_pair_beats_any_network() -> None:
    t = table(
        ("wide", ["10.0.0.0/8"], []),
        ("host", ["10.0.0.1"], []),
        ("pbx", [], [("10.0.0.1", 5060)]),
    )
    assert t.by_source("10.0.0.1", 5060) == "pbx"
    assert t.by_source("10.0.0.1", 5061) == "host"
    assert t.by_source("10.0.0.2", 5060) == "wide"


def test_longest_prefix_wins_whatever_the_order_given() -> None:
    entries: list[Entry] = [
        ("p8", ["10.0.0.0/8"], []),
        ("p24", ["10.1.2.0/24"], []),
        ("p16", ["10.1.0.0/16"], []),
        ("p32", ["10.1.2.3"], []),
        ("p0", ["0.0.0.0/0"], []),
    ]
    for order in (entries, entries[::-1]):
        t = GatewayTable(order)
        assert t.by_source("10.1.2.3", 1) == "p32"
        assert t.by_source("10.1.2.4", 1) == "p24"
        assert t.by_source("10.1.3.4", 1) == "p16"
        assert t.by_source("10.2.3.4", 1) == "p8"
        assert t.by_source("192.0.2.1", 1) == "p0"


def test_no_match() -> None:
    t = table(("a", ["10.0.0.0/8"], [("192.0.2.1", 5060)]))
    assert t.by_source("11.0.0.1", 5060) is None
    assert t.by_source("192.0.2.1", 5061) is None
    assert t.by_source("::1", 5060) is None
    assert table().by_source("10.0.0.1", 5060) is None


def test_one_gateway_many_entries() -> None:
    t = table(("a", ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"], [("198.51.100.1", 5060)]))
    for host in ("10.9.9.9", "192.0.2.7", "2001:db8:1::1", "198.51.100.1"):
        assert t.by_source(host, 5060) == "a"


# --------------------------------------------------------------------------
# IPv6 and IPv4-mapped


def test_ipv6_longest_prefix_and_exact() -> None:
    t = table(
        ("v6_32", ["2001:db8::/32"], []),
        ("v6_64", ["2001:db8:0:1::/64"], []),
        ("v6_host", ["2001:db8:0:1::5"], []),
        ("v6_pair", [], [("2001:db8:0:1::5", 5062)]),
    )
    assert t.by_source("2001:db8:0:1::5", 5062) == "v6_pair"
    assert t.by_source("2001:db8:0:1::5", 5060) == "v6_host"
    assert t.by_source("2001:db8:0:1::6", 5060) == "v6_64"
    assert t.by_source("2001:db8:ffff::1", 5060) == "v6_32"
    assert t.by_source("2001:db9::1", 5060) is None
    # Any spelling of the address.
    assert t.by_source("2001:DB8:0:1:0:0:0:5", 5062) == "v6_pair"


def test_ipv4_and_ipv6_are_separate() -> None:
    # ::a00:1 is 10.0.0.1 as an integer, but not the same address.
    t = table(("v4", ["10.0.0.0/8"], [("10.0.0.1", 5060)]))
    assert t.by_source("::a00:1", 5060) is None
    assert t.by_source("::a00:2", 5060) is None
    t = table(("v6", ["::/0"], []))
    assert t.by_source("10.0.0.1", 5060) is None
    assert t.by_source("2001:db8::1", 5060) == "v6"


def test_ipv4_mapped_source_is_looked_up_as_ipv4() -> None:
    t = table(
        ("net", ["192.0.2.0/24"], []),
        ("pair", [], [("192.0.2.1", 5060)]),
    )
    assert t.by_source("::ffff:192.0.2.1", 5060) == "pair"
    assert t.by_source("::ffff:c000:201", 5060) == "pair"
    assert t.by_source("::FFFF:192.0.2.99", 5060) == "net"
    assert t.by_source("::ffff:198.51.100.1", 5060) is None


def test_ipv4_mapped_entries_are_stored_as_ipv4() -> None:
    t = table(
        ("net", ["::ffff:192.0.2.0/120"], []),
        ("pair", [], [("::ffff:198.51.100.1", 5060)]),
    )
    assert t.by_source("192.0.2.77", 1) == "net"
    assert t.by_source("::ffff:192.0.2.77", 1) == "net"
    assert t.by_source("198.51.100.1", 5060) == "pair"


# --------------------------------------------------------------------------
# Bad input never raises


@pytest.mark.parametrize(
    "host",
    [
        "",
        "example.com",
        "1.2.3",
        "1.2.3.4.5",
        "256.0.0.1",
        " 10.0.0.1",
        "10.0.0.1 ",
        "10.0.0.1\x00",
        "[::1]",
        "::g",
        "1:2:3:4:5:6:7:8:9",
        "::1\x00",
        "fe80::1%eth0",
        "10.0.0.1:5060",
        "\udcff",
        "é.1.1.1",
        None,
        10,
        b"10.0.0.1",
    ],
)
def test_bad_host_is_none(host: object) -> None:
    t = table(("all4", ["0.0.0.0/0"], []), ("all6", ["::/0"], []))
    assert t.by_source(host, 5060) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("port", [0, -1, 65536, 1 << 80, "5060", None, 5060.5])
def test_bad_port_is_none(port: object) -> None:
    t = table(("all4", ["0.0.0.0/0"], [("10.0.0.1", 5060)]), ("all6", ["::/0"], []))
    assert t.by_source("10.0.0.1", port) is None  # type: ignore[arg-type]
    assert t.by_source("::1", port) is None  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Building


def test_len_counts_gateways() -> None:
    assert len(table()) == 0
    t = table(("a", ["10.0.0.0/8", "10.1.0.0/16"], [("10.0.0.1", 1)]), ("b", [], []))
    assert len(t) == 2


@pytest.mark.parametrize(
    "entries",
    [
        [("a", ["10.0.0.1/8"], [])],  # host bits set
        [("a", ["pbx.example.com"], [])],
        [("a", [], [("pbx.example.com", 5060)])],
        [("a", [], [("10.0.0.1", 0)])],
        [("a", [], [("10.0.0.1", 65536)])],
        [("a", ["10.0.0.0/8"], []), ("b", ["10.0.0.0/8"], [])],
        [("a", ["192.0.2.1"], []), ("b", ["::ffff:192.0.2.1"], [])],
        [("a", [], [("::1", 5060)]), ("b", [], [("0::1", 5060)])],
    ],
)
def test_bad_entries_are_refused(entries: list[Entry]) -> None:
    with pytest.raises(ValueError):
        GatewayTable(entries)


def test_repeated_entry_of_one_gateway_is_harmless() -> None:
    t = table(("a", ["10.0.0.0/8", "10.0.0.0/8"], [("10.0.0.1", 5060), ("10.0.0.1", 5060)]))
    assert t.by_source("10.0.0.1", 5060) == "a"


# --------------------------------------------------------------------------
# A large table against a linear scan

V4_LENGTHS = (8, 12, 16, 20, 22, 24, 26, 28, 30, 32)
V6_LENGTHS = (32, 40, 48, 56, 64, 96, 112, 128)


def _random_network(rng: random.Random) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    # Drawn from a small space, so that networks nest and overlap a lot.
    if rng.random() < 0.7:
        length = rng.choice(V4_LENGTHS)
        address = (10 << 24) | rng.getrandbits(12) << 12 | rng.getrandbits(12)
        return ipaddress.IPv4Network((address, length), strict=False)
    length = rng.choice(V6_LENGTHS)
    address = (0x2001_0DB8 << 96) | rng.getrandbits(24) << 72 | rng.getrandbits(16)
    return ipaddress.IPv6Network((address, length), strict=False)


def _big_table(rng: random.Random, gateways: int = 10_000) -> list[Entry]:
    taken: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
    pairs_taken: set[tuple[str, int]] = set()
    entries: list[Entry] = []
    for i in range(gateways):
        nets: list[str] = []
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            net = _random_network(rng)
            if net not in taken:
                taken.add(net)
                nets.append(str(net))
        pairs: list[tuple[str, int]] = []
        if rng.random() < 0.3 or not nets:
            net = _random_network(rng)
            host = net.network_address + rng.randrange(min(net.num_addresses, 16))
            pair = (str(host), 5060 + i % 3)
            if pair not in pairs_taken:
                pairs_taken.add(pair)
                pairs.append(pair)
        entries.append((f"gw{i}", nets, pairs))
    return entries


def _linear_scan(
    networks: list[tuple[int, int, int, int, str]],
    pairs: dict[tuple[int, int, int], str],
    host: str,
    port: int,
) -> str | None:
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    value = int(address)
    name = pairs.get((address.version, value, port))
    if name is not None:
        return name
    best: tuple[int, str] | None = None
    for version, net, mask, length, owner in networks:
        if version == address.version and value & mask == net and (
            best is None or length > best[0]
        ):
            best = (length, owner)
    return best[1] if best else None


def test_ten_thousand_gateways_match_a_linear_scan() -> None:
    rng = random.Random(20240611)
    entries = _big_table(rng)
    t = GatewayTable(entries)
    assert len(t) == 10_000

    networks: list[tuple[int, int, int, int, str]] = []
    pairs: dict[tuple[int, int, int], str] = {}
    for name, nets, exact in entries:
        for text in nets:
            net = ipaddress.ip_network(text)
            networks.append(
                (net.version, int(net.network_address), int(net.netmask), net.prefixlen, name)
            )
        for host, port in exact:
            address = ipaddress.ip_address(host)
            pairs[(address.version, int(address), port)] = name
    lengths = {n[3] for n in networks}
    assert len(networks) > 10_000 and len(lengths) >= 15  # mixed prefixes

    probes: list[tuple[str, int]] = []
    for name, nets, exact in rng.sample(entries, 300):
        for text in nets:  # an address inside each network: nested ones compete
            net = ipaddress.ip_network(text)
            probes.append((str(net.network_address + rng.randrange(net.num_addresses)), 5060))
        probes.extend(exact)
        probes.extend((host, port + 1) for host, port in exact)  # same host, other port
    for _ in range(100):  # anywhere in the drawn space, mostly misses
        net = _random_network(rng)
        probes.append((str(net.network_address), 5061))

    matched = 0
    for host, port in probes:
        expected = _linear_scan(networks, pairs, host, port)
        assert t.by_source(host, port) == expected, (host, port)
        if ":" not in host:
            assert t.by_source(f"::ffff:{host}", port) == expected, (host, port)
        matched += expected is not None
    assert matched > len(probes) // 2


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "255.255.255.255", "::1", "2001:db8::7",
                                  "::ffff:192.0.2.1", "1.2.3", "1.2.3.4.5", "256.0.0.1", "x", "",
                                  "1.2.3.4\x00", "::g"])
def test_the_pure_and_the_fast_address_parser_agree(host: str) -> None:
    def read(reader: object) -> int | None:
        try:
            return address_int(reader, host)  # type: ignore[arg-type]
        except (OSError, ValueError):
            return None

    assert read(PURE) == read(FAST)
    t = GatewayTable([("a", ["0.0.0.0/0", "::/0"], [])], FAST)
    assert t.by_source(host, 5060) == GatewayTable([("a", ["0.0.0.0/0", "::/0"], [])]).by_source(host, 5060)
