"""The toll-fraud watch's shell: the webhook sender (retried, bounded, off the
event loop's path) against a local aiohttp server, and the service's reload
(unchanged rules keep their counters; no rule, no watch on the call path)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from sbc.config import parse_config
from sbc.core.engine import Engine
from sbc.core.settings import ProxySettings
from sbc.io.fraud import FraudService
from sbc.io.webhook import WebhookSender
from sbc.state.store import Store

from .test_transport import free_port


async def _receiver(answers: list[int]) -> tuple[web.AppRunner, str, list[dict[str, Any]]]:
    """A server answering each POST with the next status of `answers` (then 200)."""
    got: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(status=answers.pop(0) if answers else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/hook", got


async def _until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.01)


async def test_webhook_retries_a_server_error_and_gives_up_on_a_refusal() -> None:
    runner, url, got = await _receiver([503, 500])
    sender = WebhookSender(url, retries=3, retry_delay_s=0.01)
    sender.start()
    try:
        assert sender.post({"event": "fraud_alert", "n": 1})
        await _until(lambda: sender.figures["sent"] == 1)
        assert got == [{"event": "fraud_alert", "n": 1}] * 3 and sender.figures["retried"] == 2
        await runner.cleanup()
        runner, url, got = await _receiver([400])
        sender.url = url
        sender.post({"n": 2})
        await _until(lambda: sender.figures["failed"] == 1)
        assert got == [{"n": 2}]  # a 4xx is final: not asked again
    finally:
        await sender.stop()
        await runner.cleanup()


async def test_webhook_queue_is_bounded_and_posting_never_waits() -> None:
    port = free_port()  # nobody listens: every attempt fails
    sender = WebhookSender(f"http://127.0.0.1:{port}/hook", retries=1, retry_delay_s=0.01,
                           queue=5, timeout_s=1.0)
    started = time.perf_counter()
    accepted = [sender.post({"n": n}) for n in range(50)]  # before the task even runs
    assert time.perf_counter() - started < 0.05
    assert accepted.count(True) == 5 and sender.figures["dropped"] == 45
    sender.start()
    await _until(lambda: sender.figures["failed"] == 5)
    assert sender.figures["retried"] == 5
    await sender.stop()


RULE = """
gateways: [{{name: acme, ip: [192.0.2.1]}}]
fraud:
  rules:
    - name: premium
      prefixes: ["{prefix}"]
      thresholds: {{calls_per_minute: {{critical: {critical}}}}}
"""


def test_reload_keeps_counters_and_an_empty_section_takes_the_watch_off_the_call_path() -> None:
    clock = [100.0]
    engine = Engine(ProxySettings(), secret=b"k" * 16)
    service = FraudService(parse_config(RULE.format(prefix="900", critical=10)), engine,
                           Store(":memory:"), lambda: clock[0])
    watch = service.watch
    assert engine.ctx.fraud is watch
    for n in range(3):
        m = watch.match("acme", b"sip:900%d@h" % n, (), 100.0)
        assert m is not None
        watch.admit(m, (b"c%d" % n, b"t"), b"c%d" % n, 100.0)
    service.configure(parse_config(RULE.format(prefix="900", critical=4)))
    assert watch.scopes[("acme", "premium")].minute.count(100.0) == 3
    service.configure(parse_config(RULE.format(prefix="881", critical=4)))
    assert watch.scopes == {}
    service.configure(parse_config("gateways: [{name: acme, ip: [192.0.2.1]}]"))
    assert engine.ctx.fraud is None
    service.tick(101.0)  # nothing to do, nothing breaks
