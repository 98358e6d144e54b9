"""The trace's shell: the HEP sender over TCP to a loopback collector (every
packet arrives, decodes, in order), its bounded queue counting what it loses
while no collector answers, the capture's sampling of messages of no call,
and the admin's call filters."""

from __future__ import annotations

import asyncio
import struct

import pytest

from sbc.admin.calls import matches
from sbc.config.trace import HepConfig
from sbc.core.reasons import DropReason
from sbc.core.verdict import PRIVATE, PUBLIC_UDP, Drop, Forward
from sbc.io.hep import HepSender
from sbc.io.trace import Capture
from sbc.trace.hep import decode
from sbc.trace.ring import Message, TraceRing
from tests.io.test_transport import free_port


def sip(call_id: str, n: int = 0) -> bytes:
    return (f"OPTIONS sip:x SIP/2.0\r\nCall-ID: {call_id}\r\nCSeq: {n} OPTIONS\r\n"
            "Authorization: Digest response=\"secret\"\r\n\r\n").encode()


def msg(n: int) -> Message:
    return Message(1_000_000 + n, "public", "in", "udp", ("192.0.2.1", 5060),
                   ("198.51.100.1", 5060), sip("c", n))


async def test_hep_over_tcp_reaches_the_collector_in_order() -> None:
    got = bytearray()
    done = asyncio.Event()

    async def collector(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while len(got) < total:
            chunk = await reader.read(65536)
            if not chunk:
                break
            got.extend(chunk)
        done.set()
        writer.close()

    port = free_port()
    server = await asyncio.start_server(collector, "127.0.0.1", port)
    sender = HepSender(HepConfig(enabled=True, port=port, transport="tcp", capture_id=9,
                                 auth_key="k"), asyncio.get_running_loop())
    packets = 50
    from sbc.trace.hep import encode
    total = sum(len(encode(msg(n).data, msg(n).src, msg(n).dst, msg(n).ts_us, capture_id=9,
                           correlation_id=b"c", auth_key=b"k")) for n in range(packets))
    try:
        for n in range(packets):  # queued before the connection is up: none lost
            sender.submit(msg(n), b"c")
        sender.start()
        await asyncio.wait_for(done.wait(), 10)
    finally:
        sender.close()
        server.close()
        await server.wait_closed()
    out, at = [], 0
    while at < len(got):
        (length,) = struct.unpack_from("!H", got, at + 4)
        out.append(decode(bytes(got[at: at + length])))
        at += length
    assert [p.payload for p in out] == [msg(n).data for n in range(packets)]
    assert all(p.capture_id == 9 and p.auth_key == b"k" and p.correlation_id == b"c"
               and p.protocol == 17 for p in out)
    assert sender.sent == packets and sender.lost == 0


async def test_hep_queue_is_bounded_and_counts_losses() -> None:
    port = free_port()  # nothing listens there
    sender = HepSender(HepConfig(enabled=True, port=port, transport="tcp", queue=16),
                       asyncio.get_running_loop())
    try:
        for n in range(100):
            sender.submit(msg(n), b"c")
        assert sender.queued == 16 and sender.lost == 84
        assert sender.stats()["lost_by"] == {"queue_full": 84, "not_ip": 0}
        assert sender.stats()["connected"] is False
    finally:
        sender.close()


def test_capture_keeps_calls_and_samples_the_rest() -> None:
    cap = Capture(lambda: 100.0, lambda ch: ("203.0.113.1", 5060 if ch < PRIVATE else 5080))
    cap.ring = TraceRing(1 << 20, 1000, 1 << 16, 0.1)
    cap.ring_sample.rate = 0.1
    sends = [(PRIVATE, ("10.0.0.9", 5060), sip("call-1", 1))]
    cap.message(PUBLIC_UDP, sip("call-1"), "192.0.2.1", 5062, 100.0, Forward(sends))
    for n in range(100):  # a flood of refused Call-IDs: one in ten kept
        cap.message(PUBLIC_UDP, sip(f"scan-{n}"), "192.0.2.66", 5060, 100.0,
                    Drop(DropReason.UNKNOWN_SOURCE))
    # A drop of a message of a traced call is kept, with its reason.
    cap.message(PUBLIC_UDP, sip("call-1", 2), "192.0.2.1", 5062, 100.0,
                Drop(DropReason.UNKNOWN_SOURCE))
    trace = cap.ring.get(b"call-1")
    assert trace is not None
    assert [(m.leg, m.direction, m.src, m.dst) for m in trace.messages] == [
        ("public", "in", ("192.0.2.1", 5062), ("203.0.113.1", 5060)),
        ("private", "out", ("203.0.113.1", 5080), ("10.0.0.9", 5060)),
        ("public", "in", ("192.0.2.1", 5062), ("203.0.113.1", 5060))]
    assert trace.messages[-1].note == "unknown_source"
    assert b"secret" not in trace.messages[0].data
    assert len(cap.ring.refused.calls) == 10 and cap.ring_sample.skipped == 90
    cap.message(PUBLIC_UDP, b"\x00garbage", "192.0.2.1", 1, 100.0, Drop(DropReason.MALFORMED))
    assert cap.untraced == 1


@pytest.mark.parametrize(("query", "hit"), [
    (("", "", ""), True), (("acme", "", ""), True), (("beta", "", ""), False),
    (("", "486", ""), True), (("", "4xx", ""), True), (("", "5xx", ""), False),
    (("", "failed", ""), True), (("", "answered", ""), False), (("", "ongoing", ""), False),
    (("", "", "4447"), True), (("", "", "5551"), True), (("", "", "999"), False)])
def test_call_filters(query: tuple[str, str, str], hit: bool) -> None:
    record = {"gateway": "acme", "status": 486, "from": "4447000", "to": "5551000"}
    assert matches(record, *query) is hit
