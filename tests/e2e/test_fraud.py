"""The toll-fraud watch through a real sbc process, SIPp as the callers.

    SIPp callers ──udp──► sbc ──udp──► VOS3000 (Python stand-in, or SIPp uas_limits.xml)
                           │
                           └─ webhook ──http──► aiohttp receiver in the test

A burst from one gateway to a premium prefix: the warning, then the
critical threshold, then 403 "Fraud Suspected" (VOS3000 never sees that
call) while the same gateway's other destinations and another gateway's
calls pass; the webhook receives the alerts as JSON, /api/fraud explains the
block, a restart keeps it, and `sbc fraud clear` lifts it. A long call to a
premium range is cut by the minutes threshold while it runs: sbc sends BYE to
the SIPp caller and to the SIPp VOS3000.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from loadtest.harness import LOOPBACK, SbcProcess, Sipp, free_ports

from .conftest import Ports, SbcFactory, SippFactory
from .test_limits import STEP_S, Callers, VosStandIn, _logged, _until, _vos_done, call_id

pytestmark = pytest.mark.e2e

TOKEN = "fraud-e2e-token-0123456789"
PREMIUM = "900123"
OTHER = "442071838750"
BETA_IP = "127.0.0.2"


class WebhookReceiver:
    """An aiohttp server on loopback, in a thread of its own, keeping every JSON body."""

    def __init__(self) -> None:
        (self.port,) = free_ports(1)
        self.bodies: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        assert self._ready.wait(STEP_S), "the webhook receiver did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(STEP_S)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/hook"

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()

        async def hook(request: web.Request) -> web.Response:
            assert request.content_type == "application/json"
            self.bodies.append(await request.json())
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, LOOPBACK, self.port).start()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()


def _api(port: int, path: str) -> dict[str, Any]:
    req = urllib.request.Request(f"http://{LOOPBACK}:{port}{path}",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=STEP_S) as resp:  # loopback only
        body: dict[str, Any] = json.loads(resp.read())
        return body


def _passes(c: Callers, name: str, number: str, **kw: Any) -> None:
    c.finish(c.start(name, "uac.xml", number, duration_ms=50, **kw))


def test_premium_burst_is_refused_explained_kept_across_a_restart_and_cleared(
    ports: Ports, sbc: SbcFactory, sipp: SippFactory,
    callers: Callable[[SbcProcess], Callers],
) -> None:
    (admin_port,) = free_ports(1)
    with WebhookReceiver() as hook, VosStandIn(ports.backend) as vos:
        proxy = sbc({
            "gateways": [{"name": "acme", "ip": [f"{LOOPBACK}/32"]},
                         {"name": "beta", "ip": [f"{BETA_IP}/32"]}],
            "admin": {"enabled": True, "port": admin_port, "token": TOKEN},
            "fraud": {
                "rules": [{"name": "premium", "prefixes": ["+900"], "cool_off_s": 0,
                           "thresholds": {"calls_per_minute": {"warning": 2, "critical": 3}}}],
                "webhook": {"url": hook.url, "retries": 2, "retry_delay_s": 0.2},
            },
        })
        c = callers(proxy)
        for n in range(1, 4):  # the second warns, the third is critical (still put through)
            _passes(c, f"p{n}", PREMIUM)
        answer = c.refused("p4", PREMIUM)
        assert answer.first_line == "SIP/2.0 403 Fraud Suspected", answer.text
        _passes(c, "other", OTHER)  # the same gateway, another destination
        _passes(c, "beta", PREMIUM, local_ip=BETA_IP)  # another gateway, the same range
        assert f"p4-1@{LOOPBACK}" not in vos.call_ids  # VOS3000 never saw the refused call
        assert {f"p{n}-1@{LOOPBACK}" for n in range(1, 4)} <= vos.call_ids

        # The alerts: log lines, the webhook's JSON, the admin API.
        alerts = _until("two fraud_alert lines",
                        lambda: (lambda a: a if len(a) >= 2 else None)(proxy.named("fraud_alert")),
                        proxy.output_tail)
        assert [(a["alert_level"], a["figure"]) for a in alerts[:2]] == [("warning", 2.0),
                                                                         ("critical", 3.0)]
        posted = _until("the critical alert at the webhook",
                        lambda: [b for b in hook.bodies if b.get("level") == "critical"],
                        proxy.output_tail)
        assert posted[0]["event"] == "fraud_alert" and posted[0]["gateway"] == "acme"
        assert posted[0]["rule"] == "premium" and posted[0]["threshold"] == 3.0
        assert [x["call_id"] for x in posted[0]["calls"]] == [
            f"p{n}-1@{LOOPBACK}" for n in range(1, 4)]
        assert posted[0]["clears"] == "new calls refused until an operator clears it"
        state = _api(admin_port, "/api/fraud")
        (block,) = state["blocks"]
        assert (block["gateway"], block["rule"], block["refused"]) == ("acme", "premium", 1)
        assert {x["number"] for x in block["calls"]} == {PREMIUM}
        assert [a["level"] for a in state["alerts"]][:2] == ["critical", "warning"]

        # A restart keeps the block.
        assert proxy.stop() == 0
        proxy = sbc(config_path=proxy.config_path)
        c.proxy = proxy
        assert proxy.named("fraud_restored")[-1]["blocks"] == 1
        again = c.refused("p5", PREMIUM)
        assert again.first_line == "SIP/2.0 403 Fraud Suspected", again.text

        # An operator clears it from the command line; the running sbc applies it.
        done = subprocess.run(
            [sys.executable, "-m", "sbc", "fraud", "clear", "--config", str(proxy.config_path),
             "--gateway", "acme", "--rule", "premium", "--by", "noc-e2e"],
            capture_output=True, text=True, timeout=STEP_S, check=False)
        assert done.returncode == 0, done.stderr
        cleared = _until("the fraud_cleared line", lambda: proxy.named("fraud_cleared"),
                         proxy.output_tail)
        assert cleared[-1]["by"] == "noc-e2e" and cleared[-1]["lifted_block"] is True
        _passes(c, "p6", PREMIUM)
        assert _api(admin_port, "/api/fraud")["cleared"][0]["by"] == "noc-e2e"


def test_a_long_premium_call_is_cut_by_the_minutes_threshold_while_it_runs(
    ports: Ports, sbc: SbcFactory, vos3000: Callable[[int], Sipp],
    callers: Callable[[SbcProcess], Callers],
) -> None:
    """minutes_per_day critical 0.05 (3 s): the answered call is ended about 3 s
    after its 200, BYE to the caller and to VOS3000, and the range is refused."""
    proxy = sbc({"fraud": {"rules": [{
        "name": "premium", "prefixes": ["900"], "cut_calls": True, "cool_off_s": 600,
        "thresholds": {"minutes_per_day": {"critical": 0.05}}}]}})
    vos = vos3000(1)
    c = callers(proxy)
    held = c.hold("long", PREMIUM)
    c.up(held)
    setup = time.monotonic()
    result = c.finish(held)  # ends on sbc's BYE alone
    took = time.monotonic() - setup
    end = _logged(proxy, "call_end", call_id(held))
    assert end["reason"] == "fraud_cut", end
    assert 2.0 <= end["duration_s"] <= 5.0, end
    assert took < 6.0
    at_caller = [m for m in result.messages() if m.direction == "received" and m.method == "BYE"]
    assert len(at_caller) == 1
    at_vos = [m for m in _vos_done(vos, 1, proxy).messages()
              if m.direction == "received" and m.method == "BYE"]
    assert [m.header("Call-ID") for m in at_vos] == [call_id(held)]
    (alert,) = _until("the fraud_alert line", lambda: proxy.named("fraud_alert"),
                      proxy.output_tail)
    assert alert["metric"] == "minutes_per_day" and alert["alert_level"] == "critical"
    assert alert["calls"] == [{"call_id": call_id(held), "number": PREMIUM}]
    refused = c.refused("next", PREMIUM)
    assert refused.first_line == "SIP/2.0 403 Fraud Suspected", refused.text


@pytest.fixture
def callers(sipp: SippFactory, ports: Ports) -> Iterator[Callable[[SbcProcess], Callers]]:
    made: list[Callers] = []

    def new(proxy: SbcProcess) -> Callers:
        group = Callers(sipp, ports, proxy)
        made.append(group)
        return group

    yield new
    for group in made:
        group.close()


@pytest.fixture
def vos3000(sipp: SippFactory, ports: Ports) -> Callable[[int], Sipp]:
    def start(calls: int) -> Sipp:
        uas = sipp("vos3000", "uas_limits.xml", local_port=ports.backend, calls=calls,
                   transport="u1", timeout_s=90, recv_timeout_ms=90_000)
        return uas.start().wait_bound()

    return start
