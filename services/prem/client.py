"""Deliver one policy document to a node's PREM worker over MQTT and wait for its status.

Used by the command line, the demo and the tests; the SOAP gateway does the same for many
nodes at once.
"""

from __future__ import annotations

import queue
import time
import uuid
from collections import defaultdict, deque

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from services import bus
from services.contracts.messages import PolicyStatus, Presence, decode
from services.contracts.settings import BrokerSettings
from services.contracts.topics import Topics


class DeliveryTimeoutError(TimeoutError):
    """No status for the document arrived before the deadline."""


class PolicyClient:
    """A bus connection that publishes documents and collects the workers' statuses."""

    def __init__(self, broker: BrokerSettings, *, client_id: str | None = None) -> None:
        self.topics = Topics(broker.topic_root)
        self.statuses: queue.Queue[PolicyStatus] = queue.Queue()
        self.presences: queue.Queue[Presence] = queue.Queue()
        self.client = bus.make_client(broker, client_id or f"policy-client-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self._subscribed: set[str] = set()
        #: statuses of other nodes read while waiting for one node's, kept for their turn
        self._set_aside: defaultdict[str, deque[PolicyStatus]] = defaultdict(deque)
        bus.start(self.client, broker)

    def watch(self, node: str) -> None:
        """Subscribe to a node's statuses (before sending, so no answer is missed)."""
        topic = self.topics.status(node)
        if topic not in self._subscribed:
            result, _ = self.client.subscribe(topic, qos=1)
            if result != mqtt.MQTT_ERR_SUCCESS:
                raise ConnectionError(f"cannot subscribe to {topic}: {mqtt.error_string(result)}")
            self._subscribed.add(topic)

    def deliver(self, node: str, document: bytes, *, timeout_s: float = 10.0) -> PolicyStatus:
        """Publish `document` to `node` (QoS 1) and return the first status answering it."""
        self.watch(node)
        info = self.client.publish(self.topics.policy(node), document, qos=1)
        info.wait_for_publish(timeout_s)
        return self.next_status(node, timeout_s=timeout_s)

    def next_status(self, node: str, *, timeout_s: float = 10.0) -> PolicyStatus:
        """The next status published by `node`. Statuses of other nodes read meanwhile are
        kept for their own call: in scheme 2 the MR's worker may answer the document the HA
        forwarded before the HA's status arrives, and waiting for the HA's must not lose it."""
        kept = self._set_aside[node]
        if kept:
            return kept.popleft()
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                status = self.statuses.get(timeout=max(0.0, deadline - time.monotonic()))
                if status.node == node:
                    return status
                self._set_aside[status.node].append(status)
        except queue.Empty as exc:
            raise DeliveryTimeoutError(f"no status from node {node} within {timeout_s} s") from exc

    def wait_online(self, node: str, *, timeout_s: float = 10.0) -> Presence:
        """Wait until `node`'s worker is online: its retained presence says so, or it
        announces itself.

        Presences received before the call are dropped and the presence topic is subscribed
        again, which makes the broker send the retained presence as it is now: an older
        "online" (a worker republishes its presence after new versions) must not stand for
        a worker that has stopped since.
        """
        self.watch(node)
        while not self.presences.empty():
            self.presences.get_nowait()
        self.client.subscribe(self.topics.presence(node, "prem"), qos=1)
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                presence = self.presences.get(timeout=left)
            except queue.Empty:
                break
            if presence.node == node and presence.online:
                return presence
        raise DeliveryTimeoutError(f"node {node} did not come online within {timeout_s} s")

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            if "/presence/" in msg.topic:
                self.presences.put(decode(Presence, bytes(msg.payload)))
            else:
                self.statuses.put(decode(PolicyStatus, bytes(msg.payload)))
        except ValidationError:
            return
