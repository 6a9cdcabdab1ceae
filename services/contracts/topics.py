"""MQTT topic names. Every topic lives under a versioned root (default `multinet/v1`).

The root is a parameter so that tests (and several deployments on one broker) can isolate
themselves with a unique prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, NamedTuple

DEFAULT_ROOT = "multinet/v1"
#: What a link's topic carries: its periodic metrics or its up/down state.
LinkReport = Literal["metrics", "state"]
_SEGMENT = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
#: A received topic below the root: every segment as `_SEGMENT` allows (no trailing newline).
_SEGMENTS = re.compile(r"[A-Za-z0-9_.:-]{1,64}(?:/[A-Za-z0-9_.:-]{1,64})*\Z")


def is_segment(value: str) -> bool:
    """Whether `value` can be one segment of a topic (a node, link or service name)."""
    return _SEGMENT.match(value) is not None


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

    def node_metrics(self, node: str) -> str:
        """Periodic metrics of several links of one node in one message (`NodeMetrics`)."""
        return f"{self.root}/node/{_segment(node, 'node')}/metrics"

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

    def pin(self, mobile_router: str) -> str:
        """Operator pin requests for one MR's classes (`PinRequest`, QoS 1, not retained): the
        console publishes them, the replica owning the MR reads them."""
        return f"{self.root}/mr/{_segment(mobile_router, 'mobile router')}/pin"

    def audit(self, mobile_router: str) -> str:
        """The NSA's audit of operator actions on one MR (`AuditRecord`: who, when, what,
        outcome; QoS 1, not retained)."""
        return f"{self.root}/mr/{_segment(mobile_router, 'mobile router')}/audit"

    # --- subscribers: topic filters (a `None` is any: MQTT's one-level `+`) and parsing ------

    def binding_events(self, mobile_router: str | None = None) -> str:
        """Filter: the binding events of every BID of `mobile_router` (of every MR if None)."""
        return f"{self.root}/mr/{_any(mobile_router, 'mobile router')}/binding/+"

    def presences(self, node: str | None = None, service: str | None = None) -> str:
        """Filter: the presence of `service` (of every service if None) of `node` (of every
        node if None)."""
        return f"{self.root}/node/{_any(node, 'node')}/presence/{_any(service, 'service')}"

    def links(self, node: str | None = None, report: LinkReport | None = None) -> str:
        """Filter: the `report`s (state, metrics; both if None) of every link of `node` (of
        every node if None)."""
        return f"{self.root}/node/{_any(node, 'node')}/link/+/{report or '+'}"

    def nodes_metrics(self, node: str | None = None) -> str:
        """Filter: the `NodeMetrics` of `node` (of every node if None)."""
        return f"{self.root}/node/{_any(node, 'node')}/metrics"

    def statuses(self, node: str | None = None) -> str:
        """Filter: the acknowledgements of `node`'s PREM worker (of every node's if None)."""
        return f"{self.root}/node/{_any(node, 'node')}/status"

    def decisions(self, mobile_router: str | None = None) -> str:
        """Filter: the NSA's decisions for `mobile_router` (for every MR if None)."""
        return f"{self.root}/mr/{_any(mobile_router, 'mobile router')}/decision"

    def policies(self, node: str | None = None) -> str:
        """Filter: the policy documents for `node`'s PREM worker (every node's if None)."""
        return f"{self.root}/node/{_any(node, 'node')}/policy"

    def dead_letters(self, node: str | None = None, service: str | None = None) -> str:
        """Filter: the dead letters of `service` (of every service if None) of `node` (of
        every node if None)."""
        return f"{self.root}/node/{_any(node, 'node')}/dead-letter/{_any(service, 'service')}"

    def preference_sets(self, mobile_router: str | None = None) -> str:
        """Filter: the preferences of `mobile_router` (of every MR if None)."""
        return f"{self.root}/mr/{_any(mobile_router, 'mobile router')}/preferences"

    def pins(self, mobile_router: str | None = None) -> str:
        """Filter: the pin requests for `mobile_router` (for every MR if None)."""
        return f"{self.root}/mr/{_any(mobile_router, 'mobile router')}/pin"

    def audits(self, mobile_router: str | None = None) -> str:
        """Filter: the audit records of `mobile_router` (of every MR if None)."""
        return f"{self.root}/mr/{_any(mobile_router, 'mobile router')}/audit"

    def parse(self, topic: str) -> TopicName | None:
        """What a received `topic` names: its kind, node or MR, and service, link or BID.

        None when it is not one of this root's topics (another root, an unknown shape, a
        segment no topic of ours can have): a subscriber drops such a message, it never fails.
        """
        prefix = self.root + "/"
        if not topic.startswith(prefix):
            return None
        rest = topic[len(prefix) :]
        if not _SEGMENTS.match(rest):  # every segment at once: fixed ones are valid too
            return None
        parts = rest.split("/")
        # The even segments (0, 2, 4) are fixed and name the shape at once; the odd ones are
        # a name or fixed too (operator/rules).
        found = _SHAPE_OF.get((len(parts), *parts[::2]))
        if found is None:
            return None
        kind, odd = found
        names = []
        for i, expected in odd:
            if expected is None:
                names.append(parts[i])
            elif parts[i] != expected:
                return None
        return TopicName(kind, *names)


def _any(value: str | None, what: str) -> str:
    return "+" if value is None else _segment(value, what)


class TopicKind(StrEnum):
    """The kinds of topic under a root (`Topics.parse`)."""

    POLICY = "policy"
    STATUS = "status"
    PRESENCE = "presence"
    DEAD_LETTER = "dead-letter"
    LINK_METRICS = "link-metrics"
    NODE_METRICS = "node-metrics"
    LINK_STATE = "link-state"
    BINDING_EVENT = "binding-event"
    PREFERENCES = "preferences"
    OPERATOR_RULES = "operator-rules"
    DECISION = "decision"
    PIN = "pin"
    AUDIT = "audit"


class TopicName(NamedTuple):
    """A parsed topic: `owner` is the node or mobile router, `item` the service, link or BID
    (empty where the kind has none). A named tuple, not a dataclass: a subscriber (the NSA at
    thousands of reports a second) parses every message, and a frozen dataclass costs three
    times as much to make."""

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
    TopicKind.NODE_METRICS: ("node", None, "metrics"),
    TopicKind.LINK_STATE: ("node", None, "link", None, "state"),
    TopicKind.BINDING_EVENT: ("mr", None, "binding", None),
    TopicKind.PREFERENCES: ("mr", None, "preferences"),
    TopicKind.OPERATOR_RULES: ("operator", "rules"),
    TopicKind.DECISION: ("mr", None, "decision"),
    TopicKind.PIN: ("mr", None, "pin"),
    TopicKind.AUDIT: ("mr", None, "audit"),
}
#: (segment count, the even segments) -> (kind, each odd segment's position and its fixed value
#: or None for a name): one dict lookup per topic. Every shape's even segments are fixed.
_SHAPE_OF: dict[tuple[int | str | None, ...], tuple[TopicKind, tuple[tuple[int, str | None], ...]]]
_SHAPE_OF = {
    (len(shape), *shape[0 : len(shape) : 2]): (
        kind,
        tuple((i, shape[i]) for i in range(1, len(shape), 2)),
    )
    for kind, shape in _SHAPES.items()
}
assert all(None not in key for key in _SHAPE_OF), "a name at an even segment of a shape"
assert len(_SHAPE_OF) == len(_SHAPES), "two shapes alike in their even segments"
