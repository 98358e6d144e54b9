"""Prometheus metrics, read from the backend's figures at scrape time.

The engine keeps one counter table (sbc.core.tally: plain
collections.Counter, one addition per packet) under the names of
sbc.core.reasons; this collector turns it into metric families only when
Prometheus asks, so the packet path never touches prometheus-client.

Packets by verdict count what reached the engine plus what the screen dropped
before any parse, so `sum(sbc_drops_total)` equals
`sbc_packets_total{verdict="drop"}`. Messages sbc absorbs by design (a
retransmission, VOS3000's 100 Trying, the answers to its own pings) are the
verdict "absorbed" and `sbc_absorbed_total`, never drops. Every drop carries
its stage (screen, parse, identify, match, policy, route, internal).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .backend import AdminBackend
from .stats import STAGE_OF

if TYPE_CHECKING:
    from ..config import Config


class SbcCollector:
    """Reads the backend at each scrape; registered with a registry of the app's own."""

    def __init__(self, backend: AdminBackend, refused: Mapping[str, int] | None = None) -> None:
        self.backend = backend
        self.refused = refused if refused is not None else {}

    def collect(self) -> Iterable[Metric]:
        b = self.backend
        stats = b.stats()
        yield from _traffic(stats)
        yield from _cluster(stats.get("cluster"))
        yield from _cluster_limits(stats.get("cluster_limits"))
        yield from _gateways(b.gateway_figures(), b.cfg)
        yield from _bans(b.ban_counts())
        ready, details = b.ready()
        yield GaugeMetricFamily("sbc_backend_ready",
                                "1 while a VOS3000 address answers the OPTIONS pings, else 0",
                                value=1 if ready else 0)
        yield from _targets(details)
        hist = b.processing_time()
        if hist is not None:
            yield HistogramMetricFamily(
                "sbc_processing_seconds", "Time to screen and process one packet",
                buckets=[(_le(bound), n) for bound, n in hist.buckets], sum_value=hist.sum)
        refused = CounterMetricFamily("sbc_admin_refused", "Admin requests refused, by reason",
                                      labels=["reason"])
        for reason, n in sorted(self.refused.items()):
            refused.add_metric([reason], n)
        yield refused


