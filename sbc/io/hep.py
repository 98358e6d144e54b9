"""The HEP v3 sender: each traced message, encoded (sbc.trace.hep), to a
collector over UDP or TCP, never holding up SIP.

`submit_many` appends a call's messages to a bounded queue and returns; what
does not fit is counted lost ("queue_full"). The queue drains on a short
timer (FLUSH_S), where the packets are made in one batch (the encoder keeps the
chunks that only depend on the two ends, so a packet is one lookup and a few
packs) and, over TCP, written with one call per batch. Over TCP the
connection is made and re-made in the background (backoff up to
RECONNECT_MAX_S); while it is down or its write buffer is over HIGH_WATER,
messages wait in the queue, and what overflows it is counted lost. A message
whose address is not an IP is lost as "not_ip".

The figures (`stats`) feed /api/calls and the Prometheus metrics
(sbc.admin.trace_metrics).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from ..config.trace import HepConfig
from ..trace.hep import encode_many
from ..trace.ring import Message
from .logsetup import get_logger

log = get_logger("sbc.io.hep")

HIGH_WATER = 1 << 20
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 30.0
BATCH = 256  # packets made and written between two looks at the write buffer
# How long a message waits for its batch: at 1,000 CPS some 70 messages go in
# one, and a batch costs one timer instead of one callback per loop turn.
FLUSH_S = 0.005
LOST_REASONS = ("queue_full", "not_ip")


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
        # (Call-ID, its messages) as the capture handed them over; `queued`
        # counts the messages, which the cap bounds.
        self.queue: deque[tuple[bytes, list[Message]]] = deque()
        self.queued = 0
        self.sent = 0
        self.lost_by: dict[str, int] = dict.fromkeys(LOST_REASONS, 0)
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

    @property
    def lost(self) -> int:
        return sum(self.lost_by.values())

    def submit(self, msg: Message, call_id: bytes) -> None:
        self.submit_many([msg], call_id)

    def submit_many(self, msgs: list[Message], call_id: bytes) -> None:
        """Queue a call's messages (the list is kept, not copied: the caller
        hands it over); what is over the queue's cap is lost."""
        room = self.cfg.queue - self.queued
        if room < len(msgs):
            room = max(room, 0)
            self.lost_by["queue_full"] += len(msgs) - room
            if not room:
                return
            msgs = msgs[:room]
        self.queue.append((call_id, msgs))
        self.queued += len(msgs)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_later(FLUSH_S, self._flush)

    def _schedule(self) -> None:
        """Drain on the next loop turn (connected, or writable again)."""
        self._scheduled = True
        self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Make and send what waits, BATCH messages at a time, until the
        queue is empty or the connection's write buffer is over HIGH_WATER."""
        self._scheduled = False
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        queue, cfg, auth = self.queue, self.cfg, self._auth
        udp, capture_id = cfg.transport == "udp", cfg.capture_id
        pop = queue.popleft
        while queue:
            if transport.get_write_buffer_size() > HIGH_WATER:
                return  # resume_writing drains the rest
            batch = []
            taken = 0
            while queue and taken < BATCH:
                item = pop()
                batch.append(item)
                taken += len(item[1])
            self.queued -= taken
            packets: list[bytes] = []
            self.lost_by["not_ip"] += encode_many(batch, capture_id, auth, packets)
            if udp:
                for packet in packets:
                    transport.sendto(packet)
            elif packets:
                transport.write(b"".join(packets))
            self.sent += len(packets)

    def stats(self) -> dict[str, Any]:
        return {"transport": self.cfg.transport, "collector": f"{self.cfg.host}:{self.cfg.port}",
                "connected": self._transport is not None, "sent": self.sent, "lost": self.lost,
                "lost_by": dict(self.lost_by), "queued": self.queued, "queue": self.cfg.queue,
                "errors": self.errors, "connects": self.connects}
