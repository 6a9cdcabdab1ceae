"""While the broker is away the NSA keeps deciding; its decision records (retained, one topic
per router) must neither pile up in memory nor be lost: only the latest per router is held,
and sent when the connection is back, so `nsa explain` shows the current reasoning at once.
"""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pytest

from services import bus
from services.contracts.settings import BrokerSettings
from services.contracts.topics import Topics
from services.nsa.buslink import BusIntake, connect
from services.nsa.core.routes import Routes
from services.nsa.core.settings import RouterEntry
from services.nsa.inbox import Inbox
from services.nsa.items import Item
from services.nsa.metrics import NsaCounts, NsaMetrics
from tests.faults.broker import OwnBroker
from tests.nsa.busbed import wait_until

pytestmark = [pytest.mark.broker]
ROUTERS = tuple(RouterEntry(id=f"mr{i}", ha_node=f"ha{i}", mr_node=f"mrn{i}") for i in range(3))


def _no_counts() -> NsaCounts:
    return NsaCounts(inputs={}, decisions=0, moves=0, deliveries={}, resyncs=0, inbox=0, dropped=0)


def _retained(settings: BrokerSettings, topics: list[str]) -> dict[str, bytes]:
    """What a new subscriber gets for `topics`: the broker's retained messages."""
    got: dict[str, bytes] = {}
    done = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        got[msg.topic] = bytes(msg.payload)
        if len(got) == len(topics):
            done.set()

    client = bus.make_client(settings, bus.client_id("reader", "t", settings.topic_root))
    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
    bus.start(client, settings)
    done.wait(10)
    client.disconnect()
    client.loop_stop()
    return got


def test_decisions_published_during_an_outage_are_held_one_per_router_and_sent_on_return(
    own_broker: OwnBroker, topic_root: str
) -> None:
    settings = BrokerSettings(host="127.0.0.1", port=own_broker.port, topic_root=topic_root)
    topics = Topics(topic_root)
    intake = BusIntake(Routes(topics, ROUTERS), Inbox[Item](100))
    link = connect(settings, "held", intake, NsaMetrics("held", _no_counts))
    link.start(None)
    try:
        wait_until(link.client.is_connected, "connected", 10)
        own_broker.stop()
        wait_until(lambda: not link.client.is_connected(), "the outage seen", 10)
        for n in range(2000):  # a busy NSA keeps deciding for its routers
            router = ROUTERS[n % len(ROUTERS)]
            link.publish_latest(topics.decision(router.id), f"decision {n}".encode())
        assert link.held == len(ROUTERS), "one held message per router, not one per decision"
        own_broker.start()
        wait_until(lambda: link.held == 0, "held decisions sent after the reconnect", 40)
        time.sleep(0.2)  # their PUBACKs
    finally:
        link.close()
    wanted = [topics.decision(r.id) for r in ROUTERS]
    got = _retained(settings, wanted)
    last = {ROUTERS[n % len(ROUTERS)].id: n for n in range(2000)}  # each router's last one
    assert got == {topics.decision(r.id): f"decision {last[r.id]}".encode() for r in ROUTERS}
