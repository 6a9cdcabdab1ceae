"""The shipped ACL lets each service publish its dead letters, on its own node only, and lets the
operator's tools read them all (a real mosquitto with the shipped configuration, real users)."""

from __future__ import annotations

import pytest

from services.contracts.topics import Topics
from tests.deploy.conftest import SecuredBroker
from tests.deploy.probe import NOT_AUTHORIZED

pytestmark = pytest.mark.broker

T = Topics()  # the shipped ACL is written for the default root

#: (user, topic, may write)
WRITES: list[tuple[str, str, bool]] = [
    ("ha1", T.dead_letter("ha1", "prem"), True),
    ("mr1", T.dead_letter("mr1", "prem"), True),
    ("mr1", T.dead_letter("mr1", "monitor"), True),
    ("mr1", T.dead_letter("mr1", "mobility-events"), True),
    ("ha1", T.dead_letter("mr1", "prem"), False),
    ("mr1", T.dead_letter("ha1", "monitor"), False),
    ("mobility-ha", T.dead_letter("ha1", "mobility-events"), True),
    ("mobility-ha", T.dead_letter("mr1", "mobility-events"), False),
    ("mobility-ha", T.dead_letter("ha1", "prem"), False),
    ("nsa", T.dead_letter("nsa-1", "nsa"), True),
    ("nsa", T.dead_letter("ha1", "prem"), False),
    ("soap-gateway", T.dead_letter("soap-gateway", "soap-gateway"), True),
    ("soap-gateway", T.dead_letter("ha1", "prem"), False),
    ("operator", T.dead_letter("ha1", "prem"), False),
]


def _id(row: tuple[str, str, bool]) -> str:
    user, topic, allowed = row
    return f"{user}-{'may' if allowed else 'may-not'}-write-{topic.removeprefix(T.root + '/')}"


@pytest.mark.parametrize("row", WRITES, ids=_id)
def test_dead_letter_write_permissions(
    secured_broker: SecuredBroker, row: tuple[str, str, bool]
) -> None:
    user, topic, allowed = row
    code = secured_broker.connect(user).publish(topic, b"x")
    if allowed:
        assert not code.is_failure, f"{user} should write {topic}: {code}"
    else:
        assert code.value == NOT_AUTHORIZED, f"{user} must not write {topic}: {code}"


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
