"""The Redis side of the shared registrations: a thin asyncio shell around
RemoteBindings and the Outbox (sbc.cluster.registrations).

Redis holds, per node, one key per account it holds a binding of
(`<prefix>reg:<node>:<account>`, expiring with the binding) and the node's
heartbeat with its private address (`<prefix>regnode:<node>`, expiring after
`slot_ttl_s`); every change is announced on `<prefix>registrations`.

A session connects, subscribes, writes the heartbeat (and announces it),
pushes this node's bindings in force (at start and after the link was down:
Redis may have lost them), loads the others' (and deletes keys of this node
for accounts it no longer holds), then runs three loops until one fails: the
reader applies announcements, the writer publishes this node's changes in
pipelined batches, the refresher renews the heartbeat and reads the live
nodes every third of the TTL. Nothing here runs per packet: the engine asks
RemoteBindings, in memory. Every command has a timeout; while the link is
down the node serves its own phones, and the others' until their nodes'
heartbeats are older than the TTL.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from ..config.cluster import ClusterConfig
from ..core.engine import Engine
from ..core.identify.registrar import Binding
from ..io.logsetup import get_logger
from .events import Invalid
from .link import Link, Transition
from .registrations import (
    NodeRecord,
    Outbox,
    RegEvent,
    RegOp,
    RemoteBindings,
    decode,
    decode_node,
    encode,
    encode_node,
    is_node_payload,
)
from .session import RedisSession

__all__ = ["RegistrationsLink", "make_registrations"]

log = get_logger("sbc.cluster")

BATCH = 500
SCAN_COUNT = 1000
INVALID_LOG_INTERVAL_S = 10.0


def make_registrations(cfg: ClusterConfig, engine: Engine, private: tuple[str, int],
                       own: frozenset[tuple[str, int]],
                       loop: asyncio.AbstractEventLoop) -> RegistrationsLink | None:
    """The shared registrations of `engine`, or None (cluster off, or not sharing them).
    `private` is where the other nodes relay to this one."""
    if not (cfg.enabled and cfg.share_registrations) or engine.registrar is None:
        return None
    remote = RemoteBindings(cfg.node, max_entries=cfg.max_remote_bindings,
                            node_ttl_s=cfg.slot_ttl_s, own=own)
    link = RegistrationsLink(cfg, remote, engine, private, loop)
    engine.ctx.nodes = remote
    return link


class RegistrationsLink(RedisSession):
    def __init__(self, cfg: ClusterConfig, remote: RemoteBindings, engine: Engine,
                 private: tuple[str, int], loop: asyncio.AbstractEventLoop,
                 wall: Callable[[], float] = time.time) -> None:
        super().__init__(cfg, loop)
        self.remote = remote
        self.engine = engine
        self.wall = wall
        self.instance = os.urandom(8).hex()
        self.record = NodeRecord(cfg.node, self.instance, *private)
        self.relayable = private[0] not in ("0.0.0.0", "::")  # an address the others can reach
        self.link = Link(loop.time(), retry_max_s=cfg.retry_max_s)
        self.outbox = Outbox(cfg.max_pending)
        self.resync = True  # push every binding in force at the next chance
        self.channel = f"{cfg.key_prefix}registrations"
        self._wake = asyncio.Event()
        self._last_invalid_log = -INVALID_LOG_INTERVAL_S
        self.sent = 0
        if not self.relayable:
            log.warning("cluster_registrations_unreachable", node=cfg.node,
                        private=f"{private[0]}:{private[1]}",
                        why="set private.advertise_host: other nodes cannot relay calls to this one")

    # ------------------------------------------------------------ keys

    def _key(self, aor: str, node: str | None = None) -> str:
        return f"{self.cfg.key_prefix}reg:{node or self.cfg.node}:{aor}"

    def _node_key(self) -> str:
        return f"{self.cfg.key_prefix}regnode:{self.cfg.node}"

    # ------------------------------------------------------------ this node's changes

    def local(self, aor: str, bindings: list[Binding]) -> None:
        """The registrar's bindings of `aor` changed (a REGISTER, an expiry)."""
        now, wall = self.loop.time(), self.wall()
        if self.outbox.put(self._event(aor, bindings, now, wall)) is False:
            self.resync = True
        self._wake.set()

    def _event(self, aor: str, bindings: list[Binding], now: float, wall: float) -> RegEvent:
        live = [b.expires_at for b in bindings if b.expires_at > now]
        if not live:
            return RegEvent(RegOp.UNBIND, aor, self.cfg.node, self.instance, wall, wall)
        return RegEvent(RegOp.BIND, aor, self.cfg.node, self.instance, wall,
                        wall + (max(live) - now))

    def _in_force(self) -> list[RegEvent]:
        registrar = self.engine.registrar
        assert registrar is not None
        now, wall = self.loop.time(), self.wall()
        return [e for aor in registrar.aors()
                if (e := self._event(aor, registrar.lookup(aor, now), now, wall)).op is RegOp.BIND]

    # ------------------------------------------------------------ figures

    def readiness(self) -> dict[str, Any]:
        now = self.loop.time()
        return {"state": self.link.state.value, "degraded": self.link.degraded,
                "remote_bindings": len(self.remote), "nodes": self.remote.nodes(now)}

    def stats(self) -> dict[str, Any]:
        return {"state": self.link.state.value, "remote_bindings": len(self.remote),
                "pending": len(self.outbox), "dropped": self.outbox.dropped, "sent": self.sent,
                "nodes": self.remote.nodes(self.loop.time()), **dict(self.remote.counts)}

    def rows(self, limit: int) -> list[dict[str, Any]]:
        return self.remote.rows(self.loop.time(), limit)

    # ------------------------------------------------------------ one session

    def _failed(self, why: str) -> None:
        self._report(self.link.failed(self.loop.time(), why))

    def _retry_delay(self) -> float:
        return self.link.retry_delay()

    async def _session(self) -> None:
        client, _ = await self._connect()
        pubsub = await self._subscribe(client, self.channel)
        await self._heartbeat(client, announce=True)
        if self.resync or self.link.degraded:
            self.resync = False
            self.outbox.take(len(self.outbox))  # superseded by the full push
            await self._push(client, self._in_force())
        loaded = await self._load(client)
        self._report(self.link.succeeded(self.loop.time()), loaded=loaded)
        await self._until_one_fails(self._reader(pubsub), self._writer(client),
                                    self._refresher(client))

    async def _reader(self, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None and message.get("type") == "message":
                self._apply(message.get("data", b""))

    async def _writer(self, client: Redis) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.resync:
                self.resync = False
                self.outbox.take(len(self.outbox))
                await self._push(client, self._in_force())
            while len(self.outbox):
                batch = self.outbox.take(BATCH)
                try:
                    await self._push(client, batch)
                except BaseException:
                    self.outbox.put_back(batch)
                    raise

    async def _refresher(self, client: Redis) -> None:
        while True:
            await asyncio.sleep(self.cfg.slot_ttl_s / 3)
            await self._heartbeat(client)
            self.remote.expire(self.loop.time())

    async def _heartbeat(self, client: Redis, announce: bool = False) -> None:
        """This node's heartbeat, then every live node's (the others' addresses)."""
        if self.relayable:
            payload = encode_node(self.record)
            pipe = client.pipeline(transaction=False)
            pipe.set(self._node_key(), payload, px=int(self.cfg.slot_ttl_s * 1000))
            if announce:
                pipe.publish(self.channel, payload)
            await self._within(pipe.execute(raise_on_error=True))
        values = await self._values(f"{self.cfg.key_prefix}regnode:*")
        records = []
        for _, value in values:
            try:
                records.append(decode_node(value))
            except Invalid as bad:
                self._invalid(bad.reason, value)
        self.remote.nodes_seen(records, self.loop.time())

    async def _push(self, client: Redis, events: list[RegEvent]) -> None:
        for i in range(0, len(events), BATCH):
            pipe = client.pipeline(transaction=False)
            wall = self.wall()
            for event in events[i:i + BATCH]:
                payload = encode(event)
                ttl_ms = int((event.expires_wall - wall) * 1000)
                if event.op is RegOp.BIND and ttl_ms > 0:
                    pipe.set(self._key(event.aor), payload, px=ttl_ms)
                else:
                    pipe.delete(self._key(event.aor))
                pipe.publish(self.channel, payload)
            await self._within(pipe.execute(raise_on_error=True))
            self.sent += len(events[i:i + BATCH])

    async def _load(self, client: Redis) -> int:
        """Take in the other nodes' bindings; drop this node's keys of accounts
        it no longer holds (left by an earlier run)."""
        registrar = self.engine.registrar
        assert registrar is not None
        own_prefix = self._key("").encode()
        now = self.loop.time()
        stale: list[bytes] = []
        loaded = 0
        for key, value in await self._values(f"{self.cfg.key_prefix}reg:*"):
            if key.startswith(own_prefix):
                aor = key[len(own_prefix):].decode("utf-8", "replace")
                if not registrar.lookup(aor, now):
                    stale.append(key)
                continue
            loaded += self._apply(value) in ("added", "updated")
        if stale:
            await self._within(client.delete(*stale))
        return loaded

    async def _values(self, pattern: str) -> list[tuple[bytes, Any]]:
        """Every key matching `pattern` with its value (SCAN, then MGET per batch)."""
        client = self._client
        assert client is not None
        found: list[tuple[bytes, Any]] = []
        cursor = 0
        while True:
            cursor, keys = await self._within(client.scan(cursor=cursor, match=pattern,
                                                          count=SCAN_COUNT))
            if keys:
                values = await self._within(client.mget(keys))
                found.extend((k, v) for k, v in zip(keys, values) if v is not None)
            if not cursor or len(found) > 10 * self.remote.max_entries:
                return found

    def _apply(self, payload: Any) -> str:
        if not isinstance(payload, (bytes, str)):
            payload = b""
        now, wall = self.loop.time(), self.wall()
        try:
            if is_node_payload(payload):
                outcome = self.remote.node_seen(decode_node(payload), now)
            else:
                outcome = self.remote.apply(decode(payload, wall), now, wall)
        except Invalid as bad:
            self._invalid(bad.reason, payload)
            return "invalid"
        self.remote.counts[outcome] += 1
        return outcome

    # ------------------------------------------------------------ logs

    def _invalid(self, reason: str, payload: Any) -> None:
        self.remote.counts[f"invalid_{reason}"] += 1
        now = self.loop.time()
        if now - self._last_invalid_log >= INVALID_LOG_INTERVAL_S:
            self._last_invalid_log = now
            log.warning("cluster_registration_invalid", reason=reason,
                        payload=repr(payload)[:200])

    def _report(self, t: Transition | None, **fields: Any) -> None:
        if t is None:
            return
        if t.new == "connected":
            log.info("cluster_registrations_shared", node=self.cfg.node,
                     cluster=self.cfg.display_url, was=t.old.value,
                     down_for_s=round(t.down_for_s, 1), failures=t.failures,
                     nodes=self.remote.nodes(self.loop.time()), **fields)
        else:
            log.warning("cluster_registrations_lost", node=self.cfg.node,
                        cluster=self.cfg.display_url, was=t.old.value, error=t.error,
                        serving="this node's phones; the others' until their nodes' "
                                "heartbeats are older than cluster.slot_ttl_s")
