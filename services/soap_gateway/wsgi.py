"""The WSGI stack: authentication, then a body guard, in front of spyne's WSGI application.

With callers configured, every request (the WSDL too) must prove one with HTTP Basic; the
caller is left in the environ (`auth.ENVIRON_KEY`) for the service to authorise the mobile
router it addresses. A refusal happens before the body is read.

The guard refuses before spyne parses anything: a body without a declared length, over the
limit, not UTF-8, or holding a DTD (SOAP 1.1 forbids one in a message; refusing it here means
no entity can ever be defined, let alone expanded, whatever the XML parser's defaults).
Refusals are SOAP 1.1 Faults, so every SOAP toolkit can report them.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from typing import Any

from lxml import etree
from spyne.server.wsgi import WsgiApplication

from services.soap_gateway.auth import ENVIRON_KEY, REALM, Authenticator
from services.soap_gateway.core import GatewayCore
from services.soap_gateway.service import make_application

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_FORBIDDEN = (b"<!DOCTYPE", b"<!ENTITY")
log = logging.getLogger(__name__)


def fault_body(code: str, message: str) -> bytes:
    """A SOAP 1.1 Fault envelope (the code is qualified with the envelope's prefix)."""
    envelope = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soap": SOAP_ENV})
    fault = etree.SubElement(
        etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body"), f"{{{SOAP_ENV}}}Fault"
    )
    etree.SubElement(fault, "faultcode").text = f"soap:{code}"
    etree.SubElement(fault, "faultstring").text = message
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


class BodyGuard:
    """Checks a POST body's size and form before the wrapped application sees it."""

    def __init__(self, app: WsgiApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Pass GETs (the WSDL) through; read and check a POST body, then pass it on."""
        if environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        raw_length = str(environ.get("CONTENT_LENGTH") or "")
        if not raw_length.isdigit():
            return _refuse(
                start_response,
                "411 Length Required",
                "Client.LengthRequired",
                "the request must declare its Content-Length",
            )
        length = int(raw_length)
        if length > self.max_body_bytes:
            return _refuse(
                start_response,
                "413 Content Too Large",
                "Client.RequestTooLarge",
                f"the request body is {length} bytes, over the limit of "
                f"{self.max_body_bytes} bytes",
            )
        body = environ["wsgi.input"].read(length)
        if len(body) != length:
            return _refuse(
                start_response,
                "400 Bad Request",
                "Client.IncompleteRequest",
                f"the request body ended after {len(body)} of {length} bytes",
            )
        problem = _form_problem(body)
        if problem is not None:
            return _refuse(start_response, "500 Internal Server Error", *problem)
        environ["wsgi.input"] = io.BytesIO(body)
        return self.app(environ, start_response)


class BasicAuthGuard:
    """Refuses requests without valid HTTP Basic credentials (401 and a SOAP Fault)."""

    def __init__(self, app: WsgiApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Authenticate, record the caller in the environ, pass on."""
        header = environ.get("HTTP_AUTHORIZATION")
        caller = self.authenticator.authenticate(header)
        if caller is None:
            # No header is a client's usual first try; wrong credentials are worth a warning.
            log.log(
                logging.INFO if header is None else logging.WARNING,
                "gateway: refused %s credentials from %s",
                "missing" if header is None else "invalid",
                environ.get("REMOTE_ADDR", "?"),
            )
            return _refuse(
                start_response,
                "401 Unauthorized",
                "Client.Unauthenticated",
                "this gateway needs HTTP Basic credentials of a configured caller",
                [("WWW-Authenticate", f'Basic realm="{REALM}"')],
            )
        environ[ENVIRON_KEY] = caller
        return self.app(environ, start_response)


def _form_problem(body: bytes) -> tuple[str, str] | None:
    if not body.strip():
        # spyne raises StopIteration on an empty body instead of answering.
        return "Client.EmptyRequest", "the request body is empty: expected a SOAP envelope"
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        # A byte scan for a DTD is only meaningful on UTF-8 (UTF-16 would hide one).
        return "Client.NotUtf8", "the request body must be UTF-8 encoded"
    for marker in _FORBIDDEN:
        if marker in body:
            return (
                "Client.DTDNotAllowed",
                f"{marker.decode()} is not allowed: a SOAP message carries no DTD or entities",
            )
    return None


def _refuse(
    start_response: StartResponse,
    status: str,
    code: str,
    message: str,
    extra_headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    body = fault_body(code, message)
    start_response(
        status,
        [
            ("Content-Type", "text/xml; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            *(extra_headers or []),
        ],
    )
    return [body]


def make_wsgi_app(core: GatewayCore) -> WsgiApp:
    """Spyne's WSGI application for `core`, behind the body guard (and authentication when
    callers are configured)."""
    spyne_app = WsgiApplication(
        make_application(core), max_content_length=core.settings.max_body_bytes
    )
    guarded = BodyGuard(spyne_app, core.settings.max_body_bytes)
    authenticator = Authenticator(core.settings.callers)
    if not authenticator.enabled:
        return guarded
    return BasicAuthGuard(guarded, authenticator)
