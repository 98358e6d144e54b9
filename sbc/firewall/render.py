"""The kernel layer in front of the public SIP port, rendered from the config.

`render(cfg, fmt)` turns a configuration into a complete ruleset text: an
nftables file for `nft -f`, or iptables-restore input (IPv4, or IPv6 for
ip6tables-restore).  It is pure -- no clock, no I/O -- so the same
configuration always gives the same text, and tests compare it byte for byte.

Only packets to the SIP port(s) are looked at, and the ruleset only ever
drops; everything else is left to the host's own firewall.  For those packets,
cheapest first, the same order the sbc screen applies in user space
(`sbc.core.screen.screen`):

1. gateways (their addresses and networks, and exact address+port pairs): let
   through untouched, before anything else;
2. banned sources (`banned4` / `banned6`, kept in step with the sbc's ban
   table by `NftBanSet`): dropped;
3. OPTIONS from anyone else (UDP; the fixed "OPTIONS " prefix of the
   payload): dropped;
4. scanner signatures (iptables only: nftables has no string match);
5. per source rates, per address and per /24 (IPv4) or /64 (IPv6), at
   KERNEL_RATE_FACTOR times the config's screen.rate_per_ip / rate_per_net:
   the kernel only cuts what is far over, so sbc still sees a source exceed
   its own (lower) limit, counts the offense and bans it.

With nftables there are two more pieces. The sets `proved4` / `proved6` hold
the sources that proved they are at their address (a live registration, a
confirmed dialog), kept in step by sbc; when nothing could admit an unknown
source (no digest accounts, unknown sources dropped), everyone else who is
no gateway is dropped before the meters (`unknown_source_screened`). And
with `lanes.trusted_port`, gateways and proved sources are steered to the
trusted port (sbc.firewall.steer).
"""

from __future__ import annotations

KERNEL_RATE_FACTOR = 2

import ipaddress
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .steer import PROVED_SETS, steer_chain

__all__ = ["FORMATS", "FirewallSpec", "Limit", "render", "render_spec", "spec_from_config"]

FORMATS = ("nftables", "iptables", "ip6tables")

# Elements the kernel ban sets hold at most; an add beyond it fails (and is
# counted by NftBanSet) instead of growing kernel memory without bound.
BAN_SET_SIZE = 262_144

_OPTIONS = b"OPTIONS "  # RFC 3261 §7.1: Method SP Request-URI; methods are case-sensitive
_IPV4_UDP_PAYLOAD = 20 + 8  # iptables string offsets count from the IP header (no options)
_IPV6_UDP_PAYLOAD = 40 + 8  # ... (no extension headers)


@dataclass(frozen=True, slots=True)
class Limit:
    """A token bucket: `rate` packets per second, `burst` at once."""

    rate: float
    burst: int


@dataclass(frozen=True, slots=True)
class Gateway:
    name: str
    networks: tuple[str, ...] = ()
    pairs: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class FirewallSpec:
    """What the ruleset is made from: plain values taken from a `Config`."""

    table: str = "sbc"
    host: str = "0.0.0.0"
    port: int = 5060
    udp: bool = True
    tcp: bool = True
    tls_port: int | None = None  # the TLS listener (tcp), when public.transports has tls
    gateways: tuple[Gateway, ...] = ()
    signatures: tuple[str, ...] = ()
    per_ip: Limit = Limit(20.0, 40)
    per_net: Limit = Limit(200.0, 400)
    max_sources: int = 200_000
    bantime_s: float = 600.0
    trusted_port: int | None = None  # the trusted lane's port (udp), steered to by the kernel
    closed: bool = False  # nothing could admit an unknown source: drop it in the kernel
    max_proved: int = 65_536


