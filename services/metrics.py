"""Prometheus metrics of the services: one exporter per process, one registry per service object.

Each service object builds its metrics on a `CollectorRegistry` of its own (never the library's
global default), so several services in one test process never share or collide on a metric.
The exporter starts only when the service's `metrics_listen` setting is given, and before the
service enters a node's network namespace, so the endpoint stays on the management side.

Instrumentation happens at the edge (workers, service loops, the SOAP layer); the pure cores
(policy sets, reconciliation, decisions) know nothing of it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated
from wsgiref.simple_server import WSGIServer

import paho.mqtt.client as mqtt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector
from pydantic import AfterValidator

from services.contracts.errors import MultinetError
from services.contracts.messages import (
    BindingEventKind,
    LinkMetrics,
    LinkState,
)
from services.mobility_events.status import BaStatus

#: Seconds; from a sub-millisecond memory apply to a multi-second iptables install.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (`[v6]:PORT` for an IPv6 address) as (host, port); port 0 picks a free one."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:9101), got {value!r}")
    return host, int(port)


def _valid_listen(value: str) -> str:
    parse_listen(value)
    return value


#: The type of every service's `metrics_listen` setting (None: no endpoint).
ListenAddress = Annotated[str, AfterValidator(_valid_listen)]


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

#: Values of `multinet_gateway_deliveries_total{result}` (one per node document of a call).
DELIVERY_RESULTS = ("applied", "refused", "not-reached")


# --- monitor ---------------------------------------------------------------------------------


def _seconds(milliseconds: float | None) -> float:
    return math.nan if milliseconds is None else milliseconds / 1000


class MonitorMetrics(ServiceMetrics):
    """The link monitor's view of each link, as last published."""

    def __init__(self, node: str) -> None:
        super().__init__("monitor", node)
        reg = self.registry
        labels = ["interface", "bid"]
        self.link_up = Gauge(
            "multinet_monitor_link_up", "1 if the link is up, else 0.", labels, registry=reg
        )
        self.rtt = Gauge(
            "multinet_monitor_rtt_seconds", "Probe round-trip time.", labels, registry=reg
        )
        self.jitter = Gauge(
            "multinet_monitor_jitter_seconds", "Probe RTT jitter.", labels, registry=reg
        )
        self.loss = Gauge(
            "multinet_monitor_loss_ratio", "Probe loss over the window.", labels, registry=reg
        )
        self.published = Counter(
            "multinet_monitor_messages_published",
            "Messages published, by kind (link-state, link-metrics).",
            ["kind"],
            registry=reg,
        )
        for kind in ("link-state", "link-metrics"):
            self.published.labels(kind)

    def record(self, message: LinkState | LinkMetrics) -> None:
        """Account for one published message."""
        labels = (message.interface, str(message.bid))
        self.published.labels(message.kind).inc()
        if isinstance(message, LinkState):
            self.link_up.labels(*labels).set(1 if message.up else 0)
            return
        self.rtt.labels(*labels).set(_seconds(message.rtt_ms))
        self.jitter.labels(*labels).set(_seconds(message.jitter_ms))
        self.loss.labels(*labels).set(math.nan if message.loss is None else message.loss)


# --- mobility events -------------------------------------------------------------------------


class MobilityEventsMetrics(ServiceMetrics):
    """Binding events published and Mobility Headers that could not be decoded."""

    def __init__(self, node: str, decode_reasons: tuple[str, ...]) -> None:
        super().__init__("mobility-events", node)
        reg = self.registry
        self.events = Counter(
            "multinet_mobility_events_published",
            "Binding events published, by kind.",
            ["event"],
            registry=reg,
        )
        for kind in BindingEventKind:
            self.events.labels(kind.value)
        self.decode_errors = Counter(
            "multinet_mobility_events_decode_errors",
            "Mobility Headers dropped as malformed, by reason.",
            ["reason"],
            registry=reg,
        )
        for reason in decode_reasons:
            self.decode_errors.labels(reason)
        self.dropped = Counter(
            "multinet_mobility_events_dropped",
            "Decoded messages dropped because the work queue was full.",
            registry=reg,
        )


# --- MCoA agent ------------------------------------------------------------------------------

#: `multinet_mcoa_bindings{state}` at the mobile router: one per link (`Registration.state`).
MR_BINDING_STATES = ("registered", "registering", "unregistered", "no-care-of")
#: Values of `multinet_mcoa_binding_updates_sent_total{kind}`.
BU_KINDS = ("register", "refresh", "retransmit", "deregister")


def _status_counter(name: str, doc: str, registry: CollectorRegistry) -> Counter:
    """A counter by BA status (the number: bounded, and what the RFCs and logs name)."""
    counter = Counter(name, doc, ["status"], registry=registry)
    for status in BaStatus:
        counter.labels(str(int(status)))
    return counter


class McoaMetrics(ServiceMetrics):
    """What both sides of the MCoA agent export: bindings by state and the pipes installed."""

    def __init__(self, service: str, node: str, states: tuple[str, ...]) -> None:
        super().__init__(service, node)
        self.states = states
        self.bindings = Gauge(
            "multinet_mcoa_bindings",
            "Bindings by state (HA: its binding cache; MR: each link's registration).",
            ["state"],
            registry=self.registry,
        )
        for state in states:
            self.bindings.labels(state)
        self.pipes = Gauge(
            "multinet_mcoa_pipes",
            "BID pipes installed: SRv6 encap routes this agent holds in the BID tables.",
            registry=self.registry,
        )

    def set_bindings(self, counts: Mapping[str, int]) -> None:
        """Each state's count (a state not in `counts` is 0)."""
        for state in self.states:
            self.bindings.labels(state).set(counts.get(state, 0))


class McoaHaMetrics(McoaMetrics):
    """The home agent: BUs in, BAs out by status, bindings that ran out, handling time."""

    def __init__(self, node: str) -> None:
        super().__init__("mcoa-ha", node, ("registered",))
        reg = self.registry
        self.updates_received = Counter(
            "multinet_mcoa_binding_updates_received",
            "Binding Updates received and decoded.",
            registry=reg,
        )
        self.acks_sent = _status_counter(
            "multinet_mcoa_binding_acks_sent", "Binding Acknowledgements sent, by status.", reg
        )
        self.expiries = Counter(
            "multinet_mcoa_binding_expiries",
            "Bindings that ran out without a refresh.",
            registry=reg,
        )
        self.handling_seconds = Histogram(
            "multinet_mcoa_bu_handling_seconds",
            "From a Binding Update's arrival to its BA sent: cache decision and kernel pipes.",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )


class McoaMrMetrics(McoaMetrics):
    """The mobile router: BUs out by kind, BAs in by status, registration round trips."""

    def __init__(self, node: str) -> None:
        super().__init__("mcoa-mr", node, MR_BINDING_STATES)
        reg = self.registry
        self.updates_sent = Counter(
            "multinet_mcoa_binding_updates_sent",
            "Binding Updates sent, by kind (register, refresh, retransmit, deregister).",
            ["kind"],
            registry=reg,
        )
        for kind in BU_KINDS:
            self.updates_sent.labels(kind)
        self.acks_received = _status_counter(
            "multinet_mcoa_binding_acks_received",
            "Binding Acknowledgements received for our BUs, by status.",
            reg,
        )
        self.registration_seconds = Histogram(
            "multinet_mcoa_registration_seconds",
            "From a Binding Update sent to the accepted BA answering it.",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )


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
