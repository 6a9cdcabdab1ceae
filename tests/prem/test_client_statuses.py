"""The policy client's statuses: waiting for one node's never loses another node's (scheme 2:
the MR's worker can answer the document its HA forwarded before the HA's status arrives)."""

from __future__ import annotations

import pytest

from services.contracts.messages import PolicyStatus
from services.contracts.policy import Direction
from services.contracts.settings import BrokerSettings
from services.prem.client import DeliveryTimeoutError, PolicyClient

pytestmark = pytest.mark.broker


def _status(node: str, version: int) -> PolicyStatus:
    direction = Direction.UPLINK if node == "mr1" else Direction.DOWNLINK
    return PolicyStatus(
        sender=node,
        node=node,
        mobile_router="mr1",
        direction=direction,
        result="applied",
        version=version,
        requested_version=version,
    )


def test_a_status_of_another_node_read_while_waiting_is_kept_for_its_turn(
    broker: tuple[str, int], topic_root: str
) -> None:
    client = PolicyClient(BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root))
    try:
        client.statuses.put(_status("mr1", 1))  # the MR answered first
        client.statuses.put(_status("ha1", 1))
        client.statuses.put(_status("mr1", 2))
        assert client.next_status("ha1", timeout_s=1).node == "ha1"
        assert [client.next_status("mr1", timeout_s=1).version for _ in range(2)] == [1, 2]
        with pytest.raises(DeliveryTimeoutError):
            client.next_status("mr1", timeout_s=0.1)
    finally:
        client.close()
