"""The WSGI stack: a refusal log, authentication, then a body guard, in front of spyne.

With callers configured, every request (the WSDL too) must prove one with HTTP Basic; the
caller is left in the environ (`auth.ENVIRON_KEY`) for the service to authorise the mobile
router it addresses. A refusal happens before the body is read. Failed logins are throttled
per source address (`auth.Authenticator`, `throttle.LoginThrottle`).

The guard refuses before spyne parses anything: a body without a declared length, over the
limit, anything but UTF-8 (a charset or an XML `encoding=` naming another, a NUL byte: UTF-16
text of ASCII characters is valid UTF-8 full of NULs), a DTD (SOAP 1.1 forbids one in a
message; refusing it here means no entity can ever be defined, let alone expanded, whatever
the XML parser's defaults), or a SOAP 1.2 envelope (this service speaks SOAP 1.1, as its WSDL
says; it answers with the VersionMismatch Fault SOAP 1.2's appendix A prescribes).
Refusals are SOAP 1.1 Faults, so every SOAP toolkit can report them, and every refused
request, here or in the service, is logged once with the caller, its address and the reason.

The WSDL is served as SOAP 1.1 only: spyne declares the SOAP 1.2 namespaces on it without
using them, and toolkits such as gSOAP's wsdl2h then generate a SOAP 1.2 client.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from lxml import etree
from spyne.server.wsgi import WsgiApplication

from services.soap_gateway.auth import ENVIRON_KEY, REALM, Authenticator, Caller, Outcome
from services.soap_gateway.core import SoapCalls
from services.soap_gateway.service import make_application

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

#: Where a refusal made in this module leaves its (fault code, reason) for the refusal log.
REFUSAL_KEY = "multinet.refusal"
#: The user-id a request claimed, authenticated or not (for the refusal log).
CLAIMED_KEY = "multinet.claimed"

_FORBIDDEN = (b"<!DOCTYPE", b"<!ENTITY")
_DECLARED_ENCODING = re.compile(rb"""^\s*<\?xml\b[^>]*?\bencoding\s*=\s*["']([^"']*)["']""")
_CHARSET = re.compile(r";\s*charset\s*=\s*\"?([^\s;\"]+)", re.IGNORECASE)
#: Prefixes spyne declares on the WSDL for SOAP 1.2, which no element of it uses.
_SOAP12_NAMESPACES = frozenset(
    {
        SOAP12_ENV,
        "http://www.w3.org/2003/05/soap-encoding",
        "http://schemas.xmlsoap.org/wsdl/soap12/",
    }
)
_REASON_CHARS = 300
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


def soap11_only(wsdl: bytes) -> bytes:
    """The WSDL without the SOAP 1.2 namespace declarations it does not use, so toolkits that
    pick the SOAP version from the declared namespaces (gSOAP's wsdl2h) generate SOAP 1.1."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    root = etree.fromstring(wsdl, parser)
    keep = [prefix for prefix, uri in root.nsmap.items() if uri not in _SOAP12_NAMESPACES]
    etree.cleanup_namespaces(root, keep_ns_prefixes=[p for p in keep if p is not None])
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


class WsdlFilter:
    """Serves spyne's WSDL (a GET with `?wsdl`) as SOAP 1.1 only (`soap11_only`)."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Pass everything on; rewrite a successful WSDL answer."""
        query = str(environ.get("QUERY_STRING", "")).lower()
        if environ.get("REQUEST_METHOD") != "GET" or "wsdl" not in query:
            return self.app(environ, start_response)
        captured: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, headers]
            return lambda data: None

        body = b"".join(self.app(environ, capture))
        status, headers = captured
        if status.startswith("200"):
            body = soap11_only(body)
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [body]


@dataclass(frozen=True)
class Refusal:
    """An answer refusing a request: HTTP status, Fault code, reason, extra headers, and
    what the refusal log says (the reason unless given)."""

    status: str
    code: str
    message: str
    headers: tuple[tuple[str, str], ...] = ()
    log_reason: str | None = None


