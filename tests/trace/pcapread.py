"""A small reader of classic pcap files for the tests: Ethernet (1), Linux
cooked (113), raw IP (101) and loopback (0) frames, IPv4 and IPv6, UDP and
TCP, checksums verified where the writer set them."""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple


class Packet(NamedTuple):
    ts_us: int
    proto: str
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes
    checksum_ok: bool


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def read(data: bytes) -> list[Packet]:
    magic = struct.unpack_from("<I", data)[0]
    order = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
    _m, major, _minor, _tz, _sig, _snap, link = struct.unpack_from(order + "IHHiIII", data)
    assert major == 2
    at, out = 24, []
    while at < len(data):
        sec, frac, incl, _orig = struct.unpack_from(order + "IIII", data, at)
        frame = data[at + 16: at + 16 + incl]
        at += 16 + incl
        if link == 1:
            ethertype, ip = struct.unpack_from("!H", frame, 12)[0], frame[14:]
        elif link == 113:
            ethertype, ip = struct.unpack_from("!H", frame, 14)[0], frame[16:]
        elif link == 276:  # Linux cooked v2
            ethertype, ip = struct.unpack_from("!H", frame, 0)[0], frame[20:]
        elif link == 0:
            ip = frame[4:]
            ethertype = 0x0800 if ip[0] >> 4 == 4 else 0x86DD
        else:
            ip = frame
            ethertype = 0x0800 if ip[0] >> 4 == 4 else 0x86DD
        if ethertype == 0x0800:
            ihl = (ip[0] & 15) * 4
            proto = ip[9]
            src, dst = ip[12:16], ip[16:20]
            seg = ip[ihl: struct.unpack_from("!H", ip, 2)[0]]
            pseudo = src + dst + struct.pack("!BBH", 0, proto, len(seg))
            ip_ok = checksum(ip[:ihl]) == 0
        else:
            proto = ip[6]
            src, dst = ip[8:24], ip[24:40]
            seg = ip[40: 40 + struct.unpack_from("!H", ip, 4)[0]]
            pseudo = src + dst + struct.pack("!IxxxB", len(seg), proto)
            ip_ok = True
        sport, dport = struct.unpack_from("!HH", seg)
        if proto == 17:
            payload, name = seg[8:], "udp"
            stored = struct.unpack_from("!H", seg, 6)[0]
        else:
            payload, name = seg[(seg[12] >> 4) * 4:], "tcp"
            stored = struct.unpack_from("!H", seg, 16)[0]
        ok = ip_ok and (stored == 0 or checksum(pseudo + seg) == 0)
        usec = frac // 1000 if nano else frac
        out.append(Packet(sec * 1_000_000 + usec, name,
                          (str(ipaddress.ip_address(src)), sport),
                          (str(ipaddress.ip_address(dst)), dport), payload, ok))
    return out
