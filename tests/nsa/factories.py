"""Builders for NSA tests and a small simulator that drives the real step against fake nodes.

The fake nodes are the PREM's own pure policy-set logic (`apply_message`) and flow table
(`classify`), so the tests check that every message the NSA plans is accepted by a worker and
answer "which BID does this packet get?" from what the nodes hold, not from the NSA's state.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Literal

from services.contracts.errors import PolicyRefused
from services.contracts.messages import (
    BindingEvent,
    BindingEventKind,
    LinkMetrics,
    LinkState,
    PolicyStatus,
)
from services.contracts.policy import PolicyMessage, PortRange, Selector, mirror_message
from services.nsa.core import (
    ApplicationProfile,
    MrLedgers,
    MrState,
    MrView,
    NsaConfig,
    Step,
    Trigger,
    TriggerKind,
    acknowledge,
    apply_binding_event,
    apply_link_state,
    apply_metrics,
    new_ledgers,
    step,
)
from services.prem.config import PremSettings
from services.prem.core.flowtable import Packet, classify, compile_policies
from services.prem.core.policyset import DesiredState, apply_message

MR = "mr1"
HA_NODE = "ha1"
MR_NODE = "mr1-prem"
MNN = ipaddress.IPv6Address("2001:db8:aaaa::10")  # a node of the mobile network
CN = ipaddress.IPv6Address("2001:db8:cccc::20")  # a correspondent node

TECH: dict[int, Literal["wlan", "wimax", "umts", "lte", "nr", "ethernet"]] = {
    1: "wlan",
    2: "lte",
    3: "umts",
    4: "ethernet",
}


def udp(port: int) -> Selector:
    """Uplink selector of UDP traffic to `port` (written as the MR sees it)."""
    return Selector(next_header=17, dst_port=PortRange(first=port, last=port))


def profile(
    name: str = "video", ports: tuple[int, ...] = (5001,), **kwargs: Any
) -> ApplicationProfile:
    """An application class with one UDP selector per port."""
    return ApplicationProfile(name=name, selectors=tuple(udp(p) for p in ports), **kwargs)


def config(*profiles: ApplicationProfile, **sections: Any) -> NsaConfig:
    """A validated configuration: default settings overridden by `settings=...` etc."""
    data: dict[str, Any] = {"profiles": [p.model_dump() for p in profiles], **sections}
    return NsaConfig.model_validate(data)


def metrics(bid: int, **values: Any) -> LinkMetrics:
    """Metrics of `bid` with sensible defaults (20 ms, no loss, 10 Mbit/s, free)."""
    base: dict[str, Any] = {
        "sender": MR,
        "interface": f"if{bid}",
        "bid": bid,
        "technology": TECH.get(bid, "wlan"),
        "rtt_ms": 20.0,
        "jitter_ms": 2.0,
        "loss": 0.0,
        "bitrate_bps": 10e6,
        "cost_per_mb": 0.0,
    }
    return LinkMetrics(**{**base, **values})


def binding(bid: int, kind: BindingEventKind) -> BindingEvent:
    """A binding event of `MR`."""
    return BindingEvent(sender=HA_NODE, event=kind, mobile_router=MR, bid=bid)


def link_state(bid: int, up: bool) -> LinkState:
    """A link going up or down."""
    return LinkState(sender=MR, interface=f"if{bid}", bid=bid, up=up, carrier=up)


def view_of(links: dict[int, dict[str, Any]], now: float = 0.0) -> MrView:
    """A view where every BID of `links` is registered and measured with those values."""
    view = MrView(mobile_router=MR)
    for bid, values in links.items():
        view, _ = apply_binding_event(view, binding(bid, BindingEventKind.REGISTERED), now)
        view, _ = apply_metrics(view, metrics(bid, **values), now)
    return view


@dataclass
class FakeNode:
    """A PREM worker reduced to its pure parts: policy set, then flow table lookups."""

    settings: PremSettings
    state: DesiredState = field(init=False)

    def __post_init__(self) -> None:
        self.state = DesiredState(node=self.settings.node)

    def receive(self, message: PolicyMessage) -> PolicyStatus:
        """Apply a message all or nothing, and acknowledge it like a worker."""
        try:
            self.state = apply_message(self.state, message, self.settings).state
        except PolicyRefused:
            result: Literal["applied", "refused"] = "refused"
        else:
            result = "applied"
        return PolicyStatus(
            sender=self.settings.node,
            node=self.settings.node,
            mobile_router=MR,
            direction=self.settings.direction,
            result=result,
            version=self.state.version,
            requested_version=message.version,
        )

    def bid_for(self, packet: Packet) -> int | None:
        """Which BID this node marks the packet with (None: default path)."""
        rule = classify(compile_policies(self.state.policies), packet)
        return None if rule is None else rule.bid


def fake_nodes(
    scheme: Literal[1, 2], bids: tuple[int, ...] = (1, 2, 3, 4)
) -> tuple[FakeNode, FakeNode]:
    """The HA's and the MR's fake worker."""
    declared = [{"bid": b} for b in bids]
    ha = PremSettings(
        node=HA_NODE,
        role="ha",
        mobile_router=MR,
        bids=declared,
        peer_node=MR_NODE if scheme == 2 else None,
    )
    mr = PremSettings(node=MR_NODE, role="mr", mobile_router=MR, bids=declared)
    return FakeNode(ha), FakeNode(mr)


def uplink_packet(port: int) -> Packet:
    """A UDP packet from the mobile network to a correspondent's `port`."""
    return Packet(src=MNN, dst=CN, next_header=17, src_port=40000, dst_port=port)


