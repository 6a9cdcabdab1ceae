"""MQTT topic names. Every topic lives under a versioned root (default `multinet/v1`).

The root is a parameter so that tests (and several deployments on one broker) can isolate
themselves with a unique prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
