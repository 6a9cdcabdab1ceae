"""Load sharing spreads flows (selectors), not packets, by weight, and does not reshuffle."""

from __future__ import annotations

import pytest

from services.contracts.messages import BindingEventKind
from services.nsa.core import Reason
from services.nsa.core.steering import apportion, share_flows
from tests.nsa.factories import Sim, config, profile

PORTS = (5001, 5002, 5003, 5004, 5005, 5006)


def bulk_sim(**settings: float) -> Sim:
    cfg = config(
        profile(
            "bulk",
            ports=PORTS,
            steering="load-sharing",
            shares=[{"link": "wlan", "weight": 2}, {"link": 2, "weight": 1}],
        ),
        settings={"dwell_s": 10, **settings},
    )
    return Sim(cfg)


@pytest.mark.parametrize(
    ("count", "weights", "quotas"),
    [
        (6, {1: 2.0, 2: 1.0}, {1: 4, 2: 2}),
        (6, {1: 2.0, 2: 1.0, 3: 1.0}, {1: 3, 2: 2, 3: 1}),
        (2, {1: 1.0, 2: 1.0, 3: 1.0}, {1: 1, 2: 1, 3: 0}),
        (1, {5: 1.0, 3: 1.0}, {3: 1, 5: 0}),
        (5, {1: 1.0}, {1: 5}),
        (0, {1: 1.0, 2: 3.0}, {1: 0, 2: 0}),
        (3, {}, {}),
    ],
    ids=[
        "2-to-1",
        "remainder-to-lower-bid",
        "fewer-flows-than-links",
        "tie",
        "one",
        "none",
        "no-links",
    ],
)
def test_apportion(count: int, weights: dict[int, float], quotas: dict[int, int]) -> None:
    assert apportion(count, weights) == quotas


@pytest.mark.parametrize(
    ("previous", "quotas", "flows"),
    [
        ((None, None, None), {1: 2, 2: 1}, (1, 1, 2)),
        ((2, 1, 1), {1: 2, 2: 1}, (2, 1, 1)),
        ((1, 1, 1), {1: 2, 2: 1}, (1, 1, 2)),
        ((1, 3, 2), {1: 2, 2: 1}, (1, 1, 2)),
        ((2, 2, 2, 2), {1: 2, 2: 2}, (2, 2, 1, 1)),
    ],
    ids=["fresh", "already-fits", "one-moves", "lost-link-only", "keep-first-flows"],
)
def test_share_flows_keeps_flows_where_quotas_allow(
    previous: tuple[int | None, ...], quotas: dict[int, int], flows: tuple[int, ...]
) -> None:
    assert share_flows(previous, quotas) == flows


def test_spread_by_weight_and_stable_over_repeated_decisions() -> None:
    sim = bulk_sim()
    sim.start(0.0, {1: {}, 2: {"rtt_ms": 80}})
    first = sim.state.classes["bulk"].flows
    assert sorted(first) == [1, 1, 1, 1, 2, 2]  # wlan weight 2, BID 2 weight 1
    for t in range(1, 60):
        sim.metrics(t, 1 + t % 2, rtt_ms=10 + (t * 7) % 90)
    assert sim.state.classes["bulk"].flows == first
    assert sim.moves.get("bulk", 0) == 0
    assert len(sim.sent) == 2  # the first Install to each node, nothing since


def test_each_flow_is_enforced_on_its_link() -> None:
    sim = bulk_sim()
    sim.start(0.0, {1: {}, 2: {}})
    flows = sim.state.classes["bulk"].flows
    for port, bid in zip(PORTS, flows, strict=True):
        assert sim.enforced(port) == (bid, bid)


def test_new_link_joins_after_dwell_moving_few_flows() -> None:
    sim = bulk_sim()
    sim.start(0.0, {1: {}, 2: {}})
    before = sim.state.classes["bulk"].flows
    sim.binding(10, 3, BindingEventKind.REGISTERED)
    sim.metrics(10, 3)
    assert sim.state.classes["bulk"].flows == before
    sim.tick(19.9)
    assert sim.state.classes["bulk"].flows == before
    step = sim.tick(20)
    after = sim.state.classes["bulk"].flows
    assert sorted(after) == [1, 1, 1, 2, 2, 3]
    assert sum(a != b for a, b in zip(before, after, strict=True)) == 1
    assert step.decision.explanation.for_class("bulk").reason is Reason.REBALANCED


def test_link_down_spreads_its_flows_at_once() -> None:
    sim = bulk_sim(dwell_s=0)
    sim.start(0.0, {1: {}, 2: {}, 3: {}})
    before = sim.state.classes["bulk"].flows
    assert sorted(before) == [1, 1, 1, 2, 2, 3]
    step = sim.link(5, 1, up=False)
    after = sim.state.classes["bulk"].flows
    assert sorted(after) == [2, 2, 2, 3, 3, 3]
    assert all(a == b for a, b in zip(before, after, strict=True) if a != 1)  # others stay
    assert step.decision.explanation.for_class("bulk").reason is Reason.REQUIREMENT_VIOLATED


def test_handover_member_leaves_and_returns_at_once() -> None:
    sim = bulk_sim()
    sim.start(0.0, {1: {}, 2: {}})
    before = sim.state.classes["bulk"].flows
    sim.binding(5, 1, BindingEventKind.HANDOVER_STARTED)
    assert set(sim.state.classes["bulk"].flows) == {2}
    step = sim.binding(6, 1, BindingEventKind.COA_CHANGED)
    assert sim.state.classes["bulk"].flows == before  # no dwell, and back to the same flows
    assert step.decision.explanation.for_class("bulk").reason is Reason.HANDOVER_COMPLETED


def test_no_member_left_withdraws() -> None:
    sim = bulk_sim()
    sim.start(0.0, {1: {}})
    sim.link(1, 1, up=False)
    assert not sim.state.classes["bulk"].flows
    assert sim.enforced(5001) == (None, None)
    sim.link(2, 1, up=True)  # nothing to be stable against: joins at once
    assert sim.state.classes["bulk"].flows == (1,) * 6
