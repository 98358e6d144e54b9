"""The toll-fraud watch in the admin: /api/fraud explains alerts and blocks,
/api/fraud/clear lifts one (and says who), and /metrics carries the alerts by
gateway, rule and level. Over the real FraudService on an in-memory store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import test_utils, web

from sbc.admin import make_app
from sbc.config import parse_config
from sbc.core.engine import Engine
from sbc.core.settings import ProxySettings
from sbc.io.fraud import FraudService
from sbc.state.store import Store

from .test_admin import AUTH, CONFIG, Clock, FakeBackend

RULES = """
fraud:
  rules:
    - name: premium
      gateways: [acme]
      prefixes: ["900"]
      thresholds: {calls_per_minute: {warning: 2, critical: 3}}
      cool_off_s: 0
"""


class FraudBackend(FakeBackend):
    fraud: FraudService


@pytest.fixture
async def client() -> AsyncIterator[tuple[test_utils.TestClient[web.Request, web.Application],
                                          FraudBackend]]:
    clock = Clock()
    backend = FraudBackend(parse_config(CONFIG + RULES), clock)
    backend.fraud = FraudService(backend.cfg, Engine(ProxySettings(), secret=b"k" * 16),
                                 Store(":memory:"), clock)
    c = test_utils.TestClient(test_utils.TestServer(make_app(backend, backend.cfg.admin,
                                                             clock=clock, process_metrics=False)))
    await c.start_server()
    yield c, backend
    await c.close()


def burst(service: FraudService, calls: int, now: float) -> None:
    watch = service.watch
    for n in range(calls):
        m = watch.match("acme", b"sip:900%d@h" % n, (), now)
        assert m is not None
        if m.block is None:
            watch.admit(m, (b"c%d" % n, b"t"), b"c%d" % n, now)
    service.tick(now)  # the shell's second: alerts logged, counted, posted


async def test_api_fraud_explains_the_block_and_clear_lifts_it(client: tuple[
        test_utils.TestClient[web.Request, web.Application], FraudBackend]) -> None:
    c, backend = client
    resp = await c.get("/api/fraud", headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    assert [r["name"] for r in body["rules"]] == ["premium"] and body["blocks"] == []

    burst(backend.fraud, 4, 1000.0)
    body = await (await c.get("/api/fraud", headers=AUTH)).json()
    (block,) = body["blocks"]
    assert block["gateway"] == "acme" and block["rule"] == "premium" and block["refused"] == 1
    assert [x["call_id"] for x in block["calls"]] == ["c0", "c1", "c2"]
    assert block["clears"] == "when an operator clears it" and "403 Fraud Suspected" in block["why"]
    assert [(a["level"], a["figure"]) for a in body["alerts"]] == [("critical", 3.0), ("warning", 2.0)]

    metrics = await (await c.get("/metrics", headers=AUTH)).text()
    assert 'sbc_fraud_alerts_total{gateway="acme",level="critical",rule="premium"} 1.0' in metrics
    assert 'sbc_fraud_blocked{gateway="acme",rule="premium"} 1.0' in metrics
    assert 'sbc_fraud_refused_total{gateway="acme",rule="premium"} 1.0' in metrics

    for bad, status in (({"gateway": "acme"}, 400), ({"gateway": "a b", "rule": "premium"}, 400),
                        ({"gateway": "acme", "rule": "premium", "x": 1}, 400),
                        ({"gateway": "zeta", "rule": "premium"}, 404)):
        resp = await c.post("/api/fraud/clear", json=bad, headers=AUTH)
        assert resp.status == status, await resp.text()
    resp = await c.post("/api/fraud/clear", data="[", headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status == 400
    resp = await c.post("/api/fraud/clear", json={"gateway": "acme", "rule": "premium",
                                                  "by": "noc-alice", "note": "customer ok"},
                        headers=AUTH)
    assert resp.status == 200
    assert (await resp.json())["cleared"] == [{"gateway": "acme", "rule": "premium",
                                              "by": "noc-alice", "lifted_block": True}]
    body = await (await c.get("/api/fraud", headers=AUTH)).json()
    assert body["blocks"] == [] and body["cleared"][0]["by"] == "noc-alice"
    assert (await c.get("/api/fraud")).status == 401  # the token, like every API path


async def test_without_a_watch_the_routes_answer_404() -> None:
    clock = Clock()
    backend = FakeBackend(parse_config(CONFIG), clock)
    c = test_utils.TestClient(test_utils.TestServer(make_app(backend, backend.cfg.admin,
                                                             clock=clock, process_metrics=False)))
    await c.start_server()
    try:
        assert (await c.get("/api/fraud", headers=AUTH)).status == 404
        resp = await c.post("/api/fraud/clear", json={"gateway": "*", "rule": "*"}, headers=AUTH)
        assert resp.status == 404
    finally:
        await c.close()
