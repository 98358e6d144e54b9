"""The HEP v3 sender: each traced message, encoded (sbc.trace.hep), to a
collector over UDP or TCP, never holding up SIP.

`submit` appends to a bounded queue and returns; a full queue counts the
message as lost. The queue drains on the next loop turn. Over TCP the
connection is made and re-made in the background (backoff up to
RECONNECT_MAX_S); while it is down or its write buffer is over HIGH_WATER,
messages wait in the queue, and what overflows it is counted lost.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from ..config.trace import HepConfig
from ..trace.hep import encode
from ..trace.ring import Message
from .logsetup import get_logger

log = get_logger("sbc.io.hep")

HIGH_WATER = 1 << 20
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 30.0


class _Link(asyncio.Protocol, asyncio.DatagramProtocol):
    def __init__(self, sender: HepSender) -> None:
        self.sender = sender

    def connection_lost(self, exc: Exception | None) -> None:
        self.sender._lost_link(self)

    def resume_writing(self) -> None:
        self.sender._schedule()

    def error_received(self, exc: Exception) -> None:
        self.sender.errors += 1

    def data_received(self, data: bytes) -> None:
        return None  # a collector says nothing back


class HepSender:
    def __init__(self, cfg: HepConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg = cfg
        self.loop = loop
        self.queue: deque[tuple[Message, bytes]] = deque()
        self.sent = 0
        self.lost = 0
        self.errors = 0
        self.connects = 0
        self._transport: Any = None
        self._link: _Link | None = None
        self._scheduled = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._auth = cfg.auth_key.encode() if cfg.auth_key else None

    def start(self) -> None:
        self._closed = False
        self._task = self.loop.create_task(self._connect())

    def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def _connect(self) -> None:
        delay = RECONNECT_MIN_S
        addr = (self.cfg.host, self.cfg.port)
        while not self._closed:
            try:
                link = _Link(self)
                transport: asyncio.BaseTransport
                if self.cfg.transport == "udp":
                    transport, _ = await self.loop.create_datagram_endpoint(
                        lambda: link, remote_addr=addr)
                else:
                    transport, _ = await asyncio.wait_for(
                        self.loop.create_connection(lambda: link, *addr), 5.0)
            except (OSError, TimeoutError) as e:
                self.errors += 1
                log.warning("hep_connect_failed", collector=f"{addr[0]}:{addr[1]}",
                            transport=self.cfg.transport, error=str(e)[:200], retry_s=delay)
                await asyncio.sleep(delay)  # the backoff between attempts, not a wait for a state
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            self._transport, self._link = transport, link
            self.connects += 1
            self._schedule()
            return

    def _lost_link(self, link: _Link) -> None:
        if link is not self._link:
            return
        self._transport = self._link = None
        if not self._closed:
            self._task = self.loop.create_task(self._connect())

    def submit(self, msg: Message, call_id: bytes) -> None:
        if len(self.queue) >= self.cfg.queue:
            self.lost += 1
            return
        self.queue.append((msg, call_id))
        if not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        self._scheduled = True
        self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        queue, cfg, auth = self.queue, self.cfg, self._auth
        udp = cfg.transport == "udp"
        while queue:
            if transport.get_write_buffer_size() > HIGH_WATER:
                return  # resume_writing drains the rest
            msg, call_id = queue.popleft()
            try:
                packet = encode(msg.data, msg.src, msg.dst, msg.ts_us, tcp=msg.transport != "udp",
                                capture_id=cfg.capture_id, correlation_id=call_id, auth_key=auth)
            except ValueError:  # an address that is not an IP: nothing to say it with
                self.lost += 1
                continue
            if udp:
                transport.sendto(packet)
            else:
                transport.write(packet)
            self.sent += 1

    def stats(self) -> dict[str, Any]:
        return {"transport": self.cfg.transport, "collector": f"{self.cfg.host}:{self.cfg.port}",
                "connected": self._transport is not None, "sent": self.sent, "lost": self.lost,
                "queued": len(self.queue), "errors": self.errors}
