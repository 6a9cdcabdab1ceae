"""An engine on a fake clock with fake workers behind a fake gateway (no MQTT, no SOAP).

Bus messages go in as the MQTT thread would queue them (`Raw`, routed by topic); calls come
out to `FakeGateway`, which applies each document with the PREM's own pure logic (the fake
nodes of `factories`) and answers like the gateway: one reply per node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from services.contracts.messages import (
    AuditRecord,
    BindingEvent,
    BindingEventKind,
    Envelope,
    LinkState,
    PolicyStatus,
    Presence,
    encode,
)
from services.contracts.policy import Install, PolicyMessage, Update, mirror_message
from services.contracts.topics import Topics
from services.nsa.core.calls import Call, CallResult, NodeReply
from services.nsa.core.config import OperatorRules
from services.nsa.core.configstore import ConfigStore
from services.nsa.core.documents import DecisionRecord
from services.nsa.core.engine import Engine
from services.nsa.core.routes import Raw, Routes
from services.nsa.core.settings import NsaServiceSettings
from tests.nsa.factories import HA_NODE, MR, MR_NODE, FakeNode, fake_nodes, metrics

TOPICS = Topics("test/multinet/v1")


def nsa_settings(**overrides: Any) -> NsaServiceSettings:
    """One router (mr1: HA ha1, MR mr1-prem), a video class on UDP 5001, dry run."""
    data: dict[str, Any] = {
        "name": "nsa-t",
        "mobile_routers": [{"id": MR, "ha_node": HA_NODE, "mr_node": MR_NODE}],
        "startup_hold_s": 5.0,
        "refresh_s": None,
        "decision": {"dwell_s": 2.0, "margin": 0.1},
        "profiles": [
            {
                "name": "video",
                "selectors": [{"next_header": 17, "dst_port": {"first": 5001, "last": 5001}}],
            }
        ],
        "preferences": [{"default": {"cost": 0, "delay": 1, "bandwidth": 0, "security": 0}}],
    }
    data.update(overrides)
    return NsaServiceSettings.model_validate(data)


@dataclass
class FakeGateway:
    """Answers calls from the fake nodes; `hold` keeps calls unanswered (a slow gateway)."""

    scheme: Literal[1, 2] = 1
    hold: bool = False
    down: set[str] = field(default_factory=set)  # nodes that do not answer (not-reached)
    calls: list[Call] = field(default_factory=list)
    held: list[Call] = field(default_factory=list)
    ha: FakeNode = field(init=False)
    mr: FakeNode = field(init=False)

    def __post_init__(self) -> None:
        self.ha, self.mr = fake_nodes(self.scheme)

    def answer(self, call: Call) -> CallResult:
        """Apply the call's documents like the workers would, reply per node."""
        replies = []
        for message in call.messages():
            node = self.ha if message.node == HA_NODE else self.mr
            replies.append(self._apply(node, message))
            if message.symmetric:
                replies.append(self._apply(self.mr, mirror_message(message, MR_NODE)))
        return CallResult(call, tuple(replies))

    def _apply(self, node: FakeNode, message: PolicyMessage) -> NodeReply:
        if node.settings.node in self.down:
            return NodeReply(node.settings.node, "not-reached", message.version, None)
        status = node.receive(message)
        return NodeReply(node.settings.node, status.result, message.version, status.version)  # type: ignore[arg-type]


