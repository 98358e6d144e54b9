"""UDP: the loop's datagram protocol callbacks feed the pipeline directly.

No task and no await per datagram: `datagram_received` hands the bytes, the
source (IPv4-mapped addresses unmapped) and the time to the pipeline, which
runs the engine (screen first) synchronously and sends what it returns.
"""

from __future__ import annotations

import asyncio
import socket

from ..core.reasons import TransportEvent
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
    """One UDP socket: each datagram goes to the pipeline's engine as
    `(data, source, now)` and what the verdict carries goes out. The
    callback is a closure over what it needs (`Pipeline.datagram_handler`):
    for a flood of banned sources this call is most of sbc's work."""

    __slots__ = ("channel", "datagram_received", "pipeline", "transport")

    def __init__(self, pipeline: Pipeline, channel: int) -> None:
        self.pipeline = pipeline
        self.channel = channel
        self.transport: asyncio.DatagramTransport | None = None
        self.datagram_received = pipeline.datagram_handler(channel)  # type: ignore[method-assign, assignment]

    @property
    def received(self) -> int:
        return self.pipeline.received(self.channel)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            set_receive_buffer(sock, RCVBUF)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the peer's problem, not ours.
        self.pipeline.count(TransportEvent.UDP_ERROR)
