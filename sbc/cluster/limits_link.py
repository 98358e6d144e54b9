"""The Redis side of the shared call limits: a thin asyncio shell around
SharedLimits (sbc.cluster.limits).

One task owns a connection of its own (a slow ban sync never delays a
lease). A session connects, loads the two scripts (sbc.cluster.limit_keys),
writes this node's heartbeat, counts the live nodes, and registers every
call in progress; then two loops run until one fails:

- the syncer, woken by the engine when a lease runs low (or a call is
  refused for want of one), and every `TICK_S` otherwise: one pipelined
  round trip tops up every CPS lease below half and syncs every slot lease
  that gained or lost calls or runs low (slot leases at most every
  `SLOT_PASS_S` unless woken);
- the refresher, every third of `slot_ttl_s`: the heartbeat, the live
  nodes, and every call's slot renewed in one pipeline.

Nothing here runs per packet; the engine spends what the last round trip
brought. A failure (refused, timed out, a reply that makes no sense) puts
every limit on this node's share until the link is back: one log line when
that happens, one when the limits are shared again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from redis.asyncio import Redis

from ..config.cluster import ClusterConfig
from ..core.engine import Engine
from ..core.proxy.dialogs import Dialog
from ..io.logsetup import get_logger
from ..sip import header_param
from .limit_keys import SLOTS_SCRIPT, TOKENS_SCRIPT, LimitKeys
from .limits import ALL, Key, SharedLimits, SlotRequest, TokenLease, member
from .link import Transition
from .session import RedisSession

__all__ = ["LimitsLink", "make_limits"]

log = get_logger("sbc.cluster")

TICK_S = 0.02  # CPS leases below half are topped up at least this often
SLOT_PASS_S = 0.25  # slots of ended calls go back to the cluster within about this
SCAN_COUNT = 1000
INVALID_LOG_INTERVAL_S = 10.0


def make_limits(cfg: ClusterConfig, engine: Engine,
                loop: asyncio.AbstractEventLoop) -> LimitsLink | None:
    """The shared limits for `engine`, or None (cluster off, or not sharing limits)."""
    if not (cfg.enabled and cfg.share_limits):
        return None
    limits = SharedLimits(cfg.node, loop.time(), fallback_nodes=cfg.fallback_nodes,
                          retry_max_s=cfg.retry_max_s, tick_s=TICK_S)
    link = LimitsLink(cfg, limits, engine, loop)
    link.attach()
    return link


class LimitsLink(RedisSession):
    def __init__(self, cfg: ClusterConfig, limits: SharedLimits, engine: Engine,
                 loop: asyncio.AbstractEventLoop, wall: Callable[[], float] = time.time) -> None:
        super().__init__(cfg, loop)
        self.limits = limits
        self.engine = engine
        self.wall = wall
        self.keys = LimitKeys(cfg.key_prefix)
        self.ttl_ms = int(cfg.slot_ttl_s * 1000)
        self.settle_ms = int((cfg.slot_ttl_s + 2 * cfg.retry_max_s + cfg.connect_timeout_s) * 1000)
        self._wake = asyncio.Event()
        self._shas = ("", "")
        self._sync_lock = asyncio.Lock()
        self._last_slots = 0.0
        self._last_invalid_log = -INVALID_LOG_INTERVAL_S
        limits.wake = self._wake.set

    # ------------------------------------------------------------ lifecycle

    def attach(self) -> None:
        """Take over the engine's current limits (start, and after a reload)."""
        self.limits.attach(self.engine.policy, self.loop.time())
        self._wake.set()

    def readiness(self) -> dict[str, Any]:
        s = self.limits
        return {"mode": "fallback" if s.fallback or s.link.degraded else "shared",
                "state": s.link.state.value, "live_nodes": s.nodes,
                "rule": "each limit divided by the live nodes" if s.fallback else
                        "cluster-wide (Redis)"}

    def stats(self) -> dict[str, Any]:
        dialogs = self.engine.dialogs
        return self.limits.stats(
            lambda name: dialogs.active_total() if name == ALL else dialogs.active(name))

    def _failed(self, why: str) -> None:
        self._report(self.limits.lost(self.loop.time(), why))

    def _retry_delay(self) -> float:
        return self.limits.link.retry_delay()

    # ------------------------------------------------------------ one session

    async def _session(self) -> None:
        client, (slots, tokens) = await self._connect(SLOTS_SCRIPT, TOKENS_SCRIPT)
        self._shas = (slots, tokens)
        await self._heartbeat(client)
        await self._sync(refresh=True)
        self._report(self.limits.connected(self.loop.time()))
        await self._until_one_fails(self._syncer(), self._refresher(client))

    async def _syncer(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            except TimeoutError:
                pass
            woken = self._wake.is_set()
            self._wake.clear()
            await self._sync(woken=woken)

    async def _refresher(self, client: Redis) -> None:
        while True:
            await asyncio.sleep(self.cfg.slot_ttl_s / 3)
            await self._heartbeat(client)
            await self._sync(refresh=True)

    async def _heartbeat(self, client: Redis) -> None:
        """This node's heartbeat, and the live nodes (their heartbeats)."""
        await self._within(client.set(self.keys.node(self.cfg.node), str(round(self.wall(), 3)),
                                      px=self.ttl_ms))
        seen: set[bytes] = set()
        cursor: int = 0
        while True:
            cursor, found = await self._within(client.scan(cursor, match=self.keys.node_pattern,
                                                           count=SCAN_COUNT))
            seen.update(found)
            if not cursor or len(seen) > 10_000:
                break
        now, link = self.loop.time(), self.limits.link
        self.limits.live_nodes(len(seen), now,
                               settled=link.connected and now - link.since >= self.cfg.slot_ttl_s)

    # ------------------------------------------------------------ moving leases

    def _calls_of(self, name: str) -> Mapping[Key, Dialog]:
        dialogs = self.engine.dialogs
        if name != ALL:
            return dialogs.calls(name)
        every: dict[Key, Dialog] = {}
        for gateway in dialogs.gateways_active():
            every.update(dialogs.calls(gateway))
        return every

    def _name(self, key: Key, dlg: Dialog) -> str:
        tag = key[1] or header_param(dlg.from_value, b"tag") or b""
        return member(self.cfg.node, dlg.gateway, key[0], tag)

    async def _sync(self, refresh: bool = False, woken: bool = False) -> None:
        async with self._sync_lock:
            await self._sync_once(refresh, woken)

    async def _sync_once(self, refresh: bool, woken: bool) -> None:
        client = self._client
        assert client is not None
        limits = self.limits
        now = self.loop.time()
        slots: list[SlotRequest] = []
        if refresh or woken or now - self._last_slots >= SLOT_PASS_S \
                or any(not s.shared for s in limits.slots.values()):
            slots = limits.requests(self._calls_of, self._name, refresh=refresh)
            self._last_slots = now
        asks = limits.token_asks()
        if not slots and not asks:
            return
        start = 1 if limits.settle else 0
        pipe = client.pipeline(transaction=False)
        for r in slots:
            lease = r.lease
            pipe.evalsha(self._shas[0], 4, *self.keys.slots(lease.name), self.cfg.node,
                         lease.limit, self.ttl_ms, r.want, r.keep, lease.fallback, r.mine,
                         self.settle_ms, start, len(r.adds), *r.adds.values(), *r.dels)
        for bucket, n in asks:
            pipe.evalsha(self._shas[1], 1, self.keys.tokens(bucket.name), bucket.cluster_rate,
                         bucket.capacity(TICK_S), n, self._bucket_ttl_ms(bucket))
        results = await self._within(pipe.execute(raise_on_error=True),
                                     self.cfg.timeout_s * (1 + len(slots) // 50))
        now = self.loop.time()
        limits.settle = False
        limits.figures.syncs += 1
        if refresh:
            limits.figures.refreshes += 1
        for r, result in zip(slots, results[:len(slots)]):
            grant = self._number(result, 0, max(r.want, r.keep), "slots_reply")
            r.lease.granted(r, r.keep if grant is None else grant)
            self._bad(result, 3, "slots_value")
        for (bucket, n), result in zip(asks, results[len(slots):]):
            self._tokens(bucket, n, result, now)

    def _tokens(self, bucket: TokenLease, n: int, result: Any, now: float) -> None:
        granted = self._number(result, 0, n, "tokens_reply")
        self._bad(result, 1, "tokens_value")
        bucket.granted(granted or 0, now)
        self.limits.figures.tokens_granted += granted or 0

    def _bucket_ttl_ms(self, bucket: TokenLease) -> int:
        full_in = bucket.capacity(TICK_S) / max(bucket.cluster_rate, 1e-3)
        return int(min(3600.0, full_in + 10.0) * 1000)

    def _number(self, result: Any, low: int, high: int, what: str) -> int | None:
        """The first number of a script's reply, if it is one in [low, high]."""
        value = result[0] if isinstance(result, list) and result else None
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return value
        self._invalid(what, result)
        return None

    def _bad(self, result: Any, index: int, what: str) -> None:
        """The script found something it did not write, and removed it."""
        if isinstance(result, list) and len(result) > index and isinstance(result[index], int) \
                and result[index] > 0:
            self._invalid(what, result)

    def _invalid(self, what: str, result: Any) -> None:
        self.limits.invalid(what)
        now = self.loop.time()
        if now - self._last_invalid_log >= INVALID_LOG_INTERVAL_S:
            self._last_invalid_log = now
            log.warning("cluster_limits_invalid", node=self.cfg.node, what=what,
                        reply=repr(result)[:200], counts=dict(self.limits.figures.invalid))

    # ------------------------------------------------------------ logs

    def _report(self, t: Transition | None) -> None:
        """One line per change: shared, or on this node's share."""
        if t is None:
            return
        limits = self.limits
        if t.new == "connected":
            log.info("cluster_limits_shared", node=self.cfg.node, cluster=self.cfg.display_url,
                     was=t.old.value, down_for_s=round(t.down_for_s, 1), failures=t.failures,
                     live_nodes=limits.nodes,
                     calls={name: s.cap() for name, s in limits.slots.items()})
        else:
            log.warning("cluster_limits_fallback", node=self.cfg.node,
                        cluster=self.cfg.display_url, was=t.old.value, error=t.error,
                        live_nodes=limits.nodes,
                        rule="each limit divided by the live nodes until Redis is back",
                        concurrent={name: s.fallback for name, s in limits.slots.items()},
                        cps={name: round(b.rate, 3) for name, b in limits.tokens.items()})
