"""The HEP3 encoder (sbc.trace.hep) against the public chunk layout, byte by
byte: the header, each generic chunk's vendor, type, length and value, IPv4
and IPv6, the optional auth key, and a payload cut to fit 16 bits."""

from __future__ import annotations

import struct

import pytest

from sbc.trace.hep import HepError, decode, encode

PAYLOAD = b"INVITE sip:100@x SIP/2.0\r\nCall-ID: c-1\r\n\r\n"


def chunks(packet: bytes) -> list[tuple[int, int, bytes]]:
    """(vendor, type, value) of each chunk, read with the layout only."""
    assert packet[:4] == b"HEP3"
    assert struct.unpack("!H", packet[4:6])[0] == len(packet)
    out, at = [], 6
    while at < len(packet):
        vendor, kind, length = struct.unpack_from("!HHH", packet, at)
        out.append((vendor, kind, packet[at + 6: at + length]))
        at += length
    assert at == len(packet)
    return out


def test_ipv4_udp_chunks_by_the_layout() -> None:
    packet = encode(PAYLOAD, ("192.0.2.1", 5062), ("198.51.100.9", 5060), 1_700_000_123_456_789,
                    capture_id=2001, correlation_id=b"c-1")
    got = {kind: value for vendor, kind, value in chunks(packet) if vendor == 0}
    assert all(vendor == 0 for vendor, _k, _v in chunks(packet))
    assert got == {
        1: b"\x02",  # AF_INET
        2: b"\x11",  # UDP
        3: bytes([192, 0, 2, 1]),
        4: bytes([198, 51, 100, 9]),
        7: struct.pack("!H", 5062),
        8: struct.pack("!H", 5060),
        9: struct.pack("!I", 1_700_000_123),
        10: struct.pack("!I", 456_789),
        11: b"\x01",  # SIP
        12: struct.pack("!I", 2001),
        15: PAYLOAD,
        17: b"c-1",
    }


def test_ipv6_tcp_with_auth_key() -> None:
    packet = encode(PAYLOAD, ("2001:db8::1", 5060), ("2001:db8::2", 9), 5_000_001, tcp=True,
                    capture_id=7, correlation_id=b"c-1", auth_key=b"s3cret")
    got = {kind: value for _v, kind, value in chunks(packet)}
    assert got[1] == b"\x0a" and got[2] == b"\x06"
    assert got[5] == bytes.fromhex("20010db8000000000000000000000001")
    assert got[6] == bytes.fromhex("20010db8000000000000000000000002")
    assert 3 not in got and 4 not in got
    assert got[14] == b"s3cret"
    assert got[9] == struct.pack("!I", 5) and got[10] == struct.pack("!I", 1)
    p = decode(packet)
    assert (p.src, p.dst, p.ts_us, p.capture_id, p.auth_key) == (
        ("2001:db8::1", 5060), ("2001:db8::2", 9), 5_000_001, 7, b"s3cret")


def test_mixed_families_are_ipv6_and_roundtrip() -> None:
    p = decode(encode(b"x", ("192.0.2.1", 1), ("::1", 2), 0))
    assert p.family == 10 and p.src == ("::ffff:c000:201", 1) and p.correlation_id == b""


def test_a_payload_too_big_is_cut_to_fit() -> None:
    packet = encode(b"a" * 70_000, ("192.0.2.1", 1), ("192.0.2.2", 2), 0, correlation_id=b"c")
    assert len(packet) == 65535
    assert decode(packet).payload == b"a" * len(decode(packet).payload)


@pytest.mark.parametrize("bad", [b"", b"HEP2\x00\x06", b"HEP3\x00\x07x",
                                 b"HEP3\x00\x0c\x00\x00\x00\x01\x00\x02",
                                 b"HEP3\x00\x0d\x00\x00\x00\x01\x00\x07\x02"])
def test_decode_refuses_what_is_not_hep3(bad: bytes) -> None:
    with pytest.raises(HepError):
        decode(bad)


def test_other_vendors_chunks_are_skipped() -> None:
    packet = encode(b"x", ("192.0.2.1", 1), ("192.0.2.2", 2), 0)
    extra = struct.pack("!HHH", 0x1234, 15, 8) + b"no"
    packet = packet[:4] + struct.pack("!H", len(packet) + len(extra)) + packet[6:] + extra
    assert decode(packet).payload == b"x"


def test_encode_many_makes_the_same_packets_and_skips_what_is_not_ip() -> None:
    """The sender's batch encoder against `encode`, message by message, with
    the cached chunks of each pair of ends used twice."""
    from sbc.trace.hep import encode_many
    from sbc.trace.ring import Message

    def m(src: tuple[str, int], dst: tuple[str, int], ts: int, transport: str = "udp",
          data: bytes = PAYLOAD) -> Message:
        return Message(ts, "public", "in", transport, src, dst, data)

    msgs = [m(("192.0.2.1", 5062), ("198.51.100.9", 5060), 1_700_000_123_456_789),
            m(("192.0.2.1", 5062), ("198.51.100.9", 5060), 1_700_000_123_999_999),
            m(("2001:db8::1", 5060), ("192.0.2.2", 9), 5_000_001, "tcp"),
            m(("192.0.2.1", 1), ("192.0.2.2", 2), 0, "tls", b"a" * 70_000),
            m(("not-an-ip", 1), ("192.0.2.2", 2), 0)]
    for auth in (None, b"s3cret"):
        out: list[bytes] = []
        skipped = encode_many([(b"c-1", msgs[:2]), (b"", msgs[2:])], 2001, auth, out)
        assert skipped == 1
        assert out == [encode(x.data, x.src, x.dst, x.ts_us, tcp=x.transport != "udp",
                              capture_id=2001, correlation_id=c, auth_key=auth)
                       for c, x in [(b"c-1", msgs[0]), (b"c-1", msgs[1]), (b"", msgs[2]),
                                    (b"", msgs[3])]]
        assert len(out[3]) == 65535 and decode(out[2]).protocol == 6
