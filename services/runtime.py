"""The skeleton every bus-connected service shares: connect, presence, subscriptions, dead
letters, metrics endpoint, signals, ordered shutdown.

A service is its handlers plus a `ServiceBus`: it says which topics it reads (renewed on every
connection, so a broker restart loses nothing), what to do with a message, and when it is
online; the runtime does the rest the same way everywhere:

- `start`: the metrics endpoint first (a port that cannot be bound stops the service at once,
  before anything else happens), then the broker connection (MQTT 5, persistent session, a
  stable client id, jittered reconnects), then the retained presence saying online; its last
  will says offline when the process dies.
- on every CONNACK: the subscriptions again (at most `PER_SUBSCRIBE` filters per SUBSCRIBE),
  and the presence again once the service has said it is online (a broker that lost its
  retained messages learns it anew), then the retained messages held while disconnected.
- `publish_latest`: a retained message of which only the last one per topic matters (an
  NSA's decision per router). While the broker is away it is not handed to paho, which would
  queue every one of them without bound; only the latest per topic is held, and sent when the
  connection is back: a retained topic's subscribers only ever get its last message anyway.
- `dead_letters`: where an input whose handling raised is set aside (`services.deadletter`).
- `close`: presence offline (waited for briefly), disconnect, paho's thread stopped, metrics
  endpoint closed: in that order, so subscribers see the service go before its endpoint does.
- `on_signals`: SIGTERM and SIGINT call the service's `stop`, logged with the node.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from services import bus
from services.contracts.messages import Envelope, encode
from services.contracts.settings import BrokerSettings
from services.contracts.topics import Topics
from services.deadletter import DeadLetters
from services.metrics import ServiceMetrics

log = logging.getLogger(__name__)

_OFFLINE_WAIT_S = 2.0
#: Topic filters per SUBSCRIBE packet (a partitioned NSA replica may have thousands).
PER_SUBSCRIBE = 500


@dataclass(frozen=True, slots=True)
class Subscription:
    """One topic filter a service reads, at QoS 1 unless `options` say otherwise."""

    topic: str
    options: SubscribeOptions | None = None


MessageHandler = Callable[[mqtt.Client, object, mqtt.MQTTMessage], None]


class ServiceBus:
    """One service's connection to the bus (see the module docstring for the order of things).

    `subscriptions` is called on every connection (it may change, e.g. an NSA replica's
    partitions); `presence_version` adds a version to each presence (a PREM worker's enforced
    version); `on_connected` runs after the subscriptions on every accepted CONNACK.
    """

    def __init__(
        self,
        *,
        service: str,
        node: str,
        broker: BrokerSettings,
        metrics: ServiceMetrics,
        subscriptions: Callable[[], Sequence[Subscription]] = tuple,
        on_message: MessageHandler | None = None,
        manual_ack: bool = False,
        presence_version: Callable[[], int | None] | None = None,
        on_connected: Callable[[mqtt.Client], None] | None = None,
    ) -> None:
        self.service = service
        self.node = node
        self.broker = broker
        self.metrics = metrics
        self.topics = Topics(broker.topic_root)
        self.presence = bus.Announcer(self.topics, node, service)
        self.client = bus.make_client(
            broker,
            bus.client_id(service, node, broker.topic_root),
            will_topic=self.presence.topic,
            will=self.presence.message(online=False),
            manual_ack=manual_ack,
        )
        self.client.on_connect = self._on_connect
        if on_message is not None:
            self.client.on_message = on_message
        self.dead_letters = DeadLetters(
            self.client, self.topics, node, service, metrics.dead_letters
        )
        self._subscriptions = subscriptions
        self._presence_version = presence_version
        self._on_connected = on_connected
        self._online = False
        self._held: dict[str, bytes] = {}  # publish_latest while disconnected, by topic
        self._held_lock = threading.Lock()
        metrics.watch_client(self.client)

    def start(self, listen: str | None, *, timeout_s: float = 10.0) -> None:
        """Serve metrics on `listen` (None: off), connect, and wait up to `timeout_s` for the
        broker (paho keeps retrying after that)."""
        self.metrics.serve(listen)
        bus.start(self.client, self.broker, timeout_s=timeout_s)

    def online(self) -> None:
        """Say the service is online (retained); from now on, on every reconnection too."""
        self._online = True
        self.announce()

    def announce(self) -> mqtt.MQTTMessageInfo:
        """Publish the presence as it stands (online or not, with the current version)."""
        version = None if self._presence_version is None else self._presence_version()
        return self.presence.publish(self.client, online=self._online, version=version)

    def publish(
        self, topic: str, message: Envelope | bytes, *, qos: int = 1, retain: bool = False
    ) -> mqtt.MQTTMessageInfo:
        """Publish a message (encoded unless already bytes)."""
        payload = message if isinstance(message, bytes) else encode(message)
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def publish_latest(self, topic: str, message: Envelope | bytes) -> None:
        """Publish retained at QoS 1; while disconnected, hold only the latest per topic."""
        payload = message if isinstance(message, bytes) else encode(message)
        with self._held_lock:  # checked under the lock that _on_connect flushes under
            if not self.client.is_connected():
                self._held[topic] = payload
                return
        self._send_retained(topic, payload)

    @property
    def held(self) -> int:
        """Retained messages waiting for the connection (`publish_latest`, one per topic)."""
        return len(self._held)

    def _send_retained(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=True)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("cannot publish on %s: %s", topic, mqtt.error_string(info.rc))

    def close(self) -> None:
        """Presence offline (waited for briefly), disconnect, stop paho, close the endpoint."""
        if self._online:
            self._online = False
            info = self.announce()
            if self.client.is_connected():
                try:
                    info.wait_for_publish(_OFFLINE_WAIT_S)
                except (RuntimeError, ValueError):
                    log.warning("node %s: %s offline presence not sent", self.node, self.service)
        self.client.disconnect()
        self.client.loop_stop()
        self.metrics.close()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: object,
        props: object,
    ) -> None:
        log.info("node %s: %s connected to the broker (%s)", self.node, self.service, reason)
        if getattr(reason, "is_failure", False):
            return
        subscriptions = list(self._subscriptions())
        for start in range(0, len(subscriptions), PER_SUBSCRIBE):
            batch = subscriptions[start : start + PER_SUBSCRIBE]
            plain = [(s.topic, 1) for s in batch if s.options is None]
            if plain:
                client.subscribe(plain)
            for s in batch:
                if s.options is not None:
                    client.subscribe(s.topic, options=s.options)
        if self._online:
            self.announce()
        with self._held_lock:
            held, self._held = self._held, {}
            for topic, payload in held.items():
                self._send_retained(topic, payload)
        if held:
            log.info(
                "node %s: %s sent %d messages held while disconnected",
                self.node,
                self.service,
                len(held),
            )
        if self._on_connected is not None:
            self._on_connected(client)


def on_signals(node: str, stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT call `stop` (from the main thread), logged with the node."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("node %s: signal %d, stopping", node, signum)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
