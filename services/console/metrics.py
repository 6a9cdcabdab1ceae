"""The console's Prometheus metrics: messages in by kind, live event streams, events sent."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from services.contracts.topics import TopicKind
from services.metrics import ServiceMetrics, counter_by

#: The kinds of message the console reads (its subscriptions): every one has its series from
#: the start (`counter_by`). A `NodeMetrics` counts once, as one bus message of its own kind.
READ_KINDS = (
    TopicKind.LINK_METRICS,
    TopicKind.NODE_METRICS,
    TopicKind.LINK_STATE,
    TopicKind.BINDING_EVENT,
    TopicKind.DECISION,
    TopicKind.STATUS,
    TopicKind.POLICY,
    TopicKind.PRESENCE,
    TopicKind.DEAD_LETTER,
    TopicKind.AUDIT,
)


class ConsoleMetrics(ServiceMetrics):
    """What the console took in and what it sent to browsers."""

    def __init__(self, node: str) -> None:
        super().__init__("console", node)
        reg = self.registry
        self.messages_in = counter_by(
            "multinet_console_messages",
            "Bus messages taken into the console's picture, by kind.",
            "kind",
            [k.value for k in READ_KINDS],
            reg,
        )
        self.messages_dropped = counter_by(
            "multinet_console_messages_dropped",
            "Bus messages not taken: undecodable, inconsistent with their topic, or over a "
            "bound of the picture, by kind.",
            "kind",
            [k.value for k in READ_KINDS],
            reg,
        )
        self.sse_clients = Gauge(
            "multinet_console_sse_clients", "Event streams open to browsers.", registry=reg
        )
        self.events_sent: Counter = counter_by(
            "multinet_console_events_sent",
            "Server-sent events written to browsers, by stream (fleet, router).",
            "stream",
            ("fleet", "router"),
            reg,
        )
        self.logins: Counter = counter_by(
            "multinet_console_logins",
            "Login attempts, by outcome (accepted, refused: wrong user or password, throttled: "
            "refused unchecked after too many failures).",
            "outcome",
            ("accepted", "refused", "throttled"),
            reg,
        )
        self.routers = Gauge(
            "multinet_console_routers", "Mobile routers in the picture.", registry=reg
        )
