"""Weighted utility and TOPSIS: the arithmetic, and a decision where they agree and differ."""

from __future__ import annotations

import pytest

from services.nsa.core import MrState, Trigger, TriggerKind, decide
from services.nsa.core.scoring import Column, topsis, utility
from tests.nsa.factories import MR, config, profile, view_of

DELAY_BANDWIDTH = [{"default": {"cost": 0, "delay": 1, "bandwidth": 1, "security": 0}}]


def columns(rtts: list[float | None], mbps: list[float | None]) -> list[Column]:
    return [
        Column(tuple(rtts), weight=1.0, benefit=False),
        Column(tuple(None if m is None else m * 1e6 for m in mbps), weight=1.0, benefit=True),
    ]


def test_utility_ratio_normalisation() -> None:
    # delay: 20/20, 20/40; bandwidth: 5/10, 10/10
    assert utility(columns([20, 40], [5, 10]), 2) == pytest.approx((0.75, 0.75))
    assert utility(columns([20, 40], [10, 10]), 2) == pytest.approx((1.0, 0.75))


def test_close_values_give_close_scores() -> None:
    """Why not min-max: 50 ms against 51 ms must not read as best against worst."""
    low, high = utility([Column((50.0, 51.0), 1.0, benefit=False)], 2)
    assert low - high < 0.05


def test_topsis_extremes() -> None:
    assert topsis(columns([20, 60], [10, 5]), 2) == pytest.approx((1.0, 0.0))
    assert topsis(columns([30, 30], [7, 7]), 2) == pytest.approx((1.0, 1.0))


@pytest.mark.parametrize("score", [utility, topsis])
def test_unknown_values_take_the_worst_known(score: object) -> None:
    assert callable(score)
    with_gap = score(columns([20, None, 40], [10, 10, 10]), 3)
    worst_known = score(columns([20, 40, 40], [10, 10, 10]), 3)
    assert with_gap == pytest.approx(worst_known)


@pytest.mark.parametrize("score", [utility, topsis])
def test_nothing_known_or_no_weight_is_neutral(score: object) -> None:
    assert callable(score)
    assert score(columns([None, None], [None, None]), 2) == (1.0, 1.0)
    assert score([Column((1.0, 2.0), 0.0, benefit=True)], 2) == (1.0, 1.0)


def test_zero_cost_is_the_best_cost() -> None:
    assert utility([Column((0.0, 0.0, 0.5), 1.0, benefit=False)], 3) == (1.0, 1.0, 0.0)


def chosen(method: str, links: dict[int, dict[str, float]]) -> int | None:
    cfg = config(profile(), settings={"method": method}, preferences=DELAY_BANDWIDTH)
    view = view_of(links)
    decision = decide(view, cfg, MrState(mobile_router=MR), 0.0, Trigger(kind=TriggerKind.START))
    return decision.explanation.for_class("video").chosen_bid


def test_methods_agree_when_one_link_dominates() -> None:
    links = {1: {"rtt_ms": 20, "bitrate_bps": 10e6}, 2: {"rtt_ms": 60, "bitrate_bps": 5e6}}
    assert chosen("utility", links) == chosen("topsis", links) == 1


def test_methods_differ_on_a_trade_off() -> None:
    """BID 2 is far faster, BID 3 has far more bandwidth. Ratio normalisation rewards BID 2's
    10 ms strongly (delay ratios 0.05 / 1 / 0.07); TOPSIS's vector normalisation measures
    distances to the ideal and worst links and prefers BID 3's balance."""
    links = {
        1: {"rtt_ms": 200, "bitrate_bps": 10e6},
        2: {"rtt_ms": 10, "bitrate_bps": 20e6},
        3: {"rtt_ms": 150, "bitrate_bps": 100e6},
    }
    assert chosen("utility", links) == 2
    assert chosen("topsis", links) == 3


def test_profile_method_overrides_the_default() -> None:
    cfg = config(
        profile(method="topsis"), settings={"method": "utility"}, preferences=DELAY_BANDWIDTH
    )
    assert cfg.method_for(cfg.profiles[0]).value == "topsis"
