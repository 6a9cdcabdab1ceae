"""A legacy SOAP caller: hand-written envelopes posted with urllib, answers read with lxml."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from xml.sax.saxutils import escape

from lxml import etree

from services.contracts.policy import Operation
from tests.soap_gateway.helpers import downlink, uplink

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
GW = "urn:multinet:soap-gateway:1"


@dataclass(frozen=True)
class Answer:
    """An HTTP status with either one outcome per node or a SOAP Fault."""

    http: int
    outcomes: dict[str, str]
    fault: str | None = None
    #: GetStatus: each node's (online, version) as the gateway last heard them.
    nodes: dict[str, tuple[str | None, str | None]] | None = None


def envelope(operation: str, parts: dict[str, str]) -> bytes:
    """A document/literal SOAP 1.1 request."""
    inner = "".join(f"<g:{name}>{escape(value)}</g:{name}>" for name, value in parts.items())
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}" xmlns:g="{GW}"><soap:Body>'
        f"<g:{operation}>{inner}</g:{operation}></soap:Body></soap:Envelope>"
    ).encode()


def scheme1(operation: str, version: int, op: Operation) -> bytes:
    """`operation` for mr1 with the same policy operation for its HA and its MR."""
    parts = {
        "mobile_router": "mr1",
        "downlink": downlink(version, op),
        "uplink": uplink(version, op),
    }
    return envelope(operation, parts)


def post(port: int, body: bytes, operation: str, *, timeout_s: float = 30.0) -> Answer:
    """POST one request to the gateway on 127.0.0.1:`port`; raises OSError when the connection
    fails or is cut (that is the caller's clear signal, not a hang)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/",
        data=body,
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{operation}"'},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return _answer(response.status, response.read())
    except urllib.error.HTTPError as error:
        return _answer(error.code, error.read())


def _answer(status: int, body: bytes) -> Answer:
    root = etree.fromstring(body)
    code = root.findtext(".//faultcode")
    outcomes = {
        str(row.findtext(f"{{{GW}}}node")): str(row.findtext(f"{{{GW}}}outcome"))
        for row in root.iter(f"{{{GW}}}NodeResult")
    }
    nodes = {
        str(row.findtext(f"{{{GW}}}node")): (
            row.findtext(f"{{{GW}}}online"),
            row.findtext(f"{{{GW}}}version"),
        )
        for row in root.iter(f"{{{GW}}}NodeStatus")
    }
    return Answer(status, outcomes, None if code is None else code.split(":", 1)[-1], nodes)
