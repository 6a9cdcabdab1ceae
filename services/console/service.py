"""The console process: a read-only bus subscription feeding the picture, and the web server.

paho's thread decodes each message (JSON models, policy documents through the one XML codec)
and feeds the picture under its lock; uvicorn serves the Starlette app (`web`) from its own
thread on a socket bound here first, so a port in use stops the start with a clear error. The
main thread ticks the picture once a second (dead-letter alerts expire) until `stop()`.

The console publishes nothing but its own presence (and, if handling a message ever raised, a
dead letter) and the operators' pin requests (`web`: operator role, CSRF token; the NSA
checks, applies and audits them): connection, presence, dead letters, metrics endpoint,
signals and the order of shutdown are the shared runtime's (`services.runtime.ServiceBus`).
"""

from __future__ import annotations

import logging
import socket
import threading

import paho.mqtt.client as mqtt
import uvicorn
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

from services.console.auth import Authenticator
from services.console.config import ConsoleSettings
from services.console.core import ConsoleState
from services.console.metrics import ConsoleMetrics
from services.console.picture import Picture
from services.console.web import make_app
from services.contracts import policy_xml
from services.contracts.errors import InvalidInput
from services.contracts.messages import (
    AuditRecord,
    BindingEvent,
    DeadLetter,
    LinkMetrics,
    LinkState,
    NodeMetrics,
    PinRequest,
    PolicyStatus,
    Presence,
)
from services.contracts.settings import BrokerSettings, parse_listen
from services.contracts.topics import TopicKind, Topics
from services.nsa.core.documents import DecisionRecord
from services.runtime import ServiceBus, Subscription, on_signals

log = logging.getLogger(__name__)
SERVICE = "console"
TICK_S = 1.0

_MODELS: dict[TopicKind, type[BaseModel]] = {
    TopicKind.LINK_METRICS: LinkMetrics,
    # Several links' metrics of one node (a monitor's `batch_metrics`): validated whole here,
    # so a message with one bad entry is dropped before any entry reaches the picture.
    TopicKind.NODE_METRICS: NodeMetrics,
    TopicKind.LINK_STATE: LinkState,
    TopicKind.BINDING_EVENT: BindingEvent,
    TopicKind.DECISION: DecisionRecord,
    TopicKind.STATUS: PolicyStatus,
    TopicKind.PRESENCE: Presence,
    TopicKind.DEAD_LETTER: DeadLetter,
    TopicKind.AUDIT: AuditRecord,
}


def subscriptions(topics: Topics) -> list[Subscription]:
    """Every topic the console reads (and the broker's ACL lets user `console` read)."""
    return [
        Subscription(topics.links()),
        Subscription(topics.nodes_metrics()),
        Subscription(topics.binding_events()),
        Subscription(topics.decisions()),
        Subscription(topics.statuses()),
        Subscription(topics.policies()),
        Subscription(topics.presences()),
        Subscription(topics.dead_letters()),
        Subscription(topics.audits()),
    ]


def decode_message(kind: TopicKind, payload: bytes) -> object:
    """The message a payload of `kind` carries (raises ValidationError or InvalidInput)."""
    if kind is TopicKind.POLICY:
        return policy_xml.parse(payload)
    return _MODELS[kind].model_validate_json(payload)


class ConsoleService:
    """The console: picture, bus, web server."""

    def __init__(
        self,
        settings: ConsoleSettings,
        broker: BrokerSettings,
    ) -> None:
        self.settings = settings
        self.topics = Topics(broker.topic_root)
        self.picture = Picture(ConsoleState(settings.limits()))
        self.auth = Authenticator(
            settings.users, ttl_s=settings.session_ttl_s, limits=settings.login
        )
        self.metrics = ConsoleMetrics(settings.name)
        self.app = make_app(settings, self.picture, self.auth, self.metrics, self._send_pin)
        self.bus = ServiceBus(
            service=SERVICE,
            node=settings.name,
            broker=broker,
            metrics=self.metrics,
            subscriptions=lambda: subscriptions(self.topics),
            on_message=self._on_message,
        )
        self._counters: dict[tuple[bool, str], Counter] = {}  # few: one per topic kind
        self._stop = threading.Event()
        self._server: uvicorn.Server | None = None
        self.port: int | None = None

    # --- bus -----------------------------------------------------------------------------

    def _send_pin(self, request: PinRequest) -> bool:
        """An operator's pin request on the router's pin topic (QoS 1, not retained); False
        when the broker is not connected (the page says nothing was sent)."""
        if not self.bus.client.is_connected():
            return False
        info = self.bus.publish(self.topics.pin(request.mobile_router), request)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        name = self.topics.parse(msg.topic)
        if name is None or (name.kind not in _MODELS and name.kind is not TopicKind.POLICY):
            return
        payload = bytes(msg.payload)
        if not payload:
            return  # a retained message deleted
        kind = name.kind.value
        try:
            message = decode_message(name.kind, payload)
        except (ValidationError, InvalidInput, ValueError) as exc:
            log.debug("console: %s on %s does not decode: %s", kind, msg.topic, exc)
            self.metrics.messages_dropped.labels(kind).inc()
            return
        try:
            taken = self.picture.feed(name, message)
        except Exception as exc:
            self.bus.dead_letters.post(
                source=msg.topic, input_kind=kind, payload=payload, error=exc
            )
            return
        self._counter(taken, kind).inc()

    def _counter(self, taken: bool, kind: str) -> Counter:
        """The counter child of (taken or dropped, kind), looked up once: `labels()` costs
        about a third of the console's own work per message (bench/console.py)."""
        child = self._counters.get((taken, kind))
        if child is None:
            family = self.metrics.messages_in if taken else self.metrics.messages_dropped
            child = self._counters[(taken, kind)] = family.labels(kind)
        return child

    # --- life ----------------------------------------------------------------------------

    def bind(self) -> socket.socket:
        """The web socket, bound and listening (OSError names what went wrong)."""
        host, port = parse_listen(self.settings.listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        return sock

    def run(self, *, ready: threading.Event | None = None) -> None:
        """Serve until `stop()`: web socket, bus, presence, web server, ticks."""
        sock = self.bind()
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        server = self._server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="console-http", daemon=True
        )
        try:
            self.bus.start(self.settings.metrics_listen)
            thread.start()
            self.bus.online()
            log.info(
                "node %s: console on http://%s (port %d)",
                self.settings.name,
                self.settings.listen,
                self.port,
            )
            if ready is not None:
                ready.set()
            while not self._stop.wait(TICK_S):
                self.picture.tick()
                self.metrics.routers.set(len(self.picture.state.routers))
        finally:
            server.should_exit = True
            if thread.is_alive():
                thread.join(5)
            sock.close()
            self.bus.close()

    def run_in_signals(self) -> None:
        """`run` with SIGTERM and SIGINT stopping it."""
        on_signals(self.settings.name, self.stop)
        self.run()

    def stop(self) -> None:
        """Ask `run` to finish (thread-safe, signal-safe)."""
        self._stop.set()
