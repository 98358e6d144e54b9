"""Posts alerts to an operator's webhook: a JSON body per alert, over aiohttp's
client, from one task of its own, so the event loop never waits for it.

The queue is bounded (`fraud.webhook.queue`): an alert that finds it full is
dropped and counted, never held. Each post is bounded by `timeout_s` and
retried `retries` times, `retry_delay_s` apart (doubling), on a connection
error, a timeout or a 5xx/429; any other answer is final. Outcomes are
counted (`figures`): sent, failed (given up), dropped (queue full), retried.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp

from .logsetup import get_logger

log = get_logger("sbc.webhook")


class WebhookSender:
    def __init__(self, url: str, *, timeout_s: float = 5.0, retries: int = 3,
                 retry_delay_s: float = 1.0, queue: int = 1000) -> None:
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.retries = retries
        self.retry_delay = retry_delay_s
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=queue)
        self.figures: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def post(self, body: dict[str, Any]) -> bool:
        """Queue `body`; False (counted) when the queue is full."""
        try:
            self.queue.put_nowait(body)
        except asyncio.QueueFull:
            self.figures["dropped"] += 1
            return False
        return True

    async def stop(self, drain_s: float = 2.0) -> None:
        """Give what is queued up to `drain_s` to go, then stop."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self.queue.join(), drain_s)
        except TimeoutError:
            pass
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self.timeout)
        while True:
            body = await self.queue.get()
            try:
                await self._deliver(body)
            except Exception as e:  # a bug here must not end the task
                self.figures["failed"] += 1
                log.error("webhook_failed", url=self.url, error=repr(e)[:200])
            finally:
                self.queue.task_done()

    async def _deliver(self, body: dict[str, Any]) -> None:
        assert self._session is not None
        delay = self.retry_delay
        error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.figures["retried"] += 1
                await asyncio.sleep(delay)
                delay *= 2
            try:
                async with self._session.post(self.url, json=body) as response:
                    if response.status < 300:
                        self.figures["sent"] += 1
                        return
                    error = f"HTTP {response.status}"
                    if response.status < 500 and response.status != 429:
                        break  # the receiver refuses it: asking again will not help
            except (aiohttp.ClientError, TimeoutError) as e:
                error = repr(e)[:200]
        self.figures["failed"] += 1
        log.error("webhook_failed", url=self.url, error=error, attempts=attempt + 1)
