"""The gateway's one long-lived MQTT client: publishes documents, feeds the tracker.

It runs on the service runtime (`services.runtime.ServiceBus`: connection, presence as service
`soap-gateway` of the node named after the gateway, with its last will, subscriptions renewed
on every connection, dead letters, metrics endpoint). It subscribes to the status and presence
topics of exactly the configured nodes. Its session is not kept across restarts (expiry 0):
statuses queued while the gateway was down answer no waiting call, and the retained presences
give the current picture on every connect.

A malformed status or presence is ignored (logged); one whose handling raises anyway is set
aside on the gateway's dead-letter topic: an exception escaping paho's callback would end
paho's network thread, and with it every delivery of the gateway.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import ValidationError

from services.contracts.echo import echo
from services.contracts.messages import PolicyStatus, Presence, decode
from services.contracts.settings import BrokerSettings
from services.metrics import ServiceMetrics
from services.runtime import ServiceBus, Subscription
from services.soap_gateway.tracker import Tracker

log = logging.getLogger(__name__)
SERVICE = "soap-gateway"


class BusLink:
    """Implements `core.Publisher` on a paho client whose network loop runs in paho's thread."""

    def __init__(
        self,
        broker: BrokerSettings,
        name: str,
        nodes: Iterable[str],
        tracker: Tracker,
        *,
        metrics: ServiceMetrics,
        publish_timeout_s: float = 5.0,
    ) -> None:
        self.name = name
        self.nodes = tuple(nodes)
        self.tracker = tracker
        self.publish_timeout_s = publish_timeout_s
        self.bus = ServiceBus(
            service=SERVICE,
            node=name,
            broker=broker.model_copy(update={"session_expiry_s": 0}),
            metrics=metrics,
            subscriptions=self._subscriptions,
            on_message=self._on_message,
        )
        self.topics = self.bus.topics
        self.client = self.bus.client
        self.dead_letters = self.bus.dead_letters
        self._statuses = {self.topics.status(node): node for node in self.nodes}
        self._presences = {self.topics.presence(node, "prem"): node for node in self.nodes}

    def start(self, listen: str | None = None, timeout_s: float = 10.0) -> None:
        """Serve metrics on `listen` (None: off), then connect (paho keeps retrying in the
        background if the broker is not up yet)."""
        self.bus.start(listen, timeout_s=timeout_s)

    def online(self) -> None:
        """Say the gateway is online (retained presence), once it serves SOAP."""
        self.bus.online()

    def close(self) -> None:
        """Presence offline, disconnect, stop paho's thread, close the metrics endpoint."""
        self.bus.close()

    def connected(self) -> bool:
        """Whether the broker connection is up now."""
        return bool(self.client.is_connected())

    def publish(self, node: str, document: bytes) -> bool:
        """Publish one document at QoS 1; True once the broker acknowledged it."""
        info = self.client.publish(self.topics.policy(node), document, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning(
                "gateway %s: cannot publish to %s: %s", self.name, node, mqtt.error_string(info.rc)
            )
            return False
        try:
            info.wait_for_publish(self.publish_timeout_s)
        except (RuntimeError, ValueError) as exc:
            log.warning("gateway %s: publishing to %s failed: %s", self.name, node, exc)
            return False
        return bool(info.is_published())

    def _subscriptions(self) -> list[Subscription]:
        # Statuses at QoS 0: the session ends with the connection (expiry 0), so a status the
        # broker had not delivered when it drops is lost at QoS 1 too, and an acknowledgement
        # per status (two per delivery) would buy nothing.
        statuses = [Subscription(topic, SubscribeOptions(qos=0)) for topic in self._statuses]
        return [*statuses, *(Subscription(topic) for topic in self._presences)]

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        try:
            self._take(msg.topic, payload)
        except ValidationError as exc:
            # The error repeats the payload's keys and values: echoed, it cannot forge a line.
            log.warning(
                "gateway %s: ignored a malformed message on %s: %s",
                self.name,
                msg.topic,
                echo(str(exc)),
            )
        except Exception as exc:
            kind = "status" if msg.topic in self._statuses else "presence"
            self.dead_letters.post(source=msg.topic, input_kind=kind, payload=payload, error=exc)

    def _take(self, topic: str, payload: bytes) -> None:
        if topic in self._statuses:
            status = decode(PolicyStatus, payload)
            if status.node == self._statuses[topic]:
                self.tracker.on_status(status)
        elif topic in self._presences:
            presence = decode(Presence, payload)
            # Other services of the node may announce themselves on the same topic.
            if presence.node == self._presences[topic] and presence.service == "prem":
                self.tracker.on_presence(presence)