def spec_from_config(cfg: Any) -> FirewallSpec:
    """The values of `cfg` (a `sbc.config.Config`) the kernel layer needs."""
    screen = cfg.screen
    return FirewallSpec(
        table=cfg.firewall.table,
        host=cfg.public.host,
        port=cfg.public.port,
        udp=cfg.public.udp,
        tcp=cfg.public.tcp,
        tls_port=cfg.public.tls_port if cfg.public.tls else None,
        gateways=tuple(
            Gateway(gw.name, tuple(gw.ip), tuple(gw.ip_port)) for gw in cfg.gateways
        ),
        signatures=tuple(screen.scanner_signatures),
        per_ip=Limit(KERNEL_RATE_FACTOR * float(screen.rate_per_ip.rate),
                     KERNEL_RATE_FACTOR * int(screen.rate_per_ip.burst)),
        per_net=Limit(KERNEL_RATE_FACTOR * float(screen.rate_per_net.rate),
                      KERNEL_RATE_FACTOR * int(screen.rate_per_net.burst)),
        max_sources=int(screen.max_sources),
        bantime_s=float(cfg.bans.bantime_s),
        trusted_port=cfg.lanes.trusted_port if cfg.public.udp else None,
        closed=(not any(gw.digest for gw in cfg.gateways)
                and cfg.auth.unknown_source == "drop"),
        max_proved=int(cfg.lanes.max_proved),
    )


def render(cfg: Any, fmt: str) -> str:
    """The ruleset for `cfg` in `fmt`: "nftables", "iptables" or "ip6tables"."""
    return render_spec(spec_from_config(cfg), fmt)


