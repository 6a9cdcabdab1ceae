"""The operator's tools read every service's dead letters, a node none (a real mosquitto with the
shipped configuration, real users; who may write them is in tests/deploy/test_broker_acl.py)."""

from __future__ import annotations

import pytest

from services.contracts.topics import Topics
from tests.deploy.conftest import SecuredBroker

pytestmark = pytest.mark.broker

T = Topics()  # the shipped ACL is written for the default root


def test_the_operator_reads_every_dead_letter_and_a_node_reads_none(
    secured_broker: SecuredBroker,
) -> None:
    operator = secured_broker.connect("operator")
    node = secured_broker.connect("mr1")
    for listener in (operator, node):
        assert not listener.subscribe(f"{T.root}/#").is_failure
    writers = {user: secured_broker.connect(user) for user in ("ha1", "nsa", "mr1")}
    letters = [
        ("ha1", T.dead_letter("ha1", "prem")),
        ("nsa", T.dead_letter("nsa-1", "nsa")),
        ("mr1", T.dead_letter("mr1", "monitor")),
    ]
    for user, topic in letters:
        assert not writers[user].publish(topic, b"letter").is_failure, (user, topic)
    # Barriers each listener may read, published last (delivery keeps one publisher's order).
    assert not secured_broker.connect("operator").publish(T.operator_rules(), b"end").is_failure
    assert not secured_broker.connect("nsa").publish(T.policy("mr1"), b"end").is_failure
    seen = operator.wait_for(b"end")
    assert sorted(m.topic for m in seen if m.payload == b"letter") == sorted(t for _, t in letters)
    assert [m.topic for m in node.wait_for(b"end") if m.payload == b"letter"] == []
