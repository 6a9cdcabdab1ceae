"""The PREM worker: policy documents from MQTT in, kernel state and statuses out.

The MQTT transport of a PREM node (`node.PremNode` runs the node's life cycle). The bus side is
the service runtime (`services.runtime.ServiceBus`): the retained presence carries the version
enforced now, so a gateway or NSA replica that starts later reads it first. paho's network
thread only queues documents. A document is acknowledged to the broker (QoS 1, manual ack)
only after it was applied, refused or set aside as a dead letter, so a crash in between means
redelivery; a document set aside is acknowledged at once, so that a restarted worker is not
stuck behind it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from services.contracts import policy_xml
from services.contracts.errors import Problem
from services.contracts.messages import PolicyStatus
from services.contracts.settings import BrokerSettings
from services.prem.config import PremSettings
from services.prem.enforcer import Enforcer, Reply
from services.prem.metrics import PremMetrics
from services.prem.node import PremNode
from services.runtime import ServiceBus, Subscription
from services.throttled import Throttled

log = logging.getLogger(__name__)
SERVICE = "prem"
QUEUE_SIZE = 256
#: The retained presence (with the version enforced) goes out at once after a version change,
#: then at most this often while documents keep coming; each status carries its version anyway.
PRESENCE_INTERVAL_S = 1.0


@dataclass(frozen=True)
class _Document:
    payload: bytes
    mid: int
    qos: int
    retained: bool = False


#: Why a retained policy document is refused. The broker hands a retained message to every new
#: subscription, so the worker would get it again at each reconnect, long after newer versions:
#: a replay the version check catches only while the enforced version is known (not after the
#: state file was lost). Policy documents are never published retained. The worker subscribes
#: with MQTT 5's Retain As Published, so the flag also tells a document published retained
#: just now (without it, the broker clears the flag on delivery to existing subscriptions, and
#: the document would be applied; the broker would still replay it later).
RETAINED = Problem(
    "retained policy document: the broker replays it at every subscription; policy documents "
    "must be published with retain off",
    field="retain",
)


class PremWorker:
    """One node's worker: its MQTT session in front of the node's enforcement."""

    def __init__(
        self, settings: PremSettings, broker: BrokerSettings, *, netns_name: str | None = None
    ) -> None:
        self.settings = settings
        self.metrics = PremMetrics(settings.node)
        self.node = PremNode(
            settings, self, self.metrics, netns_name=netns_name, queue_size=QUEUE_SIZE
        )
        self.bus = ServiceBus(
            service=SERVICE,
            node=settings.node,
            broker=broker,
            metrics=self.metrics,
            subscriptions=self._subscriptions,
            on_message=self._on_message,
            manual_ack=True,
            presence_version=lambda: self.node.version,
        )
        self.topics = self.bus.topics
        self.client = self.bus.client
        self.dead_letters = self.bus.dead_letters
        #: The version the last retained presence announced.
        self._announced: int | None = None
        self._presence = Throttled(self._announce, PRESENCE_INTERVAL_S)
        #: Held while a status or the presence is published: a deferred presence (timer
        #: thread) reads the version and goes out before or after a status, never between,
        #: so it never reaches a subscriber after a status of a newer version.
        self._publishing = threading.RLock()

    def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, then stop cleanly (main thread only)."""
        self.node.run()

    def stop(self) -> None:
        """Ask the main loop to finish (thread-safe)."""
        self.node.stop()

    # The node's transport (node.Transport), called from the main thread.

    def open(self) -> None:
        """The metrics endpoint, then the broker connection, on the management side."""
        self.bus.start(self.settings.metrics_listen)

    def serve(self, enforcer: Enforcer) -> None:
        """Online, with the version enforced."""
        self._announced = enforcer.state.version
        self.bus.online()

    def handle(self, enforcer: Enforcer, document: _Document) -> PolicyStatus:
        """Apply or refuse one document, forward the mirrored uplink set (scheme 2), answer,
        then acknowledge it."""
        reply = (
            Reply(enforcer.refuse(RETAINED))
            if document.retained
            else enforcer.handle(document.payload)
        )
        if reply.forward is not None:
            # Scheme 2: the MR's worker gets the mirrored uplink set from us, QoS 1.
            forwarded = policy_xml.render(reply.forward)
            self.client.publish(self.topics.policy(reply.forward.node), forwarded, qos=1)
        self.on_status(reply.status)
        self._ack(document)
        return reply.status

    def set_aside(self, document: _Document, error: Exception) -> str:
        """On the node's dead-letter topic, acknowledged before anything else can fail."""
        self.dead_letters.post(
            source=self.topics.policy(self.settings.node),
            input_kind="policy",
            payload=document.payload,
            error=error,
        )
        self._ack(document)
        return self.dead_letters.topic

    def on_status(self, status: PolicyStatus) -> None:
        """Publish a status; the presence too when the version enforced changed."""
        with self._publishing:
            self.bus.publish(self.topics.status(self.settings.node), status)
            if status.version != self._announced:
                # The retained presence is what a gateway or NSA replica that starts later
                # reads first: it must carry the version enforced now, not the one at start.
                self._presence.request()

    def _announce(self) -> None:
        """The presence with the version enforced when it goes out (main or timer thread)."""
        with self._publishing:
            self._announced = self.node.version
            self.bus.announce()

    def stopping(self, drain: Callable[[], None]) -> None:
        """Nothing to drain: a document not acknowledged yet is redelivered to the next run."""

    def close(self) -> None:
        """Presence offline, disconnect, metrics endpoint closed."""
        self._presence.cancel()
        self.bus.close()

    # paho's thread

    def _subscriptions(self) -> list[Subscription]:
        options = SubscribeOptions(qos=1, retainAsPublished=True)
        return [Subscription(self.topics.policy(self.settings.node), options)]

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.node.put(_Document(bytes(msg.payload), msg.mid, msg.qos, bool(msg.retain)))

    def _ack(self, document: _Document) -> None:
        if document.qos > 0:
            self.client.ack(document.mid, document.qos)
