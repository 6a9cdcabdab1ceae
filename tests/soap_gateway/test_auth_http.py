"""Authentication over real HTTP(S): zeep with a requests session, a spy on the policy topics.

No worker runs here: an authorised Install is published (the spy sees it) and ends
not-reached; every refused call must leave the spy empty.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import requests
import zeep
import zeep.helpers
import zeep.transports
from lxml import etree

from services import bus
from services.contracts.settings import BrokerSettings
from services.soap_gateway.server import GatewayServer
from tests.certs import self_signed
from tests.soap_gateway.helpers import downlink, gateway_settings, uplink
from tests.soap_gateway.test_auth import ROUTERS, callers
from tests.soap_gateway.test_core import VIDEO

pytestmark = pytest.mark.broker


def _spy(broker: BrokerSettings, seen: list[str]) -> mqtt.Client:
    client = bus.make_client(
        broker.model_copy(update={"session_expiry_s": 0}), "spy-" + broker.topic_root[5:15]
    )
    subscribed = threading.Event()
    client.on_connect = lambda c, *_: c.subscribe(f"{broker.topic_root}/node/+/policy", qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = lambda c, u, msg: seen.append(msg.topic.split("/")[-2])
    bus.start(client, broker)
    assert subscribed.wait(10)
    return client


class Bed:
    def __init__(self, server: GatewayServer, spied: list[str], scheme: str) -> None:
        self.server = server
        self.spied = spied
        self.url = f"{scheme}://127.0.0.1:{server.port}/"

    def client(self, user: str, password: str, verify: Path | None = None) -> Any:
        session = requests.Session()
        # Else REQUESTS_CA_BUNDLE in the environment would win over session.verify.
        session.trust_env = False
        session.auth = (user, password)
        if verify is not None:
            session.verify = str(verify)
        transport = zeep.transports.Transport(session=session)  # type: ignore[no-untyped-call]
        return zeep.Client(f"{self.url}?wsdl", transport=transport)  # type: ignore[no-untyped-call]


@pytest.fixture
def make_bed(broker: tuple[str, int], topic_root: str) -> Iterator[Any]:
    started: list[tuple[GatewayServer, mqtt.Client]] = []
    broker_settings = BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root)

    def make(**overrides: Any) -> Bed:
        settings = gateway_settings(
            mobile_routers=ROUTERS, callers=callers(), ack_deadline_s=0.5, **overrides
        )
        spied: list[str] = []
        spy = _spy(broker_settings, spied)
        server = GatewayServer(settings, broker_settings)
        started.append((server, spy))
        server.start()
        return Bed(server, spied, "http" if settings.tls_cert is None else "https")

    yield make
    for server, spy in started:
        server.stop()
        spy.disconnect()
        spy.loop_stop()


def _rows(result: object) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = zeep.helpers.serialize_object(result)  # type: ignore[no-untyped-call]
    return rows


def _install(client: Any, router: str, version: int) -> list[dict[str, Any]]:
    up = uplink(version, VIDEO)
    if router != "mr1":
        up = up.replace('"mr1"', f'"{router}"')
    return _rows(
        client.service.Install(
            mobile_router=router,
            downlink=downlink(version, VIDEO).replace('"mr1"', f'"{router}"'),
            uplink=up,
        )
    )


def test_missing_or_wrong_credentials_get_401_and_nothing_is_published(
    make_bed: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="services.soap_gateway.server"):
        bed = make_bed()
    assert "passwords cross the network in clear text" in caplog.text
    envelope = (
        '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:g="urn:multinet:soap-gateway:1"><s:Body><g:Install>'
        "<g:mobile_router>mr1</g:mobile_router><g:downlink>x</g:downlink>"
        "</g:Install></s:Body></s:Envelope>"
    )
    for auth in (None, ("alice", "wrong"), ("mallory", "wonderland"), ("alice", "")):
        answer = requests.post(
            bed.url,
            data=envelope,
            auth=auth,
            headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"Install"'},
            timeout=10,
        )
        assert answer.status_code == 401, auth
        assert answer.headers["WWW-Authenticate"] == 'Basic realm="multinet"'
        code = etree.fromstring(answer.content).findtext(".//faultcode")
        assert code == "soap:Client.Unauthenticated"
    assert requests.get(f"{bed.url}?wsdl", timeout=10).status_code == 401, "the WSDL too"
    with pytest.raises(requests.HTTPError, match="401"):
        bed.client("alice", "wrong")
    assert bed.spied == []


def test_a_caller_is_refused_other_routers_and_reaches_its_own(make_bed: Any) -> None:
    bed = make_bed()
    alice = bed.client("alice", "wonderland")
    with pytest.raises(zeep.exceptions.Fault) as info:
        _install(alice, "mr2", 1)
    assert info.value.code.endswith("Client.Unauthorized")
    assert "caller 'alice' may not address mobile router 'mr2'" in info.value.message
    with pytest.raises(zeep.exceptions.Fault, match="'mr2'") as info:
        alice.service.GetStatus(mobile_router="mr2")
    assert info.value.code.endswith("Client.Unauthorized")
    assert bed.spied == [], "an unauthorised call reaches no worker"
    assert [r["node"] for r in _rows(alice.service.GetStatus(mobile_router="mr1"))] == [
        "ha1",
        "mr1",
    ]
    # No worker runs: published, then not-reached.
    assert [r["outcome"] for r in _install(alice, "mr1", 1)] == ["not-reached"] * 2
    assert bed.spied == ["ha1", "mr1"]
    bob = bed.client("bob", "builder:ü")
    assert [r["outcome"] for r in _install(bob, "mr2", 1)] == ["not-reached"] * 2
    assert bed.spied == ["ha1", "mr1", "ha1", "mr2"]


def test_tls_with_a_self_signed_certificate(make_bed: Any, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    bed = make_bed(tls_cert=cert, tls_key=key)
    assert bed.url.startswith("https://")
    alice = bed.client("alice", "wonderland", verify=cert)
    assert [r["node"] for r in _rows(alice.service.GetStatus(mobile_router="mr1"))] == [
        "ha1",
        "mr1",
    ]
    assert [r["outcome"] for r in _install(alice, "mr1", 1)] == ["not-reached"] * 2
    assert bed.spied == ["ha1", "mr1"]
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{bed.url}?wsdl", auth=("alice", "wonderland"), timeout=10)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(bed.url.replace("https", "http") + "?wsdl", timeout=10)
    answer = requests.get(f"{bed.url}?wsdl", timeout=10, verify=str(cert))
    assert answer.status_code == 401


def test_an_unreadable_certificate_is_a_clear_error(tmp_path: Path) -> None:
    settings = gateway_settings(tls_cert=tmp_path / "none.pem", tls_key=tmp_path / "none.key")
    with pytest.raises(OSError, match=r"cannot load tls_cert .*none\.pem"):
        GatewayServer(settings, BrokerSettings())
