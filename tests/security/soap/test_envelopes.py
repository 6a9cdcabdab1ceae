"""SOAP envelopes that are not UTF-8, or not SOAP 1.1, are refused before any XML parser sees
them, with a Fault that says why, and every refused request is logged with the caller, its
address and the reason. zeep, the modern client, keeps working.

A real gateway (in-process, on the shared broker) behind HTTP Basic, real HTTP clients; then
thousands of generated envelopes straight into its WSGI stack.
"""

from __future__ import annotations

import base64
import http.client
import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import zeep
import zeep.helpers
import zeep.transports
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from services.contracts.settings import BrokerSettings
from services.soap_gateway.config import CallerSettings
from services.soap_gateway.core import GatewayCore
from services.soap_gateway.passwords import hash_password
from services.soap_gateway.server import GatewayServer
from services.soap_gateway.tracker import Tracker
from services.soap_gateway.wsgi import make_wsgi_app
from tests.security.soap.conftest import PASSWORD
from tests.soap_gateway.helpers import gateway_settings

pytestmark = pytest.mark.broker

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
BODY = (
    '<g:GetStatus xmlns:g="urn:multinet:soap-gateway:1">'
    "<g:mobile_router>mr1</g:mobile_router></g:GetStatus>"
)
ENVELOPE = f'<s:Envelope xmlns:s="{SOAP11}"><s:Body>{BODY}</s:Body></s:Envelope>'
CALLERS = (
    CallerSettings(
        name="nsa", password_hash=hash_password(PASSWORD, iterations=1000), mobile_routers="*"
    ),
)
AUTH = "Basic " + base64.b64encode(f"nsa:{PASSWORD}".encode()).decode()


