"""A timer decision taken exactly at `wake_at` does what the timer was set for.

With epoch-sized times, `(since + dwell) - since` can round below `dwell`, and metrics exactly
`max_age` old are not yet stale; without a slack on the wake time such a decision would change
nothing and set no further wake time, leaving the change to whatever input came next.
"""

from __future__ import annotations

from services.nsa.core import MrState, Reason, Trigger, TriggerKind, decide
from tests.nsa.factories import Sim, config, profile, view_of

EPOCH = 1_790_000_000.05  # an epoch time whose sums with small durations round


def test_a_dwell_elapses_at_its_own_wake_time() -> None:
    delay_only = [{"default": {"cost": 0, "delay": 1, "bandwidth": 0, "security": 0}}]
    sim = Sim(config(profile(), settings={"dwell_s": 2.0, "margin": 0.0}, preferences=delay_only))
    sim.start(EPOCH, {1: {"rtt_ms": 80}, 2: {"rtt_ms": 80}})
    pending = sim.metrics(EPOCH + 1.05, 2, rtt_ms=20)
    wake = pending.decision.wake_at
    assert wake is not None
    moved = sim.tick(wake)
    assert sim.bid() == 2
    assert moved.decision.explanation.for_class("video").reason is Reason.DWELL_ELAPSED


def test_metrics_are_stale_at_their_wake_time() -> None:
    cfg = config(profile(), settings={"max_metrics_age_s": 3.0})
    view = view_of({1: {}}, now=EPOCH + 0.35)
    first = decide(
        view, cfg, MrState(mobile_router="mr1"), EPOCH + 1, Trigger(kind=TriggerKind.START)
    )
    assert first.wake_at is not None
    later = decide(view, cfg, first.state, first.wake_at, Trigger(kind=TriggerKind.TIMER))
    assert later.state.classes["video"].flows == ()
    assert later.explanation.for_class("video").reason is Reason.NO_ELIGIBLE_LINK
