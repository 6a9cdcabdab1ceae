"""Messages for the console's tests, one builder per kind, with the topic each comes on."""

from __future__ import annotations

from services.contracts.messages import (
    AuditRecord,
    BindingEvent,
    BindingEventKind,
    DeadLetter,
    FallbackState,
    LinkMetrics,
    LinkState,
    NodeMetrics,
    PolicyStatus,
    Presence,
    Refusal,
)
from services.contracts.policy import (
    Direction,
    Flush,
    Forward,
    Install,
    Policy,
    PolicyMessage,
    Selector,
    Update,
)
from services.contracts.topics import TopicKind, TopicName
from services.nsa.core.config import ScoringMethod, SteeringMode
from services.nsa.core.documents import DecisionRecord
from services.nsa.core.explain import ClassExplanation, Explanation, Reason
from services.nsa.core.inputs import Trigger, TriggerKind


def metrics(
    mr: str,
    interface: str,
    bid: int,
    rtt_ms: float = 20.0,
    budget: tuple[int, int] | None = None,
    pps: tuple[float, float] | None = None,
) -> tuple[TopicName, LinkMetrics]:
    """A link report; `budget` (cap, used) in bytes and `pps` (rx, tx) when given."""
    message = LinkMetrics(
        sender=mr,
        interface=interface,
        bid=bid,
        technology="wlan",
        rtt_ms=rtt_ms,
        loss=0.01,
        rx_bps=1e6,
        tx_bps=2e5,
        rx_pps=None if pps is None else pps[0],
        tx_pps=None if pps is None else pps[1],
        budget_bytes=None if budget is None else budget[0],
        budget_used_bytes=None if budget is None else budget[1],
        budget_period_end=None if budget is None else 2e9,
    )
    return TopicName(TopicKind.LINK_METRICS, mr, interface), message


def node_metrics(
    node: str, *entries: tuple[TopicName, LinkMetrics]
) -> tuple[TopicName, NodeMetrics]:
    """The link reports `entries` (from `metrics`) in one message on the node's metrics topic,
    as a monitor with `batch_metrics` sends them."""
    message = NodeMetrics(sender=node, links=tuple(entry for _, entry in entries))
    return TopicName(TopicKind.NODE_METRICS, node), message


def state(mr: str, interface: str, bid: int, up: bool) -> tuple[TopicName, LinkState]:
    message = LinkState(
        sender=mr,
        interface=interface,
        bid=bid,
        up=up,
        carrier=up,
        reason="" if up else "carrier lost",
    )
    return TopicName(TopicKind.LINK_STATE, mr, interface), message


def binding(
    mr: str,
    bid: int,
    event: BindingEventKind = BindingEventKind.REGISTERED,
    coa: str | None = "2001:db8::1",
    pipe: str | None = None,
) -> tuple[TopicName, BindingEvent]:
    message = BindingEvent(
        sender="ha1",
        event=event,
        mobile_router=mr,
        bid=bid,
        care_of_address=coa,
        lifetime_s=60,
        pipe=pipe,
    )
    return TopicName(TopicKind.BINDING_EVENT, mr, str(bid)), message


def decision(
    mr: str,
    chosen: dict[str, tuple[int, ...]],
    at: float = 100.0,
    overrides: dict[str, str] | None = None,
) -> tuple[TopicName, DecisionRecord]:
    overrides = overrides or {}
    classes = tuple(
        ClassExplanation(
            class_name=name,
            steering=SteeringMode.BEST,
            method=ScoringMethod.UTILITY,
            reason=Reason.OPERATOR_OVERRIDE if name in overrides else Reason.INITIAL,
            detail=overrides.get(name, ""),
            moved=True,
            previous_bid=None,
            chosen_bid=flows[0] if len(set(flows)) == 1 else None,
            previous_flows=(),
            chosen_flows=flows,
        )
        for name, flows in chosen.items()
    )
    explanation = Explanation(
        mobile_router=mr, at=at, trigger=Trigger(kind=TriggerKind.METRICS, bid=1), classes=classes
    )
    return TopicName(TopicKind.DECISION, mr), DecisionRecord(
        sender="nsa-1", replica=0, explanation=explanation
    )


def policy(policy_id: str, bid: int, priority: int = 100) -> Policy:
    return Policy(
        id=policy_id, priority=priority, selector=Selector(dscp=34), action=Forward(bid=bid)
    )


def document(
    node: str,
    mr: str,
    version: int,
    operation: Install | Update | Flush,
    direction: Direction = Direction.DOWNLINK,
) -> tuple[TopicName, PolicyMessage]:
    message = PolicyMessage(
        node=node, mobile_router=mr, direction=direction, version=version, operation=operation
    )
    return TopicName(TopicKind.POLICY, node), message


def status(
    node: str,
    mr: str,
    version: int,
    result: str = "applied",
    direction: Direction = Direction.DOWNLINK,
    fallbacks: tuple[FallbackState, ...] = (),
    requested: int | None = None,
) -> tuple[TopicName, PolicyStatus]:
    message = PolicyStatus(
        sender=node,
        node=node,
        mobile_router=mr,
        direction=direction,
        result=result,
        version=version,
        requested_version=requested,
        fallbacks=fallbacks,
        refusals=(Refusal(reason="BID 9 is unknown here"),) if result == "refused" else (),
    )
    return TopicName(TopicKind.STATUS, node), message


def presence(node: str, service: str, online: bool) -> tuple[TopicName, Presence]:
    message = Presence(sender=node, node=node, service=service, online=online)
    return TopicName(TopicKind.PRESENCE, node, service), message


def dead_letter(node: str, service: str) -> tuple[TopicName, DeadLetter]:
    message = DeadLetter(
        sender=node,
        node=node,
        service=service,
        source="multinet/v1/node/x/policy",
        input="policy",
        error="ValueError",
        reason="boom",
        payload_bytes=3,
        payload_sha256="0" * 64,
        payload_head="eHl6",
    )
    return TopicName(TopicKind.DEAD_LETTER, node, service), message


def audit(
    mr: str,
    user: str = "bob",
    action: str = "pin",
    outcome: str = "applied",
    bid: int | None = 2,
    at: float = 100.0,
    **extra: object,
) -> tuple[TopicName, AuditRecord]:
    message = AuditRecord.model_validate(
        {
            "sender": "nsa-1",
            "timestamp": at,
            "mobile_router": mr,
            "user": user,
            "action": action,
            "class_name": "video",
            "bid": bid,
            "until": at + 60 if action == "pin" and outcome == "applied" else None,
            "requested_at": at - 0.1,
            "outcome": outcome,
            **extra,
        }
    )
    return TopicName(TopicKind.AUDIT, mr), message
