"""The tolerance after a decision is exact: a report it admits would not change the state.

Random configurations (every steering mode, protection, both scoring methods, requirements,
cost caps, metrics ages) and random metric walks, small drifts and large jumps, values appearing,
vanishing and dropping to zero. The loop is the service's: timers first, then the report;
whenever the tolerance admits a report, the real `decide` must return the very same state.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.contracts.messages import BindingEventKind
from services.nsa.core import (
    MrState,
    NsaConfig,
    Trigger,
    TriggerKind,
    apply_metrics,
    decide,
)
from services.nsa.core.materiality import tolerance
from tests.nsa.factories import MR, config, metrics, profile, view_of

BASE: dict[int, dict[str, Any]] = {
    1: {"rtt_ms": 20.0, "bitrate_bps": 50e6, "cost_per_mb": 0.0, "jitter_ms": 2.0, "loss": 0.0},
    2: {"rtt_ms": 40.0, "bitrate_bps": 20e6, "cost_per_mb": 0.01, "jitter_ms": 5.0, "loss": 0.01},
    3: {"rtt_ms": 80.0, "bitrate_bps": 2e6, "cost_per_mb": 0.05, "jitter_ms": 9.0, "loss": 0.02},
}
FIELDS = ("rtt_ms", "bitrate_bps", "cost_per_mb", "jitter_ms", "loss")


@st.composite
def configs(draw: st.DrawFn) -> NsaConfig:
    profiles = []
    for index in range(draw(st.integers(1, 3))):
        steering = draw(
            st.sampled_from(
                [
                    "best",
                    "priority",
                    "lowest-delay",
                    "cheapest",
                    "load-sharing",
                    "load-balancing",
                    "redundant",
                ]
            )
        )
        extra: dict[str, Any] = {}
        if steering == "priority":
            extra["order"] = draw(
                st.lists(st.sampled_from([1, 2, 3, "lte"]), min_size=1, max_size=2, unique=True)
            )
        requirements = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "max_delay_ms": st.sampled_from([30.0, 50.0, 100.0]),
                    "max_jitter_ms": st.sampled_from([4.0, 8.0]),
                    "max_loss": st.sampled_from([0.005, 0.015]),
                    "min_bandwidth_bps": st.sampled_from([1e6, 10e6, 30e6]),
                },
            )
        )
        if steering == "redundant":
            extra["paths"] = draw(st.sampled_from([None, 3]))
        if steering == "load-balancing":
            extra["shares"] = draw(st.sampled_from([[], [{"link": "lte", "weight": 3}]]))
        watched = {"max_delay_ms", "max_jitter_ms", "max_loss"} & requirements.keys()
        single = steering in ("best", "priority", "lowest-delay", "cheapest")
        if watched and single and draw(st.booleans()):
            extra["protect"] = "when-at-risk"
            extra["risk_fraction"] = draw(st.sampled_from([0.5, 0.8, 1.0]))
            extra["protect_hold_s"] = draw(st.sampled_from([0.0, 1.0, 10.0]))
        method = draw(st.sampled_from([None, "utility", "topsis"]))
        profiles.append(
            profile(
                f"c{index}",
                ports=(5000 + 10 * index, 5001 + 10 * index, 5002 + 10 * index),
                steering=steering,
                requirements=requirements,
                method=method,
                **extra,
            )
        )
    cap = draw(st.sampled_from([None, 0.02, 0.1]))
    return config(
        *profiles,
        settings={
            "dwell_s": draw(st.sampled_from([0.0, 2.0, 10.0])),
            "margin": draw(st.sampled_from([0.0, 0.05, 0.1, 0.2])),
            "max_metrics_age_s": draw(st.sampled_from([None, 3.0])),
        },
        rules={"default": {} if cap is None else {"max_cost_per_mb": cap}},
        preferences=[
            {"default": draw(st.sampled_from([{}, {"cost": 0, "delay": 3}, {"bandwidth": 2}]))}
        ],
    )


change = st.one_of(
    st.floats(-0.02, 0.02),  # noise: mostly inside the tolerance
    st.floats(-0.02, 0.02),
    st.floats(-0.8, 0.8),  # a real change
    st.sampled_from(["none", "zero", "back"]),
)
report = st.tuples(
    st.sampled_from([0.05, 0.3, 1.0]),  # time since the previous report
    st.sampled_from([1, 2, 3]),
    st.fixed_dictionaries(dict.fromkeys(FIELDS, change)),
)


def _next(values: dict[str, Any], bid: int, changes: dict[str, Any]) -> dict[str, Any]:
    new = dict(values)
    for name, how in changes.items():
        if how == "none":
            new[name] = None
        elif how == "zero":
            new[name] = 0.0
        elif how == "back" or new[name] is None:
            new[name] = BASE[bid][name]
        else:
            new[name] = new[name] * math.exp(how)
    if new["loss"] is not None:
        new["loss"] = min(new["loss"], 1.0)
    return new


@settings(max_examples=400, deadline=None)
@given(cfg=configs(), reports=st.lists(report, min_size=10, max_size=60))
def test_an_admitted_report_never_changes_the_decision(
    cfg: NsaConfig, reports: list[tuple[float, int, dict[str, Any]]]
) -> None:
    view = view_of(BASE, 0.0)
    values = {bid: dict(v) for bid, v in BASE.items()}
    made = decide(view, cfg, MrState(mobile_router=MR), 0.0, Trigger(kind=TriggerKind.START))
    state, wake = made.state, made.wake_at
    tol = tolerance(view, cfg, made, 0.0)
    now = 0.0
    admitted = 0
    for gap, bid, changes in reports:
        now += gap
        if wake is not None and wake <= now:  # the service's timer fires first
            made = decide(view, cfg, state, wake, Trigger(kind=TriggerKind.TIMER))
            state, wake = made.state, made.wake_at
            tol = tolerance(view, cfg, made, now)
        values[bid] = _next(values[bid], bid, changes)
        message = metrics(bid, **values[bid])
        current = view.links.get(bid)
        view, trigger = apply_metrics(view, message, now)
        if tol.admits(message, now, None if current is None else current.updated_at):
            admitted += 1
            again = decide(view, cfg, state, now, trigger)
            assert again.state == state, (bid, values[bid], tol.factor)
            continue
        made = decide(view, cfg, state, now, trigger)
        state, wake = made.state, made.wake_at
        tol = tolerance(view, cfg, made, now)


def test_noise_is_admitted_and_a_threshold_crossing_is_not() -> None:
    cfg = config(profile("voice", requirements={"max_delay_ms": 50.0}), settings={"margin": 0.1})
    view = view_of(BASE, 0.0)
    made = decide(view, cfg, MrState(mobile_router=MR), 0.0, Trigger(kind=TriggerKind.START))
    tol = tolerance(view, cfg, made, 0.0)
    assert tol.factor > 1.01
    noisy = metrics(2, **{**BASE[2], "rtt_ms": 40.4, "jitter_ms": 7.0, "loss": 0.2})
    assert tol.admits(noisy, 1.0, 0.0)
    crossing = metrics(2, **{**BASE[2], "rtt_ms": 55.0})
    assert not tol.admits(crossing, 1.0, 0.0)
    assert not tol.admits(metrics(2, **{**BASE[2], "rtt_ms": None}), 1.0, 0.0)
    assert not tol.admits(metrics(1, **{**BASE[1], "cost_per_mb": 0.001}), 1.0, 0.0)
    assert not tol.admits(metrics(4), 1.0, None), "a new link is always decided on"
    other = metrics(2, **{**BASE[2], "technology": "wlan"})
    assert not tol.admits(other, 1.0, 0.0)


def test_load_sharing_ignores_scores_entirely() -> None:
    cfg = config(profile("bulk", steering="load-sharing"))
    view = view_of(BASE, 0.0)
    made = decide(view, cfg, MrState(mobile_router=MR), 0.0, Trigger(kind=TriggerKind.START))
    tol = tolerance(view, cfg, made, 0.0)
    assert math.isinf(tol.factor)
    assert tol.admits(metrics(3, **{**BASE[3], "rtt_ms": 900.0}), 1.0, 0.0)


def test_registered_event_is_still_needed() -> None:
    """Sanity: the factories register every BID, so the links above are all eligible."""
    view = view_of(BASE, 0.0)
    assert all(b.event is BindingEventKind.REGISTERED for b in view.bindings.values())
