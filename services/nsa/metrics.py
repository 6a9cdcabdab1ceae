"""An NSA replica's Prometheus metrics: decisions, moves, deliveries, resyncs, inbox depth and
decision latency.

The decision thread never touches a metric: it keeps its own counters (`Stats`), and the
endpoint's thread reads them at each scrape through `NsaCounts`; only the decision latency is
observed, once per batch. The shared base (identity, broker connection, dead letters, the
exporter) is `services.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.metrics import LATENCY_BUCKETS, ServiceMetrics

#: The answers a node document of a gateway call can get (the `result` label of deliveries).
DELIVERY_RESULTS = ("applied", "refused", "not-reached")


@dataclass(frozen=True)
class NsaCounts:
    """What an NSA replica counted so far (its decision thread's own counters), read at each
    scrape: the decision thread never touches a metric."""

    inputs: Mapping[str, int]  # by input kind (metrics, link-state, binding-event, ...)
    decisions: int
    moves: int
    deliveries: Mapping[str, int]  # by `DELIVERY_RESULTS`
    resyncs: int
    inbox: int
    dropped: int


class NsaMetrics(ServiceMetrics):
    """An NSA replica's decisions, moves, deliveries, resyncs, inbox and decision latency."""

    def __init__(self, name: str, counts: Callable[[], NsaCounts]) -> None:
        super().__init__("nsa", name)
        self.decision_seconds = Histogram(
            "multinet_nsa_decision_seconds",
            "From the send time of the oldest input a decision answered to its plan handed to "
            "delivery.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_NsaCollector(counts))


class _NsaCollector(Collector):
    """The counter families, from one `NsaCounts` per scrape."""

    def __init__(self, counts: Callable[[], NsaCounts]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        """The families (prometheus_client's collector protocol)."""
        counts = self.counts()
        inputs = CounterMetricFamily(
            "multinet_nsa_inputs",
            "Bus inputs taken by the decision thread, by kind.",
            labels=["kind"],
        )
        for kind, value in counts.inputs.items():
            inputs.add_metric([kind], value)
        yield inputs
        yield CounterMetricFamily(
            "multinet_nsa_decisions",
            "Decisions taken (each router with inputs or a timer due, once per batch).",
            value=counts.decisions,
        )
        yield CounterMetricFamily(
            "multinet_nsa_moves",
            "Classes whose links changed (a router's first decision not counted).",
            value=counts.moves,
        )
        deliveries = CounterMetricFamily(
            "multinet_nsa_deliveries",
            "Node documents of gateway calls by the answer (not-reached also for every document "
            "of a call without an answer: a SOAP Fault, the gateway unreachable, a timeout).",
            labels=["result"],
        )
        for result in DELIVERY_RESULTS:
            deliveries.add_metric([result], counts.deliveries.get(result, 0))
        yield deliveries
        yield CounterMetricFamily(
            "multinet_nsa_resyncs",
            "Times a node's state fell in doubt (refused, lost, a hello at another version): its "
            "next document is a full Install.",
            value=counts.resyncs,
        )
        yield GaugeMetricFamily(
            "multinet_nsa_inbox_depth",
            "Inputs waiting for the decision thread.",
            value=counts.inbox,
        )
        yield CounterMetricFamily(
            "multinet_nsa_inbox_dropped",
            "Metrics reports dropped because the inbox was full.",
            value=counts.dropped,
        )
