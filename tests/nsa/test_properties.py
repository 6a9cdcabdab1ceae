"""Properties over random links, rules and event sequences.

- deciding twice with the same inputs at the same time changes nothing;
- every flow is on a link that is eligible for its class;
- once the nodes acknowledged a plan, planning again sends nothing;
- a diff applied to the current set gives the desired set.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.contracts.messages import BindingEventKind
from services.contracts.policy import Forward, Policy
from services.nsa.core import (
    MrState,
    MrView,
    NsaConfig,
    Trigger,
    TriggerKind,
    apply_binding_event,
    apply_link_state,
    apply_metrics,
    decide,
    diff,
)
from tests.nsa.factories import MR, Sim, binding, config, link_state, metrics, profile, udp

K = BindingEventKind
BIDS = (1, 2, 3, 4)

metric_values = st.fixed_dictionaries(
    {
        "rtt_ms": st.one_of(st.none(), st.floats(1, 500)),
        "loss": st.one_of(st.none(), st.floats(0, 0.2)),
        "bitrate_bps": st.one_of(st.none(), st.floats(1e5, 1e8)),
        "cost_per_mb": st.one_of(st.none(), st.sampled_from([0.0, 0.01, 0.1, 1.0])),
        "technology": st.sampled_from(["wlan", "lte", "umts", "ethernet"]),
    }
)
binding_kinds = st.sampled_from([K.REGISTERED] * 5 + list(K))  # mostly live bindings
ups = st.sampled_from([True, True, True, False])


@st.composite
def configs(draw: st.DrawFn) -> NsaConfig:
    steering = draw(
        st.sampled_from(["best", "priority", "lowest-delay", "cheapest", "load-sharing"])
    )
    extra: dict[str, Any] = {}
    if steering == "priority":
        extra["order"] = draw(
            st.lists(st.sampled_from([1, 2, "lte", "wlan"]), min_size=1, max_size=3, unique=True)
        )
    requirements = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "max_delay_ms": st.floats(10, 400),
                "max_loss": st.floats(0, 0.2),
                "min_bandwidth_bps": st.floats(1e5, 1e8),
            },
        )
    )
    rules = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "technologies": st.sets(
                    st.sampled_from(["wlan", "lte", "umts", "ethernet"]), min_size=2
                ),
                "max_cost_per_mb": st.sampled_from([0.0, 0.05, 0.5]),
                "min_security": st.integers(0, 3),
            },
        )
    )
    return config(
        profile(ports=(1, 2, 3, 4, 5), steering=steering, requirements=requirements, **extra),
        settings={
            "dwell_s": draw(st.sampled_from([0.0, 5.0, 10.0])),
            "margin": draw(st.sampled_from([0.0, 0.05, 0.2])),
            "method": draw(st.sampled_from(["utility", "topsis"])),
        },
        rules={"default": rules},
    )


@st.composite
def views(draw: st.DrawFn) -> MrView:
    view = MrView(mobile_router=MR)
    for bid in draw(st.lists(st.sampled_from(BIDS), unique=True, max_size=4)):
        view, _ = apply_metrics(view, metrics(bid, **draw(metric_values)), 0.0)
        view, _ = apply_link_state(view, link_state(bid, draw(ups)), 0.0)
        view, _ = apply_binding_event(view, binding(bid, draw(binding_kinds)), 0.0)
    return view


def assert_flows_eligible(state: MrState, decision_links: dict[int, bool]) -> None:
    for flows in state.assignment().values():
        for bid in flows:
            assert decision_links[bid], f"BID {bid} is not eligible but carries a flow"


@settings(max_examples=300, deadline=None)
@given(view=views(), cfg=configs(), now=st.floats(0, 1000))
def test_deciding_twice_changes_nothing(view: MrView, cfg: NsaConfig, now: float) -> None:
    start = Trigger(kind=TriggerKind.START)
    first = decide(view, cfg, MrState(mobile_router=MR), now, start)
    second = decide(view, cfg, first.state, now, start)
    assert second.state == first.state
    assert second.explanation.moves() == 0
    entry = first.explanation.for_class("video")
    assert_flows_eligible(first.state, {v.bid: v.eligible for v in entry.links})


step_kinds = st.sampled_from(["metrics", "link", "binding", "binding", "tick", "tick"])


@settings(max_examples=150, deadline=None)
@given(
    cfg=configs(),
    script=st.lists(
        st.tuples(step_kinds, st.sampled_from(BIDS), metric_values, ups, st.sampled_from(list(K))),
        min_size=5,
        max_size=30,
    ),
)
def test_random_timelines_keep_flows_eligible_and_plans_settled(
    cfg: NsaConfig, script: list[tuple[str, int, dict[str, Any], bool, BindingEventKind]]
) -> None:
    sim = Sim(cfg)
    sim.start(0.0, {bid: {} for bid in BIDS})
    for t, (kind, bid, values, up, event) in enumerate(script, start=1):
        now = float(t * 3)
        if kind == "metrics":
            step = sim.metrics(now, bid, **values)
        elif kind == "link":
            step = sim.link(now, bid, up)
        elif kind == "binding":
            step = sim.binding(now, bid, event)
        else:
            step = sim.tick(now)
        entry = step.decision.explanation.for_class("video")
        assert_flows_eligible(sim.state, {v.bid: v.eligible for v in entry.links})
        again = sim.run(now, Trigger(kind=TriggerKind.TIMER))
        assert again.messages == ()  # the nodes hold exactly what was decided
        assert again.decision.explanation.moves() == 0
        for port, bid_now in zip((1, 2, 3, 4, 5), sim.state.classes["video"].flows, strict=False):
            assert sim.enforced(port) == (bid_now, bid_now)


policy_sets = st.lists(
    st.builds(
        lambda i, bid, port: Policy(
            id=f"c.{i}", priority=i, selector=udp(port), action=Forward(bid=bid)
        ),
        st.integers(0, 8),
        st.sampled_from(BIDS),
        st.sampled_from([1, 2, 3]),
    ),
    unique_by=lambda p: p.id,
    max_size=8,
)


@given(current=policy_sets, desired=policy_sets)
def test_diff_applied_gives_the_desired_set(current: list[Policy], desired: list[Policy]) -> None:
    update = diff(current, desired)
    held = {p.id: p for p in current}
    if update is None:
        assert held == {p.id: p for p in desired}
        return
    for policy_id in update.delete:
        del held[policy_id]
    for policy in update.replace:
        assert policy.id in held
        held[policy.id] = policy
    for policy in update.insert:
        assert policy.id not in held
        held[policy.id] = policy
    assert held == {p.id: p for p in desired}