@pytest.fixture(scope="module")
def gateway(broker: tuple[str, int]) -> Iterator[GatewayServer]:
    server = GatewayServer(
        gateway_settings(callers=CALLERS),
        BrokerSettings(host=broker[0], port=broker[1], topic_root="test-envelopes/multinet/v1"),
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _post(
    port: int, body: bytes, content_type: str = "text/xml; charset=utf-8"
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": content_type, "SOAPAction": '"GetStatus"', "Authorization": AUTH}
        connection.request("POST", "/", body, headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _fault(body: bytes) -> tuple[str, str]:
    root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    return (
        str(root.findtext(".//faultcode")).split(":", 1)[-1],
        str(root.findtext(".//faultstring")),
    )


REFUSED: list[tuple[str, bytes, str, int, str, str]] = [
    # (id, body, content type, HTTP status, fault code, words of the reason)
    (
        "utf16le-ascii-looks-like-utf8",
        ENVELOPE.encode("utf-16-le"),
        "text/xml",
        500,
        "Client.NotUtf8",
        "NUL byte",
    ),
    (
        "utf16-with-bom",
        ENVELOPE.encode("utf-16"),
        "text/xml",
        500,
        "Client.NotUtf8",
        "UTF-16 or UTF-32 byte order mark",
    ),
    (
        "declares-latin1",
        f'<?xml version="1.0" encoding="ISO-8859-1"?>{ENVELOPE}'.encode(),
        "text/xml",
        500,
        "Client.NotUtf8",
        "declares encoding 'ISO-8859-1'",
    ),
    (
        "declares-utf16",
        f"<?xml version='1.0' encoding='UTF-16'?>{ENVELOPE}".encode(),
        "text/xml",
        500,
        "Client.NotUtf8",
        "declares encoding 'UTF-16'",
    ),
    (
        "nul-inside",
        ENVELOPE.replace("mr1", "mr\x001").encode(),
        "text/xml; charset=utf-8",
        500,
        "Client.NotUtf8",
        "NUL byte",
    ),
    (
        "charset-utf16",
        ENVELOPE.encode(),
        "text/xml; charset=utf-16",
        415,
        "Client.NotUtf8",
        "declares charset 'utf-16'",
    ),
    (
        "soap12-envelope",
        f'<e:Envelope xmlns:e="{SOAP12}"><e:Body>{BODY}</e:Body></e:Envelope>'.encode(),
        "text/xml; charset=utf-8",
        500,
        "VersionMismatch",
        "SOAP 1.1 only",
    ),
    (
        "soap12-media-type",
        ENVELOPE.encode(),
        'application/soap+xml; charset=utf-8; action="GetStatus"',
        500,
        "VersionMismatch",
        "SOAP 1.1 only",
    ),
]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code", "words"),
    [row[1:] for row in REFUSED],
    ids=[row[0] for row in REFUSED],
)
def test_refused_before_parsing_with_a_fault_that_says_why_and_logged(
    gateway: GatewayServer,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    content_type: str,
    status: int,
    code: str,
    words: str,
) -> None:
    with caplog.at_level(logging.INFO, logger="services.soap_gateway.wsgi"):
        got_status, answer = _post(gateway.port, body, content_type)
    got_code, reason = _fault(answer)
    assert (got_status, got_code) == (status, code)
    assert words in reason
    (record,) = [r for r in caplog.records if "refused" in r.getMessage()]
    line = record.getMessage()
    assert "from 127.0.0.1 (caller 'nsa')" in line
    assert f"{code}: " in line
    assert words in line


@pytest.mark.parametrize("declaration", ["", "<?xml version='1.0' encoding='utf-8'?>", "\ufeff"])
def test_utf8_envelopes_are_answered(gateway: GatewayServer, declaration: str) -> None:
    status, answer = _post(gateway.port, (declaration + ENVELOPE).encode())
    assert status == 200, answer


def test_a_wrong_password_and_a_refused_call_are_logged_with_the_caller_and_address(
    gateway: GatewayServer, caplog: pytest.LogCaptureFixture
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    wrong = "Basic " + base64.b64encode(b"nsa:not-it").decode()
    with caplog.at_level(logging.INFO, logger="services.soap_gateway.wsgi"):
        connection.request("POST", "/", ENVELOPE.encode(), {"Authorization": wrong})
        assert connection.getresponse().status == 401
        connection.close()
        unknown = ENVELOPE.replace(">mr1<", ">mr9<").encode()
        assert _post(gateway.port, unknown)[0] == 500
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        "from 127.0.0.1 (unauthenticated 'nsa'): Client.Unauthenticated: invalid credentials"
        in line
        for line in lines
    ), lines
    assert any("(caller 'nsa'): Client.UnknownMobileRouter" in line for line in lines), lines


def test_zeep_reads_the_soap11_wsdl_and_calls(gateway: GatewayServer) -> None:
    session = requests.Session()
    session.auth = ("nsa", PASSWORD)
    transport = zeep.transports.Transport(session=session)  # type: ignore[no-untyped-call]
    url = f"http://127.0.0.1:{gateway.port}/?wsdl"
    client = zeep.Client(url, transport=transport)  # type: ignore[no-untyped-call]
    rows: list[dict[str, Any]] = zeep.helpers.serialize_object(  # type: ignore[no-untyped-call]
        client.service.GetStatus(mobile_router="mr1")
    )
    assert sorted(row["node"] for row in rows) == ["ha1", "mr1"]
    wsdl = session.get(url, timeout=10).content
    assert SOAP12.encode() not in wsdl
    assert b"http://schemas.xmlsoap.org/wsdl/soap12/" not in wsdl


class _NoBus:
    def connected(self) -> bool:
        return False

    def publish(self, node: str, document: bytes) -> bool:
        raise AssertionError("nothing may be published")


APP = make_wsgi_app(GatewayCore(gateway_settings(callers=CALLERS), Tracker(), _NoBus()))


def _call(body: bytes, content_type: str) -> tuple[str, bytes]:
    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": AUTH,
        "REMOTE_ADDR": "192.0.2.7",
        "wsgi.input": io.BytesIO(body),
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "test",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
    }
    status: list[str] = []
    out = b"".join(APP(environ, lambda s, h, *e: status.append(s)))
    return status[0], out


_FRAGMENTS = st.sampled_from(
    [
        ENVELOPE,
        f'<s:Envelope xmlns:s="{SOAP12}"><s:Body>{BODY}</s:Body></s:Envelope>',
        "<?xml version='1.0' encoding='latin-1'?>",
        "<!DOCTYPE x [<!ENTITY a 'b'>]>",
        "&a;",
        "\x00",
        "\ufeff",
        "<g:Install xmlns:g='urn:multinet:soap-gateway:1'>",
        "<g:downlink>&lt;policy-message/&gt;</g:downlink>",
        "</s:Body>",
    ]
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(st.one_of(_FRAGMENTS, st.text(max_size=40)), max_size=8),
    raw=st.binary(max_size=64),
    encoding=st.sampled_from(["utf-8", "utf-16-le", "utf-16", "latin-1"]),
    content_type=st.sampled_from(
        ["text/xml; charset=utf-8", "text/xml", "application/soap+xml", "text/xml; charset=ascii"]
    ),
)
def test_every_generated_envelope_is_answered_with_a_result_or_a_fault(
    parts: list[str], raw: bytes, encoding: str, content_type: str
) -> None:
    body = "".join(parts).encode(encoding, errors="replace") + raw
    status, answer = _call(body, content_type)
    if status.startswith("200"):
        return
    code, _ = _fault(answer)
    assert code, f"{status}: {answer[:200]!r}"
