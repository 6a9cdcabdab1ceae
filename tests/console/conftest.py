"""A console running for real: its bus connection on the test broker, uvicorn on a free port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from services.console.service import ConsoleService
from services.contracts.messages import Envelope, encode
from services.contracts.settings import BrokerSettings
from services.contracts.topics import Topics
from tests.console.webapp import settings


@dataclass
class LiveConsole:
    """A running console and a publisher on its topic root."""

    service: ConsoleService
    url: str
    topics: Topics
    publisher: mqtt.Client

    def publish(self, topic: str, message: Envelope | bytes, *, retain: bool = False) -> None:
        payload = message if isinstance(message, bytes) else encode(message)
        info = self.publisher.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5)


@pytest.fixture
def live_console(broker: tuple[str, int], topic_root: str) -> Iterator[LiveConsole]:
    host, port = broker
    broker_settings = BrokerSettings(
        host=host, port=port, topic_root=topic_root, session_expiry_s=0
    )
    config = settings(listen="127.0.0.1:0", stream_max_s=30.0, fleet_interval_s=0.2)
    service = ConsoleService(config, broker_settings)
    ready = threading.Event()
    thread = threading.Thread(target=service.run, kwargs={"ready": ready}, daemon=True)
    thread.start()
    assert ready.wait(15), "the console did not start"
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    publisher.connect(host, port)
    publisher.loop_start()
    try:
        yield LiveConsole(
            service, f"http://127.0.0.1:{service.port}", Topics(topic_root), publisher
        )
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        service.stop()
        thread.join(10)
        assert not thread.is_alive(), "the console did not stop"
