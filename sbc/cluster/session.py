"""One connection to Redis kept up for as long as sbc runs: connect, load the
scripts, work until something fails, close, wait the link's retry delay, and
again. Shared by the links of bans (redis_link.py), limits (limits_link.py),
registrations (registrations_link.py) and the fraud watch (fraud_link.py),
which each say what one session does (`_session`), what a failure means to
their link state (`_failed`) and how long to wait (`_retry_delay`); a link
that listens on a channel subscribes with `_subscribe`, and the subscription
is closed with the session. Every Redis call has a timeout; nothing here
blocks the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..config.cluster import ClusterConfig


class RedisSession:
    def __init__(self, cfg: ClusterConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg = cfg
        self.loop = loop
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: Redis | None = None
        self._pubsub: PubSub | None = None

    # ------------------------------------------------------------ what a link says

    async def _session(self) -> None:
        raise NotImplementedError

    def _failed(self, why: str) -> None:
        raise NotImplementedError

    def _retry_delay(self) -> float:
        raise NotImplementedError

    def _closing(self) -> list[Any]:
        """What to close after a session, first to last (and forget)."""
        pubsub, self._pubsub = self._pubsub, None
        client, self._client = self._client, None
        return [pubsub, client]

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._task is None:
            self._task = self.loop.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self._close()

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 -- any failure ends the session, never the task
                self._failed(describe(e))
            finally:
                await self._close()
            try:
                await asyncio.wait_for(self._stop.wait(), self._retry_delay() or 0.05)
            except TimeoutError:
                pass

    async def _close(self) -> None:
        for closing in self._closing():
            if closing is not None:
                try:
                    await asyncio.wait_for(closing.aclose(), self.cfg.timeout_s)
                except Exception:  # noqa: BLE001 -- a dead connection may fail to close
                    pass

    # ------------------------------------------------------------ within a session

    async def _connect(self, *scripts: str) -> tuple[Redis, list[str]]:
        """A fresh client that answered PING, and the SHA of each script loaded."""
        cfg = self.cfg
        assert cfg.url is not None
        client = self._client = Redis.from_url(
            cfg.url, password=cfg.redis_password, socket_timeout=cfg.timeout_s,
            socket_connect_timeout=cfg.connect_timeout_s, retry=Retry(NoBackoff(), 0),
            health_check_interval=0)
        await self._within(client.ping(), cfg.connect_timeout_s + cfg.timeout_s)
        return client, [await self._within(client.script_load(s)) for s in scripts]

    async def _subscribe(self, client: Redis, channel: str) -> PubSub:
        """This session's subscription to `channel` (closed with the session)."""
        pubsub = self._pubsub = client.pubsub()
        await self._within(pubsub.subscribe(channel))
        return pubsub

    async def _until_one_fails(self, *works: Coroutine[Any, Any, None]) -> None:
        """Run the session's workers until the first ends; its failure ends the session."""
        tasks = [self.loop.create_task(work) for work in works]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _within(self, work: Any, timeout: float | None = None) -> Any:
        return await asyncio.wait_for(work, timeout or self.cfg.timeout_s)


def describe(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}"[:300]
