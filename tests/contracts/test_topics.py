"""Topic names: one root, segments checked, and no two services sharing a retained topic."""

from __future__ import annotations

import pytest

from services.contracts.topics import DEFAULT_ROOT, Topics


def test_every_topic_lives_under_the_root() -> None:
    topics = Topics("t/multinet/v1")
    names = [
        topics.policy("ha"),
        topics.status("ha"),
        topics.presence("ha", "prem"),
        topics.link_metrics("mr1", "eth0"),
        topics.link_state("mr1", "eth0"),
        topics.binding_event("mr1", 2),
        topics.preferences("mr1"),
        topics.operator_rules(),
        topics.decision("mr1"),
    ]
    assert all(name.startswith("t/multinet/v1/") for name in names)
    assert len(set(names)) == len(names)
    assert Topics().root == DEFAULT_ROOT


def test_services_of_one_node_have_their_own_retained_presence() -> None:
    topics = Topics()
    assert topics.presence("mr1", "prem") != topics.presence("mr1", "monitor")


@pytest.mark.parametrize("bad", ["", "a/b", "a+", "#", "x" * 65, "eth 0"])
def test_a_segment_that_would_change_the_topic_tree_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="cannot be a topic segment"):
        Topics().link_state("mr1", bad)


def test_the_decision_topic_is_per_mobile_router_beside_its_preferences() -> None:
    topics = Topics("t/multinet/v1")
    assert topics.decision("mr1") == "t/multinet/v1/mr/mr1/decision"
    assert topics.decision("mr1") != topics.decision("mr2")
    with pytest.raises(ValueError, match="mobile router"):
        topics.decision("mr/1")