class BodyGuard:
    """Checks a POST body's size and form before the wrapped application sees it."""

    def __init__(self, app: WsgiApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Pass GETs (the WSDL) through; read and check a POST body, then pass it on."""
        if environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        refusal = self._headers_problem(environ)
        if refusal is not None:
            return _refuse(environ, start_response, refusal)
        length = int(environ["CONTENT_LENGTH"])
        body = environ["wsgi.input"].read(length)
        refusal = _body_problem(environ, body, length)
        if refusal is not None:
            return _refuse(environ, start_response, refusal)
        environ["wsgi.input"] = io.BytesIO(body)
        return self.app(environ, start_response)

    def _headers_problem(self, environ: dict[str, Any]) -> Refusal | None:
        raw_length = str(environ.get("CONTENT_LENGTH") or "")
        if not raw_length.isdigit():
            return Refusal(
                "411 Length Required",
                "Client.LengthRequired",
                "the request must declare its Content-Length",
            )
        if int(raw_length) > self.max_body_bytes:
            return Refusal(
                "413 Content Too Large",
                "Client.RequestTooLarge",
                f"the request body is {int(raw_length)} bytes, over the limit of "
                f"{self.max_body_bytes} bytes",
            )
        charset = _CHARSET.search(str(environ.get("CONTENT_TYPE") or ""))
        if charset is not None and charset.group(1).lower() != "utf-8":
            return Refusal(
                "415 Unsupported Media Type",
                "Client.NotUtf8",
                f"the request declares charset {_printable(charset.group(1))!r}: only UTF-8 "
                "is accepted",
            )
        return None


def _body_problem(environ: dict[str, Any], body: bytes, length: int) -> Refusal | None:
    if len(body) != length:
        return Refusal(
            "400 Bad Request",
            "Client.IncompleteRequest",
            f"the request body ended after {len(body)} of {length} bytes",
        )
    problem = form_problem(body)
    if problem is not None:
        return Refusal("500 Internal Server Error", *problem)
    if _is_soap12(environ, body):
        return Refusal(
            "500 Internal Server Error",
            "VersionMismatch",
            "this service speaks SOAP 1.1 only (its WSDL has a SOAP 1.1 binding); the "
            f"request is a SOAP 1.2 envelope ({SOAP12_ENV})",
        )
    return None


class BasicAuthGuard:
    """Refuses requests without valid HTTP Basic credentials (401, or 429 while the address
    is throttled, and a SOAP Fault)."""

    def __init__(self, app: WsgiApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Authenticate, record the caller in the environ, pass on."""
        address = str(environ.get("REMOTE_ADDR") or "?")
        verdict = self.authenticator.check(environ.get("HTTP_AUTHORIZATION"), address)
        environ[CLAIMED_KEY] = verdict.claimed
        if verdict.outcome is Outcome.ACCEPTED:
            environ[ENVIRON_KEY] = verdict.caller
            return self.app(environ, start_response)
        wait = max(1, round(verdict.retry_after_s + 0.5))
        if verdict.outcome is Outcome.THROTTLED:
            refusal = Refusal(
                "429 Too Many Requests",
                "Client.TooManyFailedLogins",
                f"too many failed logins from {address}: retry in {wait} s",
                (("Retry-After", str(wait)),),
            )
        elif verdict.outcome is Outcome.BUSY:
            refusal = Refusal(
                "503 Service Unavailable",
                "Server.Busy",
                f"no password check could start: retry in {wait} s",
                (("Retry-After", str(wait)),),
            )
        else:
            refusal = Refusal(
                "401 Unauthorized",
                "Client.Unauthenticated",
                "this gateway needs HTTP Basic credentials of a configured caller",
                (("WWW-Authenticate", f'Basic realm="{REALM}"'),),
                "no credentials" if verdict.outcome is Outcome.MISSING else "invalid credentials",
            )
        return _refuse(environ, start_response, refusal)


class RefusalLog:
    """Logs every refused request once: who (the caller, or the user-id it claimed), from
    where, and why (the Fault's code and reason). A request without credentials is a client's
    usual first try and is logged at INFO; every other refusal at WARNING."""

    def __init__(self, app: WsgiApp, name: str) -> None:
        self.app = app
        self.name = name

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Pass on; log the answer when it is not a success."""
        seen: list[str] = []

        def watch(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            seen[:] = [status]
            return start_response(status, headers, *exc_info)

        chunks = self.app(environ, watch)
        status = seen[0] if seen else "500"
        if status[:1] in ("2", "3") or environ.get("REQUEST_METHOD") not in ("POST", "GET"):
            return chunks
        body = b"".join(chunks)
        refusal = environ.get(REFUSAL_KEY)
        code, reason = refusal if isinstance(refusal, tuple) else _fault_of(body)
        caller = environ.get(ENVIRON_KEY)
        claimed = environ.get(CLAIMED_KEY)
        who = (
            f"caller {caller.name!r}"
            if isinstance(caller, Caller)
            else f"unauthenticated {_printable(str(claimed))!r}"
            if claimed
            else "no caller"
        )
        quiet = code == "Client.Unauthenticated" and reason == "no credentials"
        log.log(
            logging.INFO if quiet else logging.WARNING,
            "%s: refused %s %s from %s (%s): %s: %s",
            self.name,
            environ.get("REQUEST_METHOD"),
            _printable(str(environ.get("PATH_INFO") or "/"), 80),
            environ.get("REMOTE_ADDR", "?"),
            who,
            code,
            _printable(reason),
        )
        return [body]


def form_problem(body: bytes) -> tuple[str, str] | None:
    """Why `body` is not an envelope the parser may see (fault code, reason), or None."""
    if not body.strip():
        # spyne raises StopIteration on an empty body instead of answering.
        return "Client.EmptyRequest", "the request body is empty: expected a SOAP envelope"
    not_utf8 = encoding_problem(body)
    if not_utf8 is not None:
        return "Client.NotUtf8", not_utf8
    for marker in _FORBIDDEN:
        if marker in body:
            return (
                "Client.DTDNotAllowed",
                f"{marker.decode()} is not allowed: a SOAP message carries no DTD or entities",
            )
    return None


def encoding_problem(body: bytes) -> str | None:
    """Why `body` is not UTF-8 through and through, or None. The byte scan for a DTD is only
    meaningful on UTF-8: UTF-16 text of ASCII characters is valid UTF-8 with a NUL after
    every character, and would hide `<!DOCTYPE` from it."""
    if body.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
        return (
            "the request body starts with a UTF-16 or UTF-32 byte order mark: only UTF-8 is "
            "accepted"
        )
    nul = body.find(b"\x00")
    if nul >= 0:
        return (
            f"the request body holds a NUL byte (offset {nul}): only UTF-8 is accepted "
            "(UTF-16 or UTF-32 text is refused)"
        )
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"the request body is not UTF-8 (offset {exc.start}): only UTF-8 is accepted"
    declared = _DECLARED_ENCODING.match(body.removeprefix(b"\xef\xbb\xbf"))
    encoding = declared.group(1).decode("utf-8") if declared is not None else "utf-8"
    if encoding.lower() != "utf-8":
        return f"the request declares encoding {_printable(encoding)!r}: only UTF-8 is accepted"
    return None


_SOAP12_BYTES = SOAP12_ENV.encode()


def _is_soap12(environ: dict[str, Any], body: bytes) -> bool:
    """Whether the request is a SOAP 1.2 message: its media type, or its root element's
    namespace (read from the first start tag only; the body has passed `form_problem`)."""
    if str(environ.get("CONTENT_TYPE") or "").lower().startswith("application/soap+xml"):
        return True
    if _SOAP12_BYTES not in body and b"&#" not in body:
        # Without the namespace's name, literal or as character references, no element can
        # be in it: the parse below (a parser set up per request) is for the other cases.
        return False
    events = etree.iterparse(
        io.BytesIO(body),
        events=("start",),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
    )
    try:
        _, root = next(iter(events))
    except (etree.XMLSyntaxError, StopIteration):
        return False  # spyne answers a body that is not XML
    return bool(str(root.tag).startswith(f"{{{SOAP12_ENV}}}"))


def _fault_of(body: bytes) -> tuple[str, str]:
    """(faultcode, faultstring) of a SOAP 1.1 Fault we answered (spyne's own output)."""
    try:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        root = etree.fromstring(body, parser)
    except etree.XMLSyntaxError:
        return "?", _printable(body.decode("utf-8", "replace"))
    code = root.findtext(".//faultcode") or "?"
    return code.split(":", 1)[-1], root.findtext(".//faultstring") or ""


def _printable(text: str, limit: int = _REASON_CHARS) -> str:
    """`text` safe for one log line: control characters escaped, at most `limit` characters."""
    escaped = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[: limit + 1])
    return escaped if len(escaped) <= limit else escaped[:limit] + "..."


def _refuse(
    environ: dict[str, Any], start_response: StartResponse, refusal: Refusal
) -> list[bytes]:
    environ[REFUSAL_KEY] = (refusal.code, refusal.log_reason or refusal.message)
    body = fault_body(refusal.code, refusal.message)
    start_response(
        refusal.status,
        [
            ("Content-Type", "text/xml; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            *refusal.headers,
        ],
    )
    return [body]


def make_wsgi_app(core: SoapCalls) -> WsgiApp:
    """Spyne's WSGI application for `core`, its WSDL as SOAP 1.1 only, behind the body guard
    (and authentication when callers are configured), every refusal logged."""
    spyne_app = WsgiApplication(
        make_application(core), max_content_length=core.settings.max_body_bytes
    )
    app: WsgiApp = BodyGuard(WsdlFilter(spyne_app), core.settings.max_body_bytes)
    authenticator = Authenticator(core.settings.callers)
    if authenticator.enabled:
        app = BasicAuthGuard(app, authenticator)
    return RefusalLog(app, core.settings.name)
