"""Delivery and correlation against a fake bus whose workers answer from another thread."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from services.contracts import policy_xml
from services.contracts.messages import PolicyStatus, Presence, Refusal
from services.contracts.policy import Install
from services.soap_gateway.checks import CallRefused
from services.soap_gateway.core import BusUnavailableError, GatewayCore, Outcome
from services.soap_gateway.tracker import Tracker
from tests.prem.factories import udp_to
from tests.soap_gateway.helpers import downlink, gateway_settings, uplink

VIDEO = Install(policies=(udp_to("video", 5001, 2),))


@dataclass
class FakeBus:
    """Workers that apply any version above the last one, answering on a separate thread."""

    tracker: Tracker
    silent: set[str] = field(default_factory=set)
    up: bool = True
    enforced: dict[str, int] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def connected(self) -> bool:
        return self.up

    def publish(self, node: str, document: bytes) -> bool:
        message = policy_xml.parse(document)
        with self.lock:
            self.published.append(node)
            if node in self.silent:
                return True
            current = self.enforced.get(node, 0)
            fresh = message.version > current
            if fresh:
                self.enforced[node] = message.version
        status = PolicyStatus(
            sender=node,
            node=node,
            mobile_router=message.mobile_router,
            direction=message.direction,
            result="applied" if fresh else "refused",
            version=message.version if fresh else current,
            requested_version=message.version,
            refusals=() if fresh else (Refusal(reason="stale", field="version"),),
        )
        threading.Timer(0.01, self.tracker.on_status, (status,)).start()
        return True


def _core(**overrides: object) -> tuple[GatewayCore, FakeBus]:
    tracker = Tracker()
    bus = FakeBus(tracker)
    return GatewayCore(gateway_settings(**overrides), tracker, bus), bus


def test_both_nodes_applied() -> None:
    core, _ = _core()
    outcomes = core.deliver("install", "mr1", downlink(1, VIDEO), uplink(1, VIDEO))
    assert [(o.node, o.outcome, o.version) for o in outcomes] == [
        ("ha1", Outcome.APPLIED, 1),
        ("mr1", Outcome.APPLIED, 1),
    ]
    assert core.tracker.pending() == 0


def test_refused_and_not_reached_are_reported_per_node() -> None:
    core, bus = _core(ack_deadline_s=0.3)
    core.deliver("install", "mr1", downlink(2, VIDEO), uplink(2, VIDEO))
    bus.silent.add("mr1")
    outcomes = core.deliver("install", "mr1", downlink(1, VIDEO), uplink(3, VIDEO))
    assert (outcomes[0].outcome, outcomes[0].version) == (Outcome.REFUSED, 2)
    assert outcomes[0].refusals[0].reason == "stale"
    assert (outcomes[1].outcome, outcomes[1].version) == (Outcome.NOT_REACHED, None)
    assert core.tracker.pending() == 0
    view = core.status("mr1")[0].view
    assert (view.version, view.last_result, view.refused_version) == (2, "refused", 1)


def test_an_invalid_call_publishes_nothing() -> None:
    core, bus = _core()
    with pytest.raises(CallRefused):
        core.deliver("install", "mr1", downlink(1, VIDEO), "<broken")
    assert bus.published == []


def test_no_bus_publishes_nothing() -> None:
    core, bus = _core()
    bus.up = False
    with pytest.raises(BusUnavailableError):
        core.deliver("install", "mr1", downlink(1, VIDEO), uplink(1, VIDEO))
    assert bus.published == []
    assert core.tracker.pending() == 0


def test_concurrent_calls_each_get_their_own_answers() -> None:
    core, bus = _core()

    def call(i: int) -> list[tuple[Outcome, int | None]]:
        outcomes = core.deliver("install", "mr1", downlink(i, VIDEO), uplink(i, VIDEO))
        return [(o.outcome, o.requested_version) for o in outcomes]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(1, 41)))
    for i, result in enumerate(results, start=1):
        # Racing versions: some are applied, some refused as stale; none is left unanswered
        # and each call sees the answer to its own version.
        assert [version for _, version in result] == [i, i]
        assert Outcome.NOT_REACHED not in [outcome for outcome, _ in result]
    assert core.tracker.pending() == 0
    assert len(bus.published) == 80


def test_presence_sets_online_and_version_and_a_will_sets_offline() -> None:
    tracker = Tracker()
    tracker.on_presence(Presence(sender="ha1", node="ha1", service="prem", online=True, version=7))
    assert (tracker.view("ha1").online, tracker.view("ha1").version) == (True, 7)
    tracker.on_presence(Presence(sender="ha1", node="ha1", service="prem", online=False))
    assert (tracker.view("ha1").online, tracker.view("ha1").version) == (False, 7)
    assert tracker.view("nobody").online is None


def test_the_same_version_sent_twice_answers_both_waiters_in_order() -> None:
    tracker = Tracker()
    first, second = tracker.expect("ha1", 5), tracker.expect("ha1", 5)
    for result in ("applied", "refused"):
        tracker.on_status(
            PolicyStatus(
                sender="ha1",
                node="ha1",
                mobile_router="mr1",
                direction="downlink",
                result=result,
                version=5,
                requested_version=5,
            )
        )
    tracker.wait([first, second], 1.0)
    assert first.status is not None
    assert first.status.result == "applied"
    assert second.status is not None
    assert second.status.result == "refused"
    assert tracker.pending() == 0