def _counts(stats: Mapping[str, Any], key: str) -> dict[str, int]:
    value = stats.get(key)
    return {str(k): int(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


def _traffic(stats: Mapping[str, Any]) -> Iterable[Metric]:
    verdicts = _counts(stats, "verdicts")
    screen = _counts(stats, "screen_drops")
    engine = _counts(stats, "drops")
    packets = CounterMetricFamily("sbc_packets",
                                  "Packets by verdict (forward, reply, drop, absorbed)",
                                  labels=["verdict"])
    all_verdicts = {"forward": 0, "reply": 0, "absorbed": 0, **verdicts}
    all_verdicts["drop"] = all_verdicts.get("drop", 0) + sum(screen.values())
    for verdict, n in sorted(all_verdicts.items()):
        packets.add_metric([verdict], n)
    yield packets
    drops = CounterMetricFamily("sbc_drops", "Dropped packets by stage and reason",
                                labels=["stage", "reason"])
    for reason, n in sorted(screen.items()):
        drops.add_metric(["screen", reason], n)
    for reason, n in sorted(engine.items()):
        drops.add_metric([STAGE_OF.get(reason, "engine"), reason], n)
    yield drops
    yield _by("sbc_absorbed", "Messages sbc consumes by design (not attacks), by reason",
              "reason", _counts(stats, "absorbed"))
    yield _by("sbc_refusals", "Requests sbc answered with an error or a challenge, by reason",
              "reason", _counts(stats, "refusals"))
    yield _by("sbc_offenses", "Offenses recorded towards a ban, by kind",
              "kind", _counts(stats, "offenses"))
    yield _by("sbc_offenses_spared",
              "Offenses not recorded (a proved source, in a forgeable datagram), by kind",
              "kind", _counts(stats, "offenses_spared"))
    parse = CounterMetricFamily("sbc_parse_errors", "Messages that failed to parse, by reason",
                                labels=["reason"])
    for reason, n in sorted(_counts(stats, "parse_errors").items()):
        parse.add_metric([reason], n)
    yield parse
    failovers = CounterMetricFamily("sbc_backend_failovers",
                                    "Calls sent on to the next VOS3000 address, by why",
                                    labels=["reason"])
    for reason, n in sorted(_counts(stats, "failovers").items()):
        failovers.add_metric([reason], n)
    yield failovers
    transport = CounterMetricFamily("sbc_transport_events", "Transport events (TCP, UDP errors)",
                                    labels=["event"])
    for event, n in sorted(_counts(stats, "transport").items()):
        transport.add_metric([event], n)
    yield transport
    if isinstance(stats.get("udp_public_received"), int):
        yield CounterMetricFamily("sbc_udp_public_received", "Datagrams received on the public port",
                                  value=stats["udp_public_received"])
    for key, name, doc in (("transactions", "sbc_transactions", "INVITE transactions in the table"),
                           ("dialogs", "sbc_dialogs", "Dialogs in the table (any state)"),
                           ("tcp_connections", "sbc_tcp_connections", "Open public TCP connections"),
                           ("tls_connections", "sbc_tls_connections", "Open public TLS connections")):
        if isinstance(stats.get(key), int):
            yield GaugeMetricFamily(name, doc, value=stats[key])


def _cluster(cluster: object) -> Iterable[Metric]:
    """The link to the cluster's Redis and the ban events through it (with `cluster`)."""
    if not isinstance(cluster, Mapping):
        return
    yield GaugeMetricFamily("sbc_cluster_link_up",
                            "1 while the link to the cluster's Redis is up, else 0 (degraded)",
                            value=0 if cluster.get("degraded", True) else 1)
    yield CounterMetricFamily("sbc_cluster_link_transitions",
                              "Changes of the cluster link's state (connected, lost)",
                              value=int(cluster.get("transitions", 0)))
    yield _by("sbc_cluster_ban_events_sent",
              "This node's ban events pushed to Redis, by result (stored, kept, lifted)",
              "result", _counts(cluster, "sent"))
    yield _by("sbc_cluster_ban_events_received",
              "Ban events read from Redis, by outcome (applied, echo, longer_local, invalid, ...)",
              "outcome", _counts(cluster, "received"))
    yield CounterMetricFamily("sbc_cluster_ban_events_dropped",
                              "Ban events dropped because the publish queue was full",
                              value=int(cluster.get("dropped", 0)))
    yield GaugeMetricFamily("sbc_cluster_ban_events_pending", "Ban events waiting to be published",
                            value=int(cluster.get("pending", 0)))


def _cluster_limits(limits: object) -> Iterable[Metric]:
    """Call limits shared across nodes (sbc.cluster.limits), with `cluster.share_limits`."""
    if not isinstance(limits, Mapping):
        return
    yield GaugeMetricFamily("sbc_cluster_limits_shared",
                            "1 while call limits are cluster-wide, 0 while each node applies "
                            "its share (limit / live nodes)",
                            value=1 if limits.get("mode") == "shared" else 0)
    yield GaugeMetricFamily("sbc_cluster_live_nodes", "Live nodes (heartbeats) last seen in Redis",
                            value=int(limits.get("live_nodes", 0)))
    cap = GaugeMetricFamily("sbc_cluster_call_slots",
                            "Calls this node may hold now under a shared concurrency limit",
                            labels=["limit"])
    concurrency = limits.get("concurrency")
    if isinstance(concurrency, Mapping):
        for name, figures in sorted(concurrency.items()):
            if isinstance(figures, Mapping):
                cap.add_metric([str(name)], int(figures.get("cap", 0)))
    yield cap


def _by(name: str, doc: str, label: str, counts: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, n in sorted(counts.items()):
        family.add_metric([key], n)
    return family


def _targets(details: Mapping[str, Any]) -> Iterable[Metric]:
    """Per VOS3000 address, from the readiness details: up (1) or not (0)."""
    up = GaugeMetricFamily("sbc_backend_target_up",
                           "1 while this VOS3000 address is up (answers pings), else 0",
                           labels=["target", "priority", "state"])
    rows = details.get("targets") if isinstance(details, Mapping) else None
    for row in rows if isinstance(rows, list) else ():
        if isinstance(row, Mapping) and isinstance(row.get("address"), str):
            state = str(row.get("state", "unknown"))
            up.add_metric([row["address"], str(row.get("priority", "")), state],
                          1 if state == "up" else 0)
    yield up


def _gateways(figures: Mapping[str, Mapping[str, int]], cfg: Config) -> Iterable[Metric]:
    admitted = CounterMetricFamily("sbc_gateway_calls_admitted", "Initial INVITEs admitted",
                                   labels=["gateway"])
    concurrent = GaugeMetricFamily("sbc_gateway_concurrent_calls", "Calls in progress",
                                   labels=["gateway"])
    cps = GaugeMetricFamily("sbc_gateway_cps", "Calls admitted in the last whole second",
                            labels=["gateway"])
    rejects = CounterMetricFamily("sbc_gateway_rejects", "Calls refused, by the limit that refused",
                                  labels=["gateway", "limit"])
    max_concurrent = GaugeMetricFamily("sbc_gateway_max_concurrent",
                                       "Configured concurrent-call limit (0: unlimited)",
                                       labels=["gateway"])
    max_cps = GaugeMetricFamily("sbc_gateway_max_cps", "Configured CPS limit (0: unlimited)",
                                labels=["gateway"])
    for name, fig in sorted(figures.items()):
        admitted.add_metric([name], fig.get("admitted", 0))
        concurrent.add_metric([name], fig.get("concurrent", 0))
        cps.add_metric([name], fig.get("cps", 0))
        for key, n in sorted(fig.items()):
            if key.startswith("rejected_"):
                rejects.add_metric([name, key.removeprefix("rejected_")], n)
    for gw in cfg.gateways:
        max_concurrent.add_metric([gw.name], gw.limits.max_concurrent)
        max_cps.add_metric([gw.name], gw.limits.cps)
    yield from (admitted, concurrent, cps, rejects, max_concurrent, max_cps)


def _bans(by_reason: Mapping[str, int]) -> Iterable[Metric]:
    yield GaugeMetricFamily("sbc_bans_active", "Sources banned now", value=sum(by_reason.values()))
    reasons = GaugeMetricFamily("sbc_bans_active_by_reason", "Sources banned now, by reason",
                                labels=["reason"])
    for reason, n in sorted(by_reason.items()):
        reasons.add_metric([reason], n)
    yield reasons


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def make_registry(backend: AdminBackend, refused: Mapping[str, int] | None = None,
                  process: bool = True) -> CollectorRegistry:
    """A registry of its own (not the global one), so two apps in one process
    never collide: sbc's collector, plus the process, platform and GC ones."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SbcCollector(backend, refused))
    if process:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry
