"""The NSA's main broker connection: `services.runtime.ServiceBus` plus the sorting of each
message into the decision thread's inbox.

Link state, binding events, preferences, rules, statuses and presences come in (QoS 1);
the retained decisions go out (`ServiceBus.publish_latest`: while the broker is away only
the latest per router is held). Connecting, the presence and its last will, resubscribing on
every CONNACK and the dead letters are the runtime's, as for every service.

paho's thread only sorts and queues: messages of routers this replica does not own are
dropped before anything is parsed (`routes`), and the inputs, not repeated, are never
dropped: when the inbox is full, paho's thread waits. The subscriptions are asked of
`routes` at each connection (a partitioned replica subscribes to its own routers' topics).

The monitors' metrics (thousands a second) come over a connection of their own, in a process
of their own (`metrics_receiver`).
"""

from __future__ import annotations

from collections.abc import Callable

import paho.mqtt.client as mqtt

from services.contracts.settings import BrokerSettings
from services.metrics import ServiceMetrics
from services.nsa.core.routes import Routes
from services.nsa.inbox import Inbox
from services.nsa.items import Item
from services.runtime import ServiceBus, Subscription

SERVICE = "nsa"


class BusIntake:
    """What the runtime asks of the NSA: its subscriptions, and what to do with a message."""

    def __init__(
        self,
        routes: Routes,
        inbox: Inbox[Item],
        filters: Callable[[], list[str]] | None = None,
    ) -> None:
        self.routes = routes
        self.inbox = inbox
        self.unroutable = 0
        #: the filters to subscribe at each connection: `routes`' own, or, with leased
        #: partitions, those of the partitions held now (`services.nsa.fleet`)
        self.filters = routes.filters if filters is None else filters

    def subscriptions(self) -> list[Subscription]:
        """Every input but the metrics, at QoS 1 (asked again at each connection)."""
        return [Subscription(topic) for topic in self.filters()]

    def on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        """Sort one message into the inbox (paho's thread), or drop it when not ours."""
        raw = self.routes.route(msg.topic, bytes(msg.payload))
        if raw is None:
            self.unroutable += 1
            return
        self.inbox.put(raw)


def connect(
    broker: BrokerSettings, name: str, intake: BusIntake, metrics: ServiceMetrics
) -> ServiceBus:
    """The replica's `ServiceBus` (not started), reading through `intake`."""
    return ServiceBus(
        service=SERVICE,
        node=name,
        broker=broker,
        metrics=metrics,
        subscriptions=intake.subscriptions,
        on_message=intake.on_message,
    )
