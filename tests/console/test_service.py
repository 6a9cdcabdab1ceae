"""The console's bus handler without a broker: decode, feed, count, set aside what raised."""

from __future__ import annotations

import json
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from services.console.metrics import READ_KINDS
from services.console.service import _MODELS, ConsoleService, subscriptions
from services.contracts import policy_xml
from services.contracts.messages import encode
from services.contracts.policy import Install
from services.contracts.settings import BrokerSettings
from services.contracts.topics import TopicKind, Topics
from tests.console import messages as m
from tests.console.snapshot import snapshot
from tests.console.webapp import settings

T = Topics()


def message(topic: str, payload: bytes) -> mqtt.MQTTMessage:
    msg = mqtt.MQTTMessage(topic=topic.encode())
    msg.payload = payload
    return msg


def count(service: ConsoleService, name: str, labels: dict[str, str]) -> float:
    value = service.metrics.registry.get_sample_value(name, labels)
    assert value is not None
    return value


@pytest.fixture
def service() -> ConsoleService:
    return ConsoleService(settings(), BrokerSettings())


def test_it_subscribes_to_what_it_shows_and_nothing_else() -> None:
    filters = sorted(s.topic for s in subscriptions(T))
    assert filters == sorted(
        [
            "multinet/v1/node/+/link/+/+",
            "multinet/v1/node/+/metrics",
            "multinet/v1/mr/+/binding/+",
            "multinet/v1/mr/+/decision",
            "multinet/v1/node/+/status",
            "multinet/v1/node/+/policy",
            "multinet/v1/node/+/presence/+",
            "multinet/v1/node/+/dead-letter/+",
            "multinet/v1/mr/+/audit",
        ]
    )


def test_each_kind_is_decoded_and_fed(service: ConsoleService) -> None:
    _, state = m.state("mr1", "wlan0", 1, up=False)
    _, document = m.document("ha1", "mr1", 1, Install(policies=(m.policy("video.0", 1),)))
    _, status = m.status("ha1", "mr1", 1)
    service._on_message(
        service.bus.client, None, message(T.link_state("mr1", "wlan0"), encode(state))
    )
    service._on_message(
        service.bus.client, None, message(T.policy("ha1"), policy_xml.render(document))
    )
    service._on_message(service.bus.client, None, message(T.status("ha1"), encode(status)))
    view = service.picture.state.router_view("mr1")
    assert view is not None
    assert view["links"][0]["up"] is False
    assert view["enforcement"]["downlink"]["known"] is True
    for kind in ("link-state", "policy", "status"):
        assert count(service, "multinet_console_messages_total", {"kind": kind}) == 1


def test_every_kind_it_reads_has_its_counters_from_the_start(service: ConsoleService) -> None:
    assert set(READ_KINDS) == {*_MODELS, TopicKind.POLICY}
    for kind in READ_KINDS:
        for name in ("multinet_console_messages_total", "multinet_console_messages_dropped_total"):
            assert count(service, name, {"kind": kind.value}) == 0, (name, kind)


def test_a_node_metrics_is_taken_as_its_links_reports_would_be() -> None:
    per_link = ConsoleService(settings(), BrokerSettings())
    batched = ConsoleService(settings(), BrokerSettings())
    per_link.picture.clock = batched.picture.clock = lambda: 100.0
    wlan = m.metrics("mr1", "wlan0", 1, rtt_ms=12.5)
    lte = m.metrics("mr1", "lte0", 2, rtt_ms=48.0, budget=(10**6, 900_000))
    for _, report in (wlan, lte):
        topic = T.link_metrics("mr1", report.interface)
        per_link._on_message(per_link.bus.client, None, message(topic, encode(report)))
    _, batch = m.node_metrics("mr1", wlan, lte)
    batched._on_message(batched.bus.client, None, message(T.node_metrics("mr1"), encode(batch)))
    assert snapshot(batched.picture.state) == snapshot(per_link.picture.state)
    assert [link["interface"] for link in batched.picture.state.router_view("mr1")["links"]] == [  # type: ignore[index]
        "lte0",
        "wlan0",
    ]
    # One bus message, counted under its own kind.
    assert count(batched, "multinet_console_messages_total", {"kind": "node-metrics"}) == 1
    assert count(batched, "multinet_console_messages_total", {"kind": "link-metrics"}) == 0
    assert count(per_link, "multinet_console_messages_total", {"kind": "link-metrics"}) == 2


