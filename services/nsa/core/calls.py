"""From planned messages to one SOAP call per mobile router (pure).

The gateway's operations carry one router's two documents at once (scheme 1: the HA's
downlink and the MR's uplink document, with the same operation) or the HA's symmetric
downlink document alone (scheme 2). The core plans per node, so the two nodes' messages are
paired here. While the NSA keeps one call per router in flight, both nodes are planned
against the same state and normally get Updates together; when they do not (one node must
be resynchronised after a refusal, a lost answer or a restart, or has nothing to change), both
get a full Install: an Install of the set a node already holds changes nothing there, and it
is the one operation that is always right for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from services.contracts.messages import PolicyStatus
from services.contracts.policy import Direction, Install, PolicyMessage, Update
from services.nsa.core.config import NsaConfig
from services.nsa.core.plan import MrLedgers, acknowledge, lost, resync
from services.nsa.core.state import MrState

Operation = Literal["install", "update"]


@dataclass(frozen=True)
class Call:
    """One gateway call: a router's downlink document and, in scheme 1, its uplink one."""

    ident: int
    mobile_router: str
    operation: Operation
    downlink: PolicyMessage
    uplink: PolicyMessage | None

    def messages(self) -> tuple[PolicyMessage, ...]:
        """The documents of the call, HA first."""
        return (self.downlink,) if self.uplink is None else (self.downlink, self.uplink)

    def nodes(self) -> tuple[str, ...]:
        """The nodes the call reaches (scheme 2: the MR through the HA's mirror)."""
        return tuple(m.node for m in self.messages())

    def describe(self) -> str:
        """For logs: operation, version and node of each document."""
        parts = [f"{m.node} v{m.version} ({m.direction.value})" for m in self.messages()]
        return f"{self.operation} " + ", ".join(parts)


def pair(
    ledgers: MrLedgers,
    config: NsaConfig,
    state: MrState,
    messages: tuple[PolicyMessage, ...],
    ident: int,
) -> tuple[MrLedgers, Call | None]:
    """The call carrying `messages` (from `plan`), and the ledgers once it is sent."""
    if not messages:
        return ledgers, None
    by_node = {m.node: m for m in messages}
    ha_node = ledgers.ha.node
    if ledgers.mr is None:  # scheme 2: the HA's symmetric document alone
        down = by_node.get(ha_node)
        if down is None:
            ledgers, down = resync(ledgers, ha_node, config, state)
        return ledgers, Call(ident, ledgers.mobile_router, _kind(down), down, None)
    mr_node = ledgers.mr.node
    down, up = by_node.get(ha_node), by_node.get(mr_node)
    if down is not None and up is not None and _kind(down) == _kind(up):
        return ledgers, Call(ident, ledgers.mobile_router, _kind(down), down, up)
    if down is None or not isinstance(down.operation, Install):
        ledgers, down = resync(ledgers, ha_node, config, state)
    if up is None or not isinstance(up.operation, Install):
        ledgers, up = resync(ledgers, mr_node, config, state)
    assert down.direction is Direction.DOWNLINK
    return ledgers, Call(ident, ledgers.mobile_router, "install", down, up)


def _kind(message: PolicyMessage) -> Operation:
    operation = message.operation
    if isinstance(operation, Install):
        return "install"
    if isinstance(operation, Update):
        return "update"
    raise ValueError(f"the NSA never plans a {operation.kind}")


Outcome = Literal["applied", "refused", "not-reached"]


@dataclass(frozen=True)
class NodeReply:
    """What the gateway answered for one node of a call."""

    node: str
    outcome: Outcome
    requested_version: int
    version: int | None
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class CallResult:
    """The answer to a call: one reply per node, or why there is none (`error`: a SOAP
    Fault, the gateway unreachable, no answer in time)."""

    call: Call
    replies: tuple[NodeReply, ...] = ()
    error: str | None = None

    @property
    def applied(self) -> bool:
        """Whether every node applied its document."""
        return self.error is None and all(r.outcome == "applied" for r in self.replies)

    def describe_failure(self) -> str:
        """For logs: the error, or each node's outcome with its reasons."""
        if self.error is not None:
            return self.error
        parts = []
        for reply in self.replies:
            reasons = f": {'; '.join(reply.reasons)}" if reply.reasons else ""
            parts.append(f"{reply.node} {reply.outcome}{reasons}")
        return ", ".join(parts)


def settle(ledgers: MrLedgers, result: CallResult) -> MrLedgers:
    """The ledgers after a call's answer: each reply acknowledged (an unreached node, or
    every node of a call without an answer, lost: its next plan is a full Install)."""
    call = result.call
    if result.error is not None:
        for node in call.nodes():
            ledgers = lost(ledgers, node)
        return ledgers
    for reply in result.replies:
        if reply.outcome == "not-reached":
            ledgers = lost(ledgers, reply.node)
            continue
        status = PolicyStatus(
            sender=reply.node,
            node=reply.node,
            mobile_router=call.mobile_router,
            direction=Direction.DOWNLINK if reply.node == call.downlink.node else Direction.UPLINK,
            result=reply.outcome,
            version=reply.version or 0,
            requested_version=reply.requested_version,
        )
        ledgers = acknowledge(ledgers, status)
    return ledgers
