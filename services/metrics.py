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
from collections.abc import Iterable
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import paho.mqtt.client as mqtt
from prometheus_client import CollectorRegistry, Counter, Gauge, Info
from prometheus_client.exposition import start_http_server

from services.contracts.errors import MultinetError
from services.contracts.settings import parse_listen

#: Seconds; from a sub-millisecond memory apply to a multi-second iptables install.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def counter_by(
    name: str, doc: str, label: str, values: Iterable[str], registry: CollectorRegistry
) -> Counter:
    """A counter with one label whose every value is declared up front: each series reads 0
    from the start, so a rate or an alert on it works before the first event (a series that
    does not exist yet is "no data" to Prometheus, not 0)."""
    counter = Counter(name, doc, [label], registry=registry)
    for value in values:
        counter.labels(value)
    return counter


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
