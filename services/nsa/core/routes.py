"""From an MQTT topic to what the decision thread must do with its message, and whose it is.

A replica that serves every router subscribes with wildcards built from the same root as
`Topics`; a replica of a partition subscribes to its own routers' topics only (built by
`Topics` itself), so the broker does not send it the other replicas' inputs and each replica's
MQTT work shrinks with its share. Each message is sorted here, in the MQTT thread, from its
topic alone: the kind of input and the mobile router (or node) it concerns. A message of a
router this replica does not own, or of a node no owned router uses, is dropped before its
payload is parsed (see `partition`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from services.contracts.topics import Topics
from services.nsa.core.settings import RouterEntry


class InputKind(Enum):
    """What a bus message is, for the decision thread."""

    METRICS = "metrics"
    LINK_STATE = "link-state"
    BINDING = "binding-event"
    PREFERENCES = "preferences"
    RULES = "operator-rules"
    STATUS = "status"
    PRESENCE = "presence"


@dataclass(frozen=True, slots=True)
class Raw:
    """One message as received: parsed later, on the decision thread.

    `key` is the mobile router for metrics, link state, binding events and preferences, the
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
        self._prefix = topics.root + "/"
        self._router_of_mr_node = {r.mr_node: r.id for r in routers}
        self._routers = {r.id for r in routers}
        self._nodes = {r.ha_node for r in routers} | {r.mr_node for r in routers}

    def metrics_filters(self) -> list[str]:
        """The subscriptions of the metrics connection (QoS 0, the monitors' rate)."""
        if self.per_router:
            return [f"{self.topics.root}/node/{r.mr_node}/link/+/metrics" for r in self.owned]
        return [f"{self.topics.root}/node/+/link/+/metrics"]

    def filters(self) -> list[str]:
        """Every other input, subscribed with QoS 1 on the main connection."""
        if self.per_router:
            return self._router_filters()
        root = self.topics.root
        return [
            f"{root}/node/+/link/+/state",
            f"{root}/mr/+/binding/+",
            f"{root}/mr/+/preferences",
            self.topics.operator_rules(),
            f"{root}/node/+/status",
            f"{root}/node/+/presence/prem",
        ]

    def _router_filters(self) -> list[str]:
        topics, root = self.topics, self.topics.root
        found: dict[str, None] = {topics.operator_rules(): None}
        for router in self.owned:
            found[f"{root}/node/{router.mr_node}/link/+/state"] = None
            found[f"{root}/mr/{router.id}/binding/+"] = None
            found[topics.preferences(router.id)] = None
            for node in (router.ha_node, router.mr_node):
                found[topics.status(node)] = None
                found[topics.presence(node, "prem")] = None
        return list(found)

    def route(self, topic: str, payload: bytes) -> Raw | None:
        """The input this message is, or None when it is not for this replica."""
        if not topic.startswith(self._prefix):
            return None
        parts = topic[len(self._prefix) :].split("/")
        kind, key = self._classify(parts)
        if kind is None:
            return None
        return Raw(kind, key, topic, payload)

    def _classify(self, parts: list[str]) -> tuple[InputKind | None, str]:
        kind = _SHAPES.get(_shape(parts))
        if kind is None:
            return None, ""
        if kind in (InputKind.METRICS, InputKind.LINK_STATE):
            router = self._router_of_mr_node.get(parts[1])
            return (kind, router) if router is not None else (None, "")
        if kind in (InputKind.STATUS, InputKind.PRESENCE):
            return (kind, parts[1]) if parts[1] in self._nodes else (None, "")
        if kind in (InputKind.BINDING, InputKind.PREFERENCES):
            return (kind, parts[1]) if parts[1] in self._routers else (None, "")
        return kind, ""


#: Topic shapes below the root, variable segments (node, router, interface, BID) left out.
_SHAPES = {
    ("node", "link", "metrics"): InputKind.METRICS,
    ("node", "link", "state"): InputKind.LINK_STATE,
    ("node", "status"): InputKind.STATUS,
    ("node", "presence", "prem"): InputKind.PRESENCE,
    ("mr", "binding"): InputKind.BINDING,
    ("mr", "preferences"): InputKind.PREFERENCES,
    ("operator", "rules"): InputKind.RULES,
}


def _shape(parts: list[str]) -> tuple[str, ...]:
    head = parts[0]
    if head == "node" and len(parts) == 5 and parts[2] == "link":
        return ("node", "link", parts[4])
    if head == "mr" and len(parts) == 4 and parts[2] == "binding":
        return ("mr", "binding")
    if head in ("node", "mr") and len(parts) >= 2:
        return (head, *parts[2:])
    return tuple(parts)
