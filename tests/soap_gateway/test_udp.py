"""SOAP over UDP: raw datagrams through the same WSGI stack as HTTP, against a fake bus."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any
from xml.sax.saxutils import escape

import pytest
from lxml import etree

from services.contracts.settings import BrokerSettings
from services.soap_gateway.core import GatewayCore
from services.soap_gateway.server import GatewayServer
from services.soap_gateway.tracker import Tracker
from services.soap_gateway.udp import UdpServer
from services.soap_gateway.wsgi import make_wsgi_app
from tests.soap_gateway.helpers import downlink, gateway_settings, uplink
from tests.soap_gateway.test_core import VIDEO, FakeBus

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
GW = "urn:multinet:soap-gateway:1"


def envelope(operation: str, **parts: str) -> bytes:
    """A hand-written SOAP 1.1 request, as a constrained client would send it."""
    inner = "".join(f"<g:{name}>{escape(value)}</g:{name}>" for name, value in parts.items())
    return (
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}" xmlns:g="{GW}"><soap:Body>'
        f"<g:{operation}>{inner}</g:{operation}></soap:Body></soap:Envelope>"
    ).encode()


def exchange(port: int, datagram: bytes, host: str = "127.0.0.1") -> etree._Element:
    """Send one datagram, return the one answer datagram parsed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(datagram, (host, port))
        answer, _ = sock.recvfrom(70000)
    return etree.fromstring(answer)


def fault(root: etree._Element) -> tuple[str, str]:
    code, text = root.findtext(".//faultcode"), root.findtext(".//faultstring")
    assert code is not None, etree.tostring(root)
    return code.split(":", 1)[1], str(text)


def by_node(root: etree._Element, row: str) -> dict[str, dict[str, str | None]]:
    return {
        str(item.findtext(f"{{{GW}}}node")): {
            child.tag.split("}")[1]: child.text for child in item if len(child) == 0
        }
        for item in root.iter(f"{{{GW}}}{row}")
    }


class Bed:
    """A core on a fake bus, served over UDP."""

    def __init__(
        self, *, host: str = "127.0.0.1", max_datagram_bytes: int = 65507, **settings: Any
    ) -> None:
        self.tracker = Tracker()
        self.bus = FakeBus(self.tracker)
        self.core = GatewayCore(gateway_settings(**settings), self.tracker, self.bus)
        self.host = host
        self.server = UdpServer(
            make_wsgi_app(self.core), host, 0, max_datagram_bytes=max_datagram_bytes
        )

    def send(self, datagram: bytes) -> etree._Element:
        return exchange(self.server.port, datagram, self.host)


@pytest.fixture
def bed() -> Iterator[Bed]:
    test_bed = Bed()
    test_bed.server.start()
    try:
        yield test_bed
    finally:
        test_bed.server.stop()


INSTALL = envelope(
    "Install", mobile_router="mr1", downlink=downlink(1, VIDEO), uplink=uplink(1, VIDEO)
)


def test_install_and_status_by_datagram(bed: Bed) -> None:
    results = by_node(bed.send(INSTALL), "NodeResult")
    assert {n: (r["outcome"], r["version"]) for n, r in results.items()} == {
        "ha1": ("applied", "1"),
        "mr1": ("applied", "1"),
    }
    assert bed.bus.published == ["ha1", "mr1"]
    status = by_node(bed.send(envelope("GetStatus", mobile_router="mr1")), "NodeStatus")
    assert {n: (s["version"], s["last_result"]) for n, s in status.items()} == {
        "ha1": ("1", "applied"),
        "mr1": ("1", "applied"),
    }
    assert bed.core.tracker.pending() == 0


def test_bad_datagrams_get_a_fault_and_deliver_nothing() -> None:
    test_bed = Bed(max_datagram_bytes=4096)
    test_bed.server.start()
    try:
        good_down, good_up = downlink(2, VIDEO), uplink(2, VIDEO)
        cases = [
            (b"<soap:Envelope", "Client.XMLSyntaxError", ""),
            (b"", "Client.EmptyRequest", "empty"),
            (
                b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY a "b">]>' + INSTALL,
                "Client.DTDNotAllowed",
                "DOCTYPE",
            ),
            ("<x>é</x>".encode("utf-16"), "Client.NotUtf8", "UTF-8"),
            (
                envelope("Install", mobile_router="mr1", downlink="<policy", uplink=good_up),
                "Client.InvalidDocument",
                "downlink: line 1",
            ),
            (
                envelope("Install", mobile_router="mr7", downlink=good_down, uplink=good_up),
                "Client.UnknownMobileRouter",
                "'mr7'",
            ),
            (envelope("Install", mobile_router="mr1"), "Client.SchemaValidationError", ""),
            (b"<x>" + b"a" * 5000 + b"</x>", "Client.RequestTooLarge", "4096 bytes"),
        ]
        for datagram, code, text in cases:
            got = fault(test_bed.send(datagram))
            assert got[0] == code, (code, got)
            assert text in got[1], (code, got)
        assert test_bed.bus.published == [], "no bad datagram reached a node"
        # The server still answers good calls after all that.
        assert len(by_node(test_bed.send(INSTALL), "NodeResult")) == 2
    finally:
        test_bed.server.stop()


def test_an_answer_too_large_for_one_datagram_is_a_fault() -> None:
    test_bed = Bed(max_datagram_bytes=512)
    test_bed.server.start()
    try:
        request = envelope("GetStatus", mobile_router="mr1")
        assert len(request) <= 512
        code, text = fault(test_bed.send(request))
        assert code == "Server.ResponseTooLarge"
        assert "over the datagram limit of 512 bytes" in text
    finally:
        test_bed.server.stop()


def test_ipv6_and_a_clean_stop() -> None:
    test_bed = Bed(host="::1")
    test_bed.server.start()
    port = test_bed.server.port
    assert len(by_node(test_bed.send(envelope("GetStatus", mobile_router="mr1")), "NodeStatus"))
    test_bed.server.stop()
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::1", port))  # the port is free again: the socket was closed


@pytest.mark.broker
def test_gateway_server_serves_udp_when_configured(
    broker: tuple[str, int], topic_root: str
) -> None:
    server = GatewayServer(
        gateway_settings(udp_port=0),
        BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root),
    )
    assert server.udp is not None
    server.start()
    try:
        status = by_node(
            exchange(server.udp.port, envelope("GetStatus", mobile_router="mr1")), "NodeStatus"
        )
        assert sorted(status) == ["ha1", "mr1"]
    finally:
        server.stop()
    assert GatewayServer(gateway_settings(), BrokerSettings()).udp is None


def test_with_callers_configured_udp_fails_closed() -> None:
    """UDP carries no HTTP credentials (WS-Security is not done): every call is refused."""
    from tests.soap_gateway.test_auth import callers

    test_bed = Bed(callers=callers())
    test_bed.server.start()
    try:
        for datagram in (INSTALL, envelope("GetStatus", mobile_router="mr1")):
            code, _text = fault(test_bed.send(datagram))
            assert code == "Client.Unauthenticated"
        assert test_bed.bus.published == []
    finally:
        test_bed.server.stop()
