"""The Redis side of the shared toll-fraud watch: a thin asyncio shell around
FraudShare (sbc.cluster.fraud_share), on a connection of its own.

A session connects, loads the two scripts (sbc.cluster.fraud_keys),
subscribes to the channel, publishes what waited, pushes the blocks in force
here and loads those in force there; then four loops run until one fails:
the reader applies the others' blocks and clears, the writer publishes this
node's, the counter pass (every `PASS_S`) writes this node's figures that
changed and reads every rule's figures in one pipelined round trip, and the
pinger notices a server that went silent.

Nothing here runs per packet: the engine judges on what the last pass read,
so the others' figures are at most about `PASS_S` + `PASS_S` old (told, then
read), and a block reaches the other nodes within one round trip of being
made. A failure ends the session: every node counts alone until the link is
back, says so in one log line (and one when it is back), in /readyz and in
/metrics.
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
from ..core.fraud.watch import Cleared, FraudWatch
from ..io.logsetup import get_logger
from .fraud_events import FraudEvent, FraudOp, encode_contribution, encode_event
from .fraud_keys import (BLOCK_SCRIPT, CLEAR_SCRIPT, COUNTS_TTL_S, MARK_S, UNTIL_CLEARED_S,
                         FraudKeys)
from .fraud_share import FraudShare
from .link import Transition
from .session import RedisSession

__all__ = ["FraudLink", "make_fraud_link"]

log = get_logger("sbc.cluster")

PASS_S = 0.5  # the counter pass: this node's figures told, the others' read
BATCH = 200
SCAN_COUNT = 1000
INVALID_LOG_INTERVAL_S = 10.0


def make_fraud_link(cfg: ClusterConfig, watch: FraudWatch,
                    loop: asyncio.AbstractEventLoop) -> FraudLink | None:
    """The shared watch, or None (cluster off, or not sharing the watch)."""
    if not (cfg.enabled and getattr(cfg, "share_fraud", True)):
        return None
    share = FraudShare(watch, node=cfg.node, instance=os.urandom(8).hex(), now=loop.time(),
                       max_pending=cfg.max_pending, retry_max_s=cfg.retry_max_s)
    return FraudLink(cfg, share, loop)


class FraudLink(RedisSession):
    def __init__(self, cfg: ClusterConfig, share: FraudShare, loop: asyncio.AbstractEventLoop,
                 wall: Callable[[], float] = time.time) -> None:
        super().__init__(cfg, loop)
        self.share = share
        self.wall = wall
        self.keys = FraudKeys(cfg.key_prefix)
        self._wake = asyncio.Event()
        self._shas = ("", "")
        self._last_invalid_log = -INVALID_LOG_INTERVAL_S
        share.on_queued = self._wake.set

    def readiness(self) -> dict[str, Any]:
        return self.share.readiness()

    def stats(self) -> dict[str, Any]:
        return self.share.stats()

    def _failed(self, why: str) -> None:
        self._report(self.share.lost(self.loop.time(), why))

    def _retry_delay(self) -> float:
        return self.share.link.retry_delay()

    # ------------------------------------------------------------ one session

    async def _session(self) -> None:
        client, (block, clear) = await self._connect(BLOCK_SCRIPT, CLEAR_SCRIPT)
        self._shas = (block, clear)
        pubsub = await self._subscribe(client, self.keys.channel)
        # Subscribed first, then synchronised: nothing falls between the two.
        await self._drain()
        pushed = await self._push_in_force() if self.share.resync or self.share.link.degraded \
            else 0
        loaded = await self._load()
        await self._pass(client)
        self._report(self.share.connected(self.loop.time()), pushed=pushed, loaded=loaded)
        await self._until_one_fails(self._reader(pubsub), self._writer(), self._counter(client),
                                    self._pinger(client))

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
            if self.share.resync:
                await self._push_in_force()

    async def _counter(self, client: Redis) -> None:
        while True:
            await asyncio.sleep(PASS_S)
            await self._pass(client)

    async def _pinger(self, client: Redis) -> None:
        while True:
            await asyncio.sleep(self.cfg.ping_interval_s)
            await self._within(client.ping())

    # ------------------------------------------------------------ blocks and clears

    async def _drain(self) -> None:
        while len(self.share.outbox):
            batch = self.share.take(BATCH)
            try:
                await self._push(batch)
            except BaseException:
                self.share.put_back(batch)
                raise

    async def _push_in_force(self) -> int:
        self.share.resync = False
        events = list(self.share.in_force(self.loop.time()))
        for i in range(0, len(events), BATCH):
            await self._push(events[i:i + BATCH])
        return len(events)

    async def _push(self, events: list[FraudEvent]) -> None:
        client = self._client
        assert client is not None
        wall = self.wall()
        sent: list[FraudEvent] = []
        pipe = client.pipeline(transaction=False)
        for e in events:
            payload = encode_event(e)
            if e.op is FraudOp.BLOCK:
                ttl_ms = int(((e.until if e.until is not None else wall + UNTIL_CLEARED_S)
                              - wall) * 1000)
                if ttl_ms <= 0:
                    continue
                keys = [self.keys.block(e.gateway, e.rule), *self.keys.marks(e.gateway, e.rule)]
                pipe.evalsha(self._shas[0], len(keys), *keys, payload, ttl_ms,
                             int(e.at * 1000), self.keys.channel)
            else:
                lifted = await self._scan(self.keys.blocks_of(e.gateway, e.rule))
                keys = [self.keys.mark(e.gateway, e.rule), *lifted]
                pipe.evalsha(self._shas[1], len(keys), *keys, payload, int(e.at * 1000),
                             MARK_S * 1000, self.keys.channel)
            sent.append(e)
        if not sent:
            return
        results = await self._within(pipe.execute(raise_on_error=True),
                                     self.cfg.timeout_s * (1 + len(sent) // BATCH))
        now = self.loop.time()
        for e, result in zip(sent, results):
            if e.op is FraudOp.BLOCK:
                self._log_cleared(self.share.pushed(e, int(result), now), "cluster")
            else:
                self.share.sent["clear"] += 1

    async def _scan(self, pattern: str) -> list[str]:
        client = self._client
        assert client is not None
        found: list[str] = []
        cursor = 0
        while True:
            cursor, keys = await self._within(client.scan(cursor=cursor, match=pattern,
                                                          count=SCAN_COUNT))
            found.extend(k.decode() if isinstance(k, bytes) else str(k) for k in keys)
            if not cursor or len(found) > 100_000:
                return found

    async def _load(self) -> int:
        """Apply the blocks in force in Redis."""
        client = self._client
        assert client is not None
        keys = await self._scan(self.keys.block_pattern)
        loaded = 0
        for i in range(0, len(keys), SCAN_COUNT):
            for value in await self._within(client.mget(keys[i:i + SCAN_COUNT])):
                if value is not None:
                    loaded += self._apply(value, live=False) == "applied"
        return loaded

    def _apply(self, payload: Any, live: bool) -> str:
        if not isinstance(payload, (bytes, str)):
            payload = b""
        outcome, event, cleared = self.share.receive(payload, self.loop.time(), self.wall(),
                                                     live=live)
        if outcome == "invalid":
            now = self.loop.time()
            if now - self._last_invalid_log >= INVALID_LOG_INTERVAL_S:
                log.warning("cluster_fraud_event_invalid", payload=repr(payload[:200]))
                self._last_invalid_log = now
        elif outcome == "applied" and event is not None:
            if event.op is FraudOp.BLOCK:
                log.warning("fraud_block_adopted", gateway=event.gateway, rule=event.rule,
                            node=event.node, metric=event.metric.value, figure=event.figure,
                            threshold=event.threshold)
            else:
                self._log_cleared(cleared, "cluster", by=event.by, node=event.node,
                                  gateway=event.gateway, rule=event.rule, note=event.note)
        return outcome

    # ------------------------------------------------------------ counters

    async def _pass(self, client: Redis) -> None:
        """This node's changed figures written, every rule's read: one round trip."""
        share = self.share
        now, wall = self.loop.time(), self.wall()
        writes, deletes = share.contributions(now, wall)
        rules = [r.name for r in share.watch.rules.rules]
        if not (rules or writes or deletes):
            return  # no rule configured: nothing to tell or read
        pipe = client.pipeline(transaction=False)
        for rule, fields in writes.items():
            key = self.keys.counts(rule)
            pipe.hset(key, mapping={k: encode_contribution(c) for k, c in fields.items()})
            pipe.expire(key, COUNTS_TTL_S)
        for rule, names in deletes.items():
            pipe.hdel(self.keys.counts(rule), *names)
        for rule in rules:
            pipe.hgetall(self.keys.counts(rule))
        try:
            results = await self._within(pipe.execute(raise_on_error=True))
        except BaseException:
            share.unpublished(writes)
            raise
        hashes = dict(zip(rules, results[len(results) - len(rules):]))
        stale = share.take_others(hashes, self.loop.time(), self.wall())
        if stale:
            pipe = client.pipeline(transaction=False)
            for rule, names in stale.items():
                pipe.hdel(self.keys.counts(rule), *names)
            await self._within(pipe.execute(raise_on_error=True))

    # ------------------------------------------------------------ logs

    def _log_cleared(self, cleared: list[Cleared], via: str, **fields: Any) -> None:
        if not cleared and not fields:
            return
        fields.setdefault("by", cleared[0].by if cleared else "cluster")
        if cleared and "gateway" not in fields:
            fields.update(gateway=cleared[0].gateway, rule=cleared[0].rule)
        log.info("fraud_cleared", scopes=len(cleared),
                 lifted_block=any(c.lifted for c in cleared), via=via, **fields)

    def _report(self, t: Transition | None, **fields: Any) -> None:
        """One line per change of the link's state."""
        if t is None:
            return
        if t.new == "connected":
            log.info("cluster_fraud_shared", node=self.share.node, cluster=self.cfg.display_url,
                     was=t.old.value, down_for_s=round(t.down_for_s, 1), failures=t.failures,
                     **fields)
        else:
            log.warning("cluster_fraud_alone", node=self.share.node,
                        cluster=self.cfg.display_url, was=t.old.value, error=t.error,
                        rule="each node counts its own calls and keeps its blocks "
                             "until Redis is back")
