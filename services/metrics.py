"""Prometheus metrics of the services: one exporter per process, one registry per service object.

Each service object builds its metrics on a `CollectorRegistry` of its own (never the library's
global default), so several services in one test process never share or collide on a metric.
The exporter starts only when the service's `metrics_listen` setting is given, and before the
service enters a node's network namespace, so the endpoint stays on the management side.

Instrumentation happens at the edge (workers, service loops, the SOAP layer); the pure cores
(policy sets, reconciliation, decisions) know nothing of it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import paho.mqtt.client as mqtt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from services.contracts.errors import MultinetError
from services.contracts.settings import parse_listen

#: Seconds; from a sub-millisecond memory apply to a multi-second iptables install.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class MetricsListenError(MultinetError):
    """The metrics endpoint could not be bound (address in use, not local, no permission)."""

    def __init__(self, listen: str, error: OSError) -> None:
        self.listen = listen
        self.errno = error.errno
        super().__init__(f"cannot serve metrics on {listen}: {error.strerror or error}")


@dataclass
class Exporter:
    """A running `/metrics` HTTP endpoint (prometheus_client's threaded WSGI server)."""

    server: WSGIServer
    thread: threading.Thread
    host: str
    port: int

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def start_exporter(listen: str, registry: CollectorRegistry, name: str) -> Exporter:
    """Serve `registry` on `listen` in a named daemon thread; raise MetricsListenError."""
    host, port = parse_listen(listen)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise MetricsListenError(listen, exc) from exc
    thread.name = f"metrics-{name}"
    return Exporter(server, thread, host, int(server.server_port))


class ServiceMetrics:
    """What every service exports: who it is (and, with a broker, whether it is connected)."""

    def __init__(self, service: str, node: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.service = service
        info = Info(
            "multinet_service", "The service and node this process serves.", registry=self.registry
        )
        info.info({"service": service, "node": node})
        self.dead_letters = Counter(
            "multinet_dead_letters",
            "Inputs set aside on the service's dead-letter topic because handling them raised, "
            "by kind of input.",
            ["input"],
            registry=self.registry,
        )
        self.exporter: Exporter | None = None

    def watch_client(self, client: mqtt.Client) -> None:
        """Export `multinet_broker_connected`, read from `client` at each scrape (services
        without a broker, like the standalone PREM daemon, do not export it)."""
        connected = Gauge(
            "multinet_broker_connected",
            "1 while the MQTT connection is up, else 0.",
            registry=self.registry,
        )
        connected.set_function(lambda: 1.0 if client.is_connected() else 0.0)

    def serve(self, listen: str | None) -> None:
        """Start the endpoint when `listen` is set (call before entering a namespace)."""
        if listen is not None and self.exporter is None:
            self.exporter = start_exporter(listen, self.registry, self.service)

    def close(self) -> None:
        """Stop the endpoint, if any."""
        if self.exporter is not None:
            self.exporter.close()
            self.exporter = None


# --- SOAP gateway ----------------------------------------------------------------------------


DELIVERY_RESULTS = ("applied", "refused", "not-reached")


# --- NSA -------------------------------------------------------------------------------------


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
