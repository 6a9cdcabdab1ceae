"""Topic filters and parsing for subscribers: every topic a builder makes parses back to what
built it, a filter matches exactly its topics, and nothing a broker can deliver makes `parse`
raise."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from services.contracts.topics import TopicKind, TopicName, Topics

T = Topics("t/multinet/v1")
_BUILT = [
    (T.policy("ha1"), TopicName(TopicKind.POLICY, "ha1")),
    (T.status("ha1"), TopicName(TopicKind.STATUS, "ha1")),
    (T.presence("ha1", "prem"), TopicName(TopicKind.PRESENCE, "ha1", "prem")),
    (T.dead_letter("ha1", "nsa"), TopicName(TopicKind.DEAD_LETTER, "ha1", "nsa")),
    (T.link_metrics("mr1", "eth0"), TopicName(TopicKind.LINK_METRICS, "mr1", "eth0")),
    (T.link_state("mr1", "eth0"), TopicName(TopicKind.LINK_STATE, "mr1", "eth0")),
    (T.node_metrics("mr1"), TopicName(TopicKind.NODE_METRICS, "mr1")),
    (T.binding_event("mr1", 2), TopicName(TopicKind.BINDING_EVENT, "mr1", "2")),
    (T.preferences("mr1"), TopicName(TopicKind.PREFERENCES, "mr1")),
    (T.operator_rules(), TopicName(TopicKind.OPERATOR_RULES)),
    (T.decision("mr1"), TopicName(TopicKind.DECISION, "mr1")),
    (T.pin("mr1"), TopicName(TopicKind.PIN, "mr1")),
    (T.audit("mr1"), TopicName(TopicKind.AUDIT, "mr1")),
]


@pytest.mark.parametrize(("topic", "name"), _BUILT, ids=[n.kind.value for _, n in _BUILT])
def test_every_built_topic_parses_back_to_what_built_it(topic: str, name: TopicName) -> None:
    assert T.parse(topic) == name


def test_every_kind_has_a_builder_covered_here() -> None:
    assert {name.kind for _, name in _BUILT} == set(TopicKind)


@pytest.mark.parametrize(
    "topic",
    [
        "other/root/node/ha1/policy",  # another root
        "t/multinet/v1",  # the root itself
        "t/multinet/v1/node/ha1/policy/extra",  # one segment too many
        "t/multinet/v1/node/ha1/unknown",  # an unknown kind
        "t/multinet/v1/node//policy",  # an empty name
        "t/multinet/v1/node/ha 1/policy",  # a name no builder makes
        "t/multinet/v1/mr/mr1/binding",  # a name missing
        "t/multinet/v1/operator/other",
    ],
)
def test_what_is_not_one_of_our_topics_parses_to_none(topic: str) -> None:
    assert T.parse(topic) is None


@pytest.mark.parametrize(
    ("topic_filter", "kinds"),
    [
        (T.binding_events(), {TopicKind.BINDING_EVENT}),
        (T.presences(), {TopicKind.PRESENCE}),
        (T.links(), {TopicKind.LINK_METRICS, TopicKind.LINK_STATE}),
        (T.nodes_metrics(), {TopicKind.NODE_METRICS}),
    ],
)
def test_a_filter_for_any_owner_matches_exactly_its_kinds(
    topic_filter: str, kinds: set[TopicKind]
) -> None:
    matched = {name.kind for topic, name in _BUILT if topic_matches_sub(topic_filter, topic)}
    assert matched == kinds


def test_a_filter_for_one_owner_matches_that_owner_only() -> None:
    assert topic_matches_sub(T.binding_events("mr1"), T.binding_event("mr1", 3))
    assert not topic_matches_sub(T.binding_events("mr1"), T.binding_event("mr2", 3))
    assert topic_matches_sub(T.presences("mr1"), T.presence("mr1", "monitor"))
    assert not topic_matches_sub(T.presences("mr1"), T.presence("mr2", "monitor"))
    assert topic_matches_sub(T.links("mr1"), T.link_state("mr1", "eth1"))
    assert not topic_matches_sub(T.links("mr1"), T.link_state("mr2", "eth1"))
    assert topic_matches_sub(T.nodes_metrics("mr1"), T.node_metrics("mr1"))
    assert not topic_matches_sub(T.nodes_metrics("mr1"), T.node_metrics("mr2"))
    with pytest.raises(ValueError, match="cannot be a topic segment"):
        T.links("mr/1")


@given(st.text(max_size=200))
def test_parse_never_raises(suffix: str) -> None:
    name = T.parse(f"{T.root}/{suffix}")
    assert name is None or isinstance(name.kind, TopicKind)
