"""The SOAP gateway in-process exports its deliveries, their latency and its refused calls.

The workers are stand-ins on the real broker that answer each document as a worker would
(applied for the HA, refused or silent for the MR), so every kind of answer can be produced
on demand; real workers are exercised in tests/soap_gateway and tests/faults.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
import pytest

from services import bus
from services.contracts import policy_xml
from services.contracts.messages import PolicyStatus, Refusal, encode
from services.contracts.policy import Flush, Install, Operation
from services.contracts.settings import BrokerSettings
from services.contracts.topics import Topics
from services.soap_gateway.server import GatewayServer
from tests.faults.soap import envelope, post, scheme1
from tests.observability.scrape import scrape, wait_scrape
from tests.prem.factories import udp_to
from tests.soap_gateway.helpers import gateway_settings

pytestmark = [pytest.mark.broker]
DELIVERIES = "multinet_gateway_deliveries_total"


@dataclass
class StandInWorkers:
    """Answers every policy document: `answers[node]` is "applied", "refused" or "silent"."""

    broker: BrokerSettings
    answers: dict[str, str] = field(default_factory=lambda: {"ha1": "applied", "mr1": "applied"})

    def __post_init__(self) -> None:
        self.topics = Topics(self.broker.topic_root)
        settings = self.broker.model_copy(update={"session_expiry_s": 0})
        self.client = bus.make_client(settings, f"stand-in-{uuid.uuid4().hex[:8]}")
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(
            f"{self.topics.root}/node/+/policy", qos=1
        )
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        bus.start(self.client, settings)
        assert subscribed.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        document = policy_xml.parse(bytes(msg.payload))
        answer = self.answers[document.node]
        if answer == "silent":
            return
        status = PolicyStatus(
            sender=document.node,
            node=document.node,
            mobile_router=document.mobile_router,
            direction=document.direction,
            result="applied" if answer == "applied" else "refused",
            version=document.version if answer == "applied" else 0,
            requested_version=document.version,
            refusals=() if answer == "applied" else (Refusal(reason="stand-in refusal"),),
        )
        client.publish(self.topics.status(document.node), encode(status), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Bed:
    server: GatewayServer
    metrics_port: int
    workers: StandInWorkers

    def call(self, operation: str, version: int, op: Operation) -> dict[str, str]:
        answer = post(self.server.port, scheme1(operation, version, op), operation)
        assert answer.fault is None, answer
        return answer.outcomes


@pytest.fixture
def bed(broker: tuple[str, int], topic_root: str) -> Iterator[Bed]:
    settings = BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root)
    workers = StandInWorkers(settings)
    server = GatewayServer(
        gateway_settings(ack_deadline_s=1.0, metrics_listen="127.0.0.1:0"), settings
    )
    server.start()
    try:
        assert server.metrics.exporter is not None
        yield Bed(server, server.metrics.exporter.port, workers)
    finally:
        server.stop()
        workers.close()


def test_deliveries_by_answer_latency_and_faults(bed: Bed) -> None:
    start = wait_scrape(bed.metrics_port, lambda s: s.get("multinet_broker_connected") == 1)
    assert start.labelled(DELIVERIES, result="applied") == 0
    info = start.labelled("multinet_service_info", service="soap-gateway", node="soap-gateway")
    assert info == 1

    video = Install(policies=(udp_to("video", 5001, 2),))
    assert bed.call("Install", 1, video) == {"ha1": "applied", "mr1": "applied"}
    bed.workers.answers["mr1"] = "refused"
    assert bed.call("Flush", 2, Flush()) == {"ha1": "applied", "mr1": "refused"}
    bed.workers.answers["mr1"] = "silent"
    assert bed.call("Flush", 3, Flush()) == {"ha1": "applied", "mr1": "not-reached"}
    samples = scrape(bed.metrics_port)
    assert samples.labelled(DELIVERIES, result="applied") == 4
    assert samples.labelled(DELIVERIES, result="refused") == 1
    assert samples.labelled(DELIVERIES, result="not-reached") == 1
    assert samples["multinet_gateway_delivery_seconds_count"] == 3
    # The silent node made that call wait for the whole deadline (1 s).
    assert samples.labelled("multinet_gateway_delivery_seconds_bucket", le="0.5") == 2

    bad = envelope("Install", {"mobile_router": "mr1", "downlink": "<x/>", "uplink": "<y/>"})
    assert post(bed.server.port, bad, "Install").fault == "Client.InvalidDocument"
    unknown = envelope("Flush", {"mobile_router": "mr9", "downlink": "<x/>", "uplink": "<y/>"})
    assert post(bed.server.port, unknown, "Flush").fault == "Client.UnknownMobileRouter"
    faults = scrape(bed.metrics_port)
    refused = "multinet_gateway_calls_refused_total"
    assert faults.labelled(refused, code="Client.InvalidDocument") == 1
    assert faults.labelled(refused, code="Client.UnknownMobileRouter") == 1
    assert faults["multinet_gateway_delivery_seconds_count"] == 3, "refused calls are not timed"
