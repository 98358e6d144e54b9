"""The trace's and HEP's Prometheus metrics (sbc.admin.trace_metrics), read
from a real capture and HEP sender: packets sent, losses by reason (a full
queue, an address HEP cannot carry), the queue's depth, refused messages
sampled out; and what leaves through HEP has its credentials redacted."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from sbc.admin.calls import add_calls
from sbc.config.trace import HepConfig
from sbc.core.reasons import DropReason
from sbc.core.verdict import PRIVATE, PUBLIC_UDP, Drop, Forward
from sbc.io.hep import HepSender
from sbc.io.trace import Capture, TraceService
from sbc.trace.hep import decode
from sbc.trace.ring import TraceRing


def sip(call_id: str, n: int = 0) -> bytes:
    return (f"INVITE sip:x SIP/2.0\r\nCall-ID: {call_id}\r\nCSeq: {n} INVITE\r\n"
            "Authorization: Digest response=\"secret\"\r\n\r\n").encode()


class _Loop:
    """What the sender asks of the loop: its callbacks run when told."""

    def __init__(self) -> None:
        self.waiting: list[Callable[[], None]] = []

    def call_soon(self, cb: Callable[[], None]) -> None:
        self.waiting.append(cb)

    def call_later(self, _delay: float, cb: Callable[[], None]) -> None:
        self.waiting.append(cb)

    def run(self) -> None:
        waiting, self.waiting = self.waiting, []
        for cb in waiting:
            cb()


class _Collector:
    """A connected UDP transport that keeps the packets."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.packets.append(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


def _service(cap: Capture) -> Any:
    """The admin's view of the trace (TraceService.figures) over `cap`."""
    view = types.SimpleNamespace(capture=cap)
    return types.SimpleNamespace(figures=lambda: TraceService.figures(view),  # type: ignore[arg-type]
                                 enabled=True)


def test_hep_and_trace_metrics_count_what_happened() -> None:
    loop = _Loop()
    cap = Capture(lambda: 100.0, lambda ch: ("203.0.113.1", 5060 if ch < PRIVATE else 5080))
    cap.ring = TraceRing(1 << 20, 1000, 1 << 16, 0.1)
    cap.ring_sample.rate = cap.hep_sample.rate = 0.1
    sender = HepSender(HepConfig(enabled=True, queue=16, capture_id=7), loop)  # type: ignore[arg-type]
    collector = _Collector()
    sender._transport = collector  # connected
    cap.hep = sender
    registry = CollectorRegistry()
    add_calls(web.Application(), _service(cap), registry)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    # A call: its INVITE in and out, both sent; the one in redacted.
    sends = [(PRIVATE, ("10.0.0.9", 5060), sip("call-1", 1).replace(b"Authorization", b"X-A"))]
    cap.message(PUBLIC_UDP, sip("call-1"), "192.0.2.1", 5062, 100.0, Forward(sends))
    # A flood of refused Call-IDs: one in ten goes to HEP, the rest sampled out.
    for n in range(100):
        cap.message(PUBLIC_UDP, sip(f"scan-{n}"), "192.0.2.66", 5060, 100.0,
                    Drop(DropReason.UNKNOWN_SOURCE))
    # An address HEP cannot carry.
    cap.message(PUBLIC_UDP, sip("call-2"), "not-an-ip", 5060, 100.0, Forward([]))
    assert value("sbc_hep_queue_depth") == 13 and value("sbc_hep_queue_capacity") == 16
    loop.run()
    assert value("sbc_hep_sent_total") == 12 == len(collector.packets)
    assert value("sbc_hep_lost_total", reason="not_ip") == 1
    assert value("sbc_hep_lost_total", reason="queue_full") == 0
    assert value("sbc_hep_sampled_out_total") == 90
    assert value("sbc_hep_queue_depth") == 0 and value("sbc_hep_connected") == 1
    first = decode(collector.packets[0])
    assert b"Authorization: [redacted]" in first.payload and b"secret" not in first.payload
    assert first.correlation_id == b"call-1" and first.capture_id == 7

    # Over the queue's cap: counted lost, by reason.
    for n in range(20):
        cap.message(PUBLIC_UDP, sip("call-1", n), "192.0.2.1", 5062, 100.0, Forward([]))
    assert value("sbc_hep_lost_total", reason="queue_full") == 4
    assert value("sbc_hep_queue_depth") == 16
    # The ring's own.
    assert value("sbc_trace_calls", pool="calls") == 2
    assert value("sbc_trace_calls", pool="refused") == 10
    assert value("sbc_trace_sampled_out_total") == 90
    assert (value("sbc_trace_bytes") or 0) > 0
    assert value("sbc_trace_evicted_total", pool="calls") == 0


def test_no_hep_families_while_hep_is_off() -> None:
    cap = Capture(lambda: 100.0, lambda ch: ("203.0.113.1", 5060))
    cap.ring = TraceRing(1 << 20, 1000, 1 << 16, 0.1)
    registry = CollectorRegistry()
    add_calls(web.Application(), _service(cap), registry)
    assert registry.get_sample_value("sbc_hep_sent_total") is None
    assert registry.get_sample_value("sbc_trace_bytes") == 0
