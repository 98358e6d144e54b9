"""The shared fraud blocks' server-side scripts against a real redis-server:
the block ending later wins, a clear (also of a "*" pattern) leaves a mark
that refuses a block made before it, and only what is stored is announced."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from sbc.cluster.fraud_keys import BLOCK_SCRIPT, CLEAR_SCRIPT, FraudKeys
from tests.redis_server import RedisServer, redis_server  # noqa: F401 -- the fixture

KEYS = FraudKeys("t:")


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Redis]:  # noqa: F811
    c = Redis.from_url(redis_server.url)
    try:
        yield c
    finally:
        await c.aclose()


async def _block(c: Redis, payload: str, ttl_ms: int, made_ms: int, gw: str = "acme") -> int:
    keys = [KEYS.block(gw, "premium"), *KEYS.marks(gw, "premium")]
    return int(await c.eval(BLOCK_SCRIPT, len(keys), *keys, payload, ttl_ms, made_ms,
                            KEYS.channel))


async def _clear(c: Redis, gw: str, rule: str, at_ms: int, *lifted: str) -> None:
    keys = [KEYS.mark(gw, rule), *lifted]
    await c.eval(CLEAR_SCRIPT, len(keys), *keys, "clear", at_ms, 60_000, KEYS.channel)


async def test_the_later_block_wins_and_a_clear_refuses_older_blocks(client: Redis) -> None:
    sub = client.pubsub()
    await sub.subscribe(KEYS.channel)
    assert await _block(client, "a", 10_000, 1000) == 1
    assert await _block(client, "b", 5_000, 1001) == 0  # ends sooner: kept the first
    assert await client.get(KEYS.block("acme", "premium")) == b"a"
    await _clear(client, "*", "*", 2000, KEYS.block("acme", "premium"))
    assert await client.exists(KEYS.block("acme", "premium")) == 0
    assert await _block(client, "old", 10_000, 1500) == -1  # made before the clear
    assert await _block(client, "new", 10_000, 2500) == 1  # made after it
    got = []
    for _ in range(20):  # the subscription's own confirmation reads as None
        m = await sub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if m is not None:
            got.append(m["data"])
    assert got == [b"a", b"clear", b"new"]
    await sub.aclose()


async def test_a_gateway_pattern_mark_covers_every_rule_of_that_gateway_only(
        client: Redis) -> None:
    await _clear(client, "acme", "*", 2000)
    assert await _block(client, "x", 10_000, 1000, gw="acme") == -1
    assert await _block(client, "y", 10_000, 1000, gw="beta") == 1
