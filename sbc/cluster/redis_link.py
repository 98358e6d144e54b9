"""The Redis side of the shared bans: a thin asyncio shell around BanSync.

One task owns the link. A session connects, subscribes to the ban channel,
then synchronises: it publishes what waited while the link was down, pushes
every ban in force here (the server keeps the longer of two, refuses one
lifted since, and announces only what it stored: see sbc.cluster.keys), and
loads the bans in force there. Then three loops run until one fails: the
reader applies announcements, the writer publishes this node's bans and
unbans in pipelined batches, the pinger notices a server that went silent.
A failure ends the session; the next one starts after a growing delay.

Nothing here runs per packet and nothing blocks the event loop: every
command has a timeout, and ban changes reach the engine's table between
messages, as the reader's or the writer's turn in the loop. While the link
is down the node serves on its own bans (degraded, in /readyz and
/metrics), and says so in one log line when the link goes and one when it
comes back.
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
from ..io.logsetup import get_logger
from ..state.bans import BanKeeper
from .events import encode
from .keys import BAN_SCRIPT, UNBAN_SCRIPT, Keys
from .link import Transition
from .merge import Outcome
from .session import RedisSession
from .sync import BanSync

__all__ = ["RedisLink", "make_cluster"]

log = get_logger("sbc.cluster")

BATCH = 500  # events per pipelined round trip
SCAN_COUNT = 1000
INVALID_LOG_INTERVAL_S = 10.0


def make_cluster(cfg: ClusterConfig, keeper: BanKeeper,
                 loop: asyncio.AbstractEventLoop) -> RedisLink | None:
    """The cluster link for `keeper`'s bans, or None when `cfg` is off."""
    if not cfg.enabled:
        return None
    sync = BanSync(keeper, node=cfg.node, instance=os.urandom(8).hex(), now=loop.time(),
                   max_pending=cfg.max_pending, retry_max_s=cfg.retry_max_s,
                   exempt=lambda host: keeper.table.exempt(host))
    keeper.node = cfg.node
    keeper.publish = sync.local
    return RedisLink(cfg, sync, loop)


class RedisLink(RedisSession):
    def __init__(self, cfg: ClusterConfig, sync: BanSync, loop: asyncio.AbstractEventLoop,
                 wall: Callable[[], float] = time.time) -> None:
        super().__init__(cfg, loop)
        self.sync = sync
        self.wall = wall
        self.keys = Keys(cfg.key_prefix)
        self._wake = asyncio.Event()
        self._shas: tuple[str, str] = ("", "")
        self._last_invalid_log = -INVALID_LOG_INTERVAL_S
        self._invalid_unlogged = 0
        sync.on_queued = self._wake.set

    def readiness(self) -> dict[str, Any]:
        link = self.sync.link
        return {"state": link.state.value, "degraded": link.degraded, "node": self.sync.node,
                "url": self.cfg.display_url,
                "since_s": round(self.loop.time() - link.since, 1)}

    def stats(self) -> dict[str, object]:
        return {**self.sync.stats(), "url": self.cfg.display_url}

    def _failed(self, why: str) -> None:
        self._report(self.sync.link.failed(self.loop.time(), why))

    def _retry_delay(self) -> float:
        return self.sync.link.retry_delay()

    # ------------------------------------------------------------ one session

    async def _session(self) -> None:
        client, (ban, unban) = await self._connect(BAN_SCRIPT, UNBAN_SCRIPT)
        self._shas = (ban, unban)
        pubsub = await self._subscribe(client, self.keys.channel)
        # Subscribed first, then synchronised: nothing falls between the two.
        queued = await self._drain()
        pushed = await self._push_in_force() if self.sync.resync or self.sync.link.degraded else 0
        loaded = await self._load()
        transition = self.sync.link.succeeded(self.loop.time())
        self._report(transition, published=queued, pushed=pushed, loaded=loaded)
        await self._until_one_fails(self._reader(pubsub), self._writer(), self._pinger(client))

    async def _reader(self, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None and message.get("type") == "message":
                self._apply(message.get("data", b""), live=True)

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._drain()
            if self.sync.resync:  # the queue overflowed: announce what is in force
                await self._push_in_force()

    async def _pinger(self, client: Redis) -> None:
        while True:
            await asyncio.sleep(self.cfg.ping_interval_s)
            await self._within(client.ping())

    # ------------------------------------------------------------ moving bans

    async def _drain(self) -> int:
        """Publish what is queued, a batch per round trip; a failed batch goes back."""
        sent = 0
        while len(self.sync.outbox):
            batch = self.sync.outbox.take(BATCH)
            try:
                await self._push(batch)
            except BaseException:
                self.sync.outbox.put_back(batch)
                raise
            sent += len(batch)
        return sent

    async def _push_in_force(self) -> int:
        self.sync.resync = False
        events = list(self.sync.in_force(self.loop.time(), self.wall()))
        for i in range(0, len(events), BATCH):
            await self._push(events[i:i + BATCH])
        return len(events)

    async def _push(self, events: list[Any]) -> None:
        client = self._client
        assert client is not None
        wall = self.wall()
        sent = []
        pipe = client.pipeline(transaction=False)
        for event in events:
            payload = encode(event)
            args = self.keys.args(event, payload, wall)
            if args is None:
                continue
            keys, argv = args
            pipe.evalsha(self._shas[0] if event.op == "ban" else self._shas[1], len(keys),
                         *keys, *argv)
            sent.append(event)
        if not sent:
            return
        results = await self._within(pipe.execute(raise_on_error=True),
                                     self.cfg.timeout_s * (1 + len(sent) // BATCH))
        for event, result in zip(sent, results):
            self.sync.pushed(event, int(result))

    async def _load(self) -> int:
        """Apply the bans in force in Redis (the longer expiry wins)."""
        client = self._client
        assert client is not None
        loaded = 0
        keys: list[bytes] = []
        cursor = 0
        while True:
            cursor, found = await self._within(
                client.scan(cursor=cursor, match=self.keys.ban_pattern, count=SCAN_COUNT))
            keys.extend(found)
            if len(keys) >= SCAN_COUNT or not cursor:
                if keys:
                    values = await self._within(client.mget(keys))
                    for value in values:
                        if value is not None:
                            loaded += self._apply(value, live=False) is Outcome.APPLIED
                keys = []
            if not cursor:
                return loaded

    def _apply(self, payload: Any, live: bool) -> Outcome:
        if not isinstance(payload, (bytes, str)):
            payload = b""
        outcome, _, bad = self.sync.receive(payload, self.loop.time(), self.wall(), live=live)
        if outcome is Outcome.INVALID:
            now = self.loop.time()
            if now - self._last_invalid_log >= INVALID_LOG_INTERVAL_S:
                log.warning("cluster_event_invalid", reason=bad, payload=repr(payload[:200]),
                            not_logged=self._invalid_unlogged)
                self._last_invalid_log, self._invalid_unlogged = now, 0
            else:
                self._invalid_unlogged += 1
        return outcome

    # ------------------------------------------------------------ logs

    def _report(self, t: Transition | None, **fields: Any) -> None:
        """One line per change of the link's state."""
        if t is None:
            return
        if t.new == "connected":
            log.info("cluster_connected", node=self.sync.node, cluster=self.cfg.display_url,
                     was=t.old.value, down_for_s=round(t.down_for_s, 1), failures=t.failures,
                     **fields)
        else:
            log.warning("cluster_lost", node=self.sync.node, cluster=self.cfg.display_url,
                        was=t.old.value, error=t.error,
                        serving="on this node's bans until the link is back")
