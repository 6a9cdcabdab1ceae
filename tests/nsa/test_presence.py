"""An NSA replica announces itself like the other services, on the real broker: a retained
presence (`node/<replica name>/presence/nsa`) online while it runs, offline when it stops,
and offline by its last will when it dies without a word.
"""

from __future__ import annotations

import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from services import bus
from services.contracts.messages import Presence, decode
from services.contracts.settings import BrokerSettings
from services.contracts.topics import Topics
from services.nsa.service import NsaService
from services.nsa.settings import load_file
from tests.nsa.busbed import nsa_process, tail, wait_until, watched_nsa, write_settings

pytestmark = pytest.mark.broker
ROUTERS = [{"id": "mr1", "ha_node": "ha1", "mr_node": "mr1"}]


class PresenceWatch:
    """Every presence message on one topic, retained ones included, in arrival order."""

    def __init__(self, broker: BrokerSettings, topic: str) -> None:
        self.seen: list[Presence] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = bus.make_client(broker, f"test-presence-{uuid.uuid4().hex[:10]}")
        self.client.on_connect = lambda c, *_: c.subscribe(topic, 1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        bus.start(self.client, broker)
        assert subscribed.wait(10), "the presence watch could not subscribe"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.payload:
            with self._lock:
                self.seen.append(decode(Presence, bytes(msg.payload)))

    def last(self) -> Presence | None:
        with self._lock:
            return self.seen[-1] if self.seen else None

    def online(self) -> bool | None:
        last = self.last()
        return None if last is None else last.online

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker_settings(broker: tuple[str, int], topic_root: str) -> BrokerSettings:
    return BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root, session_expiry_s=0)


def _topic(broker: BrokerSettings) -> str:
    return Topics(broker.topic_root).presence("nsa-test", "nsa")


@pytest.fixture
def watch(broker_settings: BrokerSettings) -> Iterator[PresenceWatch]:
    watching = PresenceWatch(broker_settings, _topic(broker_settings))
    yield watching
    watching.close()


def test_online_while_running_offline_once_stopped(
    broker_settings: BrokerSettings, watch: PresenceWatch, tmp_path: Path
) -> None:
    config = write_settings(tmp_path / "nsa.yaml", broker_settings, ROUTERS)
    service = NsaService(config, load_file(config))
    service.start()
    try:
        wait_until(lambda: watch.online() is True, "the online presence")
        presence = watch.last()
        assert presence is not None
        assert (presence.node, presence.service, presence.sender) == ("nsa-test", "nsa", "nsa-test")
    finally:
        service.stop()
    wait_until(lambda: watch.online() is False, "the offline presence at stop")
    late = PresenceWatch(broker_settings, _topic(broker_settings))  # joins afterwards
    try:
        wait_until(lambda: late.online() is False, "the retained offline presence")
    finally:
        late.close()


def test_a_replica_killed_without_a_word_goes_offline_by_its_will(
    broker_settings: BrokerSettings, watch: PresenceWatch, tmp_path: Path
) -> None:
    config = write_settings(tmp_path / "nsa.yaml", broker_settings, ROUTERS)
    log = tmp_path / "nsa.log"
    with nsa_process(config, log) as proc:
        wait_until(
            lambda: watch.online() is True,
            "the online presence",
            30,
            watch=watched_nsa(proc, log),
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: watch.online() is False, f"the last will\n{tail(log)}")
    assert [p.online for p in watch.seen] == [True, False]
