"""Protection when at risk: duplicates at the first report near a bound, single again only
after the hold time, and no flapping however the metric oscillates."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.contracts.policy import Duplicate, Forward, Install, PolicyMessage, Update
from services.nsa.core import Reason, render
from tests.nsa.factories import Sim, config, profile

#: BID 2 (lte) carries the class; BID 1 and 3 are the other eligible links, BID 1 the better.
LINKS: dict[int, dict[str, Any]] = {
    1: {"rtt_ms": 40},
    2: {"rtt_ms": 30},
    3: {"rtt_ms": 90, "bitrate_bps": 2e6},
}
HOLD = 10.0


def protected(**kwargs: Any) -> Sim:
    requirements = kwargs.pop("requirements", {"max_delay_ms": 200})
    cfg = config(
        profile(requirements=requirements, protect="when-at-risk", **kwargs),
        settings={"dwell_s": 10},
    )
    sim = Sim(cfg)
    sim.start(0.0, LINKS)
    assert sim.bid() == 2
    return sim


def actions(message: PolicyMessage) -> list[object]:
    op = message.operation
    if isinstance(op, Install):
        return [p.action for p in op.policies]
    assert isinstance(op, Update)
    return [p.action for p in (*op.insert, *op.replace)]


def copies(sim: Sim) -> tuple[int, ...]:
    return sim.state.classes["video"].copies


def test_protection_switches_on_at_the_first_report_near_the_bound_on_both_nodes() -> None:
    sim = protected()
    assert copies(sim) == ()
    assert sim.metrics(1.0, 2, rtt_ms=159).messages == ()  # below 0.8 x 200 ms
    result = sim.metrics(2.0, 2, rtt_ms=170)
    assert copies(sim) == (1,)
    assert [(m.node, m.schema_version()) for m in result.messages] == [
        ("ha1", 2),
        ("mr1-prem", 2),
    ]
    for message in result.messages:
        assert actions(message) == [Duplicate(paths=(2, 1), fallbacks=(3,))]
    assert sim.ha.state.policies[0].action == sim.mr.state.policies[0].action
    entry = result.decision.explanation.for_class("video")
    assert entry.reason is Reason.PROTECTED
    assert not entry.moved
    assert entry.detail.startswith("protected: if2 delay 170 ms >= 0.8 x 200 ms")
    assert "stays on BID 2 copied to BID 1 (protected: if2 delay 170 ms >= 0.8 x 200 ms; " in (
        render(result.decision.explanation)
    )


@pytest.mark.parametrize(
    ("requirements", "values", "text"),
    [
        ({"max_jitter_ms": 10}, {"jitter_ms": 8}, "if2 jitter 8 ms >= 0.8 x 10 ms"),
        ({"max_loss": 0.02}, {"loss": 0.017}, "if2 loss 0.017 >= 0.8 x 0.02"),
        ({"max_delay_ms": 100, "max_loss": 0.5}, {"rtt_ms": 80}, "if2 delay 80 ms >= 0.8 x 100"),
    ],
)
def test_jitter_loss_and_delay_are_watched(
    requirements: dict[str, float], values: dict[str, float], text: str
) -> None:
    sim = protected(requirements=requirements)
    result = sim.metrics(1.0, 2, **{"rtt_ms": 30, **values})
    assert copies(sim) == (1,)
    assert text in result.decision.explanation.for_class("video").detail


def test_the_fraction_is_configurable() -> None:
    sim = protected(risk_fraction=0.5)
    sim.metrics(1.0, 2, rtt_ms=99)
    assert copies(sim) == ()
    sim.metrics(2.0, 2, rtt_ms=100)
    assert copies(sim) == (1,)


def test_protection_ends_only_after_the_link_was_healthy_for_the_hold_time() -> None:
    sim = protected(protect_hold_s=HOLD)
    sim.metrics(1.0, 2, rtt_ms=170)
    healthy = sim.metrics(2.0, 2, rtt_ms=30)
    assert copies(sim) == (1,)
    assert healthy.messages == ()
    assert healthy.decision.wake_at == pytest.approx(12.0)
    assert "protection held: healthy for 0 of 10 s" in (
        healthy.decision.explanation.for_class("video").detail
    )
    sim.metrics(11.0, 2, rtt_ms=31)
    assert copies(sim) == (1,)
    result = sim.tick(healthy.decision.wake_at or 0.0)
    assert copies(sim) == ()
    entry = result.decision.explanation.for_class("video")
    assert entry.reason is Reason.PROTECTION_OFF
    assert entry.detail == "protection off: healthy for 10 s (hold 10 s)"
    assert "(protection off: healthy for 10 s (hold 10 s))" in render(result.decision.explanation)
    for message in result.messages:
        assert message.schema_version() == 1
        assert actions(message) == [Forward(bid=2, fallbacks=(1, 3))]


def test_a_report_at_risk_during_the_hold_starts_it_again() -> None:
    sim = protected()
    sim.metrics(1.0, 2, rtt_ms=170)
    sim.metrics(2.0, 2, rtt_ms=30)
    sim.metrics(9.0, 2, rtt_ms=165)  # at risk again: the hold starts over at the next health
    sim.metrics(10.0, 2, rtt_ms=30)
    assert sim.tick(12.0).decision.wake_at == pytest.approx(20.0)
    assert copies(sim) == (1,)
    sim.tick(20.0 + 1e-5)
    assert copies(sim) == ()


def test_without_another_eligible_link_the_class_stays_on_one_link_and_says_why() -> None:
    sim = protected(requirements={"max_delay_ms": 200})
    sim.link(1.0, 1, up=False)
    sim.link(1.0, 3, up=False)
    result = sim.metrics(2.0, 2, rtt_ms=170)
    assert copies(sim) == ()
    assert "no other eligible link to copy to" in (
        result.decision.explanation.for_class("video").detail
    )
    sim.link(3.0, 3, up=True)  # a partner appears while the link is still at risk
    assert copies(sim) == (3,)


def test_the_copy_link_is_kept_while_eligible() -> None:
    sim = protected()
    sim.metrics(1.0, 2, rtt_ms=170)
    sim.metrics(2.0, 1, rtt_ms=190)  # BID 3 now ranks above the copy link: no rewrite
    assert copies(sim) == (1,)
    sim.link(3.0, 1, up=False)
    assert copies(sim) == (3,)


def test_a_broken_bound_moves_the_class_and_its_new_link_is_judged() -> None:
    sim = protected()
    result = sim.metrics(1.0, 2, rtt_ms=250)  # over the bound: BID 2 is no longer eligible
    entry = result.decision.explanation.for_class("video")
    assert entry.reason is Reason.REQUIREMENT_VIOLATED
    assert sim.bid() == 1
    assert copies(sim) == ()  # BID 1 at 40 ms is healthy
    sim.metrics(2.0, 1, rtt_ms=180)
    assert copies(sim) == (3,)


Report = tuple[float, float]  # (seconds since the previous report, RTT of the class's link)

oscillating = st.lists(
    st.tuples(
        st.sampled_from([0.1, 0.5, 1.0, 2.0, 7.0, 15.0]),
        st.one_of(st.floats(150.0, 170.0), st.sampled_from([30.0, 159.9, 160.0, 199.0])),
    ),
    min_size=1,
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(reports=oscillating, hold=st.sampled_from([1.0, 5.0, 10.0]))
def test_no_flapping_around_the_threshold(reports: list[Report], hold: float) -> None:
    """On at every report at risk, off only after `hold` healthy; switches on at most
    duration / hold + 1 times (and so at most 2 x duration / hold + 1 switches in all)."""
    sim = protected(protect_hold_s=hold)
    now, wake = 0.0, sim.steps[-1].decision.wake_at
    last_risk: float | None = None
    ons = offs = 0
    on = False
    for gap, rtt in reports:
        now += gap
        while wake is not None and wake <= now:  # the service's timer fires first
            result = sim.tick(wake)
            wake = result.decision.wake_at
            if on and not copies(sim):
                assert last_risk is not None
                assert result.decision.explanation.at - last_risk >= hold
                on, offs = False, offs + 1
        result = sim.metrics(now, 2, rtt_ms=rtt)
        wake = result.decision.wake_at
        if rtt >= 160.0:
            last_risk = now
            assert copies(sim) == (1,), "protection is on in the decision of a report at risk"
            ons += 0 if on else 1
            on = True
        elif on and not copies(sim):
            assert last_risk is not None
            assert now - last_risk >= hold
            on, offs = False, offs + 1
        assert bool(copies(sim)) == on
    assert ons <= now / hold + 1
    assert ons + offs <= 2 * now / hold + 1
    for message in sim.sent:  # every document the nodes took is v2 only with a duplicate
        duplicated = any(isinstance(a, Duplicate) for a in actions(message))
        assert message.schema_version() == (2 if duplicated else 1)
