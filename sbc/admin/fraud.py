"""The toll-fraud watch in the admin application: `GET /api/fraud` (rules,
blocks in force, recent alerts with their explanations, figures per gateway
and rule, recent clears), `POST /api/fraud/clear` (an operator lifts a block
and restarts its counters: {gateway, rule, by, note}, "*" for all), and the
metrics `sbc_fraud_alerts_total{gateway,rule,level}`,
`sbc_fraud_blocked{gateway,rule}`, `sbc_fraud_refused_total{gateway,rule}`
and `sbc_fraud_webhook_total{outcome}`; with the cluster sharing the watch,
`sbc_fraud_cluster_shared` (1 shared, 0 each node counting alone) and
`sbc_fraud_cluster_events_received_total{outcome}`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..io.logsetup import get_logger

log = get_logger("sbc.admin")

_NAME = re.compile(r"\*|[A-Za-z0-9_.-]{1,64}")
_BY = re.compile(r"[A-Za-z0-9_.@:-]{1,64}")
MAX_NOTE = 500


class FraudBackend(Protocol):
    """What the admin needs of the watch's shell (sbc.io.fraud.FraudService)."""

    alerts: Mapping[tuple[str, str, str], int]

    def view(self, limit: int = 200) -> dict[str, Any]: ...
    def clear(self, gateway: str, rule: str, by: str, note: str = "") -> list[dict[str, Any]]: ...


FRAUD = web.AppKey("fraud", FraudBackend)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status,
                             dumps=lambda d: json.dumps(d, default=str, ensure_ascii=False))


_NONE = {"error": "no toll-fraud watch in this process"}


async def fraud(request: web.Request) -> web.Response:
    backend = request.app.get(FRAUD)
    if backend is None:
        return _json(_NONE, 404)
    return _json(backend.view())


async def clear(request: web.Request) -> web.Response:
    if request.content_type != "application/json":
        return _json({"error": "send application/json"}, 415)
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return _json({"error": "the body is not JSON"}, 400)
    if not isinstance(body, dict):
        return _json({"error": "the body should be an object: {gateway, rule, by, note}"}, 400)
    unknown = set(body) - {"gateway", "rule", "by", "note"}
    if unknown:
        return _json({"error": f"unknown field(s): {', '.join(sorted(unknown))}"}, 400)
    gateway, rule = body.get("gateway"), body.get("rule")
    by, note = body.get("by", "admin"), body.get("note", "")
    for name, value in (("gateway", gateway), ("rule", rule)):
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            return _json({"error": f"{name} should be a name (letters, digits, _ . -) or \"*\""},
                         400)
    if not isinstance(by, str) or not _BY.fullmatch(by):
        return _json({"error": "by should be 1 to 64 of letters, digits and _ . @ : -"}, 400)
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        return _json({"error": f"note should be text of at most {MAX_NOTE} characters"}, 400)
    assert isinstance(gateway, str) and isinstance(rule, str)
    backend = request.app.get(FRAUD)
    if backend is None:
        return _json(_NONE, 404)
    cleared = backend.clear(gateway, rule, by, note)
    if not cleared:
        return _json({"error": f"no counters for gateway {gateway!r} under rule {rule!r}"}, 404)
    log.info("admin_fraud_clear", gateway=gateway, rule=rule, by=by, remote=request.remote)
    return _json({"cleared": cleared})


class FraudCollector:
    def __init__(self, backend: FraudBackend) -> None:
        self.backend = backend

    def collect(self) -> Iterable[Metric]:
        b = self.backend
        alerts = CounterMetricFamily("sbc_fraud_alerts", "Toll-fraud alerts raised",
                                     labels=["gateway", "rule", "level"])
        for (gateway, rule, level), n in sorted(b.alerts.items()):
            alerts.add_metric([gateway, rule, level], n)
        yield alerts
        state = b.view(limit=0)
        blocked = GaugeMetricFamily("sbc_fraud_blocked",
                                    "1 while new calls of a gateway under a rule are refused",
                                    labels=["gateway", "rule"])
        refused = CounterMetricFamily("sbc_fraud_refused",
                                      "Calls refused with 403 Fraud Suspected",
                                      labels=["gateway", "rule"])
        for s in state["scopes"]:
            blocked.add_metric([s["gateway"], s["rule"]], 1 if s["blocked"] else 0)
            refused.add_metric([s["gateway"], s["rule"]], s["refused"])
        yield blocked
        yield refused
        hook = CounterMetricFamily("sbc_fraud_webhook", "Webhook posts of alerts, by outcome",
                                   labels=["outcome"])
        for outcome, n in sorted(state.get("webhook", {}).items()):
            hook.add_metric([outcome], n)
        yield hook
        cluster = state.get("cluster")
        if isinstance(cluster, Mapping):
            yield GaugeMetricFamily("sbc_fraud_cluster_shared",
                                    "1 while the watch's figures and blocks are the cluster's, "
                                    "0 while this node counts alone", value=int(
                                        cluster.get("mode") == "shared"))
            got = CounterMetricFamily("sbc_fraud_cluster_events_received",
                                      "Blocks and clears from other nodes, by outcome",
                                      labels=["outcome"])
            for outcome, n in sorted(cluster.get("received", {}).items()):
                got.add_metric([outcome], n)
            yield got


def add_fraud(app: web.Application, backend: FraudBackend | None,
              registry: CollectorRegistry) -> None:
    """The routes (answering 404 without a watch) and, with one, its metrics."""
    app.router.add_get("/api/fraud", fraud)
    app.router.add_post("/api/fraud/clear", clear)
    if backend is not None:
        app[FRAUD] = backend
        registry.register(FraudCollector(backend))
