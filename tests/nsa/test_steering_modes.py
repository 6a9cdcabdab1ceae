"""Steering modes that produce version-2 actions: load balancing (balance) and redundant
(duplicate); the smallest-delay spelling; the plan carrying them to both nodes."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from services.contracts import policy_xml
from services.contracts.errors import InvalidInput
from services.contracts.messages import BindingEventKind
from services.contracts.policy import (
    Balance,
    Direction,
    Duplicate,
    Forward,
    Install,
    PolicyMessage,
    Share,
    Update,
    mirror_selector,
)
from services.nsa.core import NsaConfig, Reason, SteeringMode, desired_policies, load, render
from services.nsa.core.sharing import bucket_weights
from tests.nsa.factories import HA_NODE, MR_NODE, Sim, config, profile, udp

#: BID 2 (lte) scores best with the default weights, then BID 1 (wlan), then BID 3 (umts).
LINKS: dict[int, dict[str, Any]] = {1: {}, 2: {"rtt_ms": 30}, 3: {"rtt_ms": 50}}


def actions(message: PolicyMessage) -> list[object]:
    op = message.operation
    policies = op.policies if isinstance(op, Install) else ()
    if isinstance(op, Update):
        policies = (*op.insert, *op.replace)
    return [p.action for p in policies]


def shares_of(sim: Sim) -> tuple[tuple[int, int], ...]:
    return sim.state.classes["video"].balance


def balancing(**kwargs: Any) -> Sim:
    shares = [{"link": "wlan", "weight": 3}, {"link": 2, "weight": 1}]
    return Sim(
        config(
            profile(ports=(5001, 5002), steering="load-balancing", shares=shares, **kwargs),
            settings={"dwell_s": 10},
        )
    )


def test_load_balancing_balances_every_flow_over_the_eligible_links_by_weight() -> None:
    sim = balancing()
    result = sim.start(0.0, LINKS)
    balance = Balance(
        shares=(Share(bid=1, weight=3), Share(bid=2, weight=1), Share(bid=3, weight=1))
    )
    assert [(m.node, m.schema_version()) for m in result.messages] == [(HA_NODE, 2), (MR_NODE, 2)]
    for message in result.messages:
        assert actions(message) == [balance, balance]
    entry = result.decision.explanation.for_class("video")
    assert entry.reason is Reason.INITIAL
    assert entry.chosen_shares == ((1, 3), (2, 1), (3, 1))
    assert entry.chosen_bid == 1  # the heaviest share
    assert "balanced over BID 1:3, BID 2:1, BID 3:1" in render(result.decision.explanation)


def test_load_balancing_drops_an_ineligible_link_at_once_and_takes_it_back_after_the_dwell() -> (
    None
):
    sim = balancing(requirements={"max_delay_ms": 100})
    sim.start(0.0, LINKS)
    result = sim.metrics(1.0, 3, rtt_ms=150)
    assert shares_of(sim) == ((1, 3), (2, 1))
    assert (
        actions(result.messages[0])
        == [Balance(shares=(Share(bid=1, weight=3), Share(bid=2, weight=1)), fallbacks=(3,))] * 2
    )
    sim.metrics(2.0, 3, rtt_ms=50)
    assert shares_of(sim) == ((1, 3), (2, 1))  # waits out the dwell
    sim.tick(12.0)
    assert shares_of(sim) == ((1, 3), (2, 1), (3, 1))


def test_load_balancing_over_one_link_is_a_version_1_forward() -> None:
    sim = balancing()
    result = sim.start(0.0, {1: {}})
    assert [m.schema_version() for m in result.messages] == [1, 1]
    assert actions(result.messages[0]) == [Forward(bid=1)] * 2
    assert shares_of(sim) == ()


@pytest.mark.parametrize(
    ("weights", "buckets"),
    [
        ({1: 3.0, 2: 1.0, 3: 1.0}, ((1, 3), (2, 1), (3, 1))),
        ({1: 0.7, 2: 0.3}, ((1, 7), (2, 3))),
        ({2: 1.0, 1: 1 / 3}, ((1, 1), (2, 3))),
        ({1: 1.0, 2: 0.001}, ((1, 100), (2, 1))),
        ({1: 1.0}, ((1, 1),)),
    ],
)
def test_bucket_weights(weights: dict[int, float], buckets: tuple[tuple[int, int], ...]) -> None:
    assert bucket_weights(weights) == buckets


def redundant(paths: int | None = None, **settings: Any) -> Sim:
    extra: dict[str, Any] = {} if paths is None else {"paths": paths}
    return Sim(
        config(
            profile(ports=(5001, 5002), steering="redundant", **extra),
            settings={"dwell_s": 10, **settings},
        )
    )


def test_redundant_duplicates_on_the_best_two_links_the_original_on_the_best() -> None:
    sim = redundant()
    result = sim.start(0.0, LINKS)
    duplicate = Duplicate(paths=(2, 1), fallbacks=(3,))
    for message in result.messages:
        assert message.schema_version() == 2
        assert actions(message) == [duplicate, duplicate]
    assert sim.enforced(5001) == (2, 2)  # the original's BID, at both ends
    text = render(result.decision.explanation)
    assert "default path -> BID 2 copied to BID 1 (initial)" in text


@pytest.mark.parametrize("paths", [3, 4])
def test_redundant_path_count_is_configurable(paths: int) -> None:
    sim = redundant(paths)
    sim.start(0.0, {**LINKS, 4: {"rtt_ms": 60}})
    expected = (2, 1, 4, 3)[:paths]
    assert sim.state.classes["video"].copies == expected[1:]
    assert actions(sim.sent[0])[0] == Duplicate(
        paths=expected, fallbacks=tuple(b for b in (1, 2, 3, 4) if b not in expected)
    )


def test_redundant_keeps_its_copy_link_and_replaces_it_only_when_it_goes() -> None:
    sim = redundant()
    sim.start(0.0, {**LINKS, 3: {"rtt_ms": 25}})
    assert sim.state.classes["video"].copies == (3,)
    sim.metrics(1.0, 1, rtt_ms=5)  # BID 1 now ranks above the copy link: no rewrite
    assert sim.state.classes["video"].copies == (3,)
    sim.link(2.0, 3, up=False)
    assert sim.state.classes["video"].copies == (1,)
    assert actions(sim.sent[-1])[0] == Duplicate(paths=(2, 1), fallbacks=(3,))


def test_redundant_with_one_eligible_link_forwards() -> None:
    sim = redundant()
    sim.start(0.0, LINKS)
    sim.binding(1.0, 1, BindingEventKind.DEREGISTERED)
    sim.binding(1.0, 3, BindingEventKind.DEREGISTERED)
    assert sim.state.classes["video"].copies == ()
    assert actions(sim.sent[-1])[0] == Forward(bid=2, fallbacks=(1, 3))
    assert sim.sent[-1].schema_version() == 1


def test_redundant_primary_moves_by_the_margin_and_dwell_and_keeps_two_paths() -> None:
    sim = redundant(margin=0.0)
    sim.start(0.0, LINKS)
    sim.metrics(1.0, 2, rtt_ms=200, bitrate_bps=1e6)  # BID 1 now beats BID 2
    assert sim.state.classes["video"].flows == (2, 2)  # pending: dwell
    result = sim.tick(11.1)
    assert result.decision.explanation.for_class("video").reason is Reason.DWELL_ELAPSED
    state = sim.state.classes["video"]
    assert state.flows == (1, 1)
    assert state.copies == (3,) or state.copies == (2,)
    assert len({*state.flows, *state.copies}) == 2


def test_smallest_delay_is_accepted_as_lowest_delay() -> None:
    cfg = load(
        NsaConfig,
        {
            "profiles": [
                {
                    "name": "voip",
                    "selectors": [udp(5060).model_dump()],
                    "steering": "smallest-delay",
                }
            ]
        },
    )
    assert cfg.profiles[0].steering is SteeringMode.LOWEST_DELAY
    sim = Sim(cfg)
    sim.start(0.0, {1: {"rtt_ms": 40}, 2: {"rtt_ms": 10, "cost_per_mb": 5.0}})
    assert sim.bid("voip") == 2


def test_active_standby_is_accepted_as_priority() -> None:
    cfg = load(
        NsaConfig,
        {
            "profiles": [
                {
                    "name": "video",
                    "selectors": [udp(443).model_dump()],
                    "steering": "active-standby",
                    "order": [2, 1],
                }
            ]
        },
    )
    assert cfg.profiles[0].steering is SteeringMode.PRIORITY
    sim = Sim(cfg)
    sim.start(0.0, {1: {"rtt_ms": 10}, 2: {"rtt_ms": 40}})
    assert sim.bid("video") == 2


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ({"paths": 3}, "profiles.0.paths", "only for redundant"),
        ({"steering": "redundant", "paths": 5}, "profiles.0.paths", "less than or equal to 4"),
        ({"steering": "redundant", "paths": 1}, "profiles.0.paths", "greater than or equal to 2"),
        ({"shares": [{"link": 1, "weight": 1}]}, "profiles.0", "load-balancing"),
        ({"protect": "when-at-risk"}, "profiles.0.protect", "needs a bound"),
        (
            {
                "protect": "when-at-risk",
                "steering": "load-balancing",
                "requirements": {"max_loss": 0.01},
            },
            "profiles.0.protect",
            "single-link steering",
        ),
        ({"protect": "sometimes"}, "profiles.0.protect", "when-at-risk"),
        ({"risk_fraction": 1.5}, "profiles.0.risk_fraction", "less than or equal to 1"),
        ({"protect_hold_s": -1}, "profiles.0.protect_hold_s", "greater than or equal to 0"),
        ({"steering": "fastest"}, "profiles.0.steering", "load-balancing"),
    ],
)
def test_refusals_name_the_dotted_field(extra: dict[str, Any], field: str, words: str) -> None:
    data = {"profiles": [{"name": "video", "selectors": [udp(5001).model_dump()], **extra}]}
    with pytest.raises(InvalidInput) as refused:
        load(NsaConfig, data)
    assert any(p.field == field and words in p.reason for p in refused.value.problems), (
        refused.value.problems
    )


def two_classes(scheme: Literal[1, 2]) -> Sim:
    return Sim(
        config(
            profile("video", ports=(5001,), steering="redundant"),
            profile("web", ports=(8080,), priority=2000),
            settings={"dwell_s": 10},
        ),
        scheme=scheme,
    )


@pytest.mark.parametrize("scheme", [1, 2])
def test_plan_uses_version_2_only_where_a_new_action_is_needed(scheme: Literal[1, 2]) -> None:
    sim = two_classes(scheme)
    first = sim.start(0.0, LINKS)
    assert [m.schema_version() for m in first.messages] == [2] * len(first.messages)
    # A change of the forward-only class alone: an Update that carries no duplicate is v1.
    sim.binding(1.0, 2, BindingEventKind.HANDOVER_STARTED)
    later = sim.binding(2.0, 2, BindingEventKind.REGISTERED)
    for message in sim.sent:
        assert policy_xml.parse(policy_xml.render(message)) == message
        namespace = f"urn:multinet:flow-policy:{message.schema_version()}"
        assert namespace.encode() in policy_xml.render(message)
    assert later.messages
    only_web = Sim(config(profile("web", ports=(8080,))), scheme=scheme)
    assert [m.schema_version() for m in only_web.start(0.0, LINKS).messages] == [1] * (3 - scheme)


@pytest.mark.parametrize("scheme", [1, 2])
def test_both_nodes_hold_the_same_actions_with_mirrored_selectors(scheme: Literal[1, 2]) -> None:
    sim = two_classes(scheme)
    sim.start(0.0, LINKS)
    ha, mr = sim.ha.state.policies, sim.mr.state.policies
    assert [p.action for p in ha] == [p.action for p in mr]
    assert [p.selector for p in ha] == [mirror_selector(p.selector) for p in mr]
    assert isinstance(ha[0].action, Duplicate)
    assert desired_policies(sim.config, sim.state, Direction.DOWNLINK) == ha
