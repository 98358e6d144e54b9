"""A call's messages as a classic pcap file (libpcap 2.4, microsecond
times, LINKTYPE_ETHERNET) that Wireshark, tshark and sngrep open.

sbc sees SIP messages, not packets, so each message is wrapped in made-up
Ethernet, IPv4 or IPv6, and UDP or TCP headers carrying its real addresses,
ports and time. Checksums are computed, so no tool flags the frames. A TCP
or TLS message becomes one TCP segment (PSH, ACK) whose sequence numbers
continue per direction of its flow; a TLS message is shown decrypted, as the
plain SIP sbc read. Pure: messages in, bytes out.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable

from .ring import Message

MAGIC = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
SNAPLEN = 262144
# An IP packet's length is 16 bits: a longer message is cut (its record says so).
MAX_PAYLOAD = 65535 - 60 - 20
_MAC_SRC = b"\x02\x00\x00\x00\x00\x01"
_MAC_DST = b"\x02\x00\x00\x00\x00\x02"
_UDP, _TCP = 17, 6


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(host.split("%")[0])
    except ValueError:  # not an address (it never is one in practice): the unspecified one
        return ipaddress.ip_address("::" if ":" in host else "0.0.0.0")


def header() -> bytes:
    """The pcap global header."""
    return struct.pack("<IHHiIII", MAGIC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)


class PcapWriter:
    """Frames for messages, one after the other, keeping the TCP sequence
    numbers of each flow."""

    def __init__(self) -> None:
        self._seq: dict[tuple[str, int, str, int], int] = {}

    def frame(self, msg: Message) -> bytes:
        src_ip, dst_ip = _ip(msg.src[0]), _ip(msg.dst[0])
        if src_ip.version != dst_ip.version:  # an IPv4-mapped peer on a dual-stack socket
            src_ip, dst_ip = (ipaddress.IPv6Address(f"::ffff:{ip}") if ip.version == 4 else ip
                              for ip in (src_ip, dst_ip))
        payload = msg.data[:MAX_PAYLOAD]
        proto = _UDP if msg.transport == "udp" else _TCP
        sport, dport = msg.src[1], msg.dst[1]
        if proto == _UDP:
            l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
        else:
            flow = (msg.src[0], sport, msg.dst[0], dport)
            back = (msg.dst[0], dport, msg.src[0], sport)
            seq = self._seq.get(flow, 1)
            self._seq[flow] = (seq + len(payload)) & 0xFFFFFFFF
            ack = self._seq.get(back, 1)
            l4 = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, 0x18, 65535, 0, 0)
        segment = l4 + payload
        if src_ip.version == 4:
            pseudo = src_ip.packed + dst_ip.packed + struct.pack("!BBH", 0, proto, len(segment))
        else:
            pseudo = src_ip.packed + dst_ip.packed + struct.pack("!IxxxB", len(segment), proto)
        csum = _checksum(pseudo + segment) or (0xFFFF if proto == _UDP else 0)
        at = 6 if proto == _UDP else 16
        segment = segment[:at] + struct.pack("!H", csum) + segment[at + 2:]
        if src_ip.version == 4:
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), 0, 0x4000, 64, proto,
                             0, src_ip.packed, dst_ip.packed)
            ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
            ethertype = 0x0800
        else:
            ip = struct.pack("!IHBB16s16s", 6 << 28, len(segment), proto, 64,
                             src_ip.packed, dst_ip.packed)
            ethertype = 0x86DD
        frame = _MAC_DST + _MAC_SRC + struct.pack("!H", ethertype) + ip + segment
        sec, usec = divmod(msg.ts_us, 1_000_000)
        orig = len(frame) + len(msg.data) - len(payload)
        return struct.pack("<IIII", sec, usec, len(frame), orig) + frame


def pcap(messages: Iterable[Message]) -> bytes:
    """A whole pcap file of `messages`, in their order."""
    writer = PcapWriter()
    return header() + b"".join(writer.frame(m) for m in messages)
