"""UDP: the loop's datagram protocol callbacks feed the pipeline directly.

No task and no await per datagram: `datagram_received` hands the bytes, the
source (IPv4-mapped addresses unmapped) and the time to the pipeline, which
runs the engine (screen first) synchronously and sends what it returns.
"""

from __future__ import annotations

import asyncio
import socket

from ..core.verdict import MAPPED, Source, unmapped
from .pipeline import Pipeline


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
    __slots__ = ("channel", "pipeline", "received", "transport")

    def __init__(self, pipeline: Pipeline, channel: int) -> None:
        self.pipeline = pipeline
        self.channel = channel
        self.received = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            set_receive_buffer(sock, RCVBUF)

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        pipeline = self.pipeline
        self.received += 1
        host = addr[0]
        if host[:7] == MAPPED:
            host = unmapped(host)
        pipeline.receive(data, Source(self.channel, host, addr[1]), pipeline.loop.time())

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the peer's problem, not ours.
        self.pipeline.count("udp_error")