def render_spec(spec: FirewallSpec, fmt: str) -> str:
    if fmt == "nftables":
        lines = _nftables(spec)
    elif fmt == "iptables":
        lines = _iptables(spec, 4)
    elif fmt == "ip6tables":
        lines = _iptables(spec, 6)
    else:
        raise ValueError(f"unknown firewall format {fmt!r}; one of {', '.join(FORMATS)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Shared pieces


def _version(net: str) -> int:
    return ipaddress.ip_network(net, strict=False).version


def _networks(spec: FirewallSpec, v: int) -> list[tuple[str, str]]:
    return [(net, gw.name) for gw in spec.gateways for net in gw.networks if _version(net) == v]


def _pairs(spec: FirewallSpec, v: int) -> list[tuple[str, int, str]]:
    return [
        (host, port, gw.name)
        for gw in spec.gateways
        for host, port in gw.pairs
        if _version(host) == v
    ]


def _streams(spec: FirewallSpec) -> bool:
    """Whether the sbc accepts TCP connections (plain or TLS)."""
    return spec.tcp or spec.tls_port is not None


def _protocols(spec: FirewallSpec) -> list[str]:
    """The protocols SIP arrives over (gateway source ports are accepted for each)."""
    return [p for p, on in (("udp", spec.udp), ("tcp", _streams(spec))) if on]


def _listeners(spec: FirewallSpec) -> list[tuple[str, int]]:
    """(protocol, port) of every public listener: udp and tcp on port, TLS on tls_port."""
    out = [(p, spec.port) for p, on in (("udp", spec.udp), ("tcp", spec.tcp)) if on]
    if spec.tls_port is not None:
        out.append(("tcp", spec.tls_port))
    return out


def _per_unit(rate: float) -> tuple[int, str]:
    """`rate` per second as a whole number per second, minute, hour or day."""
    units = (("second", 1), ("minute", 60), ("hour", 3600), ("day", 86_400))
    for unit, seconds in units:
        value = rate * seconds
        if value >= 1 and abs(value - round(value)) <= 1e-9 * value:
            return round(value), unit
    for unit, seconds in units:  # no exact form: the finest unit that keeps 3 digits
        if rate * seconds >= 100:
            return round(rate * seconds), unit
    return max(1, round(rate * 86_400)), "day"


def _refill_s(limit: Limit) -> int:
    """Seconds a rate-meter entry is kept: at least until its bucket is full again."""
    return max(60, math.ceil(limit.burst / limit.rate))


def _pretty_rate(limit: Limit) -> str:
    return f"{limit.rate:g}/s burst {limit.burst}"


def _where(spec: FirewallSpec) -> str:
    host = f"[{spec.host}]" if ":" in spec.host else spec.host
    plain = [p for p, on in (("udp", spec.udp), ("tcp", spec.tcp)) if on]
    where = f"{host}:{spec.port} ({', '.join(plain)})" if plain else ""
    if spec.tls_port is not None:
        where += f"{', ' if where else ''}{host}:{spec.tls_port} (tls)"
    return where


def _header(spec: FirewallSpec) -> list[str]:
    return [
        f"# sbc kernel layer for the public SIP port {_where(spec)}.",
        "# Rendered by `sbc firewall render` from the sbc configuration: change the",
        "# configuration and render again rather than editing this file.",
        "#",
        "# Only packets to the SIP port are looked at, and nothing here accepts traffic the",
        "# host's own firewall would drop.  Order, for those packets:",
        "#   1. gateways (addresses, networks, address+port pairs): passed on untouched",
        "#   2. banned sources (kept in step with the sbc's ban table): dropped",
        "#   3. OPTIONS from anyone else (UDP): dropped",
        "#   4. scanner signatures (UDP; iptables only, see below): dropped",
        f"#   5. over screen.rate_per_ip ({_pretty_rate(spec.per_ip)}) per address, or over",
        f"#      screen.rate_per_net ({_pretty_rate(spec.per_net)}) per /24 or /64: dropped",
        "# Gateways are rate limited by the sbc itself (screen.rate_per_gateway), and",
        "# over TCP only connection attempts (SYN) count towards the rates: the sbc",
        "# applies its limits to each message of an established connection.",
        "# The sbc applies the same checks in user space; this layer makes a flood",
        "# cost the kernel, not the sbc's event loop.",
    ]


def _conntrack_advice(spec: FirewallSpec) -> list[str]:
    return [
        "#",
        "# Connection tracking.  Unless told otherwise the kernel creates a conntrack",
        "# entry for every UDP source address and port that sends to the SIP port,",
        "# before any rule of this file sees the packet (dropped packets included), and",
        "# keeps it 30 s (nf_conntrack_udp_timeout; 120 s once answered).  A flood from",
        "# many (forged) sources fills the table, and a full table drops new flows of",
        "# every service on the host (\"nf_conntrack: table full, dropping packet\").",
        "# Size it for the flood, about 300 bytes of kernel memory per entry:",
        "#   sysctl -w net.netfilter.nf_conntrack_max=1048576         # ~300 MB at most",
        "#   echo 262144 > /sys/module/nf_conntrack/parameters/hashsize  # max / 4",
        "#   sysctl -w net.netfilter.nf_conntrack_udp_timeout=10",
        "#   conntrack -C  (or /proc/sys/net/netfilter/nf_conntrack_count): entries in use",
        "# Keep the SIP helper (nf_conntrack_sip, the \"SIP ALG\") off the SIP port: it",
        "# rewrites SIP messages the sbc must see as sent.",
        "#",
        "# Or do not track SIP over UDP from non-gateways at all (the notrack rules",
        "# below, commented out).  Gain: a flood cannot fill the conntrack table and each",
        "# packet costs less.  Price: those packets are \"untracked\": a host firewall",
        "# that accepts input with `ct state established,related` and drops the rest",
        f"# must then accept udp dport {spec.port} explicitly; NAT and conntrack-based",
        "# rules (connlimit, ct counters) no longer apply to them; and the sbc's replies",
        "# to those sources must be untracked too (the output rule), or each would",
        "# create the entry the rule was meant to avoid.  Gateways stay tracked.",
    ]


# --------------------------------------------------------------------------
# nftables


def _nft_time(seconds: float) -> str:
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{max(1, round(seconds * 1000))}ms"


def _nft_limit(limit: Limit) -> str:
    n, unit = _per_unit(limit.rate)
    return f"limit rate over {n}/{unit} burst {limit.burst} packets"


def _nft_set(name: str, kind: str, flags: Iterable[str], extra: Iterable[str] = (),
             elements: Iterable[tuple[str, str]] = ()) -> list[str]:
    out = [f"\tset {name} {{", f"\t\ttype {kind}"]
    flags = list(flags)
    if flags:
        out.append(f"\t\tflags {', '.join(flags)}")
    out.extend(f"\t\t{line}" for line in extra)
    items = list(elements)
    if items:
        out.append("\t\telements = {")
        out.extend(f"\t\t\t{element},\t# {comment}" for element, comment in items)
        out.append("\t\t}")
    out.append("\t}")
    return out


def _nft_hook(spec: FirewallSpec) -> list[str]:
    address = ipaddress.ip_address(spec.host)
    if address.is_unspecified:
        # A socket on 0.0.0.0 gets IPv4 only; one on :: gets both families.
        prefix = "meta nfproto ipv4 " if address.version == 4 else ""
    else:
        prefix = f"{'ip' if address.version == 4 else 'ip6'} daddr {address} "
    listeners = _listeners(spec)
    if spec.trusted_port is not None:  # steered datagrams meet the same checks
        listeners.append(("udp", spec.trusted_port))
    return [f"\t\t{prefix}{proto} dport {port} jump sip" for proto, port in listeners]


def _nftables(spec: FirewallSpec) -> list[str]:
    t = spec.table
    meter_sets: list[str] = []
    for name, kind, limit in (
        ("rate_ip4", "ipv4_addr", spec.per_ip),
        ("rate_ip6", "ipv6_addr", spec.per_ip),
        ("rate_net4", "ipv4_addr", spec.per_net),
        ("rate_net6", "ipv6_addr", spec.per_net),
    ):
        meter_sets += _nft_set(
            name, kind, ("dynamic", "timeout"),
            (f"size {spec.max_sources}", f"timeout {_refill_s(limit)}s"),
        )
    out = _header(spec) + [
        "#",
        "# Scanner signatures (screen.scanner_signatures) are enforced by the sbc in user",
        "# space: nftables has no string search, only matches at fixed offsets, which",
        "# serve for the OPTIONS prefix but not for a User-Agent anywhere in a message.",
        "#",
        f"# Load (replaces table inet {t}, emptying its ban sets; the sbc adds its bans",
        "# again when it starts):   nft -f FILE          check only:   nft -c -f FILE",
    ] + _conntrack_advice(spec) + [
        "",
        f"table inet {t}",
        f"delete table inet {t}",
        "",
        f"table inet {t} {{",
    ]
    out += _nft_set("gateways4", "ipv4_addr", ("interval",), ("auto-merge",), _networks(spec, 4))
    out += _nft_set("gateways6", "ipv6_addr", ("interval",), ("auto-merge",), _networks(spec, 6))
    out += _nft_set("gateway_ports4", "ipv4_addr . inet_service", (), (),
                    ((f"{h} . {p}", n) for h, p, n in _pairs(spec, 4)))
    out += _nft_set("gateway_ports6", "ipv6_addr . inet_service", (), (),
                    ((f"{h} . {p}", n) for h, p, n in _pairs(spec, 6)))
    # No default timeout: each ban carries its own (bans.bantime_s grows with
    # bans.increment); an element added by hand without one stays until deleted.
    for name, kind in (("banned4", "ipv4_addr"), ("banned6", "ipv6_addr")):
        out += _nft_set(name, kind, ("timeout",), (f"size {BAN_SET_SIZE}",))
    # Proved sources, kept in step by sbc; each element times out by itself.
    for name, kind in PROVED_SETS:
        out += _nft_set(name, kind, ("timeout",), (f"size {spec.max_proved}",))
    out += meter_sets
    out += [
        "\tchain input {",
        "\t\ttype filter hook input priority filter - 5; policy accept;",
        *_nft_hook(spec),
        "\t}",
        "\tchain sip {",
        "\t\tip saddr @gateways4 accept",
        "\t\tip6 saddr @gateways6 accept",
        "\t\tip saddr . th sport @gateway_ports4 accept",
        "\t\tip6 saddr . th sport @gateway_ports6 accept",
        '\t\tip saddr @banned4 counter drop comment "banned"',
        '\t\tip6 saddr @banned6 counter drop comment "banned"',
        "\t\t# The first 8 bytes of the UDP payload are \"OPTIONS \"",
        (f"\t\tmeta l4proto udp @th,64,64 0x{_OPTIONS.hex()} counter drop "
         'comment "untrusted_options"'),
        *(["\t\ttcp flags & (syn | ack) != syn accept"] if _streams(spec) else []),
        *(_nft_closed() if spec.closed else []),
        (f"\t\tupdate @rate_ip4 {{ ip saddr {_nft_limit(spec.per_ip)} }} counter drop "
         'comment "rate_per_ip"'),
        (f"\t\tupdate @rate_ip6 {{ ip6 saddr {_nft_limit(spec.per_ip)} }} counter drop "
         'comment "rate_per_ip"'),
        (f"\t\tupdate @rate_net4 {{ ip saddr and 255.255.255.0 {_nft_limit(spec.per_net)} }} "
         'counter drop comment "rate_per_net"'),
        (f"\t\tupdate @rate_net6 {{ ip6 saddr and ffff:ffff:ffff:ffff:: "
         f'{_nft_limit(spec.per_net)} }} counter drop comment "rate_per_net"'),
        "\t}",
    ]
    if spec.udp and spec.trusted_port is not None:
        out += steer_chain(spec.host, spec.port, spec.trusted_port)
    if spec.udp:
        out += [
            "\t# Optional, see \"Connection tracking\" above: uncomment to stop tracking",
            "\t# SIP over UDP from and to non-gateways.",
            "\t# chain notrack_in {",
            "\t# \ttype filter hook prerouting priority raw; policy accept;",
            (f"\t# \tmeta nfproto ipv4 udp dport {spec.port} ip saddr != @gateways4 "
             "ip saddr . udp sport != @gateway_ports4 notrack"),
            (f"\t# \tmeta nfproto ipv6 udp dport {spec.port} ip6 saddr != @gateways6 "
             "ip6 saddr . udp sport != @gateway_ports6 notrack"),
            "\t# }",
            "\t# chain notrack_out {",
            "\t# \ttype filter hook output priority raw; policy accept;",
            (f"\t# \tmeta nfproto ipv4 udp sport {spec.port} ip daddr != @gateways4 "
             "ip daddr . udp dport != @gateway_ports4 notrack"),
            (f"\t# \tmeta nfproto ipv6 udp sport {spec.port} ip6 daddr != @gateways6 "
             "ip6 daddr . udp dport != @gateway_ports6 notrack"),
            "\t# }",
        ]
    out.append("}")
    return out


def _nft_closed() -> list[str]:
    """No digest accounts and unknown sources dropped: only gateways (accepted
    above) and proved sources (a dialog's peer) may go on."""
    return [
        "\t\t# Nothing could admit an unknown source (no digest accounts):",
        ("\t\tmeta nfproto ipv4 ip saddr != @proved4 counter drop "
         'comment "unknown_source_screened"'),
        ("\t\tmeta nfproto ipv6 ip6 saddr != @proved6 counter drop "
         'comment "unknown_source_screened"'),
    ]


# --------------------------------------------------------------------------
# iptables / ip6tables (iptables-restore format)

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789 ._-:/@+=,")


def _names(table: str) -> tuple[str, str, str, str]:
    """Chain (at most 28 characters), ipset (31) and hashlimit (15) names."""
    return (f"{table[:24]}_sip", f"{table[:23]}_banned", f"{table[:10]}_ip", f"{table[:10]}_net")


def _string_match(signature: str) -> str:
    if signature and set(signature) <= _PLAIN and signature == signature.strip():
        return f'--string "{signature}"'
    return f'--hex-string "|{signature.encode().hex()}|"'


def _hashlimit(limit: Limit, name: str, mask: int | None, max_sources: int) -> str:
    n, unit = _per_unit(limit.rate)
    out = (f"-m hashlimit --hashlimit-above {n}/{unit} --hashlimit-burst {limit.burst} "
           "--hashlimit-mode srcip")
    if mask is not None:
        out += f" --hashlimit-srcmask {mask}"
    return (f"{out} --hashlimit-name {name} --hashlimit-htable-max {max_sources} "
            f"--hashlimit-htable-expire {_refill_s(limit) * 1000}")


def _ipt_hook(spec: FirewallSpec, v: int, chain: str) -> list[str]:
    address = ipaddress.ip_address(spec.host)
    if address.is_unspecified:
        # 0.0.0.0 listens on IPv4 only, :: on both.
        if v == 6 and address.version == 4:
            return ["# public.host is 0.0.0.0: the sbc does not listen on IPv6."]
        dest = ""
    elif address.version != v:
        return [f"# public.host is {address}: the sbc does not listen on IPv{v}."]
    else:
        dest = f"-d {address}/{address.max_prefixlen} "
    return [f"-I INPUT {dest}-p {p} -m {p} --dport {port} -j {chain}"
            for p, port in _listeners(spec)]


def _iptables(spec: FirewallSpec, v: int) -> list[str]:
    chain, ipset, hl_ip, hl_net = _names(spec.table)
    ipset += str(v)
    family, tool = ("inet", "iptables") if v == 4 else ("inet6", "ip6tables")
    offset = _IPV4_UDP_PAYLOAD if v == 4 else _IPV6_UDP_PAYLOAD
    net_mask = 24 if v == 4 else 64
    other = "ip6tables" if v == 4 else "iptables"
    timeout = max(1, math.ceil(spec.bantime_s))
    out = _header(spec) + [
        "#",
        (f"# IPv{v} rules, for {tool}-restore; the IPv{10 - v} ones:"
         f"  sbc firewall render --format {other}"),
        "# First create the ban set (the sbc keeps the kernel ban set in step in",
        "# firewall.mode \"nftables\" only; with this file, fill it yourself or by a",
        "# ban hook: ipset add|del " + ipset + " ADDRESS [timeout SECONDS]):",
        (f"#   ipset create {ipset} hash:ip family {family} timeout {timeout} "
         f"maxelem {BAN_SET_SIZE} -exist"),
        f"# Then load:  {tool}-restore --noflush < FILE   (check: --test)",
        f"# --noflush keeps the host's other rules; {chain} is emptied and refilled on",
        "# each load, but the INPUT jumps are inserted again: delete the old ones first",
        f"# ({tool} -D INPUT ... -j {chain}) when reloading.",
        "#",
        "# Scanner signatures are matched anywhere in a UDP datagram (the sbc itself",
        "# looks only at User-Agent and From/To display names), case-insensitively: a",
        "# short signature can drop a legitimate caller's message that contains it.",
        "# Over TCP a message can be split across segments and a dropped segment",
        "# stalls the connection, so TCP is left to the sbc.",
    ] + _conntrack_advice(spec) + [
        "",
        "*filter",
        f":{chain} - [0:0]",
        *_ipt_hook(spec, v, chain),
    ]
    protocols = _protocols(spec)
    for net, name in _networks(spec, v):
        out.append(f'-A {chain} -s {_ipt_net(net)} -m comment --comment "{name}" -j RETURN')
    for host, port, name in _pairs(spec, v):
        for p in protocols:
            out.append(f"-A {chain} -s {_ipt_net(host)} -p {p} -m {p} --sport {port} "
                       f'-m comment --comment "{name}" -j RETURN')
    out.append(f"-A {chain} -m set --match-set {ipset} src -j DROP")
    if spec.udp:
        out.append(f"-A {chain} -p udp -m string --algo bm --from {offset} "
                   f'--to {offset + len(_OPTIONS)} --string "{_OPTIONS.decode()}" -j DROP')
        for signature in spec.signatures:
            out.append(f"-A {chain} -p udp -m string --algo bm --icase "
                       f"{_string_match(signature)} -j DROP")
    if _streams(spec):
        out.append(f"-A {chain} -p tcp ! --syn -j RETURN")
    out.append(f"-A {chain} {_hashlimit(spec.per_ip, hl_ip + str(v), None, spec.max_sources)}"
               " -j DROP")
    out.append(f"-A {chain} "
               f"{_hashlimit(spec.per_net, hl_net + str(v), net_mask, spec.max_sources)} -j DROP")
    out.append("COMMIT")
    if spec.udp:
        out += _ipt_notrack(spec, v)
    return out


def _ipt_net(net: str) -> str:
    n = ipaddress.ip_network(net, strict=False)
    return f"{n.network_address}/{n.prefixlen}"


def _ipt_notrack(spec: FirewallSpec, v: int) -> list[str]:
    chain = f"{spec.table[:20]}_notrack"
    lines = [
        f":{chain} - [0:0]",
        f":{chain}_out - [0:0]",
        f"-I PREROUTING -p udp -m udp --dport {spec.port} -j {chain}",
        f"-I OUTPUT -p udp -m udp --sport {spec.port} -j {chain}_out",
    ]
    for net, _name in _networks(spec, v):
        lines.append(f"-A {chain} -s {_ipt_net(net)} -j RETURN")
        lines.append(f"-A {chain}_out -d {_ipt_net(net)} -j RETURN")
    for host, port, _name in _pairs(spec, v):
        lines.append(f"-A {chain} -s {_ipt_net(host)} -p udp -m udp --sport {port} -j RETURN")
        lines.append(f"-A {chain}_out -d {_ipt_net(host)} -p udp -m udp --dport {port} -j RETURN")
    lines += [f"-A {chain} -j CT --notrack", f"-A {chain}_out -j CT --notrack", "COMMIT"]
    return [
        "",
        "# Optional, see \"Connection tracking\" above: uncomment to stop tracking SIP",
        "# over UDP from and to non-gateways.",
        "# *raw",
        *(f"# {line}" for line in lines),
    ]
