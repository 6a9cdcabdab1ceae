"""The dead-letter nets of the services, each on the real broker: an input whose handling raises
is published on the service's dead-letter topic with its reason, counted, logged with the node,
and the service goes on with the next input.

Where no real input makes the handling raise any more (that is the point of the battery), the
failure is injected at a seam with a stub, and the test's name says so. The PREM worker's net
is proven live, with a real filesystem fault, in `test_prem_live.py`.
"""

from __future__ import annotations

import base64
import logging
import socket
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from services import bus
from services.contracts.messages import PolicyStatus, Presence, encode
from services.contracts.settings import BrokerSettings
from services.contracts.topics import Topics
from services.deadletter import HEAD_BYTES, DeadLetters
from services.mobility_events import capture as capture_module
from services.mobility_events.capture import MhCapture
from services.mobility_events.config import MobilityEventsSettings
from services.mobility_events.service import MobilityEventsService
from services.monitor import probe as probe_module
from services.monitor.probe import ProbeKind, ProbeTarget, UdpProber
from services.nsa.core.routes import InputKind, Raw
from services.nsa.service import NsaService
from services.nsa.settings import load_file
from services.soap_gateway.buslink import BusLink
from services.soap_gateway.metrics import GatewayMetrics
from services.soap_gateway.tracker import Tracker
from tests.nsa.busbed import wait_until, write_settings
from tests.security.live import LetterBox

pytestmark = pytest.mark.broker


@pytest.fixture
def broker_settings(broker: tuple[str, int], topic_root: str) -> BrokerSettings:
    return BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root)


@pytest.fixture
def letters(broker_settings: BrokerSettings) -> Iterator[LetterBox]:
    box = LetterBox(broker_settings)
    yield box
    box.close()


def _counter() -> tuple[Counter, CollectorRegistry]:
    registry = CollectorRegistry()
    return Counter("multinet_dead_letters", "", ["input"], registry=registry), registry


def _count(registry: CollectorRegistry, kind: str) -> float:
    return registry.get_sample_value("multinet_dead_letters_total", {"input": kind}) or 0.0


def test_a_dead_letter_carries_the_reason_and_the_head_of_the_payload(
    broker_settings: BrokerSettings, letters: LetterBox, caplog: pytest.LogCaptureFixture
) -> None:
    client = bus.make_client(broker_settings, "dead-letter-test")
    bus.start(client, broker_settings)
    counter, registry = _counter()
    office = DeadLetters(client, Topics(broker_settings.topic_root), "ha1", "prem", counter)
    payload = bytes(range(256)) * 20
    try:
        with caplog.at_level(logging.ERROR, logger="services.deadletter"):
            office.post(
                source="topic/with\nnewline",
                input_kind="policy",
                payload=payload,
                error=ValueError("bad\x1b[31m" + "x" * 5000),
            )
        letter = letters.next()
    finally:
        client.disconnect()
        client.loop_stop()
    assert (letter.node, letter.service, letter.input, letter.error) == (
        "ha1",
        "prem",
        "policy",
        "ValueError",
    )
    assert letter.source == "topic/with\\x0anewline"
    assert letter.reason.startswith("bad\\x1b[31mxxx")
    assert len(letter.reason) <= 500
    assert letter.payload_bytes == len(payload)
    assert base64.b64decode(letter.payload_head) == payload[:HEAD_BYTES]
    assert _count(registry, "policy") == 1
    [record] = [r for r in caplog.records if r.name == "services.deadletter"]
    assert "node ha1" in record.getMessage()
    assert "\n" not in record.getMessage()
    assert record.exc_info is not None


def test_an_nsa_input_whose_handling_raises_is_set_aside_and_the_replica_goes_on(
    broker_settings: BrokerSettings, letters: LetterBox, tmp_path: Path
) -> None:
    routers = [{"id": "mr1", "ha_node": "ha1", "mr_node": "mr1"}]
    config = write_settings(tmp_path / "nsa.yaml", broker_settings, routers)
    service = NsaService(config, load_file(config))
    service.start()
    try:
        # A message routed to a router this replica does not have: the engine's lookup fails
        # (a routing bug, not a refusal the engine foresaw). It arrives as any input does.
        topic = service.topics.link_state("mr9", "if1")
        service.inbox.put(Raw(InputKind.LINK_STATE, "mr9", topic, b"{}"))
        letter = letters.next()
        assert (letter.node, letter.service, letter.input) == ("nsa-test", "nsa", "link-state")
        assert (letter.source, letter.error) == (topic, "KeyError")
        registry = service.metrics.registry
        wait_until(lambda: _count(registry, "link-state") == 1, "the dead letter counted")
        # The decision thread lives on and takes the next input.
        taken = service.engine.stats.inputs["presence"]
        hello = Presence(sender="ha1", node="ha1", service="prem", online=True, version=0)
        service.inbox.put(Raw(InputKind.PRESENCE, "ha1", topic, encode(hello)))
        wait_until(lambda: service.engine.stats.inputs["presence"] == taken + 1, "the next input")
        assert service.running
    finally:
        service.stop()
    assert service.error is None


