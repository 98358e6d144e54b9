"""HEP version 3 (the Homer encapsulation protocol): one SIP message as a
packet a Homer collector, heplify-server or sngrep (`-L`) reads.

The public HEP3 layout: "HEP3", the total length (16 bits), then chunks,
each a vendor ID (16 bits, 0x0000 for the generic ones), a chunk type (16
bits), its length including these 6 bytes (16 bits) and its value; every
number in network order. Generic chunk types written here:

     1 IP family (8 bits: 2 IPv4, 10 IPv6)   2 IP protocol (8 bits: 17 UDP, 6 TCP)
     3 IPv4 source       4 IPv4 destination  5 IPv6 source   6 IPv6 destination
     7 source port       8 destination port (16 bits each)
     9 timestamp seconds 10 timestamp microseconds (32 bits each)
    11 protocol type (8 bits: 1 SIP)        12 capture agent ID (32 bits)
    14 authentication key (optional)        15 payload
    17 correlation ID (here the Call-ID)

Pure: bytes in, bytes out; `decode` reads them back (for tests and tools).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

MAGIC = b"HEP3"
FAMILY_V4, FAMILY_V6 = 2, 10
PROTO_UDP, PROTO_TCP = 17, 6
SIP = 1
HEADER = 6  # "HEP3" and the total length
CHUNK = 6  # vendor, type, length
MAX_PACKET = 65535

_U8 = struct.Struct("!HHHB")
_U16 = struct.Struct("!HHHH")
_U32 = struct.Struct("!HHHI")


_PACKED: dict[str, tuple[int, bytes]] = {}  # address -> (version, packed): peers repeat
_PACKED_MAX = 4096


def _packed(host: str) -> tuple[int, bytes]:
    found = _PACKED.get(host)
    if found is None:
        ip = ipaddress.ip_address(host)
        if len(_PACKED) >= _PACKED_MAX:  # bounded: a cache, not a table of every source
            _PACKED.clear()
        found = _PACKED[host] = (ip.version, ip.packed)
    return found


def _chunk(kind: int, value: bytes) -> bytes:
    return struct.pack("!HHH", 0, kind, CHUNK + len(value)) + value


class HepError(ValueError):
    """Bytes that are not a HEP3 packet."""


class HepPacket(NamedTuple):
    family: int
    protocol: int
    src: tuple[str, int]
    dst: tuple[str, int]
    ts_us: int
    proto_type: int
    capture_id: int
    payload: bytes
    correlation_id: bytes
    auth_key: bytes | None = None


def _static(src: tuple[str, int], dst: tuple[str, int], tcp: bool, capture_id: int,
            auth_key: bytes | None) -> tuple[bytes, bytes]:
    """The chunks that only depend on the two ends and the settings: those
    before the timestamp (family to destination port) and those between it
    and the correlation ID (protocol type to auth key)."""
    (sv, s), (dv, d) = _packed(src[0]), _packed(dst[0])
    if sv == 4 and dv == 4:
        family, src_kind, addrs = FAMILY_V4, 3, (s, d)
    else:
        family, src_kind = FAMILY_V6, 5
        v6 = [b"\x00" * 10 + b"\xff\xff" + a if len(a) == 4 else a for a in (s, d)]
        addrs = (v6[0], v6[1])
    before = b"".join((
        _U8.pack(0, 1, 7, family),
        _U8.pack(0, 2, 7, PROTO_TCP if tcp else PROTO_UDP),
        _chunk(src_kind, addrs[0]),
        _chunk(src_kind + 1, addrs[1]),
        _U16.pack(0, 7, 8, src[1]),
        _U16.pack(0, 8, 8, dst[1]),
    ))
    after = b"".join((
        _U8.pack(0, 11, 7, SIP),
        _U32.pack(0, 12, 10, capture_id & 0xFFFFFFFF),
        _chunk(14, auth_key) if auth_key else b"",
    ))
    return before, after


# (src, dst, tcp, capture_id, auth_key) -> the static chunks: sbc's few
# addresses and its peers' repeat, so a packet costs one lookup and two packs.
_STATIC: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}
_STATIC_MAX = 4096
# "HEP3", the total length, chunks 9 and 10 (seconds and microseconds).
_HEAD = struct.Struct("!4sH")
_TIME = struct.Struct("!HHHIHHHI")
_CHUNK_HEAD = struct.Struct("!HHH")


def encode(payload: bytes, src: tuple[str, int], dst: tuple[str, int], ts_us: int, *,
           tcp: bool = False, capture_id: int = 0, correlation_id: bytes = b"",
           auth_key: bytes | None = None) -> bytes:
    """One HEP3 packet. IPv4 when both addresses are IPv4, else IPv6 (an
    IPv4 one mapped). A payload that would not fit the 16-bit length is cut.
    ValueError for an address that is not an IP."""
    key = (src, dst, tcp, capture_id, auth_key)
    static = _STATIC.get(key)
    if static is None:
        if len(_STATIC) >= _STATIC_MAX:  # bounded: a cache, not a table of every peer
            _STATIC.clear()
        static = _STATIC[key] = _static(src, dst, tcp, capture_id, auth_key)
    before, after = static
    sec, usec = divmod(ts_us, 1_000_000)
    corr = _CHUNK_HEAD.pack(0, 17, CHUNK + len(correlation_id)) if correlation_id else b""
    head = HEADER + len(before) + 20 + len(after) + len(corr) + len(correlation_id) + CHUNK
    if head + len(payload) > MAX_PACKET:
        payload = payload[:MAX_PACKET - head]
    return b"".join((  # the payload before the correlation ID, as encode_many has it
        _HEAD.pack(MAGIC, head + len(payload)), before,
        _TIME.pack(0, 9, 10, sec & 0xFFFFFFFF, 0, 10, 10, usec), after,
        _CHUNK_HEAD.pack(0, 15, CHUNK + len(payload)), payload, corr, correlation_id))


class _Prefix(NamedTuple):
    """What `encode_many` writes before a payload for one pair of ends: one
    struct for the header, the static chunks, the timestamp and the payload
    chunk's own header (the correlation ID goes after the payload: HEP3
    chunks may come in any order)."""

    pack: Any  # struct.Struct.pack
    before: bytes
    after: bytes
    fixed: int  # bytes of header and chunks other than payload and correlation ID


# (capture_id, auth_key) -> {(src, dst, tcp): _Prefix}, bounded like _STATIC.
_PREFIX: dict[tuple[int, bytes | None], dict[tuple[Any, ...], _Prefix]] = {}


def _prefix(src: tuple[str, int], dst: tuple[str, int], tcp: bool, capture_id: int,
            auth_key: bytes | None) -> _Prefix:
    before, after = _static(src, dst, tcp, capture_id, auth_key)
    fmt = struct.Struct(f"!4sH{len(before)}sHHHIHHHI{len(after)}sHHH")
    return _Prefix(fmt.pack, before, after, fmt.size)


def encode_many(items: Iterable[tuple[bytes, Sequence[Any]]], capture_id: int,
                auth_key: bytes | None, out: list[bytes]) -> int:
    """`encode` over a batch, the way the sender drains its queue: each item
    is (correlation ID, messages), a message indexable like
    sbc.trace.ring.Message (ts_us 0, transport 3, src 4, dst 5, data 6).
    Each packet is one struct pack (header, static chunks, time, payload
    chunk header), the payload and the correlation ID chunk, joined. The
    packets are appended to `out`; returns how many messages had an address
    that is not an IP (skipped)."""
    prefixes = _PREFIX.get((capture_id, auth_key))
    if prefixes is None:
        if len(_PREFIX) >= 16:  # settings change only on a reload
            _PREFIX.clear()
        prefixes = _PREFIX[(capture_id, auth_key)] = {}
    prefix_of = prefixes.get
    chunk_pack = _CHUNK_HEAD.pack
    append, join = out.append, b"".join
    skipped = 0
    for correlation_id, msgs in items:
        corr = (chunk_pack(0, 17, CHUNK + len(correlation_id)) + correlation_id
                if correlation_id else b"")
        for msg in msgs:
            key = (msg[4], msg[5], msg[3] != "udp")
            prefix = prefix_of(key)
            if prefix is None:
                try:
                    prefix = _prefix(key[0], key[1], key[2], capture_id, auth_key)
                except ValueError:
                    skipped += 1
                    continue
                if len(prefixes) >= _STATIC_MAX:  # bounded: a cache, not a table of every peer
                    prefixes.clear()
                prefixes[key] = prefix
            payload = msg[6]
            head = prefix.fixed + len(corr)
            if head + len(payload) > MAX_PACKET:
                payload = payload[:MAX_PACKET - head]
            sec, usec = divmod(msg[0], 1_000_000)
            append(join((prefix.pack(MAGIC, head + len(payload), prefix.before,
                                     0, 9, 10, sec & 0xFFFFFFFF, 0, 10, 10, usec, prefix.after,
                                     0, 15, CHUNK + len(payload)),
                         payload, corr)))
    return skipped


def decode(packet: bytes) -> HepPacket:
    """A HEP3 packet read back; HepError for anything else. Unknown chunks
    (other vendors, other types) are skipped."""
    if len(packet) < HEADER or packet[:4] != MAGIC:
        raise HepError("not HEP3")
    (total,) = struct.unpack_from("!H", packet, 4)
    if total != len(packet):
        raise HepError("length mismatch")
    fields: dict[int, bytes] = {}
    at = HEADER
    while at < total:
        if at + CHUNK > total:
            raise HepError("truncated chunk")
        vendor, kind, length = struct.unpack_from("!HHH", packet, at)
        if length < CHUNK or at + length > total:
            raise HepError("bad chunk length")
        if vendor == 0:
            fields[kind] = packet[at + CHUNK: at + length]
        at += length
    try:
        family = fields[1][0]
        src_ip, dst_ip = (fields[3], fields[4]) if family == FAMILY_V4 else (fields[5], fields[6])
        return HepPacket(
            family=family, protocol=fields[2][0],
            src=(str(ipaddress.ip_address(src_ip)), struct.unpack("!H", fields[7])[0]),
            dst=(str(ipaddress.ip_address(dst_ip)), struct.unpack("!H", fields[8])[0]),
            ts_us=struct.unpack("!I", fields[9])[0] * 1_000_000 + struct.unpack("!I", fields[10])[0],
            proto_type=fields[11][0], capture_id=struct.unpack("!I", fields[12])[0],
            payload=fields[15], correlation_id=fields.get(17, b""), auth_key=fields.get(14))
    except (KeyError, IndexError, ValueError, struct.error) as e:
        raise HepError(f"missing or bad chunk: {e!r}") from None
