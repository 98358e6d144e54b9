"""The shared limits' server-side scripts against a real redis-server:
atomic under concurrent callers (asyncio.gather over many connections), on
the server's clock, pruning what expired, and repairing what they did not
write instead of failing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from sbc.cluster.limit_keys import SLOTS_SCRIPT, TOKENS_SCRIPT, LimitKeys
from tests.redis_server import RedisServer, redis_server  # noqa: F401 -- the fixture

KEYS = LimitKeys("t:")


@pytest.fixture
async def clients(redis_server: RedisServer) -> AsyncIterator[list[Redis]]:  # noqa: F811
    made = [Redis.from_url(redis_server.url) for _ in range(8)]
    try:
        yield made
    finally:
        for c in made:
            await c.aclose()


async def _slots(c: Redis, node: str, *, limit: int, want: int, keep: int = 0, mine: int = 0,
                 share: int = 0, adds: tuple[str, ...] = (), dels: tuple[str, ...] = (),
                 ttl_ms: int = 5000, start: int = 0, settle_ms: int = 0) -> list[int]:
    result: list[int] = await c.eval(SLOTS_SCRIPT, 4, *KEYS.slots("gw"), node, limit, ttl_ms,
                                     want, keep, share, mine, settle_ms, start, len(adds),
                                     *adds, *dels)
    return result


async def _tokens(c: Redis, rate: float, cap: float, want: int) -> int:
    granted, _bad = await c.eval(TOKENS_SCRIPT, 1, KEYS.tokens("gw"), rate, cap, want, 60_000)
    return int(granted)


async def test_tokens_granted_never_exceed_the_bucket_under_concurrent_callers(
        clients: list[Redis]) -> None:
    rate, cap = 50.0, 10.0
    start = time.monotonic()
    granted = 0
    while time.monotonic() - start < 1.0:
        got = await asyncio.gather(*(_tokens(c, rate, cap, 3) for c in clients for _ in range(4)))
        granted += sum(got)
    elapsed = time.monotonic() - start
    print(f"\n{granted} tokens over {elapsed:.2f} s from a {rate:.0f}/s bucket of {cap:.0f}")
    assert granted <= cap + rate * (elapsed + 0.05)
    assert granted >= rate * elapsed * 0.9  # demand all the time: the rate is given out


async def test_slot_leases_never_add_up_beyond_the_limit(clients: list[Redis]) -> None:
    limit = 10
    # 32 nodes at once, each asking for 3 free slots
    got = await asyncio.gather(*(_slots(clients[i % 8], f"n{i}", limit=limit, want=3)
                                 for i in range(32)))
    grants = [g[0] for g in got]
    assert sum(grants) == limit and max(grants) == 3, grants
    # a node turns its free slots into calls: the count stays the same
    holder = next(i for i, g in enumerate(grants) if g == 3)
    c = clients[0]
    g = await _slots(c, f"n{holder}", limit=limit, want=3, keep=0, mine=3,
                     adds=("x:1", "x:2", "x:3"))
    assert g[0] == 0 and g[1] == 3  # no room left for a lease: the others hold it
    # nobody can get more than the limit, whatever it asks
    again = await asyncio.gather(*(_slots(clients[i % 8], f"n{i}", limit=limit, want=5,
                                          keep=grants[i]) for i in range(32) if i != holder))
    others = sum(a[0] for a in again)
    assert others + 3 <= limit


async def test_a_dead_nodes_slots_expire_with_their_ttl(clients: list[Redis]) -> None:
    c = clients[0]
    g = await _slots(c, "dead", limit=4, want=1, mine=3, adds=("d:1", "d:2", "d:3"), ttl_ms=300)
    assert g[:3] == [1, 3, 0]
    assert (await _slots(c, "alive", limit=4, want=4))[0] == 0  # full: 3 calls + 1 lease
    await asyncio.sleep(0.35)
    g = await _slots(c, "alive", limit=4, want=4)
    assert g[0] == 4 and g[1] == 0  # the dead node's calls and lease pruned


async def test_settling_caps_each_node_at_its_share(clients: list[Redis]) -> None:
    c = clients[0]
    g = await _slots(c, "back", limit=10, want=8, share=5, mine=2, adds=("b:1", "b:2"),
                     start=1, settle_ms=500)
    assert g[0] == 3 and g[4] == 1  # 2 calls + 3 free = its share of 5
    g = await _slots(c, "other", limit=10, want=8, share=5, mine=0)
    assert g[0] == 5  # the other node's share, while it settles
    await asyncio.sleep(0.55)
    g = await _slots(c, "back", limit=10, want=8, share=5, mine=2, keep=3)
    assert g[4] == 0 and g[0] == 3  # settled: what is left (10 - 2 - 5)


async def test_redis_restarted_empty_starts_a_settling_period(clients: list[Redis]) -> None:
    c = clients[0]
    await c.delete(KEYS.epoch)
    g = await _slots(c, "a", limit=10, want=8, share=5, settle_ms=300)
    assert g[4] == 1 and g[0] == 5


async def test_values_the_scripts_did_not_write_are_repaired(clients: list[Redis],
                                                             redis_server: Any) -> None:  # noqa: F811
    c = clients[0]
    await c.set(KEYS.tokens("gw"), "garbage")
    granted, bad = await c.eval(TOKENS_SCRIPT, 1, KEYS.tokens("gw"), 10, 5, 2, 60_000)
    assert (granted, bad) == (2, 1)
    await c.hset(KEYS.tokens("gw"), mapping={"t": "nan", "s": "x"})
    granted, bad = await c.eval(TOKENS_SCRIPT, 1, KEYS.tokens("gw"), 10, 5, 2, 60_000)
    assert bad == 1 and granted == 0  # unreadable: empty, not full
    slots, leases = KEYS.slots("gw")[:2]
    await c.set(slots, "garbage")
    await c.hset(leases, mapping={"evil": "lots", "other": "3:99999999999999"})
    g = await _slots(c, "a", limit=10, want=10)
    assert g[3] == 2 and g[2] == 3 and g[0] == 7  # two repairs; a valid lease is respected
    assert await c.hget(leases, "evil") is None
