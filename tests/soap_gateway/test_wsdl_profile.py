"""The served WSDL follows the WS-I Basic Profile 1.1 rules a document/literal service must.

Checked rule by rule on the WSDL the running gateway serves (no WS-I tool exists here); each
assertion names the profile requirement it stands for.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from lxml import etree

from services.contracts.settings import BrokerSettings
from services.soap_gateway.server import GatewayServer
from tests.soap_gateway.helpers import gateway_settings

WSDL = "http://schemas.xmlsoap.org/wsdl/"
SOAPBIND = "http://schemas.xmlsoap.org/wsdl/soap/"
NS = {"wsdl": WSDL, "soap": SOAPBIND}


@pytest.fixture(scope="module")
def wsdl(broker: tuple[str, int]) -> Iterator[etree._Element]:
    server = GatewayServer(
        gateway_settings().model_copy(update={"port": 0}),
        BrokerSettings(host=broker[0], port=broker[1], topic_root="test-wsdl/multinet/v1"),
    )
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/?wsdl"
        with urllib.request.urlopen(url, timeout=10) as response:
            parser = etree.XMLParser(resolve_entities=False, no_network=True)
            yield etree.fromstring(response.read(), parser)
    finally:
        server.stop()


def test_bindings_are_soap_1_1_over_http_document_style(wsdl: etree._Element) -> None:
    bindings = wsdl.findall("wsdl:binding", NS)
    assert bindings
    for binding in bindings:
        soap = binding.find("soap:binding", NS)
        assert soap is not None, "R2401: a wsdl:binding uses the WSDL SOAP 1.1 binding"
        assert soap.get("transport") == "http://schemas.xmlsoap.org/soap/http", "R2702"
        assert soap.get("style", "document") == "document", "R2705: one style per binding"
        for operation in binding.findall("wsdl:operation/soap:operation", NS):
            assert operation.get("style", "document") == "document", "R2705"


def test_bodies_are_literal_without_namespace_or_encoding(wsdl: etree._Element) -> None:
    bodies = wsdl.findall("wsdl:binding/wsdl:operation/*/soap:body", NS)
    assert bodies
    for body in bodies:
        assert body.get("use") == "literal", "R2706: use is literal"
        assert body.get("encodingStyle") is None, "R1005: no soap:encodingStyle"
        assert body.get("namespace") is None, "R2716: no namespace on document-literal bodies"


def test_message_parts_name_elements_and_at_most_one_per_body(wsdl: etree._Element) -> None:
    messages = wsdl.findall("wsdl:message", NS)
    assert messages
    for message in messages:
        parts = message.findall("wsdl:part", NS)
        assert len(parts) <= 1, f"R2210/R2201: {message.get('name')} has {len(parts)} parts"
        for part in parts:
            assert part.get("element") is not None, "R2204: document-literal parts use element"
            assert part.get("type") is None, "R2204"


def test_operation_names_are_unique_and_every_operation_has_a_soap_action(
    wsdl: etree._Element,
) -> None:
    names = [str(op.get("name")) for op in wsdl.findall("wsdl:portType/wsdl:operation", NS)]
    assert sorted(names) == ["Flush", "GetStatus", "Install", "Update"]
    assert len(names) == len(set(names)), "R2304: operation names are unique in a portType"
    for operation in wsdl.findall("wsdl:binding/wsdl:operation", NS):
        soap = operation.find("soap:operation", NS)
        assert soap is not None, "R2401"
        assert soap.get("soapAction") is not None, "R2720: soapAction is stated (may be empty)"


def test_imports_and_types_are_schema_only(wsdl: etree._Element) -> None:
    assert wsdl.get("targetNamespace") == "urn:multinet:soap-gateway:1"
    types = wsdl.find("wsdl:types", NS)
    assert types is not None
    children = {etree.QName(child).localname for child in types}
    assert children <= {"schema"}, "R2105: wsdl:types holds only xs:schema"