def downlink_packet(port: int) -> Packet:
    """The reply direction of `uplink_packet(port)`."""
    return Packet(src=CN, dst=MNN, next_header=17, src_port=port, dst_port=40000)


class Sim:
    """Drives `step` with bus messages against a fake clock and delivers to fake nodes.

    Every step's messages are applied by the fake HA and MR (scheme 2: the HA's document is
    mirrored to the MR, as the HA's worker does) and acknowledged back into the ledgers.
    """

    def __init__(self, cfg: NsaConfig, *, scheme: Literal[1, 2] = 1) -> None:
        self.config = cfg
        self.view = MrView(mobile_router=MR)
        self.state = MrState(mobile_router=MR)
        self.ledgers: MrLedgers = new_ledgers(MR, ha_node=HA_NODE, mr_node=MR_NODE, scheme=scheme)
        self.ha, self.mr = fake_nodes(scheme)
        self.moves: dict[str, int] = {}
        self.steps: list[Step] = []
        self.sent: list[PolicyMessage] = []

    # inputs -------------------------------------------------------------------------------
    def metrics(self, now: float, bid: int, **values: Any) -> Step:
        self.view, trigger = apply_metrics(self.view, metrics(bid, **values), now)
        return self.run(now, trigger)

    def link(self, now: float, bid: int, up: bool) -> Step:
        self.view, trigger = apply_link_state(self.view, link_state(bid, up), now)
        return self.run(now, trigger)

    def binding(self, now: float, bid: int, kind: BindingEventKind) -> Step:
        self.view, trigger = apply_binding_event(self.view, binding(bid, kind), now)
        return self.run(now, trigger)

    def tick(self, now: float) -> Step:
        return self.run(now, Trigger(kind=TriggerKind.TIMER))

    def start(self, now: float, links: dict[int, dict[str, Any]]) -> Step:
        """Register and measure every BID of `links` (BID -> metric values), then decide once."""
        view = view_of(links, now)
        self.view = self.view.model_copy(
            update={
                "links": {**self.view.links, **view.links},
                "bindings": {**self.view.bindings, **view.bindings},
            }
        )
        return self.run(now, Trigger(kind=TriggerKind.START))

    # the step -----------------------------------------------------------------------------
    def run(self, now: float, trigger: Trigger) -> Step:
        result = step(self.view, self.config, self.state, self.ledgers, now=now, trigger=trigger)
        self.state = result.state
        self.ledgers = result.ledgers
        self.steps.append(result)
        for entry in result.decision.explanation.classes:
            if entry.moved and entry.previous_flows:  # a first assignment is not a move
                self.moves[entry.class_name] = self.moves.get(entry.class_name, 0) + 1
        for message in result.messages:
            self.deliver(message)
        return result

    def deliver(self, message: PolicyMessage) -> None:
        self.sent.append(message)
        node = self.ha if message.node == HA_NODE else self.mr
        status = node.receive(message)
        assert status.result == "applied", f"node refused {message}"
        if message.symmetric:
            mirrored = self.mr.receive(mirror_message(message, MR_NODE))
            assert mirrored.result == "applied"
        self.ledgers = acknowledge(self.ledgers, status)

    # observations -------------------------------------------------------------------------
    def bid(self, name: str = "video") -> int | None:
        """The single BID of a class in the NSA's state (None: withdrawn)."""
        flows = self.state.classes[name].flows
        assert len(set(flows)) <= 1, flows
        return flows[0] if flows else None

    def enforced(self, port: int) -> tuple[int | None, int | None]:
        """(uplink BID at the MR, downlink BID at the HA) for the UDP flow to `port`."""
        return self.mr.bid_for(uplink_packet(port)), self.ha.bid_for(downlink_packet(port))
