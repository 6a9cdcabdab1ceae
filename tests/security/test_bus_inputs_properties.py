"""Thousands of generated JSON payloads of every bus input, through the services' real handling
code, in process: the NSA's engine (metrics, link state, binding events, preferences, operator
rules, statuses, presences) and the gateway's status and presence intake.

Every payload is answered (applied, or refused and logged) and nothing escapes: not even the
services' dead-letter nets are needed. After the damaged inputs the engine still decides on
the next valid one.
"""

from __future__ import annotations

from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.contracts.messages import LinkState
from services.contracts.settings import BrokerSettings
from services.contracts.topics import Topics
from services.soap_gateway.buslink import BusLink
from services.soap_gateway.metrics import GatewayMetrics
from services.soap_gateway.tracker import Tracker
from tests.nsa.enginebed import TOPICS, Bed, make_bed
from tests.nsa.factories import HA_NODE, MR, MR_NODE
from tests.security.strategies import INPUT_KINDS, bus_payloads

SETTINGS = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Where each input kind arrives for the bed's router (mr1: HA ha1, MR node mr1-prem).
NSA_TOPICS = {
    "metrics": TOPICS.link_metrics(MR_NODE, "if1"),
    "node-metrics": TOPICS.node_metrics(MR_NODE),
    "link-state": TOPICS.link_state(MR_NODE, "if1"),
    "binding-event": TOPICS.binding_event(MR, 1),
    "status": TOPICS.status(HA_NODE),
    "presence": TOPICS.presence(HA_NODE, "prem"),
    "preferences": TOPICS.preferences(MR),
    "operator-rules": TOPICS.operator_rules(),
}


def _started() -> Bed:
    bed = make_bed()
    bed.start({1: {}, 2: {}})
    return bed


def _still_decides(bed: Bed) -> None:
    """A valid link-state change is decided on (whatever the damaged inputs set up)."""
    decisions = bed.engine.stats.decisions
    bed.now += 10
    state = LinkState(
        sender=MR_NODE, interface="if1", bid=1, up=False, carrier=False, timestamp=bed.now
    )
    bed.feed(TOPICS.link_state(MR_NODE, "if1"), state)
    assert bed.engine.stats.decisions > decisions


@st.composite
def nsa_inputs(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    kinds = draw(st.lists(st.sampled_from(INPUT_KINDS), min_size=1, max_size=4))
    payloads = [
        bus_payloads(kind, sender=MR_NODE, node=HA_NODE, mobile_router=MR) for kind in kinds
    ]
    return [(NSA_TOPICS[kind], draw(p)) for kind, p in zip(kinds, payloads, strict=True)]


@SETTINGS
@given(nsa_inputs())
def test_every_nsa_input_is_answered_and_the_engine_goes_on(
    inputs: list[tuple[str, bytes]],
) -> None:
    bed = _started()
    for topic, payload in inputs:
        raw = bed.routes.route(topic, payload)
        assert raw is not None
        bed.engine.accept(raw, bed.now)
        bed.settle()
    bed.at(bed.now + 30)  # timers: dwell, retries, refreshes
    _still_decides(bed)


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_deeply_nested_json_is_refused(kind: str) -> None:
    bed = _started()
    refused = bed.engine.stats.refused
    for depth in (1000, 100_000):
        payload = ("[" * depth + "]" * depth).encode()
        raw = bed.routes.route(NSA_TOPICS[kind], payload)
        assert raw is not None
        bed.engine.accept(raw, bed.now)
    assert bed.engine.stats.refused == refused + 2
    _still_decides(bed)


# --- the gateway's intake --------------------------------------------------------------------

GATEWAY_TOPICS = Topics("test/multinet/v1")


@pytest.fixture(scope="module")
def gateway_link() -> Iterator[BusLink]:
    """The gateway's bus link for ha1 and mr1 (never connected: its handler is called as
    paho's thread would call it)."""
    broker = BrokerSettings(topic_root=GATEWAY_TOPICS.root)
    link = BusLink(broker, "gw", ("ha1", "mr1"), Tracker(), metrics=GatewayMetrics("gw"))
    yield link
    link.client.loop_stop()


@st.composite
def gateway_inputs(draw: st.DrawFn) -> tuple[str, bytes]:
    node = draw(st.sampled_from(["ha1", "mr1"]))
    if draw(st.booleans()):
        return GATEWAY_TOPICS.status(node), draw(bus_payloads("status", node=node))
    return GATEWAY_TOPICS.presence(node, "prem"), draw(bus_payloads("presence", node=node))


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(gateway_inputs())
def test_every_status_and_presence_reaching_the_gateway_is_taken_or_ignored(
    gateway_link: BusLink, received: tuple[str, bytes]
) -> None:
    topic, payload = received
    message = mqtt.MQTTMessage(topic=topic.encode())
    message.payload = payload
    gateway_link._on_message(gateway_link.client, None, message)
    assert gateway_link.dead_letters.sent == 0
    # What the tracker now holds still answers a GetStatus.
    for node in ("ha1", "mr1"):
        assert gateway_link.tracker.view(node) is not None
