"""UDP: the loop's datagram protocol callbacks feed the engine directly.

No task and no await per datagram: `datagram_received` screens the raw bytes
(bans, rate limits, scanner signatures) before any parse, runs the engine
synchronously and hands what it returns to the server to send.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..core.verdict import Channel, Source

if TYPE_CHECKING:
    from ..server import Server


class UdpProtocol(asyncio.DatagramProtocol):
    __slots__ = ("server", "channel", "transport", "screened")

    def __init__(self, server: "Server", channel: int) -> None:
        self.server = server
        self.channel = channel
        self.screened = channel < Channel.PRIVATE  # the private side is VOS3000: not screened
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        server = self.server
        now = server.loop.time()
        if self.screened:
            reason = server.screen.check(data, addr[0], addr[1], now)
            if reason is not None:
                server.screen_drop(reason, addr[0])
                return
        verdict = server.engine.receive(data, Source(self.channel, addr[0], addr[1]), now)
        if verdict.sends:
            server.send_all(verdict.sends)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the peer's problem, not ours.
        self.server.count("udp_error")
