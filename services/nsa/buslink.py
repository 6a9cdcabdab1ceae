"""The NSA's main broker connection: paho's thread only sorts and queues.

MQTT 5 through `services.bus` (persistent session, QoS 1): link state, binding events,
preferences, rules, statuses and presences in; the retained decisions out. Its inputs are not
repeated, so they are never dropped: when the inbox is full, paho's thread waits. Messages of
routers this replica does not own are dropped before anything is parsed (`routes`).

The monitors' metrics (thousands a second) come over a connection of their own, in a process
of their own (`metrics_receiver`).

While the broker is away, a retained message (a router's decision) is not handed to paho,
which would queue every one of them without bound; only the latest per topic is held, and
sent when the connection is back: a retained topic's subscribers only ever get its last
message anyway.

The replica's presence (`node/<name>/presence/nsa`, retained) is online from each connection
on, offline when it stops, and its last will says offline when it dies.
"""

from __future__ import annotations

import logging
import threading

import paho.mqtt.client as mqtt

from services import bus
from services.contracts.settings import BrokerSettings
from services.contracts.topics import Topics
from services.nsa.core.routes import Routes
from services.nsa.inbox import Inbox
from services.nsa.items import Item

log = logging.getLogger(__name__)

SERVICE = "nsa"
#: Topic filters per SUBSCRIBE packet (a partitioned replica has several per router).
PER_SUBSCRIBE = 500


class NsaBusLink:
    """Subscriptions, the paho callback, and publishing for one replica."""

    def __init__(
        self, broker: BrokerSettings, name: str, routes: Routes, inbox: Inbox[Item]
    ) -> None:
        self.broker = broker
        self.name = name
        self.routes = routes
        self.inbox = inbox
        self.presence = bus.Announcer(Topics(broker.topic_root), name, SERVICE)
        self.client = bus.make_client(
            broker,
            bus.client_id(SERVICE, name, broker.topic_root),
            will_topic=self.presence.topic,
            will=self.presence.message(online=False),
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.unroutable = 0
        self._held: dict[str, bytes] = {}  # retained messages published while disconnected
        self._held_lock = threading.Lock()

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect (paho keeps retrying in the background when the broker is down)."""
        bus.start(self.client, self.broker, timeout_s=timeout_s)

    def close(self) -> None:
        """Say offline, disconnect and stop paho's thread."""
        if self.client.is_connected():
            info = self.presence.publish(self.client, online=False)
            try:
                info.wait_for_publish(2.0)
            except (RuntimeError, ValueError):
                log.warning("replica %s: offline presence not sent", self.name)
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        """Publish at QoS 1; while disconnected, hold only the latest retained per topic."""
        if retain:
            with self._held_lock:  # checked under the lock that _on_connect flushes under
                if not self.client.is_connected():
                    self._held[topic] = payload
                    return
        self._send(topic, payload, retain=retain)

    @property
    def held(self) -> int:
        """Retained messages waiting for the connection (one per topic at most)."""
        return len(self._held)

    def _send(self, topic: str, payload: bytes, *, retain: bool) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("cannot publish on %s: %s", topic, mqtt.error_string(info.rc))

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: object,
        props: object,
    ) -> None:
        log.info("replica %s: connected to the broker (%s)", self.name, reason)
        if getattr(reason, "is_failure", False):
            return
        self.presence.publish(client, online=True)
        filters = self.routes.filters()
        for start in range(0, len(filters), PER_SUBSCRIBE):
            client.subscribe([(topic, 1) for topic in filters[start : start + PER_SUBSCRIBE]])
        with self._held_lock:
            held, self._held = self._held, {}
            for topic, payload in held.items():
                self._send(topic, payload, retain=True)
        if held:
            log.info("replica %s: sent %d decisions held while disconnected", self.name, len(held))

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        raw = self.routes.route(msg.topic, bytes(msg.payload))
        if raw is None:
            self.unroutable += 1
            return
        self.inbox.put(raw)
