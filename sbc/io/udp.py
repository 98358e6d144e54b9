"""UDP: the loop's datagram protocol callbacks feed the engine directly.

No task and no await per datagram: `datagram_received` screens the raw bytes
(bans, rate limits, scanner signatures) before any parse, runs the engine
synchronously and hands what it returns to the server to send.
"""

from __future__ import annotations

import asyncio
import socket
from time import perf_counter
from typing import TYPE_CHECKING

from ..core.verdict import MAPPED, Channel, Source, unmapped

if TYPE_CHECKING:
    from .server import Server


RCVBUF = 8 * 1024 * 1024  # absorbs a flood's bursts while the loop is busy elsewhere


def set_receive_buffer(sock: socket.socket, size: int) -> int:
    """Ask for `size` bytes of socket receive buffer: SO_RCVBUFFORCE past the
    system's rmem_max when allowed (root or CAP_NET_ADMIN), else SO_RCVBUF."""
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    try:
        if force is not None:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        else:
            raise PermissionError
    except OSError:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        except OSError:
            pass
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


class UdpProtocol(asyncio.DatagramProtocol):
    __slots__ = ("channel", "received", "screened", "server", "transport")

    def __init__(self, server: Server, channel: int) -> None:
        self.server = server
        self.channel = channel
        self.screened = channel < Channel.PRIVATE  # the private side is VOS3000: not screened
        self.received = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            set_receive_buffer(sock, RCVBUF)

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        server = self.server
        now = server.loop.time()
        self.received += 1
        host = addr[0]
        if host[:7] == MAPPED:
            host = unmapped(host)
        if self.screened:
            # A banned source is the bulk of a flood: decided here, in two lookups.
            ban = server.banned.get(host)
            if ban is not None and now < ban.expires_at:
                server.banned_drops += 1
                return
            reason = server.screen.check(data, host, addr[1], now)
            if reason is not None:
                server.screen_drop(reason, host)
                return
        if self.received & 7:
            verdict = server.engine.receive(data, Source(self.channel, host, addr[1]), now)
        else:  # one message in eight is timed, for the processing-time histogram
            started = perf_counter()
            verdict = server.engine.receive(data, Source(self.channel, host, addr[1]), now)
            server.timer.observe(perf_counter() - started)
        if verdict.sends:
            server.send_all(verdict.sends)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the peer's problem, not ours.
        self.server.count("udp_error")
