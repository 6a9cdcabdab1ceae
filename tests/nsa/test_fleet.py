"""A leased replica's decision thread (`services.nsa.fleet`) on a fake clock, with fake
workers applying documents with the PREM's own pure logic: a warmed partition takes inputs
but decides nothing; taken, it decides at once under its epoch; lost, its topics are dropped
and its inputs ignored; and the workers refuse a replica still sending under an older epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.contracts.fencing import epoch_of
from services.contracts.messages import BindingEvent, BindingEventKind, Envelope, LinkState, encode
from services.nsa.core.calls import Call, CallResult
from services.nsa.core.config import OperatorRules
from services.nsa.core.configstore import ConfigStore
from services.nsa.core.documents import DecisionRecord
from services.nsa.core.routes import Routes
from services.nsa.fleet import Fleet
from services.nsa.items import Gain, Lose, Warm
from tests.nsa.enginebed import TOPICS, FakeGateway, nsa_settings
from tests.nsa.factories import HA_NODE, MR, MR_NODE, metrics


@dataclass
class Replica:
    """One leased replica's fleet, its effects, and its subscriptions."""

    gateway: FakeGateway
    now: float = 1000.0
    records: list[DecisionRecord] = field(default_factory=list)
    results: list[CallResult] = field(default_factory=list)
    subscribed: set[str] = field(default_factory=set)
    metrics_subscribed: set[str] = field(default_factory=set)
    fleet: Fleet = field(init=False)

    def __post_init__(self) -> None:
        settings = nsa_settings(startup_hold_s=30.0, first_period_s=0.5)
        config = settings.base_config(
            settings.profiles, settings.preferences, settings.rules or OperatorRules()
        )
        self.routes = Routes(TOPICS, settings.mobile_routers)
        self.fleet = Fleet(
            settings,
            TOPICS,
            lambda: ConfigStore(config),
            self,
            subscribe=self._subscribe,
            unsubscribe=self._unsubscribe,
            partitions=1,
        )

    def _subscribe(self, filters: list[str], metrics: list[str]) -> None:
        self.subscribed.update(filters)
        self.metrics_subscribed.update(metrics)

    def _unsubscribe(self, filters: list[str], metrics: list[str]) -> None:
        self.subscribed.difference_update(filters)
        self.metrics_subscribed.difference_update(metrics)

    def explain(self, mobile_router: str, record: DecisionRecord) -> None:
        self.records.append(record)

    def audit(self, mobile_router: str, record: object) -> None:
        pass

    def deliver(self, call: Call) -> None:
        self.gateway.calls.append(call)
        self.results.append(self.gateway.answer(call))

    def feed(self, topic: str, message: Envelope) -> None:
        raw = self.routes.route(topic, encode(message))
        assert raw is not None
        self.fleet.accept(raw, self.now)
        self.settle()

    def settle(self) -> None:
        self.fleet.due(self.now)
        self.fleet.settle(self.now)
        while self.results:
            self.fleet.delivered(self.results.pop(0), self.now)
            self.fleet.settle(self.now)

    def report(self) -> None:
        """Both links measured, up and bound, as the bus would bring them."""
        for bid, rtt in ((1, 20.0), (2, 60.0)):
            self.measure(bid, rtt)
            state = LinkState(
                sender=MR_NODE,
                interface=f"if{bid}",
                bid=bid,
                up=True,
                carrier=True,
                timestamp=self.now,
            )
            self.feed(TOPICS.link_state(MR_NODE, f"if{bid}"), state)
            self.bind(bid)

    def bind(self, bid: int) -> None:
        event = BindingEvent(
            sender=HA_NODE,
            event=BindingEventKind.REGISTERED,
            mobile_router=MR,
            bid=bid,
            timestamp=self.now,
        )
        self.feed(TOPICS.binding_event(MR, bid), event)

    def measure(self, bid: int, rtt_ms: float) -> None:
        message = metrics(bid, rtt_ms=rtt_ms, timestamp=self.now)
        self.feed(TOPICS.link_metrics(MR_NODE, f"if{bid}"), message)

    def at(self, now: float) -> None:
        self.now = now
        self.settle()


def test_a_warm_partition_decides_nothing_then_decides_at_once_under_its_epoch() -> None:
    replica = Replica(FakeGateway())
    replica.fleet.control(Warm(0), replica.now)
    assert TOPICS.links(report="state") not in replica.subscribed, "its routers' topics only"
    assert any(MR_NODE in f for f in replica.subscribed)
    assert any(MR_NODE in f for f in replica.metrics_subscribed)
    replica.report()
    replica.at(replica.now + 2.0)
    assert replica.records == []
    assert replica.gateway.calls == []

    replica.fleet.control(Gain(0, 7), replica.now)
    replica.settle()
    assert replica.records, "decided at once when taken"
    call = replica.gateway.calls[0]
    assert {epoch_of(m.version) for m in call.messages()} == {7}
    assert epoch_of(replica.gateway.ha.state.version) == 7


def test_a_lost_partition_is_unsubscribed_and_its_inputs_ignored() -> None:
    replica = Replica(FakeGateway())
    replica.fleet.control(Gain(0, 3), replica.now)
    replica.report()
    replica.at(replica.now + 1.0)
    decided = len(replica.records)
    assert decided > 0
    replica.fleet.control(Lose(0), replica.now)
    assert replica.subscribed == set()
    assert replica.metrics_subscribed == set()
    replica.measure(1, 400.0)
    replica.at(replica.now + 5.0)
    assert len(replica.records) == decided


def test_binding_events_seen_before_a_partition_is_taken_are_replayed_into_it() -> None:
    replica = Replica(FakeGateway())
    for bid in (1, 2):  # every replica sees every binding event
        replica.bind(bid)
    replica.fleet.control(Gain(0, 4), replica.now)
    for bid, rtt in ((1, 20.0), (2, 60.0)):
        replica.measure(bid, rtt)
    replica.at(replica.now + 1.0)
    assert replica.records, "decided without waiting for the start-up hold"
    assert replica.records[-1].explanation.for_class("video").chosen_bid == 1


def test_the_workers_refuse_a_replica_that_still_sends_under_an_older_epoch() -> None:
    gateway = FakeGateway()  # the same two workers behind both replicas
    new, old = Replica(gateway), Replica(gateway)
    old.fleet.control(Gain(0, 5), old.now)
    old.report()
    old.at(old.now + 1.0)
    assert epoch_of(gateway.ha.state.version) == 5
    new.fleet.control(Gain(0, 9), new.now)
    new.report()
    new.at(new.now + 1.0)
    assert epoch_of(gateway.ha.state.version) == 9
    enforced = gateway.ha.state
    # The old holder never heard it lost the partition: BID 1 degrades, it moves video.
    sent = len(gateway.calls)
    old.measure(1, 900.0)
    old.at(old.now + 5.0)
    stale = [m for c in gateway.calls[sent:] for m in c.messages() if m.node == HA_NODE]
    assert stale, "the old holder did send"
    assert {epoch_of(m.version) for m in stale} == {5}
    assert gateway.ha.state == enforced
