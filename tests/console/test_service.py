"""The console's bus handler without a broker: decode, feed, count, set aside what raised."""

from __future__ import annotations

import paho.mqtt.client as mqtt
import pytest

from services.console.service import ConsoleService, subscriptions
from services.contracts import policy_xml
from services.contracts.messages import encode
from services.contracts.policy import Install
from services.contracts.settings import BrokerSettings
from services.contracts.topics import Topics
from tests.console import messages as m
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