@dataclass
class Bed:
    """The engine under test, its effects, and helpers to feed it like the bus would."""

    settings: NsaServiceSettings
    gateway: FakeGateway
    now: float = 1000.0
    records: list[DecisionRecord] = field(default_factory=list)
    audits: list[AuditRecord] = field(default_factory=list)
    results: list[CallResult] = field(default_factory=list)
    engine: Engine = field(init=False)
    routes: Routes = field(init=False)

    def __post_init__(self) -> None:
        settings = self.settings
        config = settings.base_config(
            settings.profiles, settings.preferences, settings.rules or OperatorRules()
        )
        self.engine = Engine(
            settings, settings.mobile_routers, ConfigStore(config), self, now=self.now
        )
        self.routes = Routes(TOPICS, settings.mobile_routers)

    # effects (the engine calls these) ----------------------------------------------------
    def explain(self, mobile_router: str, record: DecisionRecord) -> None:
        self.records.append(record)

    def audit(self, mobile_router: str, record: AuditRecord) -> None:
        self.audits.append(record)

    def deliver(self, call: Call) -> None:
        self.gateway.calls.append(call)
        if self.gateway.hold:
            self.gateway.held.append(call)
            return
        self.results.append(self.gateway.answer(call))

    # driving ------------------------------------------------------------------------------
    def feed(self, topic: str, message: Envelope | bytes) -> None:
        """One bus message, routed by topic like the MQTT thread does, then a batch end."""
        payload = message if isinstance(message, bytes) else encode(message)
        raw = self.routes.route(topic, payload)
        assert raw is not None, f"{topic} is not routed"
        self.batch([raw])

    def batch(self, raws: list[Raw]) -> None:
        """Several inputs in one batch, then timers, decisions and the calls' answers."""
        for raw in raws:
            self.engine.accept(raw, self.now)
        self.settle()

    def settle(self) -> None:
        """Timers, decisions, calls; answers are processed until nothing is left."""
        self.engine.due(self.now)
        self.engine.settle(self.now)
        while self.results:
            result = self.results.pop(0)
            self.engine.delivered(result, self.now)
            self.engine.settle(self.now)

    def at(self, now: float) -> None:
        """Advance the clock and fire what is due."""
        self.now = now
        self.settle()

    def release(self) -> None:
        """Answer every held call."""
        held, self.gateway.held = self.gateway.held, []
        for call in held:
            self.engine.delivered(self.gateway.answer(call), self.now)
        self.engine.settle(self.now)

    # messages -----------------------------------------------------------------------------
    def metrics(self, bid: int, **values: Any) -> None:
        message = metrics(bid, timestamp=self.now, **values)
        self.feed(TOPICS.link_metrics(MR_NODE, f"if{bid}"), message)

    def link(self, bid: int, up: bool, addresses: tuple[str, ...] = ()) -> None:
        state = LinkState(
            sender=MR_NODE,
            interface=f"if{bid}",
            bid=bid,
            up=up,
            carrier=up,
            addresses=addresses,
            timestamp=self.now,
        )
        self.feed(TOPICS.link_state(MR_NODE, f"if{bid}"), state)

    def binding(self, bid: int, kind: BindingEventKind, care_of: str | None = None) -> None:
        event = BindingEvent(
            sender=HA_NODE, event=kind, mobile_router=MR, bid=bid, care_of_address=care_of
        )
        self.feed(TOPICS.binding_event(MR, bid), event)

    def hello(self, node: str, version: int | None) -> None:
        presence = Presence(sender=node, node=node, service="prem", online=True, version=version)
        self.feed(TOPICS.presence(node, "prem"), presence)

    def status(self, status: PolicyStatus) -> None:
        self.feed(TOPICS.status(status.node), status)

    def start(self, links: dict[int, dict[str, Any]]) -> None:
        """Metrics and a registered binding for each link, then the first period passes: the
        router is decided for the first time."""
        for bid, values in links.items():
            self.metrics(bid, **values)
            self.binding(bid, BindingEventKind.REGISTERED)
        self.at(self.now + self.settings.first_period_s)

    # observations -------------------------------------------------------------------------
    def bid(self) -> int | None:
        flows = self.engine.slots[MR].state.classes["video"].flows
        return flows[0] if flows else None

    def enforced(self) -> tuple[int | None, int | None]:
        """(uplink BID at the fake MR, downlink BID at the fake HA) of the video flow."""
        from tests.nsa.factories import downlink_packet, uplink_packet

        return self.gateway.mr.bid_for(uplink_packet(5001)), self.gateway.ha.bid_for(
            downlink_packet(5001)
        )

    def kinds(self) -> list[str]:
        """The operation of each call so far."""
        return [c.operation for c in self.gateway.calls]


def make_bed(*, scheme: Literal[1, 2] = 1, **overrides: Any) -> Bed:
    """A bed whose engine starts at t=1000."""
    return Bed(nsa_settings(scheme=scheme, **overrides), FakeGateway(scheme))


def operation(message: PolicyMessage) -> str:
    """install or update."""
    if isinstance(message.operation, Install):
        return "install"
    return "update" if isinstance(message.operation, Update) else message.operation.kind
