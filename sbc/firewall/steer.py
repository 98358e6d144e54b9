"""The kernel half of the two lanes (nftables): steer gateways' and proved
sources' datagrams for the public port to the trusted port.

Mechanism: a stateless rewrite of the UDP destination port in a prerouting
chain at raw priority (`udp dport set TRUSTED`, the checksum fixed up by the
kernel), before connection tracking and the socket lookup. The datagram then
lands on sbc's trusted socket, with the far end's own source address and
port. sbc answers every UDP peer from the public socket, so a reply always
leaves from the public port the far end sent to.

Why this and not the alternatives:
- a `redirect` (DNAT) in a nat chain gives the same delivery, but its replies
  keep the public port only when they leave from the trusted socket and
  conntrack still holds the flow: a reply or an in-dialog request sent from
  the public socket meets the NAT entry's reply tuple and is given another
  source port. sbc cannot see conntrack, so the rewrite must not depend on it;
- SO_REUSEPORT with a classic BPF program by source can hold only a fixed
  list of addresses (4,096 instructions), rebuilt and re-attached on every
  proof; the proved sources are a set of up to `lanes.max_proved` that
  changes all the time, which an nftables set with per-element timeouts is.

The trusted port is internal: a datagram sent to it directly is dropped
first, so only what the kernel steered reaches it. Steered packets pass the
`sip` chain (bans, meters) like the rest, and sbc screens them in user space
as before: the lane buys order of service, never a waiver.
"""

from __future__ import annotations

import ipaddress

__all__ = ["PROVED_SETS", "steer_chain"]

PROVED_SETS = (("proved4", "ipv4_addr"), ("proved6", "ipv6_addr"))


def _prefix(host: str) -> str:
    address = ipaddress.ip_address(host)
    if address.is_unspecified:
        return "meta nfproto ipv4 " if address.version == 4 else ""
    return f"{'ip' if address.version == 4 else 'ip6'} daddr {address} "


def steer_chain(host: str, port: int, trusted_port: int) -> list[str]:
    """The `lanes` and `steer` chains of table inet <table> (nft syntax, one
    tab deep), for a public UDP socket on host:port."""
    to = f"udp dport set {trusted_port}"
    prefix = _prefix(host)
    return [
        "\tchain lanes {",
        "\t\ttype filter hook prerouting priority raw; policy accept;",
        (f"\t\t{prefix}udp dport {trusted_port} counter drop "
         'comment "trusted port reached directly"'),
        f"\t\t{prefix}udp dport {port} jump steer",
        "\t}",
        "\tchain steer {",
        f'\t\tip saddr @gateways4 {to} counter return comment "gateway"',
        f'\t\tip6 saddr @gateways6 {to} counter return comment "gateway"',
        f'\t\tip saddr . udp sport @gateway_ports4 {to} counter return comment "gateway"',
        f'\t\tip6 saddr . udp sport @gateway_ports6 {to} counter return comment "gateway"',
        "\t\tip saddr @banned4 return",
        "\t\tip6 saddr @banned6 return",
        f'\t\tip saddr @proved4 {to} counter return comment "proved"',
        f'\t\tip6 saddr @proved6 {to} counter return comment "proved"',
        "\t}",
    ]
