"""TCP on the public side: one protocol instance per connection, framing by
Content-Length, and a map from the caller's flow (peer address) to its
connection so responses and in-dialog requests reuse it (RFC 3261 §18.2.2).

The same class carries TLS (`sbc.io.tls` subclasses it with the
encryption in between); the channel tells the engine which one it is.

Limits (`sbc.core.screen.conns` decides, this module applies them): a global and a
per-source cap at accept, a buffer cap in the framer, and deadlines checked
by the server's connection sweep. A connection that breaks one is closed,
counted by reason and, when it is the source's fault, recorded as an offense
(the engine counts and judges; this module only closes).
"""

from __future__ import annotations

import asyncio

from ..core.reasons import ParseReason, TransportEvent
from ..core.screen.conns import ConnClock
from ..core.verdict import PUBLIC_TCP, Addr, Channel, Source, unmapped
from ..sip import SipParseError, StreamFramer
from .pipeline import Pipeline


class TcpConnection(asyncio.Protocol):
    __slots__ = ("addr", "admitted", "channel", "clock", "closed", "framer", "pipeline", "transport")

    def __init__(self, pipeline: Pipeline, max_message: int, max_buffer: int,
                 channel: Channel = PUBLIC_TCP) -> None:
        self.pipeline = pipeline
        self.channel = channel
        self.transport: asyncio.Transport | None = None
        self.addr: Addr = ("", 0)
        self.framer = StreamFramer(max_message, max_buffer)
        self.clock = ConnClock(pipeline.loop.time())
        self.admitted = False  # holds a slot in the per-source table
        self.closed = False

    @property
    def last_active(self) -> float:
        return self.clock.last_active

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.addr = (unmapped(peer[0]), peer[1])
        now = self.pipeline.loop.time()
        self.clock = ConnClock(now, ready=self.ready_on_connect)
        if not self.pipeline.opened(self.channel, self.addr, self, now):
            self._drop()  # banned, over its rate or over a cap: counted by the engine
            return
        self.admitted = True

    ready_on_connect = True  # plain TCP carries SIP from the first byte

    def data_received(self, data: bytes) -> None:
        self.received(data, self.pipeline.loop.time())

    def received(self, data: bytes, now: float) -> None:
        """Bytes of SIP (decrypted, on TLS): frame them and hand each message on."""
        pipeline = self.pipeline
        src = Source(self.channel, self.addr[0], self.addr[1])
        try:
            frames = self.framer.feed(data)
        except SipParseError as e:
            # A gateway is told why (400 Bad Content-Length, ...) before the
            # close; anyone else is cut off at once.
            refusal = pipeline.unframed(self.framer.pending, src, e, now)
            for reply in refusal:
                self.write(reply)
            self.abort(TransportEvent.TCP_FRAMING, e.reason, flush=bool(refusal))
            return
        self.clock.fed(now, len(frames), self.framer.buffered)
        for frame in frames:
            if self.closed:
                return
            if not frame:  # RFC 5626 keepalive ping: pong
                self.write(b"\r\n")
                continue
            if not pipeline.receive(frame, src, now):
                self.close()
                return

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def abort(self, reason: TransportEvent, framing: ParseReason | None = None,
              flush: bool = False) -> None:
        """Close for breaking a limit: counted by `reason` (and the parse
        reason of a framing fault; an offense when it is one: the engine
        judges); at once, or (`flush`) once what was written is sent."""
        self.pipeline.failed(self.channel, self.addr, reason, framing)
        if flush:
            self.close()
        else:
            self._drop()

    def _drop(self) -> None:
        """Close at once, without waiting for queued data (the peer misbehaved)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pipeline.closed(self.channel, self.addr, self, self.admitted)
        self.admitted = False
