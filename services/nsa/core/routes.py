"""From an MQTT topic to what the decision thread must do with its message, and whose it is.

A replica that serves every router subscribes with wildcard filters; a replica of a partition
subscribes to its own routers' topics only, so the broker does not send it the other
replicas' inputs and each replica's MQTT work shrinks with its share. Each message is sorted
here, in the MQTT thread, from its topic alone: the kind of input and the mobile router (or
node) it concerns. Filters and parsing are `Topics`' (`services.contracts.topics`, the one
grammar of topics). A message of a router this replica does not own, or of a node no owned
router uses, is dropped before its payload is parsed (see `partition`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from services.contracts.topics import TopicKind, Topics
from services.nsa.core.settings import RouterEntry


class InputKind(Enum):
    """What a bus message is, for the decision thread."""

    METRICS = "metrics"
    #: Several links' metrics of one node in one message (`NodeMetrics`): handled as its
    #: entries would be, each as a METRICS input.
    NODE_METRICS = "node-metrics"
    LINK_STATE = "link-state"
    BINDING = "binding-event"
    PREFERENCES = "preferences"
    RULES = "operator-rules"
    PIN = "pin"
    STATUS = "status"
    PRESENCE = "presence"


@dataclass(frozen=True, slots=True)
class Raw:
    """One message as received: parsed later, on the decision thread.

    `key` is the mobile router for metrics, link state, binding events, preferences and pin
    requests, the
    node for statuses and presences, empty for operator rules.
    """

    kind: InputKind
    key: str
    topic: str
    payload: bytes


class Routes:
    """Topic parsing and the ownership filter for one replica's routers."""

    def __init__(
        self, topics: Topics, routers: Iterable[RouterEntry], *, per_router: bool = False
    ) -> None:
        self.topics = topics
        self.per_router = per_router
        routers = tuple(routers)
        self.owned = routers
        self._router_of_mr_node = {r.mr_node: r.id for r in routers}
        self._routers = {r.id for r in routers}
        self._nodes = {r.ha_node for r in routers} | {r.mr_node for r in routers}

    def metrics_filters(self) -> list[str]:
        """The subscriptions of the metrics connection (QoS 0, the monitors' rate)."""
        topics = self.topics
        if self.per_router:
            return [
                f
                for r in self.owned
                for f in (topics.links(r.mr_node, "metrics"), topics.nodes_metrics(r.mr_node))
            ]
        return [topics.links(report="metrics"), topics.nodes_metrics()]

    def filters(self) -> list[str]:
        """Every other input, subscribed with QoS 1 on the main connection."""
        if self.per_router:
            return self._router_filters()
        topics = self.topics
        return [
            topics.links(report="state"),
            topics.binding_events(),
            topics.preference_sets(),
            topics.pins(),
            topics.operator_rules(),
            topics.statuses(),
            topics.presences(service="prem"),
        ]

    def _router_filters(self) -> list[str]:
        topics = self.topics
        found: dict[str, None] = {topics.operator_rules(): None}
        for router in self.owned:
            found[topics.links(router.mr_node, "state")] = None
            found[topics.binding_events(router.id)] = None
            found[topics.preferences(router.id)] = None
            found[topics.pins(router.id)] = None
            for node in (router.ha_node, router.mr_node):
                found[topics.status(node)] = None
                found[topics.presence(node, "prem")] = None
        return list(found)

    def route(self, topic: str, payload: bytes) -> Raw | None:
        """The input this message is, or None when it is not for this replica."""
        name = self.topics.parse(topic)
        if name is None:
            return None
        kind = _INPUTS.get(name.kind)
        if kind is None:
            return None
        key = self._key(kind, name.owner, name.item)
        return None if key is None else Raw(kind, key, topic, payload)

    def _key(self, kind: InputKind, owner: str, item: str) -> str | None:
        """The router (or node) an input of `owner` concerns; None when not this replica's."""
        if kind is InputKind.METRICS or kind is InputKind.NODE_METRICS:
            return self._router_of_mr_node.get(owner)
        if kind is InputKind.LINK_STATE:
            return self._router_of_mr_node.get(owner)
        if kind is InputKind.BINDING or kind is InputKind.PREFERENCES or kind is InputKind.PIN:
            return owner if owner in self._routers else None
        if kind is InputKind.STATUS or (kind is InputKind.PRESENCE and item == "prem"):
            return owner if owner in self._nodes else None
        return "" if kind is InputKind.RULES else None


#: The topics the NSA reads (`Topics.parse`'s kinds) as the decision thread's inputs.
_INPUTS = {
    TopicKind.LINK_METRICS: InputKind.METRICS,
    TopicKind.NODE_METRICS: InputKind.NODE_METRICS,
    TopicKind.LINK_STATE: InputKind.LINK_STATE,
    TopicKind.STATUS: InputKind.STATUS,
    TopicKind.PRESENCE: InputKind.PRESENCE,
    TopicKind.BINDING_EVENT: InputKind.BINDING,
    TopicKind.PREFERENCES: InputKind.PREFERENCES,
    TopicKind.OPERATOR_RULES: InputKind.RULES,
    TopicKind.PIN: InputKind.PIN,
}
