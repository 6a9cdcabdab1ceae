"""Priority-overflow steering: the class fills its preferred link up to the configured
capacity, new flows overflow to the next links of `order` (a version-2 priority action at
both nodes); the explanation says which link is preferred, its capacity and what overflows
where; load changes alone change nothing (the PREM meters saturation, not the NSA)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from services.contracts.errors import InvalidInput
from services.contracts.policy import Forward, Install, PolicyMessage, Priority, Tier, Update
from services.nsa.core import MrState, NsaConfig, load, render
from tests.nsa.factories import HA_NODE, MR_NODE, Sim, config, profile, udp

#: BID 1 wlan, 2 lte, 3 umts (tests.nsa.factories.TECH).
LINKS: dict[int, dict[str, Any]] = {1: {}, 2: {"rtt_ms": 30}, 3: {"rtt_ms": 50}}
CAPACITIES = [{"link": "wlan", "bps": 20e6}, {"link": 2, "bps": 5e6}]


def overflowing(capacities: list[dict[str, Any]] | None = None) -> Sim:
    return Sim(
        config(
            profile(
                ports=(5001, 5002),
                steering="priority-overflow",
                order=["wlan", "lte", 3],
                capacities=capacities or CAPACITIES,
            ),
            settings={"dwell_s": 10},
        )
    )


def actions(message: PolicyMessage) -> list[object]:
    op = message.operation
    policies = op.policies if isinstance(op, Install) else ()
    if isinstance(op, Update):
        policies = (*op.insert, *op.replace)
    return [p.action for p in policies]


def test_the_class_fills_its_preferred_link_and_overflows_in_order_at_both_nodes() -> None:
    sim = overflowing()
    result = sim.start(0.0, LINKS)
    expected = Priority(
        tiers=(Tier(bid=1, rate_bps=20_000_000), Tier(bid=2, rate_bps=5_000_000), Tier(bid=3))
    )
    assert [(m.node, m.schema_version()) for m in result.messages] == [(HA_NODE, 2), (MR_NODE, 2)]
    for message in result.messages:
        assert actions(message) == [expected, expected]
    assert sim.bid() == 1
    entry = result.decision.explanation.for_class("video")
    assert entry.chosen_tiers == ((1, 20_000_000), (2, 5_000_000), (3, None))
    assert entry.detail.startswith(
        "preferred BID 1 (wlan) up to 20 Mb/s; new flows above it overflow to BID 2 (lte) up "
        "to 5 Mb/s, then to BID 3 (umts)"
    )
    text = render(result.decision.explanation)
    assert "[priority-overflow, utility] default path -> BID 1 overflowing to BID 2, BID 3" in text
    # The state persists and reads back with its tiers (the NSA keeps it across restarts).
    assert MrState.model_validate_json(sim.state.model_dump_json()) == sim.state


def test_a_link_without_a_capacity_is_the_last_tier_the_others_fallbacks() -> None:
    sim = overflowing([{"link": "wlan", "bps": 8e5}])
    result = sim.start(0.0, LINKS)
    tiers = (Tier(bid=1, rate_bps=800_000), Tier(bid=2))
    assert actions(result.messages[0]) == [Priority(tiers=tiers, fallbacks=(3,))] * 2
    detail = result.decision.explanation.for_class("video").detail
    assert detail.startswith("preferred BID 1 (wlan) up to 800 kb/s; new flows above it ")


def test_the_preferred_link_going_down_shifts_the_tiers_and_load_changes_nothing() -> None:
    sim = overflowing()
    sim.start(0.0, LINKS)
    # Load on the preferred link (interface counters) is the PREM's to meter: no new decision.
    busy = sim.metrics(1.0, 1, rx_bps=19e6, tx_bps=25e6)
    assert busy.messages == ()
    down = sim.link(2.0, 1, False)
    assert sim.bid() == 2
    tiers = (Tier(bid=2, rate_bps=5_000_000), Tier(bid=3))
    assert actions(down.messages[0]) == [Priority(tiers=tiers, fallbacks=(1,))] * 2
    entry = down.decision.explanation.for_class("video")
    assert entry.detail.startswith(
        "preferred BID 2 (lte) up to 5 Mb/s; new flows above it overflow to BID 3 (umts)"
    )
    # Back up: BID 1 ranks first again, after the dwell (priority steering's stability rule).
    sim.link(3.0, 1, True)
    assert sim.bid() == 2
    back = sim.tick(13.5)
    assert sim.bid() == 1
    assert back.decision.explanation.for_class("video").chosen_tiers[0] == (1, 20_000_000)


def test_one_eligible_link_is_a_plain_forward_and_says_so() -> None:
    sim = overflowing()
    result = sim.start(0.0, {1: {}})
    assert [m.schema_version() for m in result.messages] == [1, 1]
    assert actions(result.messages[0]) == [Forward(bid=1)] * 2
    detail = result.decision.explanation.for_class("video").detail
    assert detail.startswith("preferred BID 1 (wlan) up to 20 Mb/s; no other eligible link")
    no_capacity = overflowing([{"link": "lte", "bps": 8e5}])
    found = no_capacity.start(0.0, LINKS).decision.explanation.for_class("video").detail
    assert found.startswith("preferred BID 1 (wlan) has no capacity in `capacities`")


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ({"steering": "priority-overflow", "order": [1, 2]}, "profiles.0", "needs `capacities`"),
        (
            {"steering": "priority-overflow", "capacities": [{"link": 1, "bps": 1e6}]},
            "profiles.0",
            "priority-overflow steering needs an `order`",
        ),
        ({"capacities": [{"link": 1, "bps": 1e6}]}, "profiles.0", "only for priority-overflow"),
        (
            {"steering": "priority-overflow", "order": [1], "capacities": [{"link": 1, "bps": 1}]},
            "profiles.0.capacities.0.bps",
            "greater than or equal to 8000",
        ),
        (
            {
                "steering": "priority-overflow",
                "order": [1],
                "capacities": [{"link": 1, "bps": 1e6}, {"link": 1, "bps": 2e6}],
            },
            "profiles.0",
            "a link appears twice in `capacities`",
        ),
        (
            {
                "steering": "priority-overflow",
                "order": [1],
                "capacities": [{"link": 1, "bps": 1e6}],
                "requirements": {"max_loss": 0.01},
                "protect": "when-at-risk",
            },
            "profiles.0.protect",
            "single-link steering",
        ),
    ],
)
def test_refusals_name_the_dotted_field(extra: dict[str, Any], field: str, words: str) -> None:
    data = {"profiles": [{"name": "video", "selectors": [udp(5001).model_dump()], **extra}]}
    with pytest.raises(InvalidInput) as refused:
        load(NsaConfig, data)
    assert any(p.field == field and words in p.reason for p in refused.value.problems), (
        refused.value.problems
    )


def test_the_readme_example_decides_as_it_says() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.DOTALL) if "overflow" in b]
    assert blocks, "README.md shows a priority-overflow profile"
    profiles = [p for p in tomllib.loads(blocks[0])["nsa"]["profiles"] if p["name"] == "bulk-sync"]
    sim = Sim(load(NsaConfig, {"profiles": profiles}))
    explanation = sim.start(0.0, LINKS).decision.explanation
    text = render(explanation).splitlines()[1]
    assert text == (
        "  class bulk-sync [priority-overflow, utility] default path -> BID 1 overflowing to "
        "BID 2, BID 3 (initial: preferred BID 1 (wlan) up to 20 Mb/s; new flows above it "
        "overflow to BID 2 (lte) up to 5 Mb/s, then to BID 3 (umts))"
    )
