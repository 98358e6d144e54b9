"""The one pipeline every transport feeds, and the one loop timer.

A transport hands `(data, source, now)` to `receive` (and, for TCP/TLS, the
opening and closing of a connection); the engine screens, parses and
decides; the pipeline sends what the verdict carries from the socket the
channel names. Nothing here decides anything about SIP.

One loop timer serves every deadline: the engine's (transactions, dialogs,
the pings to VOS3000) and the shell's own periodic work (connection
deadlines, state persistence, housekeeping, the summary line), each
registered with `every`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Protocol

from ..admin.timing import PacketTimer
from ..core.engine import Engine
from ..core.reasons import ParseReason, TransportEvent
from ..core.screen.conns import ConnClock
from ..sip import SipParseError
from .trace import Capture
from ..core.verdict import (
    MAPPED,
    PRIVATE,
    PUBLIC_TCP,
    PUBLIC_TLS,
    PUBLIC_UDP,
    Addr,
    Channel,
    Send,
    Source,
    unmapped,
)


class Conn(Protocol):
    """What the pipeline needs of an open TCP or TLS connection."""

    clock: ConnClock

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def abort(self, reason: TransportEvent, framing: ParseReason | None = None,
              flush: bool = False) -> None: ...


class Datagrams(Protocol):
    def sendto(self, data: bytes, addr: Addr) -> None: ...


@dataclass(slots=True)
class _Every:
    next_at: float
    interval: float
    fn: Callable[[float], None]


class Pipeline:
    """Bytes in, the engine's verdict out, one timer."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop, *,
                 public_v6: bool = False) -> None:
        self.engine = engine
        self.loop = loop
        self.egress: list[Datagrams] = []  # by channel - PRIVATE
        self.public_udp: Datagrams | None = None
        # A dual-stack IPv6 socket reaches IPv4 peers by their mapped address;
        # the core knows them unmapped (verdict.unmapped).
        self.public_v6 = public_v6
        # Open connections by public channel, each keyed by the caller's flow.
        self.conns: dict[int, dict[Addr, Conn]] = {PUBLIC_TCP: {}, PUBLIC_TLS: {}}
        self.timer = PacketTimer()  # engine time per message, for the admin's histogram
        self._received: dict[int, list[int]] = {}  # messages in, by channel: [count]
        self._handle: asyncio.TimerHandle | None = None
        self._at = float("inf")
        self._periodic: list[_Every] = []
        # The per-call trace and HEP capture (sbc.io.trace), None when both are off.
        self.trace: Capture | None = None

    # ------------------------------------------------------------------ bytes in

    def datagram_handler(self, channel: int) -> Callable[[bytes, tuple[Any, ...]], None]:
        """The `datagram_received` of a UDP socket on `channel`: `receive`
        with every name it needs bound once, since it runs per datagram."""
        engine_receive = self.engine.receiver(channel)
        send_out = self._send_out
        clock = self.loop.time
        timer = self.timer
        received = self._received.setdefault(channel, [0])

        def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
            host = addr[0]
            if ":" in host and host.startswith(MAPPED):
                host = unmapped(host)
            received[0] += 1
            now = clock()
            if received[0] & 7:
                verdict = engine_receive(data, host, addr[1], now)
            else:  # one message in eight is timed, for the processing-time histogram
                started = perf_counter()
                verdict = engine_receive(data, host, addr[1], now)
                timer.observe(perf_counter() - started)
            if verdict.sends:
                send_out(verdict.sends)
            if self.trace is not None:  # tracing off: this check is all it costs
                self.trace.message(channel, data, host, addr[1], now, verdict)

        return datagram_received

    def received(self, channel: int) -> int:
        """Messages taken in on `channel`."""
        return self._received.get(channel, [0])[0]

    def receive(self, data: bytes, src: Source, now: float) -> bool:
        """One message from a stream; False when its connection must close."""
        count = self._received.setdefault(src.channel, [0])
        count[0] += 1
        if count[0] & 7:
            verdict = self.engine.receive(data, src, now)
        else:  # one message in eight is timed, for the processing-time histogram
            started = perf_counter()
            verdict = self.engine.receive(data, src, now)
            self.timer.observe(perf_counter() - started)
        if verdict.sends:
            self._send_out(verdict.sends)
        if self.trace is not None:
            self.trace.message(src.channel, data, src.host, src.port, now, verdict)
        return not verdict.close

    def opened(self, channel: Channel, addr: Addr, conn: Conn, now: float) -> bool:
        """A new connection: True when the engine admits it (it is then
        reachable by its flow), False when it must be dropped."""
        if self.engine.connection_opened(Source(channel, *addr), now) is not None:
            return False
        self.conns[channel][addr] = conn
        return True

    def closed(self, channel: Channel, addr: Addr, conn: Conn, admitted: bool) -> None:
        conns = self.conns[channel]
        if conns.get(addr) is conn:
            del conns[addr]
        if admitted:
            self.engine.connection_closed(Source(channel, *addr))

    def failed(self, channel: Channel, addr: Addr, reason: TransportEvent,
               framing: ParseReason | None = None) -> None:
        """A connection broke a limit: the engine counts it and judges the offense."""
        self.engine.connection_failed(Source(channel, *addr), reason, self.loop.time(), framing)

    def unframed(self, data: bytes, src: Source, err: SipParseError, now: float) -> list[bytes]:
        """A stream whose framing failed: what to write before closing it
        (the refusal to a gateway), or nothing."""
        return [reply for _ch, _addr, reply in self.engine.refuse_unframed(data, src, err, now)]

    def count(self, event: TransportEvent) -> None:
        """A transport event that breaks no limit (an ICMP error, a TLS error, a flow gone)."""
        self.engine.transport_event(event)

    # ------------------------------------------------------------------ bytes out

    def send_all(self, sends: list[Send]) -> None:
        """Send what sbc decided of its own accord (the timer, a service)."""
        if self.trace is not None:
            self.trace.sent(sends, self.loop.time())
        self._send_out(sends)

    def _send_out(self, sends: list[Send]) -> None:
        for channel, addr, data in sends:
            self.send(channel, addr, data)
        at = self.engine.next_deadline()
        if at is not None and at < self._at:
            self._arm(at)

    def send(self, channel: int, addr: Addr, data: bytes) -> None:
        if channel >= PRIVATE:
            if self.egress:
                self.egress[channel - PRIVATE].sendto(data, addr)
        elif channel == PUBLIC_UDP:
            if self.public_udp is not None:
                if self.public_v6 and ":" not in addr[0]:
                    addr = (MAPPED + addr[0], addr[1])
                self.public_udp.sendto(data, addr)
        else:
            conn = self.conns[channel].get(addr)
            if conn is None:
                self.count(TransportEvent.TLS_FLOW_GONE if channel == PUBLIC_TLS
                           else TransportEvent.TCP_FLOW_GONE)
            else:
                conn.write(data)

    # ------------------------------------------------------------------ the one timer

    def every(self, interval: float, fn: Callable[[float], None]) -> None:
        """Run `fn(now)` every `interval` seconds, on the one timer."""
        self._periodic.append(_Every(self.loop.time() + interval, interval, fn))
        self.rearm()

    def rearm(self) -> None:
        """Arm the timer for the earliest deadline (after the engine's changed
        outside a message: a start, a reload)."""
        at = self.engine.next_deadline()
        for every in self._periodic:
            if at is None or every.next_at < at:
                at = every.next_at
        if at is not None and at != self._at:
            self._arm(at)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = float("inf")
        self._periodic = []

    def _arm(self, at: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._at = at
        self._handle = self.loop.call_at(at, self._fire)

    def tick(self) -> None:
        """Serve what is due now, without waiting for the loop (at start)."""
        if self._handle is not None:
            self._handle.cancel()
        self._fire()

    def _fire(self) -> None:
        self._handle = None
        self._at = float("inf")
        now = self.loop.time()
        sends = self.engine.on_timer(now)
        for every in self._periodic:
            if now >= every.next_at:
                every.next_at = now + every.interval
                every.fn(now)
        self.send_all(sends)
        self.rearm()
