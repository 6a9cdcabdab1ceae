"""The shipped broker security (deploy/mosquitto): who may connect, write and read what.

Each test runs its own mosquitto with the shipped configuration and ACL (only port and paths
rewritten) and the users made by the shipped helper, and checks the rules with real MQTT 5
clients. Observed on Debian 12's mosquitto 2.0.11, and asserted as such:

- a refused CONNECT gets CONNACK 0x87 "Not authorized" (bad password, unknown user, anonymous);
- a denied QoS 1 PUBLISH gets PUBACK 0x87 and reaches nobody; a denied QoS 0 one is dropped
  silently and the connection stays;
- a SUBSCRIBE is granted whatever the ACL says (SUBACK "Granted QoS 1", even for `#` or
  `$SYS/#`); the ACL is applied to each message at delivery, so a forbidden topic is simply
  never delivered;
- a will is not checked at CONNECT: a forbidden will is dropped when it would be published.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from services.contracts.messages import Presence
from services.contracts.topics import Topics
from tests.certs import self_signed
from tests.deploy.conftest import SecuredBroker
from tests.deploy.probe import NOT_AUTHORIZED, Probe, Received, pump_all

pytestmark = pytest.mark.broker

T = Topics()  # the shipped ACL is written for the default root, multinet/v1


GRANTED_QOS_1 = 0x01

#: (user, topic, may write). Every row is one real QoS 1 PUBLISH and its PUBACK.
WRITES: list[tuple[str, str, bool]] = [
    # A node writes its own status, presence, link metrics and state, and (an MR) its own
    # binding events; nothing of another node, and never a policy, even its own.
    ("mr1", T.status("mr1"), True),
    ("mr1", T.presence("mr1", "prem"), True),
    ("mr1", T.presence("mr1", "monitor"), True),
    ("mr1", T.link_metrics("mr1", "eth0"), True),
    ("mr1", T.node_metrics("mr1"), True),
    ("mr1", T.link_state("mr1", "eth1"), True),
    ("mr1", T.binding_event("mr1", 1), True),
    ("mr1", T.status("ha1"), False),
    ("mr1", T.presence("ha1", "prem"), False),
    ("mr1", T.link_metrics("ha1", "eth0"), False),
    ("mr1", T.node_metrics("ha1"), False),
    ("mr1", T.link_state("ha1", "eth0"), False),
    ("mr1", T.binding_event("mr2", 1), False),
    ("mr1", T.policy("mr1"), False),
    ("mr1", T.policy("ha1"), False),
    ("mr1", T.preferences("mr1"), False),
    ("mr1", T.operator_rules(), False),
    ("ha1", T.status("ha1"), True),
    ("ha1", T.presence("ha1", "prem"), True),
    ("ha1", T.status("mr1"), False),
    ("ha1", T.policy("ha1"), False),
    # Scheme 2: the HA's worker forwards the mirrored uplink set to its own MR, and only there.
    ("ha1", T.policy("mr1"), True),
    ("ha1", T.policy("mr2"), False),
    ("ha1", T.binding_event("mr1", 1), False),
    # mobility_events on the HA: any MR's binding events and its own presence on the HA (its
    # will), not that of the HA's other services.
    ("mobility-ha", T.binding_event("mr1", 1), True),
    ("mobility-ha", T.binding_event("mr2", 7), True),
    ("mobility-ha", T.presence("ha1", "mobility-events"), True),
    ("mobility-ha", T.presence("ha1", "mcoa-ha"), True),
    ("mobility-ha", T.presence("ha1", "prem"), False),
    ("mobility-ha", T.presence("mr1", "mobility-events"), False),
    ("mobility-ha", T.status("ha1"), False),
    ("mobility-ha", T.policy("mr1"), False),
    # Only the NSA and the gateway publish policies; they publish nothing else.
    ("nsa", T.policy("mr1"), True),
    ("nsa", T.policy("ha1"), True),
    ("nsa", T.status("mr1"), False),
    ("nsa", T.link_metrics("mr1", "eth0"), False),
    ("nsa", T.preferences("mr1"), False),
    # The NSA's decisions and explanations (retained) are its own; nobody else writes them.
    ("nsa", T.decision("mr1"), True),
    # Its presence (and will) as service `nsa` of the node named after the replica; no other
    # service's presence.
    ("nsa", T.presence("nsa-1", "nsa"), True),
    ("nsa", T.presence("nsa-1", "prem"), False),
    ("nsa", T.presence("ha1", "monitor"), False),
    ("mr1", T.decision("mr1"), False),
    ("operator", T.decision("mr1"), False),
    ("soap-gateway", T.policy("ha1"), True),
    ("soap-gateway", T.policy("mr1"), True),
    ("soap-gateway", T.status("ha1"), False),
    ("soap-gateway", T.binding_event("mr1", 1), False),
    # Its presence (and will) as service `soap-gateway` of the node named after it (its `name`);
    # no worker's presence.
    ("soap-gateway", T.presence("soap-gateway", "soap-gateway"), True),
    ("soap-gateway", T.presence("ha1", "prem"), False),
    # Dead letters: each service writes its own node's, nobody another's; the operator
    # reads them.
    ("ha1", T.dead_letter("ha1", "prem"), True),
    ("mr1", T.dead_letter("mr1", "monitor"), True),
    ("mr1", T.dead_letter("ha1", "prem"), False),
    ("mobility-ha", T.dead_letter("ha1", "mobility-events"), True),
    ("mobility-ha", T.dead_letter("ha1", "mcoa-ha"), True),
    ("mobility-ha", T.dead_letter("ha1", "prem"), False),
    ("nsa", T.dead_letter("nsa-1", "nsa"), True),
    ("nsa", T.dead_letter("nsa-1", "prem"), False),
    ("soap-gateway", T.dead_letter("soap-gateway", "soap-gateway"), True),
    ("soap-gateway", T.dead_letter("ha1", "prem"), False),
    ("operator", T.dead_letter("ha1", "prem"), False),
    # The operator writes preferences and rules, nothing that reaches a worker.
    ("operator", T.preferences("mr1"), True),
    ("operator", T.operator_rules(), True),
    ("operator", T.policy("mr1"), False),
    ("operator", T.status("mr1"), False),
    # The console reads; it writes only its own presence and dead letters, and pin requests.
    ("console", T.pin("mr1"), True),
    ("console", T.audit("mr1"), False),
    ("console", T.presence("console", "console"), True),
    ("console", T.dead_letter("console", "console"), True),
    ("console", T.presence("ha1", "prem"), False),
    ("console", T.policy("mr1"), False),
    ("console", T.status("mr1"), False),
    ("console", T.decision("mr1"), False),
    ("console", T.link_state("mr1", "eth0"), False),
    ("console", T.preferences("mr1"), False),
    ("console", T.operator_rules(), False),
    ("console", T.binding_event("mr1", 1), False),
    ("console", T.link_metrics("mr1", "eth0"), False),
    ("console", T.presence("nsa-1", "nsa"), False),
    ("console", T.dead_letter("ha1", "prem"), False),
    # Pin requests come from the console only; their audit from the NSA only.
    ("nsa", T.audit("mr1"), True),
    ("nsa", T.pin("mr1"), False),
    ("operator", T.pin("mr1"), False),
    ("operator", T.audit("mr1"), False),
    ("mr1", T.pin("mr1"), False),
    ("mr1", T.audit("mr1"), False),
]


def _write_id(row: tuple[str, str, bool]) -> str:
    user, topic, allowed = row
    return f"{user}-{'may' if allowed else 'may-not'}-write-{topic.removeprefix(T.root + '/')}"


@pytest.mark.parametrize("row", WRITES, ids=_write_id)
def test_write_permissions(secured_broker: SecuredBroker, row: tuple[str, str, bool]) -> None:
    user, topic, allowed = row
    code = secured_broker.connect(user).publish(topic, b"x")
    if allowed:
        assert not code.is_failure, f"{user} should write {topic}: {code}"
    else:
        assert code.value == NOT_AUTHORIZED, f"{user} must not write {topic}: {code}"


#: One message on every kind of topic, each by a user allowed to write it, in this order.
PUBLICATIONS: list[tuple[str, str]] = [
    ("nsa", T.policy("ha1")),
    ("soap-gateway", T.policy("mr1")),
    ("ha1", T.status("ha1")),
    ("ha1", T.presence("ha1", "prem")),
    ("mr1", T.status("mr1")),
    ("mr1", T.presence("mr1", "prem")),
    ("mr1", T.presence("mr1", "monitor")),
    ("mr1", T.link_metrics("mr1", "eth0")),
    ("mr1", T.node_metrics("mr1")),
    ("mr1", T.link_state("mr1", "eth0")),
    ("mr1", T.binding_event("mr1", 1)),
    ("mobility-ha", T.binding_event("mr1", 2)),
    ("operator", T.preferences("mr1")),
    ("operator", T.operator_rules()),
    ("nsa", T.decision("mr1")),
    ("nsa", T.presence("nsa-1", "nsa")),
    ("ha1", T.dead_letter("ha1", "prem")),
    ("console", T.pin("mr1")),
    ("nsa", T.audit("mr1")),
]

#: The PREM workers' acknowledgements and presence: what the gateway reads.
_PREM_REPORTS = [
    T.status("ha1"),
    T.presence("ha1", "prem"),
    T.status("mr1"),
    T.presence("mr1", "prem"),
]

#: What each user, subscribed to everything (`multinet/v1/#`), may receive of PUBLICATIONS.
READS: dict[str, list[str]] = {
    "mr1": [T.policy("mr1")],
    "ha1": [T.policy("ha1")],
    "nsa": [
        *_PREM_REPORTS,
        T.presence("mr1", "monitor"),
        T.link_metrics("mr1", "eth0"),
        T.node_metrics("mr1"),
        T.link_state("mr1", "eth0"),
        T.binding_event("mr1", 1),
        T.binding_event("mr1", 2),
        T.preferences("mr1"),
        T.operator_rules(),
        T.presence("nsa-1", "nsa"),
        T.pin("mr1"),
    ],
    "soap-gateway": _PREM_REPORTS,
    "operator": [
        T.preferences("mr1"),
        T.operator_rules(),
        T.decision("mr1"),
        T.dead_letter("ha1", "prem"),
        T.audit("mr1"),
    ],
    "mobility-ha": [],
    # Everything it shows; not the preferences and rules (the NSA's inputs, not its state).
    "console": [
        *_PREM_REPORTS,
        T.policy("ha1"),
        T.policy("mr1"),
        T.presence("mr1", "monitor"),
        T.link_metrics("mr1", "eth0"),
        T.node_metrics("mr1"),
        T.link_state("mr1", "eth0"),
        T.binding_event("mr1", 1),
        T.binding_event("mr1", 2),
        T.decision("mr1"),
        T.presence("nsa-1", "nsa"),
        T.dead_letter("ha1", "prem"),
        T.audit("mr1"),
    ],
}

#: A message each reader may receive, published last (see tests/deploy/probe.py on ordering).
#: mobility-ha reads nothing it needs; the `node/%u/policy` pattern lets it read
#: node/mobility-ha/policy, a topic no worker uses, which serves as its barrier here.
BARRIERS: dict[str, tuple[str, str]] = {
    "mr1": ("nsa", T.policy("mr1")),
    "ha1": ("nsa", T.policy("ha1")),
    "nsa": ("mr1", T.status("mr1")),
    "soap-gateway": ("mr1", T.status("mr1")),
    "operator": ("operator", T.operator_rules()),
    "mobility-ha": ("nsa", T.policy("mobility-ha")),
    "console": ("mr1", T.status("mr1")),
}


@pytest.mark.parametrize("reader", sorted(READS))
def test_read_permissions(secured_broker: SecuredBroker, reader: str) -> None:
    listener = secured_broker.connect(reader)
    assert listener.subscribe(f"{T.root}/#").value == GRANTED_QOS_1, "granted, filtered later"
    # One connection per user (each has only so many client ids); the reader writes through
    # its listening one, which receives what the reader may read, its own publications too.
    writers = {
        user: listener if user == reader else secured_broker.connect(user)
        for user in dict.fromkeys(user for user, _ in PUBLICATIONS)
    }
    for user, topic in PUBLICATIONS:
        assert not writers[user].publish(topic, b"x").is_failure, (user, topic)
    barrier_user, barrier_topic = BARRIERS[reader]
    barrier = writers.get(barrier_user) or secured_broker.connect(barrier_user)
    assert not barrier.publish(barrier_topic, b"barrier").is_failure
    received = listener.wait_for(b"barrier")
    assert sorted(m.topic for m in received if m.payload != b"barrier") == sorted(READS[reader])


def test_anonymous_client_is_refused_at_connect(secured_broker: SecuredBroker) -> None:
    assert secured_broker.probe(None).connect().value == NOT_AUTHORIZED


@pytest.mark.parametrize(
    ("user", "password"),
    [("mr1", "not-its-password"), ("mr1", ""), ("nobody", "whatever")],
    ids=["wrong-password", "empty-password", "unknown-user"],
)
def test_bad_credentials_are_refused_at_connect(
    secured_broker: SecuredBroker, user: str, password: str
) -> None:
    assert secured_broker.probe(user, password).connect().value == NOT_AUTHORIZED


def test_a_node_receives_its_own_policy_and_not_another_nodes(
    secured_broker: SecuredBroker, broker_version: str
) -> None:
    mr1 = secured_broker.connect("mr1")
    code = mr1.subscribe(T.policy("ha1"))
    # mosquitto 2.0.x grants the subscription and filters each message at delivery.
    assert code.value == GRANTED_QOS_1, f"mosquitto {broker_version}: SUBACK {code}"
    assert mr1.subscribe(T.policy("mr1")).value == GRANTED_QOS_1
    nsa = secured_broker.connect("nsa")
    assert not nsa.publish(T.policy("ha1"), b"for ha1").is_failure
    assert not nsa.publish(T.policy("mr1"), b"for mr1").is_failure
    assert mr1.wait_for(b"for mr1") == [Received(T.policy("mr1"), b"for mr1")]


@pytest.mark.parametrize("publisher", ["nsa", "soap-gateway"])
def test_nsa_and_gateway_deliver_policies_to_the_node(
    secured_broker: SecuredBroker, publisher: str
) -> None:
    ha1 = secured_broker.connect("ha1")
    ha1.subscribe(T.policy("ha1"))
    code = secured_broker.connect(publisher).publish(T.policy("ha1"), b"<policy/>")
    assert not code.is_failure
    assert ha1.wait_for(b"<policy/>") == [Received(T.policy("ha1"), b"<policy/>")]


def test_a_node_cannot_publish_on_another_nodes_status(secured_broker: SecuredBroker) -> None:
    gateway = secured_broker.connect("soap-gateway")
    gateway.subscribe(f"{T.root}/node/+/status")
    mr1 = secured_broker.connect("mr1")
    assert mr1.publish(T.status("ha1"), b"forged").value == NOT_AUTHORIZED
    assert not mr1.publish(T.status("mr1"), b"own").is_failure
    assert gateway.wait_for(b"own") == [Received(T.status("mr1"), b"own")]


@pytest.mark.parametrize(
    ("user", "node"),
    [("mr1", "mr1"), ("mr1", "ha1"), ("ha1", "ha1"), ("mobility-ha", "ha1"), ("operator", "mr1")],
)
def test_only_the_nsa_and_the_gateway_publish_policies(
    secured_broker: SecuredBroker, user: str, node: str
) -> None:
    worker = secured_broker.connect(node)
    worker.subscribe(T.policy(node))
    publisher = worker if user == node else secured_broker.connect(user)
    assert publisher.publish(T.policy(node), b"forged").value == NOT_AUTHORIZED
    assert not secured_broker.connect("nsa").publish(T.policy(node), b"real").is_failure
    assert worker.wait_for(b"real") == [Received(T.policy(node), b"real")]


def test_a_node_publishes_its_link_metrics_to_the_nsa(secured_broker: SecuredBroker) -> None:
    nsa = secured_broker.connect("nsa")
    nsa.subscribe(f"{T.root}/node/+/link/+/metrics")
    mr1 = secured_broker.connect("mr1")
    assert not mr1.publish(T.link_metrics("mr1", "eth0"), b"rtt").is_failure
    assert nsa.wait_for(b"rtt") == [Received(T.link_metrics("mr1", "eth0"), b"rtt")]


def test_a_denied_qos0_publish_is_dropped_and_the_connection_stays(
    secured_broker: SecuredBroker,
) -> None:
    gateway = secured_broker.connect("soap-gateway")
    gateway.subscribe(f"{T.root}/node/+/status")
    mr1 = secured_broker.connect("mr1")
    mr1.publish(T.status("ha1"), b"forged", qos=0)
    assert not mr1.publish(T.status("mr1"), b"own").is_failure, "still connected"
    assert gateway.wait_for(b"own") == [Received(T.status("mr1"), b"own")]


def test_a_will_on_another_nodes_presence_is_dropped(secured_broker: SecuredBroker) -> None:
    nsa = secured_broker.connect("nsa")
    nsa.subscribe(f"{T.root}/node/+/presence/+")
    topic = T.presence("ha1", "mobility-events")

    def dies_with_will(user: str) -> Probe:
        will = Presence(sender=user, node="ha1", service="mobility-events", online=False)
        probe = secured_broker.probe(user, will_topic=topic, will=will)
        assert not probe.connect().is_failure, f"{user}: the will is not checked at CONNECT"
        probe.disconnect_with_will()
        return probe

    dies_with_will("mr1")  # forged: mr1 may not speak for ha1
    dies_with_will("mobility-ha")  # the HA's mobility_events: its will is the HA's presence
    received = nsa.wait_for(b'"sender":"mobility-ha"')
    assert [m.topic for m in received] == [topic]
    assert b'"sender":"mr1"' not in received[0].payload


def test_nsa_replicas_share_the_metrics_and_the_acl_holds_for_shared_subscriptions(
    secured_broker: SecuredBroker,
) -> None:
    replicas = [secured_broker.connect("nsa") for _ in range(2)]
    for replica in replicas:
        code = replica.subscribe(f"$share/nsa/{T.root}/node/+/link/+/metrics")
        assert code.value == GRANTED_QOS_1
    mr1 = secured_broker.connect("mr1")
    sent = [f"m{i}".encode() for i in range(10)]
    for payload in sent:
        assert not mr1.publish(T.link_metrics("mr1", "eth0"), payload).is_failure
    pump_all(replicas, lambda: sum(len(r.messages) for r in replicas) >= len(sent))
    # Each metric reaches exactly one replica of the group.
    assert sorted(m.payload for r in replicas for m in r.messages) == sorted(sent)

    spy = secured_broker.connect("mr1")
    assert spy.subscribe(f"$share/spy/{T.policy('ha1')}").value == GRANTED_QOS_1
    spy.subscribe(T.policy("mr1"))
    nsa = replicas[0]
    assert not nsa.publish(T.policy("ha1"), b"for ha1").is_failure
    assert not nsa.publish(T.policy("mr1"), b"for mr1").is_failure
    assert spy.wait_for(b"for mr1") == [Received(T.policy("mr1"), b"for mr1")]


def test_the_shipped_tls_listener_applies_the_same_users_and_acl(
    make_secured_broker: Callable[..., SecuredBroker], tmp_path: Path
) -> None:
    broker: SecuredBroker = make_secured_broker(tls_certificate=self_signed(tmp_path, "broker"))
    # The services' own client settings: tls = true, ca_file, the TLS port.
    mr1 = broker.probe("mr1", tls=True)
    assert not mr1.connect().is_failure
    assert mr1.publish(T.status("ha1"), b"forged").value == NOT_AUTHORIZED
    assert not mr1.publish(T.status("mr1"), b"own").is_failure
    assert broker.probe(None, tls=True).connect().value == NOT_AUTHORIZED
    assert broker.probe("mr1", "wrong", tls=True).connect().value == NOT_AUTHORIZED
