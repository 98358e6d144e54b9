"""TCP on the public side: one protocol instance per connection, framing by
Content-Length, and a map from the caller's flow (peer address) to its
connection so responses and in-dialog requests reuse it (RFC 3261 §18.2.2).

The same class carries TLS (`sbc.io.tls` subclasses it with the
encryption in between); the channel tells the engine which one it is.

Limits (`sbc.core.screen.conns` decides, this module applies them): a global and a
per-source cap at accept, a buffer cap in the framer, and deadlines checked
by the server's connection sweep. A connection that breaks one is closed,
counted by reason and, when it is the source's fault, recorded as an offense.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..core.screen.conns import FRAMING, OFFENSES, ConnClock
from ..core.verdict import PUBLIC_TCP, Addr, Channel, Source, unmapped
from ..sip import SipParseError, StreamFramer

if TYPE_CHECKING:
    from .server import Server


class TcpConnection(asyncio.Protocol):
    __slots__ = ("addr", "admitted", "channel", "clock", "closed", "framer", "server", "transport")

    def __init__(self, server: Server, channel: Channel = PUBLIC_TCP) -> None:
        self.server = server
        self.channel = channel
        self.transport: asyncio.Transport | None = None
        self.addr: Addr = ("", 0)
        lim = server.cfg.limits
        self.framer = StreamFramer(lim.max_tcp_message, lim.tcp_buffer)
        self.clock = ConnClock(server.loop.time())
        self.admitted = False  # holds a slot in the per-source table
        self.closed = False

    @property
    def last_active(self) -> float:
        return self.clock.last_active

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.addr = (unmapped(peer[0]), peer[1])
        server = self.server
        now = server.loop.time()
        self.clock = ConnClock(now, ready=self.ready_on_connect)
        if server.screen.bans.is_banned(self.addr[0], now):
            server.screen_drop("banned", self.addr[0])
            self._drop()
            return
        over = server.screen.connection(self.addr[0], self.addr[1], now)
        if over is not None:  # opening connections faster than its rate
            server.screen_drop(over, self.addr[0])
            self._drop()
            return
        refused = server.conn_counts.admit(self.addr[0], server.conn_limits)
        if refused is not None:
            self.abort(refused)
            return
        self.admitted = True
        server.conns[self.channel][self.addr] = self

    ready_on_connect = True  # plain TCP carries SIP from the first byte

    def data_received(self, data: bytes) -> None:
        self.received(data, self.server.loop.time())

    def received(self, data: bytes, now: float) -> None:
        """Bytes of SIP (decrypted, on TLS): frame them and hand each message on."""
        server = self.server
        src = Source(self.channel, self.addr[0], self.addr[1])
        try:
            frames = self.framer.feed(data)
        except SipParseError as e:
            server.count(f"{FRAMING}_{e.reason}")
            # A gateway is told why (400 Bad Content-Length, ...) before the
            # close; anyone else is cut off at once.
            refusal = server.engine.refuse_unframed(self.framer.pending, src, e, now)
            for _channel, _addr, reply in refusal:
                self.write(reply)
            self.abort(FRAMING, counted=False, flush=bool(refusal))
            return
        self.clock.fed(now, len(frames), self.framer.buffered)
        screen = server.screen
        for frame in frames:
            if self.closed:
                return
            if not frame:  # RFC 5626 keepalive ping: pong
                self.write(b"\r\n")
                continue
            reason = screen.check(frame, src.host, src.port, now, stream=True)
            if reason is not None:
                server.screen_drop(reason, src.host)
                if reason == "banned":
                    self.close()
                    return
                continue
            verdict = server.engine.receive(frame, src, now)
            if verdict.sends:
                server.send_all(verdict.sends)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def abort(self, reason: str, counted: bool = True, flush: bool = False) -> None:
        """Close for breaking a limit: counted by `reason`, an offense when it
        is one; at once, or (`flush`) once what was written is sent."""
        server = self.server
        if counted:
            server.count(reason)
        if reason in OFFENSES:
            server.engine.bans.offense(self.addr[0], reason, server.loop.time())
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
        conns = self.server.conns[self.channel]
        if conns.get(self.addr) is self:
            del conns[self.addr]
        if self.admitted:
            self.admitted = False
            self.server.conn_counts.release(self.addr[0])
