"""The real HTTP server: silent clients are cut off, concurrent calls are all answered; the
gateway's presence on the bus says whether it serves."""

from __future__ import annotations

import queue
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import zeep
import zeep.helpers

from services import bus
from services.contracts.messages import Presence, decode
from services.contracts.settings import BrokerSettings
from services.contracts.topics import Topics
from services.soap_gateway.server import GatewayServer
from tests.soap_gateway.helpers import gateway_settings

pytestmark = pytest.mark.broker


@pytest.fixture
def gateway(broker: tuple[str, int], topic_root: str) -> Iterator[GatewayServer]:
    server = GatewayServer(
        gateway_settings(socket_timeout_s=1, threads=4),
        BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_silent_client_is_cut_off_after_the_socket_timeout(gateway: GatewayServer) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        started = time.monotonic()
        while sock.recv(4096):
            pass
        assert time.monotonic() - started < 5


def test_concurrent_calls_on_the_pool_are_all_answered(gateway: GatewayServer) -> None:
    client: Any = zeep.Client(f"http://127.0.0.1:{gateway.port}/?wsdl")  # type: ignore[no-untyped-call]

    def status(_: int) -> list[str]:
        rows = zeep.helpers.serialize_object(client.service.GetStatus(mobile_router="mr1"))  # type: ignore[no-untyped-call]
        return [row["node"] for row in rows]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(status, range(64)))
    assert answers == [["ha1", "mr1"]] * 64


def test_the_gateway_is_online_on_the_bus_while_it_serves(
    broker: tuple[str, int], topic_root: str
) -> None:
    settings = BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root)
    server = GatewayServer(gateway_settings(), settings)
    presences: queue.Queue[Presence] = queue.Queue()
    listener = bus.make_client(settings, f"presence-listener-{uuid.uuid4().hex[:8]}")

    def take(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        presences.put(decode(Presence, bytes(msg.payload)))

    listener.on_message = take
    bus.start(listener, settings)
    try:
        server.start()
        try:
            # Subscribed after the gateway said so: the presence is retained.
            listener.subscribe(Topics(topic_root).presence("soap-gateway", "soap-gateway"), 1)
            online = presences.get(timeout=10)
        finally:
            server.stop()
        offline = presences.get(timeout=10)
    finally:
        listener.disconnect()
        listener.loop_stop()
    assert (online.node, online.service, online.online) == ("soap-gateway", "soap-gateway", True)
    assert (offline.node, offline.service, offline.online) == (
        "soap-gateway",
        "soap-gateway",
        False,
    )
