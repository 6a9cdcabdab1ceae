"""MQTT topic names. Every topic lives under a versioned root (default `multinet/v1`).

The root is a parameter so that tests (and several deployments on one broker) can isolate
themselves with a unique prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_ROOT = "multinet/v1"
_SEGMENT = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _segment(value: str, what: str) -> str:
    if not _SEGMENT.match(value):
        raise ValueError(f"{what} {value!r} cannot be a topic segment (letters, digits, _.:-)")
    return value


@dataclass(frozen=True)
class Topics:
    """Builds every topic name from one root."""

    root: str = DEFAULT_ROOT

    def policy(self, node: str) -> str:
        """Policy documents (XML) for one node's PREM worker; QoS 1, not retained."""
        return f"{self.root}/node/{_segment(node, 'node')}/policy"

    def status(self, node: str) -> str:
        """Acknowledgements of one node's PREM worker."""
        return f"{self.root}/node/{_segment(node, 'node')}/status"

    def presence(self, node: str, service: str) -> str:
        """Hello / offline of one service of a node (retained; the broker publishes the last
        will). One topic per service, so that the retained presences of the services sharing a
        node (prem, monitor, mobility-events, ...) never overwrite each other."""
        return f"{self.root}/node/{_segment(node, 'node')}/presence/{_segment(service, 'service')}"

    def dead_letter(self, node: str, service: str) -> str:
        """Inputs one service of a node could not handle (`DeadLetter`, QoS 1, not retained):
        set aside and acknowledged, so that the service goes on with the next one."""
        node_part, service_part = _segment(node, "node"), _segment(service, "service")
        return f"{self.root}/node/{node_part}/dead-letter/{service_part}"

    def link_metrics(self, node: str, interface: str) -> str:
        """Periodic metrics of one access link."""
        return (
            f"{self.root}/node/{_segment(node, 'node')}/link/{_segment(interface, 'link')}/metrics"
        )

    def link_state(self, node: str, interface: str) -> str:
        """Up/down state of one access link (retained)."""
        return f"{self.root}/node/{_segment(node, 'node')}/link/{_segment(interface, 'link')}/state"

    def binding_event(self, mobile_router: str, bid: int) -> str:
        """Binding events of one (MR, BID)."""
        return f"{self.root}/mr/{_segment(mobile_router, 'mobile router')}/binding/{int(bid)}"

    def preferences(self, mobile_router: str) -> str:
        """User preferences for one MR (retained)."""
        return f"{self.root}/mr/{_segment(mobile_router, 'mobile router')}/preferences"

    def operator_rules(self) -> str:
        """Operator rules (retained)."""
        return f"{self.root}/operator/rules"

    def decision(self, mobile_router: str) -> str:
        """The NSA's latest decision for one MR with its explanation (retained, QoS 1), so
        `multinet nsa explain MR` and operators' tools find the current reasoning at once."""
        return f"{self.root}/mr/{_segment(mobile_router, 'mobile router')}/decision"

    # --- subscribers: topic filters (a `None` is any: MQTT's one-level `+`) and parsing ------

    def binding_events(self, mobile_router: str | None = None) -> str:
        """Filter: the binding events of every BID of `mobile_router` (of every MR if None)."""
        return f"{self.root}/mr/{_any(mobile_router, 'mobile router')}/binding/+"

    def presences(self, node: str | None = None) -> str:
        """Filter: the presence of every service of `node` (of every node if None)."""
        return f"{self.root}/node/{_any(node, 'node')}/presence/+"

    def links(self, node: str | None = None) -> str:
        """Filter: the state and the metrics of every link of `node` (of every node if None)."""
        return f"{self.root}/node/{_any(node, 'node')}/link/+/+"

    def parse(self, topic: str) -> TopicName | None:
        """What a received `topic` names: its kind, node or MR, and service, link or BID.

        None when it is not one of this root's topics (another root, an unknown shape, a
        segment no topic of ours can have): a subscriber drops such a message, it never fails.
        """
        prefix = self.root + "/"
        if not topic.startswith(prefix):
            return None
        parts = topic[len(prefix) :].split("/")
        for shape, kind in _SHAPES_BY_LENGTH.get(len(parts), ()):
            names = []
            for expected, part in zip(shape, parts, strict=True):
                if expected is None:
                    if not _SEGMENT.match(part):
                        break
                    names.append(part)
                elif expected != part:
                    break
            else:
                return TopicName(kind, *names)
        return None


def _any(value: str | None, what: str) -> str:
    return "+" if value is None else _segment(value, what)


class TopicKind(StrEnum):
    """The kinds of topic under a root (`Topics.parse`)."""

    POLICY = "policy"
    STATUS = "status"
    PRESENCE = "presence"
    DEAD_LETTER = "dead-letter"
    LINK_METRICS = "link-metrics"
    LINK_STATE = "link-state"
    BINDING_EVENT = "binding-event"
    PREFERENCES = "preferences"
    OPERATOR_RULES = "operator-rules"
    DECISION = "decision"


@dataclass(frozen=True, slots=True)
class TopicName:
    """A parsed topic: `owner` is the node or mobile router, `item` the service, link or BID
    (empty where the kind has none)."""

    kind: TopicKind
    owner: str = ""
    item: str = ""


#: Each kind's segments below the root, None where a name goes (the builders above, in reverse).
_SHAPES: dict[TopicKind, tuple[str | None, ...]] = {
    TopicKind.POLICY: ("node", None, "policy"),
    TopicKind.STATUS: ("node", None, "status"),
    TopicKind.PRESENCE: ("node", None, "presence", None),
    TopicKind.DEAD_LETTER: ("node", None, "dead-letter", None),
    TopicKind.LINK_METRICS: ("node", None, "link", None, "metrics"),
    TopicKind.LINK_STATE: ("node", None, "link", None, "state"),
    TopicKind.BINDING_EVENT: ("mr", None, "binding", None),
    TopicKind.PREFERENCES: ("mr", None, "preferences"),
    TopicKind.OPERATOR_RULES: ("operator", "rules"),
    TopicKind.DECISION: ("mr", None, "decision"),
}
_SHAPES_BY_LENGTH = {
    length: [(shape, kind) for kind, shape in _SHAPES.items() if len(shape) == length]
    for length in {len(shape) for shape in _SHAPES.values()}
}
