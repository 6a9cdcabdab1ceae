"""Small builders for policies and messages used across the PREM tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.contracts.policy import (
    Drop,
    Forward,
    Operation,
    Policy,
    PolicyMessage,
    PortRange,
    Selector,
)
from services.prem.config import PremSettings


def settings(tmp_path: Path, **overrides: Any) -> PremSettings:
    """HA settings with BIDs 1, 2 and 3 and a state file under tmp_path."""
    data: dict[str, Any] = {
        "node": "ha1",
        "role": "ha",
        "mobile_router": "mr1",
        "backend": "memory",
        "bids": [{"bid": 1}, {"bid": 2}, {"bid": 3}],
        "state_file": str(tmp_path / "state.json"),
    }
    data.update(overrides)
    return PremSettings.model_validate(data)


def udp_to(
    policy_id: str,
    port: int,
    bid: int | None,
    *,
    priority: int = 10,
    fallbacks: tuple[int, ...] = (),
    dst: str | None = None,
) -> Policy:
    """A policy for UDP to `port` (optionally to `dst`), forwarded to `bid` or dropped."""
    action: Forward | Drop = Drop() if bid is None else Forward(bid=bid, fallbacks=fallbacks)
    return Policy(
        id=policy_id,
        priority=priority,
        selector=Selector(
            next_header=17,
            dst_port=PortRange(first=port, last=port),
            dst_addr=dst,
        ),
        action=action,
    )


def message(
    version: int, operation: Operation, *, node: str = "ha1", direction: str = "downlink"
) -> PolicyMessage:
    """A policy message for the test HA."""
    return PolicyMessage(
        node=node,
        mobile_router="mr1",
        direction=direction,
        version=version,
        operation=operation,
    )