class _RaisingTracker(Tracker):
    """A tracker stub whose status intake fails (no real status makes the real one fail)."""

    def __init__(self) -> None:
        super().__init__()
        self.presences: list[Presence] = []

    def on_status(self, status: PolicyStatus) -> None:
        raise RuntimeError(f"tracker bug on version {status.version}")

    def on_presence(self, presence: Presence) -> None:
        self.presences.append(presence)


def test_a_status_the_gateway_fails_on_is_set_aside_with_a_tracker_stub_that_raises(
    broker_settings: BrokerSettings, letters: LetterBox
) -> None:
    tracker = _RaisingTracker()
    metrics = GatewayMetrics("gw-test")
    link = BusLink(broker_settings, "gw-test", ("ha1",), tracker, metrics=metrics)
    link.start()
    sender = bus.make_client(broker_settings, "gw-test-sender")
    bus.start(sender, broker_settings)
    try:
        wait_until(link.connected, "the gateway's connection")
        status = PolicyStatus(
            sender="ha1",
            node="ha1",
            mobile_router="mr1",
            direction="downlink",
            result="applied",
            version=4,
        )
        topics = link.topics
        for version in (4, 5):
            payload = encode(status.model_copy(update={"version": version}))
            sender.publish(topics.status("ha1"), payload, qos=1).wait_for_publish(5)
            letter = letters.next()
            assert (letter.node, letter.service, letter.input) == (
                "gw-test",
                "soap-gateway",
                "status",
            )
            assert letter.reason == f"tracker bug on version {version}"
        # paho's network thread survived both: the presence that follows is taken.
        hello = Presence(sender="ha1", node="ha1", service="prem", online=True, version=5)
        sender.publish(topics.presence("ha1", "prem"), encode(hello), qos=1).wait_for_publish(5)
        wait_until(lambda: tracker.presences == [hello], "the presence after the dead letters")
        assert _count(metrics.registry, "status") == 2
    finally:
        sender.disconnect()
        sender.loop_stop()
        link.close()


def test_a_packet_the_decoder_fails_on_is_set_aside_with_a_decoder_stub_that_raises(
    broker_settings: BrokerSettings, letters: LetterBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = MobilityEventsSettings.model_validate(
        {"node": "ha1", "mobile_routers": [{"id": "mr1", "prefixes": ["2001:db8:aaaa::/48"]}]}
    )
    service = MobilityEventsService(settings, broker_settings)
    bus.start(service.client, broker_settings)
    decoded: list[object] = []
    capture = MhCapture(lambda *args: decoded.append(args), on_undecodable=service._on_undecodable)

    def broken_decode(data: object) -> object:
        raise IndexError("decoder bug")

    try:
        monkeypatch.setattr(capture_module, "decode", broken_decode)
        packet = b"\x3b\x01\x05\x00\x00\x00" + bytes(10)
        capture._deliver(
            time.time(), IPv6Address("2001:db8::10"), IPv6Address("2001:db8::1"), packet
        )
        letter = letters.next()
        monkeypatch.undo()
        capture._deliver(
            time.time(), IPv6Address("2001:db8::10"), IPv6Address("2001:db8::1"), packet
        )
    finally:
        capture.stop()
        service.client.disconnect()
        service.client.loop_stop()
    assert (letter.service, letter.input, letter.error) == (
        "mobility-events",
        "mobility-header",
        "IndexError",
    )
    assert base64.b64decode(letter.payload_head) == packet
    assert capture.stats.undecodable == 1
    assert capture.stats.decoded + capture.stats.malformed == 1, "the next packet is handled"
    assert _count(service.metrics.registry, "mobility-header") == 1


def test_a_probe_reply_the_parser_fails_on_is_ignored_with_a_parser_stub_that_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    responder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    responder.bind(("127.0.0.1", 0))
    port = responder.getsockname()[1]
    target = ProbeTarget(ProbeKind.UDP, IPv4Address("127.0.0.1"), port=port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    failures: list[tuple[bytes, Exception]] = []
    prober = UdpProber(target, 1, sock, lambda data, error: failures.append((data, error)))

    def broken_parser(data: bytes) -> None:
        raise ValueError("parser bug")

    try:
        monkeypatch.setattr(probe_module, "decode_udp_probe", broken_parser)
        responder.sendto(b"reply", sock.getsockname())
        deadline = time.monotonic() + 5
        while not failures and time.monotonic() < deadline:
            assert prober.drain() == []
            time.sleep(0.01)
    finally:
        prober.close()
        responder.close()
    assert [(data, str(error)) for data, error in failures] == [(b"reply", "parser bug")]
    assert prober.ignored == 1
