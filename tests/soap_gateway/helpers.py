"""Builders shared by the gateway tests: settings and the two documents of a scheme 1 call."""

from __future__ import annotations

from typing import Any

from services.contracts import policy_xml
from services.contracts.policy import Operation
from services.soap_gateway.config import GatewaySettings
from tests.prem.factories import message


def gateway_settings(**overrides: Any) -> GatewaySettings:
    """A gateway on a free port serving mr1 (HA ha1, MR mr1), short deadline for tests."""
    data: dict[str, Any] = {
        "port": 0,
        "ack_deadline_s": 3.0,
        "max_body_bytes": 256 * 1024,
        "mobile_routers": [{"id": "mr1", "ha_node": "ha1", "mr_node": "mr1"}],
    }
    data.update(overrides)
    return GatewaySettings.model_validate(data)


def downlink(version: int, op: Operation) -> str:
    """The HA's document of a call."""
    return policy_xml.render(message(version, op)).decode()


def uplink(version: int, op: Operation) -> str:
    """The MR's document of a call."""
    return policy_xml.render(message(version, op, node="mr1", direction="uplink")).decode()