def _invalid_node_metrics() -> dict[str, Any]:
    """NodeMetrics payloads pydantic refuses, each with a valid first entry that must not be
    applied either."""
    _, batch = m.node_metrics("mr1", m.metrics("mr1", "wlan0", 1), m.metrics("mr1", "lte0", 2))
    valid = json.loads(encode(batch))
    wlan, lte = valid["links"]
    loss = {**lte, "loss": 2.0}
    return {
        "an entry of another sender": {**valid, "links": [wlan, {**lte, "sender": "mr2"}]},
        "a duplicate interface": {**valid, "links": [wlan, {**lte, "interface": "wlan0"}]},
        "an entry out of range": {**valid, "links": [wlan, loss]},
        "an interface no topic can name": {**valid, "links": [wlan, {**lte, "interface": "a/b"}]},
        "no entry": {**valid, "links": []},
        "too many entries": {
            **valid,
            "links": [{**wlan, "interface": f"if{i}"} for i in range(17)],
        },
        "a link report, not a node's": wlan,
        "not json": b"{not json",
    }


@pytest.mark.parametrize("case", sorted(_invalid_node_metrics()))
def test_an_invalid_node_metrics_changes_nothing_and_counts_as_an_invalid_link_report(
    service: ConsoleService, case: str
) -> None:
    payload = _invalid_node_metrics()[case]
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    handle = service._on_message
    handle(service.bus.client, None, message(T.node_metrics("mr1"), raw))
    assert service.picture.state.routers == {}
    assert service.picture.state.dropped == 0  # refused before the picture, as a bad report is
    assert count(service, "multinet_console_messages_dropped_total", {"kind": "node-metrics"}) == 1
    assert count(service, "multinet_console_messages_total", {"kind": "node-metrics"}) == 0
    assert service.bus.dead_letters.sent == 0
    # The same count an invalid link report makes on its own kind.
    _, report = m.metrics("mr1", "wlan0", 1)
    bad = {**json.loads(encode(report)), "loss": 2.0}
    handle(
        service.bus.client, None, message(T.link_metrics("mr1", "wlan0"), json.dumps(bad).encode())
    )
    assert count(service, "multinet_console_messages_dropped_total", {"kind": "link-metrics"}) == 1
    assert service.picture.state.routers == {}


def test_what_does_not_decode_or_fit_is_dropped_and_counted(service: ConsoleService) -> None:
    _, state = m.state("mr1", "wlan0", 1, up=True)
    handle = service._on_message
    handle(service.bus.client, None, message(T.link_state("mr1", "wlan0"), b"{not json"))
    handle(service.bus.client, None, message(T.policy("ha1"), b"<policy/>"))
    # A state naming another interface than its topic.
    handle(service.bus.client, None, message(T.link_state("mr1", "eth9"), encode(state)))
    handle(service.bus.client, None, message(T.link_state("mr1", "wlan0"), b""))  # retained cleared
    handle(service.bus.client, None, message("elsewhere/x", b"{}"))
    assert count(service, "multinet_console_messages_dropped_total", {"kind": "link-state"}) == 2
    assert count(service, "multinet_console_messages_dropped_total", {"kind": "policy"}) == 1
    assert service.picture.state.routers == {}


def test_a_message_whose_handling_raises_becomes_a_dead_letter(
    service: ConsoleService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(topic: object, message: object) -> bool:
        raise RuntimeError("a bug")

    monkeypatch.setattr(service.picture, "feed", boom)
    _, state = m.state("mr1", "wlan0", 1, up=True)
    service._on_message(
        service.bus.client, None, message(T.link_state("mr1", "wlan0"), encode(state))
    )
    assert count(service, "multinet_dead_letters_total", {"input": "link-state"}) == 1
    assert service.bus.dead_letters.sent == 1
    # A node's metrics likewise, under their own kind.
    _, batch = m.node_metrics("mr1", m.metrics("mr1", "wlan0", 1), m.metrics("mr1", "lte0", 2))
    service._on_message(service.bus.client, None, message(T.node_metrics("mr1"), encode(batch)))
    assert count(service, "multinet_dead_letters_total", {"input": "node-metrics"}) == 1
    assert service.bus.dead_letters.sent == 2
