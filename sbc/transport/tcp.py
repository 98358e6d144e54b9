"""TCP on the public side: one protocol instance per connection, framing by
Content-Length, and a map from the caller's flow (peer address) to its
connection so responses and in-dialog requests reuse it (RFC 3261 §18.2.2)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..core.verdict import PUBLIC_TCP, Source
from ..sip import SipParseError, StreamFramer

if TYPE_CHECKING:
    from ..server import Server


class TcpConnection(asyncio.Protocol):
    __slots__ = ("server", "transport", "addr", "framer", "last_active")

    def __init__(self, server: "Server") -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.addr: tuple[str, int] = ("", 0)
        lim = server.cfg.limits
        self.framer = StreamFramer(lim.max_tcp_message, lim.tcp_buffer)
        self.last_active = server.loop.time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.addr = (peer[0], peer[1])
        if self.server.screen.bans.is_banned(self.addr[0], self.server.loop.time()):
            self.server.screen_drop("banned", self.addr[0])
            transport.close()
            return
        conns = self.server.tcp_conns
        if len(conns) >= self.server.cfg.limits.max_tcp_connections:
            self.server.count("tcp_connection_cap")
            transport.close()
            return
        conns[self.addr] = self

    def data_received(self, data: bytes) -> None:
        server = self.server
        now = self.last_active = server.loop.time()
        try:
            frames = self.framer.feed(data)
        except SipParseError as e:
            server.count("tcp_framing_" + e.reason)
            self.close()
            return
        src = Source(PUBLIC_TCP, self.addr[0], self.addr[1])
        screen = server.screen
        for frame in frames:
            if not frame:  # RFC 5626 keepalive ping: pong
                self.write(b"\r\n")
                continue
            reason = screen.check(frame, src.host, src.port, now)
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

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        conns = self.server.tcp_conns
        if conns.get(self.addr) is self:
            del conns[self.addr]
