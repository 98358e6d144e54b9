"""Prometheus metrics of the call trace and of HEP, read from the trace's
figures (sbc.io.trace.TraceService.figures) at scrape time, like the rest
of sbc's metrics (sbc.admin.metrics): the message path never touches
prometheus-client.

HEP: `sbc_hep_sent_total`, `sbc_hep_lost_total{reason}` (`queue_full`:
over `hep.queue`; `not_ip`: an address HEP cannot carry),
`sbc_hep_queue_depth` and `sbc_hep_queue_capacity` (messages),
`sbc_hep_sampled_out_total` (messages of refused Call-IDs left out by
`hep.refused_sample_rate`), `sbc_hep_errors_total` (connection failures and
socket errors), `sbc_hep_connected`. The ring: `sbc_trace_bytes`,
`sbc_trace_calls{pool}`, `sbc_trace_evicted_total{pool}` and
`sbc_trace_sampled_out_total`. A family is absent while its section is off.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

LOST_REASONS = ("queue_full", "not_ip")


class TraceFigures(Protocol):
    def figures(self) -> dict[str, Any]: ...


class TraceCollector:
    """Registered with the admin's registry when sbc has a trace service."""

    def __init__(self, backend: TraceFigures) -> None:
        self.backend = backend

    def collect(self) -> Iterable[Metric]:
        figures = self.backend.figures()
        if figures.get("enabled"):
            yield from _ring(figures)
        hep = figures.get("hep")
        if isinstance(hep, Mapping):
            yield from _hep(hep)


def _ring(f: Mapping[str, Any]) -> Iterable[Metric]:
    yield GaugeMetricFamily("sbc_trace_bytes", "Bytes the trace ring holds (messages and "
                            "bookkeeping)", value=f.get("bytes", 0))
    calls = GaugeMetricFamily("sbc_trace_calls", "Call-IDs in the trace ring, by pool",
                              labels=["pool"])
    evicted = CounterMetricFamily("sbc_trace_evicted", "Call-IDs evicted from the trace ring "
                                  "(oldest first), by pool", labels=["pool"])
    calls.add_metric(["calls"], f.get("calls", 0))
    calls.add_metric(["refused"], f.get("refused_calls", 0))
    evicted.add_metric(["calls"], f.get("evicted", 0))
    evicted.add_metric(["refused"], f.get("refused_evicted", 0))
    yield calls
    yield evicted
    yield CounterMetricFamily("sbc_trace_sampled_out", "Messages of refused Call-IDs not kept "
                              "(trace.refused_sample_rate)", value=f.get("refused_skipped", 0))


def _hep(h: Mapping[str, Any]) -> Iterable[Metric]:
    yield CounterMetricFamily("sbc_hep_sent", "HEP packets sent to the collector",
                              value=h.get("sent", 0))
    lost = CounterMetricFamily("sbc_hep_lost", "Messages not sent to the collector, by reason",
                               labels=["reason"])
    by = h.get("lost_by")
    by = by if isinstance(by, Mapping) else {}
    for reason in sorted({*LOST_REASONS, *by}):
        lost.add_metric([str(reason)], by.get(reason, 0))
    yield lost
    yield GaugeMetricFamily("sbc_hep_queue_depth", "Messages waiting to be sent to the collector",
                            value=h.get("queued", 0))
    yield GaugeMetricFamily("sbc_hep_queue_capacity", "Messages the HEP queue holds at most "
                            "(hep.queue)", value=h.get("queue", 0))
    yield CounterMetricFamily("sbc_hep_sampled_out", "Messages of refused Call-IDs not sent "
                              "(hep.refused_sample_rate)", value=h.get("sampled_out", 0))
    yield CounterMetricFamily("sbc_hep_errors", "HEP connection failures and socket errors",
                              value=h.get("errors", 0))
    yield GaugeMetricFamily("sbc_hep_connected", "1 while the collector's socket is up, else 0",
                            value=1 if h.get("connected") else 0)
