"""One SOAP call's work without SOAP: validate, publish to both nodes, collect the answers.

The MQTT side is behind the small `Publisher` protocol, so this runs in unit tests with a
fake bus that answers like workers would. `SoapCalls` is what the SOAP service (service.py,
wsgi.py) asks of whatever handles its calls: `GatewayCore` here, or a standalone PREM daemon's
own handler, which answers for its one node with the same outcomes (`node_outcome`) and the
same authorisation (`authorise`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from services.contracts.errors import MultinetError, Problem
from services.contracts.messages import PolicyStatus, Refusal
from services.contracts.policy import Direction
from services.soap_gateway.auth import Caller, NotAuthorisedError
from services.soap_gateway.checks import CallRefused, Delivery, FaultCode, PartProblem, check_call
from services.soap_gateway.config import GatewaySettings
from services.soap_gateway.tracker import NodeView, Tracker


class Publisher(Protocol):
    """Where documents go: the gateway's MQTT client, or a fake in tests."""

    def connected(self) -> bool:
        """Whether the broker connection is up now."""
        ...

    def publish(self, node: str, document: bytes) -> bool:
        """Publish `document` to `node`'s policy topic (QoS 1); True once the broker has it."""
        ...


class BusUnavailableError(MultinetError):
    """The broker cannot be reached; nothing was published (SOAP `Server.BusUnavailable`)."""


class Outcome(StrEnum):
    """What became of one node's document."""

    APPLIED = "applied"
    REFUSED = "refused"
    NOT_REACHED = "not-reached"


@dataclass(frozen=True)
class NodeOutcome:
    """The answer for one node of a call."""

    node: str
    direction: Direction
    outcome: Outcome
    requested_version: int
    version: int | None
    refusals: tuple[Refusal, ...] = ()


@dataclass(frozen=True)
class NodeState:
    """One node of a mobile router, as GetStatus reports it."""

    direction: Direction
    view: NodeView


class SoapCalls(Protocol):
    """What the SOAP service does with the calls it parsed; safe from many threads.

    `deliver` answers Install, Update and Flush (one outcome per node document), `status`
    answers GetStatus; both raise `NotAuthorisedError`, `CallRefused` or `BusUnavailableError`,
    which the service turns into Faults. `settings` gives the WSGI stack its callers and limits.
    """

    @property
    def settings(self) -> GatewaySettings:
        """The served mobile routers, callers and limits."""
        ...

    def deliver(
        self,
        operation: str,
        mobile_router: str | None,
        downlink: str | None,
        uplink: str | None,
        *,
        caller: Caller | None = None,
    ) -> tuple[NodeOutcome, ...]:
        """Deliver one call's documents and collect each node's answer."""
        ...

    def status(
        self, mobile_router: str | None, *, caller: Caller | None = None
    ) -> tuple[NodeState, ...]:
        """Each node's state for `mobile_router`."""
        ...


def authorise(settings: GatewaySettings, caller: Caller | None, mobile_router: str | None) -> None:
    """Raise `NotAuthorisedError` unless `caller` may address `mobile_router`.

    With no callers configured authentication is off and everyone may; with callers, a call that
    arrives without an authenticated caller (a transport without credentials) may address
    nothing."""
    if not settings.callers:
        return
    if caller is None or not caller.may_address(mobile_router):
        raise NotAuthorisedError(None if caller is None else caller.name, mobile_router)


def node_outcome(delivery: Delivery, status: PolicyStatus | None) -> NodeOutcome:
    """The answer for one node's document, from the status that acknowledged it (None: none
    did before the deadline)."""
    refusals: tuple[Refusal, ...]
    if status is None:
        outcome, version, refusals = Outcome.NOT_REACHED, None, ()
    elif status.result == "applied":
        outcome, version, refusals = Outcome.APPLIED, status.version, ()
    else:
        outcome, version, refusals = Outcome.REFUSED, status.version, status.refusals
    return NodeOutcome(
        delivery.node, delivery.direction, outcome, delivery.version, version, refusals
    )


class GatewayCore:
    """Delivers scheme 1 and 2 calls and answers status queries; safe from many threads."""

    def __init__(self, settings: GatewaySettings, tracker: Tracker, publisher: Publisher) -> None:
        self.settings = settings
        self.tracker = tracker
        self.publisher = publisher

    def authorise(self, caller: Caller | None, mobile_router: str | None) -> None:
        """Raise `NotAuthorisedError` unless `caller` may address `mobile_router`."""
        authorise(self.settings, caller, mobile_router)

    def deliver(
        self,
        operation: str,
        mobile_router: str | None,
        downlink: str | None,
        uplink: str | None,
        *,
        caller: Caller | None = None,
    ) -> tuple[NodeOutcome, ...]:
        """Authorise, validate both documents, then publish both and wait for both
        acknowledgements."""
        self.authorise(caller, mobile_router)
        deliveries = check_call(self.settings, operation, mobile_router, downlink, uplink)
        if not self.publisher.connected():
            raise BusUnavailableError("the message bus is not reachable; nothing was delivered")
        tickets = [self.tracker.expect(d.node, d.version) for d in deliveries]
        # A delivery without a document (the MR in scheme 2) is forwarded by the HA's worker:
        # it counts as sent when the HA's document was.
        published: list[bool] = []
        for delivery in deliveries:
            if delivery.document is None:
                published.append(published[0])
            else:
                published.append(self.publisher.publish(delivery.node, delivery.document))
        self.tracker.cancel([t for t, sent in zip(tickets, published, strict=True) if not sent])
        self.tracker.wait(
            [t for t, sent in zip(tickets, published, strict=True) if sent],
            self.settings.ack_deadline_s,
        )
        return tuple(
            node_outcome(delivery, ticket.status)
            for delivery, ticket in zip(deliveries, tickets, strict=True)
        )

    def status(
        self, mobile_router: str | None, *, caller: Caller | None = None
    ) -> tuple[NodeState, ...]:
        """The HA's and the MR's last known state for `mobile_router`."""
        self.authorise(caller, mobile_router)
        router = self.settings.router(mobile_router or "")
        if router is None:
            problem = Problem(f"mobile router {mobile_router!r} is not served by this gateway")
            raise CallRefused(
                FaultCode.UNKNOWN_MOBILE_ROUTER, [PartProblem("mobile_router", problem)]
            )
        return (
            NodeState(Direction.DOWNLINK, self.tracker.view(router.ha_node)),
            NodeState(Direction.UPLINK, self.tracker.view(router.mr_node)),
        )
